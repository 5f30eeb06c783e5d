#!/usr/bin/env bash
# Production and sandbox side by side: events name their environment, and
# each push goes to that environment's APNs host over connections of its
# own (here two stand-ins, one per host).
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns
PROD_URL=$APNS_URL
: >"$T/sandbox.jsonl"
"$CALLPUSH_BUILD/apns-standin" --cert "$T/certs/server.crt" \
    --key "$T/certs/server.key" --auth-key "$T/certs/AuthKey.pub.pem" \
    --key-id "$KEY_ID" --team-id "$TEAM_ID" --topic "$BUNDLE" \
    --record "$T/sandbox.jsonl" --port 0 --port-file "$T/sandbox.port" \
    2>"$T/sandbox.log" &
PIDS+=($!)
wait_until 20 test -s "$T/sandbox.port" || { fail "no sandbox stand-in"; finish; }
SANDBOX_URL="https://127.0.0.1:$(cat "$T/sandbox.port")"

start_worker worker --apns-sandbox-url "$SANDBOX_URL"
wait_assigned worker || { fail "worker got no partitions"; finish; }

$PY - >"$T/events" <<'PYEOF'
import json, time
now = int(time.time() * 1000)
for i in range(20):
    d = {"type": "invite", "call_id": "hosts-%d" % i, "_j_msgid": 7800000 + i,
         "device_tokens": ["%064x" % (7800000 + i)], "created_at": now}
    if i % 2:
        d["environment"] = "sandbox"
    print("%s|%s" % (d["call_id"], json.dumps(d)))
PYEOF
produce_lines call.invite "$T/events"
wait_until 20 log_ge worker '"event settled"' 20 || fail "not every event settled"

# only_parity FILE PARITY: FILE holds the 10 tokens of that parity, all 200.
only_parity() {
    $PY - "$1" "$2" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
want = {"%064x" % (7800000 + i) for i in range(20) if i % 2 == int(sys.argv[2])}
got = {r["token"] for r in recs if r["status"] == 200}
if got != want:
    print("got %d tokens, %d expected, %d wrong" % (len(got), len(want), len(got - want)))
sys.exit(0 if got == want else 1)
PYEOF
}
check "production pushes went to the production host only" only_parity "$T/apns.jsonl" 0
check "sandbox pushes went to the sandbox host only" only_parity "$T/sandbox.jsonl" 1
check "the worker opened connections to both hosts" eval \
    "grep '\"apns connection open\"' '$T/worker.log' | grep -q '${PROD_URL#https://}' &&
     grep '\"apns connection open\"' '$T/worker.log' | grep -q '${SANDBOX_URL#https://}'"
finish
