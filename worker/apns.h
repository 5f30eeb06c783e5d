/*
 * apns: the HTTP/2 client that delivers pushes to APNs.
 *
 * Requests are multiplexed as HTTP/2 streams (libnghttp2) over a few
 * long-lived TLS connections per APNs host (tlsconn.h), spread over them
 * by load and never more per connection than the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS allows at the time; no thread and no
 * connection per push. Urgent pushes (cancels) have a connection of their
 * own as well, so no backlog of streams can hold them.
 *
 * The module authenticates with a shared provider token (jwt.h) or,
 * instead, with a TLS client certificate; a connection never carries two
 * provider tokens, so a renewed token moves traffic to new connections.
 * Every attempt has its own deadline. The module classifies each answer by
 * the table of Apple's documented statuses and reasons, and retries the
 * transient ones with exponential back-off and jitter until the push's
 * give-up time. A stream the server did not process (GOAWAY, a refused
 * stream, a connection lost before any answer) is sent again on another
 * connection without counting as an attempt. Idle connections are checked
 * with HTTP/2 PING and replaced when the answer does not come. The caller
 * hears about each push exactly once, through the done callback, with its
 * final result.
 *
 * The module knows nothing of Kafka or of calls: "give up at" is the only
 * call semantics it sees.
 *
 * Ownership: the caller keeps every string and the body of a struct
 * apns_push alive until the push's done callback has run.
 *
 * Thread safety: loop thread only; the done callback runs inside
 * apns_run() on that thread.
 */
#ifndef CALLPUSH_APNS_H
#define CALLPUSH_APNS_H

#include <stddef.h>
#include <stdint.h>

#include <poll.h>

#include "jwt.h"

#define APNS_ERR_MAX 256
#define APNS_REASON_MAX 384

#define APNS_PRODUCTION_URL "https://api.push.apple.com"
#define APNS_SANDBOX_URL "https://api.sandbox.push.apple.com"

/* What an answer asks of the sender (apns.md, "Responses"). */
enum apns_action {
    APNS_DELIVERED,  /* 200: APNs accepted it */
    APNS_FIX,        /* the request or configuration is wrong: never retry */
    APNS_INVALIDATE, /* the device token is dead: report it */
    APNS_RETRY,      /* transient: retry after a back-off */
    APNS_RECONNECT,  /* retry on a new connection */
    APNS_REFRESH     /* the provider token expired: new token, retry */
};

struct apns_opts {
    const char *production_url; /* base URL, no trailing slash */
    const char *sandbox_url;
    const char *ca_file; /* NULL: the system's CA store */
    int connections;     /* per host, besides the urgent one */
    int timeout_ms;      /* one attempt's deadline */
    /* A connection that received nothing for this long is sent a PING,
     * and closed when no answer comes within the same time (or timeout_ms,
     * if shorter). 0: the default, 60 s. */
    int ping_interval_ms;
    /* "http://[user:password@]host[:port]": connect through this proxy's
     * CONNECT tunnel. NULL: directly, or, with proxy_from_env, through
     * HTTPS_PROXY (or https_proxy) for every host NO_PROXY (or no_proxy)
     * does not exempt. */
    const char *proxy;
    int proxy_from_env;
    /* The wall clock in ms since the epoch, for the provider token's iat
     * and give-up times. NULL: the real one (tests simulate hours). */
    int64_t (*clock_ms)(void);
    /* Token authentication: every request carries this signer's provider
     * token. NULL with certificate authentication. */
    struct jwt *jwt;
    /* Certificate authentication, when cert_file is not NULL: the PEM
     * client certificate, its PEM key, and a file whose first line is the
     * key's passphrase (NULL: the key is not encrypted). Checked by
     * apns_new(), so a wrong passphrase fails at start. */
    const char *cert_file;
    const char *cert_key_file;
    const char *cert_password_file;
    /* Asked before every retry, with the push's ctx: 0 means the push is
     * no longer wanted (its call was cancelled), and it ends without
     * another attempt. NULL: always wanted. */
    int (*wanted)(void *ctx);
};

struct apns_push {
    const char *token;       /* hex device token */
    const char *apns_id;     /* lowercase UUID, the same on every retry */
    const char *collapse_id; /* NULL for none */
    const char *topic;
    const char *push_type; /* "alert", "voip", ... */
    int priority;
    int64_t expiration; /* UNIX seconds */
    int sandbox;        /* 1: the sandbox host */
    const char *body;
    size_t body_len;
    int64_t give_up_ms; /* wall clock: no attempt starts after it */
    int urgent;         /* 1: on connections of its own, never queued
                         * behind others' streams (cancels) */
    void *ctx;          /* the caller's */
};

struct apns_result {
    enum apns_action action;
    int status;           /* HTTP status; 0 when no answer came */
    const char *reason;   /* APNs reason or transport error; "" on 200 */
    const char *apns_id;  /* as APNs echoed it, or the request's */
    int64_t timestamp_ms; /* 410's "timestamp", else 0 */
    int attempts;
    int gave_up; /* 1: stopped retrying at give_up_ms */
    int dropped; /* 1: no longer wanted, not retried */
};

typedef void apns_done_fn(void *ctx, const struct apns_push *push,
                          const struct apns_result *res);

struct apns;

struct apns *apns_new(const struct apns_opts *opts, apns_done_fn *done,
                      char *err);
void apns_free(struct apns *a);

/* Queues a push. Returns 0; the done callback fires later, never from
 * inside this call. */
int apns_submit(struct apns *a, const struct apns_push *push);

/* Waits up to timeout_ms for socket activity, a due timer, or one of the
 * caller's extra descriptors (whose revents it fills), then returns. */
void apns_wait(struct apns *a, struct pollfd *extra, unsigned nextra,
               int timeout_ms);

/* Moves every transfer forward, starts due retries, and runs the done
 * callback for each push that reached its final result. */
void apns_run(struct apns *a);

/* Pushes submitted and not yet done (including those waiting to retry). */
size_t apns_inflight(const struct apns *a);

/* TLS connections open to APNs now. */
int apns_connections(const struct apns *a);

/* What the connections went through, since apns_new(). */
struct apns_stats {
    uint64_t connects;       /* connections that became ready */
    uint64_t connect_fails;  /* attempts that never became ready */
    uint64_t goaways;        /* GOAWAY frames received */
    uint64_t resent;         /* streams sent again, unprocessed or unanswered */
    uint64_t timeouts;       /* attempts that hit their deadline */
    uint64_t ping_fails;     /* connections closed for an unanswered PING */
    uint64_t token_moves;    /* connections retired for a newer token */
    uint64_t token_renewals; /* tokens signed for ExpiredProviderToken */
};

void apns_get_stats(const struct apns *a, struct apns_stats *out);

/* The passphrase in a certificate key's password file (its first line),
 * as a string the caller frees after OPENSSL_cleanse(); NULL with err
 * set, naming CALLPUSH_APNS_CERT_PASSWORD_FILE. */
char *apns_read_password(const char *path, char *err);

/* The action for an HTTP status and APNs reason (pure; for tests too). */
enum apns_action apns_classify(int status, const char *reason);

const char *apns_action_name(enum apns_action action);

#endif
