#!/bin/bash
# Proves that the APNs stand-in answers as APNs does, so that the worker's
# tests can trust it: a valid push is accepted, its apns-id echoed and its
# body recorded byte for byte; every rule the stand-in checks is broken once
# by a request that is otherwise valid, and must get APNs's status and
# reason. Requests go through nghttp (curl where nghttp cannot do the job),
# to stand-ins on 127.0.0.1 that this script starts and stops.
#
# CALLPUSH_BUILD names the build directory holding apns-standin (default
# "build"); CALLPUSH_SRC the source tree (default: found from this file).
set -eu

build=${CALLPUSH_BUILD:-build}
src=${CALLPUSH_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
standin=$build/apns-standin
py=/usr/bin/python3
key_id=KEYID12345
team_id=TEAMID1234
topic=com.example.callpush

tmp=$(mktemp -d)
pids=()
declare -A pid_of

cleanup() {
    local pid

    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0

pass() {
    passed=$((passed + 1))
    echo "ok: $1"
}

fail() {
    failed=$((failed + 1))
    echo "FAIL: $1" >&2
}

# check NAME COMMAND...: passes when the command succeeds.
check() {
    local name=$1

    shift
    if "$@"; then
        pass "$name"
    else
        fail "$name"
    fi
}

# start NAME ARGS...: starts a stand-in that writes $tmp/NAME.jsonl and
# $tmp/NAME.log, waits until it has written its port file, and sets
# port and started_pid.
start() {
    local name=$1

    shift
    "$standin" --cert "$tmp/certs/server.crt" --key "$tmp/certs/server.key" \
        --auth-key "$tmp/certs/AuthKey.pub.pem" --key-id "$key_id" \
        --team-id "$team_id" --topic "$topic" --record "$tmp/$name.jsonl" \
        --port-file "$tmp/$name.port" "$@" 2>"$tmp/$name.log" &
    started_pid=$!
    pids+=("$started_pid")
    pid_of[$name]=$started_pid
    for _ in $(seq 400); do
        if [ -s "$tmp/$name.port" ]; then
            break
        fi
        if ! kill -0 "$started_pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    if [ ! -s "$tmp/$name.port" ]; then
        echo "stand-in $name did not start:" >&2
        cat "$tmp/$name.log" >&2
        exit 1
    fi
    port=$(cat "$tmp/$name.port")
}

# push PATH BODY HEADER...: sends one request with nghttp and sets status,
# reason, resp_id (the apns-id answered) and out (nghttp's frame trace).
# BODY is a file to POST, or "-" to send a GET without a body.
push() {
    local path=$1 body=$2 h
    local args=(-v -y -t 20s)

    shift 2
    if [ "$body" != - ]; then
        args+=(-d "$body")
    fi
    for h in "$@"; do
        args+=(-H "$h")
    done
    out=$(nghttp "${args[@]}" "https://127.0.0.1:$port$path" 2>&1) || true
    status=$(sed -n 's/.*recv (stream_id=[0-9]*) :status: //p' <<<"$out" |
        head -n 1)
    resp_id=$(sed -n 's/.*recv (stream_id=[0-9]*) apns-id: //p' <<<"$out" |
        head -n 1)
    reason=$(grep -o '"reason":"[^"]*"' <<<"$out" | head -n 1 |
        sed 's/^"reason":"//; s/"$//')
}

# expect NAME STATUS REASON: checks the answer to the last push.
expect() {
    if [ "$status" = "$2" ] && [ "$reason" = "$3" ]; then
        pass "$1"
    else
        fail "$1: got '$status' '$reason', want '$2' '$3'"
    fi
}

# record_has FILE EXPR: true if the Python expression holds for r, the
# newest line of the record FILE; f(path) reads a file as text.
record_has() {
    "$py" - "$1" "$2" <<'EOF'
import json
import sys


def f(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


r = json.loads(f(sys.argv[1]).splitlines()[-1])
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
EOF
}

# body_of_size N FILE: a valid payload of exactly N bytes.
body_of_size() {
    "$py" -c 'import sys
n = int(sys.argv[1])
sys.stdout.write("{\"aps\":{},\"pad\":\"" + "x" * (n - 19) + "\"}")' \
        "$1" >"$2"
}

# answer_has_no_body: the last answer was HEADERS with END_STREAM (0x05 is
# END_STREAM | END_HEADERS) and no DATA frame followed.
answer_has_no_body() {
    grep -q "recv HEADERS frame <length=[0-9]*, flags=0x05" <<<"$out" &&
        ! grep -q "recv DATA frame" <<<"$out"
}

# max_streams_is N: the server's SETTINGS in the last trace announced N.
max_streams_is() {
    grep -A3 "recv SETTINGS frame <length=[1-9]" <<<"$out" |
        grep -q "MAX_CONCURRENT_STREAMS(0x03):$1\]"
}

b64url() {
    base64 -w 0 | tr '+/' '-_' | tr -d '='
}

jwt() {
    "$py" "$src/tests/tools/jwt_for_test.py" "$@"
}

# ---- setup ------------------------------------------------------------------

sh "$src/tests/tools/mkcerts.sh" "$tmp/certs"
sh "$src/tests/tools/mkcerts.sh" "$tmp/other"
sums=$(cat "$tmp/certs"/* | sha256sum)
sh "$src/tests/tools/mkcerts.sh" "$tmp/certs"
check "mkcerts.sh keeps the files it finds" \
    [ "$(cat "$tmp/certs"/* | sha256sum)" = "$sums" ]

now=$(date +%s)
p8=$tmp/certs/AuthKey.p8
good_jwt=$(jwt "$p8" "$key_id" "$team_id" "$now")
auth="authorization: bearer $good_jwt"
token=$(printf '0123456789abcdef%.0s' 1 2 3 4)
fail_token=$(printf 'fedcba9876543210%.0s' 1 2 3 4)
dev=/3/device/$token
std=("$auth" "apns-topic: $topic" "apns-push-type: alert")

printf '%s' '{"aps":{"alert":{"title":"Call"},"mutable-content":1},' \
    '"call_id":18101194842707757,"caller":"Zoë \"Z\""}' >"$tmp/body.json"
printf '%s' '{"aps":{"content-available":1}}' >"$tmp/background.json"
: >"$tmp/empty.json"
body_of_size 4096 "$tmp/4096.json"
body_of_size 4097 "$tmp/4097.json"
body_of_size 5000 "$tmp/5000.json"
body_of_size 5121 "$tmp/5121.json"
body_of_size 20000 "$tmp/20000.json"

start main --fail "$fail_token=410:Unregistered"
rec=$tmp/main.jsonl
check "the port file holds the port" grep -qx '[0-9]\+' "$tmp/main.port"
check "stderr says where it listens" \
    grep -qx "listening 127.0.0.1:$port" "$tmp/main.log"

# ---- a valid push -----------------------------------------------------------

uuid=6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b
push "$dev" "$tmp/body.json" "${std[@]}" "apns-id: $uuid" \
    "apns-priority: 10" "apns-expiration: $((now + 30))" \
    "apns-collapse-id: call-1"
expect "a valid push is accepted" 200 ""
check "the request's apns-id is echoed" [ "$resp_id" = "$uuid" ]
check "success is one HEADERS frame with END_STREAM, no DATA" \
    answer_has_no_body
check "SETTINGS_MAX_CONCURRENT_STREAMS is 1000 by default" \
    max_streams_is 1000
check "the record keeps the body byte for byte" \
    record_has "$rec" "r['body'] == f('$tmp/body.json')"
check "the record has status, token, apns-id, iat and conn" \
    record_has "$rec" "r['status'] == 200 and r['reason'] is None and
        r['token'] == '$token' and r['apns_id'] == '$uuid' and
        r['jwt_iat'] == $now and r['conn'] == 1 and r['stream'] > 0 and
        isinstance(r['ts_ms'], int)"
check "the record has every header, authorization redacted" \
    record_has "$rec" "r['headers'][':method'] == 'POST' and
        r['headers'][':path'] == '$dev' and
        r['headers']['authorization'] == 'bearer <redacted>' and
        r['headers']['apns-collapse-id'] == 'call-1' and
        r['headers']['apns-priority'] == '10'"

push "$dev" "$tmp/body.json" "${std[@]}"
expect "a push without apns-id is accepted" 200 ""
check "a fresh lowercase UUID is answered" grep -Eqx \
    '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' <<<"$resp_id"
check "the fresh apns-id is recorded" \
    record_has "$rec" "r['apns_id'] == '$resp_id'"

push "$dev" "$tmp/background.json" "$auth" "apns-topic: $topic" \
    "apns-push-type: background" "apns-priority: 5"
expect "background with priority 5 is accepted" 200 ""

# ---- method, path, token, duplicates ----------------------------------------

push "$dev" - "${std[@]}"
expect "GET is refused" 405 MethodNotAllowed
check "a refused request is recorded too" \
    record_has "$rec" "r['status'] == 405 and r['reason'] ==
        'MethodNotAllowed' and r['token'] == '$token' and r['body'] == ''"

push "/3/devices/$token" "$tmp/body.json" "${std[@]}"
expect "a path outside /3/device/ is refused" 404 BadPath
push "/4/device/$token" "$tmp/body.json" "${std[@]}"
expect "another API version is refused" 404 BadPath
push /3/device/ "$tmp/body.json" "${std[@]}"
expect "an empty device token is refused" 400 MissingDeviceToken
push "/3/device/${token:0:62}zz" "$tmp/body.json" "${std[@]}"
expect "a token with non-hex characters is refused" 400 BadDeviceToken
push "/3/device/${token:0:63}" "$tmp/body.json" "${std[@]}"
expect "a token of odd length is refused" 400 BadDeviceToken
push "/3/device/${token:0:14}" "$tmp/body.json" "${std[@]}"
expect "a token shorter than 16 is refused" 400 BadDeviceToken
push "/3/device/$token$token$token$token" "$tmp/body.json" "${std[@]}"
expect "a token of 256 digits is refused" 400 BadDeviceToken

push "$dev" "$tmp/body.json" "${std[@]}" "apns-topic: $topic"
expect "apns-topic twice is refused" 400 DuplicateHeaders
push "$dev" "$tmp/body.json" "${std[@]}" "$auth"
expect "authorization twice is refused" 400 DuplicateHeaders

# ---- provider token ---------------------------------------------------------

push "$dev" "$tmp/body.json" "apns-topic: $topic" "apns-push-type: alert"
expect "a push without authorization is refused" 403 MissingProviderToken

# bad_jwt NAME JWT: the push must be refused as InvalidProviderToken.
bad_jwt() {
    push "$dev" "$tmp/body.json" "authorization: bearer $2" \
        "apns-topic: $topic" "apns-push-type: alert"
    expect "$1" 403 InvalidProviderToken
}

bad_jwt "a DER signature is refused" \
    "$(jwt "$p8" "$key_id" "$team_id" "$now" --der)"
bad_jwt "a wrong key id is refused" "$(jwt "$p8" KEYID00000 "$team_id" "$now")"
bad_jwt "a wrong team id is refused" "$(jwt "$p8" "$key_id" TEAMID0000 "$now")"
bad_jwt "a token signed by another key is refused" \
    "$(jwt "$tmp/other/AuthKey.p8" "$key_id" "$team_id" "$now")"
bad_jwt "an iat 10 minutes ahead is refused" \
    "$(jwt "$p8" "$key_id" "$team_id" $((now + 600)))"
hs256=$(printf '{"alg":"HS256","kid":"%s"}' "$key_id" | b64url)
bad_jwt "alg HS256 is refused" "$hs256.${good_jwt#*.}"
claims=$(printf '{"iss":"%s","iat":%d}' "$team_id" $((now + 1)) | b64url)
bad_jwt "changed claims fail the signature" \
    "${good_jwt%%.*}.$claims.${good_jwt##*.}"
bad_jwt "padding in the signature is refused" "$good_jwt=="
bad_jwt "a token of two parts is refused" "${good_jwt%.*}"

push "$dev" "$tmp/body.json" "authorization: basic $good_jwt" \
    "apns-topic: $topic" "apns-push-type: alert"
expect "a scheme other than bearer is refused" 403 InvalidProviderToken

push "$dev" "$tmp/body.json" \
    "authorization: bearer $(jwt "$p8" "$key_id" "$team_id" $((now - 4000)))" \
    "apns-topic: $topic" "apns-push-type: alert"
expect "an iat over an hour old is expired" 403 ExpiredProviderToken
check "the expired token's iat is recorded" \
    record_has "$rec" "r['jwt_iat'] == $((now - 4000))"

push "$dev" "$tmp/body.json" \
    "authorization: bearer $(jwt "$p8" "$key_id" "$team_id" $((now - 3000)))" \
    "apns-topic: $topic" "apns-push-type: alert"
expect "an iat 50 minutes old is accepted" 200 ""

# ---- topic, push type and the other headers ---------------------------------

push "$dev" "$tmp/body.json" "$auth" "apns-push-type: alert"
expect "a push without apns-topic is refused" 400 MissingTopic
push "$dev" "$tmp/body.json" "$auth" "apns-topic: com.example.other" \
    "apns-push-type: alert"
expect "another app's topic is refused" 400 TopicDisallowed
push "$dev" "$tmp/body.json" "$auth" "apns-topic: $topic.voip" \
    "apns-push-type: alert"
expect "the .voip topic for an alert is refused" 400 TopicDisallowed
push "$dev" "$tmp/body.json" "$auth" "apns-topic: $topic" \
    "apns-push-type: voip"
expect "a voip push without .voip is refused" 400 TopicDisallowed

push "$dev" "$tmp/body.json" "$auth" "apns-topic: $topic"
expect "a push without apns-push-type is refused" 400 InvalidPushType
push "$dev" "$tmp/body.json" "$auth" "apns-topic: $topic" \
    "apns-push-type: call"
expect "an unknown push type is refused" 400 InvalidPushType

push "$dev" "$tmp/body.json" "${std[@]}" "apns-priority: 7"
expect "priority 7 is refused" 400 BadPriority
push "$dev" "$tmp/background.json" "$auth" "apns-topic: $topic" \
    "apns-push-type: background" "apns-priority: 10"
expect "background with priority 10 is refused" 400 BadPriority
push "$dev" "$tmp/background.json" "$auth" "apns-topic: $topic" \
    "apns-push-type: background"
expect "background without a priority (10) is refused" 400 BadPriority

push "$dev" "$tmp/body.json" "${std[@]}" \
    "apns-id: 6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B"
expect "an uppercase apns-id is refused" 400 BadMessageId
push "$dev" "$tmp/body.json" "${std[@]}" "apns-id: call-1"
expect "an apns-id that is no UUID is refused" 400 BadMessageId

push "$dev" "$tmp/body.json" "${std[@]}" "apns-expiration: soon"
expect "a non-numeric expiration is refused" 400 BadExpirationDate
push "$dev" "$tmp/body.json" "${std[@]}" "apns-expiration: -5"
expect "a negative expiration is refused" 400 BadExpirationDate
push "$dev" "$tmp/body.json" "${std[@]}" "apns-expiration: 0"
expect "expiration 0 is accepted" 200 ""

collapse64=$(printf 'c%.0s' $(seq 64))
push "$dev" "$tmp/body.json" "${std[@]}" "apns-collapse-id: ${collapse64}x"
expect "a 65-byte collapse id is refused" 400 BadCollapseId
push "$dev" "$tmp/body.json" "${std[@]}" "apns-collapse-id: $collapse64"
expect "a 64-byte collapse id is accepted" 200 ""

# ---- payload ----------------------------------------------------------------

push "$dev" "$tmp/empty.json" "${std[@]}"
expect "an empty body is refused" 400 PayloadEmpty
push "$dev" "$tmp/4096.json" "${std[@]}"
expect "a 4096-byte payload is accepted" 200 ""
push "$dev" "$tmp/4097.json" "${std[@]}"
expect "a 4097-byte payload is too large" 413 PayloadTooLarge
push "$dev" "$tmp/5000.json" "$auth" "apns-topic: $topic.voip" \
    "apns-push-type: voip"
expect "a 5000-byte voip payload on BUNDLEID.voip is accepted" 200 ""
push "$dev" "$tmp/5121.json" "$auth" "apns-topic: $topic.voip" \
    "apns-push-type: voip"
expect "a 5121-byte voip payload is too large" 413 PayloadTooLarge
push "$dev" "$tmp/20000.json" "${std[@]}"
expect "a 20000-byte body is too large" 413 PayloadTooLarge
check "only the first 8 KiB of a huge body is kept" \
    record_has "$rec" "len(r['body']) == 8192"

# bad_payload NAME TEXT: the push must be refused as BadPayload.
bad_payload() {
    printf '%s' "$2" >"$tmp/bad.json"
    push "$dev" "$tmp/bad.json" "${std[@]}"
    expect "$1" 400 BadPayload
}

bad_payload "a body that is not JSON is refused" 'call me'
bad_payload "a payload without aps is refused" '{"alert":"x"}'
bad_payload "a payload whose aps is no object is refused" '{"aps":1}'
bad_payload "a JSON array is refused" '[{"aps":{}}]'
bad_payload "trailing bytes after the JSON are refused" '{"aps":{}} x'

# ---- order of the checks, --fail, connections -------------------------------

push "$dev" - "apns-topic: nope"
expect "the method is checked before anything else" 405 MethodNotAllowed
push "$dev" "$tmp/empty.json" "apns-topic: nope"
expect "the token is checked before the topic" 403 MissingProviderToken
push "$dev" "$tmp/empty.json" "$auth" "apns-topic: nope"
expect "the topic is checked before the body" 400 TopicDisallowed

push "/3/device/$fail_token" "$tmp/body.json" "${std[@]}"
expect "a --fail token gets its status and reason" 410 Unregistered
check "a 410 carries a timestamp in milliseconds" \
    grep -q '"timestamp":[0-9]\{13\}}' <<<"$out"
push "/3/device/$fail_token" "$tmp/body.json" "$auth" "apns-push-type: alert"
expect "a --fail token is validated first" 400 MissingTopic

out=$(nghttp -v -y -t 20s -d "$tmp/body.json" -H "$auth" \
    -H "apns-topic: $topic" -H "apns-push-type: alert" \
    "https://127.0.0.1:$port/3/device/zz" \
    "https://127.0.0.1:$port$dev" 2>&1) || true
check "both requests are answered" [ "$(grep -c ":status: " <<<"$out")" = 2 ]
check "a refused request does not close the connection" \
    record_has "$rec" "r['status'] == 200 and
        json.loads(f('$rec').splitlines()[-2])['conn'] == r['conn']"

lines=$(wc -l <"$rec")
rc=0
curl -s --http1.1 --cacert "$tmp/certs/server.crt" -o /dev/null \
    "https://127.0.0.1:$port$dev" || rc=$?
check "a client without ALPN h2 fails the handshake" [ "$rc" != 0 ]
answer=$(curl -s --http2 --cacert "$tmp/certs/server.crt" -o /dev/null \
    -w "%{http_version} %{http_code}" -d @"$tmp/body.json" -H "$auth" \
    -H "apns-topic: $topic" -H "apns-push-type: alert" \
    "https://localhost:$port$dev") || true
check "curl verifies the certificate for localhost and gets 200" \
    [ "$answer" = "2 200" ]
check "the record grew by exactly the one curl push" \
    [ "$(wc -l <"$rec")" = $((lines + 1)) ]

# bulk_curl PORT N: N body-less-answer POSTs through curl over HTTP/2; libcurl
# resets every stream whose response has no body. Prints the HTTP codes.
bulk_curl() {
    yes "url = \"https://127.0.0.1:$1$dev\"" | head -n "$2" >"$tmp/urls.cfg"
    curl -s --no-progress-meter --http2 --cacert "$tmp/certs/server.crt" \
        -d @"$tmp/body.json" -H "$auth" -H "apns-topic: $topic" \
        -H "apns-push-type: alert" -o /dev/null -w '%{http_code}\n' \
        --parallel --parallel-max 50 -K "$tmp/urls.cfg" |
        sort | uniq -c | tr -s ' '
}

# conns_since FILE LINE: the number of connections used after line LINE.
conns_since() {
    tail -n +"$(($2 + 1))" "$1" | "$py" -c 'import json, sys
print(len({json.loads(l)["conn"] for l in sys.stdin}))'
}

lines=$(wc -l <"$rec")
codes=$(bulk_curl "$port" 2500)
check "2500 curl pushes all succeed" [ "$codes" = " 2500 200" ]
check "the raised reset limit keeps them on one connection" \
    [ "$(conns_since "$rec" "$lines")" = 1 ]

# ---- a second stand-in: --keep-reset-limit ----------------------------------

start resets --keep-reset-limit

# curl itself may lose a request in flight when the connection closes (it
# reports an HTTP/2 framing error): that is the client's business, so only
# the stand-in's side is checked here.
bulk_curl "$port" 2500 >/dev/null
check "--keep-reset-limit closes the connection after ~1000 resets" \
    [ "$(conns_since "$tmp/resets.jsonl" 0)" -gt 1 ]
check "its closing is logged" grep -q "closed (HTTP/2" "$tmp/resets.log"
check "what it did receive it answered with 200" \
    [ "$(grep -vc '"status":200,' "$tmp/resets.jsonl")" = 0 ]

# ---- a third stand-in: --delay-ms and --max-streams -------------------------

start slow --delay-ms 200 --max-streams 7
out=$(nghttp -v -y -t 20s -m 5 -d "$tmp/body.json" -H "$auth" \
    -H "apns-topic: $topic" -H "apns-push-type: alert" \
    "https://127.0.0.1:$port$dev" 2>&1) || true
check "--max-streams is advertised" max_streams_is 7
check "delayed answers all arrive" \
    [ "$(grep -c ":status: 200" <<<"$out")" = 5 ]
check "delayed answers are recorded" \
    [ "$(grep -c '"status":200' "$tmp/slow.jsonl")" = 5 ]

# ---- shutdown ---------------------------------------------------------------

# A stand-in built with sanitizers exits non-zero on a leak or error found
# at exit, so each one's exit status is checked, not just the main one's.
for name in main resets slow; do
    rc=0
    kill -TERM "${pid_of[$name]}"
    wait "${pid_of[$name]}" || rc=$?
    if [ "$rc" = 0 ]; then
        pass "stand-in $name exits with status 0 on SIGTERM"
    else
        fail "stand-in $name exits with status 0 on SIGTERM (got $rc)"
        tail -n 40 "$tmp/$name.log" >&2
    fi
    check "every connection of $name is logged opening and closing" \
        [ "$(grep -c "opened from" "$tmp/$name.log")" = \
        "$(grep -c "closed (" "$tmp/$name.log")" ]
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
