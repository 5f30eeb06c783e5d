#!/usr/bin/env bash
# Graceful shutdown: SIGTERM in the middle of a stream lets what is in
# flight settle, commits, and exits 0 within the budget, so a restarted
# worker neither loses nor repeats an event; with the brokers down it still
# exits within the budget; a second SIGTERM exits at once.
set -eu
. "$(dirname "$0")/lib.sh"

EX=$CALLPUSH_SRC/schemas/examples
start_kafka
start_apns --delay-ms 1500   # every push stays in flight for 1.5 s

events() { # events FIRST COUNT: invites, one "key|json" line each
    $PY - "$EX/valid/invite-call-flow.json" "$1" "$2" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
first, count = int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    d["created_at"] = int(time.time() * 1000)
    d["ring_timeout_s"] = 120
    d["_j_msgid"] = i
    d["call_id"] = "shutdown-%d" % i
    d["device_tokens"] = ["%064x" % i]
    print("%s|%s" % (d["call_id"], json.dumps(d, separators=(",", ":"))))
PYEOF
}

# stop_within NAME SECONDS: SIGTERM, then wait at most SECONDS for the exit;
# sets RC to the exit status (or 124 when it did not exit in time).
stop_within() {
    local pid_var="${1}_PID" end
    local pid=${!pid_var}

    kill -TERM "$pid"
    end=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        RC=124
        kill -KILL "$pid"
        return
    fi
    RC=0
    wait "$pid" || RC=$?
}

# 1. SIGTERM mid-stream, then a restart.
start_worker w1 --shutdown-budget-s 10 --max-inflight 50
wait_assigned w1 || { fail "worker got no partitions"; finish; }
events 100 300 >"$T/events"
produce_lines call.invite "$T/events"
wait_until 30 log_ge w1 '"event settled"' 20 || fail "nothing settled before the stop"
stop_within w1 12
check "SIGTERM mid-stream: exit 0 within the budget (rc $RC)" test "$RC" -eq 0
check "the stop was logged with what stayed in flight" grep -q '"msg":"stopped"' "$T/w1.log"

start_worker w2
wait_assigned w2 || fail "restarted worker got no partitions"
wait_until 90 accepted_ge 300 || true
$PY - "$T/apns.jsonl" <<'PYEOF' && ok "after the restart: every event pushed exactly once" || fail "events lost or pushed twice (see above)"
import collections, json, sys
n = collections.Counter(json.loads(json.loads(l)["body"])["_j_msgid"]
                        for l in open(sys.argv[1]) if json.loads(l)["status"] == 200)
lost = [i for i in range(100, 400) if n[i] == 0]
twice = [i for i in range(100, 400) if n[i] > 1]
print("  lost %d, pushed twice %d" % (len(lost), len(twice)))
sys.exit(1 if lost or twice else 0)
PYEOF
stop_within w2 12

# 2. Brokers down at shutdown: still within the budget.
start_worker w3 --shutdown-budget-s 6
wait_assigned w3 || fail "third worker got no partitions"
kill -USR1 "$KAFKA_PID"    # the mock cluster takes its brokers down
sleep 1
stop_within w3 9
check "SIGTERM with the brokers down: exits within the budget (rc $RC)" test "$RC" -ne 124
kill -USR2 "$KAFKA_PID"

# 3. A second SIGTERM exits at once, even with pushes held for a while.
start_worker w4 --shutdown-budget-s 60
wait_assigned w4 || fail "fourth worker got no partitions"
events 1000 5 >"$T/events2"
produce_lines call.invite "$T/events2"
sleep 0.5
kill -TERM "$w4_PID"
sleep 0.2
stop_within w4 5
check "a second SIGTERM exits at once (rc $RC)" test "$RC" -ne 124
check "and says so" grep -q 'second signal' "$T/w4.log"
finish
