#define _POSIX_C_SOURCE 200809L
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
oom(size_t size)
{
    /* Written by hand: the log module may itself need memory. */
    fprintf(stderr,
            "{\"level\":\"fatal\",\"msg\":\"out of memory\",\"bytes\":%zu}\n",
            size);
    abort();
}

void *
xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);

    if (p == NULL) {
        oom(size);
    }
    return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

    if (p == NULL) {
        oom(nmemb * size);
    }
    return p;
}

void *
xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);

    if (p == NULL) {
        oom(size);
    }
    return p;
}

char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int64_t
clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t
util_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

size_t
util_strlcpy(char *dst, const char *src, size_t dstlen)
{
    size_t len = strlen(src);

    if (dstlen > 0) {
        size_t n = len < dstlen - 1 ? len : dstlen - 1;

        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

void
util_mask_token(char *out, const char *token)
{
    size_t len = strlen(token);

    if (len <= 12) {
        /* Too short to be a real token; still never print it whole. */
        snprintf(out, UTIL_TOKEN_MASK_LEN, "%.2s…", token);
        return;
    }
    snprintf(out, UTIL_TOKEN_MASK_LEN, "%.6s…%s", token, token + len - 6);
}

size_t
util_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    uint32_t cp;
    size_t len, i;

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }

    /* A lead byte of 0xe0 or 0xf0 can still spell an overlong form, and
     * 0xed or 0xf4 a surrogate or a code point past U+10FFFF. */
    if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) {
        return 0;
    }
    if (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) {
        return 0;
    }
    return len;
}

size_t
util_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        size_t seq = util_utf8_seq(u + i, n - i);

        if (seq == 0) {
            break;
        }
        i += seq;
    }
    return i;
}
