/*
 * consentgate.ledger._append: the per-event loop of chain.Appender.append, compiled
 * (optional).
 *
 * `append_rows` turns parsed events (rows.PARSED order) into stored rows (rows.COLUMNS
 * order) exactly as the Python loop `chain.chain_rows` does: personal fields sealed
 * with the member's key (AES-256-GCM, a fresh random 96-bit nonce, the content digest
 * as associated data; the output is nonce || ciphertext || tag, as `sealing.seal`
 * writes it), the chain position, the entry spliced from its parts (chain.splice),
 * the chain hash SHA-256(prev || entry), the Merkle leaf SHA-256(0x00 || hash) pushed
 * onto the frontier as merkle.RootBuilder.append does, and an erasure destroying the
 * key in `keys` for the events after it. Nonces and new keys come from OpenSSL's
 * CSPRNG (RAND_bytes). The sealing and hashing run without the GIL.
 *
 * `append_sqlite` does the same and inserts the rows itself, through the SQLite
 * handle of the caller's `sqlite3.Connection` (whose transaction it joins), without
 * the GIL and without building a Python object per value: the bulk import's path. It
 * takes the handle only when sure of it (the connection's type, the same SQLite
 * library as Python's `_sqlite3`, the expected file, a transaction open) and
 * otherwise returns None before changing anything, and the caller goes the usual way.
 *
 * tests/ledger/test_append.py checks both against the Python loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "_cbase.h"

#define NONCE 12
#define TAG 16
#define MAX_STACK 64

enum {
    P_ID_KEY, P_EVENT_ID, P_DIGEST, P_TYPE, P_SUBJECT, P_PSEUDONYM, P_AT_US, P_PURPOSE,
    P_CHOICE, P_SIGNAL, P_SOURCE, P_NOTICE, P_REGION, P_BORN, P_PERSONAL, P_RECORDED,
    P_HEAD, P_TAIL, P_WIDTH
};

/* The text columns bound by append_sqlite, by their rows.PARSED index. */
static const int TEXTS[] = {P_EVENT_ID, P_DIGEST, P_TYPE, P_PURPOSE, P_CHOICE,
                            P_SIGNAL, P_SOURCE, P_NOTICE, P_REGION, P_BORN};
#define N_TEXTS 10

/* What one event needs once the GIL is released: pointers into objects the caller
 * keeps alive (the rows, and the member keys this call holds references to). */
typedef struct {
    PyObject *key; /* a reference held by this call, or NULL (no key: erased) */
    const char *personal, *aad, *head, *tail;
    Py_ssize_t personal_n, aad_n, head_n, tail_n;
    size_t sealed_at, sealed_n; /* in the arena; sealed_n 0: nothing sealed */
    unsigned char hash[32];
    /* for append_sqlite only */
    long long ints[4]; /* id_key, pseudonym, at_us, recorded_us */
    const char *text[N_TEXTS];
    Py_ssize_t text_n[N_TEXTS];
} item_t;

/* One call's work. */
typedef struct {
    Py_ssize_t n, held; /* items whose key reference is held: items[0 .. held) */
    item_t *items;
    unsigned char (*stack)[32];
    Py_ssize_t depth;
    unsigned char *arena;
    char *entry;
    unsigned char first_prev[32], prev[32];
    long long size; /* the chain size before */
    int hashing;
    EVP_CIPHER_CTX *ctx;
    EVP_CIPHER *gcm;
    PyObject *erased, *fresh, *erasure;
} job_t;

static void job_free(job_t *j) {
    for (Py_ssize_t i = 0; i < j->held; i++) Py_XDECREF(j->items[i].key);
    PyMem_Free(j->items);
    PyMem_Free(j->stack);
    PyMem_Free(j->arena);
    PyMem_Free(j->entry);
    EVP_CIPHER_free(j->gcm);
    EVP_CIPHER_CTX_free(j->ctx);
    Py_XDECREF(j->erased);
    Py_XDECREF(j->fresh);
    Py_XDECREF(j->erasure);
}

static int text_of(PyObject *o, const char **s, Py_ssize_t *n) {
    if (o == Py_None) {
        *s = NULL;
        *n = 0;
        return 0;
    }
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "a text column holds str or None");
        return -1;
    }
    return (*s = PyUnicode_AsUTF8AndSize(o, n)) ? 0 : -1;
}

/*
 * With the GIL: each event's member key (in order: an erasure takes the key away from
 * the events after it; with `create`, a member not in `keys` gets a new key), and
 * pointers to its parts. Returns 0 or -1 (exception set).
 */
static int job_prepare(job_t *j, PyObject *rows, PyObject *keys, PyObject *prev,
                       PyObject *frontier, int create, int for_sqlite) {
    j->n = PyList_GET_SIZE(rows);
    j->items = PyMem_Calloc(j->n ? (size_t)j->n : 1, sizeof(item_t));
    j->stack = PyMem_Malloc(MAX_STACK * 32);
    j->erased = PyDict_New();
    j->fresh = PyList_New(0);
    j->erasure = PyUnicode_InternFromString("erasure");
    if (!j->items || !j->stack || !j->erased || !j->fresh || !j->erasure) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    if (!PyBytes_Check(prev) || PyBytes_GET_SIZE(prev) != 32) {
        PyErr_SetString(PyExc_ValueError, "the previous hash is 32 bytes");
        return -1;
    }
    memcpy(j->first_prev, PyBytes_AS_STRING(prev), 32);
    memcpy(j->prev, j->first_prev, 32);
    j->ctx = EVP_CIPHER_CTX_new();
    j->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (!j->ctx || !j->gcm || EVP_EncryptInit_ex(j->ctx, j->gcm, NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(j->ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM is not available (OpenSSL)");
        return -1;
    }
    if (j->hashing) {
        Py_ssize_t f = PyList_GET_SIZE(frontier);
        if (f > MAX_STACK || j->size < 0 || f != __builtin_popcountll((unsigned long long)j->size)) {
            PyErr_SetString(PyExc_ValueError, "the Merkle frontier does not fit the size");
            return -1;
        }
        for (Py_ssize_t k = 0; k < f; k++) {
            PyObject *h = PyList_GET_ITEM(frontier, k);
            if (!PyBytes_Check(h) || PyBytes_GET_SIZE(h) != 32) {
                PyErr_SetString(PyExc_ValueError, "a Merkle frontier hash is 32 bytes");
                return -1;
            }
            memcpy(j->stack[j->depth++], PyBytes_AS_STRING(h), 32);
        }
    }
    size_t arena_n = 0, entry_max = 0;
    for (Py_ssize_t i = 0; i < j->n; i++) {
        PyObject *r = PyList_GET_ITEM(rows, i);
        item_t *it = &j->items[i];
        j->held = i + 1; /* it->key is NULL until set */
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != P_WIDTH) {
            PyErr_SetString(PyExc_TypeError, "a parsed row is a tuple of rows.PARSED");
            return -1;
        }
        PyObject *ps = PyTuple_GET_ITEM(r, P_PSEUDONYM);
        PyObject *key = PyDict_GetItemWithError(keys, ps);
        if (!key && !PyErr_Occurred() && create) { /* a new member: a new key */
            PyObject *made = PyBytes_FromStringAndSize(NULL, 32);
            if (!made) return -1;
            PyObject *member = NULL;
            if (RAND_bytes((unsigned char *)PyBytes_AS_STRING(made), 32) != 1) {
                PyErr_SetString(PyExc_RuntimeError, "no random bytes for a member key (OpenSSL)");
            } else if (PyDict_SetItem(keys, ps, made) == 0 &&
                       (member = PyTuple_Pack(3, ps, PyTuple_GET_ITEM(r, P_SUBJECT), made))) {
                if (PyList_Append(j->fresh, member) == 0) key = made; /* the dict holds it */
            }
            Py_XDECREF(member);
            Py_DECREF(made);
            if (!key) return -1;
        }
        if (!key) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, ps);
            return -1;
        }
        if (!(it->aad = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(r, P_DIGEST), &it->aad_n)))
            return -1;
        if (it->aad_n > INT_MAX / 2) {
            PyErr_SetString(PyExc_ValueError, "a content digest is short text");
            return -1;
        }
        if (key != Py_None) {
            if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 32) {
                PyErr_SetString(PyExc_TypeError, "a member key is 32 bytes");
                return -1;
            }
            Py_INCREF(key);
            it->key = key;
            PyObject *personal = PyTuple_GET_ITEM(r, P_PERSONAL);
            if (personal != Py_None) {
                if (!PyBytes_Check(personal) || PyBytes_GET_SIZE(personal) > INT_MAX / 2) {
                    PyErr_SetString(PyExc_TypeError, "sealed fields are bytes");
                    return -1;
                }
                it->personal = PyBytes_AS_STRING(personal);
                it->personal_n = PyBytes_GET_SIZE(personal);
                it->sealed_at = arena_n;
                it->sealed_n = NONCE + (size_t)it->personal_n + TAG;
                arena_n += it->sealed_n;
            }
            int is_erasure = PyUnicode_Compare(PyTuple_GET_ITEM(r, P_TYPE), j->erasure) == 0;
            if (PyErr_Occurred()) return -1;
            if (is_erasure && (PyDict_SetItem(keys, ps, Py_None) < 0 ||
                               PyDict_SetItem(j->erased, ps, PyTuple_GET_ITEM(r, P_RECORDED)) < 0))
                return -1;
        }
        if (j->hashing) {
            PyObject *head = PyTuple_GET_ITEM(r, P_HEAD), *tail = PyTuple_GET_ITEM(r, P_TAIL);
            if (!PyBytes_Check(head) || !PyBytes_Check(tail)) {
                PyErr_SetString(PyExc_TypeError, "entry parts are bytes");
                return -1;
            }
            it->head = PyBytes_AS_STRING(head), it->head_n = PyBytes_GET_SIZE(head);
            it->tail = PyBytes_AS_STRING(tail), it->tail_n = PyBytes_GET_SIZE(tail);
            size_t need = 32 + (size_t)it->head_n + 2 + 4 * ((it->sealed_n + 2) / 3) + 32 +
                          (size_t)it->tail_n;
            if (need > entry_max) entry_max = need;
        }
        if (for_sqlite) {
            const int ints[4] = {P_ID_KEY, P_PSEUDONYM, P_AT_US, P_RECORDED};
            for (int k = 0; k < 4; k++) {
                it->ints[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(r, ints[k]));
                if (it->ints[k] == -1 && PyErr_Occurred()) return -1;
            }
            for (int k = 0; k < N_TEXTS; k++) {
                /* an erased member's clear copies are not stored */
                PyObject *o = (TEXTS[k] == P_REGION || TEXTS[k] == P_BORN) && !it->key
                                  ? Py_None
                                  : PyTuple_GET_ITEM(r, TEXTS[k]);
                if (text_of(o, &it->text[k], &it->text_n[k]) < 0) return -1;
            }
        }
    }
    j->arena = PyMem_Malloc(arena_n ? arena_n : 1);
    j->entry = PyMem_Malloc(entry_max ? entry_max : 1);
    if (!j->arena || !j->entry) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Without the GIL: seal, splice, hash and push the Merkle leaves of every item.
 * Returns 0, -1 if OpenSSL failed, -2 if the frontier does not fit the size. */
static int crunch(job_t *j) {
    long long size = j->size;
    for (Py_ssize_t i = 0; i < j->n; i++) {
        item_t *it = &j->items[i];
        size++;
        if (it->sealed_n) {
            unsigned char *o = j->arena + it->sealed_at;
            int len;
            Py_ssize_t pn = it->personal_n;
            if (RAND_bytes(o, NONCE) != 1 ||
                EVP_EncryptInit_ex(j->ctx, NULL, NULL,
                                   (const unsigned char *)PyBytes_AS_STRING(it->key), o) != 1 ||
                EVP_EncryptUpdate(j->ctx, NULL, &len, (const unsigned char *)it->aad,
                                  (int)it->aad_n) != 1 ||
                EVP_EncryptUpdate(j->ctx, o + NONCE, &len, (const unsigned char *)it->personal,
                                  (int)pn) != 1 ||
                len != pn || EVP_EncryptFinal_ex(j->ctx, o + NONCE + pn, &len) != 1 || len != 0 ||
                EVP_CIPHER_CTX_ctrl(j->ctx, EVP_CTRL_GCM_GET_TAG, TAG, o + NONCE + pn) != 1)
                return -1;
        }
        if (!j->hashing) {
            memset(it->hash, 0, 32);
            continue;
        }
        /* splice: prev + head + sealed (base64 in quotes, or null) + ,"seq":N + tail */
        char *e = j->entry;
        memcpy(e, j->prev, 32), e += 32;
        memcpy(e, it->head, (size_t)it->head_n), e += it->head_n;
        if (it->sealed_n) {
            *e++ = '"';
            e += b64_into(e, j->arena + it->sealed_at, it->sealed_n);
            *e++ = '"';
        } else {
            memcpy(e, "null", 4), e += 4;
        }
        e += sprintf(e, ",\"seq\":%lld", size);
        memcpy(e, it->tail, (size_t)it->tail_n), e += it->tail_n;
        sha256_of(j->entry, (size_t)(e - j->entry), it->hash);
        memcpy(j->prev, it->hash, 32);
        /* Merkle: leaf = SHA-256(0x00 || hash); each trailing 1 bit of the old size
         * completes a perfect subtree (merkle.RootBuilder.append). */
        unsigned char node[65], leaf[32];
        node[0] = 0;
        memcpy(node + 1, it->hash, 32);
        sha256_of(node, 33, leaf);
        for (unsigned long long m = (unsigned long long)(size - 1); m & 1; m >>= 1) {
            if (j->depth == 0) return -2;
            node[0] = 1;
            memcpy(node + 1, j->stack[--j->depth], 32);
            memcpy(node + 33, leaf, 32);
            sha256_of(node, 65, leaf);
        }
        if (j->depth >= MAX_STACK) return -2;
        memcpy(j->stack[j->depth++], leaf, 32);
    }
    return 0;
}

static int crunch_status(int status) {
    if (status == -1) PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM sealing failed (OpenSSL)");
    if (status == -2) PyErr_SetString(PyExc_ValueError, "the Merkle frontier does not fit the size");
    return status < 0 ? -1 : 0;
}

/* The frontier list replaced by the job's stack (when hashing). */
static int frontier_store(job_t *j, PyObject *frontier) {
    if (!j->hashing) return 0;
    PyObject *roots = PyList_New(j->depth);
    if (!roots) return -1;
    for (Py_ssize_t k = 0; k < j->depth; k++) {
        PyObject *h = PyBytes_FromStringAndSize((const char *)j->stack[k], 32);
        if (!h) {
            Py_DECREF(roots);
            return -1;
        }
        PyList_SET_ITEM(roots, k, h);
    }
    int bad = PyList_SetSlice(frontier, 0, PyList_GET_SIZE(frontier), roots);
    Py_DECREF(roots);
    return bad;
}

static PyObject *last_hash(job_t *j) {
    static const unsigned char zero[32] = {0};
    if (!j->n) return PyBytes_FromStringAndSize((const char *)j->first_prev, 32);
    return PyBytes_FromStringAndSize(j->hashing ? (const char *)j->prev : (const char *)zero, 32);
}

/*
 * append_rows(rows, keys, size, prev, frontier, hashing, create=False)
 *   -> (stored, prev, erased, fresh)
 *
 * rows: parsed events (rows.PARSED); keys: {pseudonym: key or None}, every row's member
 * in it (an erasure sets its member's entry to None) unless `create`, which gives a
 * member not in it a new random key (listed in fresh as (pseudonym, member id, key));
 * size: the chain size before; prev: the last chain hash; frontier: merkle.RootBuilder's
 * subtree roots (a list, replaced in place; the caller advances its size by len(rows));
 * hashing: false stores zero hashes and leaves the frontier alone (bench/integrity.py's
 * plain append). stored: rows in rows.COLUMNS order; erased: {pseudonym: recorded_us}.
 */
static PyObject *py_append_rows(PyObject *self, PyObject *args) {
    PyObject *rows_in, *keys, *prev_in, *frontier;
    long long size;
    int hashing, create = 0;
    if (!PyArg_ParseTuple(args, "O!O!LOO!p|p", &PyList_Type, &rows_in, &PyDict_Type, &keys,
                          &size, &prev_in, &PyList_Type, &frontier, &hashing, &create))
        return NULL;
    job_t j = {0};
    j.size = size;
    j.hashing = hashing;
    PyObject *stored = NULL, *result = NULL;
    /* a list of our own: what is read without the GIL stays alive and in place */
    PyObject *rows = PyList_GetSlice(rows_in, 0, PyList_GET_SIZE(rows_in));
    if (!rows || job_prepare(&j, rows, keys, prev_in, frontier, create, 0) < 0) goto done;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = crunch(&j);
    Py_END_ALLOW_THREADS
    if (crunch_status(status) < 0) goto done;

    if (!(stored = PyList_New(j.n))) goto done;
    PyObject *last = prev_in;
    for (Py_ssize_t i = 0; i < j.n; i++) {
        PyObject *r = PyList_GET_ITEM(rows, i);
        item_t *it = &j.items[i];
        PyObject *seq = PyLong_FromLongLong(size + 1 + i);
        PyObject *digest = PyBytes_FromStringAndSize((const char *)it->hash, 32);
        PyObject *sealed = it->sealed_n ? PyBytes_FromStringAndSize(
                                              (const char *)j.arena + it->sealed_at,
                                              (Py_ssize_t)it->sealed_n)
                                        : Py_NewRef(Py_None);
        PyObject *out = PyTuple_New(18);
        if (!seq || !digest || !sealed || !out) {
            Py_XDECREF(seq);
            Py_XDECREF(digest);
            Py_XDECREF(sealed);
            Py_XDECREF(out);
            goto done;
        }
        PyObject *region = it->key ? PyTuple_GET_ITEM(r, P_REGION) : Py_None;
        PyObject *born = it->key ? PyTuple_GET_ITEM(r, P_BORN) : Py_None;
        PyObject *cells[18] = {
            seq, PyTuple_GET_ITEM(r, P_ID_KEY), PyTuple_GET_ITEM(r, P_EVENT_ID),
            PyTuple_GET_ITEM(r, P_DIGEST), PyTuple_GET_ITEM(r, P_TYPE),
            PyTuple_GET_ITEM(r, P_PSEUDONYM), PyTuple_GET_ITEM(r, P_AT_US),
            PyTuple_GET_ITEM(r, P_PURPOSE), PyTuple_GET_ITEM(r, P_CHOICE),
            PyTuple_GET_ITEM(r, P_SIGNAL), PyTuple_GET_ITEM(r, P_SOURCE),
            PyTuple_GET_ITEM(r, P_NOTICE), region, born, sealed, PyTuple_GET_ITEM(r, P_RECORDED),
            last, digest,
        };
        for (int k = 0; k < 18; k++) {
            /* seq, sealed and digest are new references, handed to the tuple */
            if (k != 0 && k != 14 && k != 17) Py_INCREF(cells[k]);
            PyTuple_SET_ITEM(out, k, cells[k]);
        }
        PyList_SET_ITEM(stored, i, out);
        last = digest; /* borrowed from its tuple, which `stored` holds */
    }
    if (frontier_store(&j, frontier) < 0) goto done;
    result = Py_BuildValue("(OOOO)", stored, last, j.erased, j.fresh);
done:
    Py_XDECREF(stored);
    Py_XDECREF(rows);
    job_free(&j);
    return result;
}

/* The sqlite3 handle of a CPython 3.11-3.13 sqlite3.Connection (its first field: see
 * Modules/_sqlite/connection.h), if `conn` is exactly of `type` (_sqlite3.Connection),
 * Python's _sqlite3 (at `module`) uses this very SQLite library, the handle has `path`
 * open as "main", and a transaction is open on it; else NULL. */
typedef struct {
    PyObject_HEAD
    sqlite3 *db;
} connection_head_t;

static sqlite3 *handle_of(PyObject *conn, PyObject *type, const char *module, const char *path) {
#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
    return NULL; /* another layout may come first: never guess */
#endif
    if (!PyType_Check(type) || Py_TYPE(conn) != (PyTypeObject *)type || !module[0] || !path[0])
        return NULL;
    void *lib = dlopen(module, RTLD_NOW | RTLD_NOLOAD);
    if (!lib) return NULL;
    void *theirs = dlsym(lib, "sqlite3_step");
    dlclose(lib);
    if (theirs != (void *)sqlite3_step) return NULL;
    sqlite3 *db = ((connection_head_t *)conn)->db;
    if (!db) return NULL;
    const char *name = sqlite3_db_filename(db, "main");
    if (!name || strcmp(name, path) != 0 || sqlite3_get_autocommit(db)) return NULL;
    return db;
}

/* Without the GIL: the job's rows inserted with `sql` (rows.COLUMNS order). Returns
 * SQLITE_OK or the error code, its message in msg. */
static int insert_all(job_t *j, sqlite3 *db, const char *sql, char *msg, size_t msg_n) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < j->n; i++) {
        item_t *it = &j->items[i];
        const unsigned char *prev = i ? j->items[i - 1].hash : j->first_prev;
        int c = 1;
        /* each bind only while all before it succeeded: rc is the first failure */
#define BIND(call) (rc = rc == SQLITE_OK ? (call) : rc)
#define TEXT(k)                                                                      \
    BIND(it->text[k] ? sqlite3_bind_text(st, c, it->text[k], (int)it->text_n[k], SQLITE_STATIC) \
                     : sqlite3_bind_null(st, c)), c++
        BIND(sqlite3_bind_int64(st, c++, j->size + 1 + i)); /* seq */
        BIND(sqlite3_bind_int64(st, c++, it->ints[0]));     /* id_key */
        TEXT(0);                                            /* event_id */
        TEXT(1);                                            /* content_sha256 */
        TEXT(2);                                            /* type */
        BIND(sqlite3_bind_int64(st, c++, it->ints[1]));     /* subject (pseudonym) */
        BIND(sqlite3_bind_int64(st, c++, it->ints[2]));     /* at_us */
        for (int k = 3; k < N_TEXTS; k++) TEXT(k);          /* purpose .. birth_date */
        BIND(it->sealed_n ? sqlite3_bind_blob(st, c, j->arena + it->sealed_at,
                                              (int)it->sealed_n, SQLITE_STATIC)
                          : sqlite3_bind_null(st, c)); /* sealed */
        c++;
        BIND(sqlite3_bind_int64(st, c++, it->ints[3]));                /* recorded_us */
        BIND(sqlite3_bind_blob(st, c++, prev, 32, SQLITE_STATIC));     /* prev_hash */
        BIND(sqlite3_bind_blob(st, c++, it->hash, 32, SQLITE_STATIC)); /* hash */
#undef TEXT
#undef BIND
        if (rc != SQLITE_OK) break;
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? sqlite3_reset(st) : rc;
    }
    if (rc != SQLITE_OK) snprintf(msg, msg_n, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

/*
 * append_sqlite(connection, connection_type, module_file, path, sql, rows, keys, size,
 *               prev, frontier, hashing, create=False) -> (count, prev, erased, fresh)
 *
 * As append_rows, then the rows inserted with `sql` (INSERT INTO events (rows.COLUMNS)
 * VALUES (?, ...)) through `connection`'s own handle, in its open transaction. None,
 * before anything is changed, when the handle cannot be used (see handle_of). Like
 * append_rows, a failure after the start (OpenSSL, SQLite, memory) may leave `keys`
 * changed and some rows inserted: the caller rolls the transaction back and drops
 * its Appender.
 */
static PyObject *py_append_sqlite(PyObject *self, PyObject *args) {
    PyObject *conn, *type, *rows_in, *keys, *prev_in, *frontier;
    const char *module, *path, *sql;
    long long size;
    int hashing, create = 0;
    if (!PyArg_ParseTuple(args, "OOsssO!O!LOO!p|p", &conn, &type, &module, &path, &sql,
                          &PyList_Type, &rows_in, &PyDict_Type, &keys, &size, &prev_in,
                          &PyList_Type, &frontier, &hashing, &create))
        return NULL;
    sqlite3 *db = handle_of(conn, type, module, path);
    if (!db) Py_RETURN_NONE;
    job_t j = {0};
    j.size = size;
    j.hashing = hashing;
    PyObject *result = NULL;
    /* a list of our own: what is read without the GIL stays alive and in place */
    PyObject *rows = PyList_GetSlice(rows_in, 0, PyList_GET_SIZE(rows_in));
    if (!rows || job_prepare(&j, rows, keys, prev_in, frontier, create, 1) < 0) goto done;
    int status, rc = SQLITE_OK;
    char msg[256] = "";
    Py_BEGIN_ALLOW_THREADS
    status = crunch(&j);
    if (status == 0) rc = insert_all(&j, db, sql, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (crunch_status(status) < 0) goto done;
    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "SQLite refused an event row (%d): %s", rc, msg);
        goto done;
    }
    if (frontier_store(&j, frontier) < 0) goto done;
    PyObject *last = last_hash(&j);
    if (last) result = Py_BuildValue("(nNOO)", j.n, last, j.erased, j.fresh);
done:
    job_free(&j);
    Py_XDECREF(rows);
    return result;
}

static PyMethodDef methods[] = {
    {"append_rows", py_append_rows, METH_VARARGS, "Seal, chain and hash parsed events."},
    {"append_sqlite", py_append_sqlite, METH_VARARGS,
     "Seal, chain, hash and insert parsed events through a sqlite3.Connection's handle."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_append",
    "The per-event loop of chain.Appender.append, compiled (optional; chain.py has the same).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__append(void) { return PyModule_Create(&module); }
