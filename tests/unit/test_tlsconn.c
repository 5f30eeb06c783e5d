/* Proxy settings: the URL forms accepted, the ones refused with a reason,
 * and which hosts NO_PROXY exempts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tlsconn.h"

static int
parse(struct tlsconn_target *t, const char *url, char *err)
{
    memset(t, 0, sizeof(*t));
    err[0] = '\0';
    return tlsconn_parse_proxy(t, url, err);
}

static void
test_proxy_forms(void **state)
{
    struct tlsconn_target t;
    char err[TLSCONN_ERR_MAX];

    assert_int_equal(parse(&t, "http://proxy.corp:3128", err), 0);
    assert_string_equal(t.proxy_host, "proxy.corp");
    assert_int_equal(t.proxy_port, 3128);
    assert_null(t.proxy_auth);

    assert_int_equal(parse(&t, "proxy.corp", err), 0);
    assert_int_equal(t.proxy_port, 1080);

    assert_int_equal(parse(&t, "http://[::1]:8080/", err), 0);
    assert_string_equal(t.proxy_host, "::1");
    assert_int_equal(t.proxy_port, 8080);

    assert_int_equal(parse(&t, "HTTP://me:p%40ss@10.0.0.1:3128", err), 0);
    assert_string_equal(t.proxy_host, "10.0.0.1");
    assert_string_equal(t.proxy_auth, "me:p@ss");
    free(t.proxy_auth);

    /* A raw '@' in the password: the host follows the last one. */
    assert_int_equal(parse(&t, "http://me:Sup3rS@cret@proxy:8080", err), 0);
    assert_string_equal(t.proxy_host, "proxy");
    assert_string_equal(t.proxy_auth, "me:Sup3rS@cret");
    free(t.proxy_auth);
}

static void
test_proxy_refused(void **state)
{
    struct tlsconn_target t;
    char err[TLSCONN_ERR_MAX];

    assert_int_equal(parse(&t, "socks5://127.0.0.1:1080", err), -1);
    assert_non_null(strstr(err, "only http://"));
    assert_int_equal(parse(&t, "https://proxy:3128", err), -1);
    assert_int_equal(parse(&t, "http://proxy:0", err), -1);
    assert_non_null(strstr(err, "port"));
    assert_int_equal(parse(&t, "http://proxy:65536", err), -1);
    assert_int_equal(parse(&t, "http://proxy:80x", err), -1);
    assert_int_equal(parse(&t, "http://:3128", err), -1);
    assert_non_null(strstr(err, "no host"));
    assert_int_equal(parse(&t, "http://[::1:3128", err), -1);
    assert_int_equal(parse(&t, "http://proxy/path", err), -1);
}

static void
test_no_proxy(void **state)
{
    const char *list = "localhost, .internal,10.1.2.3";

    assert_true(tlsconn_no_proxy(list, "localhost"));
    assert_true(tlsconn_no_proxy(list, "apns.internal"));
    assert_true(tlsconn_no_proxy(list, "internal"));
    assert_true(tlsconn_no_proxy(list, "10.1.2.3"));
    assert_false(tlsconn_no_proxy(list, "api.push.apple.com"));
    assert_false(tlsconn_no_proxy(list, "notinternal"));
    assert_false(tlsconn_no_proxy(list, "10.1.2.33"));
    assert_true(tlsconn_no_proxy("*", "api.push.apple.com"));
    assert_true(tlsconn_no_proxy("apple.com", "API.push.apple.com"));
    assert_false(tlsconn_no_proxy("", "localhost"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_forms),
        cmocka_unit_test(test_proxy_refused),
        cmocka_unit_test(test_no_proxy),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
