/*
 * Decoding call events: every rule of the contract, the exactness of big
 * integers, and the inputs that must never crash or leak.
 *
 * Run one test by name: test_event test_msgid_2_63_rejected
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "util.h"

#define TOKEN_A                                                                \
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define TOKEN_B                                                                \
    "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define TOKEN_B_UPPER                                                          \
    "FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100"

/* The required members, one macro each, so that a test can leave one out
 * or replace it. */
#define F_INVITE "\"type\":\"invite\""
#define F_CANCEL "\"type\":\"cancel\""
#define F_CALL "\"call_id\":\"call-7f3a9c\""
#define F_MSGID "\"_j_msgid\":42"
#define F_TOKENS "\"device_tokens\":[\"" TOKEN_A "\"]"
#define F_CREATED "\"created_at\":1764860000000"

#define NO_TYPE F_CALL "," F_MSGID "," F_TOKENS "," F_CREATED
#define NO_CALL F_INVITE "," F_MSGID "," F_TOKENS "," F_CREATED
#define NO_MSGID F_INVITE "," F_CALL "," F_TOKENS "," F_CREATED
#define NO_TOKENS F_INVITE "," F_CALL "," F_MSGID "," F_CREATED
#define NO_CREATED F_INVITE "," F_CALL "," F_MSGID "," F_TOKENS

/* A valid invite and cancel, to which a test appends members. */
#define INVITE F_INVITE "," NO_TYPE
#define CANCEL F_CANCEL "," NO_TYPE

/* Formats into a new string; the caller frees it. */
static char *jsonf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
jsonf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Formats into a buffer that lives until the next call. */
static const char *jsonf_static(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static const char *
jsonf_static(const char *fmt, ...)
{
    static char out[EVENT_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(out, sizeof(out), fmt, ap);
    va_end(ap);
    return out;
}

/* n copies of c, NUL-terminated; the caller frees it. */
static char *
repeat(char c, size_t n)
{
    char *s = xmalloc(n + 1);

    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void
decode_ok_len(struct event *ev, const char *data, size_t len)
{
    char err[EVENT_ERR_MAX];

    if (event_decode(ev, data, len, err) != 0) {
        fail_msg("rejected (%s): %.200s", err, data);
    }
}

static void
decode_ok(struct event *ev, const char *json)
{
    decode_ok_len(ev, json, strlen(json));
}

static void
assert_rejected_len(const char *data, size_t len, const char *want)
{
    char err[EVENT_ERR_MAX];
    struct event ev;

    if (event_decode(&ev, data, len, err) == 0) {
        event_release(&ev);
        fail_msg("accepted, wanted \"%s\": %.200s", want, data);
    }
    assert_string_equal(err, want);
    assert_true(strlen(err) < EVENT_ERR_MAX);

    /* A failed decode leaves nothing behind. */
    assert_null(ev.call_id);
    assert_int_equal(ev.ntokens, 0);
    assert_null(ev.extras);
    event_release(&ev);
}

static void
assert_rejected(const char *json, const char *want)
{
    assert_rejected_len(json, strlen(json), want);
}

/* Frees a string made by jsonf() or repeat() after checking it. */
static void
assert_rejected_free(char *json, const char *want)
{
    assert_rejected(json, want);
    free(json);
}

static void
assert_accepted_free(char *json)
{
    struct event ev;

    decode_ok(&ev, json);
    event_release(&ev);
    free(json);
}

/* --- The message as a whole ------------------------------------------- */

static void
test_empty_input_rejected(void **state)
{
    assert_rejected_len("", 0, "empty message");
    assert_rejected(" \r\n\t", "empty message");
}

static void
test_message_over_65536_bytes_rejected_before_parsing(void **state)
{
    char *big = repeat('\xff', EVENT_MAX_BYTES + 1);

    /* Bytes that are neither UTF-8 nor JSON: the size alone decides. */
    assert_rejected_len(big, EVENT_MAX_BYTES + 1,
                        "message larger than 65536 bytes");
    free(big);
}

static void
test_message_of_exactly_65536_bytes_accepted(void **state)
{
    const char *body = "{" INVITE "}";
    char *doc = repeat(' ', EVENT_MAX_BYTES);
    struct event ev;

    memcpy(doc, body, strlen(body));
    decode_ok_len(&ev, doc, EVENT_MAX_BYTES);
    assert_string_equal(ev.call_id, "call-7f3a9c");
    event_release(&ev);
    free(doc);
}

static void
test_not_json_rejected(void **state)
{
    assert_rejected("hello", "not JSON: unexpected 'h' at byte 0");
    assert_rejected("{\"type\":", "not JSON: unexpected end of input");
    assert_rejected("{\"type\" \"invite\"}",
                    "not JSON: unexpected '\"' at byte 8");
    assert_rejected("{'type':1}", "not JSON: unexpected ''' at byte 1");
    assert_rejected("{\"a\":1,}", "not JSON: unexpected '}' at byte 7");
    assert_rejected("{\"a\":\"x}", "not JSON: unterminated string");
    assert_rejected("{\"a\":\"\\x\"}", "not JSON: invalid escape at byte 6");
    assert_rejected("{\"a\":\"\\u12g4\"}",
                    "not JSON: invalid \\u escape at byte 6");
    assert_rejected("{\"a\":NaN}", "not JSON: unexpected 'N' at byte 5");
    assert_rejected("{\"a\":tru}", "not JSON: unexpected 't' at byte 5");
    assert_rejected_len("{\"a\":1\0}", 8,
                        "not JSON: unexpected byte 0x00 at byte 6");
}

static void
test_lenient_json_that_cjson_takes_rejected(void **state)
{
    /* cJSON reads all of these; another parser would not. */
    assert_rejected("{\"a\":0123}", "not JSON: invalid number at byte 5");
    assert_rejected("{\"a\":1.}", "not JSON: invalid number at byte 5");
    assert_rejected("{\"a\":-}", "not JSON: invalid number at byte 5");
    assert_rejected("{\"a\":1e}", "not JSON: invalid number at byte 5");
    assert_rejected("{\"a\":\"x\ty\"}",
                    "not JSON: control character in string at byte 7");
    assert_rejected("\x01{}", "not JSON: unexpected byte 0x01 at byte 0");
    assert_rejected("\xef\xbb\xbf{}",
                    "not JSON: starts with a byte order mark");
}

static void
test_json_that_is_not_an_object_rejected(void **state)
{
    assert_rejected("[1,2]", "not a JSON object but an array");
    assert_rejected("\"invite\"", "not a JSON object but a string");
    assert_rejected(" 42 ", "not a JSON object but a number");
    assert_rejected("true", "not a JSON object but a boolean");
    assert_rejected("null", "not a JSON object but null");
}

static void
test_trailing_data_rejected(void **state)
{
    assert_rejected("{} x", "trailing data after the JSON value at byte 3");
    assert_rejected("{}{}", "trailing data after the JSON value at byte 2");
    assert_rejected_free(
        jsonf("{" INVITE "}\n,"),
        jsonf_static("trailing data after the JSON value at byte %zu",
                     sizeof("{" INVITE "}\n") - 1));
}

static void
test_invalid_utf8_rejected_with_offset(void **state)
{
    /* Overlong '/', an encoded surrogate, above U+10FFFF, a stray
     * continuation byte, a sequence cut by the end, and 0xff. */
    assert_rejected("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8 at byte 6");
    assert_rejected("{\"a\":\"\xe0\x80\xaf\"}", "invalid UTF-8 at byte 6");
    assert_rejected("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8 at byte 6");
    assert_rejected("{\"a\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8 at byte 6");
    assert_rejected("{\"a\":\"x\x80\"}", "invalid UTF-8 at byte 7");
    assert_rejected("{\"a\":\"\xe6\x9d\"}", "invalid UTF-8 at byte 6");
    assert_rejected("{}\xe6", "invalid UTF-8 at byte 2");
    assert_rejected("\xff", "invalid UTF-8 at byte 0");
}

static void
test_valid_multibyte_utf8_accepted(void **state)
{
    struct event ev;

    /* "来电邀请" and U+1F600, both as raw UTF-8. */
    decode_ok(&ev, "{" INVITE ",\"alert\":{\"title\":\"\xe6\x9d\xa5\xe7\x94"
                   "\xb5\xe9\x82\x80\xe8\xaf\xb7\",\"body\":\"\xf0\x9f\x98"
                   "\x80\"}}");
    assert_string_equal(ev.alert_title,
                        "\xe6\x9d\xa5\xe7\x94\xb5\xe9\x82\x80\xe8\xaf\xb7");
    assert_string_equal(ev.alert_body, "\xf0\x9f\x98\x80");
    event_release(&ev);
}

static void
test_nul_escape_rejected_naming_the_field(void **state)
{
    assert_rejected("{" NO_CALL ",\"call_id\":\"a\\u0000b\"}",
                    "call_id: contains \\u0000");
    assert_rejected("{" INVITE ",\"caller\":{\"name\":\"x\\u0000\"}}",
                    "caller.name: contains \\u0000");
    assert_rejected("{" INVITE ",\"extras\":{\"k\":\"\\u0000\"}}",
                    "extras.k: contains \\u0000");
    assert_rejected("{" INVITE ",\"extras\":{\"\\u0000\":1}}",
                    "extras: member name contains \\u0000");
    assert_rejected("{" INVITE ",\"a\\u0000\":1}",
                    "member name contains \\u0000");

    /* Unknown fields are ignored, but not when they are malformed. */
    assert_rejected("{" INVITE ",\"note\":[\"ok\",\"\\u0000\"]}",
                    "note[1]: contains \\u0000");
}

static void
test_unpaired_surrogate_escapes_rejected(void **state)
{
    assert_rejected("{" INVITE ",\"alert\":{\"title\":\"\\ud800\"}}",
                    "alert.title: unpaired surrogate escape");
    assert_rejected("{" INVITE ",\"alert\":{\"title\":\"\\udc00x\"}}",
                    "alert.title: unpaired surrogate escape");
    assert_rejected("{" INVITE ",\"sound\":\"\\ud800\\u0041\"}",
                    "sound: unpaired surrogate escape");
    assert_rejected("{" INVITE ",\"sound\":\"\\uDBFF\\uDBFF\"}",
                    "sound: unpaired surrogate escape");
    assert_rejected("{" INVITE ",\"sound\":\"\\ud800\\n\"}",
                    "sound: unpaired surrogate escape");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"" TOKEN_A
                    "\",\"\\ud800\"]}",
                    "device_tokens[1]: unpaired surrogate escape");
}

static void
test_surrogate_pair_escape_decodes_to_utf8(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"sound\":\"\\ud83d\\ude00.caf\"}");
    assert_string_equal(ev.sound, "\xf0\x9f\x98\x80.caf");
    event_release(&ev);
}

/* An object with "x" holding n nested arrays, so that the deepest is at
 * depth n + 1 counting the top-level object. */
static char *
nested(size_t n)
{
    char *open = repeat('[', n), *close = repeat(']', n);
    char *doc = jsonf("{" INVITE ",\"x\":%s%s}", open, close);

    free(open);
    free(close);
    return doc;
}

static void
test_nesting_of_16_levels_accepted(void **state)
{
    assert_accepted_free(nested(15));
}

static void
test_nesting_of_17_levels_rejected(void **state)
{
    assert_rejected_free(nested(16), "nesting deeper than 16 levels");
}

static void
test_very_deep_nesting_rejected_without_recursing(void **state)
{
    char *open = repeat('[', 60000);

    assert_rejected(open, "nesting deeper than 16 levels");
    free(open);
}

static void
test_white_space_everywhere_accepted(void **state)
{
    struct event ev;

    decode_ok(
        &ev,
        " {\r\n\t\"type\" : \"invite\" ,\n \"call_id\" :\"c\",\n"
        "\"_j_msgid\"\t:\t18101194842707757 ,\"device_tokens\": [ \"" TOKEN_A
        "\" ] , \"created_at\"\n:\n1764860000000\n,"
        "\"extras\" : { \"n\" : 1.5e3 , \"b\" : false }\n}\n ");
    assert_string_equal(ev.msgid, "18101194842707757");
    assert_int_equal(ev.created_at_ms, 1764860000000);
    assert_string_equal(ev.extras[0].value, "1.5e3");
    assert_string_equal(ev.extras[1].value, "false");
    event_release(&ev);
}

/* --- Required fields ---------------------------------------------------- */

static void
test_missing_created_at_left_to_the_worker_when_asked(void **state)
{
    static const char doc[] =
        "{\"type\":\"invite\",\"call_id\":\"c\",\"_j_msgid\":7,"
        "\"device_tokens\":[\"" TOKEN_A "\"]}";
    char err[EVENT_ERR_MAX];
    struct event ev;

    /* The contract requires it ... */
    assert_int_equal(event_decode(&ev, doc, strlen(doc), err), -1);
    assert_string_equal(err, "created_at: missing");
    /* ... but the worker may time the event by its Kafka timestamp. */
    assert_int_equal(event_decode_flags(&ev, doc, strlen(doc),
                                        EVENT_DECODE_NO_CREATED_AT, err),
                     0);
    assert_int_equal(ev.created_at_ms, 0);
    event_release(&ev);
}

static void
test_minimal_invite_has_defaults(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE "}");
    assert_int_equal(ev.type, EVENT_INVITE);
    assert_string_equal(ev.call_id, "call-7f3a9c");
    assert_string_equal(ev.msgid, "42");
    assert_int_equal(ev.msgid_num, 42);
    assert_int_equal(ev.uid_len, 0);
    assert_null(ev.uid);
    assert_int_equal(ev.ntokens, 1);
    assert_string_equal(ev.tokens[0], TOKEN_A);
    assert_int_equal(ev.created_at_ms, 1764860000000);
    assert_int_equal(ev.ring_timeout_s, 0);
    assert_null(ev.caller_name);
    assert_null(ev.caller_id);
    assert_int_equal(ev.media, EVENT_AUDIO);
    assert_null(ev.reason);
    assert_null(ev.alert_title);
    assert_null(ev.alert_body);
    assert_null(ev.sound);
    assert_int_equal(ev.nextras, 0);
    assert_null(ev.apns_topic);
    assert_int_equal(ev.environment, EVENT_ENV_DEFAULT);
    event_release(&ev);
}

static void
test_missing_required_field_named(void **state)
{
    assert_rejected("{}", "type: missing");
    assert_rejected("{" NO_TYPE "}", "type: missing");
    assert_rejected("{" NO_CALL "}", "call_id: missing");
    assert_rejected("{" NO_MSGID "}", "_j_msgid: missing");
    assert_rejected("{" NO_TOKENS "}", "device_tokens: missing");
    assert_rejected("{" NO_CREATED "}", "created_at: missing");

    /* Names are matched exactly: another case is another member. */
    assert_rejected("{" NO_CALL ",\"Call_ID\":\"c\"}", "call_id: missing");
    assert_rejected("{" NO_MSGID ",\"_J_MSGID\":1}", "_j_msgid: missing");
}

static void
test_type_must_be_invite_or_cancel(void **state)
{
    struct event ev;

    assert_rejected("{" NO_TYPE ",\"type\":\"accept\"}",
                    "type: not invite or cancel");
    assert_rejected("{" NO_TYPE ",\"type\":\"Invite\"}",
                    "type: not invite or cancel");
    assert_rejected("{" NO_TYPE ",\"type\":1}", "type: not a string");
    decode_ok(&ev, "{" CANCEL "}");
    assert_int_equal(ev.type, EVENT_CANCEL);
    event_release(&ev);
}

static void
test_call_id_limits(void **state)
{
    char *id64 = repeat('c', 64), *id65 = repeat('c', 65);
    struct event ev;

    assert_rejected("{" NO_CALL ",\"call_id\":\"\"}", "call_id: empty");
    assert_rejected_free(jsonf("{" NO_CALL ",\"call_id\":\"%s\"}", id65),
                         "call_id: longer than 64 bytes");
    assert_accepted_free(jsonf("{" NO_CALL ",\"call_id\":\"%s\"}", id64));
    assert_rejected("{" NO_CALL ",\"call_id\":\"a\\tb\"}",
                    "call_id: not printable ASCII");
    assert_rejected("{" NO_CALL ",\"call_id\":\"caf\xc3\xa9\"}",
                    "call_id: not printable ASCII");
    assert_rejected("{" NO_CALL ",\"call_id\":\"x\\u007f\"}",
                    "call_id: not printable ASCII");
    assert_rejected("{" NO_CALL ",\"call_id\":17}", "call_id: not a string");

    decode_ok(&ev, "{" NO_CALL ",\"call_id\":\" !~\\\"\"}");
    assert_string_equal(ev.call_id, " !~\"");
    event_release(&ev);
    free(id64);
    free(id65);
}

static void
test_msgid_above_2_53_kept_exact(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":18101194842707757}");
    assert_string_equal(ev.msgid, "18101194842707757");
    assert_true(ev.msgid_num == UINT64_C(18101194842707757));
    event_release(&ev);

    /* A double would round this one to ...700 or ...704. */
    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":18101194848382701}");
    assert_string_equal(ev.msgid, "18101194848382701");
    event_release(&ev);
}

static void
test_msgid_int64_max_accepted(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":9223372036854775807}");
    assert_string_equal(ev.msgid, "9223372036854775807");
    assert_true(ev.msgid_num == UINT64_C(9223372036854775807));
    event_release(&ev);

    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":\"9223372036854775807\"}");
    assert_string_equal(ev.msgid, "9223372036854775807");
    event_release(&ev);
}

static void
test_msgid_2_63_rejected(void **state)
{
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":9223372036854775808}",
                    "_j_msgid: above 2^63-1");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":18446744073709551616}",
                    "_j_msgid: above 2^63-1");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":"
                    "123456789012345678901234567890}",
                    "_j_msgid: above 2^63-1");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"9223372036854775808\"}",
                    "_j_msgid: above 2^63-1");
}

static void
test_msgid_zero_accepted(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":0}");
    assert_string_equal(ev.msgid, "0");
    event_release(&ev);
    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":\"0\"}");
    assert_string_equal(ev.msgid, "0");
    event_release(&ev);
}

static void
test_msgid_as_string_kept_exact(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" NO_MSGID ",\"_j_msgid\":\"18101194842707757\"}");
    assert_string_equal(ev.msgid, "18101194842707757");
    assert_true(ev.msgid_num == UINT64_C(18101194842707757));
    event_release(&ev);
}

static void
test_msgid_string_with_leading_zero_rejected(void **state)
{
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"0123\"}",
                    "_j_msgid: leading zero");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"00\"}",
                    "_j_msgid: leading zero");
}

static void
test_msgid_string_must_be_digits(void **state)
{
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"\"}", "_j_msgid: empty");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"12a\"}",
                    "_j_msgid: not decimal digits");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"-1\"}",
                    "_j_msgid: not decimal digits");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"+1\"}",
                    "_j_msgid: not decimal digits");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\" 1\"}",
                    "_j_msgid: not decimal digits");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":\"1e3\"}",
                    "_j_msgid: not decimal digits");
}

static void
test_msgid_number_must_be_plain_non_negative(void **state)
{
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":-1}", "_j_msgid: negative");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":-0}", "_j_msgid: negative");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":1.0}",
                    "_j_msgid: fraction or exponent not allowed");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":1e3}",
                    "_j_msgid: fraction or exponent not allowed");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":1E3}",
                    "_j_msgid: fraction or exponent not allowed");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":true}",
                    "_j_msgid: not an integer or digit string");
    assert_rejected("{" NO_MSGID ",\"_j_msgid\":null}",
                    "_j_msgid: not an integer or digit string");
}

static void
test_tokens_count_limits(void **state)
{
    char *t16 = xstrdup("");
    int i;

    assert_rejected("{" NO_TOKENS ",\"device_tokens\":\"" TOKEN_A "\"}",
                    "device_tokens: not an array");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[]}",
                    "device_tokens: empty");

    /* 16 distinct tokens pass, a 17th fails. */
    for (i = 0; i < 17; i++) {
        char *next = jsonf("%s%s\"%016x\"", t16, i ? "," : "", i);

        free(t16);
        t16 = next;
        if (i == 15) {
            struct event ev;
            char *doc = jsonf("{" NO_TOKENS ",\"device_tokens\":[%s]}", t16);

            decode_ok(&ev, doc);
            assert_int_equal(ev.ntokens, 16);
            assert_string_equal(ev.tokens[15], "000000000000000f");
            event_release(&ev);
            free(doc);
        }
    }
    assert_rejected_free(jsonf("{" NO_TOKENS ",\"device_tokens\":[%s]}", t16),
                         "device_tokens: more than 16 tokens");
    free(t16);
}

static void
test_token_format_rules(void **state)
{
    char *h200 = repeat('a', 200), *h202 = repeat('a', 202);

    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"" TOKEN_A "\",7]}",
                    "device_tokens[1]: not a string");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"" TOKEN_A
                    "\",\"" TOKEN_B "\",\"0011223344556677g8\"]}",
                    "device_tokens[2]: not hexadecimal");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"00112233 44556677\"]}",
                    "device_tokens[0]: not hexadecimal");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"\"]}",
                    "device_tokens[0]: shorter than 16 hex digits");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"00112233445566\"]}",
                    "device_tokens[0]: shorter than 16 hex digits");
    assert_rejected("{" NO_TOKENS ",\"device_tokens\":[\"001122334455667788"
                    "9\"]}",
                    "device_tokens[0]: odd number of hex digits");
    assert_rejected_free(
        jsonf("{" NO_TOKENS ",\"device_tokens\":[\"%s\"]}", h202),
        "device_tokens[0]: longer than 200 hex digits");
    assert_accepted_free(
        jsonf("{" NO_TOKENS ",\"device_tokens\":[\"%s\"]}", h200));
    assert_accepted_free(jsonf("{" NO_TOKENS ",\"device_tokens\":[\"%s\"]}",
                               "0011223344556677"));
    free(h200);
    free(h202);
}

static void
test_token_duplicates_removed_keeping_first(void **state)
{
    struct event ev;

    decode_ok(&ev,
              "{" NO_TOKENS ",\"device_tokens\":[\"" TOKEN_A
              "\",\"" TOKEN_B_UPPER "\",\"" TOKEN_A "\",\"" TOKEN_B "\"]}");
    assert_int_equal(ev.ntokens, 2);
    assert_string_equal(ev.tokens[0], TOKEN_A);

    /* Kept as received: the first spelling wins, whatever its case. */
    assert_string_equal(ev.tokens[1], TOKEN_B_UPPER);
    event_release(&ev);
}

static void
test_created_at_rules(void **state)
{
    struct event ev;

    assert_rejected("{" NO_CREATED ",\"created_at\":\"123\"}",
                    "created_at: not an integer");
    assert_rejected("{" NO_CREATED ",\"created_at\":0}", "created_at: below 1");
    assert_rejected("{" NO_CREATED ",\"created_at\":-5}",
                    "created_at: below 1");
    assert_rejected("{" NO_CREATED ",\"created_at\":9007199254740992}",
                    "created_at: above 2^53-1");
    assert_rejected("{" NO_CREATED ",\"created_at\":1764860000000.5}",
                    "created_at: fraction or exponent not allowed");
    assert_rejected("{" NO_CREATED ",\"created_at\":1.76486e12}",
                    "created_at: fraction or exponent not allowed");

    decode_ok(&ev, "{" NO_CREATED ",\"created_at\":9007199254740991}");
    assert_true(ev.created_at_ms == INT64_C(9007199254740991));
    event_release(&ev);
    decode_ok(&ev, "{" NO_CREATED ",\"created_at\":1}");
    assert_int_equal(ev.created_at_ms, 1);
    event_release(&ev);
}

/* --- Optional fields ---------------------------------------------------- */

static void
test_uid_integer_kept_as_digits(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"_j_uid\":75039914131}");
    assert_string_equal(ev.uid, "75039914131");
    assert_int_equal(ev.uid_len, 11);
    assert_false(ev.uid_is_string);
    event_release(&ev);

    decode_ok(&ev, "{" INVITE ",\"_j_uid\":9223372036854775807}");
    assert_string_equal(ev.uid, "9223372036854775807");
    event_release(&ev);

    assert_rejected("{" INVITE ",\"_j_uid\":9223372036854775808}",
                    "_j_uid: above 2^63-1");
    assert_rejected("{" INVITE ",\"_j_uid\":-1}", "_j_uid: negative");
    assert_rejected("{" INVITE ",\"_j_uid\":7.5}",
                    "_j_uid: fraction or exponent not allowed");
}

static void
test_uid_string_limits(void **state)
{
    char *u64 = repeat('u', 64), *u65 = repeat('u', 65);
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"_j_uid\":\"user-7\"}");
    assert_string_equal(ev.uid, "user-7");
    assert_int_equal(ev.uid_len, 6);
    assert_true(ev.uid_is_string);
    event_release(&ev);

    assert_rejected("{" INVITE ",\"_j_uid\":\"\"}", "_j_uid: empty");
    assert_rejected_free(jsonf("{" INVITE ",\"_j_uid\":\"%s\"}", u65),
                         "_j_uid: longer than 64 bytes");
    assert_accepted_free(jsonf("{" INVITE ",\"_j_uid\":\"%s\"}", u64));
    assert_rejected("{" INVITE ",\"_j_uid\":true}",
                    "_j_uid: not an integer or string");
    assert_rejected("{" INVITE ",\"_j_uid\":[1]}",
                    "_j_uid: not an integer or string");
    free(u64);
    free(u65);
}

static void
test_ring_timeout_limits(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"ring_timeout_s\":1}");
    assert_int_equal(ev.ring_timeout_s, 1);
    event_release(&ev);
    decode_ok(&ev, "{" INVITE ",\"ring_timeout_s\":600}");
    assert_int_equal(ev.ring_timeout_s, 600);
    event_release(&ev);

    assert_rejected("{" INVITE ",\"ring_timeout_s\":601}",
                    "ring_timeout_s: above 600");
    assert_rejected("{" INVITE ",\"ring_timeout_s\":0}",
                    "ring_timeout_s: below 1");
    assert_rejected("{" INVITE ",\"ring_timeout_s\":-30}",
                    "ring_timeout_s: below 1");
    assert_rejected("{" INVITE ",\"ring_timeout_s\":\"30\"}",
                    "ring_timeout_s: not an integer");
    assert_rejected("{" INVITE ",\"ring_timeout_s\":30.0}",
                    "ring_timeout_s: fraction or exponent not allowed");
    assert_rejected("{" INVITE ",\"ring_timeout_s\":99999999999999999999}",
                    "ring_timeout_s: above 600");
}

static void
test_ring_timeout_ignored_on_cancel(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" CANCEL ",\"ring_timeout_s\":\"whenever\"}");
    assert_int_equal(ev.ring_timeout_s, 0);
    event_release(&ev);
    decode_ok(&ev, "{" CANCEL ",\"ring_timeout_s\":30}");
    assert_int_equal(ev.ring_timeout_s, 0);
    event_release(&ev);
}

static void
test_caller_fields(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"caller\":{\"name\":\"Ann\",\"id\":\"a-1\","
                   "\"avatar\":[]}}");
    assert_string_equal(ev.caller_name, "Ann");
    assert_string_equal(ev.caller_id, "a-1");
    event_release(&ev);

    decode_ok(&ev, "{" INVITE ",\"caller\":{\"id\":18101194842707757}}");
    assert_null(ev.caller_name);
    assert_string_equal(ev.caller_id, "18101194842707757");
    event_release(&ev);

    decode_ok(&ev, "{" INVITE ",\"caller\":{\"id\":-42,\"name\":\"\"}}");
    assert_string_equal(ev.caller_id, "-42");
    assert_string_equal(ev.caller_name, "");
    event_release(&ev);
}

static void
test_caller_rules(void **state)
{
    char *n256 = repeat('n', 256), *n257 = repeat('n', 257);

    assert_rejected("{" INVITE ",\"caller\":\"Ann\"}", "caller: not an object");
    assert_rejected("{" INVITE ",\"caller\":{\"name\":5}}",
                    "caller.name: not a string");
    assert_rejected_free(
        jsonf("{" INVITE ",\"caller\":{\"name\":\"%s\"}}", n257),
        "caller.name: longer than 256 bytes");
    assert_accepted_free(
        jsonf("{" INVITE ",\"caller\":{\"name\":\"%s\"}}", n256));
    assert_rejected_free(jsonf("{" INVITE ",\"caller\":{\"id\":\"%s\"}}", n257),
                         "caller.id: longer than 256 bytes");
    assert_rejected("{" INVITE ",\"caller\":{\"id\":1.5}}",
                    "caller.id: fraction or exponent not allowed");
    assert_rejected("{" INVITE ",\"caller\":{\"id\":null}}",
                    "caller.id: not a string or integer");
    free(n256);
    free(n257);
}

static void
test_media_rules(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"media\":\"video\"}");
    assert_int_equal(ev.media, EVENT_VIDEO);
    event_release(&ev);
    decode_ok(&ev, "{" INVITE ",\"media\":\"audio\"}");
    assert_int_equal(ev.media, EVENT_AUDIO);
    event_release(&ev);

    assert_rejected("{" INVITE ",\"media\":\"VIDEO\"}",
                    "media: not audio or video");
    assert_rejected("{" INVITE ",\"media\":1}", "media: not a string");
}

static void
test_reason_on_cancel(void **state)
{
    static const char *const reasons[] = {"hangup", "timeout", "declined",
                                          "answered_elsewhere", "busy"};
    size_t i;

    for (i = 0; i < UTIL_ARRAY_LEN(reasons); i++) {
        char *doc = jsonf("{" CANCEL ",\"reason\":\"%s\"}", reasons[i]);
        struct event ev;

        decode_ok(&ev, doc);
        assert_string_equal(ev.reason, reasons[i]);
        event_release(&ev);
        free(doc);
    }
    assert_rejected("{" CANCEL ",\"reason\":\"bored\"}",
                    "reason: not hangup, timeout, declined, "
                    "answered_elsewhere or busy");
    assert_rejected("{" CANCEL ",\"reason\":0}", "reason: not a string");
}

static void
test_reason_ignored_on_invite(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"reason\":\"bored\"}");
    assert_null(ev.reason);
    event_release(&ev);
    decode_ok(&ev, "{" INVITE ",\"reason\":{}}");
    assert_null(ev.reason);
    event_release(&ev);
}

static void
test_alert_rules(void **state)
{
    char *t256 = repeat('t', 256), *t257 = repeat('t', 257);
    char *b2048 = repeat('b', 2048), *b2049 = repeat('b', 2049);
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"alert\":{}}");
    assert_null(ev.alert_title);
    assert_null(ev.alert_body);
    event_release(&ev);

    assert_rejected("{" INVITE ",\"alert\":\"hi\"}", "alert: not an object");
    assert_rejected("{" INVITE ",\"alert\":{\"title\":\"\"}}",
                    "alert.title: empty");
    assert_rejected("{" INVITE ",\"alert\":{\"body\":\"\"}}",
                    "alert.body: empty");
    assert_rejected("{" INVITE ",\"alert\":{\"title\":[]}}",
                    "alert.title: not a string");
    assert_rejected_free(
        jsonf("{" INVITE ",\"alert\":{\"title\":\"%s\"}}", t257),
        "alert.title: longer than 256 bytes");
    assert_accepted_free(
        jsonf("{" INVITE ",\"alert\":{\"title\":\"%s\"}}", t256));
    assert_rejected_free(
        jsonf("{" INVITE ",\"alert\":{\"body\":\"%s\"}}", b2049),
        "alert.body: longer than 2048 bytes");
    assert_accepted_free(
        jsonf("{" INVITE ",\"alert\":{\"body\":\"%s\"}}", b2048));
    free(t256);
    free(t257);
    free(b2048);
    free(b2049);
}

static void
test_limits_count_bytes_not_characters(void **state)
{
    /* 86 three-byte characters: 258 bytes, though only 86 characters. */
    char *title = xmalloc(86 * 3 + 1);
    int i;

    for (i = 0; i < 86; i++) {
        memcpy(title + i * 3, "\xe6\x9d\xa5", 3);
    }
    title[86 * 3] = '\0';
    assert_rejected_free(
        jsonf("{" INVITE ",\"alert\":{\"title\":\"%s\"}}", title),
        "alert.title: longer than 256 bytes");
    free(title);
}

static void
test_sound_rules(void **state)
{
    char *s256 = repeat('s', 256), *s257 = repeat('s', 257);
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"sound\":\"laidian.caf\"}");
    assert_string_equal(ev.sound, "laidian.caf");
    event_release(&ev);

    assert_rejected("{" INVITE ",\"sound\":\"\"}", "sound: empty");
    assert_rejected("{" INVITE ",\"sound\":null}", "sound: not a string");
    assert_rejected_free(jsonf("{" INVITE ",\"sound\":\"%s\"}", s257),
                         "sound: longer than 256 bytes");
    assert_accepted_free(jsonf("{" INVITE ",\"sound\":\"%s\"}", s256));
    free(s256);
    free(s257);
}

static void
test_extras_order_and_raw_number_text_kept(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"extras\":{\"z\":\"last\\u00e9\",\"a\":1.5e3,"
                   "\"m\":true,\"b\":-0.0,\"c\":false,"
                   "\"big\":18101194842707757,\"e\":\"\"}}");
    assert_int_equal(ev.nextras, 7);

    assert_string_equal(ev.extras[0].key, "z");
    assert_int_equal(ev.extras[0].kind, EVENT_EXTRA_STRING);
    assert_string_equal(ev.extras[0].value, "last\xc3\xa9");
    assert_int_equal(ev.extras[0].value_len, 6);

    assert_string_equal(ev.extras[1].key, "a");
    assert_int_equal(ev.extras[1].kind, EVENT_EXTRA_RAW);
    assert_string_equal(ev.extras[1].value, "1.5e3");
    assert_int_equal(ev.extras[1].value_len, 5);

    assert_string_equal(ev.extras[2].value, "true");
    assert_int_equal(ev.extras[2].kind, EVENT_EXTRA_RAW);
    assert_string_equal(ev.extras[3].value, "-0.0");
    assert_string_equal(ev.extras[4].value, "false");
    assert_string_equal(ev.extras[5].key, "big");
    assert_string_equal(ev.extras[5].value, "18101194842707757");
    assert_string_equal(ev.extras[6].value, "");
    assert_int_equal(ev.extras[6].kind, EVENT_EXTRA_STRING);
    event_release(&ev);
}

static void
test_extras_reserved_keys_rejected(void **state)
{
    assert_rejected("{" INVITE ",\"extras\":{\"aps\":\"x\"}}",
                    "extras.aps: reserved key");
    assert_rejected("{" INVITE ",\"extras\":{\"ok\":1,\"pushType\":3}}",
                    "extras.pushType: reserved key");
    assert_rejected("{" INVITE ",\"extras\":{\"_j_msgid\":1}}",
                    "extras._j_msgid: reserved key");
    assert_rejected("{" INVITE ",\"extras\":{\"_j_uid\":1}}",
                    "extras._j_uid: reserved key");
    assert_rejected("{" INVITE ",\"extras\":{\"call_id\":\"c\"}}",
                    "extras.call_id: reserved key");

    /* Spelled with an escape, it is still the same key. */
    assert_rejected("{" INVITE ",\"extras\":{\"ap\\u0073\":1}}",
                    "extras.aps: reserved key");
}

static void
test_extras_duplicate_key_rejected(void **state)
{
    assert_rejected("{" INVITE ",\"extras\":{\"k\":1,\"j\":2,\"k\":3}}",
                    "extras.k: duplicate key");
    assert_rejected("{" INVITE ",\"extras\":{\"k\":1,\"\\u006b\":1}}",
                    "extras.k: duplicate key");
}

static void
test_extras_count_and_size_limits(void **state)
{
    char members[33 * 8 + 1] = "";
    char *k64 = repeat('k', 64), *k65 = repeat('k', 65);
    char *v2048 = repeat('v', 2048), *v2049 = repeat('v', 2049);
    int i;

    for (i = 0; i < 32; i++) {
        char m[16];

        snprintf(m, sizeof(m), "%s\"k%02d\":1", i ? "," : "", i);
        strcat(members, m);
    }
    assert_accepted_free(jsonf("{" INVITE ",\"extras\":{%s}}", members));
    strcat(members, ",\"k32\":1");
    assert_rejected_free(jsonf("{" INVITE ",\"extras\":{%s}}", members),
                         "extras: more than 32 members");

    assert_rejected_free(jsonf("{" INVITE ",\"extras\":{\"%s\":1}}", k65),
                         "extras: key longer than 64 bytes");
    assert_accepted_free(jsonf("{" INVITE ",\"extras\":{\"%s\":1}}", k64));
    assert_rejected("{" INVITE ",\"extras\":{\"\":1}}", "extras: empty key");
    assert_rejected_free(jsonf("{" INVITE ",\"extras\":{\"v\":\"%s\"}}", v2049),
                         "extras.v: longer than 2048 bytes");
    assert_accepted_free(
        jsonf("{" INVITE ",\"extras\":{\"v\":\"%s\"}}", v2048));
    free(k64);
    free(k65);
    free(v2048);
    free(v2049);
}

static void
test_extras_value_types(void **state)
{
    assert_rejected("{" INVITE ",\"extras\":{\"n\":null}}",
                    "extras.n: null not allowed");
    assert_rejected("{" INVITE ",\"extras\":{\"o\":{}}}",
                    "extras.o: object not allowed");
    assert_rejected("{" INVITE ",\"extras\":{\"a\":[1]}}",
                    "extras.a: array not allowed");
    assert_rejected("{" INVITE ",\"extras\":[]}", "extras: not an object");
    assert_rejected("{" INVITE ",\"extras\":{\"line\\nbreak\":null}}",
                    "extras.line?break: null not allowed");
}

static void
test_apns_topic_rules(void **state)
{
    char *t255 = repeat('a', 255), *t256 = repeat('a', 256);
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"apns_topic\":\"com.Example-1.app\"}");
    assert_string_equal(ev.apns_topic, "com.Example-1.app");
    event_release(&ev);

    assert_rejected("{" INVITE ",\"apns_topic\":\"com.example_app\"}",
                    "apns_topic: not letters, digits, '.' or '-'");
    assert_rejected("{" INVITE ",\"apns_topic\":\"com.example app\"}",
                    "apns_topic: not letters, digits, '.' or '-'");
    assert_rejected("{" INVITE ",\"apns_topic\":\"\"}", "apns_topic: empty");
    assert_rejected("{" INVITE ",\"apns_topic\":1}",
                    "apns_topic: not a string");
    assert_rejected_free(jsonf("{" INVITE ",\"apns_topic\":\"%s\"}", t256),
                         "apns_topic: longer than 255 bytes");
    assert_accepted_free(jsonf("{" INVITE ",\"apns_topic\":\"%s\"}", t255));
    free(t255);
    free(t256);
}

static void
test_environment_rules(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"environment\":\"sandbox\"}");
    assert_int_equal(ev.environment, EVENT_ENV_SANDBOX);
    event_release(&ev);
    decode_ok(&ev, "{" INVITE ",\"environment\":\"production\"}");
    assert_int_equal(ev.environment, EVENT_ENV_PRODUCTION);
    event_release(&ev);

    assert_rejected("{" INVITE ",\"environment\":\"development\"}",
                    "environment: not production or sandbox");
    assert_rejected("{" INVITE ",\"environment\":true}",
                    "environment: not a string");
}

static void
test_unknown_fields_ignored(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"x_trace\":{\"deep\":[1,{\"y\":null}]},"
                   "\"pushType\":9,\"Type\":\"cancel\"}");
    assert_int_equal(ev.type, EVENT_INVITE);
    event_release(&ev);
}

/* --- Duplicate top-level keys ------------------------------------------- */

static void
test_duplicate_key_first_occurrence_wins(void **state)
{
    struct event ev;

    decode_ok(&ev, "{" INVITE ",\"_j_msgid\":7,\"type\":\"cancel\","
                   "\"call_id\":\"other\"}");
    assert_string_equal(ev.msgid, "42");
    assert_int_equal(ev.type, EVENT_INVITE);
    assert_string_equal(ev.call_id, "call-7f3a9c");
    event_release(&ev);

    /* The first one decides even when the second would have passed. */
    assert_rejected("{\"created_at\":\"x\"," INVITE "}",
                    "created_at: not an integer");
}

static void
test_duplicate_key_spelled_with_escape_takes_first_number_text(void **state)
{
    struct event ev;

    /* cJSON decodes the first name to "_j_msgid"; the raw text read for
     * the number must be that member's, not the later plain spelling. */
    decode_ok(&ev, "{\"\\u005fj_msgid\":18101194842707757," INVITE ","
                   "\"_j_uid\":1,\"_j_uid\":2,\"created_at\":5}");
    assert_string_equal(ev.msgid, "18101194842707757");
    assert_string_equal(ev.uid, "1");
    assert_int_equal(ev.created_at_ms, 1764860000000);
    event_release(&ev);
}

/* --- Robustness --------------------------------------------------------- */

static const char call_flow_invite[] =
    "{\"type\":\"invite\",\"call_id\":\"call-7f3a9c\","
    "\"_j_msgid\":18101194842707757,\"_j_uid\":75039914131,"
    "\"device_tokens\":[\"" TOKEN_A "\"],\"created_at\":1764860000000,"
    "\"alert\":{\"title\":\"\xe6\x9d\xa5\xe7\x94\xb5\xe9\x82\x80\xe8\xaf"
    "\xb7\"},\"sound\":\"laidian.caf\","
    "\"extras\":{\"_j_business\":1,\"_j_data_\":"
    "\"{\\\"data_msgtype\\\":1,\\\"push_type\\\":4,\\\"is_vip\\\":1}\","
    "\"extra_key\":\"extra_value\"}}";

static void
test_call_flow_invite_decodes(void **state)
{
    struct event ev;

    decode_ok(&ev, call_flow_invite);
    assert_string_equal(ev.msgid, "18101194842707757");
    assert_string_equal(ev.uid, "75039914131");
    assert_int_equal(ev.nextras, 3);
    assert_string_equal(ev.extras[0].key, "_j_business");
    assert_string_equal(ev.extras[0].value, "1");
    assert_int_equal(ev.extras[0].kind, EVENT_EXTRA_RAW);
    assert_string_equal(ev.extras[1].value,
                        "{\"data_msgtype\":1,\"push_type\":4,\"is_vip\":1}");
    assert_int_equal(ev.extras[1].kind, EVENT_EXTRA_STRING);
    assert_string_equal(ev.extras[2].value, "extra_value");
    event_release(&ev);
}

static void
test_every_prefix_rejected_without_crashing(void **state)
{
    size_t len = strlen(call_flow_invite), n;
    char err[EVENT_ERR_MAX];

    /* Copies, so that the sanitizers see reads past the given length. */
    for (n = 0; n < len; n++) {
        char *copy = xmalloc(n + 1);
        struct event ev;

        memcpy(copy, call_flow_invite, n);
        assert_int_equal(event_decode(&ev, copy, n, err), -1);
        assert_true(strlen(err) > 0);
        free(copy);
    }
}

static void
test_every_byte_changed_never_crashes(void **state)
{
    static const char subs[] = {'\0', '"', '\\', '{', '}', '[', ']',   ',',
                                ':',  '0', '-',  'e', 'u', ' ', '\x80'};
    size_t len = strlen(call_flow_invite), i, k;
    char *copy = xmalloc(len);
    char err[EVENT_ERR_MAX];

    for (i = 0; i < len; i++) {
        for (k = 0; k < sizeof(subs); k++) {
            struct event ev;

            memcpy(copy, call_flow_invite, len);
            copy[i] = subs[k];
            if (event_decode(&ev, copy, len, err) == 0) {
                event_release(&ev);
            } else {
                assert_true(strlen(err) > 0 && strlen(err) < EVENT_ERR_MAX);
            }
        }
    }
    free(copy);
}

static void
test_long_names_in_errors_cut_at_character_boundary(void **state)
{
    char err[EVENT_ERR_MAX];
    char *name = xmalloc(200 * 3 + 1);
    struct event ev;
    char *doc;
    int i;

    for (i = 0; i < 200; i++) {
        memcpy(name + i * 3, "\xe6\x9d\xa5", 3);
    }
    name[600] = '\0';
    doc = jsonf("{" INVITE ",\"%s\":{\"%s\":\"\\u0000\"}}", name, name);
    assert_int_equal(event_decode(&ev, doc, strlen(doc), err), -1);

    /* 16 whole characters (48 bytes) of each name, then "...". */
    assert_int_equal(strlen(err), 2 * (48 + 3) + 1 + strlen(": contains ") +
                                      strlen("\\u0000"));
    assert_memory_equal(err + 48, "...", 3);
    assert_string_equal(err + strlen(err) - 20, "...: contains \\u0000");
    free(doc);
    free(name);
}

static void
test_release_is_harmless_after_failure_and_twice(void **state)
{
    char err[EVENT_ERR_MAX];
    struct event ev;

    assert_int_equal(event_decode(&ev, "{}", 2, err), -1);
    event_release(&ev);
    event_release(&ev);

    decode_ok(&ev, call_flow_invite);
    event_release(&ev);
    assert_null(ev.call_id);
    assert_null(ev.extras);
    event_release(&ev);
}

static void
test_event_type_names(void **state)
{
    assert_string_equal(event_type_name(EVENT_INVITE), "invite");
    assert_string_equal(event_type_name(EVENT_CANCEL), "cancel");
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_input_rejected),
        cmocka_unit_test(test_message_over_65536_bytes_rejected_before_parsing),
        cmocka_unit_test(test_message_of_exactly_65536_bytes_accepted),
        cmocka_unit_test(test_not_json_rejected),
        cmocka_unit_test(test_lenient_json_that_cjson_takes_rejected),
        cmocka_unit_test(test_json_that_is_not_an_object_rejected),
        cmocka_unit_test(test_trailing_data_rejected),
        cmocka_unit_test(test_invalid_utf8_rejected_with_offset),
        cmocka_unit_test(test_valid_multibyte_utf8_accepted),
        cmocka_unit_test(test_nul_escape_rejected_naming_the_field),
        cmocka_unit_test(test_unpaired_surrogate_escapes_rejected),
        cmocka_unit_test(test_surrogate_pair_escape_decodes_to_utf8),
        cmocka_unit_test(test_nesting_of_16_levels_accepted),
        cmocka_unit_test(test_nesting_of_17_levels_rejected),
        cmocka_unit_test(test_very_deep_nesting_rejected_without_recursing),
        cmocka_unit_test(test_white_space_everywhere_accepted),
        cmocka_unit_test(test_minimal_invite_has_defaults),
        cmocka_unit_test(test_missing_created_at_left_to_the_worker_when_asked),
        cmocka_unit_test(test_missing_required_field_named),
        cmocka_unit_test(test_type_must_be_invite_or_cancel),
        cmocka_unit_test(test_call_id_limits),
        cmocka_unit_test(test_msgid_above_2_53_kept_exact),
        cmocka_unit_test(test_msgid_int64_max_accepted),
        cmocka_unit_test(test_msgid_2_63_rejected),
        cmocka_unit_test(test_msgid_zero_accepted),
        cmocka_unit_test(test_msgid_as_string_kept_exact),
        cmocka_unit_test(test_msgid_string_with_leading_zero_rejected),
        cmocka_unit_test(test_msgid_string_must_be_digits),
        cmocka_unit_test(test_msgid_number_must_be_plain_non_negative),
        cmocka_unit_test(test_tokens_count_limits),
        cmocka_unit_test(test_token_format_rules),
        cmocka_unit_test(test_token_duplicates_removed_keeping_first),
        cmocka_unit_test(test_created_at_rules),
        cmocka_unit_test(test_uid_integer_kept_as_digits),
        cmocka_unit_test(test_uid_string_limits),
        cmocka_unit_test(test_ring_timeout_limits),
        cmocka_unit_test(test_ring_timeout_ignored_on_cancel),
        cmocka_unit_test(test_caller_fields),
        cmocka_unit_test(test_caller_rules),
        cmocka_unit_test(test_media_rules),
        cmocka_unit_test(test_reason_on_cancel),
        cmocka_unit_test(test_reason_ignored_on_invite),
        cmocka_unit_test(test_alert_rules),
        cmocka_unit_test(test_limits_count_bytes_not_characters),
        cmocka_unit_test(test_sound_rules),
        cmocka_unit_test(test_extras_order_and_raw_number_text_kept),
        cmocka_unit_test(test_extras_reserved_keys_rejected),
        cmocka_unit_test(test_extras_duplicate_key_rejected),
        cmocka_unit_test(test_extras_count_and_size_limits),
        cmocka_unit_test(test_extras_value_types),
        cmocka_unit_test(test_apns_topic_rules),
        cmocka_unit_test(test_environment_rules),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_duplicate_key_first_occurrence_wins),
        cmocka_unit_test(
            test_duplicate_key_spelled_with_escape_takes_first_number_text),
        cmocka_unit_test(test_call_flow_invite_decodes),
        cmocka_unit_test(test_every_prefix_rejected_without_crashing),
        cmocka_unit_test(test_every_byte_changed_never_crashes),
        cmocka_unit_test(test_long_names_in_errors_cut_at_character_boundary),
        cmocka_unit_test(test_release_is_harmless_after_failure_and_twice),
        cmocka_unit_test(test_event_type_names),
    };

    /* An optional argument runs only the tests whose names match it. */
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
