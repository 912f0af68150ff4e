/*
 * What the compiled parts of consentgate share: a growable byte buffer, integers in
 * decimal, hex and base64 text, SHA-256 of one buffer and HMAC-SHA256 with the padded
 * key states hashed once (sealing.KeyedHash). Included by each extension; everything is static.
 */
#ifndef CONSENTGATE_CBASE_H
#define CONSENTGATE_CBASE_H

#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
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

static const char HEX[] = "0123456789abcdef";

/* A 64-bit integer in decimal, as Python's str() and orjson write it. */
static int buf_add_ll(buf_t *b, long long x) {
    char tmp[24], *e = tmp + sizeof tmp, *p = e;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0) *--p = '-';
    return buf_add(b, p, (size_t)(e - p));
}

/* The lowercase hex of 32 bytes (a digest's .hexdigest()). */
static void hex32(const unsigned char in[32], char out[64]) {
    for (int i = 0; i < 32; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
}

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
    unsigned char block[64], pad[64];
    memset(block, 0, sizeof block);
    if (n > 64) sha256_of(key, n, block);
    else memcpy(block, key, n);
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

#endif
