/*
 * log: JSON lines on stdout for the container runtime to collect.
 *
 * Every line is one JSON object that starts with the same three keys:
 *
 *   {"ts":"2026-12-04T16:30:00.123Z","level":"info","msg":"push sent",...}
 *
 * A line is built in steps: log_begin() opens it (or returns NULL when its
 * level is disabled, so that callers skip the work of building fields),
 * log_str()/log_int()/... add fields, and log_end() closes it and hands it
 * to stdio in one fwrite. Every field function accepts a NULL line and then
 * does nothing, so a disabled line costs one test at the call site:
 *
 *   struct buf *line = log_begin(LOG_WARN, "push rejected");
 *
 *   if (line != NULL) {
 *       log_str(line, "reason", reason);
 *       log_int(line, "status", status);
 *       log_end(line);
 *   }
 *
 * Add fields only through the log_* functions, never with buf_* directly:
 * they keep the line valid JSON. A line longer than LOG_LINE_MAX bytes is
 * still written as valid JSON: a string value that does not fit is cut at a
 * character boundary, a raw value that does not fit is left out, and the
 * line carries "truncated":true. String values that are not valid UTF-8
 * have each bad byte replaced by U+FFFD.
 *
 * Never logged: APNs signing keys, provider tokens (JWTs), Kafka passwords
 * or other credentials, and whole device tokens. Pass device tokens to
 * log_token(), which writes only their first and last six characters.
 * Notification payloads are logged only at debug level.
 *
 * Thread safety: none. Only the loop thread writes lines; the one line
 * being built lives in module-static storage. Other threads (librdkafka's,
 * the admin listener) must hand what they want logged to the loop.
 */
#ifndef CALLPUSH_LOG_H
#define CALLPUSH_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Longest line written, newline included. */
#define LOG_LINE_MAX (64 * 1024)

/* log_begin_limited() lets one line through per key in this many seconds. */
#define LOG_REPEAT_WINDOW_S 30

/* Sets the lowest level written and the stream (NULL means stdout). When
 * the stream is stdout it is made fully buffered, so call this before
 * anything else writes to stdout. Without a call: info, stdout. */
void log_init(enum log_level min, FILE *out);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 when s is
 * none of them (out is then left alone). */
int log_parse_level(const char *s, enum log_level *out);

/* Returns "debug", "info", "warn" or "error". */
const char *log_level_name(enum log_level level);

/* Returns nonzero when lines of this level are written. */
int log_enabled(enum log_level level);

/* Starts a line with ts, level and msg. Returns NULL when the level is
 * disabled. The caller must finish a non-NULL line with log_end() before
 * starting another. */
struct buf *log_begin(enum log_level level, const char *msg);

/* Like log_begin(), but lets through one line per (level, msg, key) in any
 * LOG_REPEAT_WINDOW_S seconds. Lines inside the window are counted and
 * NULL is returned; the first line let through after the window carries
 * "repeated":N, the number suppressed. Up to 64 keys are tracked; when a
 * new key needs room, the least recently seen one is forgotten, and if it
 * had suppressed lines a line saying how many is written first. key may be
 * NULL, which counts as "". */
struct buf *log_begin_limited(enum log_level level, const char *msg,
                              const char *key);

/* Adds "key":"value". A NULL value is written as null. */
void log_str(struct buf *line, const char *key, const char *value);

/* Adds "key":"value" for len bytes of value (which need not end in NUL). */
void log_strn(struct buf *line, const char *key, const char *value, size_t len);

/* Adds "key":value as a JSON number. */
void log_int(struct buf *line, const char *key, int64_t value);

/* Adds "key":json where json is already a valid JSON value; the caller
 * vouches for it. */
void log_raw(struct buf *line, const char *key, const char *json);

/* Adds a device token masked by util_mask_token(). A NULL token is null. */
void log_token(struct buf *line, const char *key, const char *token);

/* Closes the line and writes it. Lines at LOG_ERROR are flushed at once. */
void log_end(struct buf *line);

/* Flushes written lines to the stream; the loop calls this once per
 * iteration, so a quiet worker's lines are not held back. */
void log_flush(void);

/* Writes a one-off line: {"ts":..,"level":..,"msg":msg,"detail":"..."}
 * where detail is fmt formatted; with a NULL fmt there is no detail. */
void log_msg(enum log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replaces the clock that stamps lines and times the repeat window, so that
 * tests drive time. now_ms returns milliseconds since the epoch; NULL puts
 * back the real clocks. Also forgets every repeat key. */
void log_set_clock(int64_t (*now_ms)(void));

#endif
