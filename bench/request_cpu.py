"""CPU per request over HTTP: the gunicorn process and the PostgreSQL backends, per endpoint.

The load test's last column (web + db CPU per request) for three requests, measured
one request at a time so that each figure is that request's own cost:
- trivial: `GET /api/v1/wallet`;
- claim:   a paying `POST /api/v1/packets/{id}/claim` (no body), on random packets of
           100 shares claimed by 100 members, as in the load test's spread rounds (one
           claim in a hundred is a packet's last and records packet.finished);
- send:    `POST /api/v1/packets`, fixed, 5 shares, PIN, Idempotency-Key.

Each tree (this checkout, and with `--base REF` that commit, extracted by `git archive`)
gets its own database (`<DATABASE_URL's name>_cpu_a` / `_cpu_b`), its own gunicorn
(production settings, API_THROTTLE=off, `--workers` x `--threads`, 1 x 4 by default) and its own seed. The
rounds alternate the trees (A B, then B A, ...); each round measures every request kind
over `--requests` requests on one kept-alive connection. CPU comes from /proc (psutil):
the gunicorn master and workers, and every backend of the tree's database but the
sampler's own. Medians of the rounds are printed: on a shared machine the rates move,
per-request CPU much less, and only figures of the same run are compared; with two
trees, the median of the per-round differences too.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redpackets \\
        python bench/request_cpu.py [--base HEAD~1] [--rounds 7] [--requests 200] [--only claim,send]
"""

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KINDS = ("trivial", "claim", "send")
CLAIMERS = 100  # members claiming each random packet of as many shares
PIN = "246810"

# Run inside the tree under test (its own code and migrations): prints the tokens and ids the rounds use.
SEED = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from knox.models import AuthToken
from redpackets.services import group_create
from wallets.services import pin_set, wallet_get_or_create, wallet_topup

User = get_user_model()
def user(name):
    u = User.objects.create_user(username=name, password=None)
    wallet_get_or_create(user=u)
    return u, AuthToken.objects.create(u)[1]
sender, sender_token = user("sender")
pin_set(user=sender, pin=%(pin)r)
for _ in range(10):
    wallet_topup(user=sender, amount=1_000_000)
reader, reader_token = user("reader")
claimers = [user(f"claimer{i}") for i in range(%(claimers)d)]
group = group_create(owner=sender, name="bench", member_usernames=["reader", *(u.username for u, _ in claimers)])
print(json.dumps({"sender": sender_token, "reader": reader_token, "claimers": [t for _, t in claimers],
                  "group": str(group.id)}))
"""


def database_url(name: str) -> str:
    parts = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/redpackets"))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def base_name() -> str:
    return urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/redpackets")).path.strip("/")


class Tree:
    """One code tree served by its own gunicorn on its own database."""

    def __init__(self, label: str, path: Path, port: int, workdir: Path, workers: int = 1, threads: int = 4):
        self.label, self.path, self.port, self.workers, self.threads = label, path, port, workers, threads
        self.database = f"{base_name()}_cpu_{label.lower()}"
        self.var = workdir / label
        self.var.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"CACHE_URL", "DJANGO_DEBUG", "PYTHONPATH"}},
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "PIN_KEY": secrets.token_urlsafe(32),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url(self.database),
            "API_THROTTLE": "off",
            "SANDBOX_TOPUPS": "true",
            "VAR_DIR": str(self.var),
            "PROMETHEUS_MULTIPROC_DIR": str(self.var / "metrics"),
            # The backends outlive the run: their CPU is read before and after each batch.
            "DB_CONN_MAX_AGE": "3600",
        }
        if os.environ.get("CELERY_BROKER_URL"):
            self.env["CACHE_URL"] = os.environ["CELERY_BROKER_URL"]
        self.gunicorn = None
        self.seed: dict = {}

    def prepare(self) -> None:
        with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}"')
        python = str(BIN / "python")
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=self.path, env=self.env, check=True)
        out = subprocess.run([python, "-c", SEED % {"pin": PIN, "claimers": CLAIMERS}], cwd=self.path, env=self.env,
                             check=True, capture_output=True, text=True).stdout
        self.seed = json.loads(out.strip().splitlines()[-1])
        log = open(self.var / "gunicorn.log", "w")  # open as long as the server runs
        self.gunicorn = subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--threads", str(self.threads), "--access-logfile", str(self.var / "access.log")],
            cwd=self.path, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.request("GET", "/api/v1/wallet", self.seed["reader"], expect=200)
                break
            except OSError:
                if time.monotonic() > deadline or self.gunicorn.poll() is not None:
                    raise RuntimeError(f"gunicorn of {self.label} did not answer; see {self.var / 'gunicorn.log'}")
                time.sleep(0.3)
        self.sampler = psycopg.connect(database_url(self.database), autocommit=True)
        self.sampler_pid = self.sampler.execute("SELECT pg_backend_pid()").fetchone()[0]

    _conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, token: str, *, body: dict | None = None, headers: dict | None = None,
                expect: int) -> dict:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            all_headers["Content-Type"] = "application/json"
        try:
            self._conn.request(method, path, body=payload, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self._conn.close()
            self._conn = None
            raise
        if response.status != expect:
            raise RuntimeError(f"{self.label} {method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else {}

    def cpu(self) -> tuple[float, dict[int, float]]:
        """CPU seconds so far of gunicorn (master and workers), and of each backend of the database."""
        root = psutil.Process(self.gunicorn.pid)
        web = sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
        backends = {}
        for (pid,) in self.sampler.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [self.database, self.sampler_pid]
        ):
            try:
                backends[pid] = sum(psutil.Process(pid).cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return web, backends

    def send_body(self, **terms) -> dict:
        return {"group": self.seed["group"], "pin": PIN, **terms}

    def prepare_claims(self, count: int) -> list[str]:
        packets = []
        for _ in range(-(-count // CLAIMERS)):
            sent = self.request("POST", "/api/v1/packets", self.seed["sender"], expect=201,
                                body=self.send_body(kind="random", share_count=CLAIMERS, total_amount=CLAIMERS * 50),
                                headers={"Idempotency-Key": str(uuid.uuid4())})
            packets.append(sent["id"])
        return packets

    def fresh_connection(self) -> None:
        """gunicorn closes a connection idle for its keep-alive time (2 s): each batch opens its own."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, kind: str, count: int) -> tuple[float, float]:
        """(web ms, db ms) per request over `count` requests of `kind`."""
        self.fresh_connection()
        if kind == "claim":
            packets = self.prepare_claims(count)
            calls = [(f"/api/v1/packets/{packets[i // CLAIMERS]}/claim", self.seed["claimers"][i % CLAIMERS])
                     for i in range(count)]
        web0, db0 = self.cpu()
        if kind == "trivial":
            for _ in range(count):
                self.request("GET", "/api/v1/wallet", self.seed["reader"], expect=200)
        elif kind == "send":
            body = self.send_body(kind="fixed", share_count=5, share_amount=1)
            for _ in range(count):
                self.request("POST", "/api/v1/packets", self.seed["sender"], body=body, expect=201,
                             headers={"Idempotency-Key": str(uuid.uuid4())})
        else:
            for path, token in calls:
                self.request("POST", path, token, expect=201)
        web1, db1 = self.cpu()
        # A backend that ended during the batch is lost (DB_CONN_MAX_AGE is long for that); a new one counts whole.
        db = sum(cpu - db0.get(pid, 0.0) for pid, cpu in db1.items())
        return (web1 - web0) * 1000 / count, db * 1000 / count

    def stop(self) -> None:
        if self.gunicorn is not None and self.gunicorn.poll() is None:
            self.gunicorn.terminate()
            self.gunicorn.wait(timeout=30)
        if getattr(self, "sampler", None) is not None:
            self.sampler.close()
        with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def extract(ref: str, into: Path) -> Path:
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    target = into / f"tree-{commit}"
    target.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="git ref of tree A; without it only this checkout is measured")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200, help="requests per kind per round")
    parser.add_argument("--only", default=",".join(KINDS), help="comma-separated kinds: " + ", ".join(KINDS))
    parser.add_argument("--port", type=int, default=8765, help="tree A's port; B's is the next one")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (1: the sync worker)")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]

    with tempfile.TemporaryDirectory(prefix="request-cpu-") as tmp:
        workdir = Path(tmp)
        trees = []
        if args.base:
            trees.append(Tree("A", extract(args.base, workdir), args.port, workdir, args.workers, args.threads))
        trees.append(Tree("B", ROOT, args.port + 1, workdir, args.workers, args.threads))
        try:
            for tree in trees:
                tree.prepare()
                # Warm-up: every thread's connection prepares its statements (prepare_threshold) and
                # imports what it lazily imports.
                for kind in kinds:
                    tree.run(kind, min(args.requests, 100))
            figures = {(t.label, k): [] for t in trees for k in kinds}
            for round_no in range(args.rounds):
                order = trees if round_no % 2 == 0 else trees[::-1]
                for tree in order:
                    for kind in kinds:
                        web, db = tree.run(kind, args.requests)
                        figures[(tree.label, kind)].append((web, db))
                line = "  ".join(f"{t.label} {k} {figures[(t.label, k)][-1][0]:.2f}+{figures[(t.label, k)][-1][1]:.2f}"
                                 for t in trees for k in kinds)
                print(f"round {round_no + 1}: {line}", flush=True)
        finally:
            for tree in trees:
                tree.stop()

    print(f"\nCPU ms per request, medians of {args.rounds} rounds of {args.requests} "
          f"(web = gunicorn, db = PostgreSQL backends):")
    print("| tree | request | web | db | web + db |")
    print("|---|---|---:|---:|---:|")
    for tree in trees:
        name = f"{tree.label} ({args.base})" if tree.label == "A" else f"{tree.label} (this checkout)"
        for kind in kinds:
            rows = figures[(tree.label, kind)]
            web = statistics.median(r[0] for r in rows)
            db = statistics.median(r[1] for r in rows)
            total = statistics.median(r[0] + r[1] for r in rows)
            print(f"| {name} | {kind} | {web:.2f} | {db:.2f} | {total:.2f} |")
    if "trivial" in kinds:
        # On saturated cores a request's rate is inversely proportional to its CPU: the goal's ratios.
        print("\nRate against the trivial read's (its CPU over this request's), per round, median:")
        for tree in trees:
            trivial = figures[(tree.label, "trivial")]
            ratios = {kind: statistics.median(sum(t) / sum(r) for t, r in zip(trivial, figures[(tree.label, kind)]))
                      for kind in kinds if kind != "trivial"}
            print(f"  {tree.label}: " + ", ".join(f"{kind} {ratio:.0%}" for kind, ratio in ratios.items()))
    if len(trees) == 2:
        # Paired by round (both trees measured within minutes of each other): steadier than the
        # difference of the medians when other work on the machine comes and goes.
        print("\nB - A per round, median (and the rounds' range), web + db ms:")
        for kind in kinds:
            diffs = sorted(sum(b) - sum(a) for a, b in zip(figures[("A", kind)], figures[("B", kind)]))
            print(f"  {kind}: {statistics.median(diffs):+.2f} ({diffs[0]:+.2f} to {diffs[-1]:+.2f})")


if __name__ == "__main__":
    main()
