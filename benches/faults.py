#!/usr/bin/env python3
"""The fault suite: each scenario runs a release Estafeta (role all) against a Redis of its own
(AOF, appendfsync always) under paced load with a real sink, injects one fault, and prints one
row: events acknowledged (202), delivered (distinct ids at the sink), lost (acknowledged and
never delivered), duplicates (deliveries beyond the first), and the seconds from the end of the
fault until the last event acknowledged before it was delivered.

Run through benches/faults.sh (which builds the binary). Loopback only; every run is bounded.
Env: ESTAFETA_BIN (default ./target/release/estafeta), FAULT_RATE (events/s, default 300),
FAULTS (comma-separated scenario names, default all).
"""

import base64
import http.client
import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("ESTAFETA_BIN", "./target/release/estafeta")
RATE = int(os.environ.get("FAULT_RATE", "300"))
ADMIN_TOKEN = secrets.token_urlsafe(32)
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
WAIT = 120  # longest wait for deliveries after a scenario's load, seconds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, work):
        self.dir = tempfile.mkdtemp(dir=work)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", self.dir, "--enable-debug-command", "local",
             "--logfile", os.path.join(self.dir, "redis.log")])
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip()

    def info(self, section):
        fields = (line.split(":", 1) for line in self.cli("INFO", section).splitlines())
        return {k: v.strip() for k, v in (f for f in fields if len(f) == 2)}

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"


class Sink:
    """Counts deliveries per webhook-id; answers after `delay` seconds (so deliveries are in
    flight when a fault strikes), and 503 while `down`."""

    def __init__(self, delay=0.05):
        self.delay = delay
        self.lock = threading.Lock()
        self.first = {}  # webhook-id -> time of the first delivery
        self.last = {}  # webhook-id -> time of the latest delivery
        self.count = {}
        self.down = False
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                time.sleep(sink.delay)
                if sink.down:
                    self.send_response(503)
                else:
                    wid = self.headers.get("webhook-id", "")
                    with sink.lock:
                        sink.count[wid] = sink.count.get(wid, 0) + 1
                        sink.first.setdefault(wid, time.monotonic())
                        sink.last[wid] = time.monotonic()
                    self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A gateway killed mid-request leaves a broken pipe; not worth a traceback.
        self.server.handle_error = lambda *_: None
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


class Gateway:
    def __init__(self, work, name, redis_url, extra=""):
        self.plain, self.admin = free_port(), free_port()
        self.log = os.path.join(work, f"{name}.log")
        self.config = os.path.join(work, f"{name}.toml")
        with open(self.config, "w") as f:
            f.write(f"""
[edge]
plain_listen = "127.0.0.1:{self.plain}"
[admin]
listen = "127.0.0.1:{self.admin}"
token = "env:BENCH_ADMIN_TOKEN"
[redis]
url = "{redis_url}"
prefix = "faults"
[security]
master_key = "env:BENCH_MASTER_KEY"
allow_private_targets = true
[log]
level = "warn"
{extra}
""")
        self.proc = None
        self.start()

    def start(self):
        env = dict(os.environ, BENCH_ADMIN_TOKEN=ADMIN_TOKEN, BENCH_MASTER_KEY=MASTER_KEY)
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.config], env=env,
                                     stderr=open(self.log, "a"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request(self.plain, "GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become ready; see {self.log}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(port, method, path, body=None, token=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def setup(gw, sink):
    """A tenant with one target at the sink; its token."""
    status, tenant = request(gw.admin, "POST", "/admin/tenants", {"name": "faults"}, ADMIN_TOKEN)
    assert status == 201, tenant
    status, target = request(gw.admin, "POST", f"/admin/tenants/{tenant['id']}/targets",
                             {"url": f"http://127.0.0.1:{sink.port}/hook", "events": ["*"]},
                             ADMIN_TOKEN)
    assert status == 201, target
    return tenant["token"]


class Load:
    """Posts events at `rate`/s from `threads` keep-alive clients spread over `ports`; keeps
    the id and time of every 202."""

    def __init__(self, ports, token, rate=RATE, threads=6, total=None):
        self.ports, self.token = ports, token
        self.acked = {}  # id -> time acknowledged
        self.statuses = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sent = 0
        self.total = total
        self.interval = threads / rate
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def take(self):
        with self.lock:
            if self.total is not None and self.sent >= self.total:
                return False
            self.sent += 1
            return True

    def run(self, i):
        conn = None
        port = None
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set() and self.take():
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ports = [p for p in self.ports if p is not None]
            if not ports:
                time.sleep(0.05)
                continue
            if conn is None or port not in ports:
                port = ports[(i + n) % len(ports)]
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            n += 1
            try:
                conn.request("POST", "/v1/events/fault.test", body=json.dumps({"i": i, "n": n}),
                             headers={"authorization": f"Bearer {self.token}",
                                      "content-type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                with self.lock:
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                    if r.status == 202:
                        self.acked[json.loads(data)["id"]] = time.monotonic()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.statuses["conn"] = self.statuses.get("conn", 0) + 1
                conn.close()
                conn = None
                time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()

    def wait(self):
        for t in self.threads:
            t.join()


def settle(load, sink, acked_filter=None):
    """Waits until every acknowledged event reached the sink (or WAIT passes)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with sink.lock:
            missing = [i for i in load.acked if i not in sink.first]
        if not missing:
            break
        time.sleep(0.2)
    time.sleep(1)  # late duplicates


def row(name, load, sink, fault_end, before=None, note=""):
    with sink.lock, load.lock:
        acked = dict(load.acked)
        delivered = {i: t for i, t in sink.first.items() if i in acked}
        dups = sum(sink.count[i] - 1 for i in delivered)
    lost = len(acked) - len(delivered)
    # Seconds from the end of the fault until the last event acknowledged before it arrived.
    older = [delivered[i] for i, t in acked.items() if i in delivered and t < (before or fault_end)]
    recover = max(0.0, max(older) - fault_end) if older else 0.0
    # Deliveries sent again (taken over from a dead consumer) show when the takeover happened.
    with sink.lock:
        again = [sink.last[i] for i in delivered if sink.count[i] > 1]
    if again:
        note = f"{note}{'; ' if note else ''}last repeat {max(again) - fault_end:.1f} s after"
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items(), key=str))
    print(f"| {name} | {len(acked)} | {len(delivered)} | {lost} | {dups} | {recover:.1f} | "
          f"{note}{'; ' if note else ''}answers {statuses} |", flush=True)
    return lost


def scenario(work, title, fault, gateways=1):
    """Runs `fault(redis, gateways, load)` after 3 s of load, 3 s more of load after it, waits
    for the deliveries and prints the row. `fault` answers when it ended and a note."""
    redis, sink = Redis(work), Sink()
    gws = [Gateway(work, f"gw{i}", redis.url) for i in range(gateways)]
    load = Load([g.plain for g in gws], setup(gws[0], sink))
    time.sleep(3)
    started = time.monotonic()
    ended, note = fault(redis, gws, load)
    time.sleep(3)
    load.stop()
    settle(load, sink)
    lost = row(title, load, sink, ended, before=started, note=note)
    for g in gws:
        g.stop()
    redis.stop()
    sink.stop()
    return lost


def kill9_restart(redis, gws, load):
    killed = time.monotonic()
    gws[0].kill9()
    gws[0].start()
    restarted = time.monotonic()
    return restarted, f"restart took {restarted - killed:.1f} s"


def kill9_one_of_two(redis, gws, load):
    gws[0].kill9()
    load.ports[0] = None
    return time.monotonic(), ""


def redis_restart(redis, gws, load):
    redis.kill9()
    time.sleep(2)
    redis.start()
    return time.monotonic(), ""


def redis_stall(redis, gws, load):
    redis.cli("DEBUG", "SLEEP", "8")
    return time.monotonic(), ""


def redis_full(redis, gws, load):
    used = redis.info("memory")["used_memory"]
    redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis.cli("CONFIG", "SET", "maxmemory", str(used))
    time.sleep(4)
    redis.cli("CONFIG", "SET", "maxmemory", "0")
    return time.monotonic(), ""


def scenario_flushall(work):
    redis, sink = Redis(work), Sink()
    gw = Gateway(work, "flush", redis.url)
    token = setup(gw, sink)
    load = Load([gw.plain], token)
    time.sleep(3)
    redis.cli("FLUSHALL")
    flushed = time.monotonic()
    time.sleep(3)
    load.stop()
    settle(load, sink)
    # Events acknowledged before the flush and not yet delivered were deleted with Redis's data
    # by the operator: counted apart from `lost`, which covers what was acknowledged after it.
    with sink.lock, load.lock:
        wiped = sum(1 for i, t in load.acked.items() if t < flushed and i not in sink.first)
        for i, t in list(load.acked.items()):
            if t < flushed and i not in sink.first:
                del load.acked[i]
    lost = row("FLUSHALL under a running dispatcher", load, sink, flushed,
               note=f"{wiped} acknowledged just before the flush were in the flushed data")
    gw.stop(); redis.stop(); sink.stop()
    return lost


def scenario_target_down(work):
    redis, sink = Redis(work), Sink(delay=0)
    gw = Gateway(work, "down", redis.url)
    token = setup(gw, sink)
    sink.down = True
    load = Load([gw.plain], token, rate=500, threads=8, total=10_000)
    time.sleep(20)
    sink.down = False
    up = time.monotonic()
    load.wait()
    settle(load, sink)
    lost = row("target answering 503 for 20 s under 10,000 events, then back", load, sink, up,
               note="default retry policy")
    gw.stop(); redis.stop(); sink.stop()
    return lost


SCENARIOS = {
    "kill9_restart": lambda w: scenario(w, "kill -9 of the only gateway, restarted", kill9_restart),
    "kill9_one_of_two": lambda w: scenario(
        w, "kill -9 of one of two gateways (not restarted)", kill9_one_of_two, gateways=2),
    "redis_restart": lambda w: scenario(
        w, "Redis kill -9, restarted 2 s later (AOF always)", redis_restart),
    "redis_stall": lambda w: scenario(
        w, "Redis stalled 8 s (DEBUG SLEEP, command timeout 2 s)", redis_stall),
    "redis_full": lambda w: scenario(
        w, "Redis full (maxmemory, noeviction) for 4 s, then freed", redis_full),
    "flushall": scenario_flushall,
    "target_down": scenario_target_down,
}


def main():
    chosen = [s for s in os.environ.get("FAULTS", ",".join(SCENARIOS)).split(",") if s]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenarios: {unknown}; known: {list(SCENARIOS)}")
    print(f"fault suite: {RATE} events/s paced load, one target answering in 50 ms, {BIN}")
    print("| scenario | acked | delivered | lost | duplicates | recover s | notes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    lost = 0
    with tempfile.TemporaryDirectory() as work:
        for name in chosen:
            lost += SCENARIOS[name](work)
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
