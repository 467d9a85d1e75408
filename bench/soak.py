"""The nemesis soak: the whole stack under mixed load while processes and servers are killed.

    .venv/bin/python bench/soak.py --minutes 10        # by hand; writes its section of docs/reliability.md
    .venv/bin/python bench/soak.py --seconds 60 --no-write   # the suite's run (tests/test_soak.py)

Everything runs on servers of its own, never the shared ones: a private PostgreSQL
cluster (initdb into a temporary directory, a free port) and a private redis-server,
then `gunicorn -c config/gunicorn.py` (2 workers), a Celery worker and Celery beat,
as the Procfile starts them. Packets expire after a few seconds, so refunds run all along.

- Load: client threads send packets (PIN, Idempotency-Key, retried under the same key
  until the answer is not a 5xx), claim the newest packets (hot: many members at once),
  read packets and wallets, and poll the event feed when the service has one.
- Nemesis, in turn on a schedule: SIGKILL a gunicorn worker, SIGKILL the Celery worker
  (then start a new one), restart Redis, restart PostgreSQL (`pg_ctl stop`, then `start`),
  each server down for OUTAGE_SECONDS. After each fault it times how long until /readyz
  answers 200 again; at the end, the web, worker and beat processes must all still run.
- Checker, over the API only, every 2 s: the sum of every wallet balance plus the
  `remaining_amount` of every active and expiring packet equals the topups. The
  clients pause while it reads; a refund by the sweep in between is detected (two reads
  of the wallets differ) and the read repeated.
- At the end: the load stops, every packet must reach `finished` or `expired`, the sum
  of balances equals the topups, `manage.py reconcile` is clean, no packet has more
  than one refund, every event of the feed reached the soak's webhook receiver, and each
  packet has exactly one `packet.sent` and one `packet.finished` or `packet.expired`.
  A 5xx counts as a violation unless it came while PostgreSQL was down (and then it
  must be the JSON envelope); a request with no answer at all counts unless a gunicorn
  worker was killed at that moment.

The last line printed: SOAK RESULT: violations=N requests=N faults=N ...; exit status 0
when there were no violations.
"""

import argparse
import base64
import http.server
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PIN = "135790"
TOPUP = 1_000_000
USERS = 10
TTL_SECONDS = 6
SWEEP_SECONDS = 2
# How long after PostgreSQL is back a request may still meet a connection of before the restart.
PG_GRACE_SECONDS = 3.0
GUNICORN_GRACE_SECONDS = 2.0
# How long Redis and PostgreSQL stay down at their restart: a real restart takes seconds, and an instant one hid
# that Celery 5.7.0's worker exits when the broker is still away as it reconnects.
OUTAGE_SECONDS = 4.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, and not one handed out before: the servers bind theirs
    only later, so the kernel may offer the same free port twice (it did: gunicorn and
    PostgreSQL both got one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        self.name = name
        self.log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self.log.close()


def as_postgres(argv: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root; run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PrivatePostgres:
    """A PostgreSQL cluster of the soak's own: never the shared server."""

    def __init__(self, base: Path):
        self.dir = base / "pg"
        self.socket_dir = base / "pg-socket"
        self.port = free_port()
        for path in (self.dir, self.socket_dir):
            path.mkdir()
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        self.log_path = base / "postgres.log"
        if os.geteuid() == 0:
            self.log_path.touch()
            shutil.chown(self.log_path, "postgres", "postgres")
        subprocess.run(as_postgres(["initdb", "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                        f"-c synchronous_commit=off -c max_connections=100")

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(as_postgres(["pg_ctl", "-D", str(self.dir), "-l", str(self.log_path), "-w", "-t", "60",
                                    "-o", self.options, *args]), check=True, capture_output=True)

    def start(self) -> None:
        self.pg_ctl("start")

    def restart(self) -> None:
        self.pg_ctl("stop", "-m", "fast")
        time.sleep(OUTAGE_SECONDS)
        self.pg_ctl("start")

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass

    def url(self, database: str = "soak") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"


class PrivateRedis:
    def __init__(self, base: Path):
        self.port = free_port()
        self.base = base
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], dict(os.environ), self.base / "redis.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def restart(self) -> None:
        self.proc.kill()
        self.proc.log.close()
        time.sleep(OUTAGE_SECONDS)
        self.start()


class WebhookReceiver:
    """A Standard Webhooks receiver that takes everything: the webhook-id of each delivery it got."""

    def __init__(self):
        self.ids: set[str] = set()
        self.deliveries = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.ids.add(self.headers.get("webhook-id", ""))
                receiver.deliveries += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class Answer:
    op: str
    status: int | None
    at: float  # monotonic, when the request started
    ended: float = 0.0  # monotonic, when its answer (or the failure) came
    code: str | None = None
    clean: bool = True


@dataclass
class Soak:
    seconds: float
    base: Path
    web_port: int = field(default_factory=free_port)
    answers: list = field(default_factory=list)
    faults: list = field(default_factory=list)  # dicts: kind, at, recovered_after
    checks: list = field(default_factory=list)  # (at, ok, detail)
    violations: list = field(default_factory=list)
    pg_down: list = field(default_factory=list)  # (start, end) monotonic
    gunicorn_kills: list = field(default_factory=list)
    packets: dict = field(default_factory=dict)  # id -> total
    tokens: dict = field(default_factory=dict)  # username -> token
    group_id: str = ""
    topups: int = 0
    feed: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    # --- the stack ---------------------------------------------------------------------------------------

    def env(self) -> dict:
        return {
            **os.environ,
            # The test settings: the real services from the environment, with a fast password and PIN hasher (PBKDF2's
            # 0.3 s a send would make the load a hashing benchmark, and queue sends of one sender on its PIN row).
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": self.pg.url(),
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "CACHE_URL": f"redis://127.0.0.1:{self.redis.port}/1",
            "VAR_DIR": str(self.base / "var"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.base / "var" / "metrics"),
            "API_THROTTLE": "off",
            "REDPACKET_TTL_SECONDS": str(TTL_SECONDS),
            "REDPACKET_SWEEP_SECONDS": str(SWEEP_SECONDS),
            "WEB_BIND": f"127.0.0.1:{self.web_port}",
            "WEB_WORKERS": "2",
            "WEB_THREADS": "4",
            "WEB_GRACEFUL_TIMEOUT": "2",
            "DB_CONNECT_TIMEOUT": "2",
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }

    def start_stack(self) -> None:
        (self.base / "var" / "metrics").mkdir(parents=True)
        self.pg = PrivatePostgres(self.base)
        self.pg.start()
        subprocess.run(as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres", "soak"]),
                       check=True, capture_output=True)
        self.redis = PrivateRedis(self.base)
        self.redis.start()
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env(), check=True)
        self.receiver = WebhookReceiver()
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        subprocess.run([PYTHON, "manage.py", "add_webhook_endpoint", self.receiver.url, "--secret", secret],
                       cwd=ROOT, env=self.env(), check=True, capture_output=True)
        self.web = Proc("web", [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"],
                        self.env(), self.base / "web.log")
        self.worker = self.start_worker()
        self.beat = Proc("beat", [PYTHON, "-m", "celery", "-A", "config", "beat", "--loglevel=info",
                                  "--schedule", str(self.base / "var" / "beat-schedule")],
                         self.env(), self.base / "beat.log")
        self.wait_ready(60)

    def start_worker(self) -> Proc:
        return Proc("worker", [PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel=info",
                               "--concurrency=2", "-Q", "celery,webhooks", "--without-gossip", "--without-mingle",
                               "-n", f"soak-{uuid.uuid4().hex[:6]}@%h"], self.env(), self.base / "worker.log")

    def stop_stack(self) -> None:
        for name in ("beat", "worker", "web"):
            proc = getattr(self, name, None)
            if proc:
                proc.stop()
        if getattr(self, "redis", None) and self.redis.proc:
            self.redis.proc.stop()
        if getattr(self, "pg", None):
            self.pg.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if requests.get(self.url("/readyz"), timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"/readyz did not answer 200 within {timeout} s")

    # --- HTTP --------------------------------------------------------------------------------------------

    def call(self, op: str, method: str, path: str, token: str | None = None, body=None, key: str | None = None,
             record: bool = True) -> requests.Response | None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if key:
            headers["Idempotency-Key"] = key
        started = time.monotonic()
        try:
            response = requests.request(method, self.url(path), json=body, headers=headers, timeout=30)
        except requests.RequestException:
            response = None
        if record:
            answer = Answer(op, response.status_code if response is not None else None, started, time.monotonic())
            if response is not None and response.status_code >= 400:
                try:
                    error = response.json()["error"]
                    answer.code = error["code"]
                    answer.clean = set(error) == {"code", "message", "fields"}
                except (ValueError, KeyError, TypeError):
                    answer.clean = False
            with self.lock:
                self.answers.append(answer)
        return response

    def until_answered(self, op, method, path, token=None, body=None, key=None) -> requests.Response | None:
        """Retries (same Idempotency-Key) while there is no answer or a 5xx, for at most 60 s."""
        deadline = time.monotonic() + 60
        while True:
            response = self.call(op, method, path, token, body, key)
            if response is not None and response.status_code < 500:
                return response
            if time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    # --- setup and load ----------------------------------------------------------------------------------

    def seed(self) -> None:
        names = [f"soak{i}-{uuid.uuid4().hex[:4]}" for i in range(USERS)]
        for name in names:
            password = f"Soak-{uuid.uuid4().hex}"
            self.until_answered("register", "POST", "/api/v1/auth/register", body={"username": name,
                                                                                   "password": password})
            token = self.until_answered("token", "POST", "/api/v1/auth/token",
                                        body={"username": name, "password": password}).json()["token"]
            self.tokens[name] = token
            self.until_answered("pin", "PUT", "/api/v1/wallet/pin", token, {"pin": PIN})
            answer = self.until_answered("topup", "POST", "/api/v1/wallet/topups", token, {"amount": TOPUP},
                                         key=uuid.uuid4().hex)
            assert answer.status_code == 201, answer.text
            self.topups += TOPUP
        owner = self.tokens[names[0]]
        group = self.until_answered("group", "POST", "/api/v1/groups", owner, {"name": "Soak", "members": names[1:]})
        self.group_id = group.json()["id"]

    def client(self, seed: int, gate: "Gate") -> None:
        rng = random.Random(seed)
        names = list(self.tokens)
        while not self.stop.is_set():
            with gate.op():
                roll = rng.random()
                if roll < 0.25:
                    self.send(rng, rng.choice(names))
                elif roll < 0.75:
                    with self.lock:
                        recent = list(self.packets)[-6:]
                    if recent:
                        packet = rng.choice(recent)
                        self.until_answered("claim", "POST", f"/api/v1/packets/{packet}/claim",
                                            self.tokens[rng.choice(names)])
                elif roll < 0.95 or not self.feed:
                    token = self.tokens[rng.choice(names)]
                    with self.lock:
                        known = list(self.packets)
                    if known and rng.random() < 0.5:
                        self.call("read", "GET", f"/api/v1/packets/{rng.choice(known)}", token)
                    else:
                        self.call("read", "GET", "/api/v1/wallet", token)
                else:
                    response = self.call("feed", "GET", "/api/v1/events", self.tokens[rng.choice(names)])
                    if response is not None and response.status_code == 404:
                        self.feed = False  # this build has no event feed yet
            time.sleep(rng.uniform(0, 0.05))

    def send(self, rng: random.Random, sender: str) -> None:
        share_count = rng.randint(2, 8)
        if rng.random() < 0.5:
            body = {"group": self.group_id, "kind": "fixed", "share_count": share_count,
                    "share_amount": rng.randint(1, 500)}
        else:
            body = {"group": self.group_id, "kind": "random", "share_count": share_count,
                    "total_amount": rng.randint(share_count, share_count * 500)}
        response = self.until_answered("send", "POST", "/api/v1/packets", self.tokens[sender], {**body, "pin": PIN},
                                       key=uuid.uuid4().hex)
        if response is not None and response.status_code == 201:
            with self.lock:
                self.packets[response.json()["id"]] = response.json()["total_amount"]

    # --- checker -----------------------------------------------------------------------------------------

    def balances(self) -> dict[str, int] | None:
        out = {}
        for name, token in self.tokens.items():
            response = self.call("check", "GET", "/api/v1/wallet", token, record=False)
            if response is None or response.status_code != 200:
                return None
            out[name] = response.json()["balance"]
        return out

    def in_packets(self, final: set) -> tuple[int, set] | None:
        """remaining_amount of active and expiring packets; also which packets are final now."""
        token = next(iter(self.tokens.values()))
        held, now_final = 0, set()
        with self.lock:
            ids = [p for p in self.packets if p not in final]
        for packet_id in ids:
            response = self.call("check", "GET", f"/api/v1/packets/{packet_id}", token, record=False)
            if response is None or response.status_code != 200:
                return None
            packet = response.json()
            if packet["status"] in ("active", "expiring"):
                held += packet["remaining_amount"]
            else:
                now_final.add(packet_id)
        return held, now_final

    def check(self, gate: "Gate", final: set) -> None:
        """One consistent reading: clients paused, wallets read before and after the packets, equal."""
        with gate.exclusive():
            for _ in range(10):
                first = self.balances()
                held = self.in_packets(final) if first is not None else None
                second = self.balances() if held is not None else None
                if first is None or held is None or second is None:
                    return  # the API is not answering right now (a fault): no reading this time
                if first == second:
                    break
            else:
                return  # the sweep kept moving money under the reading: try again next time
        total = sum(first.values()) + held[0]
        final |= held[1]
        ok = total == self.topups
        self.checks.append((time.monotonic(), ok, total))
        if not ok:
            self.violations.append(f"money: balances + held = {total}, topups = {self.topups}")

    # --- nemesis -----------------------------------------------------------------------------------------

    def inject(self, kind: str) -> None:
        at = time.monotonic()
        if kind == "gunicorn worker SIGKILL":
            children = Path(f"/proc/{self.web.popen.pid}/task/{self.web.popen.pid}/children").read_text().split()
            if not children:
                return
            self.gunicorn_kills.append(at)
            os.kill(int(random.choice(children)), signal.SIGKILL)
        elif kind == "celery worker SIGKILL":
            self.worker.kill()
            self.worker.log.close()
            self.worker = self.start_worker()
        elif kind == "redis restart":
            self.redis.restart()
        elif kind == "postgresql restart":
            self.pg.restart()
            self.pg_down.append((at, time.monotonic()))
        recovered = self.wait_ready(60)
        self.faults.append({"kind": kind, "at": at, "recovered_after": time.monotonic() - at,
                            "ready_after_restart": recovered})
        log(f"fault: {kind}; /readyz 200 again {time.monotonic() - at:.1f} s after it was injected")

    def nemesis(self, load_started: float) -> None:
        """The four faults in turn, one every `interval` seconds (each fault at least once, and one every 20 s in a
        long run), the last well before the load ends."""
        kinds = ["gunicorn worker SIGKILL", "celery worker SIGKILL", "redis restart", "postgresql restart"]
        interval = min(max((self.seconds - 10) / 4, 8), 20)
        index = 0
        while not self.stop.wait(max(0.0, load_started + interval * (index + 0.5) - time.monotonic())):
            if time.monotonic() - load_started > self.seconds - 5:
                return
            self.inject(kinds[index % len(kinds)])
            index += 1

    # --- the run -----------------------------------------------------------------------------------------

    def run(self) -> dict:
        started = time.monotonic()
        self.start_stack()
        log(f"stack up in {time.monotonic() - started:.1f} s (PostgreSQL :{self.pg.port}, Redis :{self.redis.port}, "
            f"gunicorn :{self.web_port})")
        self.seed()
        gate = Gate()
        clients = [threading.Thread(target=self.client, args=(i, gate), daemon=True) for i in range(6)]
        load_started = time.monotonic()
        for thread in clients:
            thread.start()
        final: set = set()
        nemesis = threading.Thread(target=self.nemesis, args=(load_started,), daemon=True)
        nemesis.start()
        while time.monotonic() - load_started < self.seconds:
            next_check = time.monotonic() + 2
            self.check(gate, final)
            time.sleep(max(0.0, next_check - time.monotonic()))
        self.stop.set()
        nemesis.join(timeout=120)
        for thread in clients:
            thread.join(timeout=90)
        load_seconds = time.monotonic() - load_started
        self.processes_check()
        settled_after = self.wait_settled(final)
        self.final_checks()
        self.events_checks()
        return self.report(load_seconds, settled_after)

    def wait_settled(self, final: set) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < TTL_SECONDS + 10 * SWEEP_SECONDS + 30:
            held = self.in_packets(final)
            if held is not None:
                final |= held[1]
                if len(final) == len(self.packets):
                    return time.monotonic() - started
            time.sleep(0.5)
        self.violations.append(f"{len(self.packets) - len(final)} packets never settled; the worker's last errors: "
                               f"{' | '.join(self.log_errors('worker')) or 'none logged'}")
        return None

    def processes_check(self) -> None:
        """Every process the nemesis did not kill itself still runs: a broker or database restart must not end one
        (Celery 5.7.0's worker exited on a Redis restart that took seconds, and nothing was settled after it)."""
        for name in ("web", "worker", "beat"):
            proc = getattr(self, name)
            if not proc.alive():
                self.violations.append(f"the {name} process exited (status {proc.popen.returncode}); "
                                       f"its last errors: {' | '.join(self.log_errors(name)) or 'none logged'}")

    def log_errors(self, name: str, limit: int = 5) -> list[str]:
        """The last error lines of one process's log, for a violation that needs its cause next to it."""
        errors = []
        for line in (self.base / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                errors.append(f"{entry.get('timestamp', '')} {str(entry.get('event'))[:300]}")
        return errors[-limit:]

    def final_checks(self) -> None:
        balances = self.balances()
        if balances is None or sum(balances.values()) != self.topups:
            self.violations.append(f"end: balances {balances and sum(balances.values())} != topups {self.topups}")
        token = next(iter(self.tokens.values()))
        for packet_id, total in self.packets.items():
            packet = self.call("check", "GET", f"/api/v1/packets/{packet_id}", token, record=False).json()
            if packet["status"] == "expired" and packet["refunded_amount"] != total - packet["claimed_amount"]:
                self.violations.append(f"packet {packet_id}: refunded {packet['refunded_amount']} of "
                                       f"{total - packet['claimed_amount']} unclaimed")
        reconcile = subprocess.run([PYTHON, "manage.py", "reconcile"], cwd=ROOT, env=self.env(),
                                   capture_output=True, text=True)
        self.reconcile_output = reconcile.stdout.strip().splitlines()[-1:] if reconcile.stdout else []
        if reconcile.returncode != 0:
            self.violations.append(f"reconcile failed: {reconcile.stdout[-500:]} {reconcile.stderr[-500:]}")
        twice = subprocess.run(
            as_postgres(["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres", "-d", "soak", "-tAc",
                         "SELECT count(*) FROM (SELECT packet_id FROM wallets_ledgertransaction "
                         "WHERE kind = 'packet_refund' GROUP BY packet_id HAVING count(*) > 1) t"]),
            capture_output=True, text=True)
        if twice.stdout.strip() != "0":
            self.violations.append(f"packets refunded more than once: {twice.stdout.strip() or twice.stderr}")
        for answer in self.answers:
            if answer.status is not None and answer.status >= 500:
                in_pg_window = any(a <= answer.ended <= b + PG_GRACE_SECONDS for a, b in self.pg_down)
                if not in_pg_window:
                    self.violations.append(f"{answer.op}: {answer.status} {answer.code} outside a PostgreSQL outage")
                elif not answer.clean:
                    self.violations.append(f"{answer.op}: {answer.status} without the envelope")
            elif answer.status is None:
                near_kill = any(k <= answer.ended <= k + GUNICORN_GRACE_SECONDS for k in self.gunicorn_kills)
                in_pg_window = any(a <= answer.ended <= b + PG_GRACE_SECONDS for a, b in self.pg_down)
                if not (near_kill or in_pg_window):
                    self.violations.append(f"{answer.op}: no answer, not near a killed gunicorn worker")

    def events_checks(self) -> None:
        """Every event of the feed was delivered to the webhook; each packet has one sent and one end event."""
        token = next(iter(self.tokens.values()))
        events, url = [], self.url("/api/v1/events")
        while True:
            response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            if response.status_code == 404:
                self.feed = False
                return
            page = response.json()
            events += page["results"]
            if not page["results"]:
                break
            url = page["next"] if page["next"].startswith("http") else self.url(page["next"])
        self.events = len(events)
        deadline = time.monotonic() + 60
        ids = {event["id"] for event in events}
        while not ids <= self.receiver.ids and time.monotonic() < deadline:
            time.sleep(0.5)
        if not ids <= self.receiver.ids:
            self.violations.append(f"{len(ids - self.receiver.ids)} of {len(ids)} events never delivered")
        if len(ids) != len(events):
            self.violations.append("the feed repeated an event")
        sent, ends = Counter(), Counter()
        for event in events:
            packet = event["data"].get("packet")
            packet_id = packet["id"] if isinstance(packet, dict) else packet
            if event["type"] == "packet.sent":
                sent[packet_id] += 1
            elif event["type"] in ("packet.finished", "packet.expired"):
                ends[packet_id] += 1
        for packet_id in self.packets:
            if sent[packet_id] != 1 or ends[packet_id] != 1:
                self.violations.append(f"packet {packet_id}: {sent[packet_id]} sent and {ends[packet_id]} end events")

    def report(self, load_seconds: float, settled_after: float | None) -> dict:
        statuses = Counter(a.status or 0 for a in self.answers)
        ops = Counter(a.op for a in self.answers)
        return {
            "load_seconds": round(load_seconds, 1),
            "requests": len(self.answers),
            "by_op": dict(ops),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "packets": len(self.packets),
            "faults": [{"kind": f["kind"], "recovered_after": round(f["recovered_after"], 1)} for f in self.faults],
            "checks": len(self.checks),
            "violations": self.violations,
            "settled_after_load": None if settled_after is None else round(settled_after, 1),
            "feed_polled": self.feed,
            "events": getattr(self, "events", 0),
            "webhook_deliveries": self.receiver.deliveries,
            "reconcile": self.reconcile_output,
        }


class Gate:
    """Clients hold it shared for each operation; the checker holds it alone for a reading."""

    def __init__(self):
        self._cond = threading.Condition()
        self._inside = 0
        self._closed = False

    def op(self):
        gate = self

        class Shared:
            def __enter__(self):
                with gate._cond:
                    gate._cond.wait_for(lambda: not gate._closed)
                    gate._inside += 1

            def __exit__(self, *exc):
                with gate._cond:
                    gate._inside -= 1
                    gate._cond.notify_all()

        return Shared()

    def exclusive(self):
        gate = self

        class Alone:
            def __enter__(self):
                with gate._cond:
                    gate._closed = True
                    gate._cond.wait_for(lambda: gate._inside == 0)

            def __exit__(self, *exc):
                with gate._cond:
                    gate._closed = False
                    gate._cond.notify_all()

        return Alone()


def write_docs(result: dict, minutes: float) -> None:
    path = ROOT / "docs" / "reliability.md"
    text = path.read_text()
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    by_kind: dict[str, list[float]] = {}
    for fault in result["faults"]:
        by_kind.setdefault(fault["kind"], []).append(fault["recovered_after"])
    faults = "\n".join(f"| {kind} | {len(times)} | {statistics.median(times):.1f} s | {max(times):.1f} s |"
                       for kind, times in by_kind.items())
    section = f"""{start}
Last run: `bench/soak.py --minutes {minutes:g}` ({result['load_seconds']} s of load).

| figure | value |
|---|---|
| requests | {result['requests']} ({', '.join(f'{k} {v}' for k, v in result['by_op'].items())}) |
| statuses | {', '.join(f'{k}: {v}' for k, v in result['statuses'].items())} (0: no HTTP answer) |
| packets sent | {result['packets']}, every one settled {result['settled_after_load']} s after the load stopped |
| money checks over the API (every 2 s) | {result['checks']} |
| events in the feed, all delivered to the webhook | {result['events']} \
({result['webhook_deliveries']} deliveries: at least once) |
| faults injected | {len(result['faults'])} |
| violations | {len(result['violations'])} |

| fault | times | /readyz 200 again after, median | max |
|---|---|---|---|
{faults}
{end}"""
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Nemesis soak (`bench/soak.py`)\n\n" + section + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, data)")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (args.minutes or 10) * 60
    base = Path(tempfile.mkdtemp(prefix="soak-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        os.chmod(base, 0o777)
    soak = Soak(seconds=seconds, base=base)
    try:
        result = soak.run()
    except Exception as exc:
        log(f"the soak could not be carried out: {exc!r}; logs in {base}")
        soak.stop.set()
        soak.stop_stack()
        return 2
    finally:
        soak.stop.set()
    soak.stop_stack()
    print(json.dumps(result, indent=2))
    if not args.no_write:
        write_docs(result, seconds / 60)
    for violation in result["violations"]:
        log(f"VIOLATION: {violation}")
    print(f"SOAK RESULT: violations={len(result['violations'])} requests={result['requests']} "
          f"faults={len(result['faults'])} checks={result['checks']} packets={result['packets']}")
    if not args.keep and not result["violations"]:
        shutil.rmtree(base, ignore_errors=True)
    else:
        log(f"logs in {base}")
    return 0 if not result["violations"] else 1


if __name__ == "__main__":
    sys.exit(main())
