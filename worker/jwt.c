#include "jwt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "util.h"

#define JWT_ID_LEN 10
#define JWT_TOKEN_MAX 256      /* a token is about 200 characters */
#define JWT_KEY_FILE_MAX 16384 /* a .p8 file is about 250 bytes */
#define JWT_SIG_LEN 64         /* r || s, 32 bytes each */

struct jwt {
    EVP_PKEY *key;
    char key_id[JWT_ID_LEN + 1];
    char team_id[JWT_ID_LEN + 1];
    int have_token;
    int64_t iat;
    char token[JWT_TOKEN_MAX];
};

/* Checks an Apple key id or team id; what names it in the message. */
static int
check_id(const char *id, const char *what, char *err)
{
    size_t len = strlen(id), i;

    if (len != JWT_ID_LEN) {
        snprintf(err, JWT_ERR_MAX,
                 "%s must be %d characters of A-Z and 0-9, not %zu", what,
                 JWT_ID_LEN, len);
        return -1;
    }
    for (i = 0; i < len; i++) {
        char c = id[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            snprintf(err, JWT_ERR_MAX,
                     "%s must be %d characters of A-Z and 0-9: character "
                     "%zu is not",
                     what, JWT_ID_LEN, i + 1);
            return -1;
        }
    }
    return 0;
}

/* An encrypted key would otherwise make OpenSSL prompt on the terminal. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/*
 * Reads the whole key file into a buffer the caller wipes and frees. The
 * file is read without stdio buffering so that no copy of the key is left
 * behind in memory this module does not wipe.
 */
static char *
read_key_file(const char *path, size_t *len, char *err)
{
    char *data = NULL;
    size_t n = 0;
    FILE *fp;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, JWT_ERR_MAX, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    setvbuf(fp, NULL, _IONBF, 0);

    /* One byte more than allowed tells a file that is too large. */
    data = xmalloc(JWT_KEY_FILE_MAX + 1);
    n = fread(data, 1, JWT_KEY_FILE_MAX + 1, fp);
    if (ferror(fp)) {
        snprintf(err, JWT_ERR_MAX, "cannot read %s: %s", path, strerror(errno));
        goto fail;
    }
    if (n > JWT_KEY_FILE_MAX) {
        snprintf(err, JWT_ERR_MAX,
                 "%s: larger than %d bytes, not a .p8 key file", path,
                 JWT_KEY_FILE_MAX);
        goto fail;
    }
    fclose(fp);
    *len = n;
    return data;

fail:
    fclose(fp);
    OPENSSL_cleanse(data, JWT_KEY_FILE_MAX + 1);
    free(data);
    return NULL;
}

/* Parses the PEM text and makes sure it is a P-256 key. */
static EVP_PKEY *
load_key(const char *path, const char *pem, size_t len, char *err)
{
    EVP_PKEY *key = NULL;
    char group[64];
    size_t glen = 0;
    BIO *bio;

    bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        snprintf(err, JWT_ERR_MAX, "%s: out of memory", path);
        return NULL;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (key == NULL) {
        snprintf(err, JWT_ERR_MAX,
                 "%s: not a PEM private key (an unencrypted PKCS#8 .p8 "
                 "file is expected)",
                 path);
        goto fail;
    }

    if (!EVP_PKEY_is_a(key, "EC")) {
        snprintf(err, JWT_ERR_MAX, "%s: key is not an EC P-256 key (%s)", path,
                 EVP_PKEY_get0_type_name(key));
        goto fail;
    }
    if (!EVP_PKEY_get_group_name(key, group, sizeof(group), &glen) ||
        strcmp(group, "prime256v1") != 0) {
        snprintf(err, JWT_ERR_MAX, "%s: key is not an EC P-256 key (curve %s)",
                 path, glen > 0 ? group : "unknown");
        goto fail;
    }
    return key;

fail:
    EVP_PKEY_free(key);
    ERR_clear_error();
    return NULL;
}

struct jwt *
jwt_new(const char *key_path, const char *key_id, const char *team_id,
        char *err)
{
    struct jwt *jwt;
    EVP_PKEY *key;
    size_t len = 0;
    char *pem;

    if (check_id(key_id, "key id", err) < 0 ||
        check_id(team_id, "team id", err) < 0) {
        return NULL;
    }

    pem = read_key_file(key_path, &len, err);
    if (pem == NULL) {
        return NULL;
    }
    key = load_key(key_path, pem, len, err);
    OPENSSL_cleanse(pem, JWT_KEY_FILE_MAX + 1);
    free(pem);
    if (key == NULL) {
        return NULL;
    }

    jwt = xcalloc(1, sizeof(*jwt));
    jwt->key = key;
    memcpy(jwt->key_id, key_id, JWT_ID_LEN + 1);
    memcpy(jwt->team_id, team_id, JWT_ID_LEN + 1);
    return jwt;
}

void
jwt_free(struct jwt *jwt)
{
    if (jwt == NULL) {
        return;
    }
    EVP_PKEY_free(jwt->key);
    OPENSSL_cleanse(jwt, sizeof(*jwt));
    free(jwt);
}

/* Characters of the base64url form (no padding) of len bytes. */
static size_t
b64url_len(size_t len)
{
    return (len * 4 + 2) / 3;
}

/* Writes the base64url form of len bytes at w, which has room for
 * b64url_len(len) characters; returns the end of what it wrote. */
static char *
b64url_put(char *w, const void *data, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "abcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_";
    const unsigned char *p = data;
    size_t i;

    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

        *w++ = alphabet[v >> 18];
        *w++ = alphabet[(v >> 12) & 0x3f];
        *w++ = alphabet[(v >> 6) & 0x3f];
        *w++ = alphabet[v & 0x3f];
    }

    /* The last one or two bytes give two or three characters, unpadded. */
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16;

        if (i + 1 < len) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        *w++ = alphabet[v >> 18];
        *w++ = alphabet[(v >> 12) & 0x3f];
        if (i + 1 < len) {
            *w++ = alphabet[(v >> 6) & 0x3f];
        }
    }
    return w;
}

/* Signs data with SHA-256 and turns OpenSSL's DER signature into the raw
 * r || s that JWS requires. */
static int
sign_es256(EVP_PKEY *key, const char *data, size_t len,
           unsigned char raw[JWT_SIG_LEN], char *err)
{
    unsigned char der[128];
    size_t derlen = sizeof(der);
    const unsigned char *tbs = (const unsigned char *)data;
    const unsigned char *p = der;
    const BIGNUM *r, *s;
    const char *reason;
    ECDSA_SIG *sig = NULL;
    EVP_MD_CTX *ctx;
    int result = -1;

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        snprintf(err, JWT_ERR_MAX, "signing the token: out of memory");
        return -1;
    }
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, der, &derlen, tbs, len) != 1) {
        reason = ERR_reason_error_string(ERR_peek_last_error());
        snprintf(err, JWT_ERR_MAX, "signing the token: %s",
                 reason != NULL ? reason : "OpenSSL gave no reason");
        goto done;
    }

    sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    if (sig == NULL) {
        snprintf(err, JWT_ERR_MAX, "signing the token: bad DER signature");
        goto done;
    }
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32) {
        snprintf(err, JWT_ERR_MAX, "signing the token: r or s too large");
        goto done;
    }
    result = 0;

done:
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return result;
}

int
jwt_sign(struct jwt *jwt, int64_t iat, char *out, size_t outlen, char *err)
{
    unsigned char sig[JWT_SIG_LEN];
    char header[64], claims[80];
    size_t hlen, clen, need;
    char *w = out;

    hlen = (size_t)snprintf(header, sizeof(header),
                            "{\"alg\":\"ES256\",\"kid\":\"%s\"}", jwt->key_id);
    clen = (size_t)snprintf(claims, sizeof(claims),
                            "{\"iss\":\"%s\",\"iat\":%lld}", jwt->team_id,
                            (long long)iat);

    /* header.claims.signature and the NUL */
    need = b64url_len(hlen) + 1 + b64url_len(clen) + 1 +
           b64url_len(JWT_SIG_LEN) + 1;
    if (outlen < need) {
        snprintf(err, JWT_ERR_MAX,
                 "token buffer of %zu bytes is too small (%zu needed)", outlen,
                 need);
        return -1;
    }

    w = b64url_put(w, header, hlen);
    *w++ = '.';
    w = b64url_put(w, claims, clen);
    if (sign_es256(jwt->key, out, (size_t)(w - out), sig, err) < 0) {
        return -1;
    }
    *w++ = '.';
    w = b64url_put(w, sig, sizeof(sig));
    *w = '\0';
    return 0;
}

/* Signs a token issued at now_s and makes it the current one. */
static const char *
jwt_renew_at(struct jwt *jwt, int64_t now_s, char *err)
{
    char fresh[JWT_TOKEN_MAX];

    /* Signed aside first, so a failure keeps the current token intact. */
    if (jwt_sign(jwt, now_s, fresh, sizeof(fresh), err) < 0) {
        return NULL;
    }
    memcpy(jwt->token, fresh, sizeof(fresh));
    jwt->iat = now_s;
    jwt->have_token = 1;
    return jwt->token;
}

const char *
jwt_token(struct jwt *jwt, int64_t now_s, char *err)
{
    if (jwt->have_token && now_s - jwt->iat < JWT_RENEW_AFTER_S) {
        return jwt->token;
    }
    return jwt_renew_at(jwt, now_s, err);
}

int
jwt_renew(struct jwt *jwt, int64_t now_s, char *err)
{
    if (jwt->have_token && now_s - jwt->iat < JWT_MIN_AGE_S) {
        snprintf(err, JWT_ERR_MAX,
                 "the provider token was signed %lld s ago (iat %lld, local "
                 "clock %lld), too recently to sign another: APNs calling it "
                 "expired suggests the local clock is wrong",
                 (long long)(now_s - jwt->iat), (long long)jwt->iat,
                 (long long)now_s);
        return -1;
    }
    return jwt_renew_at(jwt, now_s, err) != NULL ? 0 : -1;
}

int64_t
jwt_issued_at(const struct jwt *jwt)
{
    return jwt->have_token ? jwt->iat : 0;
}
