/*
 * tlsconn: one non-blocking TLS connection, opened directly or through an
 * HTTP proxy's CONNECT tunnel, that offers only HTTP/2 by ALPN.
 *
 * A connection goes through its steps (TCP connect, proxy tunnel, TLS
 * handshake) as its socket becomes ready: the owner polls the descriptor
 * for tlsconn_events() and calls tlsconn_progress() with what poll()
 * returned, until it says the connection is ready or failed. After that,
 * tlsconn_read() and tlsconn_write() move bytes and say when they would
 * block.
 *
 * Name resolution is the one step that blocks: getaddrinfo() runs inside
 * tlsconn_start(). A host given as an IP address does not resolve.
 *
 * Thread safety: a connection belongs to one thread.
 */
#ifndef CALLPUSH_TLSCONN_H
#define CALLPUSH_TLSCONN_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "buf.h"

#define TLSCONN_ERR_MAX 256
#define TLSCONN_HOST_MAX 256

/* Where to connect: a host and port, and maybe a proxy in between. */
struct tlsconn_target {
    char host[TLSCONN_HOST_MAX]; /* a name or an IP address, no brackets */
    int port;
    char proxy_host[TLSCONN_HOST_MAX]; /* "" for none */
    int proxy_port;
    char *proxy_auth; /* "user:password" for Basic, NULL for none */
};

enum tlsconn_state {
    TLSCONN_CONNECTING, /* TCP connect in progress */
    TLSCONN_TUNNEL,     /* waiting for the proxy's answer to CONNECT */
    TLSCONN_HANDSHAKE,  /* TLS handshake in progress */
    TLSCONN_READY,      /* HTTP/2 agreed; bytes flow */
    TLSCONN_FAILED      /* see err */
};

struct tlsconn {
    int fd;
    SSL *ssl;
    enum tlsconn_state state;
    short want;        /* poll events the current step waits for */
    struct buf tunnel; /* the CONNECT request, then the proxy's answer */
    size_t tunnel_off;
    const struct tlsconn_target *target;
    char err[TLSCONN_ERR_MAX];
};

/*
 * A client context that verifies the server and offers only ALPN "h2";
 * what it trusts comes from tlsconn_use_ca(). Returns NULL with err set.
 */
SSL_CTX *tlsconn_ctx_new(char *err);

/* Makes ctx trust the PEM certificates in ca_file (NULL: OpenSSL's default
 * store). Returns 0, or -1 with err set to OpenSSL's reason. */
int tlsconn_use_ca(SSL_CTX *ctx, const char *ca_file, char *err);

/* What tlsconn_use_cert() found wrong, so callers can name their setting. */
enum {
    TLSCONN_BAD_CERT = -1,    /* no PEM certificate in the file */
    TLSCONN_BAD_KEY = -2,     /* no key, or not decrypted by pass */
    TLSCONN_KEY_MISMATCH = -3 /* the key is not the certificate's */
};

/* Makes ctx present the PEM certificate chain in cert_file, with the key
 * in key_file decrypted by pass (NULL: not encrypted). Returns 0, or one
 * of the values above with err set. */
int tlsconn_use_cert(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                     const char *pass, char *err);

/* Starts connecting. Returns 0, or -1 with c->err set and the connection
 * failed (tlsconn_close() is still needed). */
int tlsconn_start(struct tlsconn *c, SSL_CTX *ctx,
                  const struct tlsconn_target *target);

/* Advances the connection after poll() reported revents on c->fd.
 * Returns 1 once ready, 0 while still in progress, -1 when it failed. */
int tlsconn_progress(struct tlsconn *c, short revents);

/* Reads up to len bytes of application data. Returns the count, 0 when
 * nothing is there now, -1 when the connection is over (c->err says why;
 * a clean close by the peer is also -1). */
ssize_t tlsconn_read(struct tlsconn *c, void *data, size_t len);

/* Writes up to len bytes. Returns the count taken (maybe 0), -1 when the
 * connection is broken. */
ssize_t tlsconn_write(struct tlsconn *c, const void *data, size_t len);

/* Closes the socket and frees the TLS state; safe on a closed one. */
void tlsconn_close(struct tlsconn *c);

/*
 * Parses "host[:port][/]" or "[v6addr][:port][/]" into host (without
 * brackets) and *port, which keeps its value when no port is given.
 * Returns 0, or -1 with err set.
 */
int tlsconn_parse_hostport(const char *s, char *host, size_t hostlen, int *port,
                           char *err);

/*
 * Parses "http://[user:password@]host[:port][/]" into the proxy fields of
 * t; the port defaults to 1080. Returns 0, or -1 with err set.
 */
int tlsconn_parse_proxy(struct tlsconn_target *t, const char *url, char *err);

/*
 * Whether host is exempt from the proxy by a NO_PROXY style list:
 * comma-separated names, each matching the host itself or any name under
 * it; "*" matches every host.
 */
int tlsconn_no_proxy(const char *list, const char *host);

/* The proxy the environment names for host: HTTPS_PROXY (or
 * https_proxy) unless NO_PROXY (or no_proxy) exempts host; NULL for
 * none. */
const char *tlsconn_env_proxy(const char *host);

/* Appends the CONNECT request for t's host through its proxy to out. */
void tlsconn_connect_request(struct buf *out, const struct tlsconn_target *t);

/* Judges a proxy's answer to CONNECT, all len bytes read so far: 1 when
 * it is a complete 200, 0 when more is needed, -1 with err set (the
 * status line) when the proxy refused. */
int tlsconn_connect_answer(const char *data, size_t len, char *err);

#endif
