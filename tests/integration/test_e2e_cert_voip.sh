#!/usr/bin/env bash
# Certificate authentication and voip pushes, end to end against the
# stand-in with --client-ca:
#   (a) with a client certificate the worker delivers an invite with no
#       authorization header, and the stand-in sees the certificate;
#   (b) the same with the key encrypted and its passphrase in a file;
#   (c) token and certificate settings together, or neither, are refused
#       at start with one line naming the settings;
#   (e) `callpush send` and `callpush check` work in certificate mode;
#   (d) in voip mode (token auth) the push goes as push type voip to the
#       topic BUNDLE.voip, and a payload over 4096 bytes (but within 5120)
#       is sent whole, where alert mode would have shortened it.
# Each case reads its own invite topic, so no worker sees another's event.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka --topic inv.a:2 --topic can.a:2 --topic inv.b:2 --topic can.b:2 \
    --topic inv.d:2 --topic can.d:2 --topic push.feedback:1 --topic call.dlq:1
start_apns --client-ca "$T/certs/client-ca.crt"
C=$T/certs

tok() { printf '%060x%04x' 0 "$1"; }
TOK_A=$(tok 1) TOK_B=$(tok 2) TOK_D=$(tok 3)

# run_worker NAME CASE VAR=VALUE...: a worker of its own group reading
# inv.CASE and can.CASE, with only the given authentication settings.
run_worker() {
    local name=$1 case=$2
    shift 2
    env -i PATH="$PATH" $(worker_base_env) CALLPUSH_GROUP="g-$case" \
        CALLPUSH_INVITE_TOPIC="inv.$case" CALLPUSH_CANCEL_TOPIC="can.$case" \
        "$@" "$CALLPUSH_BUILD/callpush" >"$T/$name.log" 2>"$T/$name.err" &
    PIDS+=($!)
}

# invite TOKEN MSGID [BODY_FILE]: one invite line "key|json"; the alert
# body and an extra of about 2 KB each come from BODY_FILE when given.
invite() {
    $PY - "$@" <<'PYEOF'
import json, sys, time
token, msgid = sys.argv[1:3]
d = {"type": "invite", "call_id": "cv-" + msgid, "_j_msgid": int(msgid),
     "device_tokens": [token], "created_at": int(time.time() * 1000),
     "_j_uid": "user-" + msgid, "caller": {"name": "Alice", "id": "a1"}}
if len(sys.argv) > 3:
    body = open(sys.argv[3]).read()
    d["alert"] = {"title": "Incoming call", "body": body}
    d["extras"] = {"_j_data_": "d" * 2000, "extra_key": "e" * 300}
print("%s|%s" % (d["call_id"], json.dumps(d, ensure_ascii=False)))
PYEOF
}

# record_of TOKEN FIELD: FIELD of the stand-in's first record for TOKEN,
# as JSON ("missing" when there is none).
record_of() {
    $PY - "$T/apns.jsonl" "$1" "$2" <<'PYEOF'
import json, sys
path, token, field = sys.argv[1:4]
for line in open(path):
    r = json.loads(line)
    if r["token"] == token:
        v = r
        for part in field.split("."):
            if not isinstance(v, dict) or part not in v:
                print("missing")
                sys.exit(0)
            v = v[part]
        print(json.dumps(v, ensure_ascii=False))
        break
else:
    print("missing")
PYEOF
}

has_record() { [ "$(record_of "$1" status)" != missing ]; }

# --- (a) certificate mode -------------------------------------------------
run_worker cert a CALLPUSH_APNS_CERT_FILE="$C/client.crt" \
    CALLPUSH_APNS_CERT_KEY_FILE="$C/client.key"
if wait_assigned cert; then
    invite "$TOK_A" 101 >"$T/ev.a"
    produce_lines inv.a "$T/ev.a"
    wait_until 30 has_record "$TOK_A" || true
fi
check "certificate mode: the invite was accepted" \
    test "$(record_of "$TOK_A" status)" = 200
check "certificate mode: the stand-in saw the client certificate" \
    test "$(record_of "$TOK_A" client_cert)" = '"callpush-client"'
check "certificate mode: no authorization header" \
    test "$(record_of "$TOK_A" headers.authorization)" = missing
check "certificate mode: no provider token" \
    test "$(record_of "$TOK_A" jwt_iat)" = null

# --- (b) encrypted key and password file --------------------------------
run_worker enc b CALLPUSH_APNS_CERT_FILE="$C/client.crt" \
    CALLPUSH_APNS_CERT_KEY_FILE="$C/client-enc.key" \
    CALLPUSH_APNS_CERT_PASSWORD_FILE="$C/client.pass"
if wait_assigned enc; then
    invite "$TOK_B" 102 >"$T/ev.b"
    produce_lines inv.b "$T/ev.b"
    wait_until 30 has_record "$TOK_B" || true
fi
check "encrypted key: the invite was accepted" \
    test "$(record_of "$TOK_B" status)" = 200
check "encrypted key: the stand-in saw the client certificate" \
    test "$(record_of "$TOK_B" client_cert)" = '"callpush-client"'

# --- (c) both modes, neither, a wrong passphrase ------------------------
# expect_refusal WHAT CODE PATTERN... -- VAR=VALUE...: the worker exits
# with CODE (2: a configuration error; 1: a start that failed) and one line
# on stderr holding every pattern.
expect_refusal() {
    local what=$1 code=$2
    shift 2
    local patterns=()
    while [ "$1" != "--" ]; do
        patterns+=("$1")
        shift
    done
    shift
    local rc=0 p bad=""
    env -i PATH="$PATH" $(worker_base_env) "$@" \
        timeout 20 "$CALLPUSH_BUILD/callpush" >"$T/out" 2>"$T/err" || rc=$?
    for p in "${patterns[@]}"; do
        grep -qF -- "$p" "$T/err" || bad="$bad $p"
    done
    if [ "$rc" -eq "$code" ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
        [ -z "$bad" ]; then
        ok "$what"
    else
        fail "$what (exit $rc, lacking:$bad): $(cat "$T/err")"
    fi
}

expect_refusal "both modes refused, naming both" 2 \
    CALLPUSH_APNS_CERT_FILE CALLPUSH_APNS_KEY_FILE -- \
    $(worker_token_env) CALLPUSH_APNS_CERT_FILE="$C/client.crt" \
    CALLPUSH_APNS_CERT_KEY_FILE="$C/client.key"
expect_refusal "neither mode refused, naming both" 2 \
    CALLPUSH_APNS_KEY_FILE CALLPUSH_APNS_CERT_FILE --
expect_refusal "a certificate without its key refused" 2 \
    CALLPUSH_APNS_CERT_KEY_FILE -- CALLPUSH_APNS_CERT_FILE="$C/client.crt"
printf 'not-the-passphrase\n' >"$T/wrong.pass"
expect_refusal "a wrong passphrase refused at start" 1 \
    CALLPUSH_APNS_CERT_KEY_FILE CALLPUSH_APNS_CERT_PASSWORD_FILE -- \
    CALLPUSH_APNS_CERT_FILE="$C/client.crt" \
    CALLPUSH_APNS_CERT_KEY_FILE="$C/client-enc.key" \
    CALLPUSH_APNS_CERT_PASSWORD_FILE="$T/wrong.pass"
expect_refusal "an unknown push type refused" 2 CALLPUSH_PUSH_TYPE -- \
    $(worker_token_env) CALLPUSH_PUSH_TYPE=background

# --- (d) voip mode ---------------------------------------------------------
# An alert body of 2000 bytes (about 670 three-byte characters) plus the
# extras makes a payload of about 4.5 KB.
$PY -c 'print("来" * 666 + "end", end="")' >"$T/body"
run_worker voip d $(worker_token_env) CALLPUSH_PUSH_TYPE=voip
if wait_assigned voip; then
    invite "$TOK_D" 103 "$T/body" >"$T/ev.d"
    produce_lines inv.d "$T/ev.d"
    wait_until 30 has_record "$TOK_D" || true
fi
check "voip: the invite was accepted" test "$(record_of "$TOK_D" status)" = 200
check "voip: push type voip" \
    test "$(record_of "$TOK_D" headers.apns-push-type)" = '"voip"'
check "voip: topic $BUNDLE.voip" \
    test "$(record_of "$TOK_D" headers.apns-topic)" = "\"$BUNDLE.voip\""
check "voip: token auth still sends a provider token" \
    test "$(record_of "$TOK_D" jwt_iat)" != null
record_of "$TOK_D" body >"$T/voip.body"
size_ok() {
    $PY - "$T/voip.body" "$T/body" <<'PYEOF'
import json, sys
raw = json.load(open(sys.argv[1]))
n = len(raw.encode())
body = json.loads(raw)
whole = body["aps"]["alert"]["body"] == open(sys.argv[2]).read()
print("payload %d bytes, body whole: %s" % (n, whole), file=sys.stderr)
sys.exit(0 if 4096 < n <= 5120 and whole else 1)
PYEOF
}
check "voip: a payload over 4096 bytes is sent whole" size_ok

# --- (e) send and check with a certificate ---------------------------------
TOK_E=$(tok 5)
cert_cmd() { # cert_cmd NAME ARGS...: callpush ARGS with certificate auth
    local name=$1
    shift
    env -i PATH="$PATH" $(worker_base_env) \
        CALLPUSH_APNS_CERT_FILE="$C/client.crt" \
        CALLPUSH_APNS_CERT_KEY_FILE="$C/client-enc.key" \
        CALLPUSH_APNS_CERT_PASSWORD_FILE="$C/client.pass" \
        "$CALLPUSH_BUILD/callpush" "$@" >"$T/$name.out" 2>&1
}
check "send, certificate mode: exits 0" cert_cmd send_cert send \
    --token "$TOK_E" --call-id call-cert-send --msgid 105
check "send, certificate mode: the stand-in accepted it" \
    test "$(record_of "$TOK_E" status)" = 200
check "send, certificate mode: the stand-in saw the certificate" \
    test "$(record_of "$TOK_E" client_cert)" != null
check "send, certificate mode: no authorization header" \
    test "$(record_of "$TOK_E" headers.authorization)" = missing
check "check, certificate mode: passes" cert_cmd check_cert check
check "check, certificate mode: names the certificate" \
    grep -q "ok: client certificate $C/client.crt" "$T/check_cert.out"
check "check, certificate mode: signs no token" \
    grep -q "no provider token needed" "$T/check_cert.out"
check "check, certificate mode: hears the server accept the certificate" \
    grep -q "client certificate accepted" "$T/check_cert.out"
check "send, certificate mode: prints no authorization header" \
    sh -c "! grep -q '^authorization' '$T/send_cert.out'"
wrong_cert() { # a certificate the stand-in's client CA did not sign
    env -i PATH="$PATH" $(worker_base_env) \
        CALLPUSH_APNS_CERT_FILE="$C/server.crt" \
        CALLPUSH_APNS_CERT_KEY_FILE="$C/server.key" \
        "$CALLPUSH_BUILD/callpush" check >"$T/check_wrong.out" 2>&1 && return 1
    grep -q "FAIL: the server at .* refused the client certificate" "$T/check_wrong.out"
}
check "check, certificate mode: a certificate the server refuses fails" wrong_cert

finish
