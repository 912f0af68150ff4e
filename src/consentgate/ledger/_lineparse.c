/*
 * consentgate.ledger._lineparse: the plain lines of a JSON Lines import, compiled
 * (optional).
 *
 * `parse_block` reads a block of lines and, for every line whose validity it can
 * establish with simple rules, builds the row `parsing.row_of(validate_event(...))`
 * would build (rows.PARSED order): the content digest of the canonical body, the id
 * key, the keyed pseudonym, the sealed-fields JSON and the two parts of the chain
 * entry with the keyed id commitment. A line it is not sure of is handed back as
 * its raw bytes, and the Python parser decides it (and names the error, if any).
 * So this code never rejects a line; it only spares Python the plain ones.
 *
 * Plain means: one JSON object whose values are all strings of printable ASCII
 * without escapes (no backslash), each key known and allowed for the event's type
 * and given once; `at` exactly YYYY-MM-DDTHH:MM:SSZ; `birth_date` exactly
 * YYYY-MM-DD, not after the event's day nor `today`; text fields of 1 to 256
 * characters, not all spaces; a consent's purpose among `purposes`, its choice one
 * of CHOICES; a profile's region among `regions`; the signal `gpc`.
 * tests/ledger/test_lineparse.py checks rows and hand-backs against the Python parser.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_cbase.h"

#define MAX_TEXT 256

/* Keys of an event, by index. */
enum {
    K_TYPE, K_SUBJECT, K_AT, K_EVENT_ID, K_IP, K_USER_AGENT, K_NOTE, K_REGION, K_BIRTH_DATE,
    K_PURPOSE, K_CHOICE, K_SOURCE, K_NOTICE_VERSION, K_SIGNAL, K_COUNT
};
static const char *const KEY_NAMES[K_COUNT] = {
    "type", "subject", "at", "event_id", "ip", "user_agent", "note", "region", "birth_date",
    "purpose", "choice", "source", "notice_version", "signal",
};
#define BIT(k) (1u << (k))
#define COMMON (BIT(K_TYPE) | BIT(K_SUBJECT) | BIT(K_AT) | BIT(K_EVENT_ID) | BIT(K_IP) | \
                BIT(K_USER_AGENT) | BIT(K_NOTE))
#define TEXT_COMMON (BIT(K_SUBJECT) | BIT(K_EVENT_ID) | BIT(K_IP) | BIT(K_USER_AGENT) | BIT(K_NOTE))

/* Event types: name, allowed keys (events._ALLOWED), free-text keys (events._TEXT_FIELDS). */
enum { T_PROFILE, T_CONSENT, T_SIGNAL, T_ERASURE, T_COUNT };
static const char *const TYPE_NAMES[T_COUNT] = {"profile", "consent", "signal", "erasure"};
static const unsigned ALLOWED[T_COUNT] = {
    COMMON | BIT(K_REGION) | BIT(K_BIRTH_DATE),
    COMMON | BIT(K_PURPOSE) | BIT(K_CHOICE) | BIT(K_SOURCE) | BIT(K_NOTICE_VERSION),
    COMMON | BIT(K_SIGNAL),
    COMMON,
};
static const unsigned TEXT[T_COUNT] = {
    TEXT_COMMON | BIT(K_REGION),
    TEXT_COMMON | BIT(K_PURPOSE) | BIT(K_SOURCE) | BIT(K_NOTICE_VERSION),
    TEXT_COMMON,
    TEXT_COMMON,
};
static const char *const CHOICES[] = {"granted", "withdrawn", "refused"};
static const char *const SIGNALS[] = {"gpc"};

/* The keys of the canonical body in code-point order (event_id is never in it), and
 * of the sealed personal fields (sealing.PERSONAL). */
static const int BODY_ORDER[] = {
    K_AT, K_BIRTH_DATE, K_CHOICE, K_IP, K_NOTE, K_NOTICE_VERSION, K_PURPOSE, K_REGION,
    K_SIGNAL, K_SOURCE, K_SUBJECT, K_TYPE, K_USER_AGENT,
};
static const int PERSONAL_ORDER[] = {K_BIRTH_DATE, K_IP, K_NOTE, K_REGION, K_USER_AGENT};

typedef struct {
    const char *s;
    size_t n;
} span_t;

static int span_is(span_t v, const char *lit) {
    size_t n = strlen(lit);
    return v.n == n && memcmp(v.s, lit, n) == 0;
}

static int key_index(const char *s, size_t n) {
    for (int k = 0; k < K_COUNT; k++)
        if (strlen(KEY_NAMES[k]) == n && memcmp(KEY_NAMES[k], s, n) == 0) return k;
    return -1;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* A JSON string without escapes, of printable ASCII, starting after its quote: its
 * end (the closing quote), or NULL. */
static const char *plain_string(const char *p, const char *end) {
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p;
        if (c < 0x20 || c > 0x7E || c == '\\') return NULL;
        p++;
    }
    return NULL;
}

/* The line's keys and values into `v`; 1 if it is a plain object, else 0. */
static int split_object(const char *p, const char *end, span_t v[K_COUNT], unsigned *seen) {
    *seen = 0;
    while (p < end && is_ws(*p)) p++;
    if (p >= end || *p++ != '{') return 0;
    for (;;) {
        while (p < end && is_ws(*p)) p++;
        if (p >= end || *p++ != '"') return 0;
        const char *q = plain_string(p, end);
        if (!q) return 0;
        int k = key_index(p, (size_t)(q - p));
        if (k < 0 || (*seen & BIT(k))) return 0;
        p = q + 1;
        while (p < end && is_ws(*p)) p++;
        if (p >= end || *p++ != ':') return 0;
        while (p < end && is_ws(*p)) p++;
        if (p >= end || *p++ != '"') return 0;
        q = plain_string(p, end);
        if (!q) return 0;
        v[k].s = p;
        v[k].n = (size_t)(q - p);
        *seen |= BIT(k);
        p = q + 1;
        while (p < end && is_ws(*p)) p++;
        if (p >= end) return 0;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != '}') return 0;
        break;
    }
    while (p < end && is_ws(*p)) p++;
    return p == end;
}

static int digits(const char *s, int n, int *out) {
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        x = x * 10 + (s[i] - '0');
    }
    *out = x;
    return 1;
}

static int days_in_month(int y, int m) {
    static const int DAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : DAYS[m - 1];
}

/* YYYY-MM-DD at s (10 characters), year 1 to 9999; 1 if a valid date. */
static int calendar_date(const char *s, int *y, int *m, int *d) {
    if (s[4] != '-' || s[7] != '-') return 0;
    if (!digits(s, 4, y) || !digits(s + 5, 2, m) || !digits(s + 8, 2, d)) return 0;
    return *y >= 1 && *m >= 1 && *m <= 12 && *d >= 1 && *d <= days_in_month(*y, *m);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

typedef struct {
    hmac_t key;
    PyObject *purposes, *regions;
    long long recorded_us;
    int today; /* YYYYMMDD */
    PyObject *types[T_COUNT];
} ctx_t;

static PyObject *text(span_t v) { return PyUnicode_DecodeASCII(v.s, (Py_ssize_t)v.n, NULL); }

static int add_span(buf_t *b, span_t v) {
    if (ADD_LIT(b, "\"") < 0 || buf_add(b, v.s, v.n) < 0) return -1;
    return ADD_LIT(b, "\"");
}

static int add_opt(buf_t *b, const span_t *v, int present) {
    return present ? add_span(b, *v) : ADD_LIT(b, "null");
}

static long long signed_prefix(const unsigned char d[32]) {
    unsigned long long u = 0;
    for (int i = 0; i < 8; i++) u = (u << 8) | d[i];
    return (long long)u;
}

/* A JSON object of the `order` keys present in `seen`, into b (sorted keys, as orjson). */
static int add_object(buf_t *b, const int *order, size_t count, unsigned seen, const span_t *v) {
    int first = 1;
    if (ADD_LIT(b, "{") < 0) return -1;
    for (size_t i = 0; i < count; i++) {
        int k = order[i];
        if (!(seen & BIT(k))) continue;
        if (!first && ADD_LIT(b, ",") < 0) return -1;
        first = 0;
        if (ADD_LIT(b, "\"") < 0 || buf_add(b, KEY_NAMES[k], strlen(KEY_NAMES[k])) < 0 ||
            ADD_LIT(b, "\":") < 0 || add_span(b, v[k]) < 0)
            return -1;
    }
    return ADD_LIT(b, "}");
}

/* The row of one line into *row; 1 if the line is plain, 0 if Python must take it,
 * -1 on error. `b` and `m` are scratch buffers. */
static int parse_line(const ctx_t *c, const char *p, const char *end, PyObject **row, buf_t *b,
                      buf_t *m) {
    span_t v[K_COUNT];
    unsigned seen;
    *row = NULL;
    if (!split_object(p, end, v, &seen)) return 0;
    if (!(seen & BIT(K_TYPE)) || !(seen & BIT(K_SUBJECT)) || !(seen & BIT(K_AT))) return 0;
    int t = -1;
    for (int i = 0; i < T_COUNT; i++)
        if (span_is(v[K_TYPE], TYPE_NAMES[i])) t = i;
    if (t < 0 || (seen & ~ALLOWED[t])) return 0;
    for (int k = 0; k < K_COUNT; k++) {
        if (!(seen & TEXT[t] & BIT(k))) continue;
        if (v[k].n == 0 || v[k].n > MAX_TEXT) return 0;
        size_t i = 0;
        while (i < v[k].n && v[k].s[i] == ' ') i++;
        if (i == v[k].n) return 0; /* all spaces */
    }
    /* at: YYYY-MM-DDTHH:MM:SSZ */
    span_t at = v[K_AT];
    int y, mo, d, hh, mi, ss;
    if (at.n != 20 || at.s[10] != 'T' || at.s[13] != ':' || at.s[16] != ':' || at.s[19] != 'Z')
        return 0;
    if (!calendar_date(at.s, &y, &mo, &d) || !digits(at.s + 11, 2, &hh) ||
        !digits(at.s + 14, 2, &mi) || !digits(at.s + 17, 2, &ss) || hh > 23 || mi > 59 || ss > 59)
        return 0;
    long long at_us =
        ((days_from_civil(y, mo, d) * 86400LL) + hh * 3600LL + mi * 60LL + ss) * 1000000LL;
    if (t == T_CONSENT) {
        if (!(seen & BIT(K_PURPOSE)) || !(seen & BIT(K_CHOICE))) return 0;
        int ok = 0;
        for (size_t i = 0; i < sizeof CHOICES / sizeof *CHOICES; i++)
            ok |= span_is(v[K_CHOICE], CHOICES[i]);
        if (!ok) return 0;
    } else if (t == T_PROFILE) {
        if (!(seen & (BIT(K_REGION) | BIT(K_BIRTH_DATE)))) return 0;
        if (seen & BIT(K_BIRTH_DATE)) {
            int by, bm, bd;
            if (v[K_BIRTH_DATE].n != 10 || !calendar_date(v[K_BIRTH_DATE].s, &by, &bm, &bd))
                return 0;
            int born = by * 10000 + bm * 100 + bd;
            if (born > y * 10000 + mo * 100 + d || born > c->today) return 0;
        }
    } else if (t == T_SIGNAL) {
        if (!(seen & BIT(K_SIGNAL)) || !span_is(v[K_SIGNAL], SIGNALS[0])) return 0;
    }

    /* Python values of the text columns (NULL where absent). */
    PyObject *o[K_COUNT] = {NULL};
    int status = -1;
    for (int k = 0; k < K_COUNT; k++) {
        if (k == K_TYPE || k == K_AT || !(seen & BIT(k))) continue;
        if (!(o[k] = text(v[k]))) goto done;
    }
    if (t == T_CONSENT) {
        int r = PySet_Contains(c->purposes, o[K_PURPOSE]);
        if (r < 0) goto done;
        if (!r) {
            status = 0;
            goto done;
        }
    } else if (t == T_PROFILE && (seen & BIT(K_REGION))) {
        int r = PySet_Contains(c->regions, o[K_REGION]);
        if (r < 0) goto done;
        if (!r) {
            status = 0;
            goto done;
        }
    }

    /* The content digest of the canonical body (every key but event_id). */
    unsigned char sha[32];
    char digest[64];
    b->len = 0;
    if (add_object(b, BODY_ORDER, sizeof BODY_ORDER / sizeof *BODY_ORDER, seen & ~BIT(K_EVENT_ID),
                   v) < 0)
        goto done;
    sha256_of(b->data, b->len, sha);
    hex32(sha, digest);
    span_t event_id = (seen & BIT(K_EVENT_ID)) ? v[K_EVENT_ID] : (span_t){digest, 64};
    sha256_of(event_id.s, event_id.n, sha);
    long long id_key = signed_prefix(sha);
    hmac(&c->key, v[K_SUBJECT].s, v[K_SUBJECT].n, sha);
    long long ps = signed_prefix(sha);

    /* ids = HMAC(f"{event_id}\n{digest}\n{id_key}").hex() */
    m->len = 0;
    if (buf_add(m, event_id.s, event_id.n) < 0 || ADD_LIT(m, "\n") < 0 ||
        buf_add(m, digest, 64) < 0 || ADD_LIT(m, "\n") < 0 || buf_add_ll(m, id_key) < 0)
        goto done;
    hmac(&c->key, m->data, m->len, sha);
    char ids[64];
    hex32(sha, ids);

    /* The entry's head: {"at_us":..,"choice":..,"ids":..,"notice_version":..,
     * "purpose":..,"recorded_us":..,"sealed":  and tail: ,"signal":..,"source":..,
     * "subject":..,"type":..}  (chain.entry_parts) */
    b->len = 0;
    if (ADD_LIT(b, "{\"at_us\":") < 0 || buf_add_ll(b, at_us) < 0 || ADD_LIT(b, ",\"choice\":") < 0 ||
        add_opt(b, &v[K_CHOICE], seen & BIT(K_CHOICE)) < 0 || ADD_LIT(b, ",\"ids\":\"") < 0 ||
        buf_add(b, ids, 64) < 0 || ADD_LIT(b, "\",\"notice_version\":") < 0 ||
        add_opt(b, &v[K_NOTICE_VERSION], seen & BIT(K_NOTICE_VERSION)) < 0 ||
        ADD_LIT(b, ",\"purpose\":") < 0 || add_opt(b, &v[K_PURPOSE], seen & BIT(K_PURPOSE)) < 0 ||
        ADD_LIT(b, ",\"recorded_us\":") < 0 || buf_add_ll(b, c->recorded_us) < 0 ||
        ADD_LIT(b, ",\"sealed\":") < 0)
        goto done;
    size_t head_len = b->len;
    if (ADD_LIT(b, ",\"signal\":") < 0 || add_opt(b, &v[K_SIGNAL], seen & BIT(K_SIGNAL)) < 0 ||
        ADD_LIT(b, ",\"source\":") < 0 || add_opt(b, &v[K_SOURCE], seen & BIT(K_SOURCE)) < 0 ||
        ADD_LIT(b, ",\"subject\":") < 0 || buf_add_ll(b, ps) < 0 || ADD_LIT(b, ",\"type\":") < 0 ||
        add_span(b, v[K_TYPE]) < 0 || ADD_LIT(b, "}") < 0)
        goto done;

    /* The sealed fields' JSON, when the event has any. */
    unsigned personal = 0;
    for (size_t i = 0; i < sizeof PERSONAL_ORDER / sizeof *PERSONAL_ORDER; i++)
        personal |= seen & BIT(PERSONAL_ORDER[i]);
    m->len = 0;
    if (personal && add_object(m, PERSONAL_ORDER, sizeof PERSONAL_ORDER / sizeof *PERSONAL_ORDER,
                               personal, v) < 0)
        goto done;

    PyObject *out = PyTuple_New(18);
    if (!out) goto done;
    PyObject *items[18];
    items[0] = PyLong_FromLongLong(id_key);
    if (seen & BIT(K_EVENT_ID)) {
        items[1] = o[K_EVENT_ID];
        Py_INCREF(items[1]);
    } else {
        items[1] = PyUnicode_DecodeASCII(digest, 64, NULL);
    }
    items[2] = PyUnicode_DecodeASCII(digest, 64, NULL);
    items[3] = c->types[t];
    Py_INCREF(items[3]);
    items[4] = o[K_SUBJECT];
    Py_INCREF(items[4]);
    items[5] = PyLong_FromLongLong(ps);
    items[6] = PyLong_FromLongLong(at_us);
    const int columns[] = {K_PURPOSE, K_CHOICE, K_SIGNAL, K_SOURCE, K_NOTICE_VERSION,
                           K_REGION, K_BIRTH_DATE};
    for (int i = 0; i < 7; i++) {
        PyObject *x = o[columns[i]] ? o[columns[i]] : Py_None;
        Py_INCREF(x);
        items[7 + i] = x;
    }
    if (personal) {
        items[14] = PyBytes_FromStringAndSize(m->data, (Py_ssize_t)m->len);
    } else {
        items[14] = Py_None;
        Py_INCREF(Py_None);
    }
    items[15] = PyLong_FromLongLong(c->recorded_us);
    items[16] = PyBytes_FromStringAndSize(b->data, (Py_ssize_t)head_len);
    items[17] = PyBytes_FromStringAndSize(b->data + head_len, (Py_ssize_t)(b->len - head_len));
    int failed = 0;
    for (int i = 0; i < 18; i++) {
        if (!items[i]) failed = 1;
        PyTuple_SET_ITEM(out, i, items[i]); /* NULL items are fine for Py_DECREF(out) */
    }
    if (failed) {
        Py_DECREF(out);
        goto done;
    }
    *row = out;
    status = 1;
done:
    for (int k = 0; k < K_COUNT; k++) Py_XDECREF(o[k]);
    return status;
}

/*
 * parse_block(block, first_lineno, secret, purposes, regions, recorded_us, today)
 *   -> (linenos, items, handed_back)
 *
 * Lines are split at b"\n"; blank lines (ASCII whitespace only) are skipped. For each
 * other line: its number in `linenos`, and in `items` its row, or its raw bytes if
 * Python must take it, whose index is then in `handed_back`. `today` is YYYYMMDD.
 */
static PyObject *py_parse_block(PyObject *self, PyObject *args) {
    Py_buffer block, secret;
    long long first, recorded_us;
    int today;
    PyObject *purposes, *regions;
    if (!PyArg_ParseTuple(args, "y*Ly*O!O!Li", &block, &first, &secret, &PyFrozenSet_Type,
                          &purposes, &PyFrozenSet_Type, &regions, &recorded_us, &today))
        return NULL;
    ctx_t c;
    hmac_init(&c.key, secret.buf, (size_t)secret.len);
    PyBuffer_Release(&secret);
    c.purposes = purposes;
    c.regions = regions;
    c.recorded_us = recorded_us;
    c.today = today;
    for (int t = 0; t < T_COUNT; t++) c.types[t] = NULL;
    buf_t b = {0}, m = {0};
    PyObject *linenos = PyList_New(0), *items = PyList_New(0), *back = PyList_New(0);
    PyObject *result = NULL;
    if (!linenos || !items || !back) goto fail;
    for (int t = 0; t < T_COUNT; t++)
        if (!(c.types[t] = PyUnicode_InternFromString(TYPE_NAMES[t]))) goto fail;
    const char *p = block.buf, *end = p + block.len;
    long long lineno = first;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        const char *q = p;
        while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\v' || *q == '\f'))
            q++;
        if (q < stop) {
            PyObject *row;
            int r = parse_line(&c, p, stop, &row, &b, &m);
            if (r < 0) goto fail;
            if (r == 0) {
                PyObject *index = PyLong_FromSsize_t(PyList_GET_SIZE(items));
                if (!index || PyList_Append(back, index) < 0) {
                    Py_XDECREF(index);
                    goto fail;
                }
                Py_DECREF(index);
                if (!(row = PyBytes_FromStringAndSize(p, stop - p))) goto fail;
            }
            PyObject *number = PyLong_FromLongLong(lineno);
            int bad = !number || PyList_Append(linenos, number) < 0 || PyList_Append(items, row) < 0;
            Py_XDECREF(number);
            Py_DECREF(row);
            if (bad) goto fail;
        }
        lineno++;
        p = nl ? nl + 1 : end;
    }
    result = PyTuple_Pack(3, linenos, items, back);
fail:
    PyBuffer_Release(&block);
    PyMem_Free(b.data);
    PyMem_Free(m.data);
    for (int t = 0; t < T_COUNT; t++) Py_XDECREF(c.types[t]);
    Py_XDECREF(linenos);
    Py_XDECREF(items);
    Py_XDECREF(back);
    return result;
}

/* contract() -> the tables this parser follows, for the tests to compare with the
 * domain's: {type: (allowed keys, free-text keys)}, choices, signals, personal keys,
 * MAX_TEXT. */
static PyObject *keys_of(unsigned mask) {
    PyObject *out = PyFrozenSet_New(NULL);
    if (!out) return NULL;
    for (int k = 0; k < K_COUNT; k++) {
        if (!(mask & BIT(k))) continue;
        PyObject *name = PyUnicode_FromString(KEY_NAMES[k]);
        if (!name || PySet_Add(out, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(name);
    }
    return out;
}

static PyObject *py_contract(PyObject *self, PyObject *unused) {
    PyObject *types = PyDict_New();
    if (!types) return NULL;
    for (int t = 0; t < T_COUNT; t++) {
        PyObject *pair = Py_BuildValue("(NN)", keys_of(ALLOWED[t]), keys_of(TEXT[t]));
        if (!pair || PyDict_SetItemString(types, TYPE_NAMES[t], pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(types);
            return NULL;
        }
        Py_DECREF(pair);
    }
    unsigned personal = 0;
    for (size_t i = 0; i < sizeof PERSONAL_ORDER / sizeof *PERSONAL_ORDER; i++)
        personal |= BIT(PERSONAL_ORDER[i]);
    return Py_BuildValue("{s:N,s:(sss),s:(s),s:N,s:i}", "types", types, "choices", CHOICES[0],
                         CHOICES[1], CHOICES[2], "signals", SIGNALS[0], "personal",
                         keys_of(personal), "max_text", MAX_TEXT);
}

static PyMethodDef methods[] = {
    {"parse_block", py_parse_block, METH_VARARGS, "Rows of the plain lines of a block."},
    {"contract", py_contract, METH_NOARGS, "The event tables this parser follows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lineparse",
    "The plain lines of a JSON Lines import, compiled (optional; parsing.py decides the rest).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__lineparse(void) { return PyModule_Create(&module); }
