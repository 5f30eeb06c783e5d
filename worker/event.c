#include "event.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Objects and arrays may nest this deep, the top-level object counting as
 * one. Nothing in the contract needs more than three. */
#define EVENT_MAX_DEPTH 16

/* Longest piece of a member name quoted in an error message, so that a
 * path of two names plus the rule always fits in EVENT_ERR_MAX. */
#define EVENT_ERR_NAME_MAX 48

#define INT63_MAX UINT64_C(9223372036854775807)
#define INT53_MAX UINT64_C(9007199254740991)

/* A stretch of the original message bytes. */
struct span {
    const char *p;
    size_t len;
};

static int event_fail(char *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Shortens s in place so that it does not end inside a UTF-8 sequence.
 * Error messages quote member names from the input, and snprintf may cut
 * one in the middle when the message reaches EVENT_ERR_MAX.
 */
static void
utf8_trim(char *s, size_t len)
{
    size_t lead = len, need;
    unsigned char c;

    while (lead > 0 && ((unsigned char)s[lead - 1] & 0xc0) == 0x80) {
        lead--;
    }
    if (lead == 0) {
        return;
    }
    c = (unsigned char)s[lead - 1];
    if (c < 0x80) {
        return;
    }
    need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (len - (lead - 1) < need) {
        s[lead - 1] = '\0';
    }
}

static int
event_fail(char *err, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(err, EVENT_ERR_MAX, fmt, ap);
    va_end(ap);
    if (n >= EVENT_ERR_MAX) {
        utf8_trim(err, EVENT_ERR_MAX - 1);
    }
    return -1;
}

/*
 * Copies a member name into out (at least EVENT_ERR_NAME_MAX + 4 bytes) for
 * an error message: control characters become '?', and a long name is cut
 * at a character boundary and marked with "...". The result goes into log
 * lines and Kafka headers, so it must stay one line of valid UTF-8.
 */
static void
quote_name(char *out, const char *name, size_t len)
{
    size_t i, n = len;

    if (n > EVENT_ERR_NAME_MAX) {
        n = EVENT_ERR_NAME_MAX;
        while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80) {
            n--;
        }
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];

        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (n < len) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

/*
 * The syntax check. cJSON is lenient where this service must not be: it
 * takes leading zeros, "1." and control characters, skips any byte below
 * 0x21 as white space, cuts strings at a \u0000 escape, and nests 1000 deep.
 * So the message is first checked against the strict JSON grammar here, and
 * cJSON only ever sees text that every JSON parser reads the same way
 * (repeated member names aside: see the raw member walker below).
 *
 * While it walks, the scanner remembers where it is (the top-level member
 * and the member or element one level down) so that a bad escape can be
 * blamed on a field.
 */
struct scan {
    const char *s;
    size_t len;
    size_t pos;
    char *err;

    struct span key1; /* top-level member name; p is NULL outside one */
    struct span key2; /* member name one level down, or p NULL */
    long index2;      /* element index one level down, or -1 */
};

static int scan_value(struct scan *sc, int depth);

static int
scan_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void
scan_skip_ws(struct scan *sc)
{
    while (sc->pos < sc->len && scan_is_ws(sc->s[sc->pos])) {
        sc->pos++;
    }
}

static int
scan_unexpected(struct scan *sc)
{
    unsigned char c;

    if (sc->pos >= sc->len) {
        return event_fail(sc->err, "not JSON: unexpected end of input");
    }
    c = (unsigned char)sc->s[sc->pos];
    if (c > 0x20 && c < 0x7f) {
        return event_fail(sc->err, "not JSON: unexpected '%c' at byte %zu", c,
                          sc->pos);
    }
    return event_fail(sc->err, "not JSON: unexpected byte 0x%02x at byte %zu",
                      c, sc->pos);
}

/* Fails with "<path>: <rule>", the path being where the scanner is. When
 * in_key is set the offending string is a member name, so the path stops
 * at the object that holds it. */
static int
scan_fail_here(struct scan *sc, int in_key, const char *rule)
{
    char n1[EVENT_ERR_NAME_MAX + 4], n2[EVENT_ERR_NAME_MAX + 4];
    const char *what = in_key ? "member name " : "";

    if (sc->key1.p == NULL) {
        return event_fail(sc->err, "%s%s", what, rule);
    }
    quote_name(n1, sc->key1.p, sc->key1.len);
    if (sc->key2.p != NULL) {
        quote_name(n2, sc->key2.p, sc->key2.len);
        return event_fail(sc->err, "%s.%s: %s%s", n1, n2, what, rule);
    }
    if (sc->index2 >= 0) {
        return event_fail(sc->err, "%s[%ld]: %s%s", n1, sc->index2, what, rule);
    }
    return event_fail(sc->err, "%s: %s%s", n1, what, rule);
}

/* Reads the four hex digits of a \u escape starting at at. */
static int
scan_hex4(struct scan *sc, size_t at, unsigned *out)
{
    unsigned v = 0;
    size_t i;

    if (sc->len - at < 4) {
        return -1;
    }
    for (i = at; i < at + 4; i++) {
        char c = sc->s[i];

        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return -1;
        }
    }
    *out = v;
    return 0;
}

/*
 * Checks a \u escape at sc->pos (on the backslash) and moves past it, and
 * past its low half when it is a surrogate pair. cJSON would turn \u0000
 * into the end of the string and an unpaired surrogate into bytes that are
 * not UTF-8, so both are refused here.
 */
static int
scan_unicode_escape(struct scan *sc, int in_key)
{
    unsigned hi, lo;

    if (scan_hex4(sc, sc->pos + 2, &hi) < 0) {
        return event_fail(sc->err, "not JSON: invalid \\u escape at byte %zu",
                          sc->pos);
    }
    if (hi == 0) {
        return scan_fail_here(sc, in_key, "contains \\u0000");
    }
    if (hi >= 0xdc00 && hi <= 0xdfff) {
        return scan_fail_here(sc, in_key, "unpaired surrogate escape");
    }
    if (hi < 0xd800 || hi > 0xdbff) {
        sc->pos += 6;
        return 0;
    }

    if (sc->len - sc->pos < 12 || sc->s[sc->pos + 6] != '\\' ||
        sc->s[sc->pos + 7] != 'u' || scan_hex4(sc, sc->pos + 8, &lo) < 0 ||
        lo < 0xdc00 || lo > 0xdfff) {
        return scan_fail_here(sc, in_key, "unpaired surrogate escape");
    }
    sc->pos += 12;
    return 0;
}

/* Moves past the string starting at sc->pos (on its opening quote). */
static int
scan_string(struct scan *sc, int in_key)
{
    sc->pos++;
    while (sc->pos < sc->len) {
        unsigned char c = (unsigned char)sc->s[sc->pos];

        if (c == '"') {
            sc->pos++;
            return 0;
        }
        if (c < 0x20) {
            return event_fail(sc->err,
                              "not JSON: control character in string at "
                              "byte %zu",
                              sc->pos);
        }
        if (c != '\\') {
            sc->pos++;
            continue;
        }

        if (sc->pos + 1 >= sc->len) {
            break;
        }
        c = (unsigned char)sc->s[sc->pos + 1];
        if (c == 'u') {
            if (scan_unicode_escape(sc, in_key) < 0) {
                return -1;
            }
        } else if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
            sc->pos += 2;
        } else {
            return event_fail(sc->err, "not JSON: invalid escape at byte %zu",
                              sc->pos);
        }
    }
    return event_fail(sc->err, "not JSON: unterminated string");
}

static size_t
scan_digits(struct scan *sc)
{
    size_t start = sc->pos;

    while (sc->pos < sc->len && sc->s[sc->pos] >= '0' &&
           sc->s[sc->pos] <= '9') {
        sc->pos++;
    }
    return sc->pos - start;
}

/* Moves past a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
scan_number(struct scan *sc)
{
    size_t start = sc->pos;

    if (sc->s[sc->pos] == '-') {
        sc->pos++;
    }
    if (sc->pos < sc->len && sc->s[sc->pos] == '0') {
        sc->pos++;
    } else if (scan_digits(sc) == 0) {
        goto bad;
    }
    if (sc->pos < sc->len && sc->s[sc->pos] == '.') {
        sc->pos++;
        if (scan_digits(sc) == 0) {
            goto bad;
        }
    }
    if (sc->pos < sc->len && (sc->s[sc->pos] == 'e' || sc->s[sc->pos] == 'E')) {
        sc->pos++;
        if (sc->pos < sc->len &&
            (sc->s[sc->pos] == '+' || sc->s[sc->pos] == '-')) {
            sc->pos++;
        }
        if (scan_digits(sc) == 0) {
            goto bad;
        }
    }

    /* A digit right after a complete number can only be a leading zero. */
    if (sc->pos < sc->len && sc->s[sc->pos] >= '0' && sc->s[sc->pos] <= '9') {
        goto bad;
    }
    return 0;

bad:
    return event_fail(sc->err, "not JSON: invalid number at byte %zu", start);
}

static int
scan_literal(struct scan *sc, const char *word)
{
    size_t n = strlen(word);

    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0) {
        return scan_unexpected(sc);
    }
    sc->pos += n;
    return 0;
}

static int
scan_object(struct scan *sc, int depth)
{
    sc->pos++;
    scan_skip_ws(sc);
    if (sc->pos < sc->len && sc->s[sc->pos] == '}') {
        sc->pos++;
        return 0;
    }

    for (;;) {
        size_t key_at = sc->pos;

        if (sc->pos >= sc->len || sc->s[sc->pos] != '"') {
            return scan_unexpected(sc);
        }
        /* A bad name is blamed on the object holding it. */
        if (depth == 1) {
            sc->key1.p = NULL;
        } else if (depth == 2) {
            sc->key2.p = NULL;
            sc->index2 = -1;
        }
        if (scan_string(sc, 1) < 0) {
            return -1;
        }

        /* Remember the name (without quotes) to blame the value on it. */
        if (depth == 1) {
            sc->key1.p = sc->s + key_at + 1;
            sc->key1.len = sc->pos - key_at - 2;
            sc->key2.p = NULL;
            sc->index2 = -1;
        } else if (depth == 2) {
            sc->key2.p = sc->s + key_at + 1;
            sc->key2.len = sc->pos - key_at - 2;
        }

        scan_skip_ws(sc);
        if (sc->pos >= sc->len || sc->s[sc->pos] != ':') {
            return scan_unexpected(sc);
        }
        sc->pos++;
        if (scan_value(sc, depth) < 0) {
            return -1;
        }

        scan_skip_ws(sc);
        if (sc->pos < sc->len && sc->s[sc->pos] == '}') {
            sc->pos++;
            return 0;
        }
        if (sc->pos >= sc->len || sc->s[sc->pos] != ',') {
            return scan_unexpected(sc);
        }
        sc->pos++;
        scan_skip_ws(sc);
    }
}

static int
scan_array(struct scan *sc, int depth)
{
    long index = 0;

    sc->pos++;
    scan_skip_ws(sc);
    if (sc->pos < sc->len && sc->s[sc->pos] == ']') {
        sc->pos++;
        return 0;
    }

    for (;; index++) {
        if (depth == 2) {
            sc->key2.p = NULL;
            sc->index2 = index;
        }
        if (scan_value(sc, depth) < 0) {
            return -1;
        }

        scan_skip_ws(sc);
        if (sc->pos < sc->len && sc->s[sc->pos] == ']') {
            sc->pos++;
            return 0;
        }
        if (sc->pos >= sc->len || sc->s[sc->pos] != ',') {
            return scan_unexpected(sc);
        }
        sc->pos++;
    }
}

/* Moves past one value; depth is that of the container holding it. */
static int
scan_value(struct scan *sc, int depth)
{
    char c;

    scan_skip_ws(sc);
    if (sc->pos >= sc->len) {
        return scan_unexpected(sc);
    }

    c = sc->s[sc->pos];
    if (c == '{' || c == '[') {
        if (depth + 1 > EVENT_MAX_DEPTH) {
            return event_fail(sc->err, "nesting deeper than %d levels",
                              EVENT_MAX_DEPTH);
        }
        return c == '{' ? scan_object(sc, depth + 1)
                        : scan_array(sc, depth + 1);
    }
    if (c == '"') {
        return scan_string(sc, 0);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        return scan_number(sc);
    }
    if (c == 't') {
        return scan_literal(sc, "true");
    }
    if (c == 'f') {
        return scan_literal(sc, "false");
    }
    if (c == 'n') {
        return scan_literal(sc, "null");
    }
    return scan_unexpected(sc);
}

static const char *
json_kind_name(char first)
{
    switch (first) {
    case '[':
        return "an array";
    case '"':
        return "a string";
    case 't':
    case 'f':
        return "a boolean";
    case 'n':
        return "null";
    default:
        return "a number";
    }
}

/*
 * Checks that data is one strict JSON object and nothing else, and returns
 * the span of that object's text in root.
 */
static int
scan_document(const char *data, size_t len, struct span *root, char *err)
{
    struct scan sc = {data, len, 0, err, {NULL, 0}, {NULL, 0}, -1};
    size_t start;

    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        return event_fail(err, "not JSON: starts with a byte order mark");
    }
    scan_skip_ws(&sc);
    if (sc.pos == len) {
        return event_fail(err, "empty message");
    }

    start = sc.pos;
    if (scan_value(&sc, 0) < 0) {
        return -1;
    }
    scan_skip_ws(&sc);
    if (sc.pos < len) {
        return event_fail(err, "trailing data after the JSON value at byte %zu",
                          sc.pos);
    }
    if (data[start] != '{') {
        return event_fail(err, "not a JSON object but %s",
                          json_kind_name(data[start]));
    }

    root->p = data + start;
    root->len = sc.pos - start;
    while (root->len > 0 && scan_is_ws(root->p[root->len - 1])) {
        root->len--;
    }
    return 0;
}

/*
 * The raw member walker. cJSON keeps numbers only as doubles, so the exact
 * text of a number is taken from the message itself. The walker runs over
 * text scan_document() has already checked, so it only needs to find
 * boundaries. cJSON keeps an object's members in the order they appear and
 * finds a repeated name's first occurrence; the walker fetches members by
 * position in that same order, so both always mean the same member,
 * however its name is spelled with escapes.
 */
static size_t
raw_skip_string(const char *s, size_t len, size_t pos)
{
    pos++;
    while (pos < len && s[pos] != '"') {
        pos += s[pos] == '\\' ? 2 : 1;
    }
    return pos + 1;
}

static size_t
raw_skip_value(const char *s, size_t len, size_t pos)
{
    int depth = 0;

    if (s[pos] == '"') {
        return raw_skip_string(s, len, pos);
    }
    if (s[pos] != '{' && s[pos] != '[') {
        while (pos < len && strchr(",}] \t\r\n", s[pos]) == NULL) {
            pos++;
        }
        return pos;
    }

    while (pos < len) {
        char c = s[pos];

        if (c == '"') {
            pos = raw_skip_string(s, len, pos);
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                return pos + 1;
            }
        }
        pos++;
    }
    return pos;
}

static size_t
raw_skip_ws(const char *s, size_t len, size_t pos)
{
    while (pos < len && scan_is_ws(s[pos])) {
        pos++;
    }
    return pos;
}

/*
 * Where the last member looked up was found, so that members read in
 * order (as decoding mostly does) cost one pass over their object, not
 * one pass each.
 */
struct raw_cursor {
    const char *obj; /* the object's text; NULL: nothing yet */
    size_t index;    /* member number ... */
    size_t pos;      /* ... whose key starts at this offset */
};

/* Returns the text of the value of member number index of object obj. */
static struct span
raw_member_value(struct raw_cursor *cur, struct span obj, size_t index)
{
    struct span value = {NULL, 0};
    size_t pos = 1, i = 0;

    if (cur->obj == obj.p && cur->index <= index) {
        i = cur->index;
        pos = cur->pos;
    }
    for (;; i++) {
        size_t start, key;

        key = pos = raw_skip_ws(obj.p, obj.len, pos);
        if (pos >= obj.len || obj.p[pos] != '"') {
            return value;
        }
        pos = raw_skip_string(obj.p, obj.len, pos);
        pos = raw_skip_ws(obj.p, obj.len, pos) + 1;
        start = raw_skip_ws(obj.p, obj.len, pos);
        pos = raw_skip_value(obj.p, obj.len, start);
        if (i == index) {
            cur->obj = obj.p;
            cur->index = i;
            cur->pos = key;
            value.p = obj.p + start;
            value.len = pos - start;
            return value;
        }
        pos = raw_skip_ws(obj.p, obj.len, pos) + 1;
    }
}

/* Returns the source text of item, a member of the object parent whose
 * text is parent_raw. */
static struct span
raw_of(struct raw_cursor *cur, const cJSON *parent, struct span parent_raw,
       const cJSON *item)
{
    const cJSON *c;
    size_t index = 0;

    for (c = parent->child; c != NULL && c != item; c = c->next) {
        index++;
    }
    return raw_member_value(cur, parent_raw, index);
}

static int
raw_has_fraction(struct span raw)
{
    return memchr(raw.p, '.', raw.len) != NULL ||
           memchr(raw.p, 'e', raw.len) != NULL ||
           memchr(raw.p, 'E', raw.len) != NULL;
}

/*
 * Reads digits (only '0'..'9', at least one) as an unsigned value. Returns
 * 0, or -1 when the value does not fit in 64 bits.
 */
static int
digits_value(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (v > (UINT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* What one decoding step needs: the parsed tree, the text it came from,
 * the event being filled and the error buffer. */
struct decoder {
    const cJSON *root;
    struct span raw;
    struct event *ev;
    char *err;
    unsigned flags; /* EVENT_DECODE_* */
    struct raw_cursor *cur;
};

/*
 * Reads item, a member of parent, as a plain JSON integer between min and
 * max taken from its source text. max_text names max in messages.
 */
static int
take_uint(const struct decoder *d, const cJSON *parent, struct span praw,
          const cJSON *item, const char *path, uint64_t min, uint64_t max,
          const char *max_text, uint64_t *out)
{
    struct span raw;
    uint64_t v;

    if (!cJSON_IsNumber(item)) {
        return event_fail(d->err, "%s: not an integer", path);
    }
    raw = raw_of(d->cur, parent, praw, item);
    if (raw_has_fraction(raw)) {
        return event_fail(d->err, "%s: fraction or exponent not allowed", path);
    }
    if (raw.p[0] == '-') {
        return min == 0 ? event_fail(d->err, "%s: negative", path)
                        : event_fail(d->err, "%s: below %" PRIu64, path, min);
    }
    if (digits_value(raw.p, raw.len, &v) < 0 || v > max) {
        return event_fail(d->err, "%s: above %s", path, max_text);
    }
    if (v < min) {
        return event_fail(d->err, "%s: below %" PRIu64, path, min);
    }
    *out = v;
    return 0;
}

/*
 * Copies the string member name of obj into *out when it is present.
 * Lengths are in bytes of UTF-8; the scanner has ruled out \u0000, so
 * strlen() sees the whole string.
 */
static int
take_string(const cJSON *obj, const char *name, const char *path, size_t min,
            size_t max, char **out, char *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    size_t len;

    if (item == NULL) {
        return 0;
    }
    if (!cJSON_IsString(item)) {
        return event_fail(err, "%s: not a string", path);
    }
    len = strlen(item->valuestring);
    if (len < min) {
        return event_fail(err, "%s: empty", path);
    }
    if (len > max) {
        return event_fail(err, "%s: longer than %zu bytes", path, max);
    }
    *out = xstrndup(item->valuestring, len);
    return 0;
}

/*
 * Matches the string member name against names. Returns its index, -2 when
 * absent (allowed unless the caller says otherwise), or -1 after failing
 * with "<name>: not <choices>".
 */
static int
take_choice(const cJSON *obj, const char *name, const char *const *names,
            size_t n, const char *choices, char *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    size_t i;

    if (item == NULL) {
        return -2;
    }
    if (!cJSON_IsString(item)) {
        return event_fail(err, "%s: not a string", name);
    }
    for (i = 0; i < n; i++) {
        if (strcmp(item->valuestring, names[i]) == 0) {
            return (int)i;
        }
    }
    return event_fail(err, "%s: not %s", name, choices);
}

static int
decode_type(struct decoder *d)
{
    static const char *const names[] = {"invite", "cancel"};
    int i = take_choice(d->root, "type", names, UTIL_ARRAY_LEN(names),
                        "invite or cancel", d->err);

    if (i == -2) {
        return event_fail(d->err, "type: missing");
    }
    if (i < 0) {
        return -1;
    }
    d->ev->type = i == 0 ? EVENT_INVITE : EVENT_CANCEL;
    return 0;
}

static int
decode_call_id(struct decoder *d)
{
    const char *s;

    /* cJSON_HasObjectItem() ignores case, and "Call_ID" is not call_id. */
    if (cJSON_GetObjectItemCaseSensitive(d->root, "call_id") == NULL) {
        return event_fail(d->err, "call_id: missing");
    }
    if (take_string(d->root, "call_id", "call_id", 1, EVENT_CALL_ID_MAX,
                    &d->ev->call_id, d->err) < 0) {
        return -1;
    }
    for (s = d->ev->call_id; *s != '\0'; s++) {
        if (*s < 0x20 || *s > 0x7e) {
            return event_fail(d->err, "call_id: not printable ASCII");
        }
    }
    return 0;
}

/* _j_msgid as a string: canonical decimal digits, at most 2^63-1. */
static int
decode_msgid_string(struct decoder *d, const char *s)
{
    size_t len = strlen(s), i;

    if (len == 0) {
        return event_fail(d->err, "_j_msgid: empty");
    }
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return event_fail(d->err, "_j_msgid: not decimal digits");
        }
    }
    if (s[0] == '0' && len > 1) {
        return event_fail(d->err, "_j_msgid: leading zero");
    }
    if (digits_value(s, len, &d->ev->msgid_num) < 0 ||
        d->ev->msgid_num > INT63_MAX) {
        return event_fail(d->err, "_j_msgid: above 2^63-1");
    }
    return 0;
}

static int
decode_msgid(struct decoder *d)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(d->root, "_j_msgid");
    struct event *ev = d->ev;

    if (item == NULL) {
        return event_fail(d->err, "_j_msgid: missing");
    }
    if (cJSON_IsString(item)) {
        if (decode_msgid_string(d, item->valuestring) < 0) {
            return -1;
        }
    } else if (cJSON_IsNumber(item)) {
        if (take_uint(d, d->root, d->raw, item, "_j_msgid", 0, INT63_MAX,
                      "2^63-1", &ev->msgid_num) < 0) {
            return -1;
        }
    } else {
        return event_fail(d->err, "_j_msgid: not an integer or digit string");
    }
    snprintf(ev->msgid, sizeof(ev->msgid), "%" PRIu64, ev->msgid_num);
    return 0;
}

/* Checks one device token; i is its index, for the message. */
static int
check_token(const cJSON *item, int i, char *err)
{
    const char *s;
    size_t len;

    if (!cJSON_IsString(item)) {
        return event_fail(err, "device_tokens[%d]: not a string", i);
    }
    s = item->valuestring;
    len = strlen(s);
    if (strspn(s, "0123456789abcdefABCDEF") != len) {
        return event_fail(err, "device_tokens[%d]: not hexadecimal", i);
    }
    if (len < EVENT_TOKEN_MIN_HEX) {
        return event_fail(err, "device_tokens[%d]: shorter than %d hex digits",
                          i, EVENT_TOKEN_MIN_HEX);
    }
    if (len > EVENT_TOKEN_MAX_HEX) {
        return event_fail(err, "device_tokens[%d]: longer than %d hex digits",
                          i, EVENT_TOKEN_MAX_HEX);
    }
    if (len % 2 != 0) {
        return event_fail(err, "device_tokens[%d]: odd number of hex digits",
                          i);
    }
    return 0;
}

/* Hex tokens name the same device whatever the case of their letters. */
static int
token_seen(const struct event *ev, const char *s)
{
    size_t i, k;

    for (i = 0; i < ev->ntokens; i++) {
        const char *t = ev->tokens[i];

        for (k = 0; t[k] != '\0' && s[k] != '\0'; k++) {
            if ((t[k] | 0x20) != (s[k] | 0x20)) {
                break;
            }
        }
        if (t[k] == '\0' && s[k] == '\0') {
            return 1;
        }
    }
    return 0;
}

static int
decode_tokens(struct decoder *d)
{
    const cJSON *arr =
        cJSON_GetObjectItemCaseSensitive(d->root, "device_tokens");
    const cJSON *item;
    int i = 0, n;

    if (arr == NULL) {
        return event_fail(d->err, "device_tokens: missing");
    }
    if (!cJSON_IsArray(arr)) {
        return event_fail(d->err, "device_tokens: not an array");
    }
    n = cJSON_GetArraySize(arr);
    if (n == 0) {
        return event_fail(d->err, "device_tokens: empty");
    }
    if (n > EVENT_MAX_TOKENS) {
        return event_fail(d->err, "device_tokens: more than %d tokens",
                          EVENT_MAX_TOKENS);
    }

    /* Every token is checked, duplicates included, before any is kept. */
    cJSON_ArrayForEach(item, arr)
    {
        if (check_token(item, i++, d->err) < 0) {
            return -1;
        }
    }
    cJSON_ArrayForEach(item, arr)
    {
        if (!token_seen(d->ev, item->valuestring)) {
            d->ev->tokens[d->ev->ntokens++] = xstrdup(item->valuestring);
        }
    }
    return 0;
}

static int
decode_created_at(struct decoder *d)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(d->root, "created_at");
    uint64_t v;

    if (item == NULL) {
        if (d->flags & EVENT_DECODE_NO_CREATED_AT) {
            d->ev->created_at_ms = 0;
            return 0;
        }
        return event_fail(d->err, "created_at: missing");
    }
    if (take_uint(d, d->root, d->raw, item, "created_at", 1, INT53_MAX,
                  "2^53-1", &v) < 0) {
        return -1;
    }
    d->ev->created_at_ms = (int64_t)v;
    return 0;
}

static int
decode_uid(struct decoder *d)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(d->root, "_j_uid");
    struct event *ev = d->ev;
    struct span raw;
    uint64_t v;

    if (item == NULL) {
        return 0;
    }
    if (cJSON_IsString(item)) {
        if (take_string(d->root, "_j_uid", "_j_uid", 1, EVENT_UID_MAX, &ev->uid,
                        d->err) < 0) {
            return -1;
        }
        ev->uid_len = strlen(ev->uid);
        ev->uid_is_string = 1;
        return 0;
    }
    if (!cJSON_IsNumber(item)) {
        return event_fail(d->err, "_j_uid: not an integer or string");
    }

    /* take_uint() has checked the text is plain digits; keep them. */
    if (take_uint(d, d->root, d->raw, item, "_j_uid", 0, INT63_MAX, "2^63-1",
                  &v) < 0) {
        return -1;
    }
    raw = raw_of(d->cur, d->root, d->raw, item);
    ev->uid = xstrndup(raw.p, raw.len);
    ev->uid_len = raw.len;
    return 0;
}

static int
decode_ring_timeout(struct decoder *d)
{
    const cJSON *item =
        cJSON_GetObjectItemCaseSensitive(d->root, "ring_timeout_s");
    uint64_t v;

    /* A cancel stops a ring; how long it would have rung does not apply. */
    if (item == NULL || d->ev->type != EVENT_INVITE) {
        return 0;
    }
    if (take_uint(d, d->root, d->raw, item, "ring_timeout_s", 1,
                  EVENT_RING_TIMEOUT_MAX, "600", &v) < 0) {
        return -1;
    }
    d->ev->ring_timeout_s = (int)v;
    return 0;
}

static int
decode_caller(struct decoder *d)
{
    const cJSON *caller = cJSON_GetObjectItemCaseSensitive(d->root, "caller");
    const cJSON *id;
    struct span raw;

    if (caller == NULL) {
        return 0;
    }
    if (!cJSON_IsObject(caller)) {
        return event_fail(d->err, "caller: not an object");
    }
    if (take_string(caller, "name", "caller.name", 0, EVENT_NAME_MAX,
                    &d->ev->caller_name, d->err) < 0) {
        return -1;
    }

    id = cJSON_GetObjectItemCaseSensitive(caller, "id");
    if (id == NULL || cJSON_IsString(id)) {
        return take_string(caller, "id", "caller.id", 0, EVENT_NAME_MAX,
                           &d->ev->caller_id, d->err);
    }
    if (!cJSON_IsNumber(id)) {
        return event_fail(d->err, "caller.id: not a string or integer");
    }

    /* A numeric id is kept as its exact JSON text, sign included. */
    raw = raw_of(d->cur, caller, raw_of(d->cur, d->root, d->raw, caller), id);
    if (raw_has_fraction(raw)) {
        return event_fail(d->err, "caller.id: fraction or exponent not "
                                  "allowed");
    }
    if (raw.len > EVENT_NAME_MAX) {
        return event_fail(d->err, "caller.id: longer than %d bytes",
                          EVENT_NAME_MAX);
    }
    d->ev->caller_id = xstrndup(raw.p, raw.len);
    return 0;
}

static int
decode_media(struct decoder *d)
{
    static const char *const names[] = {"audio", "video"};
    int i = take_choice(d->root, "media", names, UTIL_ARRAY_LEN(names),
                        "audio or video", d->err);

    if (i == -1) {
        return -1;
    }
    d->ev->media = i == 1 ? EVENT_VIDEO : EVENT_AUDIO;
    return 0;
}

static int
decode_reason(struct decoder *d)
{
    static const char *const names[] = {"hangup", "timeout", "declined",
                                        "answered_elsewhere", "busy"};
    int i;

    /* An invite has no reason; one sent anyway is not looked at. */
    if (d->ev->type != EVENT_CANCEL) {
        return 0;
    }
    i = take_choice(d->root, "reason", names, UTIL_ARRAY_LEN(names),
                    "hangup, timeout, declined, answered_elsewhere or busy",
                    d->err);
    if (i == -1) {
        return -1;
    }
    if (i >= 0) {
        d->ev->reason = xstrdup(names[i]);
    }
    return 0;
}

static int
decode_alert(struct decoder *d)
{
    const cJSON *alert = cJSON_GetObjectItemCaseSensitive(d->root, "alert");

    if (alert == NULL) {
        return 0;
    }
    if (!cJSON_IsObject(alert)) {
        return event_fail(d->err, "alert: not an object");
    }
    if (take_string(alert, "title", "alert.title", 1, EVENT_NAME_MAX,
                    &d->ev->alert_title, d->err) < 0) {
        return -1;
    }
    return take_string(alert, "body", "alert.body", 1, EVENT_BODY_MAX,
                       &d->ev->alert_body, d->err);
}

static int
decode_sound(struct decoder *d)
{
    return take_string(d->root, "sound", "sound", 1, EVENT_SOUND_MAX,
                       &d->ev->sound, d->err);
}

int
event_reserved_key(const char *key)
{
    static const char *const reserved[] = {"aps", "pushType", "_j_msgid",
                                           "_j_uid", "call_id"};
    size_t i;

    for (i = 0; i < UTIL_ARRAY_LEN(reserved); i++) {
        if (strcmp(key, reserved[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Checks the member item of extras (source text xraw) and appends it. */
static int
decode_extra(struct decoder *d, const cJSON *extras, struct span xraw,
             const cJSON *item)
{
    struct event_extra *x;
    const cJSON *prev;
    char name[EVENT_ERR_NAME_MAX + 4];
    size_t klen = strlen(item->string);
    struct span raw;

    if (klen == 0) {
        return event_fail(d->err, "extras: empty key");
    }
    if (klen > EVENT_EXTRA_KEY_MAX) {
        return event_fail(d->err, "extras: key longer than %d bytes",
                          EVENT_EXTRA_KEY_MAX);
    }
    quote_name(name, item->string, klen);
    if (event_reserved_key(item->string)) {
        return event_fail(d->err, "extras.%s: reserved key", name);
    }
    for (prev = extras->child; prev != item; prev = prev->next) {
        if (strcmp(prev->string, item->string) == 0) {
            return event_fail(d->err, "extras.%s: duplicate key", name);
        }
    }

    if (cJSON_IsString(item)) {
        size_t vlen = strlen(item->valuestring);

        if (vlen > EVENT_EXTRA_VALUE_MAX) {
            return event_fail(d->err, "extras.%s: longer than %d bytes", name,
                              EVENT_EXTRA_VALUE_MAX);
        }
        x = &d->ev->extras[d->ev->nextras++];
        x->kind = EVENT_EXTRA_STRING;
        x->value = xstrndup(item->valuestring, vlen);
        x->value_len = vlen;
    } else if (cJSON_IsNumber(item) || cJSON_IsBool(item)) {
        raw = raw_of(d->cur, extras, xraw, item);
        x = &d->ev->extras[d->ev->nextras++];
        x->kind = EVENT_EXTRA_RAW;
        x->value = xstrndup(raw.p, raw.len);
        x->value_len = raw.len;
    } else {
        return event_fail(d->err, "extras.%s: %s not allowed", name,
                          cJSON_IsNull(item)    ? "null"
                          : cJSON_IsArray(item) ? "array"
                                                : "object");
    }
    x->key = xstrndup(item->string, klen);
    return 0;
}

static int
decode_extras(struct decoder *d)
{
    const cJSON *extras = cJSON_GetObjectItemCaseSensitive(d->root, "extras");
    const cJSON *item;
    struct span xraw;
    int n;

    if (extras == NULL) {
        return 0;
    }
    if (!cJSON_IsObject(extras)) {
        return event_fail(d->err, "extras: not an object");
    }
    n = cJSON_GetArraySize(extras);
    if (n > EVENT_MAX_EXTRAS) {
        return event_fail(d->err, "extras: more than %d members",
                          EVENT_MAX_EXTRAS);
    }

    d->ev->extras = xcalloc((size_t)n, sizeof(*d->ev->extras));
    xraw = raw_of(d->cur, d->root, d->raw, extras);
    cJSON_ArrayForEach(item, extras)
    {
        if (decode_extra(d, extras, xraw, item) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
decode_topic(struct decoder *d)
{
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyz"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-";
    char *topic;

    if (take_string(d->root, "apns_topic", "apns_topic", 1, EVENT_TOPIC_MAX,
                    &d->ev->apns_topic, d->err) < 0) {
        return -1;
    }
    topic = d->ev->apns_topic;
    if (topic != NULL && strspn(topic, allowed) != strlen(topic)) {
        return event_fail(d->err,
                          "apns_topic: not letters, digits, '.' or '-'");
    }
    return 0;
}

static int
decode_environment(struct decoder *d)
{
    static const char *const names[] = {"production", "sandbox"};
    int i = take_choice(d->root, "environment", names, UTIL_ARRAY_LEN(names),
                        "production or sandbox", d->err);

    if (i == -1) {
        return -1;
    }
    if (i >= 0) {
        d->ev->environment = i == 0 ? EVENT_ENV_PRODUCTION : EVENT_ENV_SANDBOX;
    }
    return 0;
}

/* The fields in the order they are checked: the first failure is the one
 * reported, so the order is part of what callers see. type comes first
 * because ring_timeout_s and reason depend on it. */
static int (*const decode_steps[])(struct decoder *) = {
    decode_type,       decode_call_id, decode_msgid,        decode_tokens,
    decode_created_at, decode_uid,     decode_ring_timeout, decode_caller,
    decode_media,      decode_reason,  decode_alert,        decode_sound,
    decode_extras,     decode_topic,   decode_environment,
};

int
event_decode(struct event *ev, const char *data, size_t len, char *err)
{
    return event_decode_flags(ev, data, len, 0, err);
}

int
event_decode_flags(struct event *ev, const char *data, size_t len,
                   unsigned flags, char *err)
{
    struct raw_cursor cur = {NULL, 0, 0};
    struct decoder d = {NULL, {NULL, 0}, ev, err, flags, &cur};
    const char *end = NULL;
    cJSON *root = NULL;
    size_t bad, i;
    int rc = -1;

    memset(ev, 0, sizeof(*ev));
    err[0] = '\0';

    /* Cheap checks first, so that no large or broken input is parsed. */
    if (len == 0) {
        return event_fail(err, "empty message");
    }
    if (len > EVENT_MAX_BYTES) {
        return event_fail(err, "message larger than %d bytes", EVENT_MAX_BYTES);
    }
    bad = util_utf8_valid_prefix(data, len);
    if (bad < len) {
        return event_fail(err, "invalid UTF-8 at byte %zu", bad);
    }
    if (scan_document(data, len, &d.raw, err) < 0) {
        return -1;
    }

    root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (root == NULL) {
        event_fail(err, "not JSON: parser failed at byte %td",
                   end != NULL ? end - data : (ptrdiff_t)0);
        goto done;
    }
    d.root = root;

    for (i = 0; i < UTIL_ARRAY_LEN(decode_steps); i++) {
        if (decode_steps[i](&d) < 0) {
            goto done;
        }
    }
    rc = 0;

done:
    cJSON_Delete(root);
    if (rc < 0) {
        event_release(ev);
    }
    return rc;
}

void
event_release(struct event *ev)
{
    size_t i;

    free(ev->call_id);
    free(ev->uid);
    for (i = 0; i < ev->ntokens; i++) {
        free(ev->tokens[i]);
    }
    free(ev->caller_name);
    free(ev->caller_id);
    free(ev->reason);
    free(ev->alert_title);
    free(ev->alert_body);
    free(ev->sound);
    for (i = 0; i < ev->nextras; i++) {
        free(ev->extras[i].key);
        free(ev->extras[i].value);
    }
    free(ev->extras);
    free(ev->apns_topic);
    memset(ev, 0, sizeof(*ev));
}

const char *
event_type_name(enum event_type type)
{
    switch (type) {
    case EVENT_INVITE:
        return "invite";
    case EVENT_CANCEL:
        return "cancel";
    }
    return "unknown";
}
