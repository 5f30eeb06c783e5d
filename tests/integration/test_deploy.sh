#!/usr/bin/env bash
#
# The deployment files under deploy/ must agree with the worker and with
# the rest of the repository:
#
#   - every YAML file passes yamllint;
#   - every CALLPUSH_* name they mention is a setting the worker knows, and
#     every setting of "callpush --help" is given by the ConfigMap or the
#     Deployment;
#   - the worker starts with the ConfigMap's values (Kafka and APNs pointed
#     at closed ports on 127.0.0.1, so nothing leaves the machine);
#   - the Dockerfile's build stage installs exactly BUILD_PKGS of
#     scripts/install-deps.sh, and its runtime stage the matching runtime
#     libraries;
#   - the Kubernetes objects fit together: grace period above the shutdown
#     budget, probes on the worker's port, the autoscaler's ceiling equal to
#     the partition count, a locked-down security context.
#
# When kubectl is installed, the example overlay is also rendered with
# "kubectl kustomize" (offline) and its output checked the same way.
#
# Environment: CALLPUSH_BUILD is the build directory holding callpush
# (default: build), CALLPUSH_SRC the repository.

set -eu
. "$(dirname "$0")/lib.sh"

DEPLOY=$CALLPUSH_SRC/deploy
CALLPUSH=$CALLPUSH_BUILD/callpush
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 120},
    document-start: disable}}'

# The Kubernetes files this test expects; fewer means a file was lost or
# renamed, and a run that checks nothing must not pass.
MIN_YAML_FILES=9

if [ ! -x "$CALLPUSH" ]; then
    echo "no callpush binary at $CALLPUSH" >&2
    exit 2
fi
if ! $PY -c 'import yaml' 2>/dev/null; then
    echo "$PY cannot import yaml: install python3-yaml (yamllint needs it" \
        "too)" >&2
    exit 2
fi

"$CALLPUSH" --help >"$T/help.txt"

# --- 1. yamllint --------------------------------------------------------

mapfile -t yaml_files < <(find "$DEPLOY" -type f \( -name '*.yaml' -o \
    -name '*.yml' \) | sort)

yamllint_passes() {
    if ! command -v yamllint >/dev/null; then
        echo "yamllint is not installed (scripts/install-deps.sh test)"
        return 1
    fi
    if [ "${#yaml_files[@]}" -lt "$MIN_YAML_FILES" ]; then
        echo "only ${#yaml_files[@]} YAML files under deploy/," \
            "want at least $MIN_YAML_FILES"
        return 1
    fi
    yamllint -f parsable -d "$YAMLLINT_CONFIG" "${yaml_files[@]}"
}
check "yamllint accepts the ${#yaml_files[@]} YAML files under deploy/" \
    yamllint_passes

# --- 2 to 4: the files read as data ------------------------------------
#
# The Python part prints one line per check, "ok<TAB>what" or
# "FAIL<TAB>what<TAB>why", and the shell counts them. It reads the base
# from its kustomization.yaml, or a rendered stream given with --rendered.

cat >"$T/check_deploy.py" <<'PYEOF'
import os
import re
import sys

import yaml

SRC, HELP = sys.argv[1], sys.argv[2]
RENDERED = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--rendered" \
    else None
DEPLOY = os.path.join(SRC, "deploy")
BASE = os.path.join(DEPLOY, "k8s", "base")
LABEL = "overlay example: " if RENDERED else ""
PARTITIONS = "callpush.example/partitions"
USER_ID = 10001

# Each -dev package of BUILD_PKGS and the runtime package the image needs
# for it; None marks a package only the build or the tests use.
RUNTIME_OF = {
    "librdkafka-dev": "librdkafka1",
    "libcurl4-openssl-dev": "libcurl4",
    "libcjson-dev": "libcjson1",
    "libssl-dev": "libssl3",
    "libnghttp2-dev": "libnghttp2-14",
    "libmicrohttpd-dev": "libmicrohttpd12",
    "libcmocka-dev": None,
}
# Not the runtime half of any -dev package, but needed to verify APNs.
RUNTIME_EXTRA = {"ca-certificates"}

checks_run = 0


def report(ok, what, why=""):
    global checks_run
    checks_run += 1
    if ok:
        print("ok\t%s%s" % (LABEL, what))
    else:
        print("FAIL\t%s%s\t%s" % (LABEL, what, why))


def check(what):
    """Runs a check function: it returns None when it passes, else why."""
    def wrap(fn):
        try:
            why = fn()
        except (KeyError, TypeError, ValueError, IndexError) as e:
            why = "missing or malformed: %s: %s" % (type(e).__name__, e)
        report(why is None, what, why or "")
        return fn
    return wrap


def load_docs():
    if RENDERED:
        with open(RENDERED, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d]
    with open(os.path.join(BASE, "kustomization.yaml"),
              encoding="utf-8") as f:
        kust = yaml.safe_load(f)
    docs = []
    for name in kust["resources"]:
        with open(os.path.join(BASE, name), encoding="utf-8") as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


DOCS = load_docs()


def one(kind):
    found = [d for d in DOCS if d.get("kind") == kind]
    if len(found) != 1:
        raise ValueError("%d objects of kind %s, want 1" % (len(found), kind))
    return found[0]


def help_settings():
    with open(HELP, encoding="utf-8") as f:
        text = f.read()
    # "      CALLPUSH_BROKERS, required." The Kafka family's line reads
    # "CALLPUSH_KAFKA_<NAME>=VALUE" and does not match.
    return re.findall(r"^\s+(CALLPUSH_[A-Z0-9_]+),", text, re.M)


def container():
    spec = one("Deployment")["spec"]["template"]["spec"]
    if len(spec["containers"]) != 1:
        raise ValueError("want one container")
    return spec["containers"][0]


def configmap_data():
    return one("ConfigMap")["data"]


# --- 2. settings ---------------------------------------------------------

SETTINGS = help_settings()


@check("callpush --help lists the settings")
def _():
    if len(SETTINGS) < 20:
        return "found only %d CALLPUSH_* settings in --help" % len(SETTINGS)
    return None


def known(name):
    return name in SETTINGS or name.startswith("CALLPUSH_KAFKA_")


if not RENDERED:
    @check("every CALLPUSH_* name under deploy/ is a setting the worker knows")
    def _():
        unknown = set()
        for root, _dirs, files in os.walk(DEPLOY):
            for name in files:
                path = os.path.join(root, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for var in re.findall(r"CALLPUSH_[A-Z0-9_]+", f.read()):
                        if not known(var):
                            unknown.add("%s (%s)" %
                                        (var, os.path.relpath(path, SRC)))
        return "unknown: " + ", ".join(sorted(unknown)) if unknown else None


@check("every setting of --help is in the ConfigMap or the Deployment")
def _():
    given = set(configmap_data())
    given |= {e["name"] for e in container().get("env", [])}
    missing = [s for s in SETTINGS if s not in given]
    return "missing: " + ", ".join(missing) if missing else None


@check("the container reads the ConfigMap and sets only known variables")
def _():
    refs = [e["configMapRef"]["name"] for e in container().get("envFrom", [])
            if "configMapRef" in e]
    if refs != [one("ConfigMap")["metadata"]["name"]]:
        return "envFrom names %s, not the ConfigMap" % refs
    names = list(configmap_data()) + [e["name"] for e in
                                       container().get("env", [])]
    bad = [n for n in names if not known(n)]
    return "unknown: " + ", ".join(bad) if bad else None


# --- 3. the image ----------------------------------------------------------

def dockerfile_stages():
    """Returns [(base image, [instruction lines])] with comments dropped
    and continuation lines joined."""
    with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as f:
        lines = [l for l in f.read().splitlines()
                 if not l.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        word = line.split()[0].upper()
        if word == "FROM":
            stages.append((line.split()[1], []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def apt_installs(instructions):
    """Returns [(packages, the command, the whole RUN)] per apt-get install."""
    found = []
    for line in instructions:
        if not line.upper().startswith("RUN "):
            continue
        for cmd in re.split(r"&&|;", line[4:]):
            words = cmd.split()
            if "apt-get" in words and "install" in words:
                rest = words[words.index("install") + 1:]
                found.append(([w for w in rest if not w.startswith("-")],
                              cmd, line))
    return found


def build_pkgs():
    with open(os.path.join(SRC, "scripts", "install-deps.sh"),
              encoding="utf-8") as f:
        m = re.search(r'^BUILD_PKGS="([^"]*)"', f.read(), re.M)
    if m is None:
        raise ValueError("no BUILD_PKGS=\"...\" in scripts/install-deps.sh")
    return set(m.group(1).split())


def stage_packages(stage):
    pkgs = set()
    for found, _cmd, _run in apt_installs(stage[1]):
        pkgs |= set(found)
    return pkgs


def difference(got, want):
    parts = []
    if got - want:
        parts.append("extra: " + " ".join(sorted(got - want)))
    if want - got:
        parts.append("missing: " + " ".join(sorted(want - got)))
    return "; ".join(parts) or None


if not RENDERED:
    STAGES = dockerfile_stages()

    @check("the Dockerfile builds on debian:12 and runs on debian:12-slim")
    def _():
        images = [s[0] for s in STAGES]
        if images != ["debian:12", "debian:12-slim"]:
            return "stages FROM %s" % images
        return None

    @check("the build stage installs exactly BUILD_PKGS of install-deps.sh")
    def _():
        return difference(stage_packages(STAGES[0]), build_pkgs())

    @check("the runtime stage installs the runtime libraries of BUILD_PKGS")
    def _():
        want = set(RUNTIME_EXTRA)
        unmapped = []
        for p in build_pkgs():
            if p in RUNTIME_OF:
                if RUNTIME_OF[p] is not None:
                    want.add(RUNTIME_OF[p])
            elif p.endswith("-dev"):
                unmapped.append(p)
        if unmapped:
            return ("BUILD_PKGS has %s, which this test's runtime map does "
                    "not know" % " ".join(sorted(unmapped)))
        return difference(stage_packages(STAGES[-1]), want)

    @check("apt runs without recommends and leaves no lists behind")
    def _():
        for image, instructions in STAGES:
            installs = apt_installs(instructions)
            if not installs:
                return "stage %s installs nothing" % image
            for _pkgs, cmd, run in installs:
                if "--no-install-recommends" not in cmd.split():
                    return "stage %s: no --no-install-recommends" % image
                if "rm -rf /var/lib/apt/lists/*" not in run:
                    return "stage %s: apt lists not removed" % image
        return None

    @check("the image runs callpush as uid 10001 and exposes 8080")
    def _():
        final = [l.split(None, 1) for l in STAGES[-1][1]]
        final = [(w[0].upper(), w[1] if len(w) > 1 else "") for w in final]
        users = [a for k, a in final if k == "USER"]
        if users[-1:] != [str(USER_ID)]:
            return "USER is %s" % users
        if ("EXPOSE", "8080") not in final:
            return "no EXPOSE 8080"
        if ("ENTRYPOINT", '["/usr/local/bin/callpush"]') not in final:
            return "ENTRYPOINT is not [\"/usr/local/bin/callpush\"]"
        return None


# --- 4. the Kubernetes objects fit together ------------------------------

def http_port():
    addr = configmap_data()["CALLPUSH_HTTP_ADDR"]
    return int(addr.rsplit(":", 1)[1])


def port_number(port):
    """A probe's or Service's port, by number or by container port name."""
    for p in container()["ports"]:
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    raise ValueError("port %r is not a port of the container" % (port,))


@check("terminationGracePeriodSeconds exceeds CALLPUSH_SHUTDOWN_BUDGET_S")
def _():
    grace = one("Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    budget = int(configmap_data()["CALLPUSH_SHUTDOWN_BUDGET_S"])
    if not grace > budget:
        return "grace %s s, budget %s s" % (grace, budget)
    return None


@check("the probes ask /healthz and /readyz on CALLPUSH_HTTP_ADDR's port")
def _():
    c = container()
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz",
            "readinessProbe": "/readyz"}
    for probe, path in want.items():
        get = c[probe]["httpGet"]
        if get["path"] != path:
            return "%s asks %s" % (probe, get["path"])
        if port_number(get["port"]) != http_port():
            return "%s is not on port %d" % (probe, http_port())
    return None


@check("the ScaledObject's maxReplicaCount equals the partition count")
def _():
    cm = one("ConfigMap")
    partitions = int(cm["metadata"]["annotations"][PARTITIONS])
    so = one("ScaledObject")["spec"]
    if so["maxReplicaCount"] != partitions:
        return "maxReplicaCount %s, %s %d" % (so["maxReplicaCount"],
                                             PARTITIONS, partitions)
    if not 1 <= so.get("minReplicaCount", 0) <= partitions:
        return "minReplicaCount %s" % so.get("minReplicaCount")
    return None


@check("the ScaledObject watches the worker's group and topics")
def _():
    data = configmap_data()
    so = one("ScaledObject")["spec"]
    if so["scaleTargetRef"]["name"] != one("Deployment")["metadata"]["name"]:
        return "scaleTargetRef is not the Deployment"
    topics = {data["CALLPUSH_INVITE_TOPIC"], data["CALLPUSH_CANCEL_TOPIC"]}
    seen = set()
    for t in so["triggers"]:
        m = t["metadata"]
        if t["type"] != "kafka" or "lagThreshold" not in m:
            return "a trigger is not kafka with a lagThreshold"
        if m["consumerGroup"] != data["CALLPUSH_GROUP"]:
            return "group %s, CALLPUSH_GROUP %s" % (m["consumerGroup"],
                                                     data["CALLPUSH_GROUP"])
        if m["topic"] not in topics:
            return "topic %s is neither invite nor cancel" % m["topic"]
        seen.add(m["topic"])
    if data["CALLPUSH_INVITE_TOPIC"] not in seen:
        return "no trigger on the invite topic"
    return None


@check("the container cannot write its root or gain privileges")
def _():
    pod = one("Deployment")["spec"]["template"]["spec"]
    sc = container()["securityContext"]
    psc = pod.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        return "readOnlyRootFilesystem is not true"
    if sc.get("allowPrivilegeEscalation") is not False:
        return "allowPrivilegeEscalation is not false"
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        return "runAsNonRoot is not true"
    if sc.get("runAsUser", psc.get("runAsUser")) != USER_ID:
        return "runAsUser is not %d" % USER_ID
    if sc["capabilities"]["drop"] != ["ALL"]:
        return "capabilities not dropped"
    seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        return "seccomp profile is not RuntimeDefault"
    if pod.get("enableServiceLinks") is not False:
        return "enableServiceLinks is not false"
    return None


@check("the signing key is the Secret's file, mounted read-only")
def _():
    c = container()
    path = [e["value"] for e in c["env"]
            if e["name"] == "CALLPUSH_APNS_KEY_FILE"][0]
    directory, name = os.path.split(path)
    mounts = [m for m in c["volumeMounts"] if m["mountPath"] == directory]
    if len(mounts) != 1 or mounts[0].get("readOnly") is not True:
        return "no read-only mount at %s" % directory
    vols = [v for v in one("Deployment")["spec"]["template"]["spec"][
        "volumes"] if v["name"] == mounts[0]["name"]]
    secret = vols[0]["secret"]
    if name not in [i["path"] for i in secret.get("items", [])]:
        return "the Secret volume has no %s" % name
    return None


@check("Service and ServiceMonitor reach /metrics on the worker's port")
def _():
    svc = one("Service")["spec"]
    ports = [p for p in svc["ports"] if p.get("name") == "http"]
    if len(ports) != 1 or port_number(ports[0]["targetPort"]) != http_port():
        return "the Service has no port http on %d" % http_port()
    sm = one("ServiceMonitor")["spec"]
    ep = sm["endpoints"][0]
    if (ep["port"], ep["path"], ep["interval"]) != ("http", "/metrics",
                                                   "30s"):
        return "endpoint %s" % ep
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for sel in (svc["selector"], sm["selector"]["matchLabels"],
                one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        if any(labels.get(k) != v for k, v in sel.items()):
            return "a selector does not match the pods: %s" % sel
    return None


if not RENDERED:
    @check("the example Secret stays out of the kustomization")
    def _():
        with open(os.path.join(BASE, "kustomization.yaml"),
                  encoding="utf-8") as f:
            resources = yaml.safe_load(f)["resources"]
        if "secret.example.yaml" in resources:
            return "secret.example.yaml is listed in resources"
        if any(d.get("kind") == "Secret" for d in DOCS):
            return "the base applies a Secret"
        return None

# The shell counts the lines above; this one proves the script got here.
print("end\t%d checks" % checks_run)
PYEOF

# run_checks [--rendered FILE]: runs the Python checks and counts them. A
# script that stops early (a file it cannot parse) is a failure, not a
# shorter list of passes.
run_checks() {
    local status what why ended=0

    $PY "$T/check_deploy.py" "$CALLPUSH_SRC" "$T/help.txt" "$@" \
        >"$T/checks.out" 2>"$T/checks.err" || true
    while IFS=$'\t' read -r status what why; do
        case $status in
        ok) ok "$what" ;;
        FAIL) fail "$what: $why" ;;
        end) ended=1 ;;
        *) fail "unexpected output from the checks: $status $what $why" ;;
        esac
    done <"$T/checks.out"
    if [ "$ended" -eq 0 ]; then
        fail "the manifest checks stopped early: $(tail -n 1 "$T/checks.err")"
    fi
}

run_checks

# --- 2b. the worker takes the ConfigMap's values ------------------------
#
# The values go in through the environment exactly as envFrom gives them;
# flags (which win) point Kafka, APNs and the listener at 127.0.0.1 and give
# a throw-away signing key. A value the worker refuses ends it at once with
# "invalid configuration"; a Kafka property librdkafka does not know ends
# it with "cannot start".

$PY - "$DEPLOY/k8s/base/configmap.yaml" >"$T/configmap.env" <<'PYEOF'
import shlex
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    data = yaml.safe_load(f)["data"]
for key, value in data.items():
    print("export %s=%s" % (key, shlex.quote(str(value))))
PYEOF

bash "$CALLPUSH_SRC/tests/tools/mkcerts.sh" "$T/certs" >/dev/null
# The inner shell, not this one, expands "$1" and "$@".
# shellcheck disable=SC2016
env -i PATH="$PATH" bash -c '. "$1"; shift; exec "$@"' _ "$T/configmap.env" \
    "$CALLPUSH" --brokers 127.0.0.1:1 --apns-url https://127.0.0.1:1 \
    --http-addr 127.0.0.1:0 --apns-key-file "$T/certs/AuthKey.p8" \
    >"$T/configmap-worker.log" 2>&1 &
PIDS+=($!)
configmap_pid=$!

# running_or_gone: the worker said it runs, or it has exited.
running_or_gone() {
    grep -q '"msg":"worker running"' "$T/configmap-worker.log" ||
        ! kill -0 "$configmap_pid" 2>/dev/null
}

worker_took_configmap() {
    wait_until 30 running_or_gone || true
    if grep -q '"msg":"worker running"' "$T/configmap-worker.log"; then
        return 0
    fi
    grep -m 1 -E 'invalid configuration|cannot start|callpush:' \
        "$T/configmap-worker.log" || tail -n 3 "$T/configmap-worker.log"
    return 1
}
check "the worker starts with the ConfigMap's values" worker_took_configmap

# --- the example overlay, rendered ---------------------------------------

if command -v kubectl >/dev/null; then
    if kubectl kustomize "$DEPLOY/k8s/overlays/example" \
        >"$T/overlay.yaml" 2>"$T/kustomize.err"; then
        ok "kubectl kustomize renders the example overlay"
        run_checks --rendered "$T/overlay.yaml"
    else
        fail "kubectl kustomize renders the example overlay: $(head -n 3 \
            "$T/kustomize.err")"
    fi
else
    echo "skipped: kubectl is not installed, the overlay is not rendered"
fi

finish
