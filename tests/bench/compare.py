#!/usr/bin/python3
"""How much faster is callpush than the pipeline a team would otherwise
write, and how close is it to the ceiling? One command, one table.

usage: /usr/bin/python3 tests/bench/compare.py [--quick] [--only SCENARIOS]
           [--sides SIDES] [--connections N] [--inflight M] [--chunk-ms MS]
           [--json FILE] [--build DIR] [--callpush-log-level LEVEL] [--keep]

A benchmark, not a test: it asserts nothing and is not registered with
ctest. Everything runs on 127.0.0.1: the Kafka mock cluster (mock-kafka),
the APNs stand-in (apns-standin), and four sides, each fed the same
generated traffic:

  ceiling      h2load POSTing the same payload with the same headers
               (one device token and one apns-id for all, so the same
               request size), connections and streams straight to the
               stand-in: what the stand-in and loopback allow, with no
               Kafka and no client work. In the latency scenario the
               ceiling column is Kafka alone instead: a kcat consumer of
               the same stream, beside callpush, timing each event's
               arrival; no pipeline can push sooner than that.
  transport    tests/bench/transport_bench.c: callpush's own APNs client
               (worker/apns.h) sending the same pushes, no Kafka.
  alternative  tests/bench/node-alt/worker.js: KafkaJS + @parse/node-apn,
               the pipeline most teams would write instead (see its header
               for what was tuned). `npm ci` runs when node_modules is
               missing.
  callpush     build/callpush, configured as tests/integration/lib.sh's
               start_worker does, at --log-level warn (the alternative logs
               nothing per push either).

Scenarios (default sizes; --quick divides them, see QUICK below):

  throughput   100,000 invites with distinct calls on 16 partitions, all
               produced before the worker starts. pushes/s is timed from
               the first acceptance to the last one at the stand-in; the
               time from the worker's start (group join included) to the
               last acceptance is shown too. Ceiling and transport send
               the same 100,000 pushes.
  latency      invites at a steady 5,000 events/s for 30 s into a worker
               that is already assigned, written in 10 ms chunks; latency
               is the stand-in's acceptance time minus the event's
               created_at, which the producer stamps as it hands each
               chunk to kcat.
  cancel       20,000 invites produced at once into an assigned worker,
               then 100 cancels (one every 2 ms) for calls spread evenly
               over that backlog. Cancel latency runs from the cancel's
               created_at to its acceptance; "invites after their cancel"
               counts the cancelled calls whose invite was accepted after
               their cancel was (a phone that rings for a call that is
               over), and "invites after cancel created" those whose invite
               was
               accepted after the cancel had been produced (a phone that
               starts ringing for a call that has already ended, until the
               cancel arrives).
  slow         the stand-in answers after 50 ms and allows 100 streams per
               connection; 20,000 invites as in throughput. The bound is
               min(connections x streams, in-flight limit) / 0.05 s.

Every scenario reports, for each side that runs it, CPU seconds per 10,000
accepted pushes and peak RSS (VmHWM). CPU is utime + stime of the side's
own process (the stand-in, Kafka and the producer are not counted): for
the workers from the first acceptance (throughput, slow) or the first
event produced (latency, cancel) to the last acceptance, so that start-up
and the group join are left out; for h2load and transport-bench the whole
run, from wait4. Peak RSS of h2load and transport-bench is sampled from
/proc every 20 ms while they run.

Ratios are callpush / other side: above 1 is better for pushes/s, below 1
is better for latencies and costs. A side whose pushes were not all
accepted is still shown, with the accepted count in its own row.

Options:
  --quick            throughput 10,000; latency 5,000/s for 5 s; cancel
                     behind 5,000; slow 4,000: about 1 minute
  --only S[,S...]    scenarios to run: throughput, latency, cancel, slow
  --sides S[,S...]   ceiling, transport, alternative, callpush
  --connections N    HTTP/2 connections for every side (default 2)
  --inflight M       pushes in flight for every side (default 1000); h2load
                     gets min(streams, M / N) streams per connection
  --chunk-ms MS      the latency producer's chunk interval (default 10)
  --json FILE        also write the table and per-run details as JSON
  --build DIR        binaries (default $CALLPUSH_BUILD or <repo>/build);
                     missing ones are built there with cmake
  --callpush-log-level LEVEL
                     callpush's --log-level (default warn; info logs a
                     line per push and per event, as in production)
  --keep             keep the scratch directory (logs, stand-in records)

The default run takes about 3 minutes on a 2-core machine; the machine's
other load shows in the figures, so compare runs made side by side. Exit
status 1 when a side could not run (the table still shows the others).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

SRC = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
NODE_DIR = os.path.join(SRC, "tests", "bench", "node-alt")

KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"
BUNDLE = "com.example.callpush"
PARTITIONS = 16
TOPICS = ("call.invite:%d" % PARTITIONS, "call.cancel:%d" % PARTITIONS,
          "push.feedback:1", "call.dlq:1")

SIDES = ("ceiling", "transport", "alternative", "callpush")
SCENARIOS = ("throughput", "latency", "cancel", "slow")
# Which sides each scenario runs: ceiling and transport have no Kafka, so
# they only make sense where the figure is pushes per second.
SCENARIO_SIDES = {
    "throughput": SIDES,
    "latency": ("alternative", "callpush"),
    "cancel": ("alternative", "callpush"),
    "slow": SIDES,
}

DEFAULT = {"throughput_n": 100000, "latency_rate": 5000, "latency_s": 30,
           "cancel_backlog": 20000, "cancels": 100, "cancel_gap_ms": 2,
           "slow_n": 20000, "slow_delay_ms": 50, "slow_streams": 100}
QUICK = {"throughput_n": 10000, "latency_rate": 5000, "latency_s": 5,
         "cancel_backlog": 5000, "cancels": 100, "cancel_gap_ms": 2,
         "slow_n": 4000, "slow_delay_ms": 50, "slow_streams": 100}

# The latency producer writes one chunk every 10 ms (50 events at
# 5,000/s): as steady as kcat can be fed. The mock cluster answers a fetch
# with at most one produce batch per partition and, unlike a broker, does
# not answer a waiting fetch when data arrives: it waits out
# fetch.wait.max.ms. Both consumers therefore wait at most 1 ms per fetch
# (CALLPUSH_KAFKA_FETCH_WAIT_MAX_MS, KafkaJS maxWaitTimeInMs), so that the
# figure is the pipeline's latency rather than the mock's. --chunk-ms 100
# shows the same load in 100 ms bursts, which the mock turns into several
# fetch round trips per burst.
CHUNK_MS = 10
FETCH_WAIT_MS = 1
KCAT_BLOCK = 4096         # kcat holds a partial block until more comes
FIRST_MSGID = 5000000000000000  # below 2^53: exact in JavaScript too
CLK_TCK = os.sysconf("SC_CLK_TCK")

EXTRAS = {"_j_business": 1,
          "_j_data_": "{\"data_msgtype\":1,\"push_type\":4,\"is_vip\":1}",
          "extra_key": "extra_value"}
TITLES = {"invite": "来电邀请", "cancel": "语音通话取消"}


def note(msg):
    sys.stderr.write("compare: %s\n" % msg)
    sys.stderr.flush()


# ---- traffic -------------------------------------------------------------

def token_of(call):
    return "%064x" % (call + 1)


def event(kind, call, msgid, created_at):
    """One call event as the call service would produce it."""
    ev = {"type": kind, "call_id": "bench-%d" % call, "_j_msgid": msgid,
          "device_tokens": [token_of(call)], "created_at": created_at,
          "_j_uid": 75039914131, "alert": {"title": TITLES[kind]},
          "sound": "laidian.caf", "extras": EXTRAS}
    if kind == "invite":
        ev["ring_timeout_s"] = 600
    else:
        ev["reason"] = "hangup"
    return ev


def kafka_line(ev):
    return "%s|%s\n" % (ev["call_id"], json.dumps(
        ev, ensure_ascii=False, separators=(",", ":")))


def apns_body(ev):
    """The payload callpush builds for ev (schemas/apns-payload)."""
    body = {"aps": {"alert": {"title": ev["alert"]["title"]}, "badge": 0,
                    "mutable-content": 1, "sound": ev["sound"]},
            "pushType": 1 if ev["type"] == "invite" else 2,
            "_j_msgid": ev["_j_msgid"], "_j_uid": ev["_j_uid"],
            "call_id": ev["call_id"]}
    body.update(ev["extras"])
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def apns_expiration(ev):
    if ev["type"] == "invite":
        return ev["created_at"] // 1000 + ev["ring_timeout_s"]
    return ev["created_at"] // 1000 + 300


def invites(first_call, count, created_at):
    return [event("invite", first_call + i, FIRST_MSGID + first_call + i,
                  created_at) for i in range(count)]


# ---- processes -----------------------------------------------------------

class Proc:
    """A process this driver started, with its cost read from /proc."""

    def __init__(self, name, argv, ctx, env=None, stdin=None):
        self.name = name
        self.log = os.path.join(ctx.tmp, "%s.log" % name)
        self.err = os.path.join(ctx.tmp, "%s.err" % name)
        with open(self.log, "wb") as out, open(self.err, "wb") as err:
            self.p = subprocess.Popen(argv, stdout=out, stderr=err,
                                      stdin=stdin, env=env)
        self.pid = self.p.pid
        self.started = time.time()
        self.rusage = None
        self.hwm_kb = 0   # VmHWM as last seen while the process ran
        self.cpu0 = 0.0   # CPU seconds spent before the measured work
        self.counting = False
        ctx.procs.append(self)

    def alive(self):
        return self.rusage is None and self.p.poll() is None

    def cpu_s(self):
        if self.rusage is not None:
            return self.rusage.ru_utime + self.rusage.ru_stime
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def read_hwm(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
        except OSError:
            pass

    def peak_rss_mb(self):
        # Not wait4's ru_maxrss: Linux carries the forking driver's own
        # resident size over exec into it, which would charge the driver's
        # hundreds of megabytes of generated traffic to h2load.
        if self.rusage is None:
            self.read_hwm()
        return self.hwm_kb / 1024.0 if self.hwm_kb else None

    def wait_exit(self, timeout):
        """Waits for the process, keeping its rusage; False on timeout."""
        end = time.time() + timeout
        while time.time() < end:
            self.read_hwm()
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.rusage = ru
                self.p.returncode = os.waitstatus_to_exitcode(status)
                return True
            time.sleep(0.02)
        return False

    def stop(self, grace=10.0):
        if self.rusage is not None or self.p.returncode is not None:
            return
        try:
            self.p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not self.wait_exit(grace):
            self.p.kill()
            self.wait_exit(5)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def wait_for(what, timeout, check, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return True
        time.sleep(step)
    note("gave up waiting for %s after %.0f s" % (what, timeout))
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Context:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.tmp = tempfile.mkdtemp(prefix="callpush-compare.")
        self.procs = []
        self.run_no = 0
        self.certs = os.path.join(self.tmp, "certs")
        subprocess.run(["sh", os.path.join(SRC, "tests/tools/mkcerts.sh"),
                        self.certs], check=True, stdout=subprocess.DEVNULL)

    def bin(self, name):
        return os.path.join(self.build, name)

    def cert(self, name):
        return os.path.join(self.certs, name)

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop(grace=5)
        self.procs = []


class Stage:
    """One side in one scenario: its own Kafka, stand-in and record."""

    def __init__(self, ctx, label):
        ctx.run_no += 1
        self.ctx = ctx
        self.label = label
        self.dir = os.path.join(ctx.tmp, "%02d-%s" % (ctx.run_no, label))
        os.makedirs(self.dir)
        self.record = os.path.join(self.dir, "apns.jsonl")
        self.brokers = None
        self.apns_port = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def start_kafka(self):
        bootstrap = self.path("bootstrap")
        argv = [self.ctx.bin("mock-kafka"), "--bootstrap-file", bootstrap]
        for t in TOPICS:
            argv += ["--topic", t]
        Proc(self.label + "-kafka", argv, self.ctx)
        if not wait_for("mock Kafka", 20, lambda: os.path.exists(bootstrap)
                        and os.path.getsize(bootstrap) > 0):
            raise RuntimeError("mock Kafka did not start")
        with open(bootstrap) as f:
            self.brokers = f.read().strip()

    def start_standin(self, delay_ms=0, max_streams=None):
        port_file = self.path("apns.port")
        open(self.record, "w").close()
        argv = [self.ctx.bin("apns-standin"),
                "--cert", self.ctx.cert("server.crt"),
                "--key", self.ctx.cert("server.key"),
                "--auth-key", self.ctx.cert("AuthKey.pub.pem"),
                "--key-id", KEY_ID, "--team-id", TEAM_ID, "--topic", BUNDLE,
                "--record", self.record, "--port", "0",
                "--port-file", port_file]
        if delay_ms:
            argv += ["--delay-ms", str(delay_ms)]
        if max_streams:
            argv += ["--max-streams", str(max_streams)]
        Proc(self.label + "-standin", argv, self.ctx)
        if not wait_for("APNs stand-in", 20, lambda: os.path.exists(port_file)
                        and os.path.getsize(port_file) > 0):
            raise RuntimeError("APNs stand-in did not start")
        with open(port_file) as f:
            self.apns_port = int(f.read().strip())

    def produce_file(self, topic, lines):
        """Produces "key|value" lines with one kcat; returns when done."""
        path = self.path("events-%s" % topic)
        with open(path, "w") as f:
            f.writelines(lines)
        subprocess.run(["kcat", "-b", self.brokers, "-P", "-t", topic,
                        "-K", "|", "-l", path], check=True)

    def producer(self, topic):
        """A kcat that produces what is written to its stdin, at once."""
        return Producer(self, topic)


class Producer:
    """kcat -P fed through a pipe. kcat reads its input in 4096-byte
    blocks and keeps the end of a partial block until more arrives, which
    delays the last events of a chunk by a whole chunk interval; every
    write is padded to a block with empty lines, which kcat skips."""

    def __init__(self, stage, topic):
        self.proc = Proc("%s-kcat-%s" % (stage.label, topic),
                         ["kcat", "-b", stage.brokers, "-P", "-t", topic,
                          "-K", "|", "-X", "linger.ms=1"],
                         stage.ctx, stdin=subprocess.PIPE)
        self.fd = self.proc.p.stdin.fileno()

    def write(self, lines):
        data = "".join(lines).encode()
        data += b"\n" * (-len(data) % KCAT_BLOCK)
        os.write(self.fd, data)

    def close(self):
        self.proc.p.stdin.close()
        self.proc.wait_exit(30)


# ---- the stand-in's record -----------------------------------------------

class Tail:
    """Counts the record's lines as they come, cheaply (no parsing), so
    that watching a run costs the machine almost nothing."""

    CANCEL = b'\\"pushType\\":2'

    def __init__(self, path):
        self.f = open(path, "rb")
        self.lines = 0
        self.cancels = 0
        self.partial = b""
        self.grew_at = time.time()

    def poll(self):
        data = self.f.read()
        if data:
            self.grew_at = time.time()
            data = self.partial + data
            cut = data.rfind(b"\n") + 1
            self.partial = data[cut:]
            whole = data[:cut]
            self.lines += whole.count(b"\n")
            self.cancels += whole.count(self.CANCEL)
        return self.lines

    def quiet_for(self):
        return time.time() - self.grew_at


HEAD_RE = re.compile(rb'^\{"ts_ms":(\d+),"conn":(\d+),"stream":\d+,'
                     rb'"status":(\d+)')
MSGID_RE = re.compile(rb'\\"_j_msgid\\":(\d+)')
TYPE_RE = re.compile(rb'\\"pushType\\":(\d)')


def read_record(path):
    """(ts_ms, status, conn, msgid, push type) for each request."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            m = HEAD_RE.match(line)
            if m is None:
                continue
            mid = MSGID_RE.search(line)
            typ = TYPE_RE.search(line)
            out.append((int(m.group(1)), int(m.group(3)), int(m.group(2)),
                        int(mid.group(1)) if mid else None,
                        int(typ.group(1)) if typ else None))
    return out


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def accepted(recs):
    return [r for r in recs if r[1] == 200]


def start_counting(proc):
    """CPU spent from now on is the work's: start-up and group join are
    left out, as they are not a cost per push."""
    if not proc.counting:
        proc.cpu0 = proc.cpu_s()
        proc.counting = True


def cost(res, proc, pushes):
    """Adds CPU per 10k pushes and peak RSS of proc to res."""
    cpu = proc.cpu_s() - proc.cpu0
    res["cpu_s"] = round(cpu, 3)
    res["cpu_per_10k"] = cpu / pushes * 10000 if pushes else None
    res["rss_mb"] = proc.peak_rss_mb()


def span(res, ok, t0=None):
    ts = sorted(r[0] for r in ok)
    res["accepted"] = len(ok)
    res["connections_used"] = len({r[2] for r in ok})
    if len(ts) > 1 and ts[-1] > ts[0]:
        res["pushes_per_s"] = len(ts) / ((ts[-1] - ts[0]) / 1000.0)
    if t0 is not None and ts:
        res["start_to_last_s"] = ts[-1] / 1000.0 - t0


# ---- the sides -----------------------------------------------------------

def h2load_streams(ctx, max_streams):
    per_conn = -(-ctx.args.inflight // ctx.args.connections)
    return min(max_streams, per_conn)


def run_ceiling(ctx, stage, evs, max_streams):
    ev = evs[0]
    body = stage.path("body.json")
    with open(body, "w") as f:
        f.write(apns_body(ev))
    jwt = subprocess.run(
        [sys.executable, os.path.join(SRC, "tests/tools/jwt_for_test.py"),
         ctx.cert("AuthKey.p8"), KEY_ID, TEAM_ID, str(int(time.time()))],
        check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    url = "https://127.0.0.1:%d/3/device/%s" % (stage.apns_port,
                                                 ev["device_tokens"][0])
    argv = ["h2load", "-n", str(len(evs)), "-c", str(ctx.args.connections),
            "-m", str(h2load_streams(ctx, max_streams)), "-d", body,
            "-H", "authorization: bearer " + jwt,
            "-H", "apns-topic: " + BUNDLE, "-H", "apns-push-type: alert",
            "-H", "apns-priority: 10",
            "-H", "apns-expiration: %d" % apns_expiration(ev),
            "-H", "apns-collapse-id: " + ev["call_id"],
            "-H", "apns-id: " + str(uuid.uuid4()),
            "-H", "content-type: application/json", url]
    t0 = time.time()
    proc = Proc(stage.label + "-h2load", argv, ctx)
    proc.wait_exit(600)
    res = {"h2load_argv": " ".join(argv[:8] + ["..."])}
    out = proc.text()
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if m:
        res["own_req_per_s"] = float(m.group(1))
    m = re.search(r"status codes: (\d+) 2xx", out)
    if m:
        res["own_2xx"] = int(m.group(1))
    return finish_oneshot(stage, proc, res, t0)


def run_transport(ctx, stage, evs):
    pushes = stage.path("pushes.tsv")
    with open(pushes, "w") as f:
        for ev in evs:
            f.write("%d\t%s\t%s\t%d\t%s\n" % (
                ev["_j_msgid"], ev["device_tokens"][0], ev["call_id"],
                apns_expiration(ev), apns_body(ev)))
    argv = [ctx.bin("transport-bench"),
            "--url", "https://127.0.0.1:%d" % stage.apns_port,
            "--ca", ctx.cert("server.crt"), "--key", ctx.cert("AuthKey.p8"),
            "--key-id", KEY_ID, "--team-id", TEAM_ID, "--topic", BUNDLE,
            "--pushes", pushes,
            "--connections", str(ctx.args.connections),
            "--inflight", str(ctx.args.inflight)]
    t0 = time.time()
    proc = Proc(stage.label + "-transport", argv, ctx)
    proc.wait_exit(600)
    res = {}
    for line in reversed(proc.text().splitlines()):
        try:
            res["own_pushes_per_s"] = json.loads(line)["pushes_per_s"]
            break
        except (ValueError, KeyError, TypeError):
            continue
    else:
        note("transport-bench said: %s" % open(proc.err).read().strip())
    return finish_oneshot(stage, proc, res, t0)


def finish_oneshot(stage, proc, res, t0):
    if proc.p.returncode != 0:
        note("%s exited %s: %s" % (proc.name, proc.p.returncode,
                                   open(proc.err).read().strip()[-300:]))
    recs = read_record(stage.record)
    ok = accepted(recs)
    span(res, ok, t0)
    res["requests"] = len(recs)
    cost(res, proc, len(ok))
    return res


def start_alternative(ctx, stage):
    env = dict(os.environ)
    env.update({
        "BROKERS": stage.brokers, "GROUP": "node-alt",
        "FETCH_WAIT_MS": str(FETCH_WAIT_MS),
        "APNS_HOST": "127.0.0.1", "APNS_PORT": str(stage.apns_port),
        "APNS_CA_FILE": ctx.cert("server.crt"), "APNS_TOPIC": BUNDLE,
        "APNS_KEY_FILE": ctx.cert("AuthKey.p8"), "APNS_KEY_ID": KEY_ID,
        "APNS_TEAM_ID": TEAM_ID,
        "APNS_CONNECTIONS": str(ctx.args.connections),
        "MAX_INFLIGHT": str(ctx.args.inflight),
        "PARTITIONS_CONCURRENTLY": str(2 * PARTITIONS),
    })
    proc = Proc(stage.label + "-node", ["node",
                                        os.path.join(NODE_DIR, "worker.js")],
                ctx, env=env)
    proc.ready = lambda: '"partitions assigned"' in proc.text()
    return proc


def start_callpush(ctx, stage):
    port = free_port()
    env = dict(os.environ)
    env.update({
        "CALLPUSH_BROKERS": stage.brokers,
        "CALLPUSH_APNS_URL": "https://127.0.0.1:%d" % stage.apns_port,
        "CALLPUSH_APNS_CA_FILE": ctx.cert("server.crt"),
        "CALLPUSH_APNS_TOPIC": BUNDLE,
        "CALLPUSH_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "CALLPUSH_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "CALLPUSH_KAFKA_FETCH_WAIT_MAX_MS": str(FETCH_WAIT_MS),
        "CALLPUSH_HTTP_ADDR": "127.0.0.1:%d" % port,
        "CALLPUSH_APNS_KEY_FILE": ctx.cert("AuthKey.p8"),
        "CALLPUSH_APNS_KEY_ID": KEY_ID,
        "CALLPUSH_APNS_TEAM_ID": TEAM_ID,
    })
    argv = [ctx.bin("callpush"),
            "--apns-connections", str(ctx.args.connections),
            "--max-inflight", str(ctx.args.inflight),
            "--log-level", ctx.args.callpush_log_level]
    proc = Proc(stage.label + "-callpush", argv, ctx, env=env)

    def ready():
        try:
            with urllib.request.urlopen(
                    "http://127.0.0.1:%d/readyz" % port, timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    proc.ready = ready
    return proc


def start_worker(ctx, stage, side):
    if side == "alternative":
        return start_alternative(ctx, stage)
    return start_callpush(ctx, stage)


def wait_ready(worker):
    if not wait_for(worker.name + " to be assigned partitions", 60,
                    lambda: not worker.alive() or worker.ready(), 0.1):
        raise RuntimeError("%s never got partitions" % worker.name)
    if not worker.alive():
        raise RuntimeError("%s exited: %s" % (
            worker.name, open(worker.err).read().strip()[-300:]))
    # The assignment is logged before the first fetch is answered.
    time.sleep(1.0)


def wait_pushes(worker, tail, expected, timeout, done=None):
    """Until the record has expected requests (or done() says so)."""
    def check():
        if tail.poll() > 0 and worker.alive():
            start_counting(worker)
        if done is not None and done():
            return True
        return tail.lines >= expected or not worker.alive()
    ok = wait_for("%d pushes from %s" % (expected, worker.name), timeout,
                  check, 0.2)
    if not worker.alive():
        note("%s exited early: %s" % (worker.name,
                                      open(worker.err).read()[-300:]))
    return ok


# ---- scenarios -----------------------------------------------------------

def drain(ctx, side, label, evs, delay_ms=0, max_streams=None):
    """Sends evs as fast as the side can: the throughput and slow runs."""
    stage = Stage(ctx, "%s-%s" % (label, side))
    try:
        stage.start_standin(delay_ms, max_streams)
        streams = max_streams or 1000
        if side == "ceiling":
            return run_ceiling(ctx, stage, evs, streams)
        if side == "transport":
            return run_transport(ctx, stage, evs)

        stage.start_kafka()
        stage.produce_file("call.invite", [kafka_line(e) for e in evs])
        tail = Tail(stage.record)
        t0 = time.time()
        worker = start_worker(ctx, stage, side)
        res = {}
        res["complete"] = wait_pushes(worker, tail, len(evs),
                                      60 + len(evs) / 500.0)
        if worker.alive():
            cost(res, worker, tail.lines)
        worker.stop()
        ok = accepted(read_record(stage.record))
        span(res, ok, t0)
        res["cpu_per_10k"] = (res["cpu_s"] / len(ok) * 10000
                              if ok and "cpu_s" in res else None)
        return res
    finally:
        ctx.stop_all()
        cleanup(ctx, stage)


def cleanup(ctx, stage):
    if not ctx.args.keep:
        shutil.rmtree(stage.dir, ignore_errors=True)


def traffic(ctx, name, first_call, count):
    """The invites of one scenario, made once so that every side gets the
    same; they ring for 600 s, longer than a whole run."""
    if name not in ctx.traffic:
        ctx.traffic[name] = invites(first_call, count,
                                    int(time.time() * 1000))
    return ctx.traffic[name]


def scenario_throughput(ctx, side, sizes):
    evs = traffic(ctx, "throughput", 0, sizes["throughput_n"])
    return drain(ctx, side, "throughput", evs)


def scenario_slow(ctx, side, sizes):
    evs = traffic(ctx, "slow", 10000000, sizes["slow_n"])
    res = drain(ctx, side, "slow", evs, sizes["slow_delay_ms"],
                sizes["slow_streams"])
    bound = slow_bound(ctx, sizes)
    if res.get("pushes_per_s"):
        res["share_of_bound"] = res["pushes_per_s"] / bound
    return res


def slow_bound(ctx, sizes):
    streams = min(ctx.args.connections * sizes["slow_streams"],
                  ctx.args.inflight)
    return streams / (sizes["slow_delay_ms"] / 1000.0)


class KafkaFloor:
    """A kcat consumer of its own group, reading the latency scenario's
    stream beside the worker and noting when each event arrives: the
    latency of Kafka alone (producer, mock cluster, one fetch), below which
    no consumer of the same stream can push. kcat waits at most
    FETCH_WAIT_MS per fetch, as the workers do."""

    def __init__(self, stage):
        self.lat = []
        self.p = subprocess.Popen(
            ["kcat", "-b", stage.brokers, "-G", "latency-floor",
             "-X", "fetch.wait.max.ms=%d" % FETCH_WAIT_MS, "-u",
             "-f", "%s\n", "call.invite"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            now = time.time() * 1000
            at = line.find(b'"created_at":')
            if at >= 0:
                end = at + 13
                while end < len(line) and line[end:end + 1].isdigit():
                    end += 1
                self.lat.append(now - int(line[at + 13:end]))

    def stop(self):
        self.p.kill()
        self.p.wait()
        return {"p50_ms": pct(self.lat, 50), "p99_ms": pct(self.lat, 99),
                "max_ms": max(self.lat) if self.lat else None,
                "accepted": len(self.lat)}


def scenario_latency(ctx, side, sizes):
    rate, secs = sizes["latency_rate"], sizes["latency_s"]
    total = rate * secs
    stage = Stage(ctx, "latency-" + side)
    try:
        stage.start_kafka()
        stage.start_standin()
        worker = start_worker(ctx, stage, side)
        producer = stage.producer("call.invite")
        wait_ready(worker)
        floor = KafkaFloor(stage) if side == "callpush" else None
        tail = Tail(stage.record)
        start_counting(worker)
        # The floor's consumer joins its group before any event is sent.
        time.sleep(5 if floor is not None else 0)

        created = {}
        sent, start = 0, time.time()
        while sent < total:
            now = time.time()
            due = min(total, int((now - start) * rate) + 1)
            now_ms = int(now * 1000)
            lines = []
            for call in range(20000000 + sent, 20000000 + due):
                ev = event("invite", call, FIRST_MSGID + call, now_ms)
                created[ev["_j_msgid"]] = now_ms
                lines.append(kafka_line(ev))
            if lines:
                producer.write(lines)
            sent = due
            tail.poll()
            chunk = ctx.args.chunk_ms / 1000.0
            nxt = start + (int((now - start) / chunk) + 1) * chunk
            time.sleep(max(0.0, nxt - time.time()))
        produced_s = time.time() - start
        producer.close()

        res = {"offered_per_s": rate, "produced_s": round(produced_s, 2)}
        res["complete"] = wait_pushes(worker, tail, total,
                                      60 + total / 1000.0)
        if worker.alive():
            cost(res, worker, tail.lines)
        worker.stop()

        ok = accepted(read_record(stage.record))
        lat = [r[0] - created[r[3]] for r in ok if r[3] in created]
        span(res, ok)
        res["cpu_per_10k"] = (res["cpu_s"] / len(ok) * 10000
                              if ok and "cpu_s" in res else None)
        res["p50_ms"] = pct(lat, 50)
        res["p99_ms"] = pct(lat, 99)
        res["max_ms"] = max(lat) if lat else None
        if floor is not None:
            res["kafka_floor"] = floor.stop()
        return res
    finally:
        ctx.stop_all()
        cleanup(ctx, stage)


def scenario_cancel(ctx, side, sizes):
    n, ncancel = sizes["cancel_backlog"], sizes["cancels"]
    first = 30000000
    evs = traffic(ctx, "cancel", first, n)
    # Calls spread evenly over the backlog, from its head to its tail.
    targets = [first + (k * n) // ncancel + n // (2 * ncancel)
               for k in range(ncancel)]
    stage = Stage(ctx, "cancel-" + side)
    try:
        stage.start_kafka()
        stage.start_standin()
        worker = start_worker(ctx, stage, side)
        producer = stage.producer("call.cancel")
        wait_ready(worker)
        tail = Tail(stage.record)
        start_counting(worker)

        stage.produce_file("call.invite", [kafka_line(e) for e in evs])
        cancel_created = {}
        cancel_msgid = {}
        for k, call in enumerate(targets):
            now_ms = int(time.time() * 1000)
            ev = event("cancel", call, FIRST_MSGID + 50000000 + k, now_ms)
            cancel_created[ev["_j_msgid"]] = now_ms
            cancel_msgid[call] = ev["_j_msgid"]
            producer.write([kafka_line(ev)])
            time.sleep(sizes["cancel_gap_ms"] / 1000.0)
        producer.close()

        res = {"backlog": n, "cancels": ncancel}
        res["complete"] = wait_pushes(
            worker, tail, n + ncancel, 60 + n / 500.0,
            lambda: tail.cancels >= ncancel and tail.quiet_for() > 1.5)
        if worker.alive():
            cost(res, worker, tail.lines)
        worker.stop()

        recs = accepted(read_record(stage.record))
        invite_at, cancel_at = {}, {}
        for ts, _, _, msgid, typ in recs:
            if typ == 2:
                cancel_at[msgid] = ts
            elif typ == 1:
                invite_at[msgid - FIRST_MSGID] = ts
        lat = [cancel_at[m] - c for m, c in cancel_created.items()
               if m in cancel_at]
        res["accepted"] = len(recs)
        res["invites_pushed"] = len(invite_at)
        res["cancels_pushed"] = len(cancel_at)
        res["p50_ms"] = pct(lat, 50)
        res["p99_ms"] = pct(lat, 99)
        res["max_ms"] = max(lat) if lat else None
        res["invites_after_cancel_created"] = sum(
            1 for call in targets
            if call in invite_at
            and invite_at[call] > cancel_created[cancel_msgid[call]])
        res["rung_after_cancel"] = sum(
            1 for call in targets
            if call in invite_at and cancel_msgid[call] in cancel_at
            and invite_at[call] > cancel_at[cancel_msgid[call]])
        res["cpu_per_10k"] = (res["cpu_s"] / len(recs) * 10000
                              if recs and "cpu_s" in res else None)
        return res
    finally:
        ctx.stop_all()
        cleanup(ctx, stage)


RUNNERS = {"throughput": scenario_throughput, "latency": scenario_latency,
           "cancel": scenario_cancel, "slow": scenario_slow}


# ---- the table -----------------------------------------------------------

# (scenario, key, label, kind): kind "rate" (higher is better) and "cost"
# (lower is better) get ratios; "count" rows do not.
def row_specs(ctx, sizes):
    s = sizes
    slow = "slow %d ms x %d streams" % (s["slow_delay_ms"], s["slow_streams"])
    lat = "latency @%d/s" % s["latency_rate"]
    can = "cancel behind %d" % s["cancel_backlog"]
    return [
        ("throughput", "accepted", "throughput: pushes accepted (of %d)"
         % s["throughput_n"], "count"),
        ("throughput", "pushes_per_s",
         "throughput: pushes/s, 1st->last acceptance", "rate"),
        ("throughput", "start_to_last_s",
         "throughput: s from start to last push", "cost"),
        ("throughput", "connections_used",
         "throughput: APNs connections used", "count"),
        ("throughput", "cpu_per_10k", "throughput: CPU s per 10k pushes",
         "cost"),
        ("throughput", "rss_mb", "throughput: peak RSS MB", "cost"),
        ("latency", "accepted", "%s: pushes accepted (of %d)"
         % (lat, s["latency_rate"] * s["latency_s"]), "count"),
        ("latency", "pushes_per_s", "%s: pushes/s achieved" % lat,
         "rate"),
        ("latency", "p50_ms", "%s: p50 ms" % lat, "cost"),
        ("latency", "p99_ms", "%s: p99 ms" % lat, "cost"),
        ("latency", "max_ms", "%s: max ms" % lat, "cost"),
        ("latency", "cpu_per_10k", "%s: CPU s per 10k pushes" % lat, "cost"),
        ("latency", "rss_mb", "%s: peak RSS MB" % lat, "cost"),
        ("cancel", "cancels_pushed", "%s: cancels accepted (of %d)"
         % (can, s["cancels"]), "count"),
        ("cancel", "p50_ms", "%s: cancel p50 ms" % can, "cost"),
        ("cancel", "p99_ms", "%s: cancel p99 ms" % can, "cost"),
        ("cancel", "max_ms", "%s: cancel max ms" % can, "cost"),
        ("cancel", "rung_after_cancel",
         "%s: invites after their cancel (of %d)" % (can, s["cancels"]),
         "count"),
        ("cancel", "invites_after_cancel_created",
         "%s: invites after cancel created" % can, "count"),
        ("cancel", "invites_pushed", "%s: invites pushed (of %d)"
         % (can, s["cancel_backlog"]), "count"),
        ("cancel", "cpu_per_10k", "%s: CPU s per 10k pushes" % can, "cost"),
        ("cancel", "rss_mb", "%s: peak RSS MB" % can, "cost"),
        ("slow", "accepted", "%s: pushes accepted (of %d)"
         % (slow, s["slow_n"]), "count"),
        ("slow", "pushes_per_s", "%s: pushes/s (bound %d)"
         % (slow, slow_bound(ctx, s)), "rate"),
        ("slow", "share_of_bound", "%s: share of bound" % slow, "rate"),
        ("slow", "cpu_per_10k", "%s: CPU s per 10k pushes" % slow, "cost"),
        ("slow", "rss_mb", "%s: peak RSS MB" % slow, "cost"),
    ]


RATIOS = (("callpush/alternative", "alternative"),
          ("callpush/transport", "transport"),
          ("callpush/ceiling", "ceiling"))


def build_rows(ctx, sizes, results):
    rows = []
    for scen, key, label, kind in row_specs(ctx, sizes):
        if scen not in results:
            continue
        row = {"scenario": scen, "figure": key, "label": label, "kind": kind}
        for side in SIDES:
            row[side] = results[scen].get(side, {}).get(key)
        for name, other in RATIOS:
            a, b = row["callpush"], row[other]
            row[name] = (a / b if kind != "count" and a is not None
                         and b not in (None, 0) else None)
        rows.append(row)
    return rows


def fmt(v, key):
    if v is None:
        return "-"
    if key == "share_of_bound":
        return "%.0f%%" % (v * 100)
    if key in ("cpu_per_10k",):
        return "%.2f" % v
    if isinstance(v, float) and abs(v) < 10 and v != int(v):
        return "%.1f" % v
    return "{:,.0f}".format(v)


def ratio_text(v):
    """A ratio; very small ones as 1/N, which "0.00x" would hide."""
    if v is None:
        return "-"
    if 0 < v < 0.05:
        return "1/%.0fx" % (1 / v)
    return "%.2fx" % v


def print_table(rows, out):
    heads = ["figure", "ceiling", "transport", "alternative", "callpush",
             "cp/alt", "cp/trans", "cp/ceil"]
    width = max([len(r["label"]) for r in rows] + [20])
    line = "%-*s" % (width, heads[0]) + "".join("%12s" % h for h in heads[1:])
    out.write(line + "\n" + "-" * len(line) + "\n")
    last = None
    for r in rows:
        if last is not None and r["scenario"] != last:
            out.write("\n")
        last = r["scenario"]
        cells = [fmt(r[s], r["figure"]) for s in SIDES]
        cells += [ratio_text(r[n]) for n, _ in RATIOS]
        out.write("%-*s" % (width, r["label"]) +
                  "".join("%12s" % c for c in cells) + "\n")


# ---- setup ---------------------------------------------------------------

def ensure_binaries(build):
    names = ("callpush", "apns-standin", "mock-kafka", "transport-bench")
    missing = [n for n in names if not os.path.exists(os.path.join(build, n))]
    if not missing:
        return
    note("building %s in %s" % (", ".join(missing), build))
    if os.path.exists(os.path.join(build, "CMakeCache.txt")):
        subprocess.run(["cmake", "--build", build, "-j", str(os.cpu_count()),
                        "--target"] + list(missing), check=True,
                       stdout=subprocess.DEVNULL)
    else:
        subprocess.run(["bash", os.path.join(SRC, "scripts/build.sh"), build],
                       check=True, stdout=subprocess.DEVNULL)


def ensure_node():
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        note("npm ci in %s" % NODE_DIR)
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"],
                           cwd=NODE_DIR, stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            return "npm ci failed"
    return None


def parse_args(argv):
    p = argparse.ArgumentParser(
        usage=argparse.SUPPRESS, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=",".join(SCENARIOS))
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--inflight", type=int, default=1000)
    p.add_argument("--chunk-ms", type=int, default=CHUNK_MS)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--build", default=os.environ.get(
        "CALLPUSH_BUILD", os.path.join(SRC, "build")))
    p.add_argument("--callpush-log-level", default="warn",
                   choices=("debug", "info", "warn", "error"))
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    args.sides = [s for s in args.sides.split(",") if s]
    for s in args.only:
        if s not in SCENARIOS:
            p.error("unknown scenario %s (one of %s)" % (s, ", ".join(
                SCENARIOS)))
    for s in args.sides:
        if s not in SIDES:
            p.error("unknown side %s (one of %s)" % (s, ", ".join(SIDES)))
    if args.connections < 1 or args.inflight < 1 or args.chunk_ms < 1:
        p.error("--connections, --inflight and --chunk-ms must be at "
                "least 1")
    args.build = os.path.abspath(args.build)
    return args


def main(argv):
    args = parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    ensure_binaries(args.build)
    if "alternative" in args.sides:
        why = ensure_node()
        if why is not None:
            note("%s: the alternative side is skipped" % why)
            args.sides.remove("alternative")

    ctx = Context(args)
    ctx.traffic = {}
    results, errors = {}, []
    started = time.time()
    try:
        for scen in SCENARIOS:
            if scen not in args.only:
                continue
            results[scen] = {}
            for side in SCENARIO_SIDES[scen]:
                if side not in args.sides:
                    continue
                t = time.time()
                try:
                    results[scen][side] = RUNNERS[scen](ctx, side, sizes)
                except (RuntimeError, OSError,
                        subprocess.CalledProcessError) as e:
                    errors.append("%s/%s: %s" % (scen, side, e))
                    note("%s/%s failed: %s" % (scen, side, e))
                    continue
                r = results[scen][side]
                if "kafka_floor" in r:
                    # Shown in the ceiling column: nothing can be faster.
                    results[scen]["ceiling"] = r.pop("kafka_floor")
                note("%s/%s: %s accepted, %s pushes/s, %.0f s" % (
                    scen, side, r.get("accepted"),
                    fmt(r.get("pushes_per_s"), ""), time.time() - t))
    except KeyboardInterrupt:
        note("interrupted; showing what ran")
    finally:
        ctx.stop_all()

    rows = build_rows(ctx, sizes, results)
    out = sys.stdout
    out.write("\ncallpush compared (%s sizes; %d connections, %d in flight "
              "for every side; %d partitions; latency fed every %d ms; "
              "%.0f s)\n" % (
                  "quick" if args.quick else "default", args.connections,
                  args.inflight, PARTITIONS, args.chunk_ms,
                  time.time() - started))
    out.write("pushes/s from the first to the last acceptance at the "
              "stand-in; latencies from created_at;\nratios are callpush "
              "divided by the other side.\n\n")
    print_table(rows, out)
    for e in errors:
        out.write("error: %s\n" % e)
    if args.keep:
        out.write("scratch kept in %s\n" % ctx.tmp)
    else:
        shutil.rmtree(ctx.tmp, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": sizes, "connections": args.connections,
                       "inflight": args.inflight, "partitions": PARTITIONS,
                       "callpush_log_level": args.callpush_log_level,
                       "rows": rows, "details": results, "errors": errors},
                      f, indent=1)
            f.write("\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
