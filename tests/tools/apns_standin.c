/*
 * apns-standin: a local stand-in for the APNs HTTP/2 provider API.
 *
 * It listens on 127.0.0.1 only, speaks HTTP/2 over TLS (ALPN "h2" only),
 * and checks every request the way APNs does: method, path and device
 * token, duplicate headers, the ES256 provider token, topic, push type,
 * priority, apns-id, expiration, collapse id and payload. The first failed
 * check answers, with APNs's status and reason; a request that passes gets
 * 200 with no body, or what a --fail rule names for its token. A 410
 * answer carries "timestamp" (milliseconds) in its body, as APNs's does.
 *
 * Provider tokens follow APNs's clock rules: an iat over an hour old is
 * 403 ExpiredProviderToken, one more than a minute ahead is invalid. A
 * connection remembers the last token it accepted; a different token on
 * it whose iat is less than 20 minutes after that one's is 429
 * TooManyProviderTokenUpdates. A new connection may start with any valid
 * token. "Now" for these checks and for the 410 timestamp is the real
 * time plus the whole seconds written in --clock-file (re-read when the
 * file changes; missing or empty means 0), so a test can move an hour on.
 *
 * Every complete request, accepted or not, is appended to the --record
 * file as one JSON line, so tests can see exactly what the client sent.
 * A request whose stream or connection closes before its (delayed) answer
 * is recorded with status 0. Each line also says how many streams were
 * open on the connection when the request's headers began, itself
 * included ("open_streams"), the stream limit advertised at that moment
 * ("stream_limit"), and whether the request was held, reset or refused.
 *
 * Faults a test can ask for:
 *  - --fail TOKEN=STATUS:REASON[:COUNT] answers a valid request for TOKEN
 *    with that status and reason; TOKEN=hold[:COUNT] reads it and never
 *    answers (the stream stays open until the client resets it or the
 *    connection goes; recorded then, status 0, "held"); TOKEN=reset[:COUNT]
 *    reads it and sends RST_STREAM INTERNAL_ERROR (status 0, "reset").
 *    With COUNT only the next COUNT valid requests for TOKEN, counted over
 *    all connections, get it; rules for one token apply in the order
 *    given, a rule without COUNT for good. Invalid requests get their
 *    check's answer first and use up nothing.
 *  - --goaway-after N: right after the Nth complete request on a
 *    connection, GOAWAY NO_ERROR with that request's stream id as the last
 *    one. Streams above it are refused unanswered (recorded, status 0,
 *    "refused", if their HEADERS arrived at all); when every stream up to
 *    it is answered, the stand-in closes the connection.
 *  - --initial-streams K: each connection starts with
 *    SETTINGS_MAX_CONCURRENT_STREAMS K and gets --max-streams once a
 *    request on it is answered 200, as APNs does with token auth. A client
 *    that opens more streams than advertised is counted and logged
 *    whatever nghttp2 then does with the stream (it refuses it before our
 *    SETTINGS are acknowledged, and ends the connection with GOAWAY
 *    PROTOCOL_ERROR after).
 *  - SIGUSR1 silences every connection open at that moment: it is never
 *    read or written again (no answers, no PING acks) nor closed until
 *    the stand-in exits. Later connections behave normally.
 * With --conn-record each connection appends one JSON line there when it
 * closes (or when the stand-in exits): its requests, RST_STREAM and PING
 * frames received, whether GOAWAY was sent, the most streams open at once,
 * the limit violations, whether it was silenced, and who closed it.
 *
 * With --client-ca the stand-in also asks for a TLS client certificate
 * and verifies it against that CA. A request on a connection whose client
 * certificate verified needs no provider token, as at APNs; each record
 * line says the certificate's subject common name in "client_cert" (null
 * without one).
 *
 * Two rules are simpler than Apple's: every push type but voip must use
 * the bare bundle id as its topic (Apple wants suffixes such as
 * ".complication" for some types this project never sends), and the
 * payload must be a JSON object with an "aps" object (Apple documents only
 * the size limit). Both err on the side of refusing.
 *
 * One thread, one epoll loop, non-blocking sockets. Delayed answers (and
 * resets) wait in a FIFO queue ordered by due time (the delay is the same
 * for every request), which sets the epoll timeout. A connection closed
 * while its TLS session still works gets close_notify and a FIN, and the
 * stand-in drains what the client still sends for up to two seconds
 * before closing the socket: closing with unread input would reset the
 * connection and could destroy the last answers before the client read
 * them.
 *
 * The program is one file on purpose: the build links it against
 * libnghttp2, cJSON and OpenSSL only, so it carries its own small
 * allocation and string helpers.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <nghttp2/nghttp2.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define SI_ERR_MAX 256

/* Caps on what one request may make us buffer. */
#define SI_MAX_HEADERS 64
#define SI_MAX_HEADER_BYTES 16384
#define SI_MAX_BODY 8192

/* APNs's own limits. */
#define SI_PAYLOAD_MAX 4096
#define SI_PAYLOAD_MAX_VOIP 5120
#define SI_TOKEN_MIN 16
#define SI_TOKEN_MAX 200
#define SI_COLLAPSE_MAX 64
#define SI_JWT_MAX_AGE_S 3600
#define SI_JWT_MAX_SKEW_S 60
#define SI_JWT_MIN_UPDATE_S 1200

#define SI_DEVICE_PREFIX "/3/device/"
#define SI_UUID_LEN 36
#define SI_OUT_HIGH (64 * 1024)
#define SI_READ_CHUNK (16 * 1024)
#define SI_MAX_EVENTS 64
#define SI_LINGER_MS 2000
#define SI_CLOCK_FILE_MAX 64

/*
 * Without --keep-reset-limit the stream reset limiter gets a bucket no
 * test can empty: libcurl resets every stream whose response has no body,
 * which is every APNs success. The rate stays small enough that the
 * library's refill arithmetic (seconds elapsed times rate) cannot overflow.
 */
#define SI_RESET_BURST (UINT64_C(1) << 40)
#define SI_RESET_RATE (UINT64_C(1) << 30)

static const char *const si_push_types[] = {
    "alert", "background", "voip",         "complication", "fileprovider",
    "mdm",   "location",   "liveactivity", "pushtotalk",
};

/* ---- allocation and strings -------------------------------------------- */

static void
si_oom(void)
{
    fputs("apns-standin: out of memory\n", stderr);
    abort();
}

static void *
si_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

    if (p == NULL) {
        si_oom();
    }
    return p;
}

static void *
si_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);

    if (p == NULL) {
        si_oom();
    }
    return p;
}

static char *
si_xstrndup(const char *s, size_t n)
{
    char *p = si_xrealloc(NULL, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* A growable string, always NUL-terminated once anything was added. Its
 * users bound what they add (every input is capped before it gets here). */
struct si_str {
    char *data;
    size_t len;
    size_t alloc;
};

static void
si_str_add(struct si_str *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->alloc) {
        size_t alloc = b->alloc ? b->alloc : 64;

        while (alloc < b->len + n + 1) {
            alloc *= 2;
        }
        b->data = si_xrealloc(b->data, alloc);
        b->alloc = alloc;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void
si_str_adds(struct si_str *b, const char *s)
{
    si_str_add(b, s, strlen(s));
}

static void si_str_addf(struct si_str *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
si_str_addf(struct si_str *b, const char *fmt, ...)
{
    va_list ap;
    char *tmp;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return;
    }
    tmp = si_xrealloc(NULL, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    si_str_add(b, tmp, (size_t)n);
    free(tmp);
}

static void
si_str_release(struct si_str *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t
si_utf8_len(const unsigned char *p, size_t n)
{
    size_t len, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (p[0] < 0x80) {
        return 1;
    }
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        lo = p[0] == 0xe0 ? 0xa0 : 0x80;
        hi = p[0] == 0xed ? 0x9f : 0xbf;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        lo = p[0] == 0xf0 ? 0x90 : 0x80;
        hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }
    return len;
}

/*
 * Appends s as a quoted JSON string. Valid UTF-8 is copied byte for byte;
 * a byte that is not valid UTF-8 cannot be carried by JSON at all and
 * becomes U+FFFD, so the record stays parseable.
 */
static void
si_str_json(struct si_str *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    si_str_add(b, "\"", 1);
    while (i < n) {
        size_t len = si_utf8_len(p + i, n - i);
        char esc[6] = {'\\', 'u', '0', '0', 0, 0};

        if (len == 0) {
            si_str_adds(b, "\\ufffd");
            i++;
            continue;
        }
        if (p[i] == '"' || p[i] == '\\') {
            si_str_add(b, "\\", 1);
            si_str_add(b, p + i, 1);
        } else if (p[i] == '\n') {
            si_str_adds(b, "\\n");
        } else if (p[i] == '\r') {
            si_str_adds(b, "\\r");
        } else if (p[i] == '\t') {
            si_str_adds(b, "\\t");
        } else if (p[i] < 0x20) {
            esc[4] = hex[p[i] >> 4];
            esc[5] = hex[p[i] & 0xf];
            si_str_add(b, esc, sizeof(esc));
        } else {
            si_str_add(b, p + i, len);
        }
        i += len;
    }
    si_str_add(b, "\"", 1);
}

static int64_t
si_clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- state --------------------------------------------------------------- */

/* What a --fail rule does to a valid request for its token. */
enum si_action { SI_ACT_ANSWER, SI_ACT_HOLD, SI_ACT_RESET };

struct si_rule {
    char *token;
    enum si_action action;
    int status;           /* SI_ACT_ANSWER only */
    char *reason;         /* SI_ACT_ANSWER only */
    unsigned long count;  /* 0: every request */
    unsigned long used;   /* requests it answered, over all connections */
    struct si_rule *next; /* in command-line order */
};

struct si_opts {
    const char *cert;
    const char *key;
    const char *auth_key;
    const char *key_id;
    const char *team_id;
    const char *topic;
    const char *record;
    const char *port_file;
    const char *client_ca;   /* NULL: client certificates are not asked for */
    const char *clock_file;  /* NULL: the real time */
    const char *conn_record; /* NULL: no connection records */
    int port;
    int max_streams;
    int initial_streams; /* 0: start with max_streams */
    int goaway_after;    /* 0: never */
    int delay_ms;
    int keep_reset_limit;
    struct si_rule *rules;
};

struct si_header {
    char *name;
    char *value;
};

struct si_conn;

/* One request and, once it is complete, its verdict and answer. */
struct si_stream {
    struct si_conn *conn;
    int32_t id;

    struct si_header headers[SI_MAX_HEADERS];
    size_t nheaders;
    size_t header_bytes;
    struct si_str body;
    int body_overflow;

    unsigned long open_streams; /* on the connection as it began */
    uint32_t stream_limit;      /* advertised as it began */

    int complete;
    int answered;
    enum si_action action;
    int held;
    int reset;
    int refused; /* above a GOAWAY's last-stream-id */
    int status;
    const char *reason; /* static, or owned by a --fail rule */
    const char *token;  /* points into the :path header, or "" */
    char apns_id[SI_UUID_LEN + 1];
    int64_t now_ms; /* the stand-in's clock when it was judged */
    int has_iat;
    int64_t iat;
    struct si_str resp;
    size_t resp_off;

    int64_t due_ms;
    int queued;
    struct si_stream *prev, *next;   /* the connection's streams */
    struct si_stream *qprev, *qnext; /* the answer queue */
};

/* SI_CONN_LINGER: closed as far as HTTP/2 goes, still draining input. */
enum si_conn_state { SI_CONN_HANDSHAKE, SI_CONN_H2, SI_CONN_LINGER };

enum si_closer { SI_BY_SERVER, SI_BY_CLIENT, SI_BY_EXIT };

struct si_server;

struct si_conn {
    struct si_server *srv;
    uint64_t num;
    int fd;
    SSL *ssl;
    nghttp2_session *h2;
    enum si_conn_state state;
    uint32_t events;
    int read_wants_write;
    int write_wants_out;
    int tls_broken;
    int dirty;
    struct si_str out;
    size_t out_off;
    unsigned long requests; /* complete and not refused */
    char peer[64];
    char why[SI_ERR_MAX];
    enum si_closer closed_by;
    int64_t linger_until_ms;
    int silenced;

    /* The provider token last accepted here, for the update rule. */
    char *jwt;
    int64_t jwt_iat;

    /* Streams and their limit, as the client opens them. */
    unsigned long open_streams;
    unsigned long max_open_streams;
    unsigned long limit_violations;
    uint32_t stream_limit; /* the last value sent */
    int limit_raised;
    int32_t last_new_id;
    int32_t begin_id; /* the stream whose HEADERS just began, or 0 */
    unsigned long begin_open;
    uint32_t begin_limit;
    int32_t refused_id; /* begun above goaway_id, not yet seen opening */

    int goaway_sent;
    int goaway_received;
    int32_t goaway_id; /* --goaway-after's last-stream-id, or 0 */

    unsigned long records;
    unsigned long rst_received;
    unsigned long pings_received;

    struct si_stream *streams;
    struct si_conn *prev, *next;
};

/* What --clock-file held when last read, and the file it was read from. */
struct si_clock {
    int valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int64_t offset_s;
};

struct si_server {
    struct si_opts opts;
    SSL_CTX *ctx;
    EVP_PKEY *auth_key;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *h2opt;
    FILE *record;
    FILE *conn_record;
    struct si_clock clock;
    int lfd;
    int epfd;
    int sfd;
    int stop;
    uint64_t nconns;
    struct si_conn *conns;
    struct si_stream *qhead, *qtail;
    char *jwt_good; /* the last provider token that verified */
    int64_t jwt_good_iat;
};

/* ---- the stand-in's clock ---------------------------------------------- */

/* A century either way keeps every sum in milliseconds far from overflow. */
#define SI_CLOCK_OFFSET_MAX (INT64_C(100) * 366 * 24 * 3600)

static int
si_is_blank(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The text of --clock-file: one integer with blanks around it, or blanks
 * only (which mean 0). */
static int
si_parse_offset(const char *text, int64_t *out)
{
    char *end;
    long long v;

    while (si_is_blank((unsigned char)*text)) {
        text++;
    }
    if (*text == '\0') {
        *out = 0;
        return 0;
    }
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || v > SI_CLOCK_OFFSET_MAX ||
        v < -SI_CLOCK_OFFSET_MAX) {
        return -1;
    }
    while (si_is_blank((unsigned char)*end)) {
        end++;
    }
    if (*end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

static int
si_clock_same_file(const struct si_clock *ck, const struct stat *sb)
{
    return ck->valid && ck->dev == sb->st_dev && ck->ino == sb->st_ino &&
           ck->size == sb->st_size && ck->mtime.tv_sec == sb->st_mtim.tv_sec &&
           ck->mtime.tv_nsec == sb->st_mtim.tv_nsec;
}

/*
 * The seconds --clock-file adds to the real time. While the file stays
 * the same a stat is all a request costs. A file changed in the last two
 * seconds is read again regardless: file times move in coarse steps, and
 * a quick rewrite of the same length would otherwise go unseen.
 */
static int64_t
si_clock_offset_s(struct si_server *srv)
{
    const char *path = srv->opts.clock_file;
    struct si_clock *ck = &srv->clock;
    char text[SI_CLOCK_FILE_MAX + 1];
    struct stat sb;
    int64_t offset;
    size_t n;
    FILE *f;

    if (path == NULL) {
        return 0;
    }
    if (stat(path, &sb) != 0) {
        ck->valid = 0;
        ck->offset_s = 0;
        return 0;
    }
    if (si_clock_same_file(ck, &sb) && time(NULL) - sb.st_mtim.tv_sec > 2) {
        return ck->offset_s;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        ck->valid = 0;
        ck->offset_s = 0;
        return 0;
    }
    n = fread(text, 1, SI_CLOCK_FILE_MAX, f);
    fclose(f);
    text[n] = '\0';
    if (n == SI_CLOCK_FILE_MAX || si_parse_offset(text, &offset) < 0) {
        if (!si_clock_same_file(ck, &sb)) {
            fprintf(stderr,
                    "apns-standin: %s holds no whole number of seconds, "
                    "taken as 0\n",
                    path);
        }
        offset = 0;
    }
    if (offset != ck->offset_s) {
        fprintf(stderr, "apns-standin: clock offset %+" PRId64 " s\n", offset);
    }
    ck->valid = 1;
    ck->dev = sb.st_dev;
    ck->ino = sb.st_ino;
    ck->size = sb.st_size;
    ck->mtime = sb.st_mtim;
    ck->offset_s = offset;
    return offset;
}

/* The stand-in's "now" in milliseconds: real time plus --clock-file. */
static int64_t
si_now_ms(struct si_server *srv)
{
    return si_clock_ms(CLOCK_REALTIME) + si_clock_offset_s(srv) * 1000;
}

/* ---- request checks ---------------------------------------------------- */

/* The value of header name and, in *count, how often it was sent. */
static const char *
si_header_get(const struct si_stream *st, const char *name, int *count)
{
    const char *value = NULL;
    size_t i;
    int n = 0;

    for (i = 0; i < st->nheaders; i++) {
        if (strcmp(st->headers[i].name, name) == 0) {
            if (value == NULL) {
                value = st->headers[i].value;
            }
            n++;
        }
    }
    if (count != NULL) {
        *count = n;
    }
    return value;
}

static int
si_reject(struct si_stream *st, int status, const char *reason)
{
    st->status = status;
    st->reason = reason;
    return -1;
}

static int
si_is_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

static int
si_is_token(const char *s)
{
    size_t i, n = strlen(s);

    if (n < SI_TOKEN_MIN || n > SI_TOKEN_MAX || n % 2 != 0) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!si_is_hex((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* A canonical UUID in lowercase: 8-4-4-4-12 hex digits. */
static int
si_is_uuid(const char *s)
{
    size_t i;

    if (strlen(s) != SI_UUID_LEN) {
        return 0;
    }
    for (i = 0; i < SI_UUID_LEN; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        int c = (unsigned char)s[i];

        if (dash ? c != '-'
                 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

static int
si_all_digits(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

static void
si_uuid_new(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    size_t i, o = 0;

    if (RAND_bytes(r, sizeof(r)) != 1) {
        fputs("apns-standin: RAND_bytes failed\n", stderr);
        abort();
    }

    /* Version 4, variant 10xx, as RFC 9562 describes random UUIDs. */
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    for (i = 0; i < sizeof(r); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 0xf];
    }
    out[o] = '\0';
}

static int
si_b64url_value(int c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

/*
 * Decodes base64url without padding, as JWS requires. Padding, characters
 * of the other alphabet and non-zero leftover bits are all rejected: a
 * correct encoder never produces them.
 */
static int
si_b64url_decode(const char *in, size_t len, struct si_str *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i;

    if (len % 4 == 1) {
        return -1;
    }
    for (i = 0; i < len; i++) {
        int v = si_b64url_value((unsigned char)in[i]);

        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            char c;

            bits -= 8;
            c = (char)((acc >> bits) & 0xff);
            si_str_add(out, &c, 1);
            acc &= (UINT32_C(1) << bits) - 1;
        }
    }
    if (acc != 0) {
        return -1;
    }
    if (out->data == NULL) {
        si_str_add(out, "", 0);
    }
    return 0;
}

/* Parses exactly n bytes as one JSON value (whitespace may surround it). */
static cJSON *
si_json_parse(const char *p, size_t n)
{
    const char *end = NULL;
    cJSON *j;

    if (p == NULL || n == 0) {
        return NULL;
    }
    j = cJSON_ParseWithLengthOpts(p, n, &end, 0);
    if (j == NULL) {
        return NULL;
    }
    while (end < p + n &&
           (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) {
        end++;
    }
    if (end != p + n) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static int
si_jwt_header_ok(const struct si_server *srv, const struct si_str *raw)
{
    cJSON *j = si_json_parse(raw->data, raw->len);
    const cJSON *alg, *kid, *typ;
    int ok = 0;

    if (!cJSON_IsObject(j)) {
        goto done;
    }
    alg = cJSON_GetObjectItemCaseSensitive(j, "alg");
    kid = cJSON_GetObjectItemCaseSensitive(j, "kid");
    typ = cJSON_GetObjectItemCaseSensitive(j, "typ");
    ok = cJSON_IsString(alg) && strcmp(alg->valuestring, "ES256") == 0 &&
         cJSON_IsString(kid) &&
         strcmp(kid->valuestring, srv->opts.key_id) == 0 &&
         (typ == NULL || cJSON_IsString(typ));

done:
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

/* Checks the claims and keeps iat in st whenever it is an integer, so the
 * record shows it even for a token rejected for another reason. */
static int
si_jwt_claims_ok(const struct si_server *srv, const struct si_str *raw,
                 struct si_stream *st)
{
    cJSON *j = si_json_parse(raw->data, raw->len);
    const cJSON *iss, *iat;
    int ok = 0;

    if (!cJSON_IsObject(j)) {
        goto done;
    }
    iss = cJSON_GetObjectItemCaseSensitive(j, "iss");
    iat = cJSON_GetObjectItemCaseSensitive(j, "iat");
    if (cJSON_IsNumber(iat) && iat->valuedouble >= -9007199254740992.0 &&
        iat->valuedouble <= 9007199254740992.0 &&
        iat->valuedouble == (double)(int64_t)iat->valuedouble) {
        st->iat = (int64_t)iat->valuedouble;
        st->has_iat = 1;
    }
    ok = cJSON_IsString(iss) &&
         strcmp(iss->valuestring, srv->opts.team_id) == 0 && st->has_iat;

done:
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

/*
 * Verifies a raw 64-byte r||s ES256 signature over msg. OpenSSL verifies
 * DER signatures, so r and s are wrapped in an ECDSA_SIG and encoded first.
 */
static int
si_es256_verify(EVP_PKEY *key, const char *msg, size_t msglen,
                const unsigned char *raw)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL);
    BIGNUM *s = BN_bin2bn(raw + 32, 32, NULL);
    unsigned char *der = NULL;
    EVP_MD_CTX *md = NULL;
    int derlen, ok = 0;

    if (sig == NULL || r == NULL || s == NULL ||
        ECDSA_SIG_set0(sig, r, s) != 1) {
        goto done;
    }

    /* The signature owns r and s now. */
    r = NULL;
    s = NULL;
    derlen = i2d_ECDSA_SIG(sig, &der);
    md = EVP_MD_CTX_new();
    if (derlen <= 0 || md == NULL ||
        EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1) {
        goto done;
    }
    ok = EVP_DigestVerify(md, der, (size_t)derlen, (const unsigned char *)msg,
                          msglen) == 1;

done:
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    ERR_clear_error();
    return ok ? 0 : -1;
}

/* Checks everything in a JWT but its age; sets st's iat when it can. */
static int
si_jwt_verify(const struct si_server *srv, struct si_stream *st,
              const char *jwt)
{
    struct si_str hdr = {0}, claims = {0}, sig = {0};
    const char *dot1, *dot2;
    int claims_ok, rc = -1;

    dot1 = strchr(jwt, '.');
    dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    if (dot2 == NULL || strchr(dot2 + 1, '.') != NULL) {
        goto done;
    }

    if (si_b64url_decode(jwt, (size_t)(dot1 - jwt), &hdr) < 0 ||
        si_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &claims) < 0 ||
        si_b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig) < 0) {
        goto done;
    }

    claims_ok = si_jwt_claims_ok(srv, &claims, st) == 0;
    if (si_jwt_header_ok(srv, &hdr) < 0 || !claims_ok) {
        goto done;
    }

    /* A DER signature (70-72 bytes) is refused here: JWS wants raw r||s. */
    if (sig.len != 64 ||
        si_es256_verify(srv->auth_key, jwt, (size_t)(dot2 - jwt),
                        (const unsigned char *)sig.data) < 0) {
        goto done;
    }
    rc = 0;

done:
    si_str_release(&hdr);
    si_str_release(&claims);
    si_str_release(&sig);
    return rc;
}

enum si_jwt_result {
    SI_JWT_OK,
    SI_JWT_INVALID,
    SI_JWT_EXPIRED,
    SI_JWT_TOO_MANY_UPDATES,
};

/*
 * APNs binds a connection to the token it last accepted there: another
 * one minted less than 20 minutes after it is refused, and the
 * connection keeps the old one. Only a token that passed every other
 * check becomes the connection's.
 */
static enum si_jwt_result
si_jwt_update(struct si_conn *c, const struct si_stream *st, const char *jwt)
{
    if (c->jwt != NULL && strcmp(c->jwt, jwt) == 0) {
        return SI_JWT_OK;
    }
    if (c->jwt != NULL && st->iat - c->jwt_iat < SI_JWT_MIN_UPDATE_S) {
        return SI_JWT_TOO_MANY_UPDATES;
    }
    free(c->jwt);
    c->jwt = si_xstrndup(jwt, strlen(jwt));
    c->jwt_iat = st->iat;
    return SI_JWT_OK;
}

/*
 * Clients send the same token on every request for up to an hour, and an
 * ECDSA verification costs more than everything else a request does here,
 * so the last token that verified is remembered with its iat. Its age is
 * still checked on every request.
 */
static enum si_jwt_result
si_jwt_check(struct si_server *srv, struct si_stream *st, const char *auth,
             int64_t now_s)
{
    const char *jwt;

    if (strncasecmp(auth, "bearer ", 7) != 0) {
        return SI_JWT_INVALID;
    }
    jwt = auth + 7;
    if (srv->jwt_good != NULL && strcmp(jwt, srv->jwt_good) == 0) {
        st->iat = srv->jwt_good_iat;
        st->has_iat = 1;
    } else {
        if (si_jwt_verify(srv, st, jwt) < 0) {
            return SI_JWT_INVALID;
        }
        free(srv->jwt_good);
        srv->jwt_good = si_xstrndup(jwt, strlen(jwt));
        srv->jwt_good_iat = st->iat;
    }

    if (st->iat - now_s > SI_JWT_MAX_SKEW_S) {
        return SI_JWT_INVALID;
    }
    if (now_s - st->iat > SI_JWT_MAX_AGE_S) {
        return SI_JWT_EXPIRED;
    }
    return si_jwt_update(st->conn, st, jwt);
}

static int
si_check_target(struct si_stream *st)
{
    const char *method = si_header_get(st, ":method", NULL);
    const char *path = si_header_get(st, ":path", NULL);

    if (method == NULL || strcmp(method, "POST") != 0) {
        return si_reject(st, 405, "MethodNotAllowed");
    }
    if (path == NULL ||
        strncmp(path, SI_DEVICE_PREFIX, strlen(SI_DEVICE_PREFIX)) != 0) {
        return si_reject(st, 404, "BadPath");
    }

    if (st->token[0] == '\0') {
        return si_reject(st, 400, "MissingDeviceToken");
    }
    if (!si_is_token(st->token)) {
        return si_reject(st, 400, "BadDeviceToken");
    }
    return 0;
}

static int
si_check_duplicates(struct si_stream *st)
{
    size_t i;

    for (i = 0; i < st->nheaders; i++) {
        const char *name = st->headers[i].name;
        int count;

        if (strncmp(name, "apns-", 5) != 0 &&
            strcmp(name, "authorization") != 0) {
            continue;
        }
        si_header_get(st, name, &count);
        if (count > 1) {
            return si_reject(st, 400, "DuplicateHeaders");
        }
    }
    return 0;
}

/*
 * Writes the subject common name of the connection's client certificate
 * into out and returns 1, when the client sent one and it verified against
 * --client-ca; returns 0 otherwise. A certificate without a common name
 * shows as "".
 */
static int
si_client_cn(const struct si_conn *c, char *out, size_t outlen)
{
    X509 *peer;
    int n;

    out[0] = '\0';
    if (c->srv->opts.client_ca == NULL || c->ssl == NULL) {
        return 0;
    }
    peer = SSL_get0_peer_certificate(c->ssl);
    if (peer == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK) {
        return 0;
    }
    n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
                                  out, (int)outlen);
    if (n < 0) {
        out[0] = '\0';
    }
    return 1;
}

static int
si_check_auth(struct si_server *srv, struct si_stream *st)
{
    const char *auth = si_header_get(st, "authorization", NULL);
    int64_t now_s = st->now_ms / 1000;
    char cn[256];

    /* A connection authenticated by a client certificate needs no
     * provider token: APNs ignores one sent on it. */
    if (si_client_cn(st->conn, cn, sizeof(cn))) {
        return 0;
    }
    if (auth == NULL || auth[0] == '\0') {
        return si_reject(st, 403, "MissingProviderToken");
    }
    switch (si_jwt_check(srv, st, auth, now_s)) {
    case SI_JWT_OK:
        return 0;
    case SI_JWT_EXPIRED:
        return si_reject(st, 403, "ExpiredProviderToken");
    case SI_JWT_TOO_MANY_UPDATES:
        return si_reject(st, 429, "TooManyProviderTokenUpdates");
    default:
        return si_reject(st, 403, "InvalidProviderToken");
    }
}

static int
si_is_push_type(const char *s)
{
    size_t i;

    for (i = 0; i < sizeof(si_push_types) / sizeof(si_push_types[0]); i++) {
        if (strcmp(s, si_push_types[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static int
si_is_voip(const struct si_stream *st)
{
    const char *type = si_header_get(st, "apns-push-type", NULL);

    return type != NULL && strcmp(type, "voip") == 0;
}

static int
si_check_topic(const struct si_server *srv, struct si_stream *st)
{
    const char *topic = si_header_get(st, "apns-topic", NULL);
    const char *type = si_header_get(st, "apns-push-type", NULL);
    size_t n = strlen(srv->opts.topic);
    int ok;

    if (topic == NULL) {
        return si_reject(st, 400, "MissingTopic");
    }
    if (si_is_voip(st)) {
        ok = strncmp(topic, srv->opts.topic, n) == 0 &&
             strcmp(topic + n, ".voip") == 0;
    } else {
        ok = strcmp(topic, srv->opts.topic) == 0;
    }
    if (!ok) {
        return si_reject(st, 400, "TopicDisallowed");
    }
    if (type == NULL || !si_is_push_type(type)) {
        return si_reject(st, 400, "InvalidPushType");
    }
    return 0;
}

static int
si_check_options(struct si_stream *st)
{
    const char *type = si_header_get(st, "apns-push-type", NULL);
    const char *prio = si_header_get(st, "apns-priority", NULL);
    const char *id = si_header_get(st, "apns-id", NULL);
    const char *exp = si_header_get(st, "apns-expiration", NULL);
    const char *collapse = si_header_get(st, "apns-collapse-id", NULL);

    if (prio != NULL && strcmp(prio, "10") != 0 && strcmp(prio, "5") != 0 &&
        strcmp(prio, "1") != 0) {
        return si_reject(st, 400, "BadPriority");
    }

    /* An absent priority means 10 to APNs, which background forbids. */
    if (strcmp(type, "background") == 0 &&
        (prio == NULL || strcmp(prio, "5") != 0)) {
        return si_reject(st, 400, "BadPriority");
    }
    if (id != NULL && !si_is_uuid(id)) {
        return si_reject(st, 400, "BadMessageId");
    }
    if (exp != NULL && !si_all_digits(exp)) {
        return si_reject(st, 400, "BadExpirationDate");
    }
    if (collapse != NULL && strlen(collapse) > SI_COLLAPSE_MAX) {
        return si_reject(st, 400, "BadCollapseId");
    }
    return 0;
}

static int
si_check_body(struct si_stream *st)
{
    size_t limit = si_is_voip(st) ? SI_PAYLOAD_MAX_VOIP : SI_PAYLOAD_MAX;
    cJSON *j;
    int ok;

    if (st->body.len == 0 && !st->body_overflow) {
        return si_reject(st, 400, "PayloadEmpty");
    }
    if (st->body_overflow || st->body.len > limit) {
        return si_reject(st, 413, "PayloadTooLarge");
    }

    /*
     * Apple documents no check of the payload's shape beyond its size.
     * This one is stricter on purpose, so that a test catches a client
     * that sends malformed JSON or forgets the aps dictionary.
     */
    j = si_json_parse(st->body.data, st->body.len);
    ok = cJSON_IsObject(j) &&
         cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "aps"));
    cJSON_Delete(j);
    if (!ok) {
        return si_reject(st, 400, "BadPayload");
    }
    return 0;
}

/* The first rule for token that has requests left, which it counts. */
static const struct si_rule *
si_rule_take(struct si_server *srv, const char *token)
{
    struct si_rule *r;

    for (r = srv->opts.rules; r != NULL; r = r->next) {
        if (strcasecmp(r->token, token) == 0 &&
            (r->count == 0 || r->used < r->count)) {
            r->used++;
            return r;
        }
    }
    return NULL;
}

/* Takes the token and apns-id from the headers, for the answer and the
 * record; a request without a usable apns-id gets a fresh one. */
static void
si_request_parse(struct si_stream *st)
{
    const char *id, *path;
    int count;

    path = si_header_get(st, ":path", NULL);
    st->token = "";
    if (path != NULL &&
        strncmp(path, SI_DEVICE_PREFIX, strlen(SI_DEVICE_PREFIX)) == 0) {
        st->token = path + strlen(SI_DEVICE_PREFIX);
    }

    id = si_header_get(st, "apns-id", &count);
    if (id != NULL && count == 1 && si_is_uuid(id)) {
        memcpy(st->apns_id, id, SI_UUID_LEN + 1);
    } else {
        si_uuid_new(st->apns_id);
    }
}

/*
 * Decides what a complete request gets: the first failed check's answer,
 * or else what a --fail rule for its token says, or else 200.
 */
static void
si_judge(struct si_server *srv, struct si_stream *st)
{
    const struct si_rule *rule;

    /* The record shows the token even when an earlier check fails. */
    si_request_parse(st);
    st->now_ms = si_now_ms(srv);
    st->action = SI_ACT_ANSWER;

    if (si_check_target(st) < 0 || si_check_duplicates(st) < 0 ||
        si_check_auth(srv, st) < 0 || si_check_topic(srv, st) < 0 ||
        si_check_options(st) < 0 || si_check_body(st) < 0) {
        return;
    }

    rule = si_rule_take(srv, st->token);
    if (rule == NULL) {
        st->status = 200;
        st->reason = NULL;
        return;
    }
    st->action = rule->action;
    if (rule->action == SI_ACT_ANSWER) {
        si_reject(st, rule->status, rule->reason);
    }
}

/* ---- answers and the record ------------------------------------------- */

static void
si_record_headers(struct si_str *line, const struct si_stream *st)
{
    size_t i, j;
    int first = 1;

    si_str_adds(line, "{");
    for (i = 0; i < st->nheaders; i++) {
        const char *name = st->headers[i].name;
        struct si_str value = {0};
        int seen = 0;

        for (j = 0; j < i && !seen; j++) {
            seen = strcmp(st->headers[j].name, name) == 0;
        }
        if (seen) {
            continue;
        }

        /* A header sent twice is shown once, its values joined by ", "
         * as HTTP combines repeated fields. */
        for (j = i; j < st->nheaders; j++) {
            if (strcmp(st->headers[j].name, name) != 0) {
                continue;
            }
            if (value.len > 0) {
                si_str_adds(&value, ", ");
            }
            si_str_adds(&value, strcmp(name, "authorization") == 0
                                    ? "bearer <redacted>"
                                    : st->headers[j].value);
        }
        if (!first) {
            si_str_adds(line, ",");
        }
        first = 0;
        si_str_json(line, name, strlen(name));
        si_str_adds(line, ":");
        si_str_json(line, value.data != NULL ? value.data : "", value.len);
        si_str_release(&value);
    }
    si_str_adds(line, "}");
}

static const char *
si_bool(int b)
{
    return b ? "true" : "false";
}

static void
si_record(struct si_server *srv, const struct si_stream *st)
{
    struct si_str line = {0};
    char cn[256];

    si_str_addf(&line,
                "{\"ts_ms\":%" PRId64 ",\"conn\":%" PRIu64
                ",\"stream\":%" PRId32 ",\"status\":%d,\"reason\":",
                si_clock_ms(CLOCK_REALTIME), st->conn->num, st->id, st->status);
    if (st->reason != NULL) {
        si_str_json(&line, st->reason, strlen(st->reason));
    } else {
        si_str_adds(&line, "null");
    }
    si_str_adds(&line, ",\"token\":");
    si_str_json(&line, st->token, strlen(st->token));
    si_str_adds(&line, ",\"apns_id\":");
    si_str_json(&line, st->apns_id, strlen(st->apns_id));
    si_str_adds(&line, ",\"headers\":");
    si_record_headers(&line, st);
    if (st->has_iat) {
        si_str_addf(&line, ",\"jwt_iat\":%" PRId64, st->iat);
    } else {
        si_str_adds(&line, ",\"jwt_iat\":null");
    }
    si_str_adds(&line, ",\"client_cert\":");
    if (si_client_cn(st->conn, cn, sizeof(cn))) {
        si_str_json(&line, cn, strlen(cn));
    } else {
        si_str_adds(&line, "null");
    }
    si_str_addf(&line,
                ",\"open_streams\":%lu,\"stream_limit\":%" PRIu32
                ",\"held\":%s,\"reset\":%s,\"refused\":%s",
                st->open_streams, st->stream_limit, si_bool(st->held),
                si_bool(st->reset), si_bool(st->refused));

    /* The body stays a string so that big integers in it keep every digit;
     * a body over SI_MAX_BODY shows its first SI_MAX_BODY bytes. */
    si_str_adds(&line, ",\"body\":");
    si_str_json(&line, st->body.data != NULL ? st->body.data : "",
                st->body.len);
    si_str_adds(&line, "}\n");

    if (fwrite(line.data, 1, line.len, srv->record) != line.len ||
        fflush(srv->record) != 0) {
        fprintf(stderr, "apns-standin: writing %s: %s\n", srv->opts.record,
                strerror(errno));
    }
    si_str_release(&line);
    st->conn->records++;
}

static const char *
si_closer_name(enum si_closer by)
{
    switch (by) {
    case SI_BY_CLIENT:
        return "client";
    case SI_BY_EXIT:
        return "exit";
    default:
        return "server";
    }
}

/* Appends the connection's line to --conn-record, once it is closed. */
static void
si_conn_record(struct si_server *srv, const struct si_conn *c)
{
    struct si_str line = {0};

    if (srv->conn_record == NULL) {
        return;
    }
    si_str_addf(&line,
                "{\"conn\":%" PRIu64 ",\"requests\":%lu"
                ",\"rst_stream_received\":%lu,\"pings_received\":%lu"
                ",\"goaway_sent\":%d,\"max_open_streams\":%lu"
                ",\"limit_violations\":%lu,\"silenced\":%d"
                ",\"closed_by\":\"%s\",\"stream_limit\":%" PRIu32
                ",\"ts_ms\":%" PRId64 ",\"why\":",
                c->num, c->records, c->rst_received, c->pings_received,
                c->goaway_sent, c->max_open_streams, c->limit_violations,
                c->silenced, si_closer_name(c->closed_by), c->stream_limit,
                si_clock_ms(CLOCK_REALTIME));
    si_str_json(&line, c->why, strlen(c->why));
    si_str_adds(&line, "}\n");
    if (fwrite(line.data, 1, line.len, srv->conn_record) != line.len ||
        fflush(srv->conn_record) != 0) {
        fprintf(stderr, "apns-standin: writing %s: %s\n", srv->opts.conn_record,
                strerror(errno));
    }
    si_str_release(&line);
}

static ssize_t
si_read_answer(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
               uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    struct si_stream *st = source->ptr;
    size_t n = st->resp.len - st->resp_off;

    if (n > length) {
        n = length;
    }
    memcpy(buf, st->resp.data + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == st->resp.len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static nghttp2_nv
si_nv(const char *name, const char *value)
{
    nghttp2_nv nv;

    nv.name = (uint8_t *)(uintptr_t)name;
    nv.namelen = strlen(name);
    nv.value = (uint8_t *)(uintptr_t)value;
    nv.valuelen = strlen(value);
    nv.flags = NGHTTP2_NV_FLAG_NONE;
    return nv;
}

/*
 * After the first 200 on a connection that started with --initial-streams,
 * the full --max-streams, as APNs raises its limit once a request with a
 * good token succeeded. The limit counts as advertised once it is sent.
 */
static void
si_raise_limit(struct si_server *srv, struct si_conn *c)
{
    nghttp2_settings_entry iv;
    int rv;

    if (srv->opts.initial_streams == 0 || c->limit_raised) {
        return;
    }
    c->limit_raised = 1;
    iv.settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
    iv.value = (uint32_t)srv->opts.max_streams;
    rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, &iv, 1);
    if (rv != 0) {
        fprintf(stderr,
                "apns-standin: conn %" PRIu64 ": cannot raise the "
                "stream limit: %s\n",
                c->num, nghttp2_strerror(rv));
    }
}

/* A reset rule's answer. The request is recorded when nghttp2 closes the
 * stream, which it does as soon as the RST_STREAM is out. */
static void
si_reset(struct si_stream *st)
{
    int rv = nghttp2_submit_rst_stream(st->conn->h2, NGHTTP2_FLAG_NONE, st->id,
                                       NGHTTP2_INTERNAL_ERROR);

    if (rv != 0) {
        fprintf(stderr,
                "apns-standin: conn %" PRIu64 " stream %" PRId32
                ": cannot reset: %s\n",
                st->conn->num, st->id, nghttp2_strerror(rv));
    }
    st->reset = 1;
    st->conn->dirty = 1;
}

/* Submits the verdict as a response and records the request. */
static void
si_answer(struct si_server *srv, struct si_stream *st)
{
    nghttp2_data_provider body;
    nghttp2_nv nv[3];
    char status[8];
    int rv;

    if (st->action == SI_ACT_RESET) {
        si_reset(st);
        return;
    }
    snprintf(status, sizeof(status), "%d", st->status);
    nv[0] = si_nv(":status", status);
    nv[1] = si_nv("apns-id", st->apns_id);
    nv[2] = si_nv("content-type", "application/json");

    /* Success is a HEADERS frame with END_STREAM and nothing else. */
    if (st->status == 200) {
        rv = nghttp2_submit_response(st->conn->h2, st->id, nv, 2, NULL);
    } else {
        si_str_adds(&st->resp, "{\"reason\":");
        si_str_json(&st->resp, st->reason, strlen(st->reason));
        if (st->status == 410) {
            si_str_addf(&st->resp, ",\"timestamp\":%" PRId64, st->now_ms);
        }
        si_str_adds(&st->resp, "}");
        body.source.ptr = st;
        body.read_callback = si_read_answer;
        rv = nghttp2_submit_response(st->conn->h2, st->id, nv, 3, &body);
    }
    if (rv != 0) {
        fprintf(stderr,
                "apns-standin: conn %" PRIu64 " stream %" PRId32
                ": cannot answer: %s\n",
                st->conn->num, st->id, nghttp2_strerror(rv));
    }
    st->answered = 1;
    st->conn->dirty = 1;
    si_record(srv, st);
    if (rv == 0 && st->status == 200) {
        si_raise_limit(srv, st->conn);
    }
}

static void
si_queue_push(struct si_server *srv, struct si_stream *st)
{
    st->queued = 1;
    st->qnext = NULL;
    st->qprev = srv->qtail;
    if (srv->qtail != NULL) {
        srv->qtail->qnext = st;
    } else {
        srv->qhead = st;
    }
    srv->qtail = st;
}

static void
si_queue_remove(struct si_server *srv, struct si_stream *st)
{
    if (!st->queued) {
        return;
    }
    if (st->qprev != NULL) {
        st->qprev->qnext = st->qnext;
    } else {
        srv->qhead = st->qnext;
    }
    if (st->qnext != NULL) {
        st->qnext->qprev = st->qprev;
    } else {
        srv->qtail = st->qprev;
    }
    st->queued = 0;
    st->qprev = NULL;
    st->qnext = NULL;
}

/*
 * --goaway-after: GOAWAY NO_ERROR naming last_id as the last stream
 * processed. Every stream above it is refused, even one already begun or
 * waiting for its delayed answer: nghttp2 closes them once the frame is
 * out, and ignores the HEADERS of any that begin after that.
 */
static void
si_goaway(struct si_server *srv, struct si_conn *c, int32_t last_id)
{
    struct si_stream *st;
    int rv;

    rv = nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, last_id,
                               NGHTTP2_NO_ERROR, NULL, 0);
    if (rv != 0) {
        fprintf(stderr,
                "apns-standin: conn %" PRIu64 ": cannot send "
                "GOAWAY: %s\n",
                c->num, nghttp2_strerror(rv));
        return;
    }
    fprintf(stderr,
            "apns-standin: conn %" PRIu64 ": GOAWAY after %lu requests, "
            "last stream %" PRId32 "\n",
            c->num, c->requests, last_id);
    c->goaway_id = last_id;
    c->dirty = 1;
    for (st = c->streams; st != NULL; st = st->next) {
        if (st->id > last_id && !st->answered) {
            st->refused = 1;
            st->held = 0;
            si_queue_remove(srv, st);
        }
    }
}

static void
si_request_complete(struct si_server *srv, struct si_stream *st)
{
    struct si_conn *c = st->conn;

    st->complete = 1;
    if (st->refused) {
        return;
    }
    c->requests++;
    si_judge(srv, st);
    if (st->action == SI_ACT_HOLD) {
        st->held = 1;
    } else if (srv->opts.delay_ms == 0) {
        si_answer(srv, st);
    } else {
        st->due_ms = si_clock_ms(CLOCK_MONOTONIC) + srv->opts.delay_ms;
        si_queue_push(srv, st);
    }
    if (srv->opts.goaway_after > 0 && c->goaway_id == 0 &&
        c->requests == (unsigned long)srv->opts.goaway_after) {
        si_goaway(srv, c, st->id);
    }
}

/* Frees a stream. A request never answered (held, reset, refused, reset
 * by the client, or its connection went) is recorded with status 0: a
 * refused one even if it never completed. */
static void
si_stream_free(struct si_server *srv, struct si_stream *st)
{
    struct si_conn *c = st->conn;
    size_t i;

    if ((st->complete || st->refused) && !st->answered) {
        if (st->apns_id[0] == '\0') {
            si_request_parse(st);
        }
        st->status = 0;
        st->reason = NULL;
        si_record(srv, st);
    }
    c->open_streams--;
    si_queue_remove(srv, st);
    if (st->prev != NULL) {
        st->prev->next = st->next;
    } else {
        c->streams = st->next;
    }
    if (st->next != NULL) {
        st->next->prev = st->prev;
    }
    for (i = 0; i < st->nheaders; i++) {
        free(st->headers[i].name);
        free(st->headers[i].value);
    }
    si_str_release(&st->body);
    si_str_release(&st->resp);
    free(st);
}

/* ---- nghttp2 callbacks ------------------------------------------------- */

/*
 * Records a stream refused after GOAWAY went out: nghttp2 drops its
 * HEADERS unread, so all there is to say is its id. It is recorded only
 * once the library has had its chance to open the stream after all.
 */
static void
si_flush_refused(struct si_conn *c)
{
    struct si_stream st;

    if (c->refused_id == 0) {
        return;
    }
    memset(&st, 0, sizeof(st));
    st.conn = c;
    st.id = c->refused_id;
    st.token = "";
    st.refused = 1;
    if (c->begin_id == st.id) {
        st.open_streams = c->begin_open;
        st.stream_limit = c->begin_limit;
    }
    c->refused_id = 0;
    si_record(c->srv, &st);
}

/*
 * Sees the frame header of every HEADERS frame before nghttp2 decides
 * anything about its stream, so that a stream over the advertised limit
 * is counted even when the library refuses it (RST_STREAM before our
 * SETTINGS are acknowledged, GOAWAY after) and never calls us again.
 */
static int
si_on_begin_frame(nghttp2_session *h2, const nghttp2_frame_hd *hd,
                  void *user_data)
{
    struct si_conn *c = user_data;
    unsigned long open;

    si_flush_refused(c);
    if (hd->type != NGHTTP2_HEADERS || hd->stream_id % 2 == 0 ||
        hd->stream_id <= c->last_new_id) {
        return 0;
    }
    c->last_new_id = hd->stream_id;
    open = c->open_streams + 1;
    c->begin_id = hd->stream_id;
    c->begin_open = open;
    c->begin_limit = c->stream_limit;
    if (open > c->max_open_streams) {
        c->max_open_streams = open;
    }
    if (open > c->stream_limit) {
        c->limit_violations++;
        fprintf(stderr,
                "apns-standin: conn %" PRIu64 " stream %" PRId32
                ": %lu streams open, over the %" PRIu32 " advertised\n",
                c->num, hd->stream_id, open, c->stream_limit);
    }
    if (c->goaway_id != 0 && hd->stream_id > c->goaway_id) {
        c->refused_id = hd->stream_id;
    }
    return 0;
}

static int
si_on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame,
                    void *user_data)
{
    struct si_conn *c = user_data;
    struct si_stream *st;

    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    st = si_xcalloc(1, sizeof(*st));
    st->conn = c;
    st->id = frame->hd.stream_id;
    st->token = "";

    /* A stream the library already refused has nowhere to keep st. */
    if (nghttp2_session_set_stream_user_data(h2, st->id, st) != 0) {
        free(st);
        return 0;
    }
    st->next = c->streams;
    if (c->streams != NULL) {
        c->streams->prev = st;
    }
    c->streams = st;

    if (c->begin_id == st->id) {
        st->open_streams = c->begin_open;
        st->stream_limit = c->begin_limit;
    } else {
        st->open_streams = c->open_streams + 1;
        st->stream_limit = c->stream_limit;
    }
    c->open_streams++;

    /* Opened between GOAWAY's submission and its sending: nghttp2 closes
     * it once the frame is out. */
    if (c->goaway_id != 0 && st->id > c->goaway_id) {
        st->refused = 1;
        if (c->refused_id == st->id) {
            c->refused_id = 0;
        }
    }
    return 0;
}

static int
si_on_header(nghttp2_session *h2, const nghttp2_frame *frame,
             const uint8_t *name, size_t namelen, const uint8_t *value,
             size_t valuelen, uint8_t flags, void *user_data)
{
    struct si_conn *c = user_data;
    struct si_stream *st;
    size_t cost = namelen + valuelen + 32;

    st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (st == NULL || st->complete) {
        return 0;
    }

    /* Counted as SETTINGS_MAX_HEADER_LIST_SIZE counts, which we announce;
     * a client past it gets its stream reset. */
    if (st->nheaders == SI_MAX_HEADERS ||
        cost > SI_MAX_HEADER_BYTES - st->header_bytes) {
        fprintf(stderr,
                "apns-standin: conn %" PRIu64 " stream %" PRId32
                ": header list over %d bytes or %d fields, stream reset\n",
                c->num, st->id, SI_MAX_HEADER_BYTES, SI_MAX_HEADERS);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->headers[st->nheaders].name = si_xstrndup((const char *)name, namelen);
    st->headers[st->nheaders].value =
        si_xstrndup((const char *)value, valuelen);
    st->nheaders++;
    st->header_bytes += cost;
    return 0;
}

static int
si_on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                 const uint8_t *data, size_t len, void *user_data)
{
    struct si_stream *st = nghttp2_session_get_stream_user_data(h2, stream_id);
    size_t room;

    if (st == NULL || st->body_overflow) {
        return 0;
    }
    room = SI_MAX_BODY - st->body.len;
    if (len > room) {
        si_str_add(&st->body, data, room);
        st->body_overflow = 1;
        return 0;
    }
    si_str_add(&st->body, data, len);
    return 0;
}

static int
si_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame,
                 void *user_data)
{
    struct si_conn *c = user_data;
    struct si_stream *st;

    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        c->rst_received++;
        return 0;
    }
    if (frame->hd.type == NGHTTP2_PING) {
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            c->pings_received++;
        }
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway_received = 1;
        return 0;
    }
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        return 0;
    }
    st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (st != NULL && !st->complete) {
        si_request_complete(c->srv, st);
    }
    return 0;
}

/* Keeps what the client has been told: the stream limit, and GOAWAY. */
static int
si_on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame,
                 void *user_data)
{
    struct si_conn *c = user_data;
    size_t i;

    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway_sent = 1;
        return 0;
    }
    if (frame->hd.type != NGHTTP2_SETTINGS ||
        (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        return 0;
    }
    for (i = 0; i < frame->settings.niv; i++) {
        if (frame->settings.iv[i].settings_id ==
            NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
            c->stream_limit = frame->settings.iv[i].value;
        }
    }
    return 0;
}

static int
si_on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                   void *user_data)
{
    struct si_conn *c = user_data;
    struct si_stream *st = nghttp2_session_get_stream_user_data(h2, stream_id);

    if (st != NULL) {
        si_stream_free(c->srv, st);
    }
    return 0;
}

/* ---- connections ------------------------------------------------------- */

static void
si_conn_watch(struct si_conn *c, uint32_t events)
{
    struct epoll_event ev;

    if (events == c->events) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->events = events;
    }
}

static int
si_conn_fail(struct si_conn *c, const char *what)
{
    unsigned long e = ERR_get_error();

    if (e != 0) {
        char reason[160];

        ERR_error_string_n(e, reason, sizeof(reason));
        snprintf(c->why, sizeof(c->why), "%s: %s", what, reason);
    } else {
        snprintf(c->why, sizeof(c->why), "%s", what);
    }
    ERR_clear_error();
    return -1;
}

/*
 * Who ended a TLS session that failed: the peer going away, or an alert
 * from it, means the client did; any other error is the stand-in
 * refusing what it got. Leaves the error queue as it is.
 */
static enum si_closer
si_tls_closer(int ssl_err)
{
    unsigned long e = ERR_peek_error();

    if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        return SI_BY_CLIENT;
    }
    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) {
        return SI_BY_CLIENT;
    }
    return SI_BY_SERVER;
}

/* Releases the socket and what else a closed connection still holds. */
static void
si_conn_free(struct si_server *srv, struct si_conn *c)
{
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
    }
    close(c->fd);
    ERR_clear_error();

    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    si_str_release(&c->out);
    free(c->jwt);
    free(c);
}

/*
 * Ends a connection: records its unanswered requests, then the
 * connection itself. A TLS session still working gets close_notify, a FIN
 * and a lingering close that drains what the client still sends (see the
 * top of the file); otherwise, at exit, and for a lingering connection
 * called again, the socket goes at once.
 */
static void
si_conn_close(struct si_server *srv, struct si_conn *c)
{
    int tls_ok = c->state == SI_CONN_H2 && !c->tls_broken && !c->silenced;

    if (c->state == SI_CONN_LINGER) {
        si_conn_free(srv, c);
        return;
    }
    fprintf(stderr,
            "apns-standin: conn %" PRIu64 " closed (%s), %lu requests\n",
            c->num, c->why[0] != '\0' ? c->why : "closed", c->requests);

    /* nghttp2_session_del frees its streams without calling back, so ours
     * are freed (and unanswered ones recorded) by hand. */
    if (c->h2 != NULL) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    si_flush_refused(c);
    while (c->streams != NULL) {
        si_stream_free(srv, c->streams);
    }
    si_conn_record(srv, c);

    if (tls_ok) {
        SSL_shutdown(c->ssl);
    }
    if (!tls_ok || c->closed_by == SI_BY_EXIT ||
        shutdown(c->fd, SHUT_WR) != 0) {
        si_conn_free(srv, c);
        return;
    }
    c->state = SI_CONN_LINGER;
    c->linger_until_ms = si_clock_ms(CLOCK_MONOTONIC) + SI_LINGER_MS;
    si_conn_watch(c, EPOLLIN);
}

/* Reads and drops what the client of a closing connection still sends.
 * Returns -1 once it has closed its side, or the socket failed. */
static int
si_conn_drain(struct si_conn *c)
{
    char buf[SI_READ_CHUNK];

    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));

        if (n > 0 || (n < 0 && errno == EINTR)) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        }
        return -1;
    }
}

/* Reads whatever TLS has and feeds it to nghttp2. */
static int
si_conn_read(struct si_conn *c)
{
    unsigned char buf[SI_READ_CHUNK];

    c->read_wants_write = 0;
    for (;;) {
        int n, err;
        ssize_t rv;

        ERR_clear_error();
        n = SSL_read(c->ssl, buf, sizeof(buf));
        if (n > 0) {
            rv = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
            si_flush_refused(c);
            if (rv < 0) {
                snprintf(c->why, sizeof(c->why), "HTTP/2: %s",
                         nghttp2_strerror((int)rv));
                return -1;
            }
            continue;
        }
        err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ) {
            return 0;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            c->read_wants_write = 1;
            return 0;
        }
        c->closed_by = si_tls_closer(err);
        if (err == SSL_ERROR_ZERO_RETURN) {
            snprintf(c->why, sizeof(c->why), "peer closed");
            return -1;
        }
        c->tls_broken = 1;
        if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            snprintf(c->why, sizeof(c->why), "peer went away");
            return -1;
        }
        return si_conn_fail(c, "TLS read");
    }
}

/* Moves nghttp2's pending frames into the output buffer, up to a bound. */
static int
si_conn_fill(struct si_conn *c)
{
    c->out.len = 0;
    c->out_off = 0;
    while (c->out.len < SI_OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);

        if (n < 0) {
            snprintf(c->why, sizeof(c->why), "HTTP/2: %s",
                     nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) {
            break;
        }
        si_str_add(&c->out, data, (size_t)n);
    }
    return 0;
}

/*
 * Whether the connection has nothing left to do: nghttp2 says so, or a
 * GOAWAY is out and every stream it kept has been answered (or reset by
 * the client). A session that ended on the client's GOAWAY alone counts
 * as closed by the client.
 */
static int
si_conn_done(struct si_conn *c)
{
    if (c->out_off != c->out.len || nghttp2_session_want_write(c->h2)) {
        return 0;
    }
    if (!nghttp2_session_want_read(c->h2)) {
        snprintf(c->why, sizeof(c->why), "HTTP/2 session over");
        if (c->goaway_received && !c->goaway_sent) {
            c->closed_by = SI_BY_CLIENT;
        }
        return 1;
    }
    if (c->goaway_sent && c->open_streams == 0) {
        snprintf(c->why, sizeof(c->why),
                 "GOAWAY sent and every stream up to it answered");
        return 1;
    }
    return 0;
}

/* Writes what nghttp2 has to send until TLS would block. */
static int
si_conn_flush(struct si_conn *c)
{
    c->dirty = 0;
    c->write_wants_out = 0;
    for (;;) {
        int n, err;

        if (c->out_off == c->out.len) {
            if (si_conn_fill(c) < 0) {
                return -1;
            }
            if (c->out.len == 0) {
                break;
            }
        }
        ERR_clear_error();
        n = SSL_write(c->ssl, c->out.data + c->out_off,
                      (int)(c->out.len - c->out_off));
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE) {
            c->write_wants_out = 1;
            break;
        }
        if (err == SSL_ERROR_WANT_READ) {
            break;
        }
        c->closed_by = si_tls_closer(err);
        c->tls_broken = 1;
        return si_conn_fail(c, "TLS write");
    }

    if (si_conn_done(c)) {
        return -1;
    }
    si_conn_watch(
        c,
        EPOLLIN | (c->write_wants_out || c->read_wants_write ? EPOLLOUT : 0));
    return 0;
}

static int
si_conn_start_h2(struct si_conn *c)
{
    const struct si_server *srv = c->srv;
    nghttp2_settings_entry iv[2];
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    int rv;

    SSL_get0_alpn_selected(c->ssl, &proto, &len);
    if (len != 2 || memcmp(proto, "h2", 2) != 0) {
        snprintf(c->why, sizeof(c->why), "client did not offer ALPN h2");
        return -1;
    }

    rv = nghttp2_session_server_new2(&c->h2, srv->cbs, c, srv->h2opt);
    if (rv != 0) {
        snprintf(c->why, sizeof(c->why), "nghttp2: %s", nghttp2_strerror(rv));
        return -1;
    }

    /* The limit counts as advertised from here on: these SETTINGS are the
     * first frame the client gets. */
    c->stream_limit =
        (uint32_t)(srv->opts.initial_streams > 0 ? srv->opts.initial_streams
                                                 : srv->opts.max_streams);
    iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
    iv[0].value = c->stream_limit;
    iv[1].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
    iv[1].value = SI_MAX_HEADER_BYTES;
    rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
    if (rv != 0) {
        snprintf(c->why, sizeof(c->why), "nghttp2: %s", nghttp2_strerror(rv));
        return -1;
    }
    c->state = SI_CONN_H2;
    return 0;
}

static int
si_conn_handshake(struct si_conn *c)
{
    int n, err;

    ERR_clear_error();
    n = SSL_do_handshake(c->ssl);
    if (n != 1) {
        err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ) {
            si_conn_watch(c, EPOLLIN);
            return 0;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            si_conn_watch(c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        c->closed_by = si_tls_closer(err);
        c->tls_broken = 1;
        return si_conn_fail(c, "TLS handshake");
    }
    if (si_conn_start_h2(c) < 0) {
        return -1;
    }

    /* The client's preface may already sit in OpenSSL's buffers, where
     * epoll cannot see it. */
    if (si_conn_read(c) < 0) {
        return -1;
    }
    return si_conn_flush(c);
}

static void
si_conn_event(struct si_server *srv, struct si_conn *c)
{
    int rc;

    /* Silenced earlier in this batch of events. */
    if (c->silenced) {
        return;
    }
    if (c->state == SI_CONN_LINGER) {
        if (si_conn_drain(c) < 0) {
            si_conn_free(srv, c);
        }
        return;
    }
    if (c->state == SI_CONN_HANDSHAKE) {
        rc = si_conn_handshake(c);
    } else {
        rc = si_conn_read(c);
        if (rc == 0) {
            rc = si_conn_flush(c);
        }
    }
    if (rc < 0) {
        si_conn_close(srv, c);
    }
}

static void
si_conn_open(struct si_server *srv, int fd, const struct sockaddr_in *peer)
{
    struct si_conn *c = si_xcalloc(1, sizeof(*c));
    struct epoll_event ev;
    int one = 1;
    char addr[INET_ADDRSTRLEN] = "?";

    c->srv = srv;
    c->fd = fd;
    c->num = ++srv->nconns;
    inet_ntop(AF_INET, &peer->sin_addr, addr, sizeof(addr));
    snprintf(c->peer, sizeof(c->peer), "%s:%u", addr, ntohs(peer->sin_port));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    fprintf(stderr, "apns-standin: conn %" PRIu64 " opened from %s\n", c->num,
            c->peer);

    c->ssl = SSL_new(srv->ctx);
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1 ||
        epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        c->tls_broken = 1;
        si_conn_fail(c, "setting up the connection");
        si_conn_close(srv, c);
        return;
    }
    c->events = EPOLLIN;
    SSL_set_accept_state(c->ssl);
}

static void
si_accept(struct si_server *srv)
{
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);
        int fd;

        fd = accept4(srv->lfd, (struct sockaddr *)&peer, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                fprintf(stderr, "apns-standin: accept: %s\n", strerror(errno));
            }
            return;
        }
        si_conn_open(srv, fd, &peer);
    }
}

/* ---- the loop ------------------------------------------------------------ */

/* Milliseconds until the next answer is due or a lingering connection
 * runs out of time; -1 when there is neither. */
static int
si_next_timeout(const struct si_server *srv)
{
    const struct si_conn *c;
    int64_t due = srv->qhead != NULL ? srv->qhead->due_ms : -1;
    int64_t wait;

    for (c = srv->conns; c != NULL; c = c->next) {
        if (c->state == SI_CONN_LINGER &&
            (due < 0 || c->linger_until_ms < due)) {
            due = c->linger_until_ms;
        }
    }
    if (due < 0) {
        return -1;
    }
    wait = due - si_clock_ms(CLOCK_MONOTONIC);
    if (wait < 0) {
        return 0;
    }
    return wait > INT_MAX ? INT_MAX : (int)wait;
}

static void
si_run_timers(struct si_server *srv)
{
    int64_t now = si_clock_ms(CLOCK_MONOTONIC);
    struct si_conn *c = srv->conns;

    while (srv->qhead != NULL && srv->qhead->due_ms <= now) {
        struct si_stream *st = srv->qhead;

        si_queue_remove(srv, st);
        si_answer(srv, st);
    }
    while (c != NULL) {
        struct si_conn *next = c->next;

        if (c->state == SI_CONN_LINGER && c->linger_until_ms <= now) {
            si_conn_free(srv, c);
        }
        c = next;
    }
}

/* Sends what answers submitted outside a connection's own event. */
static void
si_flush_dirty(struct si_server *srv)
{
    struct si_conn *c = srv->conns;

    while (c != NULL) {
        struct si_conn *next = c->next;

        if (c->dirty && c->state == SI_CONN_H2 && !c->silenced &&
            si_conn_flush(c) < 0) {
            si_conn_close(srv, c);
        }
        c = next;
    }
}

/*
 * SIGUSR1: every connection open now stops being read or written, like
 * one whose peer vanished without a word, but its socket stays open until
 * the stand-in exits. Its pending answers are never sent; its requests
 * are recorded, status 0, when it finally closes.
 */
static void
si_silence_all(struct si_server *srv)
{
    struct si_conn *c;
    struct si_stream *st;

    for (c = srv->conns; c != NULL; c = c->next) {
        if (c->silenced || c->state == SI_CONN_LINGER) {
            continue;
        }
        c->silenced = 1;
        c->dirty = 0;
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        for (st = c->streams; st != NULL; st = st->next) {
            si_queue_remove(srv, st);
        }
        fprintf(stderr, "apns-standin: conn %" PRIu64 " silenced\n", c->num);
    }
}

static void
si_on_signals(struct si_server *srv)
{
    struct signalfd_siginfo si;

    while (read(srv->sfd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGUSR1) {
            si_silence_all(srv);
            continue;
        }
        fprintf(stderr, "apns-standin: signal %u, exiting\n", si.ssi_signo);
        srv->stop = 1;
    }
}

static int
si_loop(struct si_server *srv)
{
    struct epoll_event evs[SI_MAX_EVENTS];

    while (!srv->stop) {
        int i,
            n = epoll_wait(srv->epfd, evs, SI_MAX_EVENTS, si_next_timeout(srv));

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "apns-standin: epoll_wait: %s\n", strerror(errno));
            return -1;
        }
        for (i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;

            if (ptr == &srv->lfd) {
                si_accept(srv);
            } else if (ptr == &srv->sfd) {
                si_on_signals(srv);
            } else {
                si_conn_event(srv, ptr);
            }
        }
        si_run_timers(srv);
        si_flush_dirty(srv);
    }
    return 0;
}

/* ---- setup --------------------------------------------------------------- */

static int
si_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
               const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned int i = 0;

    while (i < inlen) {
        unsigned int len = in[i];

        if (i + 1 + len > inlen) {
            break;
        }
        if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }

    /* APNs speaks nothing but HTTP/2: refuse the handshake. */
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int
si_setup_tls(struct si_server *srv, char *err)
{
    const struct si_opts *o = &srv->opts;

    srv->ctx = SSL_CTX_new(TLS_server_method());
    if (srv->ctx == NULL ||
        SSL_CTX_set_min_proto_version(srv->ctx, TLS1_2_VERSION) != 1) {
        snprintf(err, SI_ERR_MAX, "cannot create the TLS context");
        return -1;
    }
    /* Clients commonly close without close_notify; that is an ordinary
     * end of a connection here, not an error worth a log line. */
    SSL_CTX_set_options(srv->ctx, SSL_OP_NO_COMPRESSION |
                                      SSL_OP_NO_RENEGOTIATION |
                                      SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(srv->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(srv->ctx, o->cert) != 1) {
        snprintf(err, SI_ERR_MAX, "cannot load the certificate %s", o->cert);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(srv->ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(srv->ctx) != 1) {
        snprintf(err, SI_ERR_MAX,
                 "cannot load the key %s, or it does not "
                 "match the certificate",
                 o->key);
        return -1;
    }
    SSL_CTX_set_alpn_select_cb(srv->ctx, si_alpn_select, NULL);
    if (o->client_ca != NULL) {
        static const unsigned char sid_ctx[] = "apns-standin";
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca);

        if (names == NULL ||
            SSL_CTX_load_verify_locations(srv->ctx, o->client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, SI_ERR_MAX, "cannot load the client CA %s",
                     o->client_ca);
            return -1;
        }
        /* Asked for, not required: token clients connect without one. A
         * certificate that is sent and does not verify fails the
         * handshake, as it does at APNs. */
        SSL_CTX_set_client_CA_list(srv->ctx, names);
        SSL_CTX_set_verify(srv->ctx, SSL_VERIFY_PEER, NULL);
        /* OpenSSL refuses to resume a session of a verifying server that
         * has no session id context; clients do resume. */
        SSL_CTX_set_session_id_context(srv->ctx, sid_ctx,
                                       (unsigned)sizeof(sid_ctx) - 1);
    }
    return 0;
}

static int
si_setup_auth_key(struct si_server *srv, char *err)
{
    const char *path = srv->opts.auth_key;
    char group[64] = "";
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, SI_ERR_MAX, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    srv->auth_key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (srv->auth_key == NULL) {
        snprintf(err, SI_ERR_MAX, "%s is not a PEM public key", path);
        return -1;
    }
    if (!EVP_PKEY_is_a(srv->auth_key, "EC") ||
        EVP_PKEY_get_group_name(srv->auth_key, group, sizeof(group), NULL) !=
            1 ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
        snprintf(err, SI_ERR_MAX, "%s is not an EC P-256 public key", path);
        return -1;
    }
    return 0;
}

static void
si_setup_h2(struct si_server *srv)
{
    nghttp2_session_callbacks *cbs;

    nghttp2_session_callbacks_new(&cbs);
    if (cbs == NULL) {
        si_oom();
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs,
                                                          si_on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(
        cbs, si_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, si_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                              si_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, si_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, si_on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
                                                           si_on_stream_close);
    srv->cbs = cbs;

    nghttp2_option_new(&srv->h2opt);
    if (srv->h2opt == NULL) {
        si_oom();
    }
    if (!srv->opts.keep_reset_limit) {
        nghttp2_option_set_stream_reset_rate_limit(srv->h2opt, SI_RESET_BURST,
                                                   SI_RESET_RATE);
    }
}

static int
si_write_port_file(const char *path, int port, char *err)
{
    char tmp[PATH_MAX];
    FILE *f;
    int bad;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
                         (long)getpid()) >= sizeof(tmp)) {
        snprintf(err, SI_ERR_MAX, "port file path too long");
        return -1;
    }
    f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, SI_ERR_MAX, "cannot write %.180s: %s", tmp,
                 strerror(errno));
        return -1;
    }
    bad = fprintf(f, "%d\n", port) < 0;
    bad |= fclose(f) != 0;

    /* The rename is atomic, so a reader sees no file or the whole line. */
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, SI_ERR_MAX, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int
si_setup_listener(struct si_server *srv, char *err)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int one = 1;

    srv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (srv->lfd < 0) {
        snprintf(err, SI_ERR_MAX, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)srv->opts.port);
    if (bind(srv->lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(srv->lfd, 512) != 0 ||
        getsockname(srv->lfd, (struct sockaddr *)&addr, &len) != 0) {
        snprintf(err, SI_ERR_MAX, "cannot listen on 127.0.0.1:%d: %s",
                 srv->opts.port, strerror(errno));
        return -1;
    }
    srv->opts.port = ntohs(addr.sin_port);
    return 0;
}

static int
si_setup_loop(struct si_server *srv, char *err)
{
    struct epoll_event ev;
    sigset_t mask;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
        snprintf(err, SI_ERR_MAX, "sigprocmask: %s", strerror(errno));
        return -1;
    }
    srv->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->sfd < 0 || srv->epfd < 0) {
        snprintf(err, SI_ERR_MAX, "signalfd/epoll: %s", strerror(errno));
        return -1;
    }

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = &srv->lfd;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->lfd, &ev) != 0) {
        snprintf(err, SI_ERR_MAX, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    ev.data.ptr = &srv->sfd;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sfd, &ev) != 0) {
        snprintf(err, SI_ERR_MAX, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int
si_setup(struct si_server *srv, char *err)
{
    if (si_setup_auth_key(srv, err) < 0 || si_setup_tls(srv, err) < 0) {
        return -1;
    }
    si_setup_h2(srv);

    srv->record = fopen(srv->opts.record, "a");
    if (srv->record == NULL) {
        snprintf(err, SI_ERR_MAX, "cannot open %s: %s", srv->opts.record,
                 strerror(errno));
        return -1;
    }
    if (srv->opts.conn_record != NULL) {
        srv->conn_record = fopen(srv->opts.conn_record, "a");
        if (srv->conn_record == NULL) {
            snprintf(err, SI_ERR_MAX, "cannot open %s: %s",
                     srv->opts.conn_record, strerror(errno));
            return -1;
        }
    }
    if (si_setup_listener(srv, err) < 0 || si_setup_loop(srv, err) < 0) {
        return -1;
    }
    if (srv->opts.port_file != NULL &&
        si_write_port_file(srv->opts.port_file, srv->opts.port, err) < 0) {
        return -1;
    }
    fprintf(stderr, "listening 127.0.0.1:%d\n", srv->opts.port);
    return 0;
}

static void
si_teardown(struct si_server *srv)
{
    struct si_rule *r = srv->opts.rules;

    while (srv->conns != NULL) {
        struct si_conn *c = srv->conns;

        if (c->state != SI_CONN_LINGER) {
            c->closed_by = SI_BY_EXIT;
            snprintf(c->why, sizeof(c->why), "shutting down");
        }
        si_conn_close(srv, c);
    }
    while (r != NULL) {
        struct si_rule *next = r->next;

        free(r->token);
        free(r->reason);
        free(r);
        r = next;
    }
    if (srv->record != NULL) {
        fclose(srv->record);
    }
    if (srv->conn_record != NULL) {
        fclose(srv->conn_record);
    }
    if (srv->lfd >= 0) {
        close(srv->lfd);
    }
    if (srv->sfd >= 0) {
        close(srv->sfd);
    }
    if (srv->epfd >= 0) {
        close(srv->epfd);
    }
    nghttp2_option_del(srv->h2opt);
    nghttp2_session_callbacks_del(srv->cbs);
    SSL_CTX_free(srv->ctx);
    EVP_PKEY_free(srv->auth_key);
    free(srv->jwt_good);
}

/* ---- command line -------------------------------------------------------- */

static void
si_usage(void)
{
    fputs(
        "usage: apns-standin --cert FILE --key FILE --auth-key PUB.pem\n"
        "         --key-id KEYID --team-id TEAMID --topic BUNDLEID\n"
        "         --record FILE [--port N] [--port-file FILE]\n"
        "         [--max-streams N] [--initial-streams K] [--delay-ms N]\n"
        "         [--fail RULE]... [--goaway-after N] [--clock-file FILE]\n"
        "         [--conn-record FILE] [--keep-reset-limit] [--client-ca "
        "FILE]\n"
        "\n"
        "  --fail TOKEN=STATUS:REASON[:COUNT]\n"
        "                        answer valid requests for TOKEN so (a 410\n"
        "                        with a timestamp); with COUNT only the next\n"
        "                        COUNT of them, over all connections\n"
        "  --fail TOKEN=hold[:COUNT]\n"
        "                        read them and never answer\n"
        "  --fail TOKEN=reset[:COUNT]\n"
        "                        read them, then RST_STREAM INTERNAL_ERROR\n"
        "                        (rules for one token apply in the order\n"
        "                        given)\n"
        "  --max-streams N       SETTINGS_MAX_CONCURRENT_STREAMS (1000)\n"
        "  --initial-streams K   start each connection at K, raise it to\n"
        "                        --max-streams after its first 200\n"
        "  --delay-ms N          answer every request N ms late\n"
        "  --goaway-after N      GOAWAY on each connection after its Nth\n"
        "                        complete request; close once it is done\n"
        "  --clock-file FILE     seconds to add to the clock for JWT ages and\n"
        "                        410 timestamps (missing or empty: 0)\n"
        "  --record FILE         one JSON line per request\n"
        "  --conn-record FILE    one JSON line per connection as it closes\n"
        "  --keep-reset-limit    keep nghttp2's limit on stream resets\n"
        "  --client-ca FILE      ask for client certificates from this CA\n"
        "SIGUSR1 silences every open connection; SIGTERM exits.\n",
        stderr);
}

static int
si_parse_int(const char *s, long min, long max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

/*
 * Splits a trailing ":COUNT" (digits, at least 1) off the n bytes at s:
 * sets *count and returns the length before it, or returns n and leaves
 * *count alone when s does not end so. Returns -1 for a COUNT of 0.
 */
static long
si_split_count(const char *s, size_t n, unsigned long *count)
{
    const char *colon = memrchr(s, ':', n);
    char digits[16];
    size_t len;
    int v;

    if (colon == NULL) {
        return (long)n;
    }
    len = n - (size_t)(colon + 1 - s);
    if (len == 0 || len >= sizeof(digits) ||
        strspn(colon + 1, "0123456789") < len) {
        return (long)n;
    }
    memcpy(digits, colon + 1, len);
    digits[len] = '\0';
    if (si_parse_int(digits, 1, INT32_MAX, &v) < 0) {
        return -1;
    }
    *count = (unsigned long)v;
    return colon - s;
}

/*
 * TOKEN=STATUS:REASON[:COUNT], TOKEN=hold[:COUNT] or TOKEN=reset[:COUNT].
 * Rules keep their command-line order: for one token the first with
 * requests left applies.
 */
static int
si_parse_rule(struct si_opts *o, const char *arg)
{
    const char *eq = strchr(arg, '='), *what, *colon;
    struct si_rule *r, **tail;
    unsigned long count = 0;
    char status[8];
    long len;
    int code = 0;

    if (eq == NULL || eq == arg) {
        return -1;
    }
    what = eq + 1;
    len = si_split_count(what, strlen(what), &count);
    if (len <= 0) {
        return -1;
    }
    r = si_xcalloc(1, sizeof(*r));
    if ((size_t)len == 4 && strncmp(what, "hold", 4) == 0) {
        r->action = SI_ACT_HOLD;
    } else if ((size_t)len == 5 && strncmp(what, "reset", 5) == 0) {
        r->action = SI_ACT_RESET;
    } else {
        colon = memchr(what, ':', (size_t)len);
        if (colon == NULL || colon == what || colon + 1 == what + len ||
            (size_t)(colon - what) >= sizeof(status)) {
            free(r);
            return -1;
        }
        memcpy(status, what, (size_t)(colon - what));
        status[colon - what] = '\0';
        if (si_parse_int(status, 100, 599, &code) < 0) {
            free(r);
            return -1;
        }
        r->action = SI_ACT_ANSWER;
        r->status = code;
        r->reason = si_xstrndup(colon + 1, (size_t)(what + len - colon - 1));
    }
    r->token = si_xstrndup(arg, (size_t)(eq - arg));
    r->count = count;
    for (tail = &o->rules; *tail != NULL; tail = &(*tail)->next) {
    }
    *tail = r;
    return 0;
}

enum {
    SI_OPT_CERT = 256,
    SI_OPT_KEY,
    SI_OPT_AUTH_KEY,
    SI_OPT_KEY_ID,
    SI_OPT_TEAM_ID,
    SI_OPT_TOPIC,
    SI_OPT_RECORD,
    SI_OPT_PORT,
    SI_OPT_PORT_FILE,
    SI_OPT_MAX_STREAMS,
    SI_OPT_DELAY_MS,
    SI_OPT_FAIL,
    SI_OPT_KEEP_RESET_LIMIT,
    SI_OPT_CLIENT_CA,
    SI_OPT_INITIAL_STREAMS,
    SI_OPT_GOAWAY_AFTER,
    SI_OPT_CLOCK_FILE,
    SI_OPT_CONN_RECORD,
};

static const struct option si_long_opts[] = {
    {"cert", required_argument, NULL, SI_OPT_CERT},
    {"key", required_argument, NULL, SI_OPT_KEY},
    {"auth-key", required_argument, NULL, SI_OPT_AUTH_KEY},
    {"key-id", required_argument, NULL, SI_OPT_KEY_ID},
    {"team-id", required_argument, NULL, SI_OPT_TEAM_ID},
    {"topic", required_argument, NULL, SI_OPT_TOPIC},
    {"record", required_argument, NULL, SI_OPT_RECORD},
    {"port", required_argument, NULL, SI_OPT_PORT},
    {"port-file", required_argument, NULL, SI_OPT_PORT_FILE},
    {"max-streams", required_argument, NULL, SI_OPT_MAX_STREAMS},
    {"delay-ms", required_argument, NULL, SI_OPT_DELAY_MS},
    {"fail", required_argument, NULL, SI_OPT_FAIL},
    {"keep-reset-limit", no_argument, NULL, SI_OPT_KEEP_RESET_LIMIT},
    {"client-ca", required_argument, NULL, SI_OPT_CLIENT_CA},
    {"initial-streams", required_argument, NULL, SI_OPT_INITIAL_STREAMS},
    {"goaway-after", required_argument, NULL, SI_OPT_GOAWAY_AFTER},
    {"clock-file", required_argument, NULL, SI_OPT_CLOCK_FILE},
    {"conn-record", required_argument, NULL, SI_OPT_CONN_RECORD},
    {NULL, 0, NULL, 0},
};

static int
si_parse_opt(struct si_opts *o, int opt, const char *arg)
{
    switch (opt) {
    case SI_OPT_CERT:
        o->cert = arg;
        return 0;
    case SI_OPT_KEY:
        o->key = arg;
        return 0;
    case SI_OPT_AUTH_KEY:
        o->auth_key = arg;
        return 0;
    case SI_OPT_KEY_ID:
        o->key_id = arg;
        return 0;
    case SI_OPT_TEAM_ID:
        o->team_id = arg;
        return 0;
    case SI_OPT_TOPIC:
        o->topic = arg;
        return 0;
    case SI_OPT_RECORD:
        o->record = arg;
        return 0;
    case SI_OPT_PORT_FILE:
        o->port_file = arg;
        return 0;
    case SI_OPT_PORT:
        return si_parse_int(arg, 0, 65535, &o->port);
    case SI_OPT_MAX_STREAMS:
        return si_parse_int(arg, 1, INT32_MAX, &o->max_streams);
    case SI_OPT_DELAY_MS:
        return si_parse_int(arg, 0, 3600 * 1000, &o->delay_ms);
    case SI_OPT_FAIL:
        return si_parse_rule(o, arg);
    case SI_OPT_KEEP_RESET_LIMIT:
        o->keep_reset_limit = 1;
        return 0;
    case SI_OPT_CLIENT_CA:
        o->client_ca = arg;
        return 0;
    case SI_OPT_INITIAL_STREAMS:
        return si_parse_int(arg, 1, INT32_MAX, &o->initial_streams);
    case SI_OPT_GOAWAY_AFTER:
        return si_parse_int(arg, 1, INT32_MAX, &o->goaway_after);
    case SI_OPT_CLOCK_FILE:
        o->clock_file = arg;
        return 0;
    case SI_OPT_CONN_RECORD:
        o->conn_record = arg;
        return 0;
    default:
        return -1;
    }
}

static int
si_parse_args(struct si_opts *o, int argc, char **argv)
{
    int opt;

    o->max_streams = 1000;
    while ((opt = getopt_long(argc, argv, "", si_long_opts, NULL)) != -1) {
        if (si_parse_opt(o, opt, optarg) < 0) {
            if (opt != '?') {
                fprintf(stderr, "apns-standin: bad value for --%s: %s\n",
                        si_long_opts[opt - SI_OPT_CERT].name, optarg);
            }
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "apns-standin: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    if (o->cert == NULL || o->key == NULL || o->auth_key == NULL ||
        o->key_id == NULL || o->team_id == NULL || o->topic == NULL ||
        o->record == NULL) {
        fputs("apns-standin: --cert, --key, --auth-key, --key-id, "
              "--team-id, --topic and --record are required\n",
              stderr);
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct si_server srv;
    char err[SI_ERR_MAX];
    int rc = 1;

    memset(&srv, 0, sizeof(srv));
    srv.lfd = -1;
    srv.epfd = -1;
    srv.sfd = -1;

    if (si_parse_args(&srv.opts, argc, argv) < 0) {
        si_usage();
        rc = 2;
        goto out;
    }
    if (si_setup(&srv, err) < 0) {
        fprintf(stderr, "apns-standin: %s\n", err);
        goto out;
    }
    rc = si_loop(&srv) < 0 ? 1 : 0;

out:
    si_teardown(&srv);
    return rc;
}
