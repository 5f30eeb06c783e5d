/* ES256 provider tokens: their form, their signature, their renewal, and
 * the keys and ids that are refused. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "jwt.h"

#define KEY_ID "ABC123DEFG"
#define TEAM_ID "DEF123GHIJ"
#define IAT 1700000000LL

struct fixture {
    char dir[64];
    char ec_path[128];
    EVP_PKEY *ec_key;
};

static void
write_key(const char *path, EVP_PKEY *key)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL),
                     1);
    fclose(fp);
}

static void
write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL) {
        return -1;
    }
    strcpy(f->dir, "/tmp/callpush-jwt-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    snprintf(f->ec_path, sizeof(f->ec_path), "%s/AuthKey_%s.p8", f->dir,
             KEY_ID);
    f->ec_key = EVP_EC_gen("P-256");
    if (f->ec_key == NULL) {
        return -1;
    }
    write_key(f->ec_path, f->ec_key);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    const char *names[] = {"AuthKey_" KEY_ID ".p8", "rsa.p8", "p384.p8",
                           "text.p8"};
    char path[192];
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, names[i]);
        unlink(path);
    }
    rmdir(f->dir);
    EVP_PKEY_free(f->ec_key);
    free(f);
    return 0;
}

/* Decodes base64url without padding; returns the length, or -1. */
static int
b64url_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
    char std[512];
    size_t i, padded = (len + 3) / 4 * 4;
    int n;

    if (padded >= sizeof(std) || padded / 4 * 3 > outlen) {
        return -1;
    }
    for (i = 0; i < len; i++) {
        if (in[i] == '+' || in[i] == '/' || in[i] == '=') {
            return -1;
        }
        std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    }
    for (; i < padded; i++) {
        std[i] = '=';
    }
    n = EVP_DecodeBlock(out, (unsigned char *)std, (int)padded);
    if (n < 0) {
        return -1;
    }

    /* EVP_DecodeBlock counts the bytes the padding stands for as well. */
    return n - (int)(padded - len);
}

struct parts {
    char header[128];
    char claims[128];
    unsigned char sig[128];
    int siglen;
    const char *signed_part; /* header.claims, in the token */
    size_t signed_len;
};

static void
split_token(const char *token, struct parts *p)
{
    const char *dot1 = strchr(token, '.');
    const char *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    int n;

    assert_non_null(dot2);
    assert_null(strchr(dot2 + 1, '.'));
    memset(p, 0, sizeof(*p));

    n = b64url_decode(token, (size_t)(dot1 - token), (unsigned char *)p->header,
                      sizeof(p->header) - 1);
    assert_true(n > 0);
    n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1),
                      (unsigned char *)p->claims, sizeof(p->claims) - 1);
    assert_true(n > 0);
    p->siglen =
        b64url_decode(dot2 + 1, strlen(dot2 + 1), p->sig, sizeof(p->sig));
    p->signed_part = token;
    p->signed_len = (size_t)(dot2 - token);
}

/* Verifies a raw r || s signature the way APNs does, through DER. */
static int
verify(EVP_PKEY *key, const struct parts *p, const char *data, size_t len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(p->sig, 32, NULL);
    BIGNUM *s = BN_bin2bn(p->sig + 32, 32, NULL);
    unsigned char *der = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int derlen, ok;

    assert_true(sig != NULL && r != NULL && s != NULL && ctx != NULL);
    assert_int_equal(ECDSA_SIG_set0(sig, r, s), 1);
    derlen = i2d_ECDSA_SIG(sig, &der);
    assert_true(derlen > 0);
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key),
                     1);
    ok = EVP_DigestVerify(ctx, der, (size_t)derlen, (const unsigned char *)data,
                          len);
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(ctx);
    return ok == 1;
}

static struct jwt *
new_ok(const char *path)
{
    char err[JWT_ERR_MAX] = "";
    struct jwt *jwt = jwt_new(path, KEY_ID, TEAM_ID, err);

    if (jwt == NULL) {
        fail_msg("jwt_new: %s", err);
    }
    return jwt;
}

static void
test_token_has_es256_header_and_claims(void **state)
{
    struct fixture *f = *state;
    struct jwt *jwt = new_ok(f->ec_path);
    char token[512], err[JWT_ERR_MAX];
    struct parts p;
    cJSON *claims;
    size_t i;

    assert_int_equal(jwt_sign(jwt, IAT, token, sizeof(token), err), 0);
    for (i = 0; token[i] != '\0'; i++) {
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789-_.",
                   token[i]) == NULL) {
            fail_msg("character %zu of the token is '%c'", i, token[i]);
        }
    }

    split_token(token, &p);
    assert_string_equal(p.header, "{\"alg\":\"ES256\",\"kid\":\"" KEY_ID "\"}");
    assert_string_equal(p.claims,
                        "{\"iss\":\"" TEAM_ID "\",\"iat\":1700000000}");
    claims = cJSON_Parse(p.claims);
    assert_non_null(claims);
    assert_int_equal(cJSON_GetObjectItem(claims, "iat")->valuedouble, IAT);
    cJSON_Delete(claims);
    jwt_free(jwt);
}

static void
test_signature_is_raw_and_verifies(void **state)
{
    struct fixture *f = *state;
    struct jwt *jwt = new_ok(f->ec_path);
    char token[512], err[JWT_ERR_MAX], tampered[256];
    struct parts p;
    int round;

    /* Several rounds: about one signature in 128 has an r or s with a
     * leading zero byte, which the padding must keep. */
    for (round = 0; round < 64; round++) {
        assert_int_equal(jwt_sign(jwt, IAT + round, token, sizeof(token), err),
                         0);
        split_token(token, &p);
        assert_int_equal(p.siglen, 64);
        assert_int_equal(strlen(strrchr(token, '.') + 1), 86);
        assert_true(verify(f->ec_key, &p, p.signed_part, p.signed_len));

        /* The check is real: other claims do not verify. */
        memcpy(tampered, p.signed_part, p.signed_len);
        tampered[p.signed_len - 1] ^= 1;
        assert_false(verify(f->ec_key, &p, tampered, p.signed_len));
    }
    jwt_free(jwt);
}

static void
test_token_is_cached_then_renewed_at_50_minutes(void **state)
{
    struct fixture *f = *state;
    struct jwt *jwt = new_ok(f->ec_path);
    char first[512], err[JWT_ERR_MAX];
    const char *t;
    struct parts p;

    assert_int_equal(jwt_issued_at(jwt), 0);
    t = jwt_token(jwt, IAT, err);
    assert_non_null(t);
    strcpy(first, t);
    assert_int_equal(jwt_issued_at(jwt), IAT);

    /* Within 50 minutes: the same token, not signed again (ECDSA would
     * give another signature even for the same claims). */
    t = jwt_token(jwt, IAT + 60, err);
    assert_string_equal(t, first);
    t = jwt_token(jwt, IAT + JWT_RENEW_AFTER_S - 1, err);
    assert_string_equal(t, first);
    assert_int_equal(jwt_issued_at(jwt), IAT);

    /* A clock stepping back does not force a new token either. */
    t = jwt_token(jwt, IAT - 5, err);
    assert_string_equal(t, first);

    /* At 50 minutes: a new one, issued now. */
    t = jwt_token(jwt, IAT + JWT_RENEW_AFTER_S, err);
    assert_non_null(t);
    assert_string_not_equal(t, first);
    assert_int_equal(jwt_issued_at(jwt), IAT + JWT_RENEW_AFTER_S);
    split_token(t, &p);
    assert_string_equal(p.claims,
                        "{\"iss\":\"" TEAM_ID "\",\"iat\":1700003000}");
    assert_true(verify(f->ec_key, &p, p.signed_part, p.signed_len));
    jwt_free(jwt);
}

static void
test_first_token_is_signed_whatever_the_clock(void **state)
{
    struct fixture *f = *state;
    struct jwt *jwt = new_ok(f->ec_path);
    char err[JWT_ERR_MAX];
    const char *t;
    struct parts p;

    /* A token issued at second 100 is not "issued at 0, still fresh": the
     * context must know it has none yet, not guess it from the time. */
    t = jwt_token(jwt, 100, err);
    assert_non_null(t);
    split_token(t, &p);
    assert_string_equal(p.claims, "{\"iss\":\"" TEAM_ID "\",\"iat\":100}");
    assert_int_equal(jwt_issued_at(jwt), 100);
    jwt_free(jwt);
}

static void
test_small_output_buffer_is_an_error(void **state)
{
    struct fixture *f = *state;
    struct jwt *jwt = new_ok(f->ec_path);
    char token[100], err[JWT_ERR_MAX];

    assert_int_equal(jwt_sign(jwt, IAT, token, sizeof(token), err), -1);
    assert_non_null(strstr(err, "too small"));
    jwt_free(jwt);
}

static void
expect_refused(const char *path, const char *kid, const char *team,
               const char *want)
{
    char err[JWT_ERR_MAX] = "";
    struct jwt *jwt = jwt_new(path, kid, team, err);

    if (jwt != NULL) {
        jwt_free(jwt);
        fail_msg("accepted %s with key id %s, team id %s", path, kid, team);
    }
    if (strstr(err, want) == NULL) {
        fail_msg("error \"%s\" does not say \"%s\"", err, want);
    }
}

static void
test_bad_ids_are_refused(void **state)
{
    struct fixture *f = *state;

    expect_refused(f->ec_path, "ABC123DEF", TEAM_ID,
                   "key id must be 10 characters of A-Z and 0-9, not 9");
    expect_refused(f->ec_path, "abc123defg", TEAM_ID,
                   "key id must be 10 characters of A-Z and 0-9: character "
                   "1 is not");
    expect_refused(f->ec_path, "", TEAM_ID, "key id");
    expect_refused(f->ec_path, KEY_ID, "DEF123GHIJK",
                   "team id must be 10 characters of A-Z and 0-9, not 11");
    expect_refused(f->ec_path, KEY_ID, "DEF123GHI-",
                   "team id must be 10 characters of A-Z and 0-9: character "
                   "10 is not");
}

static void
test_unreadable_or_wrong_keys_are_refused(void **state)
{
    struct fixture *f = *state;
    char path[192], want[256];
    EVP_PKEY *key;

    snprintf(path, sizeof(path), "%s/missing.p8", f->dir);
    snprintf(want, sizeof(want), "cannot read %s: No such file or directory",
             path);
    expect_refused(path, KEY_ID, TEAM_ID, want);

    snprintf(want, sizeof(want), "cannot read %s: Is a directory", f->dir);
    expect_refused(f->dir, KEY_ID, TEAM_ID, want);

    /* Text that looks like key material must not be echoed back. */
    snprintf(path, sizeof(path), "%s/text.p8", f->dir);
    write_text(path, "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n");
    snprintf(want, sizeof(want), "%s: not a PEM private key", path);
    expect_refused(path, KEY_ID, TEAM_ID, want);
    {
        char err[JWT_ERR_MAX];

        assert_null(jwt_new(path, KEY_ID, TEAM_ID, err));
        assert_null(strstr(err, "MIGH"));
    }

    snprintf(path, sizeof(path), "%s/rsa.p8", f->dir);
    key = EVP_RSA_gen(2048);
    assert_non_null(key);
    write_key(path, key);
    EVP_PKEY_free(key);
    snprintf(want, sizeof(want), "%s: key is not an EC P-256 key (RSA)", path);
    expect_refused(path, KEY_ID, TEAM_ID, want);

    snprintf(path, sizeof(path), "%s/p384.p8", f->dir);
    key = EVP_EC_gen("P-384");
    assert_non_null(key);
    write_key(path, key);
    EVP_PKEY_free(key);
    snprintf(want, sizeof(want),
             "%s: key is not an EC P-256 key (curve secp384r1)", path);
    expect_refused(path, KEY_ID, TEAM_ID, want);
}

static void
test_free_accepts_null(void **state)
{
    jwt_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_token_has_es256_header_and_claims,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_is_raw_and_verifies,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_token_is_cached_then_renewed_at_50_minutes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_first_token_is_signed_whatever_the_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_output_buffer_is_an_error,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_ids_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_unreadable_or_wrong_keys_are_refused, setup, teardown),
        cmocka_unit_test(test_free_accepts_null),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
