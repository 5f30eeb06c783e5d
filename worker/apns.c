#define _GNU_SOURCE
#include "apns.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>

#include "log.h"
#include "tlsconn.h"
#include "util.h"

/* An APNs error body is {"reason":"…","timestamp":…}: anything longer is
 * not from APNs and is cut. */
#define APNS_BODY_MAX 512
#define APNS_BACKOFF_BASE_MS 200
#define APNS_BACKOFF_MAX_MS 5000
#define APNS_PING_DEFAULT_MS 60000
/* How often deadlines are checked while requests are in flight. */
#define APNS_SCAN_MS 20
/* Bytes gathered from nghttp2 before they go to TLS in one write. */
#define APNS_OUT_MAX (64 * 1024)
#define APNS_READ_CHUNK (16 * 1024)
/* Reads per connection per apns_run(), so one busy connection cannot
 * starve the others. */
#define APNS_READS_PER_RUN 8
/* A push the servers keep failing to process is treated as a failed
 * attempt after this many free resends. */
#define APNS_RESENDS_MAX 3
#define APNS_HOSTS 2
/* Longest an urgent push waits for a push to the same device that is on
 * the wire, to arrive after it. */
#define APNS_ORDER_WAIT_MS 500
/* A connection quiet this long is sent a PING with the next request, and
 * one whose stream passed its deadline with nothing heard since is
 * checked by a PING too; either PING gets this long. A silent
 * connection (a NAT that dropped it) is so found in seconds, not after
 * the idle PING interval. */
#define APNS_QUIET_MS 5000
#define APNS_CHECK_PING_MS 2000

/* A doubly linked list of requests; a request is on at most one. */
struct req_list {
    struct apns_req *head, *tail;
    size_t len;
};

enum req_where { REQ_NOWHERE, REQ_RETRY, REQ_PENDING, REQ_STREAM, REQ_DONE };

struct apns_req {
    struct apns_push push;
    struct apns *owner;
    struct apns_host *host;
    struct apns_req *all_prev, *all_next; /* every request not yet done */
    struct apns_req *prev, *next;         /* on the list where says */
    enum req_where where;
    struct apns_conn *conn; /* with a stream */
    int32_t stream_id;
    size_t body_off;

    int64_t deadline; /* monotonic ms: the current attempt's end */
    int64_t sent_at;  /* monotonic ms: when its stream opened */
    int64_t retry_at; /* monotonic ms, while waiting to retry */
    int attempts;
    int resends;       /* free resends of unprocessed streams */
    int refreshed;     /* already answered one ExpiredProviderToken */
    int last_status;   /* the previous attempt's status, 0 for none */
    uint64_t sent_gen; /* the provider token the attempt carried */

    /* The answer to the current attempt. */
    int status;
    char body[APNS_BODY_MAX];
    size_t body_len;
    char resp_id[40];
    char reason[APNS_REASON_MAX];
};

enum conn_state { CONN_CONNECTING, CONN_READY, CONN_DRAINING };

struct apns_conn {
    struct apns *owner;
    struct apns_host *host;
    struct apns_conn *next; /* the host's connections */
    unsigned long id;
    int urgent; /* reserved for urgent pushes */
    enum conn_state state;
    struct tlsconn tls;
    nghttp2_session *h2;
    struct req_list streams; /* requests with a stream here */
    short revents;
    int closing; /* set once it must go; closed by conn_reap() */
    char why[APNS_REASON_MAX];

    uint8_t *out; /* bytes from nghttp2 waiting for TLS */
    size_t out_len, out_off;
    const uint8_t *pend; /* nghttp2's buffer, not yet copied into out */
    size_t pend_len;

    uint64_t answers;         /* responses received */
    int64_t connect_deadline; /* monotonic ms */
    int64_t last_recv;        /* monotonic ms of the last frame */
    int64_t ping_sent;        /* monotonic ms, 0 for no PING out */
    int ping_limit;           /* ms the PING out may take */
    int suspect;        /* no new streams until the PING out is answered */
    uint64_t token_gen; /* provider token it carried, 0 for none */
};

struct apns_host {
    struct apns *owner;
    char url[256];
    char authority[TLSCONN_HOST_MAX + 8];
    struct tlsconn_target target;
    struct apns_conn *conns;
    int live;        /* connections not draining, urgent one excluded */
    int urgent_live; /* 0 or 1 */
    struct req_list pending, pending_urgent;
    int connect_failures;
    int64_t connect_at; /* monotonic ms: no new connection before it */
    char last_error[APNS_REASON_MAX];
};

struct apns {
    struct apns_opts opts;
    apns_done_fn *done;
    SSL_CTX *ctx;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *h2opt;
    struct apns_host hosts[APNS_HOSTS];
    int nhosts;
    struct req_list retries;  /* by retry_at */
    struct req_list finished; /* answered, waiting for apns_run() */
    struct apns_req *all;     /* every request not yet done */
    size_t inflight;
    unsigned long next_conn_id;
    int64_t next_scan;
    char auth[1024];   /* "bearer <JWT>" */
    uint64_t auth_gen; /* counts the tokens auth has held */
    struct pollfd *pfds;
    struct apns_conn **pconns;
    size_t pcap;
    struct apns_stats stats;
};

/* ---- lists ------------------------------------------------------------- */

static void
list_push(struct req_list *l, struct apns_req *r)
{
    r->prev = l->tail;
    r->next = NULL;
    if (l->tail != NULL) {
        l->tail->next = r;
    } else {
        l->head = r;
    }
    l->tail = r;
    l->len++;
}

static void
list_push_front(struct req_list *l, struct apns_req *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head != NULL) {
        l->head->prev = r;
    } else {
        l->tail = r;
    }
    l->head = r;
    l->len++;
}

static void
list_remove(struct req_list *l, struct apns_req *r)
{
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        l->head = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    } else {
        l->tail = r->prev;
    }
    r->prev = r->next = NULL;
    l->len--;
}

/* ---- answers ----------------------------------------------------------- */

static const struct {
    int status;
    const char *reason; /* NULL: any reason with that status */
    enum apns_action action;
} apns_table[] = {
    {400, "BadDeviceToken", APNS_INVALIDATE},
    {400, "DeviceTokenNotForTopic", APNS_INVALIDATE},
    {400, "IdleTimeout", APNS_RECONNECT},
    {400, NULL, APNS_FIX},
    {403, "ExpiredProviderToken", APNS_REFRESH},
    {403, "UnrelatedKeyIdInToken", APNS_RECONNECT},
    {403, NULL, APNS_FIX},
    {404, NULL, APNS_FIX},
    {405, NULL, APNS_FIX},
    {410, NULL, APNS_INVALIDATE},
    {413, NULL, APNS_FIX},
    {429, "TooManyProviderTokenUpdates", APNS_RECONNECT},
    {429, NULL, APNS_RETRY},
    {500, NULL, APNS_RETRY},
    {503, "Shutdown", APNS_RECONNECT},
    {503, NULL, APNS_RETRY},
};

enum apns_action
apns_classify(int status, const char *reason)
{
    size_t i;

    if (status == 200) {
        return APNS_DELIVERED;
    }
    if (status == 0) {
        /* No answer at all: the connection or the deadline failed. */
        return APNS_RECONNECT;
    }
    for (i = 0; i < UTIL_ARRAY_LEN(apns_table); i++) {
        if (apns_table[i].status != status) {
            continue;
        }
        if (apns_table[i].reason == NULL ||
            (reason != NULL && strcmp(apns_table[i].reason, reason) == 0)) {
            return apns_table[i].action;
        }
    }
    /* A status Apple does not document: a 5xx is the server's trouble,
     * anything else is ours. */
    return status >= 500 ? APNS_RETRY : APNS_FIX;
}

const char *
apns_action_name(enum apns_action action)
{
    switch (action) {
    case APNS_DELIVERED:
        return "delivered";
    case APNS_FIX:
        return "fix";
    case APNS_INVALIDATE:
        return "invalidate";
    case APNS_RETRY:
        return "retry";
    case APNS_RECONNECT:
        return "reconnect";
    case APNS_REFRESH:
        return "refresh";
    }
    return "unknown";
}

/* The passphrase a certificate key's password file holds: its first line,
 * without the line end. Longer than a PEM passphrase may be is refused. */
#define APNS_PASS_MAX 1024

char *
apns_read_password(const char *path, char *err)
{
    char line[APNS_PASS_MAX + 2];
    FILE *f = fopen(path, "r");
    size_t n;
    char *pass;

    if (f == NULL) {
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_PASSWORD_FILE %s: cannot read it", path);
        return NULL;
    }
    if (fgets(line, sizeof(line), f) == NULL) {
        line[0] = '\0';
    }
    fclose(f);
    n = strcspn(line, "\r\n");
    if (n > APNS_PASS_MAX) {
        OPENSSL_cleanse(line, sizeof(line));
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_PASSWORD_FILE %s: the first line is "
                 "longer than %d bytes",
                 path, APNS_PASS_MAX);
        return NULL;
    }
    line[n] = '\0';
    pass = xstrdup(line);
    OPENSSL_cleanse(line, sizeof(line));
    return pass;
}

/* ---- clocks, tokens, requests ------------------------------------------ */

static int64_t
wall_ms(const struct apns *a)
{
    return a->opts.clock_ms != NULL ? a->opts.clock_ms() : util_now_ms();
}

/* The authorization value, re-signed by the jwt module when due. */
static const char *
apns_auth(struct apns *a, char *err)
{
    const char *token = jwt_token(a->opts.jwt, wall_ms(a) / 1000, err);

    if (token == NULL) {
        return NULL;
    }
    /* Compared as text: a token renewed within the second keeps its iat. */
    if (a->auth[0] == '\0' || strcmp(a->auth + 7, token) != 0) {
        snprintf(a->auth, sizeof(a->auth), "bearer %s", token);
        a->auth_gen++;
    }
    return a->auth;
}

static struct req_list *
pending_list(struct apns_req *r)
{
    return r->push.urgent ? &r->host->pending_urgent : &r->host->pending;
}

/* Takes r off whatever list it is on. */
static void
req_unlink(struct apns_req *r)
{
    struct apns *a = r->owner;

    switch (r->where) {
    case REQ_RETRY:
        list_remove(&a->retries, r);
        break;
    case REQ_PENDING:
        list_remove(pending_list(r), r);
        break;
    case REQ_STREAM:
        list_remove(&r->conn->streams, r);
        r->conn = NULL;
        break;
    case REQ_DONE:
        list_remove(&a->finished, r);
        break;
    case REQ_NOWHERE:
        break;
    }
    r->where = REQ_NOWHERE;
}

/* Inserts r into the retry list, which is kept sorted by retry_at. */
static void
retry_insert(struct apns *a, struct apns_req *r)
{
    struct apns_req *at = a->retries.tail;

    while (at != NULL && at->retry_at > r->retry_at) {
        at = at->prev;
    }
    r->where = REQ_RETRY;
    if (at == NULL) {
        list_push_front(&a->retries, r);
        return;
    }
    r->prev = at;
    r->next = at->next;
    if (at->next != NULL) {
        at->next->prev = r;
    } else {
        a->retries.tail = r;
    }
    at->next = r;
    a->retries.len++;
}

/* Starts an attempt: the request waits for a stream, with a deadline. */
static void
attempt_start(struct apns_req *r)
{
    r->attempts++;
    r->status = 0;
    r->body_len = 0;
    r->body[0] = '\0';
    r->resp_id[0] = '\0';
    r->reason[0] = '\0';
    r->deadline = util_mono_ms() + r->owner->opts.timeout_ms;
    r->where = REQ_PENDING;
    list_push(pending_list(r), r);
}

/* Ends the current attempt without an answer from APNs; the request is
 * judged in apns_run(), outside every library callback. */
static void attempt_fail(struct apns_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
attempt_fail(struct apns_req *r, const char *fmt, ...)
{
    va_list ap;

    req_unlink(r);
    r->status = 0;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    r->where = REQ_DONE;
    list_push(&r->owner->finished, r);
}

/*
 * Sends r again at once, ahead of the queue, because the server did not
 * process it (or may not have). A request that keeps coming back ends
 * its attempt instead, so a server refusing everything cannot loop it.
 */
static void
req_resend(struct apns_req *r, const char *why)
{
    req_unlink(r);
    r->owner->stats.resent++;
    if (++r->resends > APNS_RESENDS_MAX) {
        r->where = REQ_DONE;
        r->status = 0;
        snprintf(r->reason, sizeof(r->reason), "%s, %d times", why, r->resends);
        list_push(&r->owner->finished, r);
        return;
    }
    r->deadline = util_mono_ms() + r->owner->opts.timeout_ms;
    r->where = REQ_PENDING;
    list_push_front(pending_list(r), r);
}

int
apns_submit(struct apns *a, const struct apns_push *push)
{
    struct apns_req *r = xcalloc(1, sizeof(*r));

    r->push = *push;
    r->owner = a;
    r->host = &a->hosts[push->sandbox && a->nhosts > 1 ? 1 : 0];
    r->all_next = a->all;
    if (a->all != NULL) {
        a->all->all_prev = r;
    }
    a->all = r;
    a->inflight++;

    /* Every push starts from the retry list with no delay, so the done
     * callback can never fire inside apns_submit(). */
    r->retry_at = util_mono_ms();
    retry_insert(a, r);
    return 0;
}

/* Exponential back-off with jitter: a random delay between half and all of
 * base * 2^(attempt-1), capped, so many pushes failing together do not
 * come back together. */
static int64_t
backoff_ms(int attempt)
{
    int64_t d = APNS_BACKOFF_BASE_MS;
    int i;

    for (i = 1; i < attempt && d < APNS_BACKOFF_MAX_MS; i++) {
        d *= 2;
    }
    if (d > APNS_BACKOFF_MAX_MS) {
        d = APNS_BACKOFF_MAX_MS;
    }
    return d / 2 + random() % (d / 2 + 1);
}

static void
req_free(struct apns_req *r)
{
    free(r);
}

static void
req_done_as(struct apns_req *r, enum apns_action action, int status,
            int64_t timestamp_ms, int gave_up, int dropped)
{
    struct apns *a = r->owner;
    struct apns_result res;

    req_unlink(r);
    res.action = action;
    res.status = status;
    res.reason = r->reason;
    res.apns_id = r->resp_id[0] != '\0' ? r->resp_id : r->push.apns_id;
    res.timestamp_ms = timestamp_ms;
    res.attempts = r->attempts;
    res.gave_up = gave_up;
    res.dropped = dropped;
    a->inflight--;
    if (r->all_prev != NULL) {
        r->all_prev->all_next = r->all_next;
    } else {
        a->all = r->all_next;
    }
    if (r->all_next != NULL) {
        r->all_next->all_prev = r->all_prev;
    }
    a->done(r->push.ctx, &r->push, &res);
    req_free(r);
}

/*
 * APNs called the provider token expired. A token newer than the one this
 * attempt carried is simply used; otherwise a new one is signed, once per
 * push, so a wrong clock cannot make the worker mint tokens in a loop.
 * The jwt module refuses to sign again within 20 minutes; then the push
 * fails, and the error names the local clock. Returns 0 when the push may
 * be resent.
 */
static int
req_refresh(struct apns_req *r)
{
    struct apns *a = r->owner;
    char err[JWT_ERR_MAX];

    /* Without a provider token there is nothing to renew: APNs would
     * not say this of a certificate connection. */
    if (r->refreshed || a->opts.jwt == NULL) {
        return -1;
    }
    r->refreshed = 1;
    if (apns_auth(a, err) != NULL && a->auth_gen != r->sent_gen) {
        return 0;
    }
    if (jwt_renew(a->opts.jwt, wall_ms(a) / 1000, err) < 0) {
        snprintf(r->reason, sizeof(r->reason), "ExpiredProviderToken: %.300s",
                 err);
        return -1;
    }
    a->stats.token_renewals++;
    return 0;
}

/* Judges a finished attempt: done, resent at once, or retried later. */
static void
req_judge(struct apns_req *r, int64_t timestamp_ms)
{
    int status = r->status;
    enum apns_action action = apns_classify(status, r->reason);
    int64_t delay;

    req_unlink(r);
    r->last_status = status;
    if (action == APNS_REFRESH) {
        if (req_refresh(r) < 0) {
            req_done_as(r, APNS_FIX, status, timestamp_ms, 0, 0);
            return;
        }
        /* Connections that carried the old token are retired when the
         * new one is first used, so the resend goes on a new one. */
        attempt_start(r);
        return;
    }
    if (action != APNS_RETRY && action != APNS_RECONNECT) {
        req_done_as(r, action, status, timestamp_ms, 0, 0);
        return;
    }
    delay = backoff_ms(r->attempts);
    if (wall_ms(r->owner) + delay >= r->push.give_up_ms) {
        req_done_as(r, action, status, timestamp_ms, 1, 0);
        return;
    }
    r->retry_at = util_mono_ms() + delay;
    retry_insert(r->owner, r);
}

/* Reads reason and timestamp out of an APNs error body. */
static int64_t
parse_answer(struct apns_req *r)
{
    int64_t timestamp_ms = 0;
    cJSON *j;
    const cJSON *v;

    if (r->status == 200 || r->body_len == 0) {
        return 0;
    }
    j = cJSON_ParseWithLength(r->body, r->body_len);
    v = cJSON_GetObjectItemCaseSensitive(j, "reason");
    if (cJSON_IsString(v)) {
        util_strlcpy(r->reason, v->valuestring, sizeof(r->reason));
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "timestamp");
    if (cJSON_IsNumber(v)) {
        timestamp_ms = (int64_t)v->valuedouble;
    }
    cJSON_Delete(j);
    return timestamp_ms;
}

static void
process_finished(struct apns *a)
{
    while (a->finished.head != NULL) {
        struct apns_req *r = a->finished.head;

        req_judge(r, parse_answer(r));
    }
}

static void
start_due(struct apns *a)
{
    int64_t now = util_mono_ms();

    while (a->retries.head != NULL && a->retries.head->retry_at <= now) {
        struct apns_req *r = a->retries.head;

        if (r->attempts > 0 && wall_ms(a) >= r->push.give_up_ms) {
            /* Reported with the last answer's status and reason. */
            req_done_as(r, apns_classify(r->last_status, r->reason),
                        r->last_status, 0, 1, 0);
            continue;
        }
        if (r->attempts > 0 && a->opts.wanted != NULL &&
            !a->opts.wanted(r->push.ctx)) {
            /* Keeps the last answer's status and reason for the log. */
            req_done_as(r, apns_classify(r->last_status, r->reason),
                        r->last_status, 0, 0, 1);
            continue;
        }
        req_unlink(r);
        attempt_start(r);
    }
}

/* ---- connections ------------------------------------------------------- */

/*
 * One line per change of a connection. Changes are few (connections are
 * kept), so each is logged; only failures to connect, which repeat while a
 * host is down, are counted rather than repeated.
 */
static void
conn_log(const struct apns_conn *c, enum log_level level, const char *msg,
         const char *why, int64_t resent)
{
    const struct tlsconn_target *t = &c->host->target;
    struct buf *line = level >= LOG_WARN
                           ? log_begin_limited(level, msg, c->host->url)
                           : log_begin(level, msg);
    char proxy[TLSCONN_HOST_MAX + 16];

    if (line == NULL) {
        return;
    }
    log_str(line, "apns_host", c->host->authority);
    log_int(line, "conn", (int64_t)c->id);
    log_int(line, "urgent", c->urgent);
    if (t->proxy_host[0] != '\0') {
        snprintf(proxy, sizeof(proxy), "%s:%d", t->proxy_host, t->proxy_port);
        log_str(line, "proxy", proxy);
    }
    if (why != NULL) {
        log_str(line, "reason", why);
    }
    if (resent >= 0) {
        log_int(line, "resent", resent);
    }
    log_end(line);
}

/* Marks c for closing; conn_reap() closes it and resends its streams. */
static void
conn_close(struct apns_conn *c, const char *why)
{
    if (!c->closing) {
        c->closing = 1;
        util_strlcpy(c->why, why, sizeof(c->why));
    }
}

/* No new streams on c; it closes once its streams are done. */
static void
conn_retire(struct apns_conn *c, const char *why)
{
    if (c->state == CONN_DRAINING || c->closing) {
        return;
    }
    if (c->urgent) {
        c->host->urgent_live--;
    } else {
        c->host->live--;
    }
    c->state = CONN_DRAINING;
    util_strlcpy(c->why, why, sizeof(c->why));
    conn_log(c, LOG_INFO, "apns connection retired", why, -1);
}

static int
on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
          size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
          void *ud)
{
    struct apns_req *r;

    if (f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (r == NULL) {
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3) {
        int status =
            (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');

        /* An informational answer (1xx) is not the answer. */
        if (status >= 200) {
            r->status = status;
        }
    } else if (namelen == 7 && memcmp(name, "apns-id", 7) == 0 &&
               valuelen < sizeof(r->resp_id)) {
        memcpy(r->resp_id, value, valuelen);
        r->resp_id[valuelen] = '\0';
    }
    return 0;
}

static int
on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id,
        const uint8_t *data, size_t len, void *ud)
{
    struct apns_req *r = nghttp2_session_get_stream_user_data(s, stream_id);
    size_t room;

    if (r == NULL) {
        return 0;
    }
    room = sizeof(r->body) - 1 - r->body_len;
    if (len > room) {
        len = room;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int
on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                void *ud)
{
    struct apns_conn *c = ud;
    struct apns_req *r = nghttp2_session_get_stream_user_data(s, stream_id);

    if (r == NULL || r->conn != c) {
        return 0;
    }
    /* A final status is APNs's decision, however the stream then ends. */
    if (r->status != 0) {
        /* The host answers: connecting to it works again. */
        c->answers++;
        c->host->connect_failures = 0;
        c->host->last_error[0] = '\0';
        req_unlink(r);
        parse_answer(r);
        /* Some answers say the connection itself is done for. */
        if (apns_classify(r->status, r->reason) == APNS_RECONNECT) {
            conn_retire(c, r->reason);
        }
        r->where = REQ_DONE;
        list_push(&c->owner->finished, r);
        return 0;
    }
    if (error_code == NGHTTP2_REFUSED_STREAM) {
        /* GOAWAY's last-stream-id or a refused stream: APNs did not
         * process it, so sending it again cannot deliver it twice. */
        req_resend(r, "stream not processed by APNs");
        return 0;
    }
    attempt_fail(r, "stream reset by APNs: %s",
                 nghttp2_http2_strerror(error_code));
    return 0;
}

static int
on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct apns_conn *c = ud;
    char why[APNS_REASON_MAX];

    c->last_recv = util_mono_ms();
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->ping_sent = 0;
        c->suspect = 0;
    } else if (f->hd.type == NGHTTP2_GOAWAY) {
        const nghttp2_goaway *g = &f->goaway;
        int dlen = g->opaque_data_len > 100 ? 100 : (int)g->opaque_data_len;

        c->owner->stats.goaways++;
        snprintf(why, sizeof(why), "GOAWAY %s, last stream %d%s%.*s",
                 nghttp2_http2_strerror(g->error_code), g->last_stream_id,
                 dlen > 0 ? ": " : "", dlen,
                 dlen > 0 ? (const char *)g->opaque_data : "");
        conn_retire(c, why);
    }
    return 0;
}

static int
on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_error,
                  void *ud)
{
    struct apns_conn *c = ud;
    struct apns_req *r;

    if (f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    /* The request never left: typically GOAWAY came first. */
    for (r = c->streams.head; r != NULL; r = r->next) {
        if (r->stream_id == f->hd.stream_id) {
            nghttp2_session_set_stream_user_data(s, r->stream_id, NULL);
            req_resend(r, "request not sent");
            break;
        }
    }
    return 0;
}

static ssize_t
body_read(nghttp2_session *s, int32_t stream_id, uint8_t *out, size_t len,
          uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct apns_req *r = src->ptr;
    size_t left = r->push.body_len - r->body_off;

    if (len > left) {
        len = left;
    }
    memcpy(out, r->push.body + r->body_off, len);
    r->body_off += len;
    if (r->body_off == r->push.body_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)len;
}

static void
conn_open(struct apns_host *h, int urgent)
{
    struct apns *a = h->owner;
    struct apns_conn *c = xcalloc(1, sizeof(*c));

    c->owner = a;
    c->host = h;
    c->id = ++a->next_conn_id;
    c->urgent = urgent;
    c->state = CONN_CONNECTING;
    c->connect_deadline = util_mono_ms() + a->opts.timeout_ms;
    c->next = h->conns;
    h->conns = c;
    if (urgent) {
        h->urgent_live++;
    } else {
        h->live++;
    }
    if (tlsconn_start(&c->tls, a->ctx, &h->target) < 0) {
        conn_close(c, c->tls.err);
    }
}

/* The TLS connection is up: start HTTP/2 on it. */
static void
conn_ready(struct apns_conn *c)
{
    struct apns *a = c->owner;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    int rv;

    rv = nghttp2_session_client_new2(&c->h2, a->cbs, c, a->h2opt);
    if (rv == 0) {
        rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv,
                                     UTIL_ARRAY_LEN(iv));
    }
    if (rv != 0) {
        conn_close(c, nghttp2_strerror(rv));
        return;
    }
    c->out = xmalloc(APNS_OUT_MAX);
    c->state = CONN_READY;
    c->last_recv = util_mono_ms();
    a->stats.connects++;
    conn_log(c, LOG_INFO, "apns connection open", NULL, -1);
}

/* Frees c after sending its unanswered requests again elsewhere. */
static void
conn_destroy(struct apns_conn *c)
{
    struct apns *a = c->owner;
    struct apns_host *h = c->host;
    struct apns_conn **pp;
    size_t resent = c->streams.len;
    char why[APNS_REASON_MAX];

    util_strlcpy(why, c->why[0] != '\0' ? c->why : "closed", sizeof(why));
    while (c->streams.head != NULL) {
        /* No answer came: the server may or may not have it. Sending it
         * again keeps the apns-id and collapse id, so a phone that gets
         * both shows one. */
        req_resend(c->streams.head, why);
    }
    if (c->state != CONN_DRAINING) {
        if (c->urgent) {
            h->urgent_live--;
        } else {
            h->live--;
        }
    }
    /* A connection that ends before any answer (refused, a handshake
     * that fails, a server that closes at once) delays the next one, so
     * a broken host gets no storm of connections. */
    if (c->answers == 0) {
        int64_t wait = (int64_t)100
                       << (h->connect_failures < 6 ? h->connect_failures : 6);

        h->connect_failures++;
        h->connect_at = util_mono_ms() + wait;
        util_strlcpy(h->last_error, why, sizeof(h->last_error));
    }
    if (c->h2 == NULL) {
        a->stats.connect_fails++;
        conn_log(c, LOG_WARN, "apns connection failed", why, -1);
    } else {
        conn_log(c, LOG_INFO, "apns connection closed", why, (int64_t)resent);
    }
    for (pp = &h->conns; *pp != c; pp = &(*pp)->next) {
    }
    *pp = c->next;
    nghttp2_session_del(c->h2);
    tlsconn_close(&c->tls);
    free(c->out);
    free(c);
}

/* Closes what is marked, drained or finished by the server. */
static void
conn_reap(struct apns_host *h)
{
    struct apns_conn *c = h->conns, *next;

    for (; c != NULL; c = next) {
        next = c->next;
        if (!c->closing && c->h2 != NULL && !nghttp2_session_want_read(c->h2) &&
            !nghttp2_session_want_write(c->h2) && c->out_len == 0) {
            conn_close(c, c->why[0] != '\0' ? c->why : "closed by HTTP/2");
        }
        if (!c->closing && c->state == CONN_DRAINING && c->streams.len == 0 &&
            c->out_len == 0 && c->pend_len == 0) {
            conn_close(c, c->why);
        }
        if (c->closing) {
            conn_destroy(c);
        }
    }
}

/* Sends a PING unless one is out already; no answer within limit_ms
 * closes the connection. */
static void
conn_ping(struct apns_conn *c, int limit_ms)
{
    if (c->ping_sent != 0 || c->h2 == NULL) {
        return;
    }
    nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
    c->ping_sent = util_mono_ms();
    c->ping_limit = limit_ms;
}

/* Streams c may open now. */
static size_t
conn_room(struct apns_conn *c)
{
    uint32_t max;

    if (c->state != CONN_READY || c->closing || c->suspect) {
        return 0;
    }
    max = nghttp2_session_get_remote_settings(
        c->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return max > c->streams.len ? max - c->streams.len : 0;
}

/* The least loaded connection with room, of the urgent kind or not. */
static struct apns_conn *
pick_conn(struct apns_host *h, int urgent)
{
    struct apns *a = h->owner;
    struct apns_conn *c, *best = NULL;
    size_t best_room = 0;

    for (c = h->conns; c != NULL; c = c->next) {
        size_t room;

        if (c->urgent != urgent) {
            continue;
        }
        /* APNs refuses a connection whose token changes more often than
         * every 20 minutes: one token per connection, always. */
        if (a->opts.jwt != NULL && c->token_gen != 0 &&
            c->token_gen != a->auth_gen && c->state == CONN_READY) {
            a->stats.token_moves++;
            conn_retire(c, "provider token renewed");
            continue;
        }
        room = conn_room(c);
        if (room > best_room) {
            best = c;
            best_room = room;
        }
    }
    return best;
}

/* Headers whose values change with every request: Apple asks that they
 * go as literals, never entering its small HPACK table. */
#define APNS_NV_ONCE NGHTTP2_NV_FLAG_NO_INDEX

/* Fills one header; names are static, so nghttp2 need not copy them. */
static void
nv_add(nghttp2_nv *nv, size_t *n, const char *name, const char *value,
       size_t vlen, uint8_t flags)
{
    nv[*n].name = (uint8_t *)name;
    nv[*n].namelen = strlen(name);
    nv[*n].value = (uint8_t *)value;
    nv[*n].valuelen = vlen;
    nv[*n].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | flags;
    (*n)++;
}

/* Opens r's stream on c. Returns 0, or -1 when c can take no more. */
static int
stream_open(struct apns_conn *c, struct apns_req *r)
{
    struct apns *a = c->owner;
    const struct apns_push *p = &r->push;
    nghttp2_nv nv[12];
    nghttp2_data_provider dp;
    char path[16 + 256], prio[8], exp[24];
    size_t n = 0;
    int32_t id;

    snprintf(path, sizeof(path), "/3/device/%s", p->token);
    snprintf(prio, sizeof(prio), "%d", p->priority);
    snprintf(exp, sizeof(exp), "%lld", (long long)p->expiration);
    nv_add(nv, &n, ":method", "POST", 4, 0);
    nv_add(nv, &n, ":scheme", "https", 5, 0);
    nv_add(nv, &n, ":authority", c->host->authority, strlen(c->host->authority),
           0);
    nv_add(nv, &n, ":path", path, strlen(path), APNS_NV_ONCE);
    if (a->opts.jwt != NULL) {
        nv_add(nv, &n, "authorization", a->auth, strlen(a->auth), 0);
    }
    nv_add(nv, &n, "apns-push-type", p->push_type, strlen(p->push_type), 0);
    nv_add(nv, &n, "apns-topic", p->topic, strlen(p->topic), 0);
    nv_add(nv, &n, "apns-priority", prio, strlen(prio), 0);
    nv_add(nv, &n, "apns-id", p->apns_id, strlen(p->apns_id), APNS_NV_ONCE);
    nv_add(nv, &n, "apns-expiration", exp, strlen(exp), APNS_NV_ONCE);
    if (p->collapse_id != NULL) {
        nv_add(nv, &n, "apns-collapse-id", p->collapse_id,
               strlen(p->collapse_id), APNS_NV_ONCE);
    }
    dp.source.ptr = r;
    dp.read_callback = body_read;
    r->body_off = 0;
    id = nghttp2_submit_request(c->h2, NULL, nv, n, &dp, r);
    if (id < 0) {
        /* Stream ids ran out, or the session is closing. */
        conn_retire(c, nghttp2_strerror(id));
        return -1;
    }
    if (util_mono_ms() - c->last_recv >= APNS_QUIET_MS) {
        /* Until the answer, more requests go elsewhere. */
        c->suspect = 1;
        conn_ping(c, APNS_CHECK_PING_MS);
    }
    req_unlink(r);
    r->stream_id = id;
    r->sent_at = util_mono_ms();
    r->conn = c;
    r->sent_gen = a->auth_gen;
    r->where = REQ_STREAM;
    list_push(&c->streams, r);
    c->token_gen = a->auth_gen;
    return 0;
}

static void
ensure_conns(struct apns_host *h)
{
    struct apns *a = h->owner;

    if (h->pending.len == 0 && h->pending_urgent.len == 0) {
        return;
    }
    if (util_mono_ms() < h->connect_at) {
        return;
    }
    /* The first push to a host opens all of them, so streams spread from
     * the start and an urgent push finds its connection warm. */
    while (h->live < a->opts.connections) {
        conn_open(h, 0);
    }
    if (h->urgent_live == 0) {
        conn_open(h, 1);
    }
}

/*
 * Whether a push that is not urgent is on a stream to this device now. An
 * urgent push (a cancel) waits for it to be answered, so that the device
 * cannot get the two in the wrong order: a cancel overtaking its invite on
 * another connection would leave the phone ringing for a call that is
 * over. The wait is one round trip, and never longer than
 * APNS_ORDER_WAIT_MS, so a stream APNs holds cannot hold the cancel.
 */
static int
on_the_wire(const struct apns_host *h, const char *token)
{
    const struct apns_conn *c;
    const struct apns_req *r;
    int64_t now = util_mono_ms();

    for (c = h->conns; c != NULL; c = c->next) {
        for (r = c->streams.head; r != NULL; r = r->next) {
            if (!r->push.urgent && now - r->sent_at < APNS_ORDER_WAIT_MS &&
                strcmp(r->push.token, token) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* Gives waiting requests streams: urgent ones first, on the urgent
 * connection or any other with room. */
static void
dispatch(struct apns_host *h)
{
    struct apns *a = h->owner;
    char err[JWT_ERR_MAX];
    struct apns_conn *c;
    struct apns_req *r, *next;

    if (h->pending.len == 0 && h->pending_urgent.len == 0) {
        return;
    }
    if (a->opts.jwt != NULL && apns_auth(a, err) == NULL) {
        while (h->pending_urgent.head != NULL) {
            attempt_fail(h->pending_urgent.head, "provider token: %s", err);
        }
        while (h->pending.head != NULL) {
            attempt_fail(h->pending.head, "provider token: %s", err);
        }
        return;
    }
    for (r = h->pending_urgent.head; r != NULL; r = next) {
        next = r->next;
        if (on_the_wire(h, r->push.token)) {
            continue;
        }
        c = pick_conn(h, 1);
        if (c == NULL) {
            c = pick_conn(h, 0);
        }
        if (c == NULL || stream_open(c, r) < 0) {
            break;
        }
    }
    while ((r = h->pending.head) != NULL) {
        /* Asked again here, not only before retries: a push that waited
         * for a stream may have lost its reason to go meanwhile. */
        if (a->opts.wanted != NULL && !a->opts.wanted(r->push.ctx)) {
            req_done_as(r, apns_classify(r->last_status, r->reason),
                        r->last_status, 0, 0, 1);
            continue;
        }
        c = pick_conn(h, 0);
        if (c == NULL || stream_open(c, r) < 0) {
            break;
        }
    }
}

/* Moves nghttp2's output to TLS until either has nothing more. */
static void
conn_flush(struct apns_conn *c)
{
    ssize_t n;

    if (c->state == CONN_CONNECTING || c->closing) {
        return;
    }
    for (;;) {
        while (c->out_len < APNS_OUT_MAX) {
            size_t k;

            if (c->pend_len == 0) {
                n = nghttp2_session_mem_send(c->h2, &c->pend);
                if (n < 0) {
                    conn_close(c, nghttp2_strerror((int)n));
                    return;
                }
                if (n == 0) {
                    break;
                }
                c->pend_len = (size_t)n;
            }
            k = APNS_OUT_MAX - c->out_len;
            if (k > c->pend_len) {
                k = c->pend_len;
            }
            memcpy(c->out + c->out_len, c->pend, k);
            c->out_len += k;
            c->pend += k;
            c->pend_len -= k;
        }
        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            return;
        }
        n = tlsconn_write(&c->tls, c->out + c->out_off,
                          c->out_len - c->out_off);
        if (n < 0) {
            conn_close(c, c->tls.err);
            return;
        }
        if (n == 0) {
            return;
        }
        c->out_off += (size_t)n;
        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
        } else {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
    }
}

static void
conn_read(struct apns_conn *c)
{
    uint8_t data[APNS_READ_CHUNK];
    char why[APNS_REASON_MAX];
    int i;

    for (i = 0; i < APNS_READS_PER_RUN && !c->closing; i++) {
        ssize_t n = tlsconn_read(&c->tls, data, sizeof(data));
        ssize_t rv;

        if (n < 0) {
            conn_close(c, c->tls.err);
            return;
        }
        if (n == 0) {
            return;
        }
        rv = nghttp2_session_mem_recv(c->h2, data, (size_t)n);
        if (rv < 0) {
            snprintf(why, sizeof(why), "HTTP/2: %s", nghttp2_strerror((int)rv));
            conn_close(c, why);
            return;
        }
    }
}

/* Moves a connection forward after poll() said something of its socket. */
static void
conn_io(struct apns_conn *c)
{
    short rev = c->revents;

    c->revents = 0;
    if (c->closing) {
        return;
    }
    if (c->state == CONN_CONNECTING) {
        int rc;

        if (rev == 0) {
            return;
        }
        rc = tlsconn_progress(&c->tls, rev);
        if (rc < 0) {
            conn_close(c, c->tls.err);
        } else if (rc > 0) {
            conn_ready(c);
        }
        return;
    }
    /* TLS may need the socket writable to go on reading (a key update). */
    if (rev & (POLLIN | POLLERR | POLLHUP) ||
        (rev & POLLOUT && c->tls.want & POLLOUT) ||
        SSL_pending(c->tls.ssl) > 0) {
        conn_read(c);
    }
}

/* One connection of the host died silently: the others as quiet may have
 * died with it (one NAT, one network), so they are checked before they
 * take the resent requests. */
static void
suspect_quiet(struct apns_host *h, int64_t now)
{
    struct apns_conn *c;

    for (c = h->conns; c != NULL; c = c->next) {
        if (!c->closing && c->state != CONN_CONNECTING &&
            now - c->last_recv >= APNS_QUIET_MS) {
            c->suspect = 1;
            conn_ping(c, APNS_CHECK_PING_MS);
        }
    }
}

static int
host_has_ready(const struct apns_host *h)
{
    const struct apns_conn *c;

    for (c = h->conns; c != NULL; c = c->next) {
        if (c->state == CONN_READY && !c->closing) {
            return 1;
        }
    }
    return 0;
}

static int
ping_timeout_ms(const struct apns *a)
{
    return a->opts.ping_interval_ms < a->opts.timeout_ms
               ? a->opts.ping_interval_ms
               : a->opts.timeout_ms;
}

/* Deadlines of attempts and connects, and PINGs of quiet connections. */
static void
scan_timers(struct apns *a, int64_t now)
{
    char why[APNS_REASON_MAX];
    int i;

    for (i = 0; i < a->nhosts; i++) {
        struct apns_host *h = &a->hosts[i];
        struct req_list *lists[2] = {&h->pending_urgent, &h->pending};
        struct apns_conn *c;
        int k;

        for (k = 0; k < 2; k++) {
            struct apns_req *r = lists[k]->head, *next;

            for (; r != NULL; r = next) {
                next = r->next;
                if (now < r->deadline) {
                    continue;
                }
                a->stats.timeouts++;
                if (h->last_error[0] != '\0') {
                    attempt_fail(r, "no connection to APNs: %s", h->last_error);
                } else if (!host_has_ready(h)) {
                    attempt_fail(r,
                                 "no connection to APNs within %d ms (still "
                                 "connecting%s)",
                                 a->opts.timeout_ms,
                                 h->target.proxy_host[0] != '\0'
                                     ? " through the proxy"
                                     : "");
                } else {
                    attempt_fail(r, "no free stream to APNs within %d ms",
                                 a->opts.timeout_ms);
                }
            }
        }
        for (c = h->conns; c != NULL; c = c->next) {
            struct apns_req *r, *next;

            if (c->closing) {
                continue;
            }
            if (c->state == CONN_CONNECTING) {
                if (now >= c->connect_deadline) {
                    snprintf(why, sizeof(why),
                             "connect to %s timed out after %d ms",
                             h->authority, a->opts.timeout_ms);
                    conn_close(c, why);
                }
                continue;
            }
            for (r = c->streams.head; r != NULL; r = next) {
                next = r->next;
                if (now < r->deadline) {
                    continue;
                }
                /* Nothing heard since it went out: the connection may be
                 * dead, not only this stream held. */
                if (c->last_recv < r->sent_at) {
                    c->suspect = 1;
                    conn_ping(c, APNS_CHECK_PING_MS);
                }
                /* This stream alone gives up; the connection stays. */
                nghttp2_session_set_stream_user_data(c->h2, r->stream_id, NULL);
                nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE,
                                          r->stream_id, NGHTTP2_CANCEL);
                a->stats.timeouts++;
                attempt_fail(r, "no answer from APNs within %d ms",
                             a->opts.timeout_ms);
            }
            if (c->ping_sent != 0 && now - c->ping_sent >= c->ping_limit) {
                a->stats.ping_fails++;
                snprintf(why, sizeof(why), "no answer to PING within %d ms",
                         c->ping_limit);
                conn_close(c, why);
                suspect_quiet(h, now);
            } else if (now - c->last_recv >= a->opts.ping_interval_ms) {
                conn_ping(c, ping_timeout_ms(a));
            }
        }
    }
}

void
apns_run(struct apns *a)
{
    int64_t now;
    int i, round;

    start_due(a);
    for (i = 0; i < a->nhosts; i++) {
        struct apns_conn *c;

        for (c = a->hosts[i].conns; c != NULL; c = c->next) {
            conn_io(c);
        }
    }
    now = util_mono_ms();
    if (now >= a->next_scan) {
        scan_timers(a, now);
        a->next_scan = now + APNS_SCAN_MS;
    }
    /* A second round sends at once what closed connections gave back. */
    for (round = 0; round < 2; round++) {
        process_finished(a);
        for (i = 0; i < a->nhosts; i++) {
            struct apns_host *h = &a->hosts[i];
            struct apns_conn *c;

            ensure_conns(h);
            dispatch(h);
            for (c = h->conns; c != NULL; c = c->next) {
                conn_flush(c);
            }
            conn_reap(h);
        }
    }
}

static void
grow_polls(struct apns *a, size_t n)
{
    if (n <= a->pcap) {
        return;
    }
    a->pcap = n * 2;
    a->pfds = xrealloc(a->pfds, a->pcap * sizeof(*a->pfds));
    a->pconns = xrealloc(a->pconns, a->pcap * sizeof(*a->pconns));
}

/* Milliseconds until something in the client is due, at most limit. */
static int
next_due(struct apns *a, int limit)
{
    int64_t now = util_mono_ms(), due = now + limit;
    int i;

    if (a->finished.len > 0) {
        return 0;
    }
    if (a->retries.head != NULL && a->retries.head->retry_at < due) {
        due = a->retries.head->retry_at;
    }
    if (a->inflight > 0 && a->next_scan < due) {
        due = a->next_scan;
    }
    for (i = 0; i < a->nhosts; i++) {
        struct apns_host *h = &a->hosts[i];
        struct apns_conn *c;

        /* Only a connection still to open makes connect_at matter:
         * requests waiting for a free stream wait for socket events. */
        if ((h->pending.len > 0 || h->pending_urgent.len > 0) &&
            (h->live < a->opts.connections || h->urgent_live == 0) &&
            h->connect_at < due) {
            due = h->connect_at;
        }
        for (c = h->conns; c != NULL; c = c->next) {
            int64_t t;

            if (c->closing ||
                (c->state != CONN_CONNECTING && SSL_pending(c->tls.ssl) > 0)) {
                return 0;
            }
            if (c->state == CONN_CONNECTING) {
                continue;
            }
            t = c->ping_sent != 0 ? c->ping_sent + c->ping_limit
                                  : c->last_recv + a->opts.ping_interval_ms;
            if (t < due) {
                due = t;
            }
        }
    }
    return due <= now ? 0 : (int)(due - now);
}

void
apns_wait(struct apns *a, struct pollfd *extra, unsigned nextra, int timeout_ms)
{
    size_t n = nextra, i;
    int h;

    for (h = 0; h < a->nhosts; h++) {
        struct apns_conn *c;

        for (c = a->hosts[h].conns; c != NULL; c = c->next) {
            n++;
        }
    }
    grow_polls(a, n + 1);
    for (i = 0; i < nextra; i++) {
        a->pfds[i] = extra[i];
        a->pconns[i] = NULL;
    }
    n = nextra;
    for (h = 0; h < a->nhosts; h++) {
        struct apns_conn *c;

        for (c = a->hosts[h].conns; c != NULL; c = c->next) {
            short ev = c->tls.want;

            if (c->tls.fd < 0) {
                continue;
            }
            if (c->state != CONN_CONNECTING &&
                (c->out_len > 0 || c->pend_len > 0 ||
                 nghttp2_session_want_write(c->h2))) {
                ev |= POLLOUT;
            }
            if (c->state != CONN_CONNECTING) {
                ev |= POLLIN;
            }
            a->pfds[n].fd = c->tls.fd;
            a->pfds[n].events = ev;
            a->pfds[n].revents = 0;
            a->pconns[n] = c;
            n++;
        }
    }
    timeout_ms = next_due(a, timeout_ms < 0 ? 60000 : timeout_ms);
    if (poll(a->pfds, n, timeout_ms) < 0) {
        return;
    }
    for (i = 0; i < nextra; i++) {
        extra[i].revents = a->pfds[i].revents;
    }
    for (; i < n; i++) {
        a->pconns[i]->revents = a->pfds[i].revents;
    }
}

size_t
apns_inflight(const struct apns *a)
{
    return a->inflight;
}

int
apns_connections(const struct apns *a)
{
    int i, n = 0;

    for (i = 0; i < a->nhosts; i++) {
        const struct apns_conn *c;

        for (c = a->hosts[i].conns; c != NULL; c = c->next) {
            n += c->state != CONN_CONNECTING;
        }
    }
    return n;
}

void
apns_get_stats(const struct apns *a, struct apns_stats *out)
{
    *out = a->stats;
}

/* "https://host[:port][/]" into h's target and :authority. */
static int
host_init(struct apns *a, struct apns_host *h, const char *url,
          const char *proxy, char *err)
{
    char why[TLSCONN_ERR_MAX];
    int port = 443;

    h->owner = a;
    util_strlcpy(h->url, url, sizeof(h->url));
    if (strncasecmp(url, "https://", 8) != 0) {
        snprintf(err, APNS_ERR_MAX, "APNs URL %s: must start with https://",
                 url);
        return -1;
    }
    if (tlsconn_parse_hostport(url + 8, h->target.host, sizeof(h->target.host),
                               &port, why) < 0) {
        snprintf(err, APNS_ERR_MAX, "APNs URL %.200s", why);
        return -1;
    }
    h->target.port = port;
    snprintf(h->authority, sizeof(h->authority),
             strchr(h->target.host, ':') != NULL ? "[%s]" : "%s",
             h->target.host);
    if (port != 443) {
        size_t n = strlen(h->authority);

        snprintf(h->authority + n, sizeof(h->authority) - n, ":%d", port);
    }
    if (proxy == NULL && a->opts.proxy_from_env) {
        proxy = tlsconn_env_proxy(h->target.host);
    }
    if (proxy != NULL && proxy[0] != '\0' &&
        tlsconn_parse_proxy(&h->target, proxy, err) < 0) {
        return -1;
    }
    return 0;
}

static void
host_free(struct apns_host *h)
{
    while (h->conns != NULL) {
        struct apns_conn *c = h->conns;

        h->conns = c->next;
        while (c->streams.head != NULL) {
            struct apns_req *r = c->streams.head;

            list_remove(&c->streams, r);
            r->where = REQ_NOWHERE;
            r->conn = NULL;
        }
        nghttp2_session_del(c->h2);
        tlsconn_close(&c->tls);
        free(c->out);
        free(c);
    }
    if (h->target.proxy_auth != NULL) {
        OPENSSL_cleanse(h->target.proxy_auth, strlen(h->target.proxy_auth));
    }
    free(h->target.proxy_auth);
}

/*
 * The TLS context every connection uses, with what it trusts and, with
 * certificate authentication, the certificate it presents. Errors name
 * the setting at fault, so a wrong file or passphrase is refused at start
 * rather than failing every handshake.
 */
static int
apns_tls(struct apns *a, const struct apns_opts *o, const char *pass, char *err)
{
    char why[TLSCONN_ERR_MAX];

    a->ctx = tlsconn_ctx_new(why);
    if (a->ctx == NULL) {
        snprintf(err, APNS_ERR_MAX, "%s", why);
        return -1;
    }
    if (tlsconn_use_ca(a->ctx, o->ca_file, why) < 0) {
        if (o->ca_file != NULL) {
            snprintf(err, APNS_ERR_MAX,
                     "CALLPUSH_APNS_CA_FILE %s: no PEM certificate in it",
                     o->ca_file);
        } else {
            snprintf(err, APNS_ERR_MAX,
                     "cannot load the default CA store: %.200s", why);
        }
        return -1;
    }
    if (o->cert_file == NULL) {
        return 0;
    }
    switch (
        tlsconn_use_cert(a->ctx, o->cert_file, o->cert_key_file, pass, why)) {
    case 0:
        return 0;
    case TLSCONN_BAD_CERT:
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_FILE %s: no PEM certificate in it",
                 o->cert_file);
        break;
    case TLSCONN_BAD_KEY:
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_KEY_FILE %s: no PEM private key in it, "
                 "or it is encrypted and CALLPUSH_APNS_CERT_PASSWORD_FILE "
                 "does not hold its passphrase",
                 o->cert_key_file);
        break;
    default:
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_KEY_FILE %s: not the key of "
                 "CALLPUSH_APNS_CERT_FILE %s",
                 o->cert_key_file, o->cert_file);
        break;
    }
    return -1;
}

struct apns *
apns_new(const struct apns_opts *opts, apns_done_fn *done, char *err)
{
    struct apns *a;
    char *pass = NULL;
    int rc;
    int i;

    if ((opts->cert_file == NULL) == (opts->jwt == NULL)) {
        snprintf(err, APNS_ERR_MAX,
                 "give either a provider token signer or a client "
                 "certificate, not %s",
                 opts->jwt == NULL ? "neither" : "both");
        return NULL;
    }
    if (opts->cert_file != NULL && opts->cert_password_file != NULL) {
        pass = apns_read_password(opts->cert_password_file, err);
        if (pass == NULL) {
            return NULL;
        }
    }
    a = xcalloc(1, sizeof(*a));
    a->opts = *opts;
    a->done = done;
    if (a->opts.ping_interval_ms <= 0) {
        a->opts.ping_interval_ms = APNS_PING_DEFAULT_MS;
    }
    if (a->opts.connections < 1) {
        a->opts.connections = 1;
    }
    /* The key is loaded now, or refused: its passphrase is not kept. */
    rc = apns_tls(a, opts, pass, err);
    if (pass != NULL) {
        OPENSSL_cleanse(pass, strlen(pass));
        free(pass);
    }
    if (rc < 0) {
        goto fail;
    }
    a->nhosts = strcmp(opts->production_url, opts->sandbox_url) == 0 ? 1 : 2;
    for (i = 0; i < a->nhosts; i++) {
        if (host_init(a, &a->hosts[i],
                      i == 0 ? opts->production_url : opts->sandbox_url,
                      opts->proxy, err) < 0) {
            goto fail;
        }
    }
    if (nghttp2_session_callbacks_new(&a->cbs) != 0 ||
        nghttp2_option_new(&a->h2opt) != 0) {
        snprintf(err, APNS_ERR_MAX, "out of memory");
        goto fail;
    }
    nghttp2_session_callbacks_set_on_header_callback(a->cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(a->cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(a->cbs,
                                                           on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(a->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(a->cbs,
                                                             on_frame_not_send);
    /* Until the server's SETTINGS say otherwise, one stream: APNs allows
     * no more before a request has succeeded on the connection. */
    nghttp2_option_set_peer_max_concurrent_streams(a->h2opt, 1);
    return a;

fail:
    apns_free(a);
    return NULL;
}

void
apns_free(struct apns *a)
{
    struct apns_req *r, *next;
    int i;

    if (a == NULL) {
        return;
    }
    /* Done callbacks never run now: the caller is shutting down. */
    for (i = 0; i < APNS_HOSTS; i++) {
        host_free(&a->hosts[i]);
    }
    for (r = a->all; r != NULL; r = next) {
        next = r->all_next;
        req_free(r);
    }
    nghttp2_session_callbacks_del(a->cbs);
    nghttp2_option_del(a->h2opt);
    SSL_CTX_free(a->ctx);
    free(a->pfds);
    free(a->pconns);
    free(a);
}
