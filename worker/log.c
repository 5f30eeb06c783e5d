#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* Room kept back from the line while fields are added, so that the closing
 * ,"truncated":true}\n always fits within LOG_LINE_MAX. */
#define LOG_TAIL_RESERVE 32
#define LOG_BODY_MAX (LOG_LINE_MAX - LOG_TAIL_RESERVE)

#define LOG_REPEAT_SLOTS 64

struct log_repeat {
    char *msg; /* NULL when the slot is free */
    char *key;
    enum log_level level;
    int64_t window_start; /* ms, from the repeat clock */
    int64_t suppressed;
    uint64_t last_used; /* log_state.tick when last seen, for eviction */
};

static struct log_state {
    enum log_level min;
    FILE *out; /* NULL until first use: stdout */
    struct buf line;
    size_t good;   /* length of the line up to its last whole field */
    int truncated; /* a field was cut or left out */
    enum log_level level;
    int64_t (*wall_ms)(void); /* stamps lines */
    int64_t (*mono_ms)(void); /* times the repeat window */
    struct log_repeat repeats[LOG_REPEAT_SLOTS];
    uint64_t tick;
} L = {
    .min = LOG_INFO,
    .line = {.max = LOG_BODY_MAX},
    .wall_ms = util_now_ms,
    .mono_ms = util_mono_ms,
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void
log_init(enum log_level min, FILE *out)
{
    L.min = min;
    if (out == NULL || out == stdout) {
        /* Whole buffers instead of a write per line; log_flush() and error
         * lines push them out. */
        setvbuf(stdout, NULL, _IOFBF, 64 * 1024);
        out = stdout;
    }
    L.out = out;
}

int
log_parse_level(const char *s, enum log_level *out)
{
    size_t i;

    for (i = 0; i < UTIL_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *
log_level_name(enum log_level level)
{
    if ((size_t)level >= UTIL_ARRAY_LEN(level_names)) {
        return "error";
    }
    return level_names[level];
}

int
log_enabled(enum log_level level)
{
    return level >= L.min;
}

/*
 * Returns how many bytes of s (n long) fit, quoted and escaped, in room
 * bytes, never cutting a character in two. Sets *valid to 0 when that
 * prefix holds bytes that are not UTF-8 (each becomes a 3-byte U+FFFD).
 */
static size_t
text_fit(const char *s, size_t n, size_t room, int *valid)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, used = 2;

    *valid = 1;
    while (i < n) {
        size_t seq = util_utf8_seq(u + i, n - i);
        size_t width = seq;

        if (seq == 0) {
            seq = 1;
            width = 3;
            *valid = 0;
        } else if (u[i] == '"' || u[i] == '\\' || u[i] == '\n' ||
                   u[i] == '\r' || u[i] == '\t') {
            width = 2;
        } else if (u[i] < 0x20) {
            width = 6;
        }
        if (used + width > room) {
            break;
        }
        used += width;
        i += seq;
    }
    return i;
}

/* Appends s as a JSON string with every byte that is not UTF-8 replaced. */
static void
add_sanitized(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    char *copy = xmalloc(n * 3 + 1);
    size_t i = 0, len = 0;

    while (i < n) {
        size_t seq = util_utf8_seq(u + i, n - i);

        if (seq == 0) {
            memcpy(copy + len, "\xef\xbf\xbd", 3);
            len += 3;
            i++;
            continue;
        }
        memcpy(copy + len, s + i, seq);
        len += seq;
        i += seq;
    }
    buf_json_str(b, copy, len);
    free(copy);
}

/* Goes back to mark, the end of the last whole field. The buffer refuses
 * every append once it has overflowed, so the flag is cleared as well; a
 * later, smaller field may still fit. */
static void
line_rollback(size_t mark)
{
    buf_truncate(&L.line, mark);
    L.line.overflow = 0;
    L.truncated = 1;
}

/* Adds ,"key": and returns 0, or rolls back and returns -1. */
static int
add_key(const char *key)
{
    buf_addc(&L.line, ',');
    buf_json_key(&L.line, key);
    if (buf_overflowed(&L.line)) {
        line_rollback(L.good);
        return -1;
    }
    return 0;
}

static void
add_text(const char *key, const char *s, size_t n)
{
    size_t fit;
    int valid;

    if (add_key(key) < 0) {
        return;
    }

    fit = text_fit(s, n, L.line.max - L.line.len, &valid);
    if (fit == 0 && n > 0) {
        /* Not one character of it fits: leave the field out. */
        line_rollback(L.good);
        return;
    }
    if (valid) {
        buf_json_str(&L.line, s, fit);
    } else {
        add_sanitized(&L.line, s, fit);
    }
    if (buf_overflowed(&L.line)) {
        /* Only when not even the quotes fitted. */
        line_rollback(L.good);
        return;
    }
    if (fit < n) {
        L.truncated = 1;
    }
    L.good = L.line.len;
}

static void
add_raw(const char *key, const char *json)
{
    if (add_key(key) < 0) {
        return;
    }

    buf_adds(&L.line, json);
    if (buf_overflowed(&L.line)) {
        line_rollback(L.good);
        return;
    }
    L.good = L.line.len;
}

static void
format_ts(char *out, size_t len, int64_t ms)
{
    time_t sec;
    struct tm tm;

    if (ms < 0) {
        ms = 0;
    }
    sec = (time_t)(ms / 1000);
    gmtime_r(&sec, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ms % 1000));
}

struct buf *
log_begin(enum log_level level, const char *msg)
{
    /* Sized for any int in every field, which the compiler checks; a
     * real stamp takes 24 bytes. */
    char ts[80];

    if (!log_enabled(level)) {
        return NULL;
    }

    /* A line still open here was never ended; it is dropped, not mixed
     * into this one. */
    buf_reset(&L.line);
    L.line.max = LOG_BODY_MAX;
    L.truncated = 0;
    L.level = level;

    format_ts(ts, sizeof(ts), L.wall_ms());
    buf_addf(&L.line, "{\"ts\":\"%s\",\"level\":\"%s\"", ts,
             log_level_name(level));
    L.good = L.line.len;
    if (msg == NULL) {
        msg = "";
    }
    add_text("msg", msg, strlen(msg));
    return &L.line;
}

void
log_str(struct buf *line, const char *key, const char *value)
{
    if (line != &L.line) {
        return;
    }
    if (value == NULL) {
        add_raw(key, "null");
        return;
    }
    add_text(key, value, strlen(value));
}

void
log_strn(struct buf *line, const char *key, const char *value, size_t len)
{
    if (line != &L.line) {
        return;
    }
    if (value == NULL) {
        add_raw(key, "null");
        return;
    }
    add_text(key, value, len);
}

void
log_int(struct buf *line, const char *key, int64_t value)
{
    char num[24];

    if (line != &L.line) {
        return;
    }
    snprintf(num, sizeof(num), "%" PRId64, value);
    add_raw(key, num);
}

void
log_raw(struct buf *line, const char *key, const char *json)
{
    if (line != &L.line) {
        return;
    }
    add_raw(key, json != NULL ? json : "null");
}

void
log_token(struct buf *line, const char *key, const char *token)
{
    char masked[UTIL_TOKEN_MASK_LEN];

    if (line != &L.line) {
        return;
    }
    if (token == NULL) {
        add_raw(key, "null");
        return;
    }
    util_mask_token(masked, token);
    add_text(key, masked, strlen(masked));
}

void
log_end(struct buf *line)
{
    FILE *out = L.out != NULL ? L.out : stdout;

    if (line != &L.line) {
        return;
    }

    /* The reserve held back from the body is for this closing. */
    L.line.max = LOG_LINE_MAX;
    if (L.truncated) {
        buf_adds(&L.line, ",\"truncated\":true");
    }
    buf_adds(&L.line, "}\n");
    fwrite(L.line.data, 1, L.line.len, out);
    if (L.level >= LOG_ERROR) {
        fflush(out);
    }

    buf_reset(&L.line);
    L.line.max = LOG_BODY_MAX;
}

void
log_flush(void)
{
    fflush(L.out != NULL ? L.out : stdout);
}

void
log_msg(enum log_level level, const char *msg, const char *fmt, ...)
{
    struct buf *line = log_begin(level, msg);
    struct buf detail;
    va_list ap;

    if (line == NULL) {
        return;
    }
    if (fmt != NULL) {
        /* Larger than a line, so that an over-long detail is cut by
         * log_strn() like any other value instead of vanishing. */
        buf_init(&detail, 4 * LOG_LINE_MAX);
        va_start(ap, fmt);
        buf_vaddf(&detail, fmt, ap);
        va_end(ap);
        log_strn(line, "detail", detail.len > 0 ? detail.data : "", detail.len);
        buf_release(&detail);
    }
    log_end(line);
}

static void
repeat_forget(struct log_repeat *r)
{
    free(r->msg);
    free(r->key);
    memset(r, 0, sizeof(*r));
}

static struct log_repeat *
repeat_find(enum log_level level, const char *msg, const char *key)
{
    size_t i;

    for (i = 0; i < LOG_REPEAT_SLOTS; i++) {
        struct log_repeat *r = &L.repeats[i];

        if (r->msg != NULL && r->level == level && strcmp(r->msg, msg) == 0 &&
            strcmp(r->key, key) == 0) {
            return r;
        }
    }
    return NULL;
}

/* Returns a free slot, evicting the least recently seen key when none is
 * free. Its suppressed count is written out first so that none is lost. */
static struct log_repeat *
repeat_claim(void)
{
    struct log_repeat *victim = &L.repeats[0];
    struct buf *line;
    size_t i;

    for (i = 0; i < LOG_REPEAT_SLOTS; i++) {
        struct log_repeat *r = &L.repeats[i];

        if (r->msg == NULL) {
            return r;
        }
        if (r->last_used < victim->last_used) {
            victim = r;
        }
    }

    if (victim->suppressed > 0) {
        line = log_begin(victim->level, victim->msg);
        log_str(line, "repeat_key", victim->key);
        log_int(line, "repeated", victim->suppressed);
        log_end(line);
    }
    repeat_forget(victim);
    return victim;
}

struct buf *
log_begin_limited(enum log_level level, const char *msg, const char *key)
{
    struct log_repeat *r;
    struct buf *line;
    int64_t now, suppressed = 0;

    if (!log_enabled(level)) {
        return NULL;
    }
    if (msg == NULL) {
        msg = "";
    }
    if (key == NULL) {
        key = "";
    }

    now = L.mono_ms();
    r = repeat_find(level, msg, key);
    if (r == NULL) {
        r = repeat_claim();
        r->msg = xstrdup(msg);
        r->key = xstrdup(key);
        r->level = level;
        r->window_start = now;
    } else if (now - r->window_start < LOG_REPEAT_WINDOW_S * 1000) {
        r->suppressed++;
        r->last_used = ++L.tick;
        return NULL;
    } else {
        suppressed = r->suppressed;
        r->suppressed = 0;
        r->window_start = now;
    }
    r->last_used = ++L.tick;

    line = log_begin(level, msg);
    if (suppressed > 0) {
        log_int(line, "repeated", suppressed);
    }
    return line;
}

void
log_set_clock(int64_t (*now_ms)(void))
{
    size_t i;

    L.wall_ms = now_ms != NULL ? now_ms : util_now_ms;
    L.mono_ms = now_ms != NULL ? now_ms : util_mono_ms;
    for (i = 0; i < LOG_REPEAT_SLOTS; i++) {
        repeat_forget(&L.repeats[i]);
    }
    L.tick = 0;
}
