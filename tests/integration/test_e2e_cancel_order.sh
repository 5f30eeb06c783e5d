#!/usr/bin/env bash
# A cancel never overtakes its own invite: with thousands of invites in
# flight, cancels for some of their calls go out first (on the urgent
# connection), yet no device gets the invite of a cancelled call after its
# cancel. Each invite is either pushed before its cancel, or not at all.
set -eu
. "$(dirname "$0")/lib.sh"

N=5000
start_kafka --topic call.invite:4 --topic call.cancel:4 \
    --topic push.feedback:1 --topic call.dlq:1
# A small delay keeps many invites on the wire when the cancels come.
start_apns --delay-ms 20
start_worker worker --max-inflight 2000
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines order 7700000 "$N" >"$T/invites"
$PY - "$N" >"$T/cancels" <<'PYEOF'
import json, sys, time
n = int(sys.argv[1])
now = int(time.time() * 1000)
for i in range(0, n, n // 100):
    d = {"type": "cancel", "call_id": "order-%d" % i, "_j_msgid": 8700000 + i,
         "device_tokens": ["%064x" % (7700000 + i)], "created_at": now}
    print("%s|%s" % (d["call_id"], json.dumps(d)))
PYEOF
produce_lines call.invite "$T/invites"
produce_lines call.cancel "$T/cancels"
wait_until 60 log_ge worker '"event settled"' $((N + 100)) ||
    fail "not every event settled"

$PY - "$T" <<'PYEOF' && ok "no invite reached a device after its call's cancel" || fail "cancel order (see above)"
import json, sys
t = sys.argv[1]
accepted = {}
for line in open(t + "/apns.jsonl"):
    r = json.loads(line)
    if r["status"] == 200:
        msgid = json.loads(r["body"])["_j_msgid"]
        accepted.setdefault(r["token"], []).append((r["ts_ms"], msgid))
cancels = [json.loads(l.split("|", 1)[1]) for l in open(t + "/cancels")]
errors, before = [], 0
for c in cancels:
    got = accepted.get(c["device_tokens"][0], [])
    when = {m: ts for ts, m in got}
    if c["_j_msgid"] not in when:
        errors.append("cancel %s not accepted" % c["call_id"])
        continue
    invite = c["_j_msgid"] - 1000000
    if invite in when:
        before += 1
        if when[invite] > when[c["_j_msgid"]]:
            errors.append("%s: invite accepted %d ms after its cancel" % (
                c["call_id"], when[invite] - when[c["_j_msgid"]]))
print("cancelled calls: %d; invite pushed first: %d; invite never pushed: %d"
      % (len(cancels), before, len(cancels) - before))
for e in errors[:10]:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
finish
