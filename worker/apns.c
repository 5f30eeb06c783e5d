#define _DEFAULT_SOURCE
#include "apns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "util.h"

/* An APNs error body is {"reason":"…","timestamp":…}: anything longer is
 * not from APNs and is cut. */
#define APNS_BODY_MAX 512
#define APNS_BACKOFF_BASE_MS 200
#define APNS_BACKOFF_MAX_MS 5000
#define APNS_URL_MAX 512

struct apns_req {
    struct apns_push push;
    struct apns *owner;
    struct apns_req *all_prev, *all_next; /* every request not yet done */
    CURL *easy;
    struct curl_slist *headers;
    char url[APNS_URL_MAX];
    char errbuf[CURL_ERROR_SIZE];

    /* The answer to the current attempt. */
    char body[APNS_BODY_MAX];
    size_t body_len;
    char resp_id[40];
    char reason[APNS_REASON_MAX];
    int attempts;
    int fresh_connect;
    int refreshed;    /* already answered one ExpiredProviderToken */
    int last_status;  /* the previous attempt's status, 0 for none */
    int64_t sent_iat; /* iat of the provider token the attempt carried */

    int64_t retry_at; /* monotonic ms, while waiting to retry */
    struct apns_req *next;
};

struct apns {
    struct apns_opts opts;
    apns_done_fn *done;
    CURLM *multi;
    CURL *idle; /* one spare easy handle, reused by the next push */
    struct apns_req *retries; /* waiting for their back-off, by retry_at */
    struct apns_req *all;     /* every request not yet done */
    size_t inflight;
    char auth[1024]; /* "authorization: bearer <JWT>" */
    int sockets;     /* open connections, counted by the socket callbacks */
    /* Urgent pushes (cancels) run in a multi handle of their own, so they
     * have connections, and streams, that no backlog of other pushes can
     * fill: libcurl queues a transfer that finds no free stream. */
    CURLM *urgent;
    int64_t auth_iat;
    char *cert_pass; /* the client key's passphrase, NULL for none */
};

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

/* A CA file that holds no certificate would fail every push later; refuse
 * it at start, where the error names the setting. */
static int
apns_check_ca(const char *path, char *err)
{
    X509_STORE *store = X509_STORE_new();
    int loaded = store != NULL && X509_STORE_load_file(store, path) == 1;

    X509_STORE_free(store);
    if (!loaded) {
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CA_FILE %s: no PEM certificate in it", path);
        return -1;
    }
    return 0;
}

/* The passphrase a certificate key's password file holds: its first line,
 * without the line end. Longer than a PEM passphrase may be is refused. */
#define APNS_PASS_MAX 1024

static char *
read_password(const char *path, char *err)
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

/* Hands the configured passphrase to OpenSSL, which asks for it only when
 * the key is encrypted. */
static int
pass_cb(char *buf, int size, int rwflag, void *userdata)
{
    const char *pass = userdata;
    size_t n = pass != NULL ? strlen(pass) : 0;

    if (pass == NULL || n > (size_t)size) {
        return -1;
    }
    memcpy(buf, pass, n);
    return (int)n;
}

/*
 * Loads the client certificate and its key as libcurl will, and checks
 * that they belong together, so that a wrong file or passphrase is refused
 * at start with the setting's name rather than failing every handshake.
 */
static int
apns_check_cert(const struct apns_opts *o, char *pass, char *err)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    FILE *f;
    int rc = -1;

    f = fopen(o->cert_file, "r");
    if (f != NULL) {
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (cert == NULL) {
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_FILE %s: no PEM certificate in it",
                 o->cert_file);
        goto out;
    }
    f = fopen(o->cert_key_file, "r");
    if (f != NULL) {
        key = PEM_read_PrivateKey(f, NULL, pass_cb, pass);
        fclose(f);
    }
    if (key == NULL) {
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_KEY_FILE %s: no PEM private key in it, "
                 "or it is encrypted and CALLPUSH_APNS_CERT_PASSWORD_FILE "
                 "does not hold its passphrase",
                 o->cert_key_file);
        goto out;
    }
    if (X509_check_private_key(cert, key) != 1) {
        snprintf(err, APNS_ERR_MAX,
                 "CALLPUSH_APNS_CERT_KEY_FILE %s: not the key of "
                 "CALLPUSH_APNS_CERT_FILE %s",
                 o->cert_key_file, o->cert_file);
        goto out;
    }
    rc = 0;

out:
    ERR_clear_error();
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

static CURLM *
multi_new(int connections)
{
    CURLM *multi = curl_multi_init();

    if (multi == NULL) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory\"}\n");
        abort();
    }
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)connections);
    /* APNs advertises up to 1000 concurrent streams per connection;
     * libcurl's own default of 100 would hold the rest back. */
    curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L);
    return multi;
}

/* The multi handle a request runs in. */
static CURLM *
req_multi(const struct apns_req *r)
{
    return r->push.urgent ? r->owner->urgent : r->owner->multi;
}

struct apns *
apns_new(const struct apns_opts *opts, apns_done_fn *done, char *err)
{
    struct apns *a;
    char *pass = NULL;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, APNS_ERR_MAX, "libcurl failed to initialise");
        return NULL;
    }
    if (!(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2)) {
        snprintf(err, APNS_ERR_MAX, "libcurl was built without HTTP/2");
        return NULL;
    }
    if (opts->ca_file != NULL && apns_check_ca(opts->ca_file, err) < 0) {
        return NULL;
    }
    if ((opts->cert_file == NULL) == (opts->jwt == NULL)) {
        snprintf(err, APNS_ERR_MAX,
                 "give either a provider token signer or a client "
                 "certificate, not %s",
                 opts->jwt == NULL ? "neither" : "both");
        return NULL;
    }
    if (opts->cert_file != NULL && opts->cert_password_file != NULL) {
        pass = read_password(opts->cert_password_file, err);
        if (pass == NULL) {
            return NULL;
        }
    }
    if (opts->cert_file != NULL && apns_check_cert(opts, pass, err) < 0) {
        if (pass != NULL) {
            OPENSSL_cleanse(pass, strlen(pass));
        }
        free(pass);
        return NULL;
    }
    a = xcalloc(1, sizeof(*a));
    a->opts = *opts;
    a->cert_pass = pass;
    a->done = done;
    a->multi = multi_new(opts->connections);
    a->urgent = multi_new(opts->connections);
    return a;
}

static void
req_free(struct apns_req *r)
{
    curl_slist_free_all(r->headers);
    free(r);
}

void
apns_free(struct apns *a)
{
    struct apns_req *r, *next;

    if (a == NULL) {
        return;
    }
    /* Requests still attached to a transfer are freed with it; their
     * done callbacks never run, as the caller is shutting down. */
    for (r = a->all; r != NULL; r = next) {
        next = r->all_next;
        if (r->easy != NULL) {
            curl_multi_remove_handle(req_multi(r), r->easy);
            curl_easy_cleanup(r->easy);
        }
        req_free(r);
    }
    if (a->idle != NULL) {
        curl_easy_cleanup(a->idle);
    }
    curl_multi_cleanup(a->multi);
    curl_multi_cleanup(a->urgent);
    if (a->cert_pass != NULL) {
        OPENSSL_cleanse(a->cert_pass, strlen(a->cert_pass));
    }
    free(a->cert_pass);
    free(a);
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct apns_req *r = userp;
    size_t n = size * nmemb;
    size_t room = sizeof(r->body) - 1 - r->body_len;

    memcpy(r->body + r->body_len, data, n < room ? n : room);
    r->body_len += n < room ? n : room;
    r->body[r->body_len] = '\0';
    return n;
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    struct apns_req *r = userp;
    size_t n = size * nmemb;
    static const char name[] = "apns-id:";
    size_t len;
    const char *v;

    if (n < sizeof(name) || strncasecmp(data, name, sizeof(name) - 1) != 0) {
        return n;
    }
    v = data + sizeof(name) - 1;
    len = n - (sizeof(name) - 1);
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 &&
           (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ')) {
        len--;
    }
    if (len < sizeof(r->resp_id)) {
        memcpy(r->resp_id, v, len);
        r->resp_id[len] = '\0';
    }
    return n;
}

/* The authorization header, re-signed by the jwt module when due. */
static const char *
apns_auth(struct apns *a, char *err)
{
    const char *token = jwt_token(a->opts.jwt, util_now_ms() / 1000, err);

    if (token == NULL) {
        return NULL;
    }
    if (jwt_issued_at(a->opts.jwt) != a->auth_iat || a->auth[0] == '\0') {
        snprintf(a->auth, sizeof(a->auth), "authorization: bearer %s", token);
        a->auth_iat = jwt_issued_at(a->opts.jwt);
    }
    return a->auth;
}

/* libcurl opens and closes connections through these, so the client can
 * say how many it holds without asking libcurl's internals. */
static curl_socket_t
on_open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct apns *a = userp;
    curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);

    if (fd != CURL_SOCKET_BAD) {
        a->sockets++;
    }
    return fd;
}

static int
on_close_socket(void *userp, curl_socket_t fd)
{
    struct apns *a = userp;

    a->sockets--;
    return close(fd);
}

/* Every header line fits: the longest value is a 255-byte topic. */
#define APNS_HEADER_MAX 320

static struct curl_slist *
slist_add(struct curl_slist *list, const char *line)
{
    struct curl_slist *h = curl_slist_append(list, line);

    if (h == NULL) {
        /* Only an allocation can fail here; treat it as xmalloc does. */
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory\"}\n");
        abort();
    }
    return h;
}

static struct curl_slist *
req_headers(const struct apns_push *p, const char *auth)
{
    struct curl_slist *h = NULL;
    char line[APNS_HEADER_MAX];

    /* A certificate connection sends no authorization header. */
    if (auth != NULL) {
        h = slist_add(h, auth);
    }
    snprintf(line, sizeof(line), "apns-push-type: %s", p->push_type);
    h = slist_add(h, line);
    snprintf(line, sizeof(line), "apns-topic: %s", p->topic);
    h = slist_add(h, line);
    snprintf(line, sizeof(line), "apns-priority: %d", p->priority);
    h = slist_add(h, line);
    snprintf(line, sizeof(line), "apns-id: %s", p->apns_id);
    h = slist_add(h, line);
    snprintf(line, sizeof(line), "apns-expiration: %lld",
             (long long)p->expiration);
    h = slist_add(h, line);
    if (p->collapse_id != NULL) {
        snprintf(line, sizeof(line), "apns-collapse-id: %s", p->collapse_id);
        h = slist_add(h, line);
    }
    /* libcurl would otherwise label the body as a form. */
    h = slist_add(h, "content-type: application/json");
    return h;
}

static CURL *
easy_get(struct apns *a)
{
    CURL *easy = a->idle;

    if (easy != NULL) {
        a->idle = NULL;
        curl_easy_reset(easy);
        return easy;
    }
    easy = curl_easy_init();
    if (easy == NULL) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory\"}\n");
        abort();
    }
    return easy;
}

static void
easy_put(struct apns *a, CURL *easy)
{
    if (a->idle == NULL) {
        a->idle = easy;
        return;
    }
    curl_easy_cleanup(easy);
}

static int
req_start(struct apns_req *r)
{
    struct apns *a = r->owner;
    const struct apns_push *p = &r->push;
    char err[JWT_ERR_MAX];
    const char *auth;
    CURL *e;

    if (a->opts.jwt != NULL) {
        auth = apns_auth(a, err);
        if (auth == NULL) {
            return -1;
        }
    } else {
        auth = NULL;
    }
    r->sent_iat = a->auth_iat;
    snprintf(r->url, sizeof(r->url), "%s/3/device/%s",
             p->sandbox ? a->opts.sandbox_url : a->opts.production_url,
             p->token);
    curl_slist_free_all(r->headers);
    r->headers = req_headers(p, auth);
    r->body_len = 0;
    r->body[0] = '\0';
    r->resp_id[0] = '\0';
    r->errbuf[0] = '\0';
    r->attempts++;

    e = easy_get(a);
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, p->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)p->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)a->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)a->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, (long)r->fresh_connect);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, a);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, a);
    if (a->opts.ca_file != NULL) {
        curl_easy_setopt(e, CURLOPT_CAINFO, a->opts.ca_file);
    }
    if (a->opts.cert_file != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, a->opts.cert_file);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_SSLKEY, a->opts.cert_key_file);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        if (a->cert_pass != NULL) {
            curl_easy_setopt(e, CURLOPT_KEYPASSWD, a->cert_pass);
        }
    }
    r->fresh_connect = 0;
    if (curl_multi_add_handle(req_multi(r), e) != CURLM_OK) {
        r->easy = NULL;
        easy_put(a, e);
        return -1;
    }
    return 0;
}

/* Inserts r into the retry list, which is kept sorted by retry_at. */
static void
retry_insert(struct apns *a, struct apns_req *r)
{
    struct apns_req **pp = &a->retries;

    while (*pp != NULL && (*pp)->retry_at <= r->retry_at) {
        pp = &(*pp)->next;
    }
    r->next = *pp;
    *pp = r;
}

int
apns_submit(struct apns *a, const struct apns_push *push)
{
    struct apns_req *r = xcalloc(1, sizeof(*r));

    r->push = *push;
    r->owner = a;
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
req_done_as(struct apns_req *r, enum apns_action action, int status,
            int64_t timestamp_ms, int gave_up, int dropped)
{
    struct apns *a = r->owner;
    struct apns_result res;

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

static void
req_done(struct apns_req *r, enum apns_action action, int status,
         int64_t timestamp_ms, int gave_up)
{
    req_done_as(r, action, status, timestamp_ms, gave_up, 0);
}

/*
 * APNs called the provider token expired. A token newer than the one this
 * attempt carried is simply used; otherwise a new one is signed, once per
 * push, so a wrong clock cannot make the worker mint tokens in a loop.
 * Returns 0 when the push may be resent.
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
    if (jwt_issued_at(a->opts.jwt) > r->sent_iat) {
        return 0;
    }
    return jwt_renew(a->opts.jwt, util_now_ms() / 1000, err);
}

static void
req_finish(struct apns_req *r, int status, const char *reason,
           int64_t timestamp_ms)
{
    enum apns_action action = apns_classify(status, reason);
    int64_t delay;

    util_strlcpy(r->reason, reason, sizeof(r->reason));
    r->last_status = status;
    if (action == APNS_REFRESH) {
        if (req_refresh(r) < 0) {
            req_done(r, APNS_FIX, status, timestamp_ms, 0);
            return;
        }
        /* A connection that saw an expired token can stay wedged: resend
         * on a new one, at once. */
        r->fresh_connect = 1;
        r->retry_at = util_mono_ms();
        retry_insert(r->owner, r);
        return;
    }
    if (action != APNS_RETRY && action != APNS_RECONNECT) {
        req_done(r, action, status, timestamp_ms, 0);
        return;
    }

    /* NEEDSWORK: RECONNECT should retire the connection for every stream
     * on it, not only open a fresh one for this request. */
    delay = backoff_ms(r->attempts);
    if (util_now_ms() + delay >= r->push.give_up_ms) {
        req_done(r, action, status, timestamp_ms, 1);
        return;
    }
    r->fresh_connect = action == APNS_RECONNECT;
    r->retry_at = util_mono_ms() + delay;
    retry_insert(r->owner, r);
}

/* Reads the outcome of one finished transfer. */
static void
req_complete(struct apns_req *r, CURLcode code)
{
    struct apns *a = r->owner;
    long status = 0;
    int64_t timestamp_ms = 0;
    char reason[APNS_REASON_MAX] = "";

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(req_multi(r), r->easy);
    easy_put(a, r->easy);
    r->easy = NULL;

    if (code != CURLE_OK) {
        util_strlcpy(
            reason, r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(code),
            sizeof(reason));
        req_finish(r, 0, reason, 0);
        return;
    }
    if (status != 200 && r->body_len > 0) {
        cJSON *j = cJSON_Parse(r->body);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "reason");

        if (cJSON_IsString(v)) {
            util_strlcpy(reason, v->valuestring, sizeof(reason));
        }
        v = cJSON_GetObjectItemCaseSensitive(j, "timestamp");
        if (cJSON_IsNumber(v)) {
            timestamp_ms = (int64_t)v->valuedouble;
        }
        cJSON_Delete(j);
    }
    req_finish(r, (int)status, reason, timestamp_ms);
}

static void
start_due(struct apns *a)
{
    int64_t now = util_mono_ms();
    char reason[APNS_REASON_MAX];

    while (a->retries != NULL && a->retries->retry_at <= now) {
        struct apns_req *r = a->retries;

        a->retries = r->next;
        r->next = NULL;
        if (r->attempts > 0 && util_now_ms() >= r->push.give_up_ms) {
            /* Reported with the last answer's status and reason. */
            req_done(r, apns_classify(r->last_status, r->reason),
                     r->last_status, 0, 1);
            continue;
        }
        if (r->attempts > 0 && a->opts.wanted != NULL &&
            !a->opts.wanted(r->push.ctx)) {
            /* Keeps the last answer's status and reason for the log. */
            req_done_as(r, apns_classify(r->last_status, r->reason),
                        r->last_status, 0, 0, 1);
            continue;
        }
        if (req_start(r) < 0) {
            snprintf(reason, sizeof(reason),
                     "cannot start the request (provider token or "
                     "transfer setup failed)");
            util_strlcpy(r->reason, reason, sizeof(r->reason));
            req_done(r, APNS_FIX, 0, 0, 0);
        }
    }
}

/* Moves one multi handle's transfers and completes the finished ones. */
static void
multi_run(CURLM *multi)
{
    int running, left;
    CURLMsg *msg;

    curl_multi_perform(multi, &running);
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        struct apns_req *r;

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        req_complete(r, msg->data.result);
    }
}

void
apns_run(struct apns *a)
{
    start_due(a);
    multi_run(a->urgent);
    multi_run(a->multi);
}

/* The sockets of the urgent multi handle, added to the caller's extra
 * descriptors, so one poll waits on everything. */
#define APNS_WAIT_MAX 64

void
apns_wait(struct apns *a, struct curl_waitfd *extra, unsigned nextra,
          int timeout_ms)
{
    struct curl_waitfd fds[APNS_WAIT_MAX];
    fd_set rd, wr, ex;
    unsigned n = 0, i;
    int maxfd = -1, fd;
    long urgent_ms = -1;

    for (i = 0; i < nextra && n < APNS_WAIT_MAX; i++) {
        fds[n++] = extra[i];
    }
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    FD_ZERO(&ex);
    curl_multi_fdset(a->urgent, &rd, &wr, &ex, &maxfd);
    for (fd = 0; fd <= maxfd && n < APNS_WAIT_MAX; fd++) {
        short events = (FD_ISSET(fd, &rd) ? CURL_WAIT_POLLIN : 0) |
                       (FD_ISSET(fd, &wr) ? CURL_WAIT_POLLOUT : 0);

        if (events != 0) {
            fds[n].fd = fd;
            fds[n].events = events;
            fds[n].revents = 0;
            n++;
        }
    }
    curl_multi_timeout(a->urgent, &urgent_ms);
    if (urgent_ms >= 0 && urgent_ms < timeout_ms) {
        timeout_ms = (int)urgent_ms;
    }
    if (a->retries != NULL) {
        int64_t due = a->retries->retry_at - util_mono_ms();

        if (due < timeout_ms) {
            timeout_ms = due < 0 ? 0 : (int)due;
        }
    }
    curl_multi_poll(a->multi, fds, n, timeout_ms, NULL);
}

size_t
apns_inflight(const struct apns *a)
{
    return a->inflight;
}

int
apns_connections(const struct apns *a)
{
    return a->sockets;
}
