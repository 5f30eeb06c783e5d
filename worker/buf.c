#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void
buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max;
    b->overflow = 0;
}

void
buf_release(struct buf *b)
{
    free(b->data);
    buf_init(b, b->max);
}

void
buf_reset(struct buf *b)
{
    b->len = 0;
    b->overflow = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

/* Makes room for extra more bytes plus the NUL; fails once past the cap. */
static int
buf_grow(struct buf *b, size_t extra)
{
    size_t want;

    if (b->overflow || extra > b->max - b->len) {
        b->overflow = 1;
        return -1;
    }
    want = b->len + extra + 1;
    if (want > b->alloc) {
        size_t alloc = b->alloc ? b->alloc : 64;

        while (alloc < want) {
            alloc *= 2;
        }
        b->data = xrealloc(b->data, alloc);
        b->alloc = alloc;
    }
    return 0;
}

void
buf_add(struct buf *b, const void *data, size_t len)
{
    if (buf_grow(b, len) < 0) {
        return;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void
buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

void
buf_addc(struct buf *b, char c)
{
    buf_add(b, &c, 1);
}

void
buf_vaddf(struct buf *b, const char *fmt, va_list ap)
{
    char small[256];
    va_list cp;
    int n;

    va_copy(cp, ap);
    n = vsnprintf(small, sizeof(small), fmt, cp);
    va_end(cp);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(small)) {
        buf_add(b, small, (size_t)n);
        return;
    }
    if (buf_grow(b, (size_t)n) < 0) {
        return;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void
buf_addf(struct buf *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    buf_vaddf(b, fmt, ap);
    va_end(ap);
}

void
buf_truncate(struct buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

void
buf_json_str(struct buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;

    buf_addc(b, '"');
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        /* Copy the plain run before this character in one go. */
        buf_add(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            buf_add(b, "\\\"", 2);
            break;
        case '\\':
            buf_add(b, "\\\\", 2);
            break;
        case '\n':
            buf_add(b, "\\n", 2);
            break;
        case '\r':
            buf_add(b, "\\r", 2);
            break;
        case '\t':
            buf_add(b, "\\t", 2);
            break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            buf_add(b, esc, 6);
            break;
        }
    }
    buf_add(b, s + run, len - run);
    buf_addc(b, '"');
}

void
buf_json_key(struct buf *b, const char *key)
{
    buf_json_strz(b, key);
    buf_addc(b, ':');
}
