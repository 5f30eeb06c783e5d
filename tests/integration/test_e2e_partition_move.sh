#!/usr/bin/env bash
# State is soft, Kafka is the source of truth: a cancel handled by worker A,
# then its partition moved to worker B before the invite came, still stops
# the invite on B, which reads back the cancel partition's recent past on
# assignment (without pushing those cancels again).
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns
TOKEN=$(printf '%064x' 77)
ev() { # ev TYPE MSGID: one "key|json" line for the call "moved-call"
    $PY - "$@" "$TOKEN" <<'PYEOF'
import json, sys, time
typ, msgid, token = sys.argv[1:4]
d = {"type": typ, "call_id": "moved-call", "_j_msgid": int(msgid),
     "device_tokens": [token], "created_at": int(time.time() * 1000)}
print("moved-call|%s" % json.dumps(d))
PYEOF
}

start_worker a
wait_assigned a || { fail "worker A got no partitions"; finish; }
ev cancel 8001 >"$T/cancel"
produce_lines call.cancel "$T/cancel"
wait_until 20 log_ge a '"outcome":"pushed"' 1 || fail "A did not push the cancel"
kill -TERM "$a_PID"
wait "$a_PID" || true

start_worker b
wait_assigned b || { fail "worker B got no partitions"; finish; }
ev invite 8000 >"$T/invite"
produce_lines call.invite "$T/invite"
wait_until 20 log_ge b '"event settled"' 1 || fail "B settled nothing"

check "B suppressed the invite of the call A saw cancelled" \
    grep -q '"_j_msgid":8000,"type":"invite","outcome":"suppressed","cause":"cancelled"' "$T/b.log"
check "the invite never reached APNs" test "$(accepted_count)" -eq 1
check "B did not push the cancel again" test "$(log_count b '"_j_msgid":8001')" -eq 0
finish
