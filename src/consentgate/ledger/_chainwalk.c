/*
 * consentgate.ledger._chainwalk: the hot loop of `verify`'s chain walk, compiled.
 *
 * `advance` does for a run of stored rows exactly what the row-by-row loop of
 * consentgate/ledger/walk.py does while every row is sound: position and link checks,
 * the canonical entry (chain.encode_entry), its keyed id commitment (HMAC-SHA256),
 * the chain hash, the Merkle leaf and the subtree stack. It stops at the first row
 * it does not judge as sound, or cannot encode itself (a value of an unexpected type,
 * text that JSON would escape, an integer beyond 64 bits), and returns its index:
 * the Python loop takes that row, reports or encodes it, and calls `advance` again.
 * So the compiled loop never decides that anything is wrong; it only skips Python
 * work for rows that pass, and tests/ledger/test_chainwalk.py checks it byte for byte
 * against the Python encoding. SHA-256 is OpenSSL's (libcrypto), as in hashlib.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

/* The row layout of walk._WALKED: ENTRY_COLUMNS, then prev_hash, hash, region, birth_date. */
enum {
    C_AT_US = 0, C_CHOICE = 1, C_DIGEST = 2, C_NOTICE = 3, C_PURPOSE = 4, C_RECORDED = 5,
    C_SEALED = 6, C_SEQ = 7, C_SIGNAL = 8, C_SOURCE = 9, C_SUBJECT = 10, C_TYPE = 11,
    C_EVENT_ID = 12, C_ID_KEY = 13, C_PREV = 14, C_HASH = 15, C_REGION = 16, C_BORN = 17,
    C_WIDTH = 18
};

#define MAX_STACK 64

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_add(buf_t *b, const char *s, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

#define ADD_LIT(b, s) buf_add((b), (s), sizeof(s) - 1)

/* 0: added; 1: not an int this loop encodes (the Python loop takes the row); -1: error. */
static int add_int(buf_t *b, PyObject *v) {
    if (!PyLong_CheckExact(v)) return 1;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return 1;
    if (x == -1 && PyErr_Occurred()) return -1;
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", x);
    return buf_add(b, tmp, (size_t)n);
}

/* Text as a JSON string, only when it needs no escape (else 1). */
static int add_text_raw(buf_t *b, PyObject *v, int quoted) {
    if (!PyUnicode_CheckExact(v)) return 1;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);
    if (!s) {  /* a lone surrogate: not UTF-8 */
        PyErr_Clear();
        return 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') return 1;
    }
    if (quoted && ADD_LIT(b, "\"") < 0) return -1;
    if (buf_add(b, s, (size_t)n) < 0) return -1;
    if (quoted && ADD_LIT(b, "\"") < 0) return -1;
    return 0;
}

static int add_text_or_null(buf_t *b, PyObject *v) {
    if (v == Py_None) return ADD_LIT(b, "null");
    return add_text_raw(b, v, 1);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int add_sealed(buf_t *b, PyObject *v) {
    if (v == Py_None) return ADD_LIT(b, "null");
    if (!PyBytes_CheckExact(v)) return 1;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(v);
    size_t n = (size_t)PyBytes_GET_SIZE(v);
    if (buf_reserve(b, 4 * ((n + 2) / 3) + 2) < 0) return -1;
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned int w = (s[i] << 16) | (s[i + 1] << 8) | s[i + 2];
        *o++ = B64[w >> 18];
        *o++ = B64[(w >> 12) & 63];
        *o++ = B64[(w >> 6) & 63];
        *o++ = B64[w & 63];
    }
    if (n - i == 1) {
        unsigned int w = s[i] << 16;
        *o++ = B64[w >> 18];
        *o++ = B64[(w >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        unsigned int w = (s[i] << 16) | (s[i + 1] << 8);
        *o++ = B64[w >> 18];
        *o++ = B64[(w >> 12) & 63];
        *o++ = B64[(w >> 6) & 63];
        *o++ = '=';
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return 0;
}

/* SHA-256 of one buffer. (OpenSSL 3's one-shot SHA256() looks the algorithm up on
 * every call, which costs more than hashing these short messages.) */
static void sha256_of(const void *data, size_t n, unsigned char out[32]) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, n);
    SHA256_Final(out, &c);
}

typedef struct {
    SHA256_CTX inner, outer;
} hmac_t;

static void hmac_init(hmac_t *h, const unsigned char *key, size_t n) {
    unsigned char block[64], digest[32];
    memset(block, 0, sizeof block);
    if (n > 64) {
        sha256_of(key, n, digest);
        memcpy(block, digest, 32);
    } else {
        memcpy(block, key, n);
    }
    unsigned char pad[64];
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    SHA256_Init(&h->inner);
    SHA256_Update(&h->inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&h->outer);
    SHA256_Update(&h->outer, pad, 64);
}

static void hmac(const hmac_t *h, const void *msg, size_t n, unsigned char out[32]) {
    SHA256_CTX c = h->inner;
    unsigned char inner[32];
    SHA256_Update(&c, msg, n);
    SHA256_Final(inner, &c);
    c = h->outer;
    SHA256_Update(&c, inner, 32);
    SHA256_Final(out, &c);
}

static const char HEX[] = "0123456789abcdef";

/*
 * The entry of one row (chain.encode_entry) into `b`, the ids message into `m`.
 * 0: encoded; 1: the Python loop must take the row; -1: error.
 */
static int encode_row(PyObject *row, const hmac_t *key, buf_t *b, buf_t *m) {
    int r;
    b->len = 0;
    m->len = 0;
    /* ids = HMAC(f"{event_id}\n{digest}\n{key}").hex() */
    if ((r = add_text_raw(m, PyTuple_GET_ITEM(row, C_EVENT_ID), 0))) return r;
    if (ADD_LIT(m, "\n") < 0) return -1;
    if ((r = add_text_raw(m, PyTuple_GET_ITEM(row, C_DIGEST), 0))) return r;
    if (ADD_LIT(m, "\n") < 0) return -1;
    if ((r = add_int(m, PyTuple_GET_ITEM(row, C_ID_KEY)))) return r;
    unsigned char mac[32];
    hmac(key, m->data, m->len, mac);
    char ids[64];
    for (int i = 0; i < 32; i++) {
        ids[2 * i] = HEX[mac[i] >> 4];
        ids[2 * i + 1] = HEX[mac[i] & 15];
    }
    if (ADD_LIT(b, "{\"at_us\":") < 0) return -1;
    if ((r = add_int(b, PyTuple_GET_ITEM(row, C_AT_US)))) return r;
    if (ADD_LIT(b, ",\"choice\":") < 0) return -1;
    if ((r = add_text_or_null(b, PyTuple_GET_ITEM(row, C_CHOICE)))) return r;
    if (ADD_LIT(b, ",\"ids\":\"") < 0 || buf_add(b, ids, 64) < 0) return -1;
    if (ADD_LIT(b, "\",\"notice_version\":") < 0) return -1;
    if ((r = add_text_or_null(b, PyTuple_GET_ITEM(row, C_NOTICE)))) return r;
    if (ADD_LIT(b, ",\"purpose\":") < 0) return -1;
    if ((r = add_text_or_null(b, PyTuple_GET_ITEM(row, C_PURPOSE)))) return r;
    if (ADD_LIT(b, ",\"recorded_us\":") < 0) return -1;
    if ((r = add_int(b, PyTuple_GET_ITEM(row, C_RECORDED)))) return r;
    if (ADD_LIT(b, ",\"sealed\":") < 0) return -1;
    if ((r = add_sealed(b, PyTuple_GET_ITEM(row, C_SEALED)))) return r;
    if (ADD_LIT(b, ",\"seq\":") < 0) return -1;
    if ((r = add_int(b, PyTuple_GET_ITEM(row, C_SEQ)))) return r;
    if (ADD_LIT(b, ",\"signal\":") < 0) return -1;
    if ((r = add_text_or_null(b, PyTuple_GET_ITEM(row, C_SIGNAL)))) return r;
    if (ADD_LIT(b, ",\"source\":") < 0) return -1;
    if ((r = add_text_or_null(b, PyTuple_GET_ITEM(row, C_SOURCE)))) return r;
    if (ADD_LIT(b, ",\"subject\":") < 0) return -1;
    if ((r = add_int(b, PyTuple_GET_ITEM(row, C_SUBJECT)))) return r;
    if (ADD_LIT(b, ",\"type\":") < 0) return -1;
    if ((r = add_text_or_null(b, PyTuple_GET_ITEM(row, C_TYPE)))) return r;
    return ADD_LIT(b, "}");
}

/* encode_entry(row, secret), for the tests: bytes, or None where `advance` would stop. */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *row;
    Py_buffer secret;
    if (!PyArg_ParseTuple(args, "O!y*", &PyTuple_Type, &row, &secret)) return NULL;
    if (PyTuple_GET_SIZE(row) < C_ID_KEY + 1) {
        PyBuffer_Release(&secret);
        PyErr_SetString(PyExc_ValueError, "a row of at least 14 values (ENTRY_COLUMNS)");
        return NULL;
    }
    hmac_t key;
    hmac_init(&key, secret.buf, (size_t)secret.len);
    PyBuffer_Release(&secret);
    buf_t b = {0}, m = {0};
    int r = encode_row(row, &key, &b, &m);
    PyObject *out = NULL;
    if (r == 0) out = PyBytes_FromStringAndSize(b.data, (Py_ssize_t)b.len);
    else if (r == 1) out = Py_NewRef(Py_None);
    else if (!PyErr_Occurred()) PyErr_NoMemory();
    PyMem_Free(b.data);
    PyMem_Free(m.data);
    return out;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/*
 * advance(rows, i, secret, prev, expected, stack, chunks, partial, sizes, chunk)
 *   -> (i, prev, expected)
 *
 * From rows[i] on, while each row is the sound next link: as walk.walk's loop. `stack`
 * (open subtree roots, list of bytes), `chunks` (list) and `partial` (dict: size ->
 * (chunks done, joined stack)) are updated in place; `sizes` is a set of ints.
 * Returns the index of the first row not taken (len(rows) when all were).
 */
static PyObject *py_advance(PyObject *self, PyObject *args) {
    PyObject *rows, *stack, *chunks, *partial, *sizes;
    Py_ssize_t i;
    Py_buffer secret, prev_in;
    long long expected, chunk;
    if (!PyArg_ParseTuple(args, "O!ny*y*LO!O!O!OL", &PyList_Type, &rows, &i, &secret, &prev_in,
                          &expected, &PyList_Type, &stack, &PyList_Type, &chunks,
                          &PyDict_Type, &partial, &sizes, &chunk))
        return NULL;
    PyObject *result = NULL;
    buf_t b = {0}, m = {0};
    long long *wanted = NULL;
    Py_ssize_t nwanted = 0, w = 0;
    unsigned char st[MAX_STACK][32];
    Py_ssize_t depth = PyList_GET_SIZE(stack);
    unsigned char prev[32];

    if (!PyAnySet_Check(sizes)) {
        PyErr_SetString(PyExc_TypeError, "sizes is a set of ints");
        goto done;
    }
    if (prev_in.len != 32 || chunk <= 0 || (chunk & (chunk - 1)) || depth > MAX_STACK) {
        PyErr_SetString(PyExc_ValueError, "prev of 32 bytes, chunk a power of 2, a short stack");
        goto done;
    }
    memcpy(prev, prev_in.buf, 32);
    for (Py_ssize_t k = 0; k < depth; k++) {
        PyObject *h = PyList_GET_ITEM(stack, k);
        if (!PyBytes_CheckExact(h) || PyBytes_GET_SIZE(h) != 32) {
            PyErr_SetString(PyExc_ValueError, "stack entries are 32-byte hashes");
            goto done;
        }
        memcpy(st[k], PyBytes_AS_STRING(h), 32);
    }
    /* The wanted sizes, sorted, from the first one at or past `expected`. */
    nwanted = PySet_GET_SIZE(sizes);
    wanted = PyMem_Malloc(sizeof(long long) * (size_t)(nwanted ? nwanted : 1));
    if (!wanted) {
        PyErr_NoMemory();
        goto done;
    }
    {
        PyObject *it = PyObject_GetIter(sizes), *item;
        Py_ssize_t k = 0;
        if (!it) goto done;
        while (k < nwanted && (item = PyIter_Next(it))) {
            wanted[k++] = PyLong_AsLongLong(item);
            Py_DECREF(item);
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) goto done;
        nwanted = k;
        qsort(wanted, (size_t)nwanted, sizeof(long long), cmp_ll);
        while (w < nwanted && wanted[w] < expected) w++;
    }
    hmac_t key;
    hmac_init(&key, secret.buf, (size_t)secret.len);

    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) < C_WIDTH) break;
        PyObject *seq_o = PyTuple_GET_ITEM(row, C_SEQ);
        if (!PyLong_CheckExact(seq_o)) break;
        int overflow = 0;
        long long seq = PyLong_AsLongLongAndOverflow(seq_o, &overflow);
        if (overflow || seq != expected) {
            PyErr_Clear();
            break;
        }
        PyObject *p = PyTuple_GET_ITEM(row, C_PREV), *h = PyTuple_GET_ITEM(row, C_HASH);
        if (!PyBytes_CheckExact(p) || PyBytes_GET_SIZE(p) != 32 ||
            memcmp(PyBytes_AS_STRING(p), prev, 32) != 0)
            break;
        if (!PyBytes_CheckExact(h) || PyBytes_GET_SIZE(h) != 32) break;
        int r = encode_row(row, &key, &b, &m);
        if (r < 0) {
            if (!PyErr_Occurred()) PyErr_NoMemory();
            goto done;
        }
        if (r) break;
        unsigned char computed[32];
        SHA256_CTX c;
        SHA256_Init(&c);
        SHA256_Update(&c, prev, 32);
        SHA256_Update(&c, b.data, b.len);
        SHA256_Final(computed, &c);
        if (memcmp(computed, PyBytes_AS_STRING(h), 32) != 0) break;
        /* The Merkle leaf, folded into the open subtrees of its chunk. */
        unsigned char node[65];
        node[0] = 0;
        memcpy(node + 1, computed, 32);
        unsigned char leaf[32];
        sha256_of(node, 33, leaf);
        long long pos = (seq - 1) & (chunk - 1);
        while (pos & 1) {
            unsigned char joined[65];
            joined[0] = 1;
            memcpy(joined + 1, st[--depth], 32);
            memcpy(joined + 33, leaf, 32);
            sha256_of(joined, 65, leaf);
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
    {
        /* Write the open subtrees back, so the Python loop carries on from here. */
        PyObject *fresh = PyList_New(depth);
        if (!fresh) goto done;
        for (Py_ssize_t k = 0; k < depth; k++) {
            PyObject *hb = PyBytes_FromStringAndSize((const char *)st[k], 32);
            if (!hb) {
                Py_DECREF(fresh);
                goto done;
            }
            PyList_SET_ITEM(fresh, k, hb);
        }
        int bad = PyList_SetSlice(stack, 0, PyList_GET_SIZE(stack), fresh) < 0;
        Py_DECREF(fresh);
        if (bad) goto done;
    }
    result = Py_BuildValue("(ny#L)", i, (const char *)prev, (Py_ssize_t)32, expected);
done:
    PyBuffer_Release(&secret);
    PyBuffer_Release(&prev_in);
    PyMem_Free(b.data);
    PyMem_Free(m.data);
    PyMem_Free(wanted);
    return result;
}


/*
 * The value of `name` in a sealed plaintext, which sealing.seal writes as canonical
 * JSON: one object of string values. Only plaintexts without a backslash are read
 * (no escapes, so every quote delimits); anything else gives -1 (the Python check
 * reads it). 0: absent; 1: found (*value, *n set).
 */
static int json_field(const unsigned char *s, size_t n, const char *name, const unsigned char **value,
                      size_t *vn) {
    size_t want = strlen(name), i = 0;
    int found = 0;
    if (memchr(s, '\\', n) || n < 2 || s[0] != '{' || s[n - 1] != '}') return -1;
    i = 1;
    if (n == 2) return 0;
    for (;;) {
        /* "key":"value" */
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
            if (found) return -1;  /* a repeated key */
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
static int agrees(PyObject *clear, int found, const unsigned char *v, size_t vn) {
    if (clear == Py_None) return !found;
    if (!found || !PyUnicode_CheckExact(clear)) return 0;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(clear, &n);
    if (!s) {
        PyErr_Clear();
        return 0;
    }
    return (size_t)n == vn && memcmp(s, v, vn) == 0;
}

/* 1: the row's personal fields are sound; 0: the Python check must look; -1: error. */
static int personal_sound(PyObject *row, PyObject *keys, PyObject *erased, EVP_CIPHER_CTX *ctx,
                          unsigned char **plain, size_t *cap) {
    PyObject *sealed = PyTuple_GET_ITEM(row, C_SEALED);
    PyObject *region = PyTuple_GET_ITEM(row, C_REGION), *born = PyTuple_GET_ITEM(row, C_BORN);
    PyObject *key = PyDict_GetItemWithError(keys, PyTuple_GET_ITEM(row, C_SUBJECT));
    if (!key) return PyErr_Occurred() ? -1 : 0;
    if (key == erased) return region == Py_None && born == Py_None;
    if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != 32) return 0;
    if (sealed == Py_None) return region == Py_None && born == Py_None;
    PyObject *digest = PyTuple_GET_ITEM(row, C_DIGEST);
    if (!PyBytes_CheckExact(sealed) || !PyUnicode_CheckExact(digest)) return 0;
    Py_ssize_t dn;
    const char *d = PyUnicode_AsUTF8AndSize(digest, &dn);
    if (!d) {
        PyErr_Clear();
        return 0;
    }
    const unsigned char *box = (const unsigned char *)PyBytes_AS_STRING(sealed);
    Py_ssize_t bn = PyBytes_GET_SIZE(sealed);
    if (bn < 12 + 16) return 0;
    size_t cn = (size_t)bn - 12 - 16;
    if (cn + 16 > *cap) {
        unsigned char *grown = PyMem_Realloc(*plain, cn + 16);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        *plain = grown;
        *cap = cn + 16;
    }
    int len = 0, tail = 0;
    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(key);
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, k, box) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)d, (int)dn) != 1 ||
        EVP_DecryptUpdate(ctx, *plain, &len, box + 12, (int)cn) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)(box + 12 + cn)) != 1 ||
        EVP_DecryptFinal_ex(ctx, *plain + len, &tail) != 1)
        return 0;
    size_t pn = (size_t)(len + tail);
    const unsigned char *v = NULL;
    size_t vn = 0;
    int found = json_field(*plain, pn, "region", &v, &vn);
    if (found < 0 || !agrees(region, found, v, vn)) return 0;
    found = json_field(*plain, pn, "birth_date", &v, &vn);
    if (found < 0 || !agrees(born, found, v, vn)) return 0;
    return 1;
}

/*
 * unsound_personal(rows, keys, erased) -> list of the indices of rows whose personal
 * fields the Python check (walk._check_personal) must look at: every row with a
 * sealed value or a clear copy, except those whose sealed fields open with the
 * member's key and agree with the clear copies (or, for an erased member, that keep
 * no clear copy). Rows of members without a key row are left out, as there.
 */
static PyObject *py_unsound_personal(PyObject *self, PyObject *args) {
    PyObject *rows, *keys, *erased;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &rows, &PyDict_Type, &keys, &erased))
        return NULL;
    PyObject *out = PyList_New(0);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char *plain = NULL;
    size_t cap = 0;
    if (!out || !ctx || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "OpenSSL: no AES-256-GCM");
        goto fail;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        int verdict = 0;
        if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) >= C_WIDTH) {
            if (PyTuple_GET_ITEM(row, C_SEALED) == Py_None &&
                PyTuple_GET_ITEM(row, C_REGION) == Py_None &&
                PyTuple_GET_ITEM(row, C_BORN) == Py_None)
                continue;
            int known = PyDict_Contains(keys, PyTuple_GET_ITEM(row, C_SUBJECT));
            if (known < 0) goto fail;
            if (!known) continue;
            verdict = personal_sound(row, keys, erased, ctx, &plain, &cap);
            if (verdict < 0) goto fail;
        }
        if (!verdict) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (!at || PyList_Append(out, at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
        }
    }
    EVP_CIPHER_CTX_free(ctx);
    PyMem_Free(plain);
    return out;
fail:
    Py_XDECREF(out);
    if (ctx) EVP_CIPHER_CTX_free(ctx);
    PyMem_Free(plain);
    return NULL;
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
    {"advance", py_advance, METH_VARARGS, "Walk the sound rows of a batch (see walk.walk)."},
    {"encode", py_encode, METH_VARARGS, "chain.encode_entry of one row, or None."},
    {"unsound_personal", py_unsound_personal, METH_VARARGS,
     "Rows whose personal fields need the Python check (see walk._check_personal)."},
    {"keyed_many", py_keyed_many, METH_VARARGS, "HMAC-SHA256 of each message under one key."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chainwalk",
    "The compiled hot loop of verify's chain walk (optional; walk.py has the same in Python).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__chainwalk(void) { return PyModule_Create(&module); }
