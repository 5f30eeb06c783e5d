#define _POSIX_C_SOURCE 200809L
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "metrics.h"
#include "util.h"

/* A scrape holds at most METRICS_LAG_ROWS lag rows of a few hundred bytes
 * each, far below this. */
#define ADMIN_BODY_MAX (1024 * 1024)

/* Probes and scrapes are few and quick. A client that stops sending or
 * reading is dropped after ADMIN_IDLE_TIMEOUT_S, and the connection limit
 * is generous, so that idle connections from anyone who can reach the
 * port cannot starve the kubelet's probes for long. */
#define ADMIN_MAX_CONNECTIONS 256
#define ADMIN_IDLE_TIMEOUT_S 2

#define TEXT_TYPE "text/plain; charset=utf-8"
#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct admin {
    struct MHD_Daemon *daemon;
    int port;
};

static unsigned
healthz(struct buf *body)
{
    int64_t age = util_mono_ms() - metrics_gauge(METRICS_LOOP_HEARTBEAT_MS);

    if (age < ADMIN_STALL_MS) {
        buf_adds(body, "ok\n");
        return MHD_HTTP_OK;
    }
    buf_addf(body, "loop stalled for %" PRId64 " ms\n", age);
    return MHD_HTTP_SERVICE_UNAVAILABLE;
}

static unsigned
readyz(struct buf *body)
{
    if (metrics_gauge(METRICS_ASSIGNED) <= 0) {
        buf_adds(body, "no partitions assigned\n");
    }
    if (metrics_gauge(METRICS_APNS_OK) != 1) {
        buf_adds(body, "APNs not reachable\n");
    }
    if (metrics_gauge(METRICS_CREDENTIALS_OK) != 1) {
        buf_adds(body, "no valid provider token\n");
    }
    if (body->len > 0) {
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    buf_adds(body, "ready\n");
    return MHD_HTTP_OK;
}

static unsigned
scrape(struct buf *body)
{
    metrics_render(body, util_mono_ms(), util_now_ms() / 1000);
    if (!buf_overflowed(body)) {
        return MHD_HTTP_OK;
    }
    buf_reset(body);
    buf_addf(body, "metrics exceed %d bytes\n", ADMIN_BODY_MAX);
    return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, const char *type,
      const struct buf *body)
{
    struct MHD_Response *resp;
    enum MHD_Result result;

    resp = MHD_create_response_from_buffer(body->len, body->data,
                                           MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET");
    }
    result = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return result;
}

/* Runs on libmicrohttpd's thread once a request's headers are in. Every
 * answer is decided from the request line alone, so it is queued at once,
 * whatever body the client may still be sending. */
static enum MHD_Result
answer(void *cls, struct MHD_Connection *conn, const char *url,
       const char *method, const char *version, const char *upload_data,
       size_t *upload_data_size, void **con_cls)
{
    const char *type = TEXT_TYPE;
    struct buf body;
    enum MHD_Result result;
    unsigned status;

    buf_init(&body, ADMIN_BODY_MAX);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        buf_adds(&body, "only GET is served\n");
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/healthz") == 0) {
        status = healthz(&body);
    } else if (strcmp(url, "/readyz") == 0) {
        status = readyz(&body);
    } else if (strcmp(url, "/metrics") == 0) {
        status = scrape(&body);
        type = status == MHD_HTTP_OK ? METRICS_TYPE : TEXT_TYPE;
    } else {
        buf_adds(&body, "not found; try /healthz, /readyz or /metrics\n");
        status = MHD_HTTP_NOT_FOUND;
    }

    result = reply(conn, status, type, &body);
    buf_release(&body);
    return result;
}

/* Reads a decimal port, 0 to 65535, that fills all of s. */
static int
parse_port(const char *s, int *port)
{
    long v = 0;
    size_t i, n = strlen(s);

    if (n == 0 || n > 5) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v > 65535) {
        return -1;
    }
    *port = (int)v;
    return 0;
}

/* Turns host into an IPv4 address: empty is every address, a dotted quad is
 * taken as it is, and anything else is a name for the resolver. */
static int
resolve_host(const char *host, struct in_addr *out, char *err)
{
    struct addrinfo hints, *res = NULL;
    int rc;

    if (host[0] == '\0') {
        out->s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (inet_pton(AF_INET, host, out) == 1) {
        return 0;
    }
    if (host[0] == '[') {
        snprintf(err, ADMIN_ERR_MAX,
                 "admin: %s: only IPv4 addresses can be listened on", host);
        return -1;
    }

    /* Digits and dots that are not an address are a typo, not a name: the
     * resolver would only ask DNS about it and fail slowly. */
    if (strspn(host, "0123456789.") == strlen(host) ||
        strspn(host,
               "abcdefghijklmnopqrstuvwxyz"
               "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(host)) {
        snprintf(err, ADMIN_ERR_MAX,
                 "admin: %s: not an IPv4 address or a host name", host);
        return -1;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, ADMIN_ERR_MAX, "admin: cannot resolve %s: %s", host,
                 gai_strerror(rc));
        return -1;
    }
    *out = ((const struct sockaddr_in *)(const void *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return 0;
}

/* Splits "[host]:port" into a socket address. */
static int
parse_addr(const char *addr, struct sockaddr_in *sin, char *err)
{
    const char *colon = strrchr(addr, ':');
    char *host;
    int port, rc;

    if (colon == NULL) {
        snprintf(err, ADMIN_ERR_MAX,
                 "admin: listen address \"%s\" is not [host]:port", addr);
        return -1;
    }
    if (parse_port(colon + 1, &port) < 0) {
        snprintf(err, ADMIN_ERR_MAX,
                 "admin: listen address \"%s\": the port must be a number "
                 "from 0 to 65535",
                 addr);
        return -1;
    }

    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    host = xstrndup(addr, (size_t)(colon - addr));
    rc = resolve_host(host, &sin->sin_addr, err);
    free(host);
    return rc;
}

/* Opens, binds and listens on a socket of our own rather than letting
 * libmicrohttpd do it, so that port 0 works and the port can be read back. */
static int
open_listener(const struct sockaddr_in *sin, int *port, char *err)
{
    struct sockaddr_in bound;
    socklen_t len = sizeof(bound);
    int fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, ADMIN_ERR_MAX, "admin: socket: %s", strerror(errno));
        return -1;
    }

    /* A restarted worker must not wait out the old socket's TIME_WAIT. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)sin, sizeof(*sin)) < 0 ||
        listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &len) < 0) {
        char ip[INET_ADDRSTRLEN];

        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(err, ADMIN_ERR_MAX, "admin: cannot listen on %s:%d: %s", ip,
                 ntohs(sin->sin_port), strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(bound.sin_port);
    return fd;
}

struct admin *
admin_start(const char *addr, char *err)
{
    struct sockaddr_in sin;
    struct admin *a;
    int fd, port;

    if (parse_addr(addr, &sin, err) < 0) {
        return NULL;
    }
    fd = open_listener(&sin, &port, err);
    if (fd < 0) {
        return NULL;
    }

    /* Without MHD_USE_ERROR_LOG libmicrohttpd prints nothing: failures
     * reach the caller through err instead. */
    a = xcalloc(1, sizeof(*a));
    a->port = port;
    a->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, answer, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)ADMIN_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)ADMIN_IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (a->daemon == NULL) {
        /* A daemon that failed to start leaves the given socket to us (seen
         * with libmicrohttpd 0.9.75); a running one closes it when
         * stopped. */
        snprintf(err, ADMIN_ERR_MAX,
                 "admin: libmicrohttpd failed to start on port %d", port);
        close(fd);
        free(a);
        return NULL;
    }
    return a;
}

int
admin_port(const struct admin *a)
{
    return a->port;
}

void
admin_stop(struct admin *a)
{
    if (a == NULL) {
        return;
    }
    MHD_stop_daemon(a->daemon);
    free(a);
}
