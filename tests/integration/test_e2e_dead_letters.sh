#!/usr/bin/env bash
# Events that cannot be pushed go to the dead-letter topic with their
# original bytes and a specific reason, and the events after them in the
# same partition are still pushed.
set -eu
. "$(dirname "$0")/lib.sh"

EX=$CALLPUSH_SRC/schemas/examples
KEY=call-dlq-test   # one key: every message lands in the same partition
start_kafka
start_apns
start_worker worker
wait_assigned worker || { fail "worker got no partitions"; finish; }

mkdir -p "$T/in"
n=0
add() { # add NAME < FILE: the next numbered input file (never in a pipe,
        # which would run it in a subshell and lose the count)
    n=$((n + 1))
    cat >"$T/in/$(printf %03d "$n")-$1"
}

fresh "$EX/valid/invite-call-flow.json" >"$T/x"
add good-first.json <"$T/x"
for f in "$EX"/invalid/*.json; do
    # Kept byte for byte. A missing created_at breaks the contract, but the
    # worker fills it from the Kafka timestamp (see the call semantics test).
    case $f in *created-at-missing.json) continue ;; esac
    add "$(basename "$f")" <"$f"
done
# The checked-in corpus of hostile events (kcat skips empty files: the
# empty and null values are produced below).
for f in "$CALLPUSH_SRC"/tests/fuzz/bad-events/*; do
    [ -s "$f" ] || continue
    case $f in *missing-created-at) continue ;; esac
    add "$(basename "$f")" <"$f"
done
printf 'not json at all' >"$T/x"
add not-json.txt <"$T/x"
printf '\xff\xfe{"type":"invite"}' >"$T/x"
add bad-utf8.txt <"$T/x"
printf '' >"$T/x"
add empty.txt <"$T/x"
add null.txt <"$T/x"
# Valid, but its payload cannot fit in 4096 bytes even without a body.
$PY - "$EX/valid/invite-call-flow.json" >"$T/x" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
d["created_at"] = int(time.time() * 1000)
d["_j_msgid"] = 18101194842707001
d["extras"] = {"k%02d" % i: "x" * 200 for i in range(25)}
print(json.dumps(d, separators=(",", ":")))
PYEOF
add too-large.json <"$T/x"
$PY - "$EX/valid/invite-call-flow.json" >"$T/x" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
d["created_at"] = int(time.time() * 1000)
d["_j_msgid"] = 18101194842707999
print(json.dumps(d, separators=(",", ":")))
PYEOF
add good-last.json <"$T/x"

BAD=$((n - 2))
for f in "$T"/in/*; do
    case $f in
    # kcat skips an empty file: send an empty value, and a null one (-Z).
    *-empty.txt) printf '%s|\n' "$KEY" | kcat -b "$BROKERS" -P -t call.invite -K '|' ;;
    *-null.txt) printf '%s|\n' "$KEY" | kcat -b "$BROKERS" -P -t call.invite -K '|' -Z ;;
    *) produce call.invite "$KEY" "$f" ;;
    esac
done

wait_until 120 accepted_ge 2 || fail "good events not pushed"
wait_until 120 topic_ge call.dlq "$BAD" ||
    fail "dead letters missing"
consume_all call.dlq >"$T/dlq.jsonl"

$PY - "$T" "$BAD" <<'PYEOF' && ok "each bad event dead-lettered once, bytes and reason intact" || fail "dead letters wrong (see above)"
import json, os, sys

t, bad = sys.argv[1], int(sys.argv[2])
files = sorted(os.listdir(t + "/in"))
inputs = [open(t + "/in/" + f, "rb").read() for f in files]
dlq = [json.loads(l) for l in open(t + "/dlq.jsonl", encoding="utf-8", errors="surrogateescape")]
errors = []
if len(dlq) != bad:
    errors.append("%d dead letters, want %d" % (len(dlq), bad))
seen = set()
for m in dlq:
    hdr = {}
    for i in range(0, len(m.get("headers") or []), 2):
        hdr[m["headers"][i]] = m["headers"][i + 1]
    reason = hdr.get("callpush-reason", "")
    off = int(hdr.get("callpush-source-offset", "-1"))
    if hdr.get("callpush-source-topic") != "call.invite":
        errors.append("source topic header: %r" % hdr)
    if not (1 <= off <= bad):
        errors.append("offset %d not one of the bad events" % off)
        continue
    seen.add(off)
    name = files[off]
    want = inputs[off]
    got = (m.get("payload") or "").encode("utf-8", "surrogateescape")
    if len(want) > 65536:
        # Oversize values keep their head, and say how long they were.
        if hdr.get("callpush-original-bytes") != str(len(want)):
            errors.append("%s: no original size header" % name)
        want = want[:65536]
    # kcat prints values as text: compare what survives that.
    if want.decode("utf-8", "replace") != got.decode("utf-8", "surrogateescape").encode("utf-8", "surrogateescape").decode("utf-8", "replace"):
        errors.append("%s: value changed: %r" % (name, got[:60]))
    if not reason:
        errors.append("%s: no reason" % name)
    print("  %-40s %s" % (name, reason))
    if name.endswith("too-large.json") and not reason.startswith("payload:"):
        errors.append("too-large: reason %r" % reason)
    if name.endswith("not-json.txt") and "not JSON" not in reason:
        errors.append("not-json: reason %r" % reason)
if len(seen) != bad:
    errors.append("dead letters for offsets %s" % sorted(seen))
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF

check "the good events before and after were both pushed" $PY -c '
import json, sys
ids = [json.loads(json.loads(l)["body"])["_j_msgid"] for l in open(sys.argv[1])
       if json.loads(l)["status"] == 200]
assert sorted(ids) == [18101194842707757, 18101194842707999], ids
' "$T/apns.jsonl"
check "dead letters are logged with their reason" test \
    "$(log_count worker '"outcome":"dead_lettered"')" -eq "$BAD"
check "every reason names what was wrong, not just that it was" $PY -c '
import json, re, sys
r = [json.loads(l)["reason"] for l in open(sys.argv[1])
     if json.loads(l).get("outcome") == "dead_lettered"]
bad = [x for x in r if not re.match(r"^(invalid event|payload): \S.{5,}", x)]
assert not bad, bad
# The schema examples break one rule each: so must their reasons differ.
assert len(set(r)) >= 60, len(set(r))
' "$T/worker.log"
finish
