/* The APNs body built from a call event, its size cap and its headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "payload.h"
#include "util.h"

#define TOKEN "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"
#define CREATED_AT_MS 1700000000123LL
#define ELLIPSIS "\xe2\x80\xa6"

/* The texts the configuration gives in the call flow of the reference
 * capture: "incoming call invitation", "voice call cancelled". */
static const struct payload_opts opts = {
    .invite_title = "来电邀请",
    .invite_video_title = "视频来电邀请",
    .cancel_title = "语音通话取消",
    .cancel_video_title = "视频通话取消",
    .sound = "laidian.caf",
    .ring_timeout_s = 30,
    .cancel_expiration_s = 60,
};

#define EXTRA(k, v, kind)                                                      \
    {                                                                          \
        (char *)(k), (char *)(v), sizeof(v) - 1, kind                          \
    }

static struct event_extra flow_extras[] = {
    EXTRA("_j_business", "1", EVENT_EXTRA_RAW),
    EXTRA("_j_data_", "{\"data_msgtype\":1,\"push_type\":4,\"is_vip\":1}",
          EVENT_EXTRA_STRING),
    EXTRA("extra_key", "extra_value", EVENT_EXTRA_STRING),
};

static const char invite_json[] =
    "{\"aps\":{\"alert\":{\"title\":\"来电邀请\"},\"badge\":0,"
    "\"mutable-content\":1,\"sound\":\"laidian.caf\"},\"pushType\":1,"
    "\"_j_msgid\":18101194842707757,\"_j_uid\":75039914131,"
    "\"call_id\":\"call-7f3a9c\",\"_j_business\":1,"
    "\"_j_data_\":\"{\\\"data_msgtype\\\":1,\\\"push_type\\\":4,"
    "\\\"is_vip\\\":1}\",\"extra_key\":\"extra_value\"}";

static const char cancel_json[] =
    "{\"aps\":{\"alert\":{\"title\":\"语音通话取消\"},\"badge\":0,"
    "\"mutable-content\":1,\"sound\":\"laidian.caf\"},\"pushType\":2,"
    "\"_j_msgid\":18101194848382700,\"_j_uid\":75039914131,"
    "\"call_id\":\"call-7f3a9c\",\"_j_business\":1,"
    "\"_j_data_\":\"{\\\"data_msgtype\\\":1,\\\"push_type\\\":4,"
    "\\\"is_vip\\\":1}\",\"extra_key\":\"extra_value\"}";

/* The invite as captured from the push SDK the app was built against,
 * key order as in the capture (JSON objects have none). */
static const char invite_capture[] =
    "{\"_j_business\":1,"
    "\"_j_data_\":\"{\\\"data_msgtype\\\":1,\\\"push_type\\\":4,"
    "\\\"is_vip\\\":1}\","
    "\"_j_msgid\":18101194842707757,\"_j_uid\":75039914131,"
    "\"aps\":{\"alert\":{\"title\":\"来电邀请\"},\"badge\":0,"
    "\"mutable-content\":1,\"sound\":\"laidian.caf\"},"
    "\"extra_key\":\"extra_value\",\"pushType\":1}";

static void
flow_event(struct event *ev, enum event_type type)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->call_id = "call-7f3a9c";
    if (type == EVENT_INVITE) {
        strcpy(ev->msgid, "18101194842707757");
        ev->msgid_num = 18101194842707757ULL;
    } else {
        strcpy(ev->msgid, "18101194848382700");
        ev->msgid_num = 18101194848382700ULL;
    }
    ev->uid = "75039914131";
    ev->uid_len = strlen(ev->uid);
    ev->tokens[0] = TOKEN;
    ev->ntokens = 1;
    ev->created_at_ms = CREATED_AT_MS;
    ev->media = EVENT_AUDIO;
    ev->extras = flow_extras;
    ev->nextras = UTIL_ARRAY_LEN(flow_extras);
}

/* Builds ev under limit and expects success; the caller releases b. */
static void
build_ok(struct buf *b, const struct event *ev, size_t limit, int *cut)
{
    char err[PAYLOAD_ERR_MAX] = "";
    int rc;

    buf_init(b, 1 << 20);
    rc = payload_build(b, ev, &opts, limit, cut, err);
    if (rc != 0) {
        fail_msg("payload_build: %s", err);
    }
    assert_int_equal(strlen(b->data), b->len);
}

static void
assert_built(const struct event *ev, const char *want)
{
    struct buf b;
    int cut = -1;

    build_ok(&b, ev, PAYLOAD_ALERT_MAX, &cut);
    assert_string_equal(b.data, want);
    assert_int_equal(cut, 0);
    buf_release(&b);
}

static char *
read_file(const char *path)
{
    char *data = NULL;
    long len;
    FILE *fp = fopen(path, "rb");

    if (fp == NULL) {
        fail_msg("cannot open %s (run from the repository root)", path);
    }
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    data = calloc(1, (size_t)len + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);

    /* The files end in one newline, as text files do. */
    if (len > 0 && data[len - 1] == '\n') {
        data[len - 1] = '\0';
    }
    return data;
}

static int
utf8_valid(const char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t n, k;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
        } else {
            return 0;
        }
        if (i + n > len) {
            return 0;
        }
        for (k = 1; k < n; k++) {
            if (((unsigned char)s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
        }
        i += n;
    }
    return 1;
}

static void
test_invite_is_the_call_flow_capture_plus_call_id(void **state)
{
    cJSON *ours, *capture, *item;
    struct event ev;
    char *example;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    assert_built(&ev, invite_json);

    /* Field for field the capture, and call_id beside it. */
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    ours = cJSON_Parse(b.data);
    capture = cJSON_Parse(invite_capture);
    assert_non_null(ours);
    assert_non_null(capture);
    cJSON_ArrayForEach(item, capture)
    {
        cJSON *mine = cJSON_GetObjectItemCaseSensitive(ours, item->string);

        if (mine == NULL || !cJSON_Compare(item, mine, 1)) {
            fail_msg("field %s differs from the capture", item->string);
        }
    }
    assert_int_equal(cJSON_GetArraySize(ours), cJSON_GetArraySize(capture) + 1);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(ours, "call_id")->valuestring,
        "call-7f3a9c");
    cJSON_Delete(ours);
    cJSON_Delete(capture);

    /* The published example is exactly what the builder writes. */
    example = read_file("schemas/examples/payload/invite-call-flow.json");
    assert_string_equal(b.data, example);
    free(example);
    buf_release(&b);
}

static void
test_cancel_is_the_call_flow_capture_plus_call_id(void **state)
{
    struct event ev;
    char *example;

    flow_event(&ev, EVENT_CANCEL);
    assert_built(&ev, cancel_json);

    example = read_file("schemas/examples/payload/cancel-call-flow.json");
    assert_string_equal(cancel_json, example);
    free(example);
}

/* The alert object of a build of ev, as text. */
static void
assert_alert(const struct event *ev, const char *want_alert)
{
    const char *start, *end;
    struct buf b;
    int cut;

    build_ok(&b, ev, PAYLOAD_ALERT_MAX, &cut);
    start = strstr(b.data, "\"alert\":");
    assert_non_null(start);
    end = strchr(start, '}');
    assert_non_null(end);
    if ((size_t)(end + 1 - start) != strlen(want_alert) ||
        memcmp(start, want_alert, strlen(want_alert)) != 0) {
        fail_msg("alert is %.*s, expected %s", (int)(end + 1 - start), start,
                 want_alert);
    }
    buf_release(&b);
}

static void
test_title_by_type_and_media(void **state)
{
    struct event ev;

    flow_event(&ev, EVENT_INVITE);
    assert_alert(&ev, "\"alert\":{\"title\":\"来电邀请\"}");
    ev.media = EVENT_VIDEO;
    assert_alert(&ev, "\"alert\":{\"title\":\"视频来电邀请\"}");

    flow_event(&ev, EVENT_CANCEL);
    assert_alert(&ev, "\"alert\":{\"title\":\"语音通话取消\"}");
    ev.media = EVENT_VIDEO;
    assert_alert(&ev, "\"alert\":{\"title\":\"视频通话取消\"}");

    /* The event's own title wins over every default. */
    ev.alert_title = "Missed call";
    assert_alert(&ev, "\"alert\":{\"title\":\"Missed call\"}");
    flow_event(&ev, EVENT_INVITE);
    ev.alert_title = "Call";
    assert_alert(&ev, "\"alert\":{\"title\":\"Call\"}");
}

static void
test_body_is_alert_body_else_caller_name(void **state)
{
    struct event ev;

    flow_event(&ev, EVENT_INVITE);
    ev.caller_name = "Li Lei";
    assert_alert(&ev, "\"alert\":{\"title\":\"来电邀请\","
                      "\"body\":\"Li Lei\"}");

    ev.alert_body = "Li Lei is calling";
    assert_alert(&ev, "\"alert\":{\"title\":\"来电邀请\","
                      "\"body\":\"Li Lei is calling\"}");

    /* An empty body given on purpose is kept as given. */
    ev.alert_body = "";
    assert_alert(&ev, "\"alert\":{\"title\":\"来电邀请\",\"body\":\"\"}");

    ev.alert_body = NULL;
    ev.caller_name = NULL;
    assert_alert(&ev, "\"alert\":{\"title\":\"来电邀请\"}");
}

static void
test_sound_from_event_else_configuration(void **state)
{
    struct event ev;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_CANCEL);
    ev.sound = "hangup.caf";
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_non_null(strstr(b.data, "\"mutable-content\":1,"
                                   "\"sound\":\"hangup.caf\"},"));
    assert_null(strstr(b.data, "laidian"));
    buf_release(&b);
}

static void
test_uid_as_integer_string_or_absent(void **state)
{
    struct event ev;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.uid = "18446744073709551615";
    ev.uid_len = strlen(ev.uid);
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_non_null(strstr(b.data, ",\"_j_msgid\":18101194842707757,"
                                   "\"_j_uid\":18446744073709551615,"
                                   "\"call_id\":"));
    buf_release(&b);

    ev.uid = "u-75039914131\"x";
    ev.uid_len = strlen(ev.uid);
    ev.uid_is_string = 1;
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_non_null(strstr(b.data, ",\"_j_uid\":\"u-75039914131\\\"x\","));
    buf_release(&b);

    ev.uid = NULL;
    ev.uid_len = 0;
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_null(strstr(b.data, "_j_uid"));
    assert_non_null(strstr(b.data, "18101194842707757,\"call_id\":"));
    buf_release(&b);
}

static void
test_extras_keep_order_and_raw_numbers(void **state)
{
    struct event_extra extras[] = {
        EXTRA("z_last_alphabetically", "first", EVENT_EXTRA_STRING),
        EXTRA("big", "18101194842707757123", EVENT_EXTRA_RAW),
        EXTRA("neg", "-1.5e3", EVENT_EXTRA_RAW),
        EXTRA("yes", "true", EVENT_EXTRA_RAW),
        EXTRA("no", "false", EVENT_EXTRA_RAW),
        EXTRA("a_first_alphabetically", "42", EVENT_EXTRA_STRING),
    };
    struct event ev;

    flow_event(&ev, EVENT_INVITE);
    ev.extras = extras;
    ev.nextras = UTIL_ARRAY_LEN(extras);
    assert_built(&ev, "{\"aps\":{\"alert\":{\"title\":\"来电邀请\"},"
                      "\"badge\":0,\"mutable-content\":1,"
                      "\"sound\":\"laidian.caf\"},\"pushType\":1,"
                      "\"_j_msgid\":18101194842707757,"
                      "\"_j_uid\":75039914131,\"call_id\":\"call-7f3a9c\","
                      "\"z_last_alphabetically\":\"first\","
                      "\"big\":18101194842707757123,\"neg\":-1.5e3,"
                      "\"yes\":true,\"no\":false,"
                      "\"a_first_alphabetically\":\"42\"}");

    ev.nextras = 0;
    ev.uid_len = 0;
    assert_built(&ev, "{\"aps\":{\"alert\":{\"title\":\"来电邀请\"},"
                      "\"badge\":0,\"mutable-content\":1,"
                      "\"sound\":\"laidian.caf\"},\"pushType\":1,"
                      "\"_j_msgid\":18101194842707757,"
                      "\"call_id\":\"call-7f3a9c\"}");
}

static void
test_strings_are_escaped(void **state)
{
    struct event_extra extras[] = {
        EXTRA("k\"ey", "tab\there\x01\\", EVENT_EXTRA_STRING),
    };
    struct event ev;
    cJSON *doc;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.alert_title = "\"Quoted\"";
    ev.alert_body = "line\nbreak\r\x1f";
    ev.call_id = "id\\1";
    ev.extras = extras;
    ev.nextras = 1;
    assert_built(&ev, "{\"aps\":{\"alert\":{\"title\":\"\\\"Quoted\\\"\","
                      "\"body\":\"line\\nbreak\\r\\u001f\"},\"badge\":0,"
                      "\"mutable-content\":1,\"sound\":\"laidian.caf\"},"
                      "\"pushType\":1,\"_j_msgid\":18101194842707757,"
                      "\"_j_uid\":75039914131,\"call_id\":\"id\\\\1\","
                      "\"k\\\"ey\":\"tab\\there\\u0001\\\\\"}");

    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    doc = cJSON_Parse(b.data);
    assert_non_null(doc);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(doc, "k\"ey")->valuestring,
        "tab\there\x01\\");
    cJSON_Delete(doc);
    buf_release(&b);
}

static void
test_payload_exactly_at_the_limit_is_not_cut(void **state)
{
    struct event ev;
    struct buf b;
    size_t full;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.alert_body = "Li Lei is calling";
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    full = b.len;
    buf_release(&b);

    build_ok(&b, &ev, full, &cut);
    assert_int_equal(cut, 0);
    assert_int_equal(b.len, full);
    buf_release(&b);

    build_ok(&b, &ev, full - 1, &cut);
    assert_int_equal(cut, 1);
    assert_true(b.len <= full - 1);
    buf_release(&b);
}

/*
 * Checks a shortened build: within limit and at most one character's
 * escaped cost under it, valid UTF-8 and JSON, and a body that is a prefix
 * of the original cut at a character boundary, followed by the ellipsis.
 */
static void
assert_cut_well(const struct buf *b, const char *orig, size_t limit,
                size_t max_char_cost)
{
    const char *body;
    size_t blen, keep;
    cJSON *doc, *alert;

    assert_true(b->len <= limit);
    if (b->len + max_char_cost <= limit) {
        fail_msg("%zu bytes under a %zu limit: cut too much", b->len, limit);
    }
    assert_true(utf8_valid(b->data, b->len));

    doc = cJSON_Parse(b->data);
    assert_non_null(doc);
    alert = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(doc, "aps"), "alert");
    body = cJSON_GetObjectItemCaseSensitive(alert, "body")->valuestring;
    blen = strlen(body);
    assert_true(blen >= 3);
    assert_memory_equal(body + blen - 3, ELLIPSIS, 3);
    keep = blen - 3;
    assert_true(keep < strlen(orig));
    assert_memory_equal(body, orig, keep);
    assert_true(((unsigned char)orig[keep] & 0xc0) != 0x80);
    cJSON_Delete(doc);
}

static char *
repeat(const char *unit, size_t times)
{
    size_t ulen = strlen(unit), i;
    char *s = malloc(ulen * times + 1);

    assert_non_null(s);
    for (i = 0; i < times; i++) {
        memcpy(s + i * ulen, unit, ulen);
    }
    s[ulen * times] = '\0';
    return s;
}

static void
test_long_chinese_body_is_cut_at_a_character(void **state)
{
    static const char *call_ids[] = {"c", "cc", "ccc"};
    char *body = repeat("来电", 1000); /* 6000 bytes */
    struct event ev;
    size_t i;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.alert_body = body;
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_int_equal(cut, 1);
    assert_cut_well(&b, body, PAYLOAD_ALERT_MAX, 3);
    buf_release(&b);

    /* Each byte added to the rest of the payload moves the cut point
     * through another position inside a character. */
    for (i = 0; i < UTIL_ARRAY_LEN(call_ids); i++) {
        ev.call_id = (char *)call_ids[i];
        build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
        assert_cut_well(&b, body, PAYLOAD_ALERT_MAX, 3);
        buf_release(&b);
    }
    free(body);
}

static void
test_escape_heavy_body_still_fits(void **state)
{
    char *quotes = repeat("\"", 3000);
    char *controls = repeat("\x01", 1000);
    struct event ev;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.alert_body = quotes;
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_int_equal(cut, 1);
    assert_cut_well(&b, quotes, PAYLOAD_ALERT_MAX, 2);
    buf_release(&b);

    ev.alert_body = controls;
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_int_equal(cut, 1);
    assert_cut_well(&b, controls, PAYLOAD_ALERT_MAX, 6);
    buf_release(&b);

    free(quotes);
    free(controls);
}

static void
test_mixed_bodies_at_every_overflow(void **state)
{
    static const char *units[] = {
        "a", "\"", "\\", "\n", "\x02", "é", "来", "😀", "\x7f", "/",
    };
    struct event_extra pad = EXTRA("pad", "", EVENT_EXTRA_STRING);
    char body[3000], padding[200];
    uint32_t seed = 12345;
    size_t i, len = 0;
    struct event ev;

    /* A deterministic mix of one- to six-byte escaped costs. */
    while (len < sizeof(body) - 8) {
        const char *u;

        seed = seed * 1103515245u + 12345u;
        u = units[(seed >> 16) % UTIL_ARRAY_LEN(units)];
        memcpy(body + len, u, strlen(u));
        len += strlen(u);
    }
    body[len] = '\0';
    memset(padding, 'p', sizeof(padding));

    flow_event(&ev, EVENT_INVITE);
    ev.alert_body = body;
    ev.extras = &pad;
    ev.nextras = 1;
    pad.value = padding;
    for (i = 0; i < sizeof(padding); i++) {
        struct buf b;
        int cut;

        pad.value_len = i;
        build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
        assert_int_equal(cut, 1);
        assert_cut_well(&b, body, PAYLOAD_ALERT_MAX, 6);
        buf_release(&b);
    }
}

static void
test_body_dropped_when_not_even_the_ellipsis_fits(void **state)
{
    struct event_extra pad = EXTRA("pad", "", EVENT_EXTRA_STRING);
    char padding[PAYLOAD_ALERT_MAX];
    struct event ev;
    struct buf b;
    size_t base;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.alert_body = "ab";
    ev.extras = &pad;
    ev.nextras = 1;
    pad.value = padding;
    memset(padding, 'p', sizeof(padding));
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    base = b.len;
    buf_release(&b);

    /* Two bytes over: "…" (3 bytes) cannot replace "ab" (2), but
     * ,"body":"ab" (12) can go. */
    pad.value_len = PAYLOAD_ALERT_MAX - base + 2;
    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_int_equal(cut, 1);
    assert_null(strstr(b.data, "\"body\""));
    assert_int_equal(b.len, PAYLOAD_ALERT_MAX + 2 - 12);
    buf_release(&b);
}

static void
test_extras_too_large_are_refused_with_the_size(void **state)
{
    struct event_extra pad = EXTRA("pad", "", EVENT_EXTRA_STRING);
    char padding[5000], want[PAYLOAD_ERR_MAX], err[PAYLOAD_ERR_MAX];
    struct event ev;
    struct buf b;
    size_t real;
    int cut = -1;

    /* Escapes make the real size larger than the input; the message must
     * give the size the payload would really have. */
    memset(padding, '\n', sizeof(padding));
    flow_event(&ev, EVENT_INVITE);
    ev.extras = &pad;
    ev.nextras = 1;
    pad.value = padding;
    pad.value_len = sizeof(padding);

    /* 5000 newlines become 10000 bytes, in 190 bytes of the rest. */
    build_ok(&b, &ev, 1 << 20, &cut);
    real = b.len;
    assert_int_equal(real, 10000 + 190);
    buf_release(&b);
    snprintf(want, sizeof(want),
             "payload of %zu bytes exceeds the 4096-byte limit without the "
             "alert body",
             real);

    ev.alert_body = "Li Lei is calling";
    buf_init(&b, 1 << 20);
    assert_int_equal(
        payload_build(&b, &ev, &opts, PAYLOAD_ALERT_MAX, &cut, err), -1);
    assert_string_equal(err, want);
    assert_int_equal(b.len, 0);
    assert_int_equal(cut, 0);

    /* The caller's buffer never held more than the limit, and keeps its
     * own cap afterwards. */
    assert_true(b.alloc <= 2 * PAYLOAD_ALERT_MAX);
    assert_int_equal(b.max, 1 << 20);
    buf_release(&b);
}

static void
test_voip_limit_is_honoured(void **state)
{
    char *body = repeat("x", 4500);
    struct event ev;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    ev.alert_body = body;
    build_ok(&b, &ev, PAYLOAD_VOIP_MAX, &cut);
    assert_int_equal(cut, 0);
    assert_true(b.len > PAYLOAD_ALERT_MAX);
    buf_release(&b);

    build_ok(&b, &ev, PAYLOAD_ALERT_MAX, &cut);
    assert_int_equal(cut, 1);
    assert_int_equal(b.len, PAYLOAD_ALERT_MAX);
    buf_release(&b);

    body[4400] = '\0';
    ev.alert_body = repeat(body, 2);
    build_ok(&b, &ev, PAYLOAD_VOIP_MAX, &cut);
    assert_int_equal(cut, 1);
    assert_int_equal(b.len, PAYLOAD_VOIP_MAX);
    buf_release(&b);
    free((char *)ev.alert_body);
    free(body);
}

static void
test_output_buffer_below_the_limit_is_an_error(void **state)
{
    char err[PAYLOAD_ERR_MAX];
    struct event ev;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    buf_init(&b, 100);
    assert_int_equal(
        payload_build(&b, &ev, &opts, PAYLOAD_ALERT_MAX, &cut, err), -1);
    assert_non_null(strstr(err, "does not fit the 100-byte output buffer"));
    buf_release(&b);
}

static void
test_msgid_that_is_not_digits_is_refused(void **state)
{
    char err[PAYLOAD_ERR_MAX];
    struct event ev;
    struct buf b;
    int cut;

    flow_event(&ev, EVENT_INVITE);
    strcpy(ev.msgid, "1,\"x\":2");
    buf_init(&b, 8192);
    assert_int_equal(
        payload_build(&b, &ev, &opts, PAYLOAD_ALERT_MAX, &cut, err), -1);
    assert_string_equal(err, "_j_msgid: not decimal digits");

    ev.msgid[0] = '\0';
    assert_int_equal(
        payload_build(&b, &ev, &opts, PAYLOAD_ALERT_MAX, &cut, err), -1);
    buf_release(&b);
}

static void
assert_uuid_v8(const char *id)
{
    size_t i;

    assert_int_equal(strlen(id), PAYLOAD_APNS_ID_LEN);
    for (i = 0; i < PAYLOAD_APNS_ID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(id[i], '-');
        } else if (!((id[i] >= '0' && id[i] <= '9') ||
                     (id[i] >= 'a' && id[i] <= 'f'))) {
            fail_msg("%s: not lowercase hex at %zu", id, i);
        }
    }
    assert_int_equal(id[14], '8');
    assert_non_null(strchr("89ab", id[19]));
}

static void
test_apns_id_is_a_stable_v8_uuid(void **state)
{
    char a[PAYLOAD_APNS_ID_LEN + 1], b[PAYLOAD_APNS_ID_LEN + 1];
    char lower[] = TOKEN;
    size_t i;

    payload_apns_id(a, "18101194842707757", TOKEN);
    assert_uuid_v8(a);

    /* SHA-256("18101194842707757\n" + lowercase token), computed apart. */
    assert_string_equal(a, "699e8dfc-0655-8168-b733-4483b3294b44");

    payload_apns_id(b, "18101194842707757", TOKEN);
    assert_string_equal(a, b);

    for (i = 0; lower[i] != '\0'; i++) {
        if (lower[i] >= 'A' && lower[i] <= 'F') {
            lower[i] = (char)(lower[i] - 'A' + 'a');
        }
    }
    payload_apns_id(b, "18101194842707757", lower);
    assert_string_equal(a, b);

    payload_apns_id(b, "18101194848382700", TOKEN);
    assert_uuid_v8(b);
    assert_string_not_equal(a, b);

    lower[63] = lower[63] == '9' ? '8' : '9';
    payload_apns_id(b, "18101194842707757", lower);
    assert_uuid_v8(b);
    assert_string_not_equal(a, b);
}

static void
test_expiration_and_ring_end(void **state)
{
    struct event ev;

    /* Invite: the end of the ring window, the default one... */
    flow_event(&ev, EVENT_INVITE);
    assert_int_equal(payload_expiration(&ev, &opts), 1700000030);
    assert_int_equal(payload_ring_end_ms(&ev, &opts), 1700000030123LL);

    /* ...or the event's own. */
    ev.ring_timeout_s = 45;
    assert_int_equal(payload_expiration(&ev, &opts), 1700000045);
    assert_int_equal(payload_ring_end_ms(&ev, &opts), 1700000045123LL);

    /* Cancel: created_at plus the configured cancel expiration, whatever
     * the ring timeout. */
    flow_event(&ev, EVENT_CANCEL);
    ev.ring_timeout_s = 45;
    assert_int_equal(payload_expiration(&ev, &opts), 1700000060);
    assert_int_equal(payload_ring_end_ms(&ev, &opts), 1700000060123LL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invite_is_the_call_flow_capture_plus_call_id),
        cmocka_unit_test(test_cancel_is_the_call_flow_capture_plus_call_id),
        cmocka_unit_test(test_title_by_type_and_media),
        cmocka_unit_test(test_body_is_alert_body_else_caller_name),
        cmocka_unit_test(test_sound_from_event_else_configuration),
        cmocka_unit_test(test_uid_as_integer_string_or_absent),
        cmocka_unit_test(test_extras_keep_order_and_raw_numbers),
        cmocka_unit_test(test_strings_are_escaped),
        cmocka_unit_test(test_payload_exactly_at_the_limit_is_not_cut),
        cmocka_unit_test(test_long_chinese_body_is_cut_at_a_character),
        cmocka_unit_test(test_escape_heavy_body_still_fits),
        cmocka_unit_test(test_mixed_bodies_at_every_overflow),
        cmocka_unit_test(test_body_dropped_when_not_even_the_ellipsis_fits),
        cmocka_unit_test(test_extras_too_large_are_refused_with_the_size),
        cmocka_unit_test(test_voip_limit_is_honoured),
        cmocka_unit_test(test_output_buffer_below_the_limit_is_an_error),
        cmocka_unit_test(test_msgid_that_is_not_digits_is_refused),
        cmocka_unit_test(test_apns_id_is_a_stable_v8_uuid),
        cmocka_unit_test(test_expiration_and_ring_end),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
