# Shared by the integration tests and the demo: starts the Kafka mock
# cluster, the APNs stand-in and workers on 127.0.0.1 in a private temp
# directory, and stops them all when the calling script exits.
#
# Source it from a bash script run with `set -eu`. Binaries come from
# $CALLPUSH_BUILD (default: build), sources from $CALLPUSH_SRC.

CALLPUSH_SRC=${CALLPUSH_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CALLPUSH_BUILD=${CALLPUSH_BUILD:-$CALLPUSH_SRC/build}
PY=/usr/bin/python3

KEY_ID=ABC123DEFG
TEAM_ID=DEF123GHIJ
BUNDLE=com.example.callpush

# Every socket a test opens is on 127.0.0.1: a proxy from the calling
# environment would send the worker's APNs connections elsewhere.
unset HTTPS_PROXY https_proxy NO_PROXY no_proxy

T=$(mktemp -d "${TMPDIR:-/tmp}/callpush-test.XXXXXX")
PIDS=()
PASSED=0
FAILED=0

cleanup() {
    local rc=$?

    local i

    # Newest first: workers stop while Kafka and APNs are still there.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
        echo "--- logs kept in $T" >&2
        for f in "$T"/*.log; do
            [ -f "$f" ] || continue
            echo "--- tail of $f" >&2
            tail -n 20 "$f" >&2
        done
    elif [ -z "${KEEP_TMP:-}" ]; then
        rm -rf "$T"
    fi
}
trap cleanup EXIT

ok() {
    PASSED=$((PASSED + 1))
    echo "ok: $*"
}

fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL: $*"
}

# check DESCRIPTION COMMAND...: runs the command, counts the result.
check() {
    local what=$1
    shift
    if "$@"; then
        ok "$what"
    else
        fail "$what"
    fi
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# wait_until SECONDS COMMAND...: polls the command every 0.1 s.
wait_until() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))

    while ! "$@" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            return 1
        fi
        sleep 0.1
    done
}

start_kafka() {
    "$CALLPUSH_BUILD/mock-kafka" --bootstrap-file "$T/bootstrap" "$@" \
        >"$T/kafka.log" 2>&1 &
    PIDS+=($!)
    KAFKA_PID=$!
    wait_until 20 test -s "$T/bootstrap" || {
        echo "mock Kafka did not start" >&2
        return 1
    }
    BROKERS=$(cat "$T/bootstrap")
}

start_apns() {
    bash "$CALLPUSH_SRC/tests/tools/mkcerts.sh" "$T/certs" >/dev/null
    : >"$T/apns.jsonl"
    "$CALLPUSH_BUILD/apns-standin" --cert "$T/certs/server.crt" \
        --key "$T/certs/server.key" --auth-key "$T/certs/AuthKey.pub.pem" \
        --key-id "$KEY_ID" --team-id "$TEAM_ID" --topic "$BUNDLE" \
        --record "$T/apns.jsonl" --port 0 --port-file "$T/apns.port" "$@" \
        2>"$T/apns.log" &
    PIDS+=($!)
    APNS_PID=$!
    wait_until 20 test -s "$T/apns.port" || {
        echo "APNs stand-in did not start" >&2
        return 1
    }
    APNS_URL="https://127.0.0.1:$(cat "$T/apns.port")"
}

# start_proxy [FLAGS...]: the CONNECT proxy of tests/tools, its requests
# logged in $T/proxy.jsonl; sets PROXY_URL.
start_proxy() {
    : >"$T/proxy.jsonl"
    rm -f "$T/proxy.port"
    $PY "$CALLPUSH_SRC/tests/tools/connect_proxy.py" --port-file \
        "$T/proxy.port" --log "$T/proxy.jsonl" "$@" 2>"$T/proxy.log" &
    PIDS+=($!)
    PROXY_PID=$!
    wait_until 20 test -s "$T/proxy.port" || {
        echo "proxy did not start" >&2
        return 1
    }
    PROXY_URL="http://127.0.0.1:$(cat "$T/proxy.port")"
}

# The environment a worker runs with against the stand-ins, less how it
# authenticates to APNs.
worker_base_env() {
    echo CALLPUSH_BROKERS="$BROKERS" \
        CALLPUSH_APNS_URL="$APNS_URL" \
        CALLPUSH_APNS_CA_FILE="$T/certs/server.crt" \
        CALLPUSH_APNS_TOPIC="$BUNDLE" \
        CALLPUSH_KAFKA_SESSION_TIMEOUT_MS=6000 \
        CALLPUSH_KAFKA_HEARTBEAT_INTERVAL_MS=500 \
        CALLPUSH_KAFKA_FETCH_WAIT_MAX_MS=10 \
        CALLPUSH_HTTP_ADDR=127.0.0.1:0
}

# The provider-token settings (the default way to authenticate).
worker_token_env() {
    echo CALLPUSH_APNS_KEY_FILE="$T/certs/AuthKey.p8" \
        CALLPUSH_APNS_KEY_ID="$KEY_ID" \
        CALLPUSH_APNS_TEAM_ID="$TEAM_ID"
}

# The environment a worker runs with against the stand-ins.
worker_env() {
    echo $(worker_base_env) $(worker_token_env)
}

# start_worker NAME [FLAGS...]: runs a worker, its log in $T/NAME.log.
start_worker() {
    local name=$1
    shift
    env $(worker_env) "$CALLPUSH_BUILD/callpush" "$@" >"$T/$name.log" \
        2>"$T/$name.err" &
    PIDS+=($!)
    eval "${name//-/_}_PID=$!"
}

# wait_assigned NAME: until the worker has partitions.
wait_assigned() {
    wait_until 30 grep -q '"partitions assigned"' "$T/$1.log"
}

# admin_port NAME: the port the worker's health and metrics listener took.
admin_port() {
    sed -n 's/.*"msg":"serving health and metrics".*port \([0-9]*\)".*/\1/p' \
        "$T/$1.log" | head -n 1
}

# has_admin_port NAME: true once the worker logged its listener's port.
has_admin_port() {
    [ -n "$(admin_port "$1")" ]
}

# http_get NAME PATH: status line and body of GET PATH on NAME's listener.
http_get() {
    curl -s -o "$T/http.body" -w '%{http_code}' \
        "http://127.0.0.1:$(admin_port "$1")$2" || true
}

# fresh FILE: the event in FILE on one line, created now.
fresh() {
    $PY - "$1" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
d["created_at"] = int(time.time() * 1000)
print(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
PYEOF
}

# invite_lines PREFIX FIRST COUNT: COUNT invites as "key|json" lines, with
# call ids PREFIX-0, PREFIX-1..., msgids from FIRST, one device token each
# (the msgid in hex), created now and ringing for 600 s.
invite_lines() {
    $PY - "$@" <<'PYEOF'
import json, sys, time
prefix, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = int(time.time() * 1000)
for i in range(count):
    d = {"type": "invite", "call_id": "%s-%d" % (prefix, i),
         "_j_msgid": first + i, "device_tokens": ["%064x" % (first + i)],
         "created_at": now, "ring_timeout_s": 600}
    print("%s|%s" % (d["call_id"], json.dumps(d)))
PYEOF
}

# cancel_line CALL MSGID: one cancel as a "key|json" line, for call CALL,
# to the device token that is MSGID in hex, created now.
cancel_line() {
    $PY - "$@" <<'PYEOF'
import json, sys, time
call, msgid = sys.argv[1], int(sys.argv[2])
d = {"type": "cancel", "call_id": call, "_j_msgid": msgid,
     "device_tokens": ["%064x" % msgid], "created_at": int(time.time() * 1000)}
print("%s|%s" % (call, json.dumps(d)))
PYEOF
}

# produce TOPIC KEY FILE: one Kafka message whose value is FILE's bytes.
produce() {
    kcat -b "$BROKERS" -P -t "$1" -k "$2" "$3"
}

# produce_lines TOPIC FILE: one message per line, "key|value".
produce_lines() {
    kcat -b "$BROKERS" -P -t "$1" -K '|' -l "$2"
}

# accepted_ge N: true once the stand-in has answered N requests with 200.
# (A function, because wait_until must re-count on every poll.)
accepted_ge() {
    [ "$(accepted_count)" -ge "$1" ]
}

# log_ge NAME PATTERN N: true once NAME's log has N lines with PATTERN.
log_ge() {
    [ "$(log_count "$1" "$2")" -ge "$3" ]
}

# lines_ge FILE N: true once FILE has N lines.
lines_ge() {
    [ "$(wc -l <"$1")" -ge "$2" ]
}

# topic_ge TOPIC N: true once TOPIC holds N messages.
topic_ge() {
    [ "$(consume_all "$1" | wc -l)" -ge "$2" ]
}

# accepted_count: requests the stand-in answered with 200.
accepted_count() {
    $PY -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["status"] == 200))
' "$T/apns.jsonl"
}

# log_count NAME PATTERN: lines of a worker log matching a fixed string.
log_count() {
    grep -cF -- "$2" "$T/$1.log" || true
}

# consume_all TOPIC: every message of the topic, as kcat JSON envelopes.
consume_all() {
    kcat -b "$BROKERS" -C -t "$1" -o beginning -e -q -J 2>/dev/null
}
