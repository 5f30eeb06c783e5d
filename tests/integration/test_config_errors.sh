#!/usr/bin/env bash
# A missing or invalid setting stops the worker at start with one line
# naming it; --help lists every setting with its default.
set -eu
. "$(dirname "$0")/lib.sh"

bash "$CALLPUSH_SRC/tests/tools/mkcerts.sh" "$T/certs" >/dev/null
BROKERS=127.0.0.1:1  # never contacted: every case fails before Kafka
APNS_URL=https://127.0.0.1:1

# expect_refusal DESCRIPTION PATTERN ENV... -- FLAGS...
expect_refusal() {
    local what=$1 pattern=$2
    shift 2
    local envs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    local rc=0
    env -i PATH="$PATH" $(worker_env) "${envs[@]}" \
        timeout 20 "$CALLPUSH_BUILD/callpush" "$@" >"$T/out" 2>"$T/err" || rc=$?
    if [ "$rc" -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
        grep -q -- "$pattern" "$T/err"; then
        ok "$what"
    else
        fail "$what (exit $rc): $(cat "$T/err")"
    fi
}

expect_refusal "missing brokers named" CALLPUSH_BROKERS CALLPUSH_BROKERS= --
expect_refusal "ring timeout out of range named" CALLPUSH_RING_TIMEOUT_S \
    CALLPUSH_RING_TIMEOUT_S=0 --
expect_refusal "flag value checked like the variable" -- -- \
    --ring-timeout-s abc
expect_refusal "bad key id named" CALLPUSH_APNS_KEY_ID \
    CALLPUSH_APNS_KEY_ID=abc --
expect_refusal "bad APNs environment named" CALLPUSH_APNS_ENV \
    CALLPUSH_APNS_ENV=staging --
expect_refusal "unknown flag named" -- -- --no-such-flag 1
expect_refusal "unreadable key file named" CALLPUSH_APNS_KEY_FILE \
    CALLPUSH_APNS_KEY_FILE=/nonexistent/AuthKey.p8 --
printf 'not a key\n' >"$T/junk.p8"
expect_refusal "key file that is not a key named" "CALLPUSH_APNS_KEY_FILE" \
    CALLPUSH_APNS_KEY_FILE="$T/junk.p8" --
expect_refusal "plain http APNs URL refused" CALLPUSH_APNS_URL \
    CALLPUSH_APNS_URL=http://127.0.0.1:1 --
expect_refusal "ring time left above the ring timeout refused" \
    CALLPUSH_MIN_RING_LEFT_S CALLPUSH_MIN_RING_LEFT_S=60 --
expect_refusal "a listen address that is no IPv4 address refused" \
    CALLPUSH_HTTP_ADDR CALLPUSH_HTTP_ADDR=999.1.1.1:80 --
expect_refusal "bad Kafka property named" "no.such.property" \
    CALLPUSH_KAFKA_NO_SUCH_PROPERTY=1 --

"$CALLPUSH_BUILD/callpush" --help >"$T/help"
missing=""
for v in CALLPUSH_BROKERS CALLPUSH_GROUP CALLPUSH_INVITE_TOPIC \
    CALLPUSH_CANCEL_TOPIC CALLPUSH_FEEDBACK_TOPIC CALLPUSH_DLQ_TOPIC \
    CALLPUSH_APNS_ENV CALLPUSH_APNS_URL CALLPUSH_APNS_CA_FILE \
    CALLPUSH_APNS_TOPIC CALLPUSH_APNS_KEY_FILE CALLPUSH_APNS_KEY_ID \
    CALLPUSH_APNS_TEAM_ID CALLPUSH_RING_TIMEOUT_S CALLPUSH_LOG_LEVEL \
    CALLPUSH_KAFKA_; do
    grep -q "$v" "$T/help" || missing="$missing $v"
done
check "--help lists every setting${missing:+ (missing:$missing)}" test -z "$missing"
check "--help shows defaults" grep -q 'call.invite' "$T/help"
check "--version prints the version" \
    bash -c "'$CALLPUSH_BUILD/callpush' --version | grep -q '^callpush [0-9]'"
finish
