#!/usr/bin/env bash
# "callpush send" and "callpush check" against the APNs stand-in and a few
# broken setups. send makes exactly one request, the one it prints, and
# reports APNs' answer; check connects but sends no request, and names
# each way a setup can be broken in words of its own. Neither needs Kafka:
# CALLPUSH_BROKERS is never set here.
set -eu
. "$(dirname "$0")/lib.sh"

tok() { printf '%060x%04x' 0 "$1"; }
GOOD=$(tok 1) GONE=$(tok 2)
start_apns --fail "$GONE=410:Unregistered"
SETTINGS=(
    CALLPUSH_APNS_URL="$APNS_URL"
    CALLPUSH_APNS_CA_FILE="$T/certs/server.crt"
    CALLPUSH_APNS_TOPIC="$BUNDLE"
    CALLPUSH_APNS_KEY_FILE="$T/certs/AuthKey.p8"
    CALLPUSH_APNS_KEY_ID="$KEY_ID"
    CALLPUSH_APNS_TEAM_ID="$TEAM_ID"
)

# run NAME [VAR=VALUE...] -- ARGS...: callpush with the stand-in's settings
# (a VAR given here replaces one of them); stdout in $T/NAME.out, stderr
# in $T/NAME.err, the exit status in RC.
run() {
    local name=$1
    shift
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    RC=0
    env -i PATH="$PATH" "${SETTINGS[@]}" "${envs[@]}" \
        timeout 60 "$CALLPUSH_BUILD/callpush" "$@" >"$T/$name.out" \
        2>"$T/$name.err" || RC=$?
}

# expect_rc NAME WANT: the last run ended with status WANT.
expect_rc() {
    if [ "$RC" -eq "$2" ]; then
        return 0
    fi
    echo "  $1: exit $RC, want $2; stdout and stderr:" >&2
    cat "$T/$1.out" "$T/$1.err" | sed 's/^/    /' >&2
    return 1
}

# has NAME TEXT: NAME's stdout has a line containing TEXT.
has() {
    grep -qF -- "$2" "$T/$1.out" || {
        echo "  $1: no line with: $2" >&2
        return 1
    }
}

# has_err NAME TEXT: NAME's stderr has a line containing TEXT.
has_err() {
    grep -qF -- "$2" "$T/$1.err" || {
        echo "  $1: no error line with: $2" >&2
        return 1
    }
}

# requests N: the stand-in has recorded exactly N requests.
requests() {
    local n
    n=$(wc -l <"$T/apns.jsonl")
    [ "$n" -eq "$1" ] || {
        echo "  the stand-in recorded $n requests, want $1" >&2
        return 1
    }
}

# failed_at NAME LINE: check stopped at its first failure, LINE: its last
# line, and the only FAIL line.
failed_at() {
    [ "$(grep -c '^FAIL: ' "$T/$1.out")" -eq 1 ] &&
        tail -n 1 "$T/$1.out" | grep -qF -- "FAIL: $2" || {
        echo "  $1: want one FAIL line, last, with: FAIL: $2; got:" >&2
        sed 's/^/    /' "$T/$1.out" >&2
        return 1
    }
}

# ---- send --------------------------------------------------------------

run send_ok -- send --token "$GOOD" --call-id call-send-1 --msgid 42 \
    --caller Alice
check "send to a live token exits 0" expect_rc send_ok 0
check "send prints the request line" \
    has send_ok "POST $APNS_URL/3/device/$GOOD"
check "send prints APNs' answer" eval 'has send_ok "status: 200" &&
    has send_ok "attempts: 1" && has send_ok "action: delivered"'
check "send made exactly one request" requests 1

# The one request recorded is the one send printed, and the worker's kind.
same_request() {
    $PY - "$T/send_ok.out" "$T/apns.jsonl" "$GOOD" <<'PYEOF'
import json, sys
out = open(sys.argv[1], encoding="utf-8").read().split("\n")
rec = json.loads(open(sys.argv[2], encoding="utf-8").readline())
token = sys.argv[3]
errors = []
def expect(what, got, want):
    if got != want:
        errors.append("%s: got %r, want %r" % (what, got, want))
# The body is the line after the headers' blank line, as in HTTP.
body = out[out.index("") + 1]
printed = dict(l.split(": ", 1) for l in out[1:out.index("")])
expect("body", rec["body"], body)
expect("status", rec["status"], 200)
expect("token", rec["token"], token)
h = rec["headers"]
for name in ("apns-push-type", "apns-priority", "apns-collapse-id", "apns-id",
             "apns-topic", "apns-expiration", "authorization"):
    expect("printed " + name, printed.get(name), h.get(name))
expect("push type", h.get("apns-push-type"), "alert")
expect("priority", h.get("apns-priority"), "10")
expect("collapse id", h.get("apns-collapse-id"), "call-send-1")
p = json.loads(body)
expect("payload _j_msgid", p.get("_j_msgid"), 42)
expect("payload pushType", p.get("pushType"), 1)
expect("alert body", p["aps"]["alert"].get("body"), "Alice")
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
}
check "the request is what send printed; alert, priority 10, collapse id" \
    same_request
check "send never shows the provider token" eval \
    '! grep -q "eyJ" "$T/send_ok.out" "$T/send_ok.err"'

run send_gone -- send --token "$GONE" --type cancel
check "send to a dead token exits 1" expect_rc send_gone 1
check "send shows 410 Unregistered and what the worker would do" eval \
    'has send_gone "status: 410" && has send_gone "reason: Unregistered" &&
    has send_gone "action: invalidate"'
check "send made one more request, no retry" requests 2

run send_bad -- send --token not-a-token
check "send with a bad token exits 2" expect_rc send_bad 2
check "send names the bad token" has_err send_bad "--token: not hexadecimal"
run send_short -- send --token 0123456789abcdef0
check "send with an odd token exits 2" expect_rc send_short 2
check "send names the odd token" has_err send_short \
    "--token: odd number of hex digits"
run send_keyid CALLPUSH_APNS_KEY_ID=abc -- send --token "$GOOD"
check "send with a bad setting exits 2" expect_rc send_keyid 2
check "send names the setting" has_err send_keyid "CALLPUSH_APNS_KEY_ID"
check "send sent nothing when refusing" requests 2

# ---- check -------------------------------------------------------------

opened() { grep -c " opened from " "$T/apns.log" || true; }
conns=$(opened)
run check_ok -- check
check "check passes against the stand-in" expect_rc check_ok 0
check "check reports seven steps ok" \
    eval '[ "$(grep -c "^ok: " "$T/check_ok.out")" -eq 7 ]'
check "check sees HTTP/2" has check_ok "ok: HTTP/2 negotiated (ALPN h2)"
check "check names the key and team ids, not the token" eval \
    'has check_ok "key id $KEY_ID, team id $TEAM_ID" &&
    ! grep -q "eyJ" "$T/check_ok.out"'
opened_more() { [ "$(opened)" -gt "$conns" ]; }
check "check connected to the stand-in" wait_until 10 opened_more
check "check sent no request" requests 2

run check_nokey CALLPUSH_APNS_KEY_FILE="$T/nonexistent/AuthKey.p8" -- check
check "check: unreadable key exits 1" expect_rc check_nokey 1
check "check: unreadable key named" failed_at check_nokey \
    "cannot read the signing key $T/nonexistent/AuthKey.p8: No such file"

run check_keyid -- check --apns-key-id abc
check "check: key id format exits 2" expect_rc check_keyid 2
check "check: key id format named" failed_at check_keyid \
    'configuration: CALLPUSH_APNS_KEY_ID (--apns-key-id): must be 10 characters'
check "check: key id format shows the value" has check_keyid 'got "abc"'

run check_down CALLPUSH_APNS_URL=https://127.0.0.1:1 -- check
check "check: unreachable host exits 1" expect_rc check_down 1
check "check: unreachable host named" failed_at check_down \
    "cannot connect to APNs at 127.0.0.1:1: Connection refused"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/other.key" -out "$T/other.crt" -days 30 -subj /CN=other \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
run check_ca CALLPUSH_APNS_CA_FILE="$T/other.crt" -- check
check "check: untrusted certificate exits 1" expect_rc check_ca 1
check "check: untrusted certificate named, with the CA file" failed_at \
    check_ca "APNs certificate not trusted: self-signed certificate"
check "check: untrusted certificate names the CA file" has check_ca \
    "checked against the CA file $T/other.crt"

run check_sys CALLPUSH_APNS_CA_FILE= -- check
check "check: the system store does not trust the stand-in" failed_at \
    check_sys "APNs certificate not trusted: self-signed certificate"
check "check: names the system store" has check_sys \
    "checked against OpenSSL's default store"

printf 'not a key\n' >"$T/junk.p8"
run check_junk CALLPUSH_APNS_KEY_FILE="$T/junk.p8" -- check
check "check: a file that is not a key exits 1" expect_rc check_junk 1
check "check: a file that is not a key named" failed_at check_junk \
    "signing key: $T/junk.p8: not a PEM private key"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 \
    -out "$T/p384.p8" 2>/dev/null
run check_p384 CALLPUSH_APNS_KEY_FILE="$T/p384.p8" -- check
check "check: a key not on P-256 exits 1" expect_rc check_p384 1
check "check: a key not on P-256 named" failed_at check_p384 \
    "signing key: $T/p384.p8: key is not an EC P-256 key (curve secp384r1)"

# serve MODE NAME: a local TLS server on 127.0.0.1 that never answers
# ("silent": the TLS handshake gets no reply) or speaks only HTTP/1.1
# ("http1"); its port in $T/NAME.port.
serve() {
    $PY - "$1" "$T/$2.port" "$T/certs/server.crt" "$T/certs/server.key" \
        <<'PYEOF' 2>"$T/$2.log" &
import os, socket, ssl, sys
mode, port_file, cert, key = sys.argv[1:]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
with open(port_file + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)
if mode == "silent":
    # The kernel completes the TCP handshake; nothing ever answers TLS.
    while True:
        c, _ = s.accept()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
while True:
    c, _ = s.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.recv(1)
    except (ssl.SSLError, OSError):
        pass
    c.close()
PYEOF
    PIDS+=($!)
    wait_until 20 test -s "$T/$2.port"
}

serve http1 http1
H1=127.0.0.1:$(cat "$T/http1.port")
run check_h1 CALLPUSH_APNS_URL="https://$H1" -- check
check "check: HTTP/1.1 only server exits 1" expect_rc check_h1 1
check "check: HTTP/2 not negotiated named" failed_at check_h1 \
    "HTTP/2 not negotiated: asked for h2 in ALPN, the server at $H1 chose"
check "check: HTTP/2 not negotiated shows the server's choice" has check_h1 \
    'chose "http/1.1"'

serve silent silent
SILENT=127.0.0.1:$(cat "$T/silent.port")
run check_slow CALLPUSH_APNS_URL="https://$SILENT" \
    CALLPUSH_APNS_TIMEOUT_MS=300 -- check
check "check: silent server exits 1" expect_rc check_slow 1
check "check: silent server named, with the timeout" failed_at check_slow \
    "TLS handshake with $SILENT: no answer within 300 ms"

check "no check sent a request" requests 2
check "no run reported a sanitizer error" eval \
    '! grep -l -e "Sanitizer" -e "runtime error" "$T"/*.err'
finish
