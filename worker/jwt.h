/*
 * jwt: APNs provider tokens (ES256 JSON Web Tokens) from a .p8 key.
 *
 * One token per key per process, shared by every connection: jwt_token()
 * hands out the current one and signs a new one only when the current one
 * is JWT_RENEW_AFTER_S old, so APNs never sees a token older than an hour
 * nor a change more often than every 20 minutes. The signature is the raw
 * 64-byte r||s form that JWS requires (OpenSSL produces DER).
 *
 * Ownership: jwt_new() returns a context the caller frees with jwt_free().
 * The string jwt_token() returns stays valid until the next call.
 *
 * Thread safety: one thread per context (the worker's loop thread).
 */
#ifndef CALLPUSH_JWT_H
#define CALLPUSH_JWT_H

#include <stddef.h>
#include <stdint.h>

#define JWT_RENEW_AFTER_S (50 * 60)
#define JWT_MIN_AGE_S (20 * 60)
#define JWT_ERR_MAX 256

struct jwt;

/*
 * Loads the PKCS#8 PEM EC P-256 key at key_path. key_id and team_id must be
 * 10 characters of [A-Z0-9]. Returns NULL with a reason in err
 * (JWT_ERR_MAX bytes) naming what is wrong: unreadable file, not a PEM
 * private key, not P-256, bad key id or team id.
 */
struct jwt *jwt_new(const char *key_path, const char *key_id,
                    const char *team_id, char *err);
void jwt_free(struct jwt *jwt);

/* The current token, signed anew when none exists yet or the current one
 * was issued JWT_RENEW_AFTER_S or more before now_s. NULL if signing fails
 * (err says why). */
const char *jwt_token(struct jwt *jwt, int64_t now_s, char *err);

/* Signs a new token now, because APNs called the current one expired.
 * Refuses (-1, err says why, naming the local clock) when the current one
 * is younger than JWT_MIN_AGE_S: APNs rejects tokens that change more
 * often, and a young token called expired means a clock is wrong. */
int jwt_renew(struct jwt *jwt, int64_t now_s, char *err);

/* Seconds since the epoch at which the current token was issued, or 0. */
int64_t jwt_issued_at(const struct jwt *jwt);

/* Signs a token with the given iat into out (a NUL-terminated string,
 * outlen bytes). Exposed for tests and for "callpush check". Returns 0 or
 * -1 with err set. */
int jwt_sign(struct jwt *jwt, int64_t iat, char *out, size_t outlen, char *err);

#endif
