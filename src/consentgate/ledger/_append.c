/*
 * consentgate.ledger._append: the per-event loop of chain.Appender.append, compiled
 * (optional).
 *
 * `append_rows` turns parsed events (rows.PARSED order) into stored rows (rows.COLUMNS
 * order) exactly as the Python loop does: personal fields sealed with the member's key
 * (AES-256-GCM, a fresh random 96-bit nonce, the content digest as associated data;
 * the output is nonce || ciphertext || tag, as `sealing.seal` writes it), the chain
 * position, the entry spliced from its parts (chain.splice), the chain hash
 * SHA-256(prev || entry), the Merkle leaf SHA-256(0x00 || hash) pushed onto the
 * frontier as merkle.RootBuilder.append does, and an erasure destroying the key in
 * `keys` for the events after it. Nonces come from OpenSSL's CSPRNG (RAND_bytes).
 * tests/ledger/test_append.py checks it against the Python loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "_cbase.h"

#define NONCE 12
#define TAG 16

enum {
    P_ID_KEY, P_EVENT_ID, P_DIGEST, P_TYPE, P_SUBJECT, P_PSEUDONYM, P_AT_US, P_PURPOSE,
    P_CHOICE, P_SIGNAL, P_SOURCE, P_NOTICE, P_REGION, P_BORN, P_PERSONAL, P_RECORDED,
    P_HEAD, P_TAIL, P_WIDTH
};

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 of s into o (4 * ceil(n / 3) bytes); returns the length written. */
static size_t b64_into(char *o, const unsigned char *s, size_t n) {
    char *start = o;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)s[i] << 16;
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8;
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = '=';
    }
    return (size_t)(o - start);
}

/* What one event needs once the GIL is released: pointers into objects the caller
 * keeps alive (the rows, and the member keys this call holds references to). */
typedef struct {
    PyObject *key; /* a reference held by this call, or NULL (no key: erased) */
    const char *personal, *aad, *head, *tail;
    Py_ssize_t personal_n, aad_n, head_n, tail_n;
    size_t sealed_at, sealed_n; /* in the arena; sealed_n 0: nothing sealed */
    unsigned char hash[32];
} item_t;

#define MAX_STACK 64

/* Seal, splice, hash and push the Merkle leaves of every item: no Python calls, run
 * without the GIL. Returns 0, or -1 if OpenSSL failed. */
static int crunch(item_t *items, Py_ssize_t n, long long size, unsigned char *prev,
                  unsigned char (*stack)[32], Py_ssize_t *depth, int hashing,
                  unsigned char *arena, char *entry, EVP_CIPHER_CTX *ctx) {
    for (Py_ssize_t i = 0; i < n; i++) {
        item_t *it = &items[i];
        size++;
        if (it->sealed_n) {
            unsigned char *o = arena + it->sealed_at;
            int len;
            Py_ssize_t pn = it->personal_n;
            if (RAND_bytes(o, NONCE) != 1 ||
                EVP_EncryptInit_ex(ctx, NULL, NULL,
                                   (const unsigned char *)PyBytes_AS_STRING(it->key), o) != 1 ||
                EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *)it->aad,
                                  (int)it->aad_n) != 1 ||
                EVP_EncryptUpdate(ctx, o + NONCE, &len, (const unsigned char *)it->personal,
                                  (int)pn) != 1 ||
                len != pn || EVP_EncryptFinal_ex(ctx, o + NONCE + pn, &len) != 1 || len != 0 ||
                EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG, o + NONCE + pn) != 1)
                return -1;
        }
        if (!hashing) {
            memset(it->hash, 0, 32);
            continue;
        }
        /* splice: prev + head + sealed (base64 in quotes, or null) + ,"seq":N + tail */
        char *e = entry;
        memcpy(e, prev, 32), e += 32;
        memcpy(e, it->head, (size_t)it->head_n), e += it->head_n;
        if (it->sealed_n) {
            *e++ = '"';
            e += b64_into(e, arena + it->sealed_at, it->sealed_n);
            *e++ = '"';
        } else {
            memcpy(e, "null", 4), e += 4;
        }
        e += sprintf(e, ",\"seq\":%lld", size);
        memcpy(e, it->tail, (size_t)it->tail_n), e += it->tail_n;
        sha256_of(entry, (size_t)(e - entry), it->hash);
        memcpy(prev, it->hash, 32);
        /* Merkle: leaf = SHA-256(0x00 || hash); each trailing 1 bit of the old size
         * completes a perfect subtree (merkle.RootBuilder.append). */
        unsigned char node[65], leaf[32];
        node[0] = 0;
        memcpy(node + 1, it->hash, 32);
        sha256_of(node, 33, leaf);
        for (unsigned long long m = (unsigned long long)(size - 1); m & 1; m >>= 1) {
            if (*depth == 0) return -2;
            node[0] = 1;
            memcpy(node + 1, stack[--*depth], 32);
            memcpy(node + 33, leaf, 32);
            sha256_of(node, 65, leaf);
        }
        if (*depth >= MAX_STACK) return -2;
        memcpy(stack[(*depth)++], leaf, 32);
    }
    return 0;
}

/*
 * append_rows(rows, keys, size, prev, frontier, hashing, create=False)
 *   -> (stored, prev, erased, fresh)
 *
 * rows: parsed events (rows.PARSED); keys: {pseudonym: key or None}, every row's member
 * in it (an erasure sets its member's entry to None) unless `create`, which gives a
 * member not in it a new random key (listed in fresh as (pseudonym, member id, key)); size: the chain size before;
 * prev: the last chain hash; frontier: merkle.RootBuilder's subtree roots (a list,
 * replaced in place; the caller advances its size by len(rows)); hashing: false stores
 * zero hashes and leaves the frontier alone (bench/integrity.py's plain append).
 * stored: rows in rows.COLUMNS order; erased: {pseudonym: recorded_us} of erasures.
 * The sealing and hashing run without the GIL (the import's database thread goes on).
 */
static PyObject *py_append_rows(PyObject *self, PyObject *args) {
    PyObject *rows, *keys, *prev_in, *frontier;
    long long size;
    int hashing, create = 0;
    if (!PyArg_ParseTuple(args, "O!O!LSO!p|p", &PyList_Type, &rows, &PyDict_Type, &keys, &size,
                          &prev_in, &PyList_Type, &frontier, &hashing, &create))
        return NULL;
    if (PyBytes_GET_SIZE(prev_in) != 32) {
        PyErr_SetString(PyExc_ValueError, "the previous hash is 32 bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows), depth = 0, taken = 0;
    PyObject *stored = NULL, *erased = PyDict_New(), *erasure = NULL, *result = NULL;
    PyObject *fresh = PyList_New(0);
    item_t *items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(item_t));
    unsigned char(*stack)[32] = PyMem_Malloc(MAX_STACK * 32);
    unsigned char *arena = NULL;
    char *entry = NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    EVP_CIPHER *gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    unsigned char prev[32];
    memcpy(prev, PyBytes_AS_STRING(prev_in), 32);
    if (!erased || !fresh || !items || !stack || !(erasure = PyUnicode_InternFromString("erasure"))) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    if (!ctx || !gcm || EVP_EncryptInit_ex(ctx, gcm, NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM is not available (OpenSSL)");
        goto done;
    }
    if (hashing) {
        Py_ssize_t f = PyList_GET_SIZE(frontier);
        if (f > MAX_STACK) {
            PyErr_SetString(PyExc_ValueError, "the Merkle frontier is too deep");
            goto done;
        }
        for (Py_ssize_t k = 0; k < f; k++) {
            PyObject *h = PyList_GET_ITEM(frontier, k);
            if (!PyBytes_Check(h) || PyBytes_GET_SIZE(h) != 32) {
                PyErr_SetString(PyExc_ValueError, "a Merkle frontier hash is 32 bytes");
                goto done;
            }
            memcpy(stack[depth++], PyBytes_AS_STRING(h), 32);
        }
    }

    /* 1. With the GIL: each event's member key (in order: an erasure takes the key
     * away from the events after it), and pointers to its parts. */
    size_t arena_n = 0, entry_max = 0;
    for (Py_ssize_t i = 0; i < n; i++, taken++) {
        PyObject *r = PyList_GET_ITEM(rows, i);
        item_t *it = &items[i];
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != P_WIDTH) {
            PyErr_SetString(PyExc_TypeError, "a parsed row is a tuple of rows.PARSED");
            goto done;
        }
        PyObject *ps = PyTuple_GET_ITEM(r, P_PSEUDONYM);
        PyObject *key = PyDict_GetItemWithError(keys, ps);
        if (!key && !PyErr_Occurred() && create) { /* a new member: a new key */
            PyObject *made = PyBytes_FromStringAndSize(NULL, 32);
            if (!made) goto done;
            PyObject *row = NULL;
            if (RAND_bytes((unsigned char *)PyBytes_AS_STRING(made), 32) != 1) {
                PyErr_SetString(PyExc_RuntimeError, "no random bytes for a member key (OpenSSL)");
            } else if (PyDict_SetItem(keys, ps, made) == 0 &&
                       (row = PyTuple_Pack(3, ps, PyTuple_GET_ITEM(r, P_SUBJECT), made))) {
                if (PyList_Append(fresh, row) == 0) key = made; /* the dict holds it */
            }
            Py_XDECREF(row);
            Py_DECREF(made);
            if (!key) goto done;
        }
        if (!key) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, ps);
            goto done;
        }
        if (!(it->aad = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(r, P_DIGEST), &it->aad_n)))
            goto done;
        if (key != Py_None) {
            if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 32) {
                PyErr_SetString(PyExc_TypeError, "a member key is 32 bytes");
                goto done;
            }
            Py_INCREF(key);
            it->key = key;
            PyObject *personal = PyTuple_GET_ITEM(r, P_PERSONAL);
            if (personal != Py_None) {
                if (!PyBytes_Check(personal) || PyBytes_GET_SIZE(personal) > INT_MAX / 2) {
                    PyErr_SetString(PyExc_TypeError, "sealed fields are bytes");
                    goto done;
                }
                it->personal = PyBytes_AS_STRING(personal);
                it->personal_n = PyBytes_GET_SIZE(personal);
                it->sealed_at = arena_n;
                it->sealed_n = NONCE + (size_t)it->personal_n + TAG;
                arena_n += it->sealed_n;
            }
            int is_erasure = PyUnicode_Compare(PyTuple_GET_ITEM(r, P_TYPE), erasure) == 0;
            if (PyErr_Occurred()) goto done;
            if (is_erasure && (PyDict_SetItem(keys, ps, Py_None) < 0 ||
                               PyDict_SetItem(erased, ps, PyTuple_GET_ITEM(r, P_RECORDED)) < 0))
                goto done;
        }
        if (hashing) {
            PyObject *head = PyTuple_GET_ITEM(r, P_HEAD), *tail = PyTuple_GET_ITEM(r, P_TAIL);
            if (!PyBytes_Check(head) || !PyBytes_Check(tail)) {
                PyErr_SetString(PyExc_TypeError, "entry parts are bytes");
                goto done;
            }
            it->head = PyBytes_AS_STRING(head), it->head_n = PyBytes_GET_SIZE(head);
            it->tail = PyBytes_AS_STRING(tail), it->tail_n = PyBytes_GET_SIZE(tail);
            size_t need = 32 + (size_t)it->head_n + 2 + 4 * ((it->sealed_n + 2) / 3) + 32 +
                          (size_t)it->tail_n;
            if (need > entry_max) entry_max = need;
        }
    }
    arena = PyMem_Malloc(arena_n ? arena_n : 1);
    entry = PyMem_Malloc(entry_max ? entry_max : 1);
    if (!arena || !entry) {
        PyErr_NoMemory();
        goto done;
    }

    /* 2. Without the GIL: seal, splice, hash, and the Merkle frontier. */
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = crunch(items, n, size, prev, stack, &depth, hashing, arena, entry, ctx);
    Py_END_ALLOW_THREADS
    if (status == -1) {
        PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM sealing failed (OpenSSL)");
        goto done;
    }
    if (status == -2) {
        PyErr_SetString(PyExc_ValueError, "the Merkle frontier does not fit the size");
        goto done;
    }

    /* 3. With the GIL: the stored rows, and the frontier back in its list. */
    if (!(stored = PyList_New(n))) goto done;
    PyObject *last = prev_in;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(rows, i);
        item_t *it = &items[i];
        PyObject *seq = PyLong_FromLongLong(size + 1 + i);
        PyObject *digest = PyBytes_FromStringAndSize((const char *)it->hash, 32);
        PyObject *sealed = it->sealed_n ? PyBytes_FromStringAndSize(
                                              (const char *)arena + it->sealed_at,
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
    if (hashing) {
        PyObject *roots = PyList_New(depth);
        if (!roots) goto done;
        for (Py_ssize_t k = 0; k < depth; k++) {
            PyObject *h = PyBytes_FromStringAndSize((const char *)stack[k], 32);
            if (!h) {
                Py_DECREF(roots);
                goto done;
            }
            PyList_SET_ITEM(roots, k, h);
        }
        int bad = PyList_SetSlice(frontier, 0, PyList_GET_SIZE(frontier), roots);
        Py_DECREF(roots);
        if (bad < 0) goto done;
    }
    result = Py_BuildValue("(OOOO)", stored, last, erased, fresh);
done:
    for (Py_ssize_t i = 0; i < taken && items; i++) Py_XDECREF(items[i].key);
    if (items && taken < n && items[taken].key) Py_DECREF(items[taken].key);
    Py_XDECREF(stored);
    Py_XDECREF(erased);
    Py_XDECREF(fresh);
    Py_XDECREF(erasure);
    PyMem_Free(items);
    PyMem_Free(stack);
    PyMem_Free(arena);
    PyMem_Free(entry);
    EVP_CIPHER_free(gcm);
    EVP_CIPHER_CTX_free(ctx);
    return result;
}

static PyMethodDef methods[] = {
    {"append_rows", py_append_rows, METH_VARARGS, "Seal, chain and hash parsed events."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_append",
    "The per-event loop of chain.Appender.append, compiled (optional; chain.py has the same).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__append(void) { return PyModule_Create(&module); }
