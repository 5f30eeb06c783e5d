/*
 * fuzz_event: a libFuzzer target for the path every Kafka message takes,
 * from raw bytes to an APNs request body.
 *
 * Each input is decoded as a call event. A rejected input must come back
 * with a reason fit for a log line and a Kafka header. An accepted one is
 * turned into payloads under both APNs size limits, with the worker's
 * default texts, and each payload is checked against what APNs and the iOS
 * app rely on. A broken rule aborts with a line saying which, and libFuzzer
 * reports it as a crash together with the input.
 *
 * Built and run by tests/fuzz/run.sh; tests/fuzz/README.md explains both.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "event.h"
#include "payload.h"
#include "util.h"

/* The U+2026 HORIZONTAL ELLIPSIS that marks a shortened alert body. */
#define FUZZ_ELLIPSIS "\xe2\x80\xa6"
#define FUZZ_ELLIPSIS_LEN 3

/* The most one character of the body can cost once escaped ("\u001f"),
 * and so the most a cut body may leave unused under the limit. */
#define FUZZ_CHAR_COST_MAX 6

/* The worker's defaults, as its configuration module sets them, so that
 * payload sizes are those seen in production. */
static const struct payload_opts fuzz_opts = {
    .invite_title = "来电邀请",
    .invite_video_title = "视频来电邀请",
    .cancel_title = "语音通话取消",
    .cancel_video_title = "视频通话取消",
    .sound = "laidian.caf",
    .ring_timeout_s = 60,
    .cancel_expiration_s = 300,
};

/* One built payload and how it was built. */
struct built {
    int rc;
    int body_cut;
    char *text; /* a copy of the payload, NULL when the build failed */
    size_t len;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void
fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("fuzz-event: broken rule: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static int
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

static int
is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * A reason goes into log lines and a Kafka header, so it must be one line
 * of valid UTF-8 that fits its buffer with its NUL. The buffer was filled
 * with 0xff beforehand, so a missing terminator shows here.
 */
static void
check_reason(const char *what, const char *err, size_t max)
{
    size_t len = strnlen(err, max), i;

    if (len == max) {
        fuzz_fail("%s reason not terminated within %zu bytes", what, max);
    }
    if (len == 0) {
        fuzz_fail("%s reason is empty", what);
    }
    if (util_utf8_valid_prefix(err, len) != len) {
        fuzz_fail("%s reason is not valid UTF-8: %s", what, err);
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)err[i];

        if (c < 0x20 || c == 0x7f) {
            fuzz_fail("%s reason holds control byte 0x%02x", what, c);
        }
    }
}

/* A failed decode must leave nothing behind to release. */
static void
check_rejected(const struct event *ev, const char *err)
{
    static const struct event empty;

    check_reason("event", err, EVENT_ERR_MAX);
    if (memcmp(ev, &empty, sizeof(empty)) != 0) {
        fuzz_fail("rejected event left fields set: %s", err);
    }
}

/* An optional text of the event: valid UTF-8 of at most max bytes. */
static void
check_text(const char *name, const char *s, size_t min, size_t max)
{
    size_t len;

    if (s == NULL) {
        return;
    }
    len = strlen(s);
    if (len < min || len > max) {
        fuzz_fail("%s has %zu bytes, outside %zu..%zu", name, len, min, max);
    }
    if (util_utf8_valid_prefix(s, len) != len) {
        fuzz_fail("%s is not valid UTF-8", name);
    }
}

static void
check_msgid(const struct event *ev)
{
    char digits[sizeof(ev->msgid)];

    if (ev->msgid_num > (uint64_t)INT64_MAX) {
        fuzz_fail("_j_msgid %" PRIu64 " above 2^63-1", ev->msgid_num);
    }
    snprintf(digits, sizeof(digits), "%" PRIu64, ev->msgid_num);
    if (strcmp(digits, ev->msgid) != 0) {
        fuzz_fail("_j_msgid text \"%s\" is not the digits of %s", ev->msgid,
                  digits);
    }
}

static int
tokens_same_device(const char *a, const char *b)
{
    size_t i;

    for (i = 0; a[i] != '\0' && b[i] != '\0'; i++) {
        if ((a[i] | 0x20) != (b[i] | 0x20)) {
            return 0;
        }
    }
    return a[i] == b[i];
}

static void
check_tokens(const struct event *ev)
{
    size_t i, k;

    if (ev->ntokens < 1 || ev->ntokens > EVENT_MAX_TOKENS) {
        fuzz_fail("%zu device tokens", ev->ntokens);
    }
    for (i = 0; i < ev->ntokens; i++) {
        const char *t = ev->tokens[i];
        size_t len = strlen(t);

        for (k = 0; k < len; k++) {
            if (!is_hex(t[k])) {
                fuzz_fail("device token %zu is not hex", i);
            }
        }
        if (len < EVENT_TOKEN_MIN_HEX || len > EVENT_TOKEN_MAX_HEX ||
            len % 2 != 0) {
            fuzz_fail("device token %zu has %zu hex digits", i, len);
        }
        for (k = 0; k < i; k++) {
            if (tokens_same_device(ev->tokens[k], t)) {
                fuzz_fail("device tokens %zu and %zu are one device", k, i);
            }
        }
    }
}

static void
check_extras(const struct event *ev)
{
    size_t i, k;

    if (ev->nextras > EVENT_MAX_EXTRAS) {
        fuzz_fail("%zu extras", ev->nextras);
    }
    for (i = 0; i < ev->nextras; i++) {
        const struct event_extra *x = &ev->extras[i];

        check_text("extras key", x->key, 1, EVENT_EXTRA_KEY_MAX);
        if (event_reserved_key(x->key)) {
            fuzz_fail("extras key \"%s\" is reserved", x->key);
        }
        for (k = 0; k < i; k++) {
            if (strcmp(ev->extras[k].key, x->key) == 0) {
                fuzz_fail("extras key \"%s\" appears twice", x->key);
            }
        }
        if (strlen(x->value) != x->value_len) {
            fuzz_fail("extras.%s: value_len does not match", x->key);
        }
        if (x->kind == EVENT_EXTRA_STRING) {
            check_text("extras value", x->value, 0, EVENT_EXTRA_VALUE_MAX);
        }
    }
}

/* What the decoder promises about an event it accepted. */
static void
check_event(const struct event *ev)
{
    const char *s;

    if (ev->type != EVENT_INVITE && ev->type != EVENT_CANCEL) {
        fuzz_fail("event type %d", (int)ev->type);
    }
    check_text("call_id", ev->call_id, 1, EVENT_CALL_ID_MAX);
    for (s = ev->call_id; *s != '\0'; s++) {
        if (*s < 0x20 || *s > 0x7e) {
            fuzz_fail("call_id is not printable ASCII");
        }
    }
    check_msgid(ev);
    check_tokens(ev);
    if (ev->created_at_ms < 1 || ev->created_at_ms > (INT64_C(1) << 53) - 1) {
        fuzz_fail("created_at %" PRId64 " out of range", ev->created_at_ms);
    }
    if (ev->ring_timeout_s < 0 || ev->ring_timeout_s > EVENT_RING_TIMEOUT_MAX ||
        (ev->type == EVENT_CANCEL && ev->ring_timeout_s != 0)) {
        fuzz_fail("ring_timeout_s %d", ev->ring_timeout_s);
    }
    if (ev->uid_len > 0 && strlen(ev->uid) != ev->uid_len) {
        fuzz_fail("_j_uid length does not match uid_len");
    }
    check_text("_j_uid", ev->uid, 0, EVENT_UID_MAX);
    check_text("caller.name", ev->caller_name, 0, EVENT_NAME_MAX);
    check_text("caller.id", ev->caller_id, 0, EVENT_NAME_MAX);
    check_text("alert.title", ev->alert_title, 1, EVENT_NAME_MAX);
    check_text("alert.body", ev->alert_body, 1, EVENT_BODY_MAX);
    check_text("sound", ev->sound, 1, EVENT_SOUND_MAX);
    check_text("apns_topic", ev->apns_topic, 1, EVENT_TOPIC_MAX);
    check_extras(ev);
}

/*
 * "_j_msgid": must appear once, as the top-level key, followed by exactly
 * the event's digits. Inside a JSON string every quote is escaped, so the
 * unescaped key text cannot occur anywhere else.
 */
static void
check_msgid_text(const char *payload, const char *msgid)
{
    static const char key[] = "\"_j_msgid\":";
    const char *at = strstr(payload, key), *p;
    size_t n = strlen(msgid);

    if (at == NULL) {
        fuzz_fail("payload has no \"_j_msgid\": key");
    }
    if (strstr(at + 1, key) != NULL) {
        fuzz_fail("payload has \"_j_msgid\": twice");
    }
    p = at + sizeof(key) - 1;
    if (strncmp(p, msgid, n) != 0 || (p[n] != ',' && p[n] != '}')) {
        fuzz_fail("payload _j_msgid is not exactly %s", msgid);
    }
}

static const char *
expected_title(const struct event *ev)
{
    if (ev->alert_title != NULL) {
        return ev->alert_title;
    }
    if (ev->type == EVENT_CANCEL) {
        return ev->media == EVENT_VIDEO ? fuzz_opts.cancel_video_title
                                        : fuzz_opts.cancel_title;
    }
    return ev->media == EVENT_VIDEO ? fuzz_opts.invite_video_title
                                    : fuzz_opts.invite_title;
}

static const char *
string_member(const cJSON *obj, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsString(item)) {
        fuzz_fail("payload member %s is not a string", name);
    }
    return item->valuestring;
}

static void
check_int_member(const cJSON *obj, const char *name, double want)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsNumber(item) || item->valuedouble != want) {
        fuzz_fail("payload member %s is not %.0f", name, want);
    }
}

/*
 * The alert body: the event's own body, else the caller's name, else none.
 * A cut body is a proper prefix of that text plus an ellipsis, or is gone.
 */
static void
check_body(const struct event *ev, const cJSON *alert, int body_cut)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(alert, "body");
    const char *want =
        ev->alert_body != NULL ? ev->alert_body : ev->caller_name;
    const char *got;
    size_t len;

    if (!body_cut) {
        if ((want == NULL) != (item == NULL)) {
            fuzz_fail("alert body present when it should not be, or absent");
        }
        if (want != NULL && strcmp(string_member(alert, "body"), want) != 0) {
            fuzz_fail("alert body differs from the event's");
        }
        return;
    }

    if (want == NULL) {
        fuzz_fail("body_cut set with no body to cut");
    }
    if (item == NULL) {
        return;
    }
    got = string_member(alert, "body");
    len = strlen(got);
    if (len < FUZZ_ELLIPSIS_LEN ||
        memcmp(got + len - FUZZ_ELLIPSIS_LEN, FUZZ_ELLIPSIS,
               FUZZ_ELLIPSIS_LEN) != 0) {
        fuzz_fail("cut alert body does not end with an ellipsis");
    }
    len -= FUZZ_ELLIPSIS_LEN;
    if (len >= strlen(want) || strncmp(got, want, len) != 0) {
        fuzz_fail("cut alert body is not a shorter prefix of the body");
    }
}

static void
check_aps(const struct event *ev, const cJSON *aps, int body_cut)
{
    const cJSON *alert = cJSON_GetObjectItemCaseSensitive(aps, "alert");
    const char *sound = ev->sound != NULL ? ev->sound : fuzz_opts.sound;

    if (!cJSON_IsObject(aps) || !cJSON_IsObject(alert)) {
        fuzz_fail("payload aps or aps.alert is not an object");
    }
    if (strcmp(string_member(alert, "title"), expected_title(ev)) != 0) {
        fuzz_fail("alert title is not the one expected");
    }
    check_body(ev, alert, body_cut);
    check_int_member(aps, "badge", 0);
    check_int_member(aps, "mutable-content", 1);
    if (strcmp(string_member(aps, "sound"), sound) != 0) {
        fuzz_fail("aps sound is not the one expected");
    }
}

/* Names the top-level member number index must have, in the documented
 * order: aps, pushType, _j_msgid, _j_uid when present, call_id, extras. */
static const char *
expected_member(const struct event *ev, size_t index)
{
    static const char *const fixed[] = {"aps", "pushType", "_j_msgid"};
    size_t uid = ev->uid_len > 0;

    if (index < UTIL_ARRAY_LEN(fixed)) {
        return fixed[index];
    }
    index -= UTIL_ARRAY_LEN(fixed);
    if (uid && index == 0) {
        return "_j_uid";
    }
    index -= uid;
    if (index == 0) {
        return "call_id";
    }
    index--;
    return index < ev->nextras ? ev->extras[index].key : NULL;
}

static void
check_extra_member(const struct event_extra *x, const cJSON *item)
{
    if (x->kind == EVENT_EXTRA_STRING) {
        if (!cJSON_IsString(item) || strcmp(item->valuestring, x->value) != 0) {
            fuzz_fail("extras.%s: payload value differs", x->key);
        }
        return;
    }
    if (!cJSON_IsNumber(item) && !cJSON_IsBool(item)) {
        fuzz_fail("extras.%s: payload value is not a number or boolean",
                  x->key);
    }
}

static void
check_members(const struct event *ev, const cJSON *root)
{
    const cJSON *item;
    size_t index = 0, first_extra = ev->uid_len > 0 ? 5 : 4;

    for (item = root->child; item != NULL; item = item->next, index++) {
        const char *want = expected_member(ev, index);

        if (want == NULL || strcmp(item->string, want) != 0) {
            fuzz_fail("payload member %zu is \"%s\", not \"%s\"", index,
                      item->string, want != NULL ? want : "(none)");
        }
        if (index >= first_extra) {
            check_extra_member(&ev->extras[index - first_extra], item);
        }
    }
    if (expected_member(ev, index) != NULL) {
        fuzz_fail("payload stops after %zu members", index);
    }
}

static void
check_uid(const struct event *ev, const cJSON *root, const char *payload)
{
    char key[16 + EVENT_UID_MAX];

    if (ev->uid_len == 0) {
        return;
    }
    if (ev->uid_is_string) {
        if (strcmp(string_member(root, "_j_uid"), ev->uid) != 0) {
            fuzz_fail("payload _j_uid string differs");
        }
        return;
    }

    /* A numeric uid must keep its digits: no trip through a double. */
    snprintf(key, sizeof(key), "\"_j_uid\":%s,", ev->uid);
    if (strstr(payload, key) == NULL) {
        fuzz_fail("payload _j_uid is not exactly %s", ev->uid);
    }
}

/* Everything an accepted payload must be. */
static void
check_payload(const struct event *ev, const char *p, size_t len, size_t limit,
              int body_cut)
{
    const char *end = NULL;
    cJSON *root;
    size_t i;

    if (len > limit) {
        fuzz_fail("payload of %zu bytes over the %zu-byte limit", len, limit);
    }
    if (strlen(p) != len || util_utf8_valid_prefix(p, len) != len) {
        fuzz_fail("payload holds a NUL or is not valid UTF-8");
    }

    /* The payload is written without white space, so any control byte
     * is one left unescaped inside a string, which JSON forbids (and which
     * cJSON would quietly accept). */
    for (i = 0; i < len; i++) {
        if ((unsigned char)p[i] < 0x20) {
            fuzz_fail("payload byte %zu is control byte 0x%02x", i,
                      (unsigned char)p[i]);
        }
    }

    root = cJSON_ParseWithLengthOpts(p, len, &end, 0);
    if (!cJSON_IsObject(root) || end != p + len) {
        fuzz_fail("payload is not one JSON object");
    }
    check_members(ev, root);
    check_aps(ev, cJSON_GetObjectItemCaseSensitive(root, "aps"), body_cut);
    check_int_member(root, "pushType", ev->type == EVENT_CANCEL ? 2 : 1);
    check_msgid_text(p, ev->msgid);
    check_uid(ev, root, p);
    if (strcmp(string_member(root, "call_id"), ev->call_id) != 0) {
        fuzz_fail("payload call_id differs");
    }
    cJSON_Delete(root);

    /* A cut that keeps the body keeps as much of it as fits. */
    if (body_cut && strstr(p, "\"body\":") != NULL &&
        len + FUZZ_CHAR_COST_MAX <= limit) {
        fuzz_fail("cut payload of %zu bytes wastes room under %zu", len, limit);
    }
}

static void
build_one(struct buf *b, const struct event *ev, size_t limit,
          struct built *out)
{
    char err[PAYLOAD_ERR_MAX];
    size_t max = b->max;

    memset(err, 0xff, sizeof(err));
    memset(out, 0, sizeof(*out));
    out->rc = payload_build(b, ev, &fuzz_opts, limit, &out->body_cut, err);
    if (b->max != max) {
        fuzz_fail("payload_build left the buffer cap changed");
    }

    if (out->rc < 0) {
        check_reason("payload", err, PAYLOAD_ERR_MAX);
        if (b->len != 0 || out->body_cut) {
            fuzz_fail("failed build left output behind: %s", err);
        }
        return;
    }
    if (out->rc != 0) {
        fuzz_fail("payload_build returned %d", out->rc);
    }
    check_payload(ev, b->data, b->len, limit, out->body_cut);
    out->len = b->len;
    out->text = xstrndup(b->data, b->len);
}

/*
 * The two limits must agree: a payload that fits the smaller one fits the
 * larger, and a payload built for the larger one without a cut is reused
 * as it is whenever it fits the smaller one too.
 */
static void
check_limits_agree(const struct built *alert, const struct built *voip)
{
    if (alert->rc == 0 && voip->rc != 0) {
        fuzz_fail("payload fits %d bytes but not %d", PAYLOAD_ALERT_MAX,
                  PAYLOAD_VOIP_MAX);
    }
    if (voip->rc != 0 || voip->body_cut) {
        return;
    }
    if (voip->len <= PAYLOAD_ALERT_MAX) {
        if (alert->rc != 0 || alert->body_cut || alert->len != voip->len ||
            memcmp(alert->text, voip->text, voip->len) != 0) {
            fuzz_fail("payload of %zu bytes built differently under the "
                      "smaller limit",
                      voip->len);
        }
    } else if (alert->rc == 0 && !alert->body_cut) {
        fuzz_fail("payload of %zu bytes fit %d bytes without a cut", voip->len,
                  PAYLOAD_ALERT_MAX);
    }
}

/* A lowercase version 8 UUID, the same for any case of the token. */
static void
check_apns_ids(const struct event *ev)
{
    char ids[EVENT_MAX_TOKENS][PAYLOAD_APNS_ID_LEN + 1];
    char lower[EVENT_TOKEN_MAX_HEX + 1], again[PAYLOAD_APNS_ID_LEN + 1];
    size_t i, k;

    for (i = 0; i < ev->ntokens; i++) {
        char *id = ids[i];

        payload_apns_id(id, ev->msgid, ev->tokens[i]);
        if (strlen(id) != PAYLOAD_APNS_ID_LEN) {
            fuzz_fail("apns-id \"%s\" is not %d characters", id,
                      PAYLOAD_APNS_ID_LEN);
        }
        for (k = 0; k < PAYLOAD_APNS_ID_LEN; k++) {
            int dash = k == 8 || k == 13 || k == 18 || k == 23;

            if (dash ? id[k] != '-' : !is_lower_hex(id[k])) {
                fuzz_fail("apns-id \"%s\" is not a lowercase UUID", id);
            }
        }
        if (id[14] != '8' || strchr("89ab", id[19]) == NULL) {
            fuzz_fail("apns-id \"%s\" is not version 8, variant 10", id);
        }

        for (k = 0; ev->tokens[i][k] != '\0'; k++) {
            lower[k] = (char)(ev->tokens[i][k] | 0x20);
        }
        lower[k] = '\0';
        payload_apns_id(again, ev->msgid, lower);
        if (strcmp(again, id) != 0) {
            fuzz_fail("apns-id depends on the case of the token");
        }
        for (k = 0; k < i; k++) {
            if (strcmp(ids[k], id) == 0) {
                fuzz_fail("two devices share apns-id %s", id);
            }
        }
    }
}

static void
check_expiration(const struct event *ev)
{
    int64_t created_s = ev->created_at_ms / 1000;
    int64_t exp = payload_expiration(ev, &fuzz_opts);
    int64_t most = ev->type == EVENT_CANCEL ? fuzz_opts.cancel_expiration_s
                                            : EVENT_RING_TIMEOUT_MAX;

    if (exp < created_s || exp > created_s + most) {
        fuzz_fail("apns-expiration %" PRId64 " for created_at %" PRId64, exp,
                  ev->created_at_ms);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[EVENT_ERR_MAX];
    struct built alert, voip;
    struct event ev;
    struct buf b;

    memset(err, 0xff, sizeof(err));
    if (event_decode(&ev, (const char *)data, size, err) < 0) {
        check_rejected(&ev, err);
        event_release(&ev);
        return 0;
    }
    check_event(&ev);
    check_apns_ids(&ev);
    check_expiration(&ev);

    /* One buffer for both builds, sized as the worker sizes its own, so
     * that reuse after a larger payload is exercised too. */
    buf_init(&b, PAYLOAD_VOIP_MAX + 64);
    build_one(&b, &ev, PAYLOAD_VOIP_MAX, &voip);
    build_one(&b, &ev, PAYLOAD_ALERT_MAX, &alert);
    check_limits_agree(&alert, &voip);

    free(alert.text);
    free(voip.text);
    buf_release(&b);
    event_release(&ev);
    return 0;
}
