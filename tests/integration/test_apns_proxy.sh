#!/usr/bin/env bash
# APNs through an HTTP proxy's CONNECT tunnel: set by CALLPUSH_APNS_PROXY
# or taken from HTTPS_PROXY, skipped for hosts NO_PROXY names, with Basic
# credentials when the URL has them, and a clear error when the proxy
# refuses.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka --topic call.invite:1 --topic call.cancel:1 \
    --topic push.feedback:1 --topic call.dlq:1
start_apns
APNS_HOSTPORT=${APNS_URL#https://}

# run_one NAME MSGID [ENV...]: a worker with ENV pushes one invite; waits
# until its event settled, then stops it.
run_one() {
    local name=$1 msgid=$2
    shift 2
    invite_lines "$name" "$msgid" 1 >"$T/$name.events"
    env $(worker_env) "$@" CALLPUSH_GROUP="g-$name" "$CALLPUSH_BUILD/callpush" \
        >"$T/$name.log" 2>"$T/$name.err" &
    local pid=$!
    PIDS+=($pid)
    wait_assigned "$name" || fail "$name: no partitions"
    produce_lines call.invite "$T/$name.events"
    wait_until 15 grep -q "\"event settled\".*\"_j_msgid\":$msgid" "$T/$name.log" ||
        fail "$name: the event did not settle"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# proxied N: the proxy log has N lines.
proxied() {
    [ "$(wc -l <"$T/proxy.jsonl")" -eq "$1" ]
}

start_proxy
run_one setting 7600001 CALLPUSH_APNS_PROXY="$PROXY_URL"
check "CALLPUSH_APNS_PROXY: pushed" log_ge setting '"outcome":"pushed"' 1
check "CALLPUSH_APNS_PROXY: tunnelled to the APNs host" \
    grep -q "\"target\": \"$APNS_HOSTPORT\", \"auth\": null, \"status\": 200" "$T/proxy.jsonl"

before=$(wc -l <"$T/proxy.jsonl")
run_one env 7600002 HTTPS_PROXY="$PROXY_URL"
check "HTTPS_PROXY: pushed" log_ge env '"outcome":"pushed"' 1
check "HTTPS_PROXY: went through the proxy" \
    test "$(wc -l <"$T/proxy.jsonl")" -gt "$before"

before=$(wc -l <"$T/proxy.jsonl")
run_one noproxy 7600003 HTTPS_PROXY="$PROXY_URL" NO_PROXY="localhost,127.0.0.1"
check "NO_PROXY: pushed" log_ge noproxy '"outcome":"pushed"' 1
check "NO_PROXY: did not use the proxy" proxied "$before"

kill "$PROXY_PID"
wait "$PROXY_PID" 2>/dev/null || true
# The password holds an '@', written as is: the host follows the last one.
start_proxy --auth "user:s3c@ret"
run_one auth 7600004 CALLPUSH_APNS_PROXY="http://user:s3c@ret@${PROXY_URL#http://}"
check "credentials: pushed" log_ge auth '"outcome":"pushed"' 1
check "credentials: sent as Basic" grep -q '"auth": "user:s3c@ret", "status": 200' "$T/proxy.jsonl"
check "credentials: no part of the password in the log" \
    sh -c "! grep -q -e s3c -e 'ret@' '$T/auth.log'"

invite_lines refused 7600005 1 >"$T/refused.events"
env $(worker_env) CALLPUSH_APNS_PROXY="$PROXY_URL" CALLPUSH_GROUP=g-refused \
    CALLPUSH_APNS_TIMEOUT_MS=1000 "$CALLPUSH_BUILD/callpush" \
    >"$T/refused.log" 2>"$T/refused.err" &
PIDS+=($!)
wait_assigned refused || fail "refused: no partitions"
produce_lines call.invite "$T/refused.events"
check "a refusing proxy is named with its answer" \
    wait_until 15 grep -q "refused CONNECT $APNS_HOSTPORT: HTTP/1.1 407" "$T/refused.log"

# callpush check walks the same way: through the proxy, and says so.
check_via() { # check_via NAME ENV...: callpush check with ENV
    local name=$1
    shift
    env $(worker_env) "$@" "$CALLPUSH_BUILD/callpush" check >"$T/$name.out" 2>&1
}
before=$(wc -l <"$T/proxy.jsonl")
check "check: passes through the proxy (password percent-encoded)" \
    check_via check_proxy CALLPUSH_APNS_PROXY="http://user:s3c%40ret@${PROXY_URL#http://}"
check "check: the proxy saw its CONNECT" test "$(wc -l <"$T/proxy.jsonl")" -gt "$before"
check "check: says it used the proxy" grep -q "tunnel to APNs at" "$T/check_proxy.out"
check "check: a refusing proxy fails the check" eval \
    '! check_via check_refused CALLPUSH_APNS_PROXY="$PROXY_URL" &&
     grep -q "refused CONNECT: HTTP/1.1 407" "$T/check_refused.out"'
check "check: a proxy that is not there fails the check" eval \
    '! check_via check_dead HTTPS_PROXY=http://127.0.0.1:1 &&
     grep -q "cannot connect to the proxy at 127.0.0.1:1" "$T/check_dead.out"'

run_bad() { # the worker refuses to start on a malformed proxy setting
    env $(worker_env) CALLPUSH_APNS_PROXY="$1" "$CALLPUSH_BUILD/callpush" \
        >"$T/bad.log" 2>&1 && return 1
    grep -q "CALLPUSH_APNS_PROXY" "$T/bad.log"
}
check "socks5:// refused at start, naming the setting" run_bad "socks5://127.0.0.1:1080"
check "a bad port refused at start" run_bad "http://127.0.0.1:99999"
check "a refused proxy setting does not show its password" eval \
    'run_bad "socks5://alice:TOPSECRET@127.0.0.1:3" && ! grep -q TOPSECRET "$T/bad.log"' 
finish
