#define _POSIX_C_SOURCE 200809L
#include "cmd_check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "apns.h"
#include "jwt.h"
#include "log.h"
#include "pipeline.h"
#include "tlsconn.h"
#include "util.h"

extern char **environ;

#define CHECK_HOST_MAX 256
#define CHECK_TEXT_MAX 512
#define CHECK_TOKEN_MAX 512 /* a provider token is about 200 characters */

/* config_load() refused a setting: the command's exit status 2. */
#define CHECK_REFUSED (-2)

/* Everything one run holds, released by check_release(). */
struct check {
    struct config cfg;
    struct jwt *jwt;
    const char *url;           /* the APNs base URL the worker would use */
    char host[CHECK_HOST_MAX]; /* IPv6 without its brackets */
    char port[8];
    char where[CHECK_HOST_MAX + 16]; /* host:port, as shown */
    int host_is_ip;
    char trust[CHECK_TEXT_MAX + 64]; /* what the certificate is checked with */
    char bad_cert[CHECK_TEXT_MAX];   /* first certificate that failed */
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    int64_t deadline_ms; /* monotonic: end of the connect and handshake */
};

static void
check_usage(FILE *out)
{
    fprintf(out,
            "usage: callpush check [WORKER FLAGS...]\n"
            "\n"
            "Checks, one step at a time, that a worker with this\n"
            "configuration could push: settings, signing key, provider\n"
            "token, CA bundle, connection to APNs, TLS certificate and\n"
            "HTTP/2. Nothing is sent to APNs. Every CALLPUSH_* variable and\n"
            "flag applies (callpush --help); CALLPUSH_BROKERS is not "
            "needed.\n"
            "\n"
            "Exit status: 0 when every step passed, 1 when one failed, 2 on\n"
            "a usage error or a setting the configuration refuses.\n");
}

static void step_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int step_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
step_ok(const char *fmt, ...)
{
    va_list ap;

    fputs("ok: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

/* Prints the failed step; returns -1 for the caller to pass on. */
static int
step_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("FAIL: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    return -1;
}

/* OpenSSL's reason for the last error on this thread, and a clean queue
 * for the next step. */
static const char *
openssl_reason(void)
{
    const char *reason = ERR_reason_error_string(ERR_peek_last_error());

    ERR_clear_error();
    return reason != NULL ? reason : "OpenSSL gave no reason";
}

int
cmd_check_load_config(struct config *cfg, int argc, char **argv, char *err)
{
    static const char var[] = "CALLPUSH_BROKERS=";
    static char placeholder[] =
        "CALLPUSH_BROKERS=" CMD_CHECK_PLACEHOLDER_BROKERS;
    const char *brokers = NULL;
    char **envp;
    size_t n = 0;
    int rc;

    while (environ != NULL && environ[n] != NULL) {
        if (brokers == NULL && strncmp(environ[n], var, sizeof(var) - 1) == 0) {
            brokers = environ[n] + sizeof(var) - 1;
        }
        n++;
    }
    if (brokers != NULL && brokers[0] != '\0') {
        return config_load(cfg, argc, argv, environ, err);
    }

    /* The first entry of a name wins, so the placeholder goes in front,
     * ahead of an empty one. A --brokers flag still overrides it. */
    envp = xcalloc(n + 2, sizeof(*envp));
    envp[0] = placeholder;
    if (n > 0) {
        memcpy(envp + 1, environ, n * sizeof(*envp));
    }
    rc = config_load(cfg, argc, argv, envp, err);
    free(envp);
    return rc;
}

/* The setting whose value is stored at offset in struct config. */
static const struct config_setting *
check_setting(size_t offset)
{
    size_t i;

    for (i = 0; i < config_nsettings; i++) {
        if (config_settings[i].offset == offset) {
            return &config_settings[i];
        }
    }
    return NULL;
}

/*
 * The key file the configuration was given, read the way config_load()
 * reads it: a flag ("--apns-key-file=F", or "--apns-key-file F" when F does
 * not start with "--") wins over the first entry of the variable. NULL
 * when neither is there.
 */
static const char *
check_key_path(const struct config_setting *s, int argc, char **argv)
{
    size_t flen = strlen(s->flag), elen = strlen(s->env);
    int i;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (strncmp(arg, "--", 2) != 0 ||
            strncmp(arg + 2, s->flag, flen) != 0) {
            continue;
        }
        if (arg[2 + flen] == '=') {
            return arg + 2 + flen + 1;
        }
        if (arg[2 + flen] == '\0' && i + 1 < argc &&
            strncmp(argv[i + 1], "--", 2) != 0) {
            return argv[i + 1];
        }
    }
    for (i = 0; environ != NULL && environ[i] != NULL; i++) {
        if (strncmp(environ[i], s->env, elen) == 0 && environ[i][elen] == '=') {
            return environ[i] + elen + 1;
        }
    }
    return NULL;
}

/* Why path cannot be read as the key file, or NULL when it can. */
static const char *
check_unreadable(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    const char *why = NULL;

    if (fd < 0) {
        return strerror(errno);
    }
    if (fstat(fd, &st) < 0) {
        why = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        why = "not a regular file";
    }
    close(fd);
    return why;
}

/* Splits the base URL (https://host[:port], as config_load() checked it)
 * into host and port. */
static void
check_split_url(struct check *c)
{
    const char *h = c->url + strlen("https://");
    const char *port = NULL;
    size_t n;
    unsigned char addr[sizeof(struct in6_addr)];

    if (h[0] == '[') {
        const char *end = strchr(h, ']');

        n = (size_t)(end - h - 1);
        snprintf(c->host, sizeof(c->host), "%.*s", (int)n, h + 1);
        port = end[1] == ':' ? end + 2 : NULL;
    } else {
        n = strcspn(h, ":");
        snprintf(c->host, sizeof(c->host), "%.*s", (int)n, h);
        port = h[n] == ':' ? h + n + 1 : NULL;
    }
    util_strlcpy(c->port, port != NULL ? port : "443", sizeof(c->port));
    c->host_is_ip = inet_pton(AF_INET, c->host, addr) == 1 ||
                    inet_pton(AF_INET6, c->host, addr) == 1;
    snprintf(c->where, sizeof(c->where),
             strchr(c->host, ':') != NULL ? "[%s]:%s" : "%s:%s", c->host,
             c->port);
}

/*
 * Step: the settings. A key file that cannot be read is refused by
 * config_load() like any bad setting; it is named here as what it is, so
 * that it reads apart from a mistyped value. Returns 0, -1 for that key
 * file, or CHECK_REFUSED.
 */
static int
check_config(struct check *c, int argc, char **argv)
{
    const struct config_setting *key =
        check_setting(offsetof(struct config, apns_key_file));
    char err[CONFIG_ERR_MAX], prefix[128];
    const char *path, *why;

    if (cmd_check_load_config(&c->cfg, argc, argv, err) < 0) {
        snprintf(prefix, sizeof(prefix), "%s (--%s):", key->env, key->flag);
        path = check_key_path(key, argc, argv);
        if (strncmp(err, prefix, strlen(prefix)) == 0 && path != NULL &&
            path[0] != '\0' && (why = check_unreadable(path)) != NULL) {
            return step_fail("cannot read the signing key %s: %s", path, why);
        }
        step_fail("configuration: %s", err);
        return CHECK_REFUSED;
    }

    c->url =
        pipeline_apns_url(&c->cfg, strcmp(c->cfg.apns_env, "sandbox") == 0);
    check_split_url(c);
    step_ok("configuration (APNs %s%s, %s environment, topic %s)", c->url,
            c->url == c->cfg.apns_url ? " from CALLPUSH_APNS_URL"
            : c->url == c->cfg.apns_sandbox_url
                ? " from CALLPUSH_APNS_SANDBOX_URL"
                : "",
            c->cfg.apns_env, c->cfg.apns_topic);
    return 0;
}

/* With certificate authentication: the certificate and its key, loaded
 * as the worker loads them, into the context the handshake will use. */
static int
check_cert(struct check *c)
{
    char err[APNS_ERR_MAX];
    char *pass = NULL;
    int rc;

    if (c->cfg.apns_cert_password_file[0] != '\0') {
        pass = apns_read_password(c->cfg.apns_cert_password_file, err);
        if (pass == NULL) {
            return step_fail("%s", err);
        }
    }
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL) {
        rc = -1;
        util_strlcpy(err, "no memory", sizeof(err));
    } else {
        rc = tlsconn_use_cert(c->ctx, c->cfg.apns_cert_file,
                              c->cfg.apns_cert_key_file, pass, err);
    }
    if (pass != NULL) {
        OPENSSL_cleanse(pass, strlen(pass));
        free(pass);
    }
    if (rc < 0) {
        return step_fail(
            "client certificate: %s%s", err,
            c->cfg.apns_cert_password_file[0] == '\0'
                ? " (if the key is encrypted, "
                  "CALLPUSH_APNS_CERT_PASSWORD_FILE must hold its passphrase)"
                : "");
    }
    step_ok("client certificate %s with key %s", c->cfg.apns_cert_file,
            c->cfg.apns_cert_key_file);
    return 0;
}

/* Step: the signing key, loaded as the worker loads it, or the client
 * certificate when that is how the worker authenticates. */
static int
check_key(struct check *c)
{
    char err[JWT_ERR_MAX];

    if (c->cfg.apns_cert_file[0] != '\0') {
        return check_cert(c);
    }

    c->jwt = jwt_new(c->cfg.apns_key_file, c->cfg.apns_key_id,
                     c->cfg.apns_team_id, err);
    if (c->jwt == NULL) {
        return step_fail("signing key: %s", err);
    }
    step_ok("signing key %s (EC P-256)", c->cfg.apns_key_file);
    return 0;
}

/* Step: a provider token, signed and thrown away unseen. */
static int
check_token(struct check *c)
{
    char token[CHECK_TOKEN_MAX], err[JWT_ERR_MAX];
    int64_t iat = util_now_ms() / 1000;
    int rc;

    if (c->jwt == NULL) {
        step_ok("certificate authentication: no provider token needed");
        return 0;
    }
    rc = jwt_sign(c->jwt, iat, token, sizeof(token), err);
    OPENSSL_cleanse(token, sizeof(token));
    if (rc < 0) {
        return step_fail("cannot sign a provider token: %s", err);
    }
    step_ok("provider token signed (key id %s, team id %s, iat %lld; the "
            "token is not shown)",
            c->cfg.apns_key_id, c->cfg.apns_team_id, (long long)iat);
    return 0;
}

/* Writes the certificate's subject as "CN=...,O=..." into out. */
static void
check_subject(X509 *cert, char *out, size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;

    util_strlcpy(out, "(unknown)", len);
    if (bio == NULL || cert == NULL) {
        BIO_free(bio);
        return;
    }
    X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    n = BIO_get_mem_data(bio, &data);
    if (n > 0) {
        snprintf(out, len, "\"%.*s\"", (int)n, data);
    }
    BIO_free(bio);
}

/* Remembers the first certificate of the chain that failed verification,
 * for the message; the verdict itself is OpenSSL's. */
static int
check_on_verify(int ok, X509_STORE_CTX *store)
{
    SSL *ssl =
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct check *c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;

    if (!ok && c != NULL && c->bad_cert[0] == '\0') {
        check_subject(X509_STORE_CTX_get_current_cert(store), c->bad_cert,
                      sizeof(c->bad_cert));
    }
    return ok;
}

/* Certificates the TLS context holds in memory (a CA directory's are read
 * only when needed, so they do not count). */
static int
check_count_certs(SSL_CTX *ctx)
{
    STACK_OF(X509_OBJECT) *objs =
        X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    int i, n = 0;

    for (i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        if (X509_OBJECT_get_type(sk_X509_OBJECT_value(objs, i)) ==
            X509_LU_X509) {
            n++;
        }
    }
    return n;
}

/* Step: the certificate authorities the worker trusts: the CA file when
 * one is configured, else OpenSSL's default store (which SSL_CERT_FILE
 * and SSL_CERT_DIR move). */
static int
check_ca(struct check *c)
{
    const char *mine = c->cfg.apns_ca_file;
    const char *file = getenv(X509_get_default_cert_file_env());
    const char *dir = getenv(X509_get_default_cert_dir_env());
    int n;

    /* With a client certificate, check_key() made the context already. */
    if (c->ctx == NULL) {
        c->ctx = SSL_CTX_new(TLS_client_method());
    }
    if (c->ctx == NULL) {
        return step_fail("TLS: cannot set up OpenSSL: %s", openssl_reason());
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, check_on_verify);

    if (mine[0] != '\0') {
        if (SSL_CTX_load_verify_locations(c->ctx, mine, NULL) != 1) {
            return step_fail("CA bundle %s: no PEM certificate in it (%s)",
                             mine, openssl_reason());
        }
        snprintf(c->trust, sizeof(c->trust), "the CA file %s", mine);
    } else {
        SSL_CTX_set_default_verify_paths(c->ctx);
        snprintf(c->trust, sizeof(c->trust),
                 "OpenSSL's default store %s and %s",
                 file != NULL ? file : X509_get_default_cert_file(),
                 dir != NULL ? dir : X509_get_default_cert_dir());
    }
    n = check_count_certs(c->ctx);
    step_ok("CA bundle: %s, %d certificate%s loaded", c->trust, n,
            n == 1 ? "" : "s");
    return 0;
}

/* Waits until fd is ready for events or the deadline passes. Returns 1
 * when ready, 0 at the deadline, -1 with errno on error. */
static int
check_wait(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        struct pollfd p = {fd, events, 0};
        int64_t left = deadline_ms - util_mono_ms();
        int rc;

        if (left <= 0) {
            return 0;
        }
        rc = poll(&p, 1, (int)left);
        if (rc >= 0 || errno != EINTR) {
            return rc > 0 ? 1 : rc;
        }
    }
}

/* Connects to one address before the deadline. Returns the non-blocking
 * socket, or -1 with the reason in why. */
static int
check_connect_one(const struct addrinfo *ai, int64_t deadline_ms,
                  int timeout_ms, char *why, size_t len)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    socklen_t elen = sizeof(int);
    int error = 0, rc;

    if (fd < 0) {
        snprintf(why, len, "%s", strerror(errno));
        return -1;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        return fd;
    }
    if (errno != EINPROGRESS) {
        snprintf(why, len, "%s", strerror(errno));
        goto fail;
    }
    rc = check_wait(fd, POLLOUT, deadline_ms);
    if (rc == 0) {
        snprintf(why, len, "no answer within %d ms (CALLPUSH_APNS_TIMEOUT_MS)",
                 timeout_ms);
        goto fail;
    }
    if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &elen) < 0) {
        snprintf(why, len, "%s", strerror(errno));
        goto fail;
    }
    if (error != 0) {
        snprintf(why, len, "%s", strerror(error));
        goto fail;
    }
    return fd;

fail:
    close(fd);
    return -1;
}

/* Opens the tunnel to the APNs host through the proxy c->fd is connected
 * to. Returns 0, or -1 with why set. */
static int
check_tunnel(struct check *c, const struct tlsconn_target *t, char *why,
             size_t len)
{
    struct buf req, answer;
    char err[TLSCONN_ERR_MAX], chunk[512];
    size_t off = 0;
    ssize_t n;
    int rc = 0;

    buf_init(&req, 4096);
    buf_init(&answer, 8192);
    tlsconn_connect_request(&req, t);
    while (rc == 0 && off < req.len) {
        n = send(c->fd, req.data + off, req.len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(why, len, "%s", strerror(errno));
            rc = -1;
        } else if (check_wait(c->fd, POLLOUT, c->deadline_ms) <= 0) {
            snprintf(why, len, "no answer within %d ms",
                     c->cfg.apns_timeout_ms);
            rc = -1;
        }
    }
    while (rc == 0) {
        if (check_wait(c->fd, POLLIN, c->deadline_ms) <= 0) {
            snprintf(why, len, "no answer to CONNECT within %d ms",
                     c->cfg.apns_timeout_ms);
            rc = -1;
            break;
        }
        n = recv(c->fd, chunk, sizeof(chunk), 0);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
            snprintf(why, len,
                     "the proxy closed the connection before "
                     "answering CONNECT");
            rc = -1;
            break;
        }
        buf_add(&answer, chunk, n > 0 ? (size_t)n : 0);
        rc = tlsconn_connect_answer(answer.data, answer.len, err);
        if (rc < 0) {
            snprintf(why, len, "refused CONNECT: %s", err);
        } else if (rc == 0 && buf_overflowed(&answer)) {
            snprintf(why, len, "answer to CONNECT too long");
            rc = -1;
        }
    }
    buf_release(&req);
    buf_release(&answer);
    return rc < 0 ? -1 : 0;
}

/* Step: a TCP connection to the APNs host, or to the proxy the worker
 * would use (then a CONNECT tunnel through it), trying each address in
 * turn within one deadline. */
static int
check_connect(struct check *c)
{
    struct addrinfo hints, *res = NULL, *ai;
    char why[CHECK_TEXT_MAX] = "no address", addr[INET6_ADDRSTRLEN];
    char err[TLSCONN_ERR_MAX], pwhere[TLSCONN_HOST_MAX + 16];
    struct tlsconn_target t;
    const char *proxy, *host = c->host, *port = c->port;
    int rc;

    memset(&t, 0, sizeof(t));
    proxy = c->cfg.apns_proxy[0] != '\0' ? c->cfg.apns_proxy
                                         : tlsconn_env_proxy(c->host);
    if (proxy != NULL) {
        if (tlsconn_parse_proxy(&t, proxy, err) < 0) {
            return step_fail("proxy: %s", err);
        }
        util_strlcpy(t.host, c->host, sizeof(t.host));
        t.port = atoi(c->port);
        snprintf(pwhere, sizeof(pwhere), "%d", t.proxy_port);
        host = t.proxy_host;
        port = pwhere;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->deadline_ms = util_mono_ms() + c->cfg.apns_timeout_ms;

    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        free(t.proxy_auth);
        return step_fail("cannot connect to %s at %s:%s: cannot resolve %s: "
                         "%s",
                         proxy != NULL ? "the proxy" : "APNs", host, port, host,
                         rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    }
    for (ai = res; ai != NULL && c->fd < 0; ai = ai->ai_next) {
        c->fd = check_connect_one(ai, c->deadline_ms, c->cfg.apns_timeout_ms,
                                  why, sizeof(why));
        if (c->fd >= 0 &&
            getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL,
                        0, NI_NUMERICHOST) != 0) {
            util_strlcpy(addr, "?", sizeof(addr));
        }
    }
    freeaddrinfo(res);

    if (c->fd < 0) {
        free(t.proxy_auth);
        if (proxy != NULL) {
            return step_fail("cannot connect to the proxy at %s:%s: %s", host,
                             port, why);
        }
        return step_fail("cannot connect to APNs at %s: %s", c->where, why);
    }
    if (proxy == NULL) {
        step_ok("connected to APNs at %s (address %s)", c->where, addr);
        return 0;
    }
    step_ok("connected to the proxy at %s:%s (address %s)", host, port, addr);
    rc = check_tunnel(c, &t, why, sizeof(why));
    if (t.proxy_auth != NULL) {
        OPENSSL_cleanse(t.proxy_auth, strlen(t.proxy_auth));
        free(t.proxy_auth);
    }
    if (rc < 0) {
        return step_fail("proxy %s:%s, tunnel to APNs at %s: %s", host, port,
                         c->where, why);
    }
    step_ok("tunnel to APNs at %s through the proxy", c->where);
    return 0;
}

/* Why the handshake stopped, when it was not the certificate. */
static const char *
check_tls_reason(int error)
{
    if (error == SSL_ERROR_SSL) {
        return openssl_reason();
    }
    if (error == SSL_ERROR_SYSCALL && errno != 0) {
        return strerror(errno);
    }
    ERR_clear_error();
    return "the server closed the connection";
}

/*
 * Step: the TLS handshake, offering the protocols the worker offers (h2,
 * then http/1.1), with the server's name or address verified against its
 * certificate as the worker verifies it. No application data is written.
 */
static int
check_tls(struct check *c)
{
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    char subject[CHECK_TEXT_MAX];
    long verify;
    int rc, error;

    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        return step_fail("TLS: cannot set up OpenSSL: %s", openssl_reason());
    }
    SSL_set_app_data(c->ssl, c);
    SSL_set_alpn_protos(c->ssl, alpn, sizeof(alpn) - 1);

    /* A certificate names an address in its own field, and SNI may not
     * carry an address at all. */
    if (c->host_is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, c->host);
        SSL_set1_host(c->ssl, c->host);
    }

    for (;;) {
        errno = 0;
        rc = SSL_connect(c->ssl);
        if (rc == 1) {
            break;
        }
        error = SSL_get_error(c->ssl, rc);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
            break;
        }
        rc = check_wait(c->fd, error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                        c->deadline_ms);
        if (rc == 0) {
            return step_fail("TLS handshake with %s: no answer within %d ms "
                             "(CALLPUSH_APNS_TIMEOUT_MS)",
                             c->where, c->cfg.apns_timeout_ms);
        }
        if (rc < 0) {
            return step_fail("TLS handshake with %s: %s", c->where,
                             strerror(errno));
        }
    }

    verify = SSL_get_verify_result(c->ssl);
    if (verify != X509_V_OK) {
        ERR_clear_error();
        return step_fail("APNs certificate not trusted: %s (certificate %s "
                         "of %s, checked against %s)",
                         X509_verify_cert_error_string(verify),
                         c->bad_cert[0] != '\0' ? c->bad_cert : "(unknown)",
                         c->where, c->trust);
    }
    if (rc != 1) {
        return step_fail("TLS handshake with %s failed: %s", c->where,
                         check_tls_reason(error));
    }

    check_subject(SSL_get0_peer_certificate(c->ssl), subject, sizeof(subject));
    step_ok("%s handshake; certificate %s trusted for %s",
            SSL_get_version(c->ssl), subject, c->host);
    return 0;
}

/*
 * With a client certificate, the handshake can succeed on our side before
 * the server has judged the certificate (TLS 1.3): its verdict is the
 * first thing it sends, an alert or its HTTP/2 SETTINGS. Reads that much,
 * and writes nothing.
 */
static int
check_cert_verdict(struct check *c)
{
    unsigned char data[64];
    size_t n = 0;
    int rc, error;

    for (;;) {
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(c->ssl, data, sizeof(data), &n) == 1) {
            step_ok("client certificate accepted (the server sent its "
                    "HTTP/2 settings)");
            return 0;
        }
        error = SSL_get_error(c->ssl, 0);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
            return step_fail("the server at %s refused the client "
                             "certificate %s: %s",
                             c->where, c->cfg.apns_cert_file,
                             check_tls_reason(error));
        }
        rc = check_wait(c->fd, error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                        c->deadline_ms);
        if (rc <= 0) {
            return step_fail("no answer from %s within %d ms after the "
                             "handshake, so the client certificate %s is not "
                             "known to be accepted",
                             c->where, c->cfg.apns_timeout_ms,
                             c->cfg.apns_cert_file);
        }
    }
}

/* Step: the server chose HTTP/2 in the handshake, as APNs must. */
static int
check_h2(struct check *c)
{
    const unsigned char *proto = NULL;
    unsigned int len = 0, i;
    char chosen[64];

    SSL_get0_alpn_selected(c->ssl, &proto, &len);
    if (len == 2 && memcmp(proto, "h2", 2) == 0) {
        step_ok("HTTP/2 negotiated (ALPN h2)");
        return c->cfg.apns_cert_file[0] != '\0' ? check_cert_verdict(c) : 0;
    }

    /* The protocol name is the server's bytes: show printable ones. */
    for (i = 0; i < len && i < sizeof(chosen) - 1; i++) {
        chosen[i] = proto[i] >= 0x20 && proto[i] < 0x7f ? (char)proto[i] : '?';
    }
    chosen[i] = '\0';
    if (len == 0) {
        return step_fail("HTTP/2 not negotiated: asked for h2 in ALPN, the "
                         "server at %s chose no protocol",
                         c->where);
    }
    return step_fail("HTTP/2 not negotiated: asked for h2 in ALPN, the "
                     "server at %s chose \"%s\"",
                     c->where, chosen);
}

static void
check_release(struct check *c)
{
    if (c->ssl != NULL) {
        /* Sends close_notify if it can; nothing else is ever written. */
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    SSL_CTX_free(c->ctx);
    jwt_free(c->jwt);
    config_release(&c->cfg);
    ERR_clear_error();
}

int
cmd_check(int argc, char **argv)
{
    static int (*const steps[])(struct check *) = {
        check_key, check_token, check_ca, check_connect, check_tls, check_h2,
    };
    struct check c;
    size_t i;
    int rc;

    for (rc = 1; rc < argc; rc++) {
        if (strcmp(argv[rc], "--help") == 0 || strcmp(argv[rc], "-h") == 0) {
            check_usage(stdout);
            return 0;
        }
    }
    log_init(LOG_ERROR, stderr);

    /* A server that drops the connection must not kill the process on
     * SSL_shutdown()'s write. */
    signal(SIGPIPE, SIG_IGN);
    memset(&c, 0, sizeof(c));
    c.fd = -1;
    rc = check_config(&c, argc, argv);
    for (i = 0; rc == 0 && i < UTIL_ARRAY_LEN(steps); i++) {
        rc = steps[i](&c);
    }
    if (rc == 0) {
        printf("all checks passed; nothing was sent to APNs\n");
    }
    check_release(&c);
    fflush(stdout);
    return rc == 0 ? 0 : rc == CHECK_REFUSED ? 2 : 1;
}
