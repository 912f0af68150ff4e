/*
 * consentgate.ledger._chainwalk: the chain walk of `verify`, compiled (optional).
 *
 * `walk_file` steps through a range of events of a SQLite ledger file over its own
 * read-only connection and does for each row exactly what the Python loop of
 * consentgate/ledger/walk.py does while every row is sound: position and link, the
 * canonical entry (chain.encode_entry) with its keyed id commitment (HMAC-SHA256),
 * the chain hash, the Merkle leaf and subtree stack, the member's key row, erasures,
 * and the sealed personal fields (AES-256-GCM opened, agreeing with the clear
 * copies). It stops at the first row that is not sound, or that it cannot encode
 * itself (a value of an unexpected type, text that is not UTF-8, an integer beyond 64
 * bits), and hands the Python loop its state: the Python loop names what is wrong.
 * So this code never judges a row bad; it only spares Python the sound ones.
 * tests/ledger/test_chainwalk.py checks the encoding against the Python one and
 * verify's reports with and without this module. Hashes and AES are OpenSSL's
 * (libcrypto), as in hashlib and cryptography.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <string.h>

#include "_cbase.h"

/* The row layout of walk._WALKED: ENTRY_COLUMNS, then prev_hash, hash, region, birth_date. */
enum {
    C_AT_US = 0, C_CHOICE = 1, C_DIGEST = 2, C_NOTICE = 3, C_PURPOSE = 4, C_RECORDED = 5,
    C_SEALED = 6, C_SEQ = 7, C_SIGNAL = 8, C_SOURCE = 9, C_SUBJECT = 10, C_TYPE = 11,
    C_EVENT_ID = 12, C_ID_KEY = 13, C_PREV = 14, C_HASH = 15, C_REGION = 16, C_BORN = 17,
    C_WIDTH = 18
};

#define MAX_STACK 64


/* One stored value, from a SQLite column or (for the tests) a Python object. */
enum { V_NULL, V_INT, V_TEXT, V_BLOB, V_OTHER };
typedef struct {
    int kind;
    long long i;
    const unsigned char *s;
    size_t n;
} val_t;

/* Well-formed UTF-8 without surrogates (what Python decodes and orjson writes as is). */
static int utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned int cp;
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

/* 0: added; 1: not a value this loop encodes (the Python loop takes the row); -1: error. */
static int add_int(buf_t *b, const val_t *v) {
    if (v->kind != V_INT) return 1;
    return buf_add_ll(b, v->i);
}

/* Text as a JSON string (`quoted`), escaped as orjson escapes it: `"` and `\\` with
 * a backslash, \b \f \n \r \t short, other control characters as \u00xx (lower
 * case), everything else (DEL and all of Unicode included) as is; or, not `quoted`,
 * its UTF-8 as is (the ids message). Not UTF-8: 1. */
static int add_text(buf_t *b, const val_t *v, int quoted) {
    if (v->kind != V_TEXT) return 1;
    if (!utf8_ok(v->s, v->n)) return 1;
    if (!quoted) return buf_add(b, (const char *)v->s, v->n);
    if (buf_reserve(b, 6 * v->n + 2) < 0) return -1;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < v->n; i++) {
        unsigned char c = v->s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return 0;
}

static int add_text_or_null(buf_t *b, const val_t *v) {
    if (v->kind == V_NULL) return ADD_LIT(b, "null");
    return add_text(b, v, 1);
}

static int add_sealed(buf_t *b, const val_t *v) {
    if (v->kind == V_NULL) return ADD_LIT(b, "null");
    if (v->kind != V_BLOB) return 1;
    if (buf_reserve(b, 4 * ((v->n + 2) / 3) + 2) < 0) return -1;
    char *o = b->data + b->len;
    *o++ = '"';
    o += b64_into(o, v->s, v->n);
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return 0;
}

/*
 * The entry of one row (chain.encode_entry) into `b`, using `m` for the ids message.
 * v holds the row in walk._WALKED order. 0: encoded; 1: the Python loop must take
 * the row; -1: error.
 */
static int encode_row(const val_t *v, const hmac_t *key, buf_t *b, buf_t *m) {
    int r;
    b->len = 0;
    m->len = 0;
    /* ids = HMAC(f"{event_id}\n{digest}\n{key}").hex() */
    if ((r = add_text(m, &v[C_EVENT_ID], 0))) return r;
    if (ADD_LIT(m, "\n") < 0) return -1;
    if ((r = add_text(m, &v[C_DIGEST], 0))) return r;
    if (ADD_LIT(m, "\n") < 0) return -1;
    if ((r = add_int(m, &v[C_ID_KEY]))) return r;
    unsigned char mac[32];
    hmac(key, m->data, m->len, mac);
    char ids[64];
    hex32(mac, ids);
    if (ADD_LIT(b, "{\"at_us\":") < 0) return -1;
    if ((r = add_int(b, &v[C_AT_US]))) return r;
    if (ADD_LIT(b, ",\"choice\":") < 0) return -1;
    if ((r = add_text_or_null(b, &v[C_CHOICE]))) return r;
    if (ADD_LIT(b, ",\"ids\":\"") < 0 || buf_add(b, ids, 64) < 0) return -1;
    if (ADD_LIT(b, "\",\"notice_version\":") < 0) return -1;
    if ((r = add_text_or_null(b, &v[C_NOTICE]))) return r;
    if (ADD_LIT(b, ",\"purpose\":") < 0) return -1;
    if ((r = add_text_or_null(b, &v[C_PURPOSE]))) return r;
    if (ADD_LIT(b, ",\"recorded_us\":") < 0) return -1;
    if ((r = add_int(b, &v[C_RECORDED]))) return r;
    if (ADD_LIT(b, ",\"sealed\":") < 0) return -1;
    if ((r = add_sealed(b, &v[C_SEALED]))) return r;
    if (ADD_LIT(b, ",\"seq\":") < 0) return -1;
    if ((r = add_int(b, &v[C_SEQ]))) return r;
    if (ADD_LIT(b, ",\"signal\":") < 0) return -1;
    if ((r = add_text_or_null(b, &v[C_SIGNAL]))) return r;
    if (ADD_LIT(b, ",\"source\":") < 0) return -1;
    if ((r = add_text_or_null(b, &v[C_SOURCE]))) return r;
    if (ADD_LIT(b, ",\"subject\":") < 0) return -1;
    if ((r = add_int(b, &v[C_SUBJECT]))) return r;
    if (ADD_LIT(b, ",\"type\":") < 0) return -1;
    if ((r = add_text_or_null(b, &v[C_TYPE]))) return r;
    return ADD_LIT(b, "}");
}

/* A Python value as walk's rows hold it (sqlite3: None, int, str, bytes). */
static int from_obj(PyObject *o, val_t *v) {
    v->kind = V_OTHER;
    if (o == Py_None) {
        v->kind = V_NULL;
    } else if (PyLong_CheckExact(o)) {
        int overflow = 0;
        v->i = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v->i == -1 && PyErr_Occurred()) return -1;
        if (!overflow) v->kind = V_INT;
    } else if (PyUnicode_CheckExact(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s) {
            PyErr_Clear();  /* a lone surrogate: the Python encoder decides */
            return 0;
        }
        v->kind = V_TEXT, v->s = (const unsigned char *)s, v->n = (size_t)n;
    } else if (PyBytes_CheckExact(o)) {
        v->kind = V_BLOB;
        v->s = (const unsigned char *)PyBytes_AS_STRING(o);
        v->n = (size_t)PyBytes_GET_SIZE(o);
    }
    return 0;
}

static void from_column(sqlite3_stmt *st, int col, val_t *v) {
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_NULL:
        v->kind = V_NULL;
        break;
    case SQLITE_INTEGER:
        v->kind = V_INT;
        v->i = sqlite3_column_int64(st, col);
        break;
    case SQLITE_TEXT:
        v->kind = V_TEXT;
        v->s = sqlite3_column_text(st, col);
        v->n = (size_t)sqlite3_column_bytes(st, col);
        if (!v->s) { /* out of memory in SQLite: let the Python loop read it */
            v->kind = V_OTHER;
            v->n = 0;
        }
        break;
    case SQLITE_BLOB:
        v->kind = V_BLOB;
        v->s = sqlite3_column_blob(st, col);
        v->n = (size_t)sqlite3_column_bytes(st, col);
        if (!v->s) v->s = (const unsigned char *)"";
        break;
    default:
        v->kind = V_OTHER;
    }
}

/* encode_entry(row, secret), for the tests: bytes, or None where the walk would hand
 * the row to the Python loop. */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *row;
    Py_buffer secret;
    if (!PyArg_ParseTuple(args, "O!y*", &PyTuple_Type, &row, &secret)) return NULL;
    PyObject *out = NULL;
    buf_t b = {0}, m = {0};
    val_t v[C_WIDTH];
    memset(v, 0, sizeof v);
    if (PyTuple_GET_SIZE(row) < C_ID_KEY + 1) {
        PyErr_SetString(PyExc_ValueError, "a row of at least 14 values (ENTRY_COLUMNS)");
        goto done;
    }
    for (Py_ssize_t k = 0; k <= C_ID_KEY; k++)
        if (from_obj(PyTuple_GET_ITEM(row, k), &v[k]) < 0) goto done;
    hmac_t key;
    hmac_init(&key, secret.buf, (size_t)secret.len);
    int r = encode_row(v, &key, &b, &m);
    if (r == 0) out = PyBytes_FromStringAndSize(b.data, (Py_ssize_t)b.len);
    else if (r == 1) out = Py_NewRef(Py_None);
    else if (!PyErr_Occurred()) PyErr_NoMemory();
done:
    PyBuffer_Release(&secret);
    PyMem_Free(b.data);
    PyMem_Free(m.data);
    return out;
}

/*
 * The value of `name` in a sealed plaintext, which the ledger writes as canonical
 * JSON: one object of string values. Only plaintexts without a backslash are read
 * (no escapes, so every quote delimits); anything else gives -1 (the Python check
 * reads it). 0: absent; 1: found (*value, *n set).
 */
static int json_field(const unsigned char *s, size_t n, const char *name,
                      const unsigned char **value, size_t *vn) {
    size_t want = strlen(name), i;
    int found = 0;
    if (n < 2 || memchr(s, '\\', n) || s[0] != '{' || s[n - 1] != '}') return -1;
    if (n == 2) return 0;
    i = 1;
    for (;;) {
        if (i >= n || s[i] != '"') return -1;
        const unsigned char *k = s + ++i;
        const unsigned char *q = memchr(k, '"', n - i);
        if (!q) return -1;
        size_t kn = (size_t)(q - k);
        i += kn + 1;
        if (i + 1 >= n || s[i] != ':' || s[i + 1] != '"') return -1;
        i += 2;
        const unsigned char *v = s + i;
        q = memchr(v, '"', n - i);
        if (!q) return -1;
        size_t len = (size_t)(q - v);
        i += len + 1;
        if (kn == want && memcmp(k, name, want) == 0) {
            if (found) return -1; /* a repeated key */
            found = 1;
            *value = v;
            *vn = len;
        }
        if (i >= n) return -1;
        if (s[i] == '}') return i == n - 1 ? found : -1;
        if (s[i] != ',') return -1;
        i++;
    }
}

/* The clear copy agrees with the sealed value (both absent, or the same text). */
static int agrees(const val_t *clear, int found, const unsigned char *v, size_t vn) {
    if (clear->kind == V_NULL) return !found;
    if (!found || clear->kind != V_TEXT || !utf8_ok(clear->s, clear->n)) return 0;
    return clear->n == vn && memcmp(clear->s, v, vn) == 0;
}

typedef struct {
    EVP_CIPHER_CTX *ctx;
    unsigned char *plain;
    size_t cap;
} opener_t;

/* 1: the row's personal fields are sound (walk._check_personal would say nothing);
 * 0: let the Python check look. `key` is the member's entry in `keys`. */
static int personal_sound(const val_t *v, PyObject *key, PyObject *erased, opener_t *o) {
    const val_t *sealed = &v[C_SEALED], *region = &v[C_REGION], *born = &v[C_BORN];
    if (key == erased) return region->kind == V_NULL && born->kind == V_NULL;
    if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != 32) return 0;
    if (sealed->kind == V_NULL) return region->kind == V_NULL && born->kind == V_NULL;
    const val_t *digest = &v[C_DIGEST];
    if (sealed->kind != V_BLOB || digest->kind != V_TEXT || !utf8_ok(digest->s, digest->n))
        return 0;
    if (sealed->n < 12 + 16 || sealed->n > (1u << 30)) return 0;
    size_t cn = sealed->n - 12 - 16;
    if (cn + 16 > o->cap) {
        unsigned char *grown = PyMem_Realloc(o->plain, cn + 16);
        if (!grown) return 0;
        o->plain = grown;
        o->cap = cn + 16;
    }
    const unsigned char *box = sealed->s;
    int len = 0, tail = 0;
    if (EVP_DecryptInit_ex(o->ctx, NULL, NULL, (const unsigned char *)PyBytes_AS_STRING(key), box) != 1 ||
        EVP_DecryptUpdate(o->ctx, NULL, &len, digest->s, (int)digest->n) != 1 ||
        EVP_DecryptUpdate(o->ctx, o->plain, &len, box + 12, (int)cn) != 1 ||
        EVP_CIPHER_CTX_ctrl(o->ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)(box + 12 + cn)) != 1 ||
        EVP_DecryptFinal_ex(o->ctx, o->plain + len, &tail) != 1)
        return 0;
    size_t pn = (size_t)len + (size_t)tail;
    /* Only plaintexts orjson.loads reads as this parser does: UTF-8, no control bytes. */
    if (!utf8_ok(o->plain, pn)) return 0;
    for (size_t k = 0; k < pn; k++)
        if (o->plain[k] < 0x20) return 0;
    const unsigned char *value = NULL;
    size_t vn = 0;
    int found = json_field(o->plain, pn, "region", &value, &vn);
    if (found < 0 || !agrees(region, found, value, vn)) return 0;
    found = json_field(o->plain, pn, "birth_date", &value, &vn);
    if (found < 0 || !agrees(born, found, value, vn)) return 0;
    return 1;
}

/*
 * walk_file(path, sql, start, end, secret, keys, erased_marker, erased, prev, sizes, chunk)
 *   -> (taken, first_seq, first_prev, prev, expected, stack, chunks, partial, stopped)
 *
 * Steps `sql` (walk._WALKED columns, ?1 = start, ?2 = end, in seq order) over its own
 * read-only connection to the SQLite file `path`, doing for each row what walk.walk's
 * loop and its checks of personal fields do, while everything is sound. `prev` is
 * the hash before `start` (None for a later range: its first row's prev_hash is
 * taken, as there). `keys` maps pseudonyms to keys (or `erased_marker`); members
 * whose erasure event is seen go into the set `erased`. Stops at the first row that
 * is not sound or that it cannot encode (`stopped`; `taken` rows came before it):
 * the Python loop walks on from that row with the state returned.
 */
static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static PyObject *py_walk_file(PyObject *self, PyObject *args) {
    const char *sql;
    PyObject *path = NULL; /* bytes, from PyUnicode_FSConverter */
    long long start, end, chunk;
    Py_buffer secret;
    PyObject *keys, *erased_marker, *erased, *prev_in, *sizes;
    if (!PyArg_ParseTuple(args, "O&sLLy*O!OO!OOL", PyUnicode_FSConverter, &path, &sql, &start,
                          &end, &secret, &PyDict_Type, &keys, &erased_marker, &PySet_Type,
                          &erased, &prev_in, &sizes, &chunk))
        return NULL;
    PyObject *result = NULL, *chunks = NULL, *partial = NULL, *stack_list = NULL;
    PyObject *first_prev = Py_NewRef(Py_None), *first_seq = Py_NewRef(Py_None);
    PyObject *prev_out = NULL;
    int stopped = 0;
    buf_t b = {0}, m = {0};
    long long *wanted = NULL;
    Py_ssize_t nwanted = 0, w = 0, depth = 0;
    unsigned char st[MAX_STACK][32], prev[32];
    int have_prev = 0;
    long long expected = start, taken = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    opener_t opener = {NULL, NULL, 0};

    if (chunk <= 0 || (chunk & (chunk - 1)) || !PyAnySet_Check(sizes)) {
        PyErr_SetString(PyExc_ValueError, "chunk is a power of 2, sizes a set of ints");
        goto done;
    }
    if (prev_in != Py_None) {
        if (!PyBytes_CheckExact(prev_in) || PyBytes_GET_SIZE(prev_in) != 32) {
            PyErr_SetString(PyExc_ValueError, "prev is None or a 32-byte hash");
            goto done;
        }
        memcpy(prev, PyBytes_AS_STRING(prev_in), 32);
        have_prev = 1;
    }
    nwanted = PySet_GET_SIZE(sizes);
    wanted = PyMem_Malloc(sizeof(long long) * (size_t)(nwanted ? nwanted : 1));
    chunks = PyList_New(0);
    partial = PyDict_New();
    opener.ctx = EVP_CIPHER_CTX_new();
    if (!wanted || !chunks || !partial || !opener.ctx) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    if (EVP_DecryptInit_ex(opener.ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL has no AES-256-GCM");
        goto done;
    }
    {
        PyObject *it = PyObject_GetIter(sizes), *item;
        Py_ssize_t k = 0;
        if (!it) goto done;
        while (k < nwanted && (item = PyIter_Next(it))) {
            int overflow = 0;
            long long size = PyLong_AsLongLongAndOverflow(item, &overflow);
            Py_DECREF(item);
            if (size == -1 && PyErr_Occurred()) break;
            if (!overflow) wanted[k++] = size; /* a size beyond 64 bits is no position */
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) goto done;
        nwanted = k;
        qsort(wanted, (size_t)nwanted, sizeof(long long), cmp_ll);
    }
    hmac_t key;
    hmac_init(&key, secret.buf, (size_t)secret.len);

    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_open_v2(PyBytes_AS_STRING(path), &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) sqlite3_busy_timeout(db, 30000);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_OSError, "SQLite: %s", db ? sqlite3_errmsg(db) : "cannot open");
        goto done;
    }
    if (sqlite3_column_count(stmt) < C_WIDTH) {
        PyErr_SetString(PyExc_ValueError, "the query returns walk._WALKED columns");
        goto done;
    }
    sqlite3_bind_int64(stmt, 1, start);
    sqlite3_bind_int64(stmt, 2, end);

    val_t v[C_WIDTH];
    for (;;) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) {
            PyErr_Format(PyExc_OSError, "SQLite: %s", sqlite3_errmsg(db));
            goto done;
        }
        for (int k = 0; k < C_WIDTH; k++) from_column(stmt, k, &v[k]);
        /* Anything but a sound, encodable next link: the Python loop takes it. */
        int sound = 0;
        const val_t *pv = &v[C_PREV], *hv = &v[C_HASH], *sv = &v[C_SEQ];
        if (sv->kind != V_INT || pv->kind != V_BLOB || pv->n != 32 || hv->kind != V_BLOB ||
            hv->n != 32 || v[C_SUBJECT].kind != V_INT)
            goto stopped;
        if (!have_prev) { /* the first row of a later range: its link is checked by main */
            if (sv->i != start) goto stopped;
        } else if (sv->i != expected || memcmp(pv->s, prev, 32) != 0) {
            goto stopped;
        }
        {
            const unsigned char *link = have_prev ? prev : pv->s;
            int r = encode_row(v, &key, &b, &m);
            if (r < 0) goto done;
            if (r) goto stopped;
            unsigned char computed[32];
            SHA256_CTX c;
            SHA256_Init(&c);
            SHA256_Update(&c, link, 32);
            SHA256_Update(&c, b.data, b.len);
            SHA256_Final(computed, &c);
            if (memcmp(computed, hv->s, 32) != 0) goto stopped;
            /* The member's key row, erasure and personal fields. */
            PyObject *subject = PyLong_FromLongLong(v[C_SUBJECT].i);
            if (!subject) goto done;
            PyObject *member = PyDict_GetItemWithError(keys, subject);
            if (!member) {
                Py_DECREF(subject);
                if (PyErr_Occurred()) goto done;
                goto stopped;
            }
            if (v[C_SEALED].kind != V_NULL || v[C_REGION].kind != V_NULL ||
                v[C_BORN].kind != V_NULL) {
                if (!personal_sound(v, member, erased_marker, &opener)) {
                    Py_DECREF(subject);
                    goto stopped;
                }
            }
            const val_t *type = &v[C_TYPE];
            if (type->kind == V_TEXT && type->n == 7 && memcmp(type->s, "erasure", 7) == 0 &&
                PySet_Add(erased, subject) < 0) {
                Py_DECREF(subject);
                goto done;
            }
            Py_DECREF(subject);
            sound = 1;
            if (!have_prev) {
                Py_SETREF(first_seq, PyLong_FromLongLong(sv->i));
                Py_SETREF(first_prev, PyBytes_FromStringAndSize((const char *)pv->s, 32));
                if (!first_seq || !first_prev) goto done;
                have_prev = 1;
            } else if (first_seq == Py_None) {
                Py_SETREF(first_seq, PyLong_FromLongLong(sv->i));
                if (!first_seq) goto done;
            }
            long long seq = sv->i;
            /* The Merkle leaf, folded into the open subtrees of its chunk. */
            unsigned char node[65], leaf[32];
            node[0] = 0;
            memcpy(node + 1, computed, 32);
            sha256_of(node, 33, leaf);
            long long pos = (seq - 1) & (chunk - 1);
            while (pos & 1) {
                if (depth == 0) {
                    PyErr_SetString(PyExc_ValueError, "Merkle stack underflow");
                    goto done;
                }
                node[0] = 1;
                memcpy(node + 1, st[--depth], 32);
                memcpy(node + 33, leaf, 32);
                sha256_of(node, 65, leaf);
                pos >>= 1;
            }
            if ((seq & (chunk - 1)) == 0) {
                PyObject *root = PyBytes_FromStringAndSize((const char *)leaf, 32);
                if (!root || PyList_Append(chunks, root) < 0) {
                    Py_XDECREF(root);
                    goto done;
                }
                Py_DECREF(root);
            } else {
                if (depth >= MAX_STACK) {
                    PyErr_SetString(PyExc_ValueError, "Merkle stack overflow");
                    goto done;
                }
                memcpy(st[depth++], leaf, 32);
            }
            memcpy(prev, computed, 32);
            expected = seq + 1;
            taken++;
            while (w < nwanted && wanted[w] < seq) w++;
            if (w < nwanted && wanted[w] == seq) {
                PyObject *joined = PyBytes_FromStringAndSize(NULL, depth * 32);
                if (!joined) goto done;
                for (Py_ssize_t k = 0; k < depth; k++)
                    memcpy(PyBytes_AS_STRING(joined) + 32 * k, st[k], 32);
                PyObject *entry = Py_BuildValue("(nN)", PyList_GET_SIZE(chunks), joined);
                PyObject *at = PyLong_FromLongLong(seq);
                int bad = !entry || !at || PyDict_SetItem(partial, at, entry) < 0;
                Py_XDECREF(entry);
                Py_XDECREF(at);
                if (bad) goto done;
            }
        }
    stopped:
        if (!sound) {
            stopped = 1;
            break;
        }
    }
    stack_list = PyList_New(depth);
    if (!stack_list) goto done;
    for (Py_ssize_t k = 0; k < depth; k++) {
        PyObject *hb = PyBytes_FromStringAndSize((const char *)st[k], 32);
        if (!hb) goto done;
        PyList_SET_ITEM(stack_list, k, hb);
    }
    prev_out = have_prev ? PyBytes_FromStringAndSize((const char *)prev, 32) : Py_NewRef(Py_None);
    if (!prev_out) goto done;
    result = Py_BuildValue("(LOOOLOOOO)", taken, first_seq, first_prev, prev_out, expected,
                           stack_list, chunks, partial, stopped ? Py_True : Py_False);
done:
    if (stmt) sqlite3_finalize(stmt);
    if (db) sqlite3_close(db);
    if (opener.ctx) EVP_CIPHER_CTX_free(opener.ctx);
    PyMem_Free(opener.plain);
    PyBuffer_Release(&secret);
    PyMem_Free(b.data);
    PyMem_Free(m.data);
    PyMem_Free(wanted);
    Py_XDECREF(chunks);
    Py_XDECREF(partial);
    Py_XDECREF(stack_list);
    Py_XDECREF(first_prev);
    Py_XDECREF(first_seq);
    Py_XDECREF(prev_out);
    Py_XDECREF(path);
    return result;
}

/* keyed_many(secret, messages) -> list of HMAC-SHA256 digests (sealing.KeyedHash). */
static PyObject *py_keyed_many(PyObject *self, PyObject *args) {
    Py_buffer secret;
    PyObject *messages;
    if (!PyArg_ParseTuple(args, "y*O!", &secret, &PyList_Type, &messages)) return NULL;
    hmac_t key;
    hmac_init(&key, secret.buf, (size_t)secret.len);
    PyBuffer_Release(&secret);
    Py_ssize_t n = PyList_GET_SIZE(messages);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *msg = PyList_GET_ITEM(messages, k);
        if (!PyBytes_Check(msg)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "messages are bytes");
            return NULL;
        }
        unsigned char mac[32];
        hmac(&key, PyBytes_AS_STRING(msg), (size_t)PyBytes_GET_SIZE(msg), mac);
        PyObject *d = PyBytes_FromStringAndSize((const char *)mac, 32);
        if (!d) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, d);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"walk_file", py_walk_file, METH_VARARGS, "Walk the sound rows of a SQLite range."},
    {"encode", py_encode, METH_VARARGS, "chain.encode_entry of one row, or None."},
    {"keyed_many", py_keyed_many, METH_VARARGS, "HMAC-SHA256 of each message under one key."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chainwalk",
    "The compiled hot loop of verify's chain walk (optional; walk.py has the same in Python).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__chainwalk(void) { return PyModule_Create(&module); }
