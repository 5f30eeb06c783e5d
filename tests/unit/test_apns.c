/* Every APNs status and reason lands on the action Apple's documentation
 * (and so the worker) expects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "apns.h"

static void
test_success_is_delivered(void **state)
{
    assert_int_equal(apns_classify(200, ""), APNS_DELIVERED);
}

static void
test_request_errors_are_fixed_not_retried(void **state)
{
    static const char *const reasons[] = {
        "BadCollapseId",   "BadExpirationDate",  "BadMessageId",
        "BadPriority",     "BadTopic",           "DuplicateHeaders",
        "InvalidPushType", "MissingDeviceToken", "MissingTopic",
        "PayloadEmpty",    "TopicDisallowed"};
    size_t i;

    for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        assert_int_equal(apns_classify(400, reasons[i]), APNS_FIX);
    }
    assert_int_equal(apns_classify(403, "InvalidProviderToken"), APNS_FIX);
    assert_int_equal(apns_classify(403, "BadCertificate"), APNS_FIX);
    assert_int_equal(apns_classify(404, "BadPath"), APNS_FIX);
    assert_int_equal(apns_classify(405, "MethodNotAllowed"), APNS_FIX);
    assert_int_equal(apns_classify(413, "PayloadTooLarge"), APNS_FIX);
}

static void
test_dead_tokens_are_invalidated(void **state)
{
    assert_int_equal(apns_classify(410, "Unregistered"), APNS_INVALIDATE);
    assert_int_equal(apns_classify(410, "ExpiredToken"), APNS_INVALIDATE);
    assert_int_equal(apns_classify(400, "BadDeviceToken"), APNS_INVALIDATE);
    assert_int_equal(apns_classify(400, "DeviceTokenNotForTopic"),
                     APNS_INVALIDATE);
}

static void
test_transient_errors_are_retried(void **state)
{
    assert_int_equal(apns_classify(429, "TooManyRequests"), APNS_RETRY);
    assert_int_equal(apns_classify(500, "InternalServerError"), APNS_RETRY);
    assert_int_equal(apns_classify(503, "ServiceUnavailable"), APNS_RETRY);
    /* An undocumented 5xx is the server's trouble too. */
    assert_int_equal(apns_classify(502, ""), APNS_RETRY);
}

static void
test_connection_level_answers_reconnect_or_refresh(void **state)
{
    assert_int_equal(apns_classify(0, "Connection refused"), APNS_RECONNECT);
    assert_int_equal(apns_classify(400, "IdleTimeout"), APNS_RECONNECT);
    assert_int_equal(apns_classify(403, "UnrelatedKeyIdInToken"),
                     APNS_RECONNECT);
    assert_int_equal(apns_classify(429, "TooManyProviderTokenUpdates"),
                     APNS_RECONNECT);
    assert_int_equal(apns_classify(503, "Shutdown"), APNS_RECONNECT);
    assert_int_equal(apns_classify(403, "ExpiredProviderToken"), APNS_REFRESH);
}

static void
test_unknown_client_errors_are_fixed(void **state)
{
    assert_int_equal(apns_classify(418, "Teapot"), APNS_FIX);
    assert_int_equal(apns_classify(400, NULL), APNS_FIX);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_is_delivered),
        cmocka_unit_test(test_request_errors_are_fixed_not_retried),
        cmocka_unit_test(test_dead_tokens_are_invalidated),
        cmocka_unit_test(test_transient_errors_are_retried),
        cmocka_unit_test(test_connection_level_answers_reconnect_or_refresh),
        cmocka_unit_test(test_unknown_client_errors_are_fixed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
