#define _GNU_SOURCE
#include "tlsconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "util.h"

/* A proxy's answer to CONNECT is a status line and a few headers. */
#define TLSCONN_TUNNEL_MAX 8192
#define TLSCONN_PROXY_PORT 1080

static int
is_ip(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, addr) == 1 ||
           inet_pton(AF_INET6, host, addr) == 1;
}

/* The oldest OpenSSL error, or what, when OpenSSL queued none. */
static const char *
ssl_error(char *out, size_t outlen, const char *what)
{
    unsigned long e = ERR_get_error();

    if (e == 0) {
        util_strlcpy(out, what, outlen);
    } else {
        ERR_error_string_n(e, out, outlen);
    }
    ERR_clear_error();
    return out;
}

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

int
tlsconn_use_cert(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                 const char *pass, char *err)
{
    char why[128];
    int rc = TLSCONN_BAD_CERT;

    ERR_clear_error();
    SSL_CTX_set_default_passwd_cb(ctx, pass_cb);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)pass);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, TLSCONN_ERR_MAX, "certificate %s: %s", cert_file,
                 ssl_error(why, sizeof(why), "no PEM certificate in it"));
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) !=
               1) {
        snprintf(err, TLSCONN_ERR_MAX, "certificate key %s: %s", key_file,
                 ssl_error(why, sizeof(why), "no PEM private key in it"));
        rc = TLSCONN_BAD_KEY;
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, TLSCONN_ERR_MAX,
                 "certificate key %s is not the key of %s", key_file,
                 cert_file);
        rc = TLSCONN_KEY_MISMATCH;
    } else {
        rc = 0;
    }
    /* The key is loaded (or not): the passphrase is not needed again. */
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    ERR_clear_error();
    return rc;
}

int
tlsconn_use_ca(SSL_CTX *ctx, const char *ca_file, char *err)
{
    char why[128];
    int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                             : SSL_CTX_set_default_verify_paths(ctx);

    if (ok != 1) {
        snprintf(err, TLSCONN_ERR_MAX, "%s",
                 ssl_error(why, sizeof(why), "no PEM certificate in it"));
        return -1;
    }
    return 0;
}

SSL_CTX *
tlsconn_ctx_new(char *err)
{
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char why[128];

    ERR_clear_error();
    if (ctx == NULL) {
        snprintf(err, TLSCONN_ERR_MAX, "cannot create a TLS context: %s",
                 ssl_error(why, sizeof(why), "unknown error"));
        return NULL;
    }
    /* HTTP/2 needs TLS 1.2 or later (RFC 9113, section 9.2). */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* HTTP/2 forbids renegotiation (RFC 9113, section 9.2.1). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn)) != 0) {
        snprintf(err, TLSCONN_ERR_MAX, "cannot set ALPN: %s",
                 ssl_error(why, sizeof(why), "unknown error"));
        goto fail;
    }
    ERR_clear_error();
    return ctx;

fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

static int fail(struct tlsconn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct tlsconn *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    c->state = TLSCONN_FAILED;
    c->want = 0;
    return -1;
}

/* "host:port", with brackets around an IPv6 address. */
static void
host_port(char *out, size_t outlen, const char *host, int port)
{
    if (strchr(host, ':') != NULL) {
        snprintf(out, outlen, "[%s]:%d", host, port);
    } else {
        snprintf(out, outlen, "%s:%d", host, port);
    }
}

static int
start_handshake(struct tlsconn *c)
{
    c->state = TLSCONN_HANDSHAKE;
    c->want = POLLOUT;
    return tlsconn_progress(c, POLLOUT);
}

void
tlsconn_connect_request(struct buf *out, const struct tlsconn_target *t)
{
    char hp[TLSCONN_HOST_MAX + 16];

    host_port(hp, sizeof(hp), t->host, t->port);
    buf_addf(out, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", hp, hp);
    if (t->proxy_auth != NULL) {
        size_t n = strlen(t->proxy_auth);
        unsigned char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);

        EVP_EncodeBlock(b64, (const unsigned char *)t->proxy_auth, (int)n);
        buf_addf(out, "Proxy-Authorization: Basic %s\r\n", b64);
        OPENSSL_cleanse(b64, strlen((char *)b64));
        free(b64);
    }
    buf_adds(out, "\r\n");
}

int
tlsconn_connect_answer(const char *data, size_t len, char *err)
{
    const char *end = memmem(data, len, "\r\n\r\n", 4);
    char line[128];
    size_t n;
    int status;

    if (end == NULL) {
        return 0;
    }
    n = strcspn(data, "\r\n");
    snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : 127),
             data);
    if (sscanf(line, "HTTP/1.%*1[01] %3d", &status) != 1 || status != 200) {
        snprintf(err, TLSCONN_ERR_MAX, "%s", line);
        return -1;
    }
    if ((size_t)(end + 4 - data) != len) {
        snprintf(err, TLSCONN_ERR_MAX, "data after the answer to CONNECT");
        return -1;
    }
    return 1;
}

static int
start_tunnel(struct tlsconn *c)
{
    const struct tlsconn_target *t = c->target;

    buf_reset(&c->tunnel);
    tlsconn_connect_request(&c->tunnel, t);
    c->tunnel_off = 0;
    c->state = TLSCONN_TUNNEL;
    c->want = POLLOUT;
    return 0;
}

static int
after_connect(struct tlsconn *c)
{
    if (c->target->proxy_host[0] != '\0') {
        return start_tunnel(c);
    }
    return start_handshake(c);
}

int
tlsconn_start(struct tlsconn *c, SSL_CTX *ctx, const struct tlsconn_target *t)
{
    const char *host = t->proxy_host[0] != '\0' ? t->proxy_host : t->host;
    int port = t->proxy_host[0] != '\0' ? t->proxy_port : t->port;
    struct addrinfo hints, *res = NULL, *ai;
    char portstr[16];
    int rc, one = 1, saved = 0;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->target = t;
    buf_init(&c->tunnel, TLSCONN_TUNNEL_MAX);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        return fail(c, "cannot resolve %s: %s", host, gai_strerror(rc));
    }
    /* The first address that does not refuse at once; the rest of the
     * connect is asynchronous and gets no second choice. */
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        c->fd = socket(ai->ai_family,
                       ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       ai->ai_protocol);
        if (c->fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
            errno == EINPROGRESS) {
            break;
        }
        saved = errno;
        close(c->fd);
        c->fd = -1;
    }
    freeaddrinfo(res);
    if (c->fd < 0) {
        return fail(c, "connect to %s%s:%d: %s",
                    t->proxy_host[0] != '\0' ? "proxy " : "", host, port,
                    strerror(saved));
    }

    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        char why[TLSCONN_ERR_MAX];

        return fail(c, "cannot set up TLS: %s",
                    ssl_error(why, sizeof(why), "out of memory"));
    }
    if (is_ip(t->host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), t->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, t->host);
        SSL_set1_host(c->ssl, t->host);
    }
    SSL_set_connect_state(c->ssl);
    c->state = TLSCONN_CONNECTING;
    c->want = POLLOUT;
    return 0;
}

static int
progress_connect(struct tlsconn *c, short revents)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    const char *host = c->target->proxy_host[0] != '\0' ? c->target->proxy_host
                                                        : c->target->host;
    int port = c->target->proxy_host[0] != '\0' ? c->target->proxy_port
                                                : c->target->port;

    if (!(revents & (POLLOUT | POLLERR | POLLHUP))) {
        return 0;
    }
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) {
        soerr = errno;
    }
    if (soerr != 0) {
        return fail(c, "connect to %s%s:%d: %s",
                    c->target->proxy_host[0] != '\0' ? "proxy " : "", host,
                    port, strerror(soerr));
    }
    return after_connect(c) < 0 ? -1 : tlsconn_progress(c, POLLOUT);
}

/* Sends the CONNECT request, then reads the proxy's answer up to the
 * blank line. The proxy sends nothing more before the TLS handshake
 * starts, so reading what is there cannot eat a byte of it. */
static int
progress_tunnel(struct tlsconn *c, short revents)
{
    const struct tlsconn_target *t = c->target;
    char chunk[1024], why[TLSCONN_ERR_MAX];
    ssize_t n;
    int rc = 0;

    if (c->want == POLLOUT) {
        while (c->tunnel_off < c->tunnel.len) {
            n = send(c->fd, c->tunnel.data + c->tunnel_off,
                     c->tunnel.len - c->tunnel_off, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                return 0;
            }
            if (n < 0) {
                return fail(c, "proxy %s:%d: %s", t->proxy_host, t->proxy_port,
                            strerror(errno));
            }
            c->tunnel_off += (size_t)n;
        }
        buf_reset(&c->tunnel);
        c->want = POLLIN;
        return 0;
    }
    for (;;) {
        n = recv(c->fd, chunk, sizeof(chunk), 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return 0;
        }
        if (n <= 0) {
            return fail(c,
                        "proxy %s:%d closed the connection before "
                        "answering CONNECT%s%s",
                        t->proxy_host, t->proxy_port, n < 0 ? ": " : "",
                        n < 0 ? strerror(errno) : "");
        }
        buf_add(&c->tunnel, chunk, (size_t)n);
        if (buf_overflowed(&c->tunnel)) {
            return fail(c, "proxy %s:%d: answer to CONNECT over %d bytes",
                        t->proxy_host, t->proxy_port, TLSCONN_TUNNEL_MAX);
        }
        rc = tlsconn_connect_answer(c->tunnel.data, c->tunnel.len, why);
        if (rc != 0) {
            break;
        }
    }
    if (rc < 0) {
        char hp[TLSCONN_HOST_MAX + 16];

        host_port(hp, sizeof(hp), t->host, t->port);
        return fail(c, "proxy %s:%d refused CONNECT %s: %.120s", t->proxy_host,
                    t->proxy_port, hp, why);
    }
    buf_release(&c->tunnel);
    return start_handshake(c);
}

static int
progress_handshake(struct tlsconn *c)
{
    const unsigned char *proto = NULL;
    unsigned int protolen = 0;
    char why[TLSCONN_ERR_MAX];
    int rc;

    ERR_clear_error();
    rc = SSL_do_handshake(c->ssl);
    if (rc != 1) {
        long vr;

        switch (SSL_get_error(c->ssl, rc)) {
        case SSL_ERROR_WANT_READ:
            c->want = POLLIN;
            return 0;
        case SSL_ERROR_WANT_WRITE:
            c->want = POLLOUT;
            return 0;
        default:
            break;
        }
        vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK) {
            ERR_clear_error();
            return fail(c,
                        "TLS handshake with %s:%d: certificate not "
                        "trusted: %s",
                        c->target->host, c->target->port,
                        X509_verify_cert_error_string(vr));
        }
        return fail(c, "TLS handshake with %s:%d: %s", c->target->host,
                    c->target->port,
                    ssl_error(why, sizeof(why), "connection closed"));
    }
    SSL_get0_alpn_selected(c->ssl, &proto, &protolen);
    if (protolen != 2 || memcmp(proto, "h2", 2) != 0) {
        return fail(c, "%s:%d did not agree to HTTP/2 (ALPN h2)",
                    c->target->host, c->target->port);
    }
    c->state = TLSCONN_READY;
    c->want = POLLIN;
    return 1;
}

int
tlsconn_progress(struct tlsconn *c, short revents)
{
    switch (c->state) {
    case TLSCONN_CONNECTING:
        return progress_connect(c, revents);
    case TLSCONN_TUNNEL:
        return progress_tunnel(c, revents);
    case TLSCONN_HANDSHAKE:
        return progress_handshake(c);
    case TLSCONN_READY:
        return 1;
    case TLSCONN_FAILED:
        break;
    }
    return -1;
}

/* Fails c after SSL_read or SSL_write failed for good (the last
 * SSL_get_error() said neither WANT_READ nor WANT_WRITE). */
static int
io_failed(struct tlsconn *c, const char *what)
{
    char why[128];
    int e = SSL_get_error(c->ssl, 0);

    if (e == SSL_ERROR_ZERO_RETURN) {
        return fail(c, "closed by the server");
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        return fail(c, "connection lost: %s",
                    errno != 0 ? strerror(errno) : "closed");
    }
    return fail(c, "TLS: %s", ssl_error(why, sizeof(why), what));
}

ssize_t
tlsconn_read(struct tlsconn *c, void *data, size_t len)
{
    size_t n = 0;

    ERR_clear_error();
    if (SSL_read_ex(c->ssl, data, len, &n) == 1) {
        c->want = POLLIN;
        return (ssize_t)n;
    }
    switch (SSL_get_error(c->ssl, 0)) {
    case SSL_ERROR_WANT_READ:
        c->want = POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->want = POLLIN | POLLOUT;
        return 0;
    default:
        return io_failed(c, "read failed");
    }
}

ssize_t
tlsconn_write(struct tlsconn *c, const void *data, size_t len)
{
    size_t n = 0;

    ERR_clear_error();
    if (SSL_write_ex(c->ssl, data, len, &n) == 1) {
        return (ssize_t)n;
    }
    switch (SSL_get_error(c->ssl, 0)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    default:
        return io_failed(c, "write failed");
    }
}

void
tlsconn_close(struct tlsconn *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    buf_release(&c->tunnel);
    ERR_clear_error();
}

int
tlsconn_parse_hostport(const char *s, char *host, size_t hostlen, int *port,
                       char *err)
{
    const char *h, *hend, *rest;
    size_t hlen;

    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (hend == NULL) {
            snprintf(err, TLSCONN_ERR_MAX, "%s: unclosed '['", s);
            return -1;
        }
        rest = hend + 1;
    } else {
        h = s;
        hend = s + strcspn(s, ":/");
        rest = hend;
    }
    hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= hostlen) {
        snprintf(err, TLSCONN_ERR_MAX, "%s: no host, or one too long", s);
        return -1;
    }
    if (*rest == ':') {
        char *end;
        long n;

        errno = 0;
        n = strtol(rest + 1, &end, 10);
        if (errno != 0 || end == rest + 1 || n < 1 || n > 65535 ||
            (*end != '\0' && strcmp(end, "/") != 0)) {
            snprintf(err, TLSCONN_ERR_MAX, "%s: the port must be 1 to 65535",
                     s);
            return -1;
        }
        *port = (int)n;
    } else if (*rest != '\0' && strcmp(rest, "/") != 0) {
        snprintf(err, TLSCONN_ERR_MAX, "%s: expected host[:port], no path", s);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
        return (c | 0x20) - 'a' + 10;
    }
    return -1;
}

/* A copy of the n bytes at s with each "%XY" decoded. */
static char *
percent_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_value(s[i + 1]) >= 0 &&
            hex_value(s[i + 2]) >= 0) {
            out[o++] = (char)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

int
tlsconn_parse_proxy(struct tlsconn_target *t, const char *url, char *err)
{
    const char *p = url, *at;
    int port = TLSCONN_PROXY_PORT;

    if (strncasecmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strstr(p, "://") != NULL) {
        snprintf(err, TLSCONN_ERR_MAX,
                 "proxy %s: only http:// proxies (HTTP CONNECT) are "
                 "supported",
                 url);
        return -1;
    }
    /* The host starts after the last '@' (a password may hold one);
     * user and password may also be percent-encoded. */
    at = memrchr(p, '@', strcspn(p, "/"));
    if (at != NULL) {
        free(t->proxy_auth);
        t->proxy_auth = percent_decode(p, (size_t)((const char *)at - p));
        p = (const char *)at + 1;
    }
    if (tlsconn_parse_hostport(p, t->proxy_host, sizeof(t->proxy_host), &port,
                               err) < 0) {
        return -1;
    }
    t->proxy_port = (int)port;
    return 0;
}

int
tlsconn_no_proxy(const char *list, const char *host)
{
    size_t hlen = strlen(host);
    const char *p = list;

    while (p != NULL && *p != '\0') {
        const char *end = p + strcspn(p, ",");
        const char *e = p;
        size_t elen;

        while (e < end && (*e == ' ' || *e == '.')) {
            e++;
        }
        elen = (size_t)(end - e);
        while (elen > 0 && e[elen - 1] == ' ') {
            elen--;
        }
        if (elen == 1 && *e == '*') {
            return 1;
        }
        if (elen > 0 && elen <= hlen &&
            strncasecmp(host + hlen - elen, e, elen) == 0 &&
            (elen == hlen || host[hlen - elen - 1] == '.')) {
            return 1;
        }
        p = *end == ',' ? end + 1 : NULL;
    }
    return 0;
}

const char *
tlsconn_env_proxy(const char *host)
{
    const char *proxy = getenv("HTTPS_PROXY");
    const char *no = getenv("NO_PROXY");

    if (proxy == NULL || proxy[0] == '\0') {
        proxy = getenv("https_proxy");
    }
    if (no == NULL) {
        no = getenv("no_proxy");
    }
    if (proxy == NULL || proxy[0] == '\0' ||
        (no != NULL && tlsconn_no_proxy(no, host))) {
        return NULL;
    }
    return proxy;
}
