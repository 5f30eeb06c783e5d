#!/bin/bash
# Proves that the APNs stand-in answers as APNs does, so that the worker's
# tests can trust it: a valid push is accepted, its apns-id echoed and its
# body recorded byte for byte; every rule the stand-in checks is broken once
# by a request that is otherwise valid, and must get APNs's status and
# reason. Requests go through nghttp (curl where nghttp cannot do the job),
# to stand-ins on 127.0.0.1 that this script starts and stops. The faults a
# test can ask of the stand-in (--fail COUNT, hold and reset, --goaway-after,
# --initial-streams, --clock-file, SIGUSR1, --conn-record) are each proved
# too, partly with a small raw HTTP/2 client (h2raw below) that can do what
# well-behaved clients never do: open streams over the advertised limit,
# send after GOAWAY, reset a stream, ping a connection.
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
# BODY is a file to POST, or "-" to send a GET without a body. nghttp gives
# up after push_timeout.
push_timeout=20s
push() {
    local path=$1 body=$2 h
    local args=(-v -y -t "$push_timeout")

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

# records_hold FILE EXPR: true if the Python expression holds for rs, the
# list of every record in FILE (request or connection records); prints the
# records' gist when it does not.
records_hold() {
    "$py" - "$1" "$2" <<'EOF'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as fh:
    rs = [json.loads(line) for line in fh]
if eval("(" + sys.argv[2] + ")"):
    sys.exit(0)
for r in rs:
    print("   ", {k: v for k, v in r.items() if k not in ("headers", "body")},
          file=sys.stderr)
sys.exit(1)
EOF
}

# records_value FILE EXPR: prints the Python expression's value, with rs as
# in records_hold.
records_value() {
    "$py" - "$1" "$2" <<'EOF'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as fh:
    rs = [json.loads(line) for line in fh]
print(eval("(" + sys.argv[2] + ")"))
EOF
}

# wait_for SECS COMMAND...: retries the command every 0.1 s until it
# succeeds; after SECS seconds it runs it once more and returns its status.
wait_for() {
    local end=$((SECONDS + $1))

    shift
    until "$@" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            "$@"
            return
        fi
        sleep 0.1
    done
}

b64url() {
    base64 -w 0 | tr '+/' '-_' | tr -d '='
}

jwt() {
    "$py" "$src/tests/tools/jwt_for_test.py" "$@"
}

# h2raw PORT COMMAND...: one HTTP/2 connection driven frame by frame; prints
# each frame received as a line ("settings max_streams=N", "headers ID end",
# "rst ID code=N", "goaway last=ID code=N", "ping-ack", ...), "timeout" or
# "eof" when a read ends so, and "done". It answers SETTINGS with an ACK as
# soon as it reads them, and nothing else on its own. Commands:
#   req:ID:TOKEN[:JWT]   a valid push on stream ID (JWT: $H2RAW_JWT)
#   open:ID:TOKEN[:JWT]  its HEADERS only; data:ID sends the body later
#   rst:ID  ping  sleep:SECS  waitfile:PATH (until it exists)
#   wait:PREFIX:SECS     read until a frame line starts with PREFIX
#   read:SECS            read for SECS or until the connection ends
h2raw() {
    H2RAW_TOPIC=$topic "$py" "$tmp/h2raw.py" "$@"
}

cat >"$tmp/h2raw.py" <<'EOF'
import os
import socket
import ssl
import struct
import sys
import time

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1",
                                                 int(sys.argv[1]))))
inbuf = b""


def say(text):
    print(text, flush=True)


def frame(ftype, flags, sid, payload=b""):
    return (struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) +
            struct.pack(">I", sid) + payload)


def hpack_len(n):
    """An HPACK string length: 7-bit prefix, no Huffman coding."""
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + [n])


def headers(sid, token, jwt, end):
    fields = [(":method", "POST"), (":scheme", "https"),
              (":authority", "127.0.0.1"), (":path", "/3/device/" + token),
              ("authorization", "bearer " + jwt),
              ("apns-topic", os.environ["H2RAW_TOPIC"]),
              ("apns-push-type", "alert")]
    block = b"".join(b"\0" + hpack_len(len(n)) + n.encode() +
                     hpack_len(len(v)) + v.encode() for n, v in fields)
    return frame(1, 0x4 | (0x1 if end else 0), sid, block)


def body(sid):
    return frame(0, 0x1, sid, b'{"aps":{}}')


def describe(ftype, flags, sid, p):
    num = int.from_bytes
    if ftype == 0:
        return "data %d%s" % (sid, " end" if flags & 1 else "")
    if ftype == 1:
        return "headers %d%s" % (sid, " end" if flags & 1 else "")
    if ftype == 3:
        return "rst %d code=%d" % (sid, num(p, "big"))
    if ftype == 4:
        if flags & 1:
            return "settings-ack"
        vals = {num(p[i:i + 2], "big"): num(p[i + 2:i + 6], "big")
                for i in range(0, len(p), 6)}
        return "settings max_streams=%s" % vals.get(3, "-")
    if ftype == 6:
        return "ping-ack" if flags & 1 else "ping"
    if ftype == 7:
        return "goaway last=%d code=%d" % (num(p[:4], "big") & 0x7fffffff,
                                           num(p[4:8], "big"))
    if ftype == 8:
        return "window-update %d" % sid
    return "frame type=%d %d" % (ftype, sid)


def next_frame(deadline):
    """The next frame as a line of text, or "timeout" or "eof"."""
    global inbuf
    while True:
        if len(inbuf) >= 9:
            n = int.from_bytes(inbuf[:3], "big")
            if len(inbuf) >= 9 + n:
                ftype, flags = inbuf[3], inbuf[4]
                sid = int.from_bytes(inbuf[5:9], "big") & 0x7fffffff
                payload, inbuf = inbuf[9:9 + n], inbuf[9 + n:]
                if ftype == 4 and not flags & 1:
                    sock.sendall(frame(4, 1, 0))
                return describe(ftype, flags, sid, payload)
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return "timeout"
        except (OSError, ssl.SSLError):
            return "eof"
        if not data:
            return "eof"
        inbuf += data


def read_until(prefix, secs):
    deadline = time.monotonic() + secs
    while True:
        line = next_frame(deadline)
        say(line)
        if line in ("timeout", "eof") or (prefix and line.startswith(prefix)):
            return


sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
for cmd in sys.argv[2:]:
    op, _, arg = cmd.partition(":")
    args = arg.split(":")
    if op in ("req", "open"):
        jwt = args[2] if len(args) > 2 else os.environ["H2RAW_JWT"]
        out = headers(int(args[0]), args[1], jwt, False)
        if op == "req":
            out += body(int(args[0]))
        sock.sendall(out)
    elif op == "data":
        sock.sendall(body(int(args[0])))
    elif op == "rst":
        sock.sendall(frame(3, 0, int(args[0]), struct.pack(">I", 8)))
    elif op == "ping":
        sock.sendall(frame(6, 0, 0, b"12345678"))
    elif op == "wait":
        read_until(args[0], float(args[1]))
    elif op == "read":
        read_until(None, float(args[0]))
    elif op == "waitfile":
        for _ in range(400):
            if os.path.exists(arg):
                break
            time.sleep(0.05)
    elif op == "sleep":
        time.sleep(float(arg))
    else:
        sys.exit("h2raw: unknown command " + cmd)
say("done")
EOF

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
export H2RAW_JWT=$good_jwt
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

# ---- a fourth stand-in: --fail COUNT, hold, reset, --clock-file, JWT -------

count_token=$(printf 'c0ffee0123456789%.0s' 1 2 3 4)
chain_token=$(printf 'ca11ab1e01234567%.0s' 1 2 3 4)
hold_token=$(printf 'b01db01d01234567%.0s' 1 2 3 4)
reset_token=$(printf 'ae5e7ae501234567%.0s' 1 2 3 4)
start faults --conn-record "$tmp/faults.conns" --clock-file "$tmp/clock" \
    --fail "$count_token=503:ServiceUnavailable:2" \
    --fail "$chain_token=hold:1" --fail "$chain_token=429:TooManyRequests:1" \
    --fail "$hold_token=hold" --fail "$reset_token=reset" \
    --fail "$fail_token=410:Unregistered"
frec=$tmp/faults.jsonl
fconns=$tmp/faults.conns

push "/3/device/$count_token" "$tmp/body.json" "$auth" "apns-push-type: alert"
expect "a counted --fail token is validated first" 400 MissingTopic
push "/3/device/$count_token" "$tmp/body.json" "${std[@]}"
expect "STATUS:REASON:COUNT answers the first valid request" \
    503 ServiceUnavailable
push "/3/device/$count_token" "$tmp/body.json" "${std[@]}"
expect "... and the second, on another connection" 503 ServiceUnavailable
push "/3/device/$count_token" "$tmp/body.json" "${std[@]}"
expect "... and then the token is checked normally" 200 ""
check "the count runs over all connections" \
    records_hold "$frec" "len({r['conn'] for r in rs
        if r['token'] == '$count_token'}) == 4"

push_timeout=1s push "/3/device/$chain_token" "$tmp/body.json" "${std[@]}"
check "hold leaves a request unanswered" [ -z "$status" ]
check "the held request is recorded, status 0, when its client gives up" \
    wait_for 5 records_hold "$frec" "[(r['status'], r['held'], r['reset'],
        r['refused']) for r in rs if r['token'] == '$chain_token'] ==
        [(0, True, False, False)]"
check "the held request's connection was closed by the client" \
    wait_for 5 records_hold "$fconns" "rs[-1]['closed_by'] == 'client' and
        rs[-1]['requests'] == 1"
push "/3/device/$chain_token" "$tmp/body.json" "${std[@]}"
expect "rules for one token apply in order: hold:1, then 429:...:1" \
    429 TooManyRequests
push "/3/device/$chain_token" "$tmp/body.json" "${std[@]}"
expect "... and then the token is checked normally" 200 ""

out=$(h2raw "$port" "req:1:$hold_token" read:0.5 rst:1 "req:3:$hold_token" \
    read:0.5 "req:5:$token" "wait:headers 5:5")
check "a held stream stays open, unanswered, until the client resets it" \
    [ "$(grep -c '^headers [13]' <<<"$out")" = 0 ]
check "other streams on its connection are answered" \
    grep -qx 'headers 5 end' <<<"$out"
hold_conn=$(records_value "$frec" "[r['conn'] for r in rs
    if r['token'] == '$hold_token'][0]")
check "the held streams are recorded, the reset one at once" \
    wait_for 5 records_hold "$frec" "[(r['stream'], r['status'], r['held'])
        for r in rs if r['conn'] == $hold_conn] == [(1, 0, True),
        (5, 200, False), (3, 0, True)]"
check "the connection record counts the client's RST_STREAM" \
    wait_for 5 records_hold "$fconns" "[(r['rst_stream_received'],
        r['requests'], r['closed_by']) for r in rs
        if r['conn'] == $hold_conn] == [(1, 3, 'client')]"

push "/3/device/$reset_token" "$tmp/body.json" "${std[@]}"
check "reset answers with RST_STREAM INTERNAL_ERROR, no status" \
    [ -z "$status" ] && grep -A1 "recv RST_STREAM frame" <<<"$out" |
    grep -q "error_code=INTERNAL_ERROR(0x02)"
check "the reset request is recorded, status 0" \
    records_hold "$frec" "[(r['status'], r['held'], r['reset'],
        r['refused']) for r in rs if r['token'] == '$reset_token'] ==
        [(0, False, True, False)]"

# --clock-file moves the stand-in's clock: JWT ages and 410 timestamps.
echo 7200 >"$tmp/clock"
push "/3/device/$fail_token" "$tmp/body.json" "$auth" \
    "apns-topic: $topic" "apns-push-type: alert"
expect "two hours on, the test's token has expired" 403 ExpiredProviderToken
push "/3/device/$fail_token" "$tmp/body.json" \
    "authorization: bearer $(jwt "$p8" "$key_id" "$team_id" $((now + 7200)))" \
    "apns-topic: $topic" "apns-push-type: alert"
expect "a token minted two hours on is good" 410 Unregistered
stamp=$(grep -o '"timestamp":[0-9]*' <<<"$out" | cut -d: -f2)
check "the 410 timestamp is two hours on too" \
    [ "${stamp:-0}" -ge $(((now + 7200) * 1000)) ] && \
    [ "${stamp:-0}" -le $((($(date +%s) + 7201) * 1000)) ]
echo 3500 >"$tmp/clock"
push "$dev" "$tmp/body.json" "${std[@]}"
expect "58 minutes on, the test's token is still good" 200 ""
echo 7200 >"$tmp/clock"
push "$dev" "$tmp/body.json" "${std[@]}"
expect "a clock file rewritten at once, same length, is read again" \
    403 ExpiredProviderToken
: >"$tmp/clock"
push "$dev" "$tmp/body.json" "${std[@]}"
expect "an empty clock file means the real time" 200 ""
echo 7200 >"$tmp/clock"
rm "$tmp/clock"
push "$dev" "$tmp/body.json" "${std[@]}"
expect "so does a missing one" 200 ""

# One connection, four provider tokens: A, B 18 minutes after A, C 21 minutes
# after A, then A again.
jwt_a=$(jwt "$p8" "$key_id" "$team_id" $((now - 1260)))
jwt_b=$(jwt "$p8" "$key_id" "$team_id" $((now - 180)))
out=$(h2raw "$port" "req:1:$token:$jwt_a" "wait:headers 1:5" \
    "req:3:$token:$jwt_b" "wait:headers 3:5" \
    "req:5:$token:$good_jwt" "wait:headers 5:5" \
    "req:7:$token:$jwt_a" "wait:headers 7:5" \
    "req:9:$token:$good_jwt" "wait:headers 9:5")
jwt_conn=$(records_value "$frec" "rs[-1]['conn']")
check "a new token under 20 minutes after the last is refused, one over it \
not; the connection keeps the token it accepted" \
    records_hold "$frec" "[(r['stream'], r['status'], r['reason']) for r in rs
        if r['conn'] == $jwt_conn] == [(1, 200, None),
        (3, 429, 'TooManyProviderTokenUpdates'), (5, 200, None),
        (7, 429, 'TooManyProviderTokenUpdates'), (9, 200, None)]"
out=$(h2raw "$port" "req:1:$token:$jwt_b" "wait:headers 1:5")
check "a new connection may start with any valid token" \
    records_hold "$frec" "rs[-1]['conn'] != $jwt_conn and
        rs[-1]['status'] == 200"

# ---- a fifth stand-in: --goaway-after ---------------------------------------

start goaway --goaway-after 2 --delay-ms 300 --conn-record "$tmp/goaway.conns"
grec=$tmp/goaway.jsonl

# Stream 5 opens before request 2 (stream 3) completes, so it has begun when
# GOAWAY goes out; stream 7 opens after the client has the GOAWAY.
out=$(h2raw "$port" "open:1:$token" "open:3:$token" "open:5:$fail_token" \
    data:1 data:3 wait:goaway:5 "req:7:$token" read:5)
check "GOAWAY NO_ERROR names the second complete request's stream" \
    grep -qx 'goaway last=3 code=0' <<<"$out"
check "the streams up to it are answered, then the connection closed" \
    [ "$(grep -E '^(headers|eof)' <<<"$out" | tr '\n' ' ')" = \
    "headers 1 end headers 3 end eof " ]
check "streams above it are recorded as refused, status 0" \
    records_hold "$grec" "sorted((r['stream'], r['status'], r['refused'])
        for r in rs) == [(1, 200, False), (3, 200, False), (5, 0, True),
        (7, 0, True)]"
check "a refused stream that had begun is recorded with its request" \
    records_hold "$grec" "[r['token'] for r in rs if r['stream'] == 5] ==
        ['$fail_token']"
check "one the stand-in never read shows its stream id only" \
    records_hold "$grec" "[(r['token'], r['headers']) for r in rs
        if r['stream'] == 7] == [('', {})]"
check "the connection record says GOAWAY and who closed it" \
    wait_for 5 records_hold "$tmp/goaway.conns" "[(r['goaway_sent'],
        r['requests'], r['closed_by'], r['max_open_streams']) for r in rs] ==
        [(1, 4, 'server', 3)]"

# nghttp fetches a URI once however often it is named: three tokens.
out=$(nghttp -v -y -t 20s -d "$tmp/body.json" -H "$auth" \
    -H "apns-topic: $topic" -H "apns-push-type: alert" \
    "https://127.0.0.1:$port$dev" \
    "https://127.0.0.1:$port/3/device/$fail_token" \
    "https://127.0.0.1:$port/3/device/$count_token" 2>&1) || true
check "a new connection counts from 0 again: nghttp gets two answers" \
    [ "$(grep -c ":status: 200" <<<"$out")" = 2 ] && \
    grep -A1 "recv GOAWAY frame" <<<"$out" | grep -q "error_code=NO_ERROR"
check "... and the third of its requests is refused" \
    records_hold "$grec" "sorted(r['status'] for r in rs if r['conn'] == 2)
        == [0, 200, 200]"

# ---- a sixth stand-in: --initial-streams ------------------------------------

start limits --initial-streams 1 --max-streams 50 --delay-ms 300 \
    --conn-record "$tmp/limits.conns"
lrec=$tmp/limits.jsonl
lconns=$tmp/limits.conns

push "$dev" "$tmp/body.json" "${std[@]}"
expect "a push on a connection limited to one stream is accepted" 200 ""
check "its connection starts with SETTINGS_MAX_CONCURRENT_STREAMS 1" \
    [ "$(grep -m1 -A3 "recv SETTINGS frame <length=[1-9]" <<<"$out" |
        grep -o 'MAX_CONCURRENT_STREAMS(0x03):[0-9]*')" = \
        "MAX_CONCURRENT_STREAMS(0x03):1" ]
check "after the 200 the stand-in advertises --max-streams" \
    grep -q 'MAX_CONCURRENT_STREAMS(0x03):50\]' <<<"$out"
check "the record has the streams open and the limit" \
    records_hold "$lrec" "[(r['open_streams'], r['stream_limit'])
        for r in rs] == [(1, 1)]"

out=$(h2raw "$port" wait:settings:5 "req:1:$token" "wait:headers 1:5" \
    "req:3:$token" "req:5:$token" "req:7:$token" "wait:headers 7:5")
check "a client that waits for the raise sees it" \
    grep -qx 'settings max_streams=50' <<<"$out"
check "its records count the streams open as each began" \
    records_hold "$lrec" "[(r['stream'], r['open_streams'], r['stream_limit'])
        for r in rs if r['conn'] == 2] == [(1, 1, 1), (3, 1, 50), (5, 2, 50),
        (7, 3, 50)]"
check "and its connection has no limit violation" \
    wait_for 5 records_hold "$lconns" "[(r['limit_violations'],
        r['max_open_streams']) for r in rs if r['conn'] == 2] == [(0, 3)]"

# Before the client acknowledges the SETTINGS, nghttp2 refuses a stream over
# the limit itself (RST_STREAM REFUSED_STREAM); after, it ends the connection
# (GOAWAY PROTOCOL_ERROR). Either way the stand-in never sees the request,
# and must notice it all the same.
out=$(h2raw "$port" "open:1:$token" "req:3:$token" "wait:rst 3:5")
check "a second stream before the SETTINGS ACK is refused" \
    grep -qx 'rst 3 code=7' <<<"$out"
out=$(h2raw "$port" wait:settings:5 "open:1:$token" "req:3:$token" \
    wait:eof:5)
check "a second stream after it costs the connection" \
    grep -qx 'goaway last=1 code=1' <<<"$out"
check "both are counted as violations" \
    wait_for 5 records_hold "$lconns" "[(r['conn'], r['limit_violations'],
        r['max_open_streams'], r['goaway_sent'], r['closed_by']) for r in rs
        if r['conn'] > 2] == [(3, 1, 2, 0, 'client'), (4, 1, 2, 1, 'server')]"
check "and logged" \
    [ "$(grep -c ': 2 streams open, over the 1 advertised' \
        "$tmp/limits.log")" = 2 ]

# h2load -m 4 may send its four requests before our SETTINGS arrive, or
# after; whichever it did, every request nghttp2 refused must show as a
# violation on the stand-in's side.
out=$(h2load -n 4 -c 1 -m 4 -d "$tmp/body.json" -H "$auth" \
    -H "apns-topic: $topic" -H "apns-push-type: alert" \
    "https://127.0.0.1:$port$dev" 2>&1) || true
errored=$(sed -n 's/^requests: .* \([0-9]*\) errored.*/\1/p' <<<"$out")
check "the stand-in counts exactly the streams h2load had refused" \
    wait_for 5 records_hold "$lconns" "[r['limit_violations'] for r in rs
        if r['conn'] == 5] == [${errored:-999}]"

# ---- a seventh stand-in: SIGUSR1 --------------------------------------------

start quiet --conn-record "$tmp/quiet.conns"
h2raw "$port" ping wait:ping-ack:5 "req:1:$token" "wait:headers 1:5" \
    "waitfile:$tmp/quiet.go" ping "req:3:$token" read:1.5 \
    >"$tmp/quiet.out" 2>&1 &
pids+=($!)
raw_pid=$!
wait_for 10 grep -qx 'headers 1 end' "$tmp/quiet.out" || true
kill -USR1 "${pid_of[quiet]}"
wait_for 5 grep -q "conn 1 silenced" "$tmp/quiet.log" || true
touch "$tmp/quiet.go"
wait "$raw_pid" || true
out=$(cat "$tmp/quiet.out")
check "before SIGUSR1 a connection acks PING and answers" \
    [ "$(grep -E '^(ping-ack|headers)' <<<"$out" | tr '\n' ' ')" = \
    "ping-ack headers 1 end " ]
check "after it, neither: the connection stays open, silent" \
    [ "$(sed -n '/^headers 1 end/,$p' <<<"$out" | tr '\n' ' ')" = \
    "headers 1 end timeout done " ]
check "one line is logged per silenced connection" \
    [ "$(grep -c silenced "$tmp/quiet.log")" = 1 ]
push "$dev" "$tmp/body.json" "${std[@]}"
expect "a connection made after SIGUSR1 is answered" 200 ""

# ---- shutdown ---------------------------------------------------------------

# A stand-in built with sanitizers exits non-zero on a leak or error found
# at exit, so each one's exit status is checked, not just the main one's.
for name in main resets slow faults goaway limits quiet; do
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

check "a connection still open at exit is recorded, silenced" \
    records_hold "$tmp/quiet.conns" "[(r['conn'], r['silenced'], r['closed_by'],
        r['requests'], r['pings_received']) for r in rs] == [(2, 0, 'client', 1,
        0), (1, 1, 'exit', 1, 1)]"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
