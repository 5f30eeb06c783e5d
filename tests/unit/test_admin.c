/* The admin listener, spoken to over loopback with plain HTTP/1.0. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "admin.h"
#include "metrics.h"
#include "util.h"

struct reply {
    int status;
    char head[2048];
    char body[64 * 1024];
};

static int
start(void **state)
{
    char err[ADMIN_ERR_MAX] = "";
    struct admin *a;

    metrics_reset();
    a = admin_start("127.0.0.1:0", err);
    if (a == NULL) {
        fail_msg("admin_start: %s", err);
    }
    assert_true(admin_port(a) > 0);
    *state = a;
    return 0;
}

static int
stop(void **state)
{
    admin_stop(*state);
    return 0;
}

/* Sends request as it is and reads the answer to the end: HTTP/1.0 closes
 * the connection after one response. */
static void
send_raw(int port, const char *request, struct reply *r)
{
    static char raw[sizeof(r->head) + sizeof(r->body)];
    struct timeval guard = {.tv_sec = 10};
    struct sockaddr_in sin;
    size_t len = 0;
    const char *split;
    ssize_t n;
    int fd;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);

    /* Only keeps a broken listener from hanging the test forever. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof(guard));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(write(fd, request, strlen(request)),
                     (ssize_t)strlen(request));
    while ((n = read(fd, raw + len, sizeof(raw) - 1 - len)) > 0) {
        len += (size_t)n;
    }
    assert_int_equal(n, 0);
    close(fd);
    raw[len] = '\0';

    split = strstr(raw, "\r\n\r\n");
    assert_non_null(split);
    assert_true((size_t)(split - raw) < sizeof(r->head));
    memcpy(r->head, raw, (size_t)(split - raw));
    r->head[split - raw] = '\0';
    util_strlcpy(r->body, split + 4, sizeof(r->body));
    assert_int_equal(sscanf(r->head, "HTTP/1.%*d %d", &r->status), 1);
}

static void
get(void **state, const char *path, struct reply *r)
{
    char request[256];

    snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\n\r\n", path);
    send_raw(admin_port(*state), request, r);
}

static void
make_ready(void)
{
    metrics_set(METRICS_ASSIGNED, 2);
    metrics_set(METRICS_APNS_OK, 1);
    metrics_set(METRICS_CREDENTIALS_OK, 1);
}

/* Descriptors the process has open, from /proc. */
static int
open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    int n = 0;

    assert_non_null(dir);
    while (readdir(dir) != NULL) {
        n++;
    }
    closedir(dir);
    return n;
}

static void
test_healthz_follows_the_heartbeat(void **state)
{
    static struct reply r;
    char *end;
    long long stalled;

    metrics_set(METRICS_LOOP_HEARTBEAT_MS, util_mono_ms());
    get(state, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");

    metrics_set(METRICS_LOOP_HEARTBEAT_MS,
                util_mono_ms() - ADMIN_STALL_MS - 5000);
    get(state, "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_memory_equal(r.body, "loop stalled for ", 17);
    stalled = strtoll(r.body + 17, &end, 10);
    assert_string_equal(end, " ms\n");
    assert_true(stalled >= ADMIN_STALL_MS + 5000);
}

static void
test_readyz_lists_each_unmet_condition(void **state)
{
    static struct reply r;

    get(state, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "no partitions assigned\n"
                                "APNs not reachable\n"
                                "no valid provider token\n");

    metrics_set(METRICS_ASSIGNED, 1);
    metrics_set(METRICS_CREDENTIALS_OK, 1);
    get(state, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "APNs not reachable\n");

    make_ready();
    get(state, "/readyz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");

    /* Losing the partitions in a rebalance takes readiness away again. */
    metrics_set(METRICS_ASSIGNED, 0);
    get(state, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "no partitions assigned\n");
}

static void
test_metrics_are_served_as_prometheus_text(void **state)
{
    static struct reply r;

    metrics_add(METRICS_EVENTS_INVITE, 42);
    metrics_push(410, "Unregistered");
    get(state, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "\r\nContent-Type: text/plain; "
                                   "version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(
        r.body, "\ncallpush_events_consumed_total{type=\"invite\"} 42\n"));
    assert_non_null(strstr(r.body, "\ncallpush_pushes_total{status=\"410\","
                                   "reason=\"Unregistered\"} 1\n"));
    assert_non_null(strstr(r.body, "\ncallpush_up 1\n"));
}

static void
test_unknown_paths_and_methods_are_refused(void **state)
{
    static struct reply r;

    make_ready();
    get(state, "/", &r);
    assert_int_equal(r.status, 404);
    get(state, "/metrics/extra", &r);
    assert_int_equal(r.status, 404);

    send_raw(admin_port(*state),
             "POST /readyz HTTP/1.0\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "\r\nAllow: GET"));
    send_raw(admin_port(*state), "DELETE /healthz HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
}

static void
test_bad_addresses_are_refused(void **state)
{
    static const struct {
        const char *addr;
        const char *why; /* a part of the message */
    } bad[] = {
        {"nohost:xx", "port"},
        {"1.2.3.4.5:80", "not an IPv4 address"},
        {":99999", "port"},
        {"8080", "[host]:port"},
        {"127.0.0.1:", "port"},
        {"[::1]:8080", "IPv4"},
        {"bad_name:80", "not an IPv4 address"},
    };
    char err[ADMIN_ERR_MAX];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_null(admin_start(bad[i].addr, err));
        if (strstr(err, bad[i].why) == NULL) {
            fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].addr, err,
                     bad[i].why);
        }
    }
}

static void
test_a_taken_port_is_refused(void **state)
{
    char addr[32], err[ADMIN_ERR_MAX] = "";
    int before = open_fds();

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", admin_port(*state));
    assert_null(admin_start(addr, err));
    assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
    assert_int_equal(open_fds(), before);
}

static void
test_localhost_listens(void **state)
{
    static struct reply r;
    char err[ADMIN_ERR_MAX] = "";
    struct admin *a;

    /* Only loopback here: an empty host would listen on every interface,
     * which a test must not do. */
    a = admin_start("localhost:0", err);
    if (a == NULL) {
        fail_msg("localhost: %s", err);
    }
    get((void **)&a, "/nowhere", &r);
    assert_int_equal(r.status, 404);
    admin_stop(a);
    admin_stop(NULL);
}

static void
test_stop_closes_the_port_and_every_descriptor(void **state)
{
    static struct reply r;
    char err[ADMIN_ERR_MAX] = "";
    struct sockaddr_in sin;
    struct admin *a;
    int before, fd, port;

    before = open_fds();
    a = admin_start("127.0.0.1:0", err);
    assert_non_null(a);
    port = admin_port(a);
    get((void **)&a, "/healthz", &r);
    admin_stop(a);
    assert_int_equal(open_fds(), before);

    /* Nothing answers on the port any more. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(fd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_healthz_follows_the_heartbeat,
                                        start, stop),
        cmocka_unit_test_setup_teardown(test_readyz_lists_each_unmet_condition,
                                        start, stop),
        cmocka_unit_test_setup_teardown(
            test_metrics_are_served_as_prometheus_text, start, stop),
        cmocka_unit_test_setup_teardown(
            test_unknown_paths_and_methods_are_refused, start, stop),
        cmocka_unit_test(test_bad_addresses_are_refused),
        cmocka_unit_test_setup_teardown(test_a_taken_port_is_refused, start,
                                        stop),
        cmocka_unit_test(test_localhost_listens),
        cmocka_unit_test(test_stop_closes_the_port_and_every_descriptor),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
