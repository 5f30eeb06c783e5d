#!/usr/bin/env bash
# The health and metrics listener: /readyz is false until partitions are
# assigned, /healthz follows the loop, and /metrics parses as Prometheus
# text and counts what the APNs stand-in and Kafka actually received; the
# periodic summary line carries the same counters.
set -eu
. "$(dirname "$0")/lib.sh"

GONE=$(printf '%060x%04x' 0 1)
start_kafka
start_apns --fail "$GONE=410:Unregistered"
start_worker worker --summary-interval-s 1
wait_until 20 has_admin_port worker || { fail "no listener port logged"; finish; }

code=$(http_get worker /readyz)
check "/readyz is 503 before assignment (got $code)" test "$code" = 503
check "/readyz says why" grep -q 'no partitions assigned' "$T/http.body"
wait_assigned worker || fail "worker got no partitions"
ready() { [ "$(http_get worker /readyz)" = 200 ]; }
wait_until 10 ready || true
check "/readyz is 200 once assigned" test "$(http_get worker /readyz)" = 200
check "/healthz is 200" test "$(http_get worker /healthz)" = 200
check "unknown paths are 404" test "$(http_get worker /nope)" = 404

# Traffic: four pushes accepted, one dead token, two dead letters.
$PY - "$GONE" >"$T/events" <<'PYEOF'
import json, sys, time
now = int(time.time() * 1000)
def ev(i, typ, token):
    d = {"type": typ, "call_id": "m-%d" % i, "_j_msgid": 900 + i,
         "device_tokens": [token], "created_at": now}
    return "m-%d|%s" % (i, json.dumps(d))
for i in range(3):
    print(ev(i, "invite", "%064x" % (i + 10)))
print(ev(3, "cancel", "%064x" % 10))
print(ev(4, "invite", sys.argv[1]))
print("bad-1|not json")
print('bad-2|{"type":"invite"}')
PYEOF
produce_lines call.invite "$T/events"
wait_until 30 log_ge worker '"event settled"' 7 || fail "not every event settled"
wait_until 10 topic_ge call.dlq 2 || true
wait_until 10 topic_ge push.feedback 1 || true
sleep 0.5
code=$(http_get worker /metrics)
cp "$T/http.body" "$T/metrics.txt"
check "/metrics is 200" test "$code" = 200

$PY - "$T" <<'PYEOF' && ok "/metrics parses and matches the stand-in and Kafka" || fail "/metrics wrong (see above)"
import collections, json, subprocess, sys
from prometheus_client.parser import text_string_to_metric_families
t = sys.argv[1]
samples = collections.defaultdict(float)
names = set()
for fam in text_string_to_metric_families(open(t + "/metrics.txt").read()):
    names.add(fam.name)
    for s in fam.samples:
        samples[(s.name, tuple(sorted(s.labels.items())))] += s.value
def total(name, **labels):
    return sum(v for (n, l), v in samples.items() if n == name and
               all(dict(l).get(k) == str(w) for k, w in labels.items()))
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
by_status = collections.Counter(r["status"] for r in recs)
errors = []
def expect(what, got, want):
    if got != want:
        errors.append("%s: metrics say %r, want %r" % (what, got, want))
expect("pushes 200", total("callpush_pushes_total", status=200), by_status[200])
expect("pushes 410", total("callpush_pushes_total", status=410), by_status[410])
expect("invites consumed", total("callpush_events_consumed_total", type="invite"), 4)
expect("cancels consumed", total("callpush_events_consumed_total", type="cancel"), 1)
expect("invalid consumed", total("callpush_events_consumed_total", type="invalid"), 2)
expect("dead letters", total("callpush_dead_letters_total"), 2)
expect("feedback", total("callpush_feedback_messages_total"), 1)
expect("invite latency count", total("callpush_push_latency_seconds_count", type="invite"), 3)
expect("cancel latency count", total("callpush_push_latency_seconds_count", type="cancel"), 1)
expect("assigned partitions", total("callpush_assigned_partitions"), 8)
if total("callpush_apns_connections") < 1:
    errors.append("no APNs connection counted")
text = open(t + "/metrics.txt").read()
for secret in ("eyJ", "%064x" % 10, "BEGIN"):
    if secret in text:
        errors.append("metrics expose %r" % secret)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
summary_done() {
    grep '"msg":"summary"' "$T/worker.log" | grep -q '"pushed":4,'
}
check "a summary line carries the counters and the lag" \
    wait_until 10 summary_done
check "the summary line names every counter" $PY -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if "\"summary\"" in l]
want = {"invites", "cancels", "invalid", "pushed", "suppressed_late",
        "suppressed_expired", "retries", "dead_letters", "feedback",
        "in_flight", "apns_connections", "assigned_partitions", "consumer_lag",
        "apns_connects", "apns_connect_fails", "apns_goaways", "apns_resent",
        "apns_timeouts", "apns_ping_fails", "apns_token_renewals",
        "apns_token_moves"}
assert want <= set(lines[-1]), sorted(want - set(lines[-1]))
# The pushes went over connections the worker made, and none failed.
assert lines[-1]["apns_connects"] >= 1 and lines[-1]["apns_connect_fails"] == 0
' "$T/worker.log"
finish
