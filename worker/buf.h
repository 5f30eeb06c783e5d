/*
 * buf: a growable byte buffer with a hard size cap, and the JSON writing
 * helpers built on it.
 *
 * Every buffer that grows from input has a cap: once an append would pass
 * it, the buffer stops growing, remembers that it overflowed, and every
 * later append is ignored. Callers check buf_overflowed() once at the end
 * instead of after every append. The contents are always NUL-terminated.
 *
 * A buf is owned by whoever embeds it: buf_init() then buf_release(), or
 * buf_reset() to reuse the memory for the next message.
 */
#ifndef CALLPUSH_BUF_H
#define CALLPUSH_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
    char *data;
    size_t len;
    size_t alloc;
    size_t max; /* cap on len, not counting the NUL */
    int overflow;
};

void buf_init(struct buf *b, size_t max);
void buf_release(struct buf *b);
void buf_reset(struct buf *b);

static inline int
buf_overflowed(const struct buf *b)
{
    return b->overflow;
}

void buf_add(struct buf *b, const void *data, size_t len);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_addf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_vaddf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Shrinks the contents to len bytes (len <= b->len). */
void buf_truncate(struct buf *b, size_t len);

/* Appends s (len bytes, UTF-8) as a quoted JSON string. Control characters
 * are escaped; bytes >= 0x80 are copied unchanged, so the caller must pass
 * valid UTF-8 (event decoding guarantees it). */
void buf_json_str(struct buf *b, const char *s, size_t len);
static inline void
buf_json_strz(struct buf *b, const char *s)
{
    buf_json_str(b, s, strlen(s));
}

/* Appends "key": with key quoted; the caller writes the value. */
void buf_json_key(struct buf *b, const char *key);

#endif
