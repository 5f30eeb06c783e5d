#include "payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "util.h"

/* The mark of a shortened alert body: U+2026 HORIZONTAL ELLIPSIS. */
#define ELLIPSIS "\xe2\x80\xa6"
#define ELLIPSIS_LEN 3

/*
 * Everything the builder writes goes through a sink that counts the bytes
 * it was asked to write as well as writing them. The buffer stops at its
 * cap, but the count goes on, so after one build the true size is known
 * even when it is far over the limit: it says how much of the body to cut,
 * and it is the number the error message reports.
 */
struct sink {
    struct buf *b;
    size_t want;
};

/* The alert body as it is to be written; text NULL means no body key. */
struct body {
    const char *text;
    size_t len;
};

/*
 * The bytes c costs once escaped by buf_json_str(). This must agree with
 * buf_json_str() exactly, or a shortened payload could miss the limit.
 */
static size_t
json_byte_cost(unsigned char c)
{
    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
        return 2;
    }
    if (c < 0x20) {
        return 6; /* \u00XX */
    }
    return 1;
}

static size_t
json_cost(const char *s, size_t len)
{
    size_t i, cost = 0;

    for (i = 0; i < len; i++) {
        cost += json_byte_cost((unsigned char)s[i]);
    }
    return cost;
}

static void
sink_raw(struct sink *o, const char *s, size_t len)
{
    o->want += len;
    buf_add(o->b, s, len);
}

static void
sink_rawz(struct sink *o, const char *s)
{
    sink_raw(o, s, strlen(s));
}

static void
sink_str(struct sink *o, const char *s, size_t len)
{
    o->want += 2 + json_cost(s, len);
    buf_json_str(o->b, s, len);
}

static void
sink_strz(struct sink *o, const char *s)
{
    sink_str(o, s, strlen(s));
}

/* The configured title for the event's type and media. A missing video
 * title falls back to the audio one, so a partial configuration still
 * shows a visible alert (without one iOS would not run the extension). */
static const char *
default_title(const struct event *ev, const struct payload_opts *opts)
{
    const char *audio = opts->invite_title;
    const char *video = opts->invite_video_title;

    if (ev->type == EVENT_CANCEL) {
        audio = opts->cancel_title;
        video = opts->cancel_video_title;
    }
    if (ev->media == EVENT_VIDEO && video != NULL) {
        return video;
    }
    return audio != NULL ? audio : "";
}

static const char *
pick_sound(const struct event *ev, const struct payload_opts *opts)
{
    if (ev->sound != NULL) {
        return ev->sound;
    }
    return opts->sound != NULL ? opts->sound : "default";
}

/* The full body the event asks for: its own alert body, else the caller's
 * name, else none at all. */
static void
body_init(struct body *body, const struct event *ev)
{
    body->text = ev->alert_body != NULL ? ev->alert_body : ev->caller_name;
    body->len = body->text != NULL ? strlen(body->text) : 0;
}

static void
write_payload(struct sink *o, struct buf *out, const struct event *ev,
              const struct payload_opts *opts, const struct body *body)
{
    const char *title;
    size_t i;

    buf_reset(out);
    o->b = out;
    o->want = 0;
    title = ev->alert_title != NULL ? ev->alert_title : default_title(ev, opts);

    sink_rawz(o, "{\"aps\":{\"alert\":{\"title\":");
    sink_strz(o, title);
    if (body->text != NULL) {
        sink_rawz(o, ",\"body\":");
        sink_str(o, body->text, body->len);
    }
    sink_rawz(o, "},\"badge\":0,\"mutable-content\":1,\"sound\":");
    sink_strz(o, pick_sound(ev, opts));

    sink_rawz(o, ev->type == EVENT_CANCEL ? "},\"pushType\":2"
                                          : "},\"pushType\":1");
    sink_rawz(o, ",\"_j_msgid\":");
    sink_rawz(o, ev->msgid);

    /* An integer uid goes out as the digits received, never through a
     * double; a string uid stays a string, as the app received it before. */
    if (ev->uid_len > 0) {
        sink_rawz(o, ",\"_j_uid\":");
        if (ev->uid_is_string) {
            sink_str(o, ev->uid, ev->uid_len);
        } else {
            sink_raw(o, ev->uid, ev->uid_len);
        }
    }
    sink_rawz(o, ",\"call_id\":");
    sink_strz(o, ev->call_id);

    for (i = 0; i < ev->nextras; i++) {
        const struct event_extra *x = &ev->extras[i];

        sink_rawz(o, ",");
        sink_strz(o, x->key);
        sink_rawz(o, ":");
        if (x->kind == EVENT_EXTRA_STRING) {
            sink_str(o, x->value, x->value_len);
        } else {
            sink_raw(o, x->value, x->value_len);
        }
    }
    sink_rawz(o, "}");
}

/*
 * Makes body over bytes cheaper, ellipsis included, by keeping the longest
 * run of whole characters whose escaped size fits what is left. The cut is
 * computed from the escaped cost of each character, so one more build is
 * enough. Returns the new text (the caller frees it), or NULL when nothing
 * of the body can stay and the body key must go.
 */
static char *
body_shorten(struct body *body, size_t over)
{
    size_t need = over + ELLIPSIS_LEN;
    size_t cost = json_cost(body->text, body->len);
    size_t budget, used = 0, keep = 0;
    char *text;

    if (need > cost) {
        return NULL;
    }
    budget = cost - need;

    while (keep < body->len) {
        size_t n = util_utf8_seq((const unsigned char *)body->text + keep,
                                 body->len - keep);
        size_t c;

        /* Decoded events are valid UTF-8; a stray byte still advances. */
        if (n == 0) {
            n = 1;
        }
        c = json_cost(body->text + keep, n);
        if (used + c > budget) {
            break;
        }
        used += c;
        keep += n;
    }

    text = xmalloc(keep + ELLIPSIS_LEN);
    memcpy(text, body->text, keep);
    memcpy(text + keep, ELLIPSIS, ELLIPSIS_LEN);
    body->text = text;
    body->len = keep + ELLIPSIS_LEN;
    return text;
}

/* The decoder hands over canonical digits; anything else here would make
 * the JSON invalid, so it is refused rather than written. */
static int
msgid_ok(const char *msgid)
{
    size_t i;

    for (i = 0; i < sizeof(((struct event *)0)->msgid); i++) {
        if (msgid[i] == '\0') {
            return i > 0;
        }
        if (msgid[i] < '0' || msgid[i] > '9') {
            return 0;
        }
    }
    return 0;
}

int
payload_build(struct buf *out, const struct event *ev,
              const struct payload_opts *opts, size_t limit, int *body_cut,
              char *err)
{
    size_t saved_max = out->max;
    struct sink o;
    struct body body;
    char *cut_text = NULL;
    int result = -1;

    *body_cut = 0;
    if (!msgid_ok(ev->msgid)) {
        snprintf(err, PAYLOAD_ERR_MAX, "_j_msgid: not decimal digits");
        buf_reset(out);
        return -1;
    }

    /* Nothing past the limit is ever kept, whatever the input: the sink's
     * count, not the buffer, measures a payload that is too large. */
    if (limit < out->max) {
        out->max = limit;
    }

    body_init(&body, ev);
    write_payload(&o, out, ev, opts, &body);

    if (o.want > limit && body.text != NULL) {
        cut_text = body_shorten(&body, o.want - limit);
        if (cut_text == NULL) {
            body.text = NULL;
        }
        *body_cut = 1;
        write_payload(&o, out, ev, opts, &body);
    }

    if (o.want > limit) {
        snprintf(err, PAYLOAD_ERR_MAX,
                 "payload of %zu bytes exceeds the %zu-byte limit without "
                 "the alert body",
                 o.want, limit);
        goto done;
    }
    if (buf_overflowed(out)) {
        snprintf(err, PAYLOAD_ERR_MAX,
                 "payload of %zu bytes does not fit the %zu-byte output "
                 "buffer",
                 o.want, out->max);
        goto done;
    }
    result = 0;

done:
    if (result < 0) {
        buf_reset(out);
        *body_cut = 0;
    }
    out->max = saved_max;
    free(cut_text);
    return result;
}

void
payload_apns_id(char *out, const char *msgid, const char *token)
{
    static const char hex[] = "0123456789abcdef";
    size_t idlen = strlen(msgid), toklen = strlen(token);
    unsigned char md[EVP_MAX_MD_SIZE];
    char *input = xmalloc(idlen + 1 + toklen);
    size_t i, o = 0;

    /* The token is hashed in lowercase: APNs treats hex case as the same
     * device, so the id must too. */
    memcpy(input, msgid, idlen);
    input[idlen] = '\n';
    for (i = 0; i < toklen; i++) {
        char c = token[i];

        input[idlen + 1 + i] = (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
    }

    /* SHA-256 fails only when OpenSSL cannot allocate, which the rest of
     * the process treats as fatal too. */
    if (!EVP_Digest(input, idlen + 1 + toklen, md, NULL, EVP_sha256(), NULL)) {
        abort();
    }
    free(input);

    /* RFC 9562 version 8 (custom) in the high nibble of byte 6, variant
     * 10xx in the top bits of byte 8; the rest is the hash. */
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x80);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[md[i] >> 4];
        out[o++] = hex[md[i] & 0x0f];
    }
    out[o] = '\0';
}

static int64_t
ring_timeout_s(const struct event *ev, const struct payload_opts *opts)
{
    return ev->ring_timeout_s > 0 ? ev->ring_timeout_s : opts->ring_timeout_s;
}

int64_t
payload_ring_end_ms(const struct event *ev, const struct payload_opts *opts)
{
    if (ev->type == EVENT_CANCEL) {
        return ev->created_at_ms + (int64_t)opts->cancel_expiration_s * 1000;
    }
    return ev->created_at_ms + ring_timeout_s(ev, opts) * 1000;
}

int64_t
payload_expiration(const struct event *ev, const struct payload_opts *opts)
{
    if (ev->type == EVENT_CANCEL) {
        return ev->created_at_ms / 1000 + opts->cancel_expiration_s;
    }
    return payload_ring_end_ms(ev, opts) / 1000;
}
