#!/usr/bin/env bash
# State is soft, Kafka is the source of truth: a cancel handled by worker A,
# then its partition moved to worker B before the invite came, still stops
# the invite on B, which reads back the cancels' recent past on assignment
# (without pushing those cancels again). Both with separate invite and
# cancel topics and with one topic for both.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka --topic call.invite:4 --topic call.cancel:4 --topic call.both:4 \
    --topic push.feedback:1 --topic call.dlq:1
start_apns
TOKEN=$(printf '%064x' 77)
ev() { # ev TYPE MSGID CALL: one "key|json" line
    $PY - "$@" "$TOKEN" <<'PYEOF'
import json, sys, time
typ, msgid, call, token = sys.argv[1:5]
d = {"type": typ, "call_id": call, "_j_msgid": int(msgid),
     "device_tokens": [token], "created_at": int(time.time() * 1000)}
print("%s|%s" % (call, json.dumps(d)))
PYEOF
}

# move MODE INVITE_TOPIC CANCEL_TOPIC MSGID: A handles a cancel and stops;
# B gets the invite.
move() {
    local mode=$1 itopic=$2 ctopic=$3 id=$4 flags
    flags="--group move-$mode --invite-topic $itopic --cancel-topic $ctopic"

    start_worker "a$mode" $flags
    wait_assigned "a$mode" || { fail "$mode: A got no partitions"; return; }
    ev cancel "$((id + 1))" "moved-$mode" >"$T/cancel"
    produce_lines "$ctopic" "$T/cancel"
    wait_until 20 log_ge "a$mode" '"outcome":"pushed"' 1 ||
        fail "$mode: A did not push the cancel"
    local pid_var="a${mode}_PID"
    kill -TERM "${!pid_var}"
    wait "${!pid_var}" || true

    start_worker "b$mode" $flags
    wait_assigned "b$mode" || { fail "$mode: B got no partitions"; return; }
    ev invite "$id" "moved-$mode" >"$T/invite"
    produce_lines "$itopic" "$T/invite"
    wait_until 20 log_ge "b$mode" "\"_j_msgid\":$id," 1 ||
        fail "$mode: B settled nothing"

    check "$mode: B suppressed the invite of the call A saw cancelled" \
        grep -q "\"_j_msgid\":$id,\"type\":\"invite\",\"outcome\":\"suppressed\",\"cause\":\"cancelled\"" \
        "$T/b$mode.log"
    check "$mode: B did not push the cancel again" \
        test "$(log_count "b$mode" "\"_j_msgid\":$((id + 1)),")" -eq 0
}

move two call.invite call.cancel 8000
move one call.both call.both 8100
check "no invite reached APNs" test "$(accepted_count)" -eq 2
finish
