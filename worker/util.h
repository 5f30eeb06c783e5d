/*
 * util: allocation that never returns NULL, and small helpers shared by
 * every module.
 *
 * The x* allocators abort the process with one JSON log line on stderr when
 * memory runs out, so callers carry no NULL checks after them. A worker that
 * cannot allocate cannot make progress; Kubernetes restarts it and Kafka
 * redelivers whatever was not committed.
 *
 * Thread safety: all functions here may be called from any thread.
 */
#ifndef CALLPUSH_UTIL_H
#define CALLPUSH_UTIL_H

#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Milliseconds since the epoch (wall clock) and since an arbitrary start
 * (monotonic). Deadlines use the monotonic clock; event ages use the wall
 * clock, because created_at comes from another machine's wall clock. */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);

/* Copies src into dst of size dstlen, always NUL-terminating. Returns the
 * length of src, so truncation shows as a return >= dstlen. */
size_t util_strlcpy(char *dst, const char *src, size_t dstlen);

/* Writes "abcdef…uvwxyz" style masks of a device token into out (at least
 * UTIL_TOKEN_MASK_LEN bytes): the first and last six characters, so logs
 * can be matched to a device without holding the whole token. */
#define UTIL_TOKEN_MASK_LEN 20
void util_mask_token(char *out, const char *token);

/* UTF-8, as RFC 3629 defines it: no overlong forms, no UTF-16 surrogates,
 * nothing above U+10FFFF. */

/* Length (1-4) of the well-formed character at the start of s (n > 0
 * bytes), or 0 when s does not start with one. */
size_t util_utf8_seq(const unsigned char *s, size_t n);

/* How many leading bytes of s (n long) are whole, well-formed characters:
 * n itself when all of s is valid. */
size_t util_utf8_valid_prefix(const char *s, size_t n);

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
