"""Load test of the whole stack as deployed: gunicorn, PostgreSQL, Redis, Celery worker and beat.

    .venv/bin/python bench/load/run.py            # full mode (a few minutes): writes docs/performance.md
    .venv/bin/python bench/load/run.py --short    # about 80 s, for CI
    .venv/bin/python bench/load/run.py --short --no-write

What it does, every step bounded in time, every process it starts stopped at the end:

1. creates a fresh database (`redpackets_load`), migrates it, and seeds users, wallets
   (sandbox topups through the service), groups, payment PINs for the senders and knox
   tokens created directly (no password hashing during the run);
2. starts `gunicorn config.wsgi:application`, `celery -A config worker` and
   `celery -A config beat` under production settings (DJANGO_SETTINGS_MODULE=
   config.settings.production, DJANGO_SECURE_SSL_REDIRECT=false since the traffic is
   plain HTTP on 127.0.0.1, API_THROTTLE=off, SANDBOX_TOPUPS=true, short
   REDPACKET_TTL_SECONDS and REDPACKET_SWEEP_SECONDS so refunds happen during the run),
   Redis as broker and cache;
3. drives it with locust, headless, one locust run per phase (bench/load/locustfile.py):
   - warm-up (not counted): wallet reads and two hot-packet rounds;
   - trivial: GET /api/v1/wallet in a closed loop, this machine's ceiling for an
     authenticated Django request;
   - burst: rounds in which a few hundred members claim at the same instant hot packets
     sent just before through the API with PIN and Idempotency-Key: in turn one packet
     of 100 shares (the default REDPACKET_MAX_SHARES) for all of them, most answered
     409, and as many packets as they fill, every claim paid; claims/s is measured
     over the rounds' own time;
     trivial and burst take turns (trivial, burst, trivial[, burst, trivial]) so that
     both see the same machine, which other work shares;
   - mixed: members of many groups reading wallets and history, viewing and claiming
     packets, senders sending (with retries under the same Idempotency-Key), and the
     hot-packet bursts on top;
4. waits until every packet sent has expired and been swept, then checks the invariants:
   `python manage.py reconcile` (wallets vs ledger, transactions balance, escrow vs free
   shares, every packet's claims + refund + free shares == total), every packet settled,
   refunds within REDPACKET_SWEEP_SECONDS of expiry, each hot packet paid as many
   claims as the clients were told, no "exhausted" while a share was free, idempotent
   retries answered with the first packet, and no 5xx at the clients or in gunicorn's log;
5. prints the table and (unless --no-write) rewrites its own section of docs/performance.md.

The last line printed is a summary the CI test reads (claim_rps is the lower of the
one-packet and the spread rounds' rates, ratio the lower ratio to the trivial endpoint):
    LOAD RESULT: 5xx=0 errors=0 requests=... violations=0 claim_rps=... claim_one_rps=...
    claim_spread_rps=... trivial_rps=... ratio=... target=met
The database is dropped at the end (--keep-db leaves it); logs, locust's CSV files and
the raw results stay in the run directory.
Exit status: 0 when there were no 5xx and no invariant violations, 1 otherwise, 2 when
the run could not be carried out.
"""

import argparse
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
SECTION = "## Load test: the whole stack (bench/load/run.py)"
BIN = Path(sys.executable).parent
PIN = "135790"

# Sizes and durations of the two modes.
MODES = {
    "full": {
        "users": 1000, "groups": 40, "group_size": 25, "members": 200, "senders": 5,
        "hot_claimers": 300, "hot_shares": 100,
        "wallet_users": 48, "wallet_seconds": 15, "send_seconds": 12, "burst_rounds": 10, "segments": 2,
        "mixed_seconds": 90, "hot_gap": 5.0, "ttl": 20, "sweep": 4,
        "time_limit": 900,
    },
    "short": {
        "users": 400, "groups": 16, "group_size": 20, "members": 80, "senders": 3,
        "hot_claimers": 200, "hot_shares": 100,
        "wallet_users": 48, "wallet_seconds": 7, "send_seconds": 0, "burst_rounds": 5, "segments": 1,
        "mixed_seconds": 20, "hot_gap": 4.0, "ttl": 10, "sweep": 2,
        "time_limit": 170,
    },
}
WARMUP_SECONDS = 2.0  # left out of each closed-loop phase's rates and percentiles

TRIVIAL = "GET /api/v1/wallet"
SEND_LOOP = "POST /api/v1/packets (closed loop)"
HOT_CLAIM = "POST /api/v1/packets/{id}/claim (hot, %s)"


def log(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", flush=True)


class RunFailed(Exception):
    """The run could not be carried out (a service down, a process that did not start)."""


# --- processes ---------------------------------------------------------------------------


class Proc:
    """A process in its own session, output to a file; stop() ends its whole group."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        self.name, self.log_path = name, log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 15) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(grace) is None:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait(10)
        else:
            try:  # the leader is gone; its children must not outlive it
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self.log.closed:
            self.log.close()



class CpuSampler(threading.Thread):
    """Cumulative CPU seconds of each part of the run, sampled every `interval` s.

    Parts: gunicorn (master and workers), the PostgreSQL backends serving our database,
    the Celery worker and beat, locust, this driver, and the whole machine (other work
    on it included). `used(part, t1, t2)` interpolates between samples, so any window
    (a phase's steady part, one burst round) gets its own figure.
    """

    def __init__(self, database: str, interval: float = 0.2):
        super().__init__(daemon=True)
        import psutil
        import psycopg

        self.psutil, self.interval = psutil, interval
        self.conn = psycopg.connect(postgres_url(database), autocommit=True)
        self.roots: dict[str, list[int]] = {"driver": [os.getpid()]}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._last: dict[tuple[str, int], float] = {}
        self._procs: dict[int, object] = {}
        self._trees: dict[str, list[int]] = {}
        self._stop_event = threading.Event()
        self._ticks = 0

    def watch(self, part: str, *pids: int) -> None:
        self.roots[part] = list(pids)
        self._trees.pop(part, None)

    def _pids(self, part: str) -> list[int]:
        if part == "db":
            return [row[0] for row in self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        if part == "driver":  # this process alone: everything else it started is counted apart
            return self.roots[part]
        if part not in self._trees or self._ticks % 5 == 0:
            pids = []
            for root in self.roots.get(part, []):
                try:
                    pids += [root, *(c.pid for c in self.psutil.Process(root).children(recursive=True))]
                except self.psutil.NoSuchProcess:
                    pass
            self._trees[part] = pids
        return self._trees[part]

    def sample(self) -> None:
        totals = {}
        for part in [*self.roots, "db"]:
            for pid in self._pids(part):
                try:
                    proc = self._procs.get(pid) or self._procs.setdefault(pid, self.psutil.Process(pid))
                    times = proc.cpu_times()
                    self._last[(part, pid)] = times.user + times.system
                except self.psutil.Error:
                    pass
            totals[part] = sum(v for (p, _), v in self._last.items() if p == part)
        m = self.psutil.cpu_times()
        totals["machine"] = m.user + m.nice + m.system + m.irq + m.softirq + getattr(m, "steal", 0.0)
        self.samples.append((time.time(), totals))
        self._ticks += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.sample()
            except Exception:
                pass
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        self.conn.close()

    def at(self, part: str, t: float) -> float:
        samples = self.samples
        if not samples:
            return 0.0
        if t <= samples[0][0]:
            return samples[0][1].get(part, 0.0)
        for (t1, v1), (t2, v2) in zip(samples, samples[1:]):
            if t1 <= t <= t2:
                a, b = v1.get(part, 0.0), v2.get(part, 0.0)
                return a + (b - a) * (t - t1) / (t2 - t1) if t2 > t1 else b
        return samples[-1][1].get(part, 0.0)

    def used(self, part: str, windows: list[tuple[float, float]]) -> float:
        return sum(self.at(part, t2) - self.at(part, t1) for t1, t2 in windows)


def wait_for(condition, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and not proc.alive():
            raise RunFailed(f"{proc.name} exited with {proc.popen.returncode} before {what}:\n{proc.output()[-3000:]}")
        time.sleep(0.2)
    tail = f":\n{proc.output()[-3000:]}" if proc is not None else ""
    raise RunFailed(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


# --- database and seed ----------------------------------------------------------------------


def postgres_url(database: str) -> str:
    """The PostgreSQL server of DATABASE_URL when it names one (as in CI), else the local one; this database."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))


def redis_url(db: int) -> str:
    """The Redis server of CELERY_BROKER_URL when it names one, else the local one; this database number."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        url = "redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


def recreate_database(name: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url("postgres"), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url("postgres"), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(cfg: dict, state_path: Path) -> dict:
    """Users with wallets and topups, groups, sender PINs and tokens; writes the locust state file."""
    import random

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone
    from knox.models import AuthToken, get_digest_token
    from knox.settings import CONSTANTS, knox_settings

    from redpackets.services import group_create
    from wallets.models import Account, AccountKind, PaymentPin
    from wallets.pins import pin_hash
    from wallets.services import wallet_topup

    User = get_user_model()
    rng = random.Random(20261123)
    n = cfg["users"]
    usernames = [f"load{i:05d}" for i in range(n)]
    users = User.objects.bulk_create([User(username=name, password=make_password(None)) for name in usernames])
    Account.objects.bulk_create([Account(user=u, kind=AccountKind.WALLET, currency="CNY") for u in users])

    # Group 0 is the hot group: user 0 sends, the next hot_claimers users claim.
    claimers = list(range(1, cfg["hot_claimers"] + 1))
    hot_group = group_create(owner=users[0], name="hot group", member_usernames=[usernames[i] for i in claimers])
    groups, groups_of = [], {}
    for g in range(cfg["groups"]):
        members = rng.sample(range(1, n), cfg["group_size"])
        group = group_create(owner=users[members[0]], name=f"group {g}",
                             member_usernames=[usernames[i] for i in members[1:]])
        groups.append({"id": str(group.id), "owner": members[0], "members": members})
        for i in members:
            groups_of.setdefault(str(i), []).append(str(group.id))
    owners = {0} | {g["owner"] for g in groups}

    with transaction.atomic():
        for i, user in enumerate(users):
            wallet_topup(user=user, amount=50_000_000 if i in owners else 20_000)
    PaymentPin.objects.bulk_create([
        PaymentPin(user=users[i], pin_hash=stored.digest, pin_key_id=stored.key_id)
        for i in sorted(owners) for stored in [pin_hash(user_id=users[i].pk, pin=PIN)]
    ])

    tokens, rows = [], []
    expiry = timezone.now() + knox_settings.TOKEN_TTL
    for user in users:
        digest, token = get_digest_token()
        rows.append(AuthToken(digest=digest, token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH], user=user, expiry=expiry))
        tokens.append(token)
    AuthToken.objects.bulk_create(rows)

    state = {
        "pin": PIN,
        "users": [[name, token] for name, token in zip(usernames, tokens)],
        "groups": groups,
        "groups_of": groups_of,
        "members": sorted(int(i) for i in groups_of),
        "hot": {"group": str(hot_group.id), "sender": 0, "claimers": claimers,
                "share_count": cfg["hot_shares"], "share_value": 100},
    }
    state_path.write_text(json.dumps(state))
    return state


# --- phases ------------------------------------------------------------------------------------


def run_phase(name: str, classes: list[str], users: int, seconds: float, phase_cfg: dict, ctx: dict) -> dict:
    run_dir, env = ctx["run_dir"], ctx["env"]
    result_path = run_dir / f"phase-{name}.json"
    phase_env = {**env, "LOAD_STATE": str(ctx["state_path"]), "LOAD_PHASE": json.dumps(phase_cfg),
                 "LOAD_RESULT": str(result_path)}
    argv = [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
            "-t", f"{int(math.ceil(seconds))}s", "--host", ctx["base_url"], "--only-summary",
            "--csv", str(run_dir / f"locust-{name}"), "--loglevel", "WARNING", "--stop-timeout", "5", *classes]
    log(f"phase {name}: {users} locust users ({', '.join(classes)}), up to {seconds:.0f} s")
    started = time.monotonic()
    proc = Proc(f"locust {name}", argv, phase_env, run_dir / f"locust-{name}.log")
    try:
        ctx["sampler"].watch("locust", proc.pid)
        deadline = started + seconds + 60
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.alive():
            raise RunFailed(f"locust phase {name} did not end in time")
    finally:
        proc.stop()
    if not result_path.exists():
        raise RunFailed(f"locust phase {name} wrote no results:\n{proc.output()[-3000:]}")
    return json.loads(result_path.read_text())


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def summarize(results: list[dict], warmup: float) -> dict:
    """Per endpoint over one or more runs of a phase: requests, rate over the steady
    windows, percentiles, errors and 5xx. Each run's first `warmup` seconds count for
    errors only."""
    steady: dict[str, list[float]] = {}
    rows_of: dict[str, list] = {}
    windows = 0.0
    for result in results:
        rows = [r for rs in result["records"].values() for r in rs]
        if not rows:
            continue
        t0 = min(r[0] for r in rows)
        t_end = max(r[0] + r[1] / 1000 for r in rows)
        window_start = t0 + warmup
        windows += max(t_end - window_start, 1e-9)
        for name, rs in result["records"].items():
            rows_of.setdefault(name, []).extend(rs)
            steady.setdefault(name, []).extend(r[1] for r in rs if r[0] >= window_start)
    out = {}
    for name in sorted(rows_of):
        rs, lat = rows_of[name], sorted(steady[name])
        out[name] = {
            "requests": len(rs),
            "rps": len(lat) / windows if windows else 0.0,
            "p50": percentile(lat, 0.50), "p95": percentile(lat, 0.95), "p99": percentile(lat, 0.99),
            "errors": sum(1 for r in rs if not r[3]),
            "5xx": sum(1 for r in rs if 500 <= r[2] < 600),
            "statuses": dict(Counter(str(r[2]) for r in rs)),
        }
    return out


def rps_of_trivial(result: dict, warmup: float) -> float:
    return summarize([result], warmup).get(TRIVIAL, {}).get("rps", 0.0)


def burst_figures(results: list[dict], kind: str) -> dict:
    """Claims per second over the rounds of one kind ("one" or "spread"), from first claim sent to last answer."""
    rounds = [r for result in results for r in result["rounds"] if r["kind"] == kind]
    claims = sum(r["claims"] for r in rounds)
    busy = sum(r["end"] - r["start"] for r in rounds)
    paid = sum(r["statuses"].get("201", 0) for r in rounds)
    latencies = sorted(r[1] for result in results for r in result["records"].get(HOT_CLAIM % kind, []))
    return {
        "rounds": len(rounds), "claims": claims, "paid": paid, "seconds": busy,
        "rps": claims / busy if busy else 0.0, "paid_rps": paid / busy if busy else 0.0,
        "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95), "p99": percentile(latencies, 0.99),
        "each": [r["claims"] / (r["end"] - r["start"]) for r in rounds],
        "packets": len(rounds[0]["packets"]) if rounds else 0,
    }


def windows_of(result: dict, kind: str, warmup: float = WARMUP_SECONDS) -> list[tuple[float, float]]:
    """The measured time of a run: a burst's rounds, or a closed-loop run after its warm-up."""
    if kind.startswith("burst"):
        return [(r["start"], r["end"]) for r in result["rounds"]]
    rows = [r for rs in result["records"].values() for r in rs]
    if not rows:
        return []
    return [(min(r[0] for r in rows) + warmup, max(r[0] + r[1] / 1000 for r in rows))]


PARTS = ["web", "db", "celery", "locust", "driver"]


def cpu_report(sampler: CpuSampler, runs: dict[str, list[dict]]) -> dict:
    """Cores used by each part during each kind of phase's measured windows, and the
    web + database CPU per request of the trivial endpoint and of a hot-packet claim."""
    out = {}
    burst = runs.get("burst", [])
    kinds = {
        "trivial": runs.get("trivial", []),
        "send": runs.get("send", []),
        "burst, one packet": [{**r, "rounds": [x for x in r["rounds"] if x["kind"] == "one"]} for r in burst],
        "burst, spread": [{**r, "rounds": [x for x in r["rounds"] if x["kind"] == "spread"]} for r in burst],
        "mixed": runs.get("mixed", []),
    }
    for kind, results in kinds.items():
        windows = [w for r in results for w in windows_of(r, kind)]
        seconds = sum(t2 - t1 for t1, t2 in windows)
        if not seconds:
            continue
        used = {part: sampler.used(part, windows) for part in [*PARTS, "machine"]}
        ours = sum(used[p] for p in PARTS)
        out[kind] = {"seconds": seconds, **{p: used[p] / seconds for p in used},
                     "others": max(0.0, used["machine"] - ours) / seconds}
        if kind in ("trivial", "send"):
            served = sum(1 for r in results for (t1, _) in windows_of(r, kind)
                         for row in r["records"].get(TRIVIAL if kind == "trivial" else SEND_LOOP, []) if row[0] >= t1)
        elif kind.startswith("burst"):
            served = sum(rnd["claims"] for r in results for rnd in r["rounds"])
        else:
            served = 0
        if served:
            out[kind]["ms_per_request"] = (used["web"] + used["db"]) / served * 1000
            out[kind]["web_ms_per_request"] = used["web"] / served * 1000
            out[kind]["db_ms_per_request"] = used["db"] / served * 1000
    return out


# --- invariants after the run ---------------------------------------------------------------


def wait_until_swept(sweep: int, limit: float) -> tuple[int, float]:
    """Wait until every packet has expired and been settled; returns (unsettled, seconds waited)."""
    from django.db.models import Max
    from django.utils import timezone

    from redpackets.models import Packet

    started = time.monotonic()
    last_expiry = Packet.objects.aggregate(last=Max("expires_at"))["last"]
    if last_expiry is None:
        return 0, 0.0
    budget = min(limit, max(0.0, (last_expiry - timezone.now()).total_seconds()) + 2 * sweep + 10)
    log(f"waiting up to {budget:.0f} s for every packet to expire and be swept")
    while True:
        unsettled = Packet.objects.filter(settled_at__isnull=True).count()
        if unsettled == 0 or time.monotonic() - started > budget:
            return unsettled, time.monotonic() - started
        time.sleep(0.5)


def check_invariants(ctx: dict, results: dict, sweep: int, swept: tuple[int, float]) -> dict:
    from django.db.models import F, Max

    from redpackets.models import Packet, Share

    violations: list[str] = []
    unsettled, waited = swept
    if unsettled:
        violations.append(f"{unsettled} packets still unsettled {waited:.0f} s after the last send")

    reconcile = subprocess.run([sys.executable, "manage.py", "reconcile"], cwd=ROOT, env=ctx["env"],
                               capture_output=True, text=True, timeout=120)
    reconcile_out = reconcile.stdout + reconcile.stderr
    problems = [line for line in reconcile_out.splitlines() if line.startswith("PROBLEM")]
    if reconcile.returncode != 0 and not problems:
        problems = [f"reconcile exited with {reconcile.returncode}: {reconcile_out[-500:]}"]
    violations += problems

    settled = Packet.objects.filter(settled_at__isnull=False)
    lag = settled.annotate(lag=F("settled_at") - F("expires_at")).aggregate(m=Max("lag"))["m"]
    max_lag = lag.total_seconds() if lag is not None else 0.0
    late = [p for p in settled.filter(refunded_amount__gt=0).values("id", "settled_at", "expires_at")
            if (p["settled_at"] - p["expires_at"]).total_seconds() > sweep]
    if late:
        violations.append(f"{len(late)} refunds later than REDPACKET_SWEEP_SECONDS={sweep} after expiry")
    refunded = settled.filter(refunded_amount__gt=0).count()

    # What the clients were told against what the database holds, hot packet by hot packet.
    for phase, result in results.items():
        for rnd in result.get("rounds", []):
            for packet_id, answers in rnd["packets"].items():
                statuses = {int(k): v for k, v in answers.items()}
                packet = Packet.objects.get(id=packet_id)
                claimed = Share.objects.filter(packet=packet, claimed_by__isnull=False).count()
                if claimed != statuses.get(201, 0):
                    violations.append(f"{phase}: hot packet {packet.id} has {claimed} claims, clients got "
                                      f"{statuses.get(201, 0)} payouts")
                if statuses.get(409, 0) and claimed < packet.share_count:
                    violations.append(f"{phase}: 409 exhausted on hot packet {packet.id} with only {claimed} of "
                                      f"{packet.share_count} shares claimed")
        for mismatch in result.get("idempotency_mismatches", []):
            violations.append(f"{phase}: an idempotent retry got another packet ({mismatch})")

    web_log = ctx["web"].output()
    access_5xx = len(re.findall(r'" 5\d\d \d', (ctx["run_dir"] / "gunicorn-access.log").read_text(errors="replace")))
    tracebacks = web_log.count("Traceback (most recent call last)")
    worker_errors = len(re.findall(r"\] ERROR|\[ERROR", ctx["worker"].output()))
    return {
        "violations": violations, "reconcile": reconcile_out.strip().splitlines(), "max_lag": max_lag,
        "refunded": refunded, "packets": Packet.objects.count(), "access_5xx": access_5xx,
        "tracebacks": tracebacks, "worker_errors": worker_errors,
    }


# --- report -----------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "–" if value != value else (f"{value:.0f}" if value >= 100 else f"{value:.1f}")


def render(report: dict) -> str:
    cfg, head, checks = report["cfg"], report["headline"], report["checks"]
    one, spread = head["one"], head["spread"]
    lines = [
        "| figure | value |",
        "|---|---:|",
        f"| trivial `GET /api/v1/wallet`, req/s ({cfg['wallet_users']} users, closed loop) "
        f"| {head['trivial_rps']:.0f} |",
        f"| hot-packet claims/s, {cfg['hot_claimers']} claimers at once on one packet of {cfg['hot_shares']} shares "
        f"({one['rounds']} rounds; {one['paid_rps']:.0f}/s paid, the rest 409 `packet_exhausted`) "
        f"| {one['rps']:.0f} ({head['ratio_one']:.0%}) |",
        f"| hot-packet claims/s, {cfg['hot_claimers']} claimers at once over {spread['packets']} packets of "
        f"{cfg['hot_shares']} shares ({spread['rounds']} rounds; every claim paid) "
        f"| {spread['rps']:.0f} ({head['ratio_spread']:.0%}) |",
        f"| **claims / trivial**, the lower of the two (target ≥ 50%) | **{head['ratio']:.0%}** |",
        f"| sends/s, {cfg['groups']} senders in a closed loop (fixed, 5 shares, PIN, Idempotency-Key) "
        f"| {head['send_rps']:.0f} |",
        f"| **sends / trivial** (target ≥ 30%) | **{head['send_ratio']:.0%}** |",
        f"| claim latency, one packet, p50 / p95 / p99 ms | {ms(one['p50'])} / {ms(one['p95'])} / {ms(one['p99'])} |",
        f"| claim latency, spread, p50 / p95 / p99 ms "
        f"| {ms(spread['p50'])} / {ms(spread['p95'])} / {ms(spread['p99'])} |",
        f"| requests, all phases | {head['requests']} |",
        f"| error rate (unexpected status or no answer) | {head['error_rate']:.2%} ({head['errors']}) |",
        f"| 5xx (clients / gunicorn access log) | {head['5xx']} / {checks['access_5xx']} |",
        f"| invariant violations (reconcile and the checks below) | {len(checks['violations'])} |",
        "",
        "| phase | endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | errors | 5xx | statuses |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for phase, summary in report["phases"].items():
        for name, s in summary.items():
            statuses = ", ".join(f"{k}×{v}" for k, v in sorted(s["statuses"].items()))
            lines.append(f"| {phase} | `{name}` | {s['requests']} | {s['rps']:.1f} | {ms(s['p50'])} | {ms(s['p95'])} "
                         f"| {ms(s['p99'])} | {s['errors']} | {s['5xx']} | {statuses} |")
    lines += [
        "",
        "| phase | measured s | gunicorn | PostgreSQL (our backends) | celery | locust | other work on the machine "
        "| web + db CPU per request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, cpu in report["cpu"].items():
        per = (f"{cpu['ms_per_request']:.2f} ms ({cpu['web_ms_per_request']:.2f} + {cpu['db_ms_per_request']:.2f})"
               if "ms_per_request" in cpu else "–")
        lines.append(f"| {phase} | {cpu['seconds']:.0f} | {cpu['web']:.2f} | {cpu['db']:.2f} | {cpu['celery']:.2f} "
                     f"| {cpu['locust']:.2f} | {cpu['others']:.2f} | {per} |")
    return "\n".join(lines)


def render_checks(report: dict) -> str:
    checks, cfg = report["checks"], report["cfg"]
    reconcile = [line for line in checks["reconcile"] if line.startswith(("wallets checked", "transactions", "OK", "PROBLEM"))]
    lines = [
        f"After the run: every packet settled ({checks['packets']} packets, {checks['refunded']} with a refund), "
        f"latest settlement {checks['max_lag']:.1f} s after expiry (REDPACKET_SWEEP_SECONDS={cfg['sweep']}); "
        f"`manage.py reconcile`: {'; '.join(reconcile)}.",
    ]
    if checks["violations"]:
        lines += ["", "Violations:", *[f"- {v}" for v in checks["violations"]]]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.doc_sections import write_section

    write_section(SECTION, text)


# --- main --------------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    """Nothing listens there (connections in TIME_WAIT from an earlier run do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def http_ok(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the ~80 s CI run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--database", default="redpackets_load")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis database for the broker and cache")
    # The Procfile's defaults, and its environment variables.
    parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS") or 2))
    parser.add_argument("--web-threads", type=int, default=int(os.environ.get("WEB_THREADS") or 4))
    parser.add_argument("--worker-concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY") or 2))
    parser.add_argument("--run-dir", type=Path, help="logs and results (default var/load/<time>)")
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    args = parser.parse_args()
    mode = "short" if args.short else "full"
    cfg = dict(MODES[mode])
    if args.web_workers * args.web_threads + args.worker_concurrency + 10 > 90:
        sys.exit("web workers × threads would use too many of PostgreSQL's 100 connections")

    run_dir = (args.run_dir or ROOT / "var" / "load" / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "var").mkdir(exist_ok=True)
    database_url = postgres_url(args.database)
    broker = redis_url(args.redis_db)
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"CACHE_URL", "DJANGO_DEBUG", "PYTEST_CURRENT_TEST"}},
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "PIN_KEY": secrets.token_urlsafe(32),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "CACHE_URL": broker,
        "API_THROTTLE": "off",
        "SANDBOX_TOPUPS": "true",
        "REDPACKET_TTL_SECONDS": str(cfg["ttl"]),
        "REDPACKET_SWEEP_SECONDS": str(cfg["sweep"]),
        "VAR_DIR": str(run_dir / "var"),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }

    def out_of_time(signum, frame):
        raise RunFailed(f"the run exceeded its time limit of {cfg['time_limit']} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(cfg["time_limit"])
    procs: list[Proc] = []
    sampler = None
    started = time.monotonic()
    try:
        # Preflight: the services, the port.
        import redis

        try:
            redis.Redis.from_url(broker, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            raise RunFailed(f"Redis at {broker} is not reachable: {exc}") from None
        if not port_free(args.port):
            raise RunFailed(f"port {args.port} is in use")
        try:
            recreate_database(args.database)
        except Exception as exc:
            raise RunFailed(f"cannot create database {args.database}: {exc}") from None

        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, connections

        log(f"{mode} mode; database {args.database}, broker {broker}, run dir {run_dir}")
        t = time.monotonic()
        call_command("migrate", verbosity=0)
        log(f"migrated in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        state_path = run_dir / "state.json"
        state = seed(cfg, state_path)
        log(f"seeded {cfg['users']} users, {cfg['groups'] + 1} groups in {time.monotonic() - t:.1f} s")
        pg_version = connection.pg_version // 10000
        connections.close_all()

        web = Proc("gunicorn", [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{args.port}",
                                "--workers", str(args.web_workers), "--threads", str(args.web_threads),
                                "--access-logfile", str(run_dir / "gunicorn-access.log")],
                   env, run_dir / "gunicorn.log")
        procs.append(web)
        worker = Proc("celery worker", [str(BIN / "celery"), "-A", "config", "worker", "--loglevel=info",
                                        f"--concurrency={args.worker_concurrency}", "-n", f"load-{os.getpid()}@%h"],
                      env, run_dir / "celery-worker.log")
        procs.append(worker)
        beat = Proc("celery beat", [str(BIN / "celery"), "-A", "config", "beat", "--loglevel=info"],
                    env, run_dir / "celery-beat.log")
        procs.append(beat)
        sampler = CpuSampler(args.database)
        sampler.watch("web", web.pid)
        sampler.watch("celery", worker.pid, beat.pid)
        sampler.start()
        base_url = f"http://127.0.0.1:{args.port}"
        token = state["users"][0][1]
        wait_for(lambda: http_ok(f"{base_url}/api/v1/wallet", token), 60, "gunicorn to answer", web)
        wait_for(lambda: " ready." in worker.output(), 60, "the celery worker", worker)
        wait_for(lambda: "beat: Starting" in beat.output(), 60, "celery beat", beat)
        log(f"gunicorn ({args.web_workers} workers × {args.web_threads} threads), worker and beat are up")

        ctx = {"run_dir": run_dir, "env": env, "state_path": state_path, "base_url": base_url, "web": web, "sampler": sampler,
               "worker": worker}
        hot = {"hot_claimers": cfg["hot_claimers"], "quit_after_rounds": True}
        runs: dict[str, list[dict]] = {"trivial": [], "send": [], "burst": [], "mixed": []}  # kind -> its runs

        def phase(kind, name, classes, users, seconds, phase_cfg):
            result = run_phase(name, classes, users, seconds, phase_cfg, ctx)
            result["name"] = name
            if kind in runs:
                runs[kind].append(result)
            return result

        # Warm-up: every gunicorn thread opens its connection and prepares its statements.
        warm = phase("warm-up", "warm-up", ["WalletReader", "HotSender", "HotClaimer"],
                     cfg["hot_claimers"] + 1 + 24, 30, {**hot, "hot_rounds": 2, "round_kinds": ["one", "spread"]})
        # The trivial endpoint and the hot-packet bursts take turns, so that both see the
        # same machine (other work on it comes and goes); the trivial one goes first and last.
        for segment in range(1, cfg["segments"] + 1):
            phase("trivial", f"trivial-{segment}", ["WalletReader"], cfg["wallet_users"], cfg["wallet_seconds"], {})
            if cfg["send_seconds"]:  # full mode only: the CI run stays within its time
                phase("send", f"send-{segment}", ["SendLoop"], cfg["groups"], cfg["send_seconds"], {})
            phase("burst", f"burst-{segment}", ["HotSender", "HotClaimer"], cfg["hot_claimers"] + 1,
                  30 + 8 * cfg["burst_rounds"],
                  {**hot, "hot_rounds": cfg["burst_rounds"], "round_kinds": ["one", "spread"]})
        phase("trivial", f"trivial-{cfg['segments'] + 1}", ["WalletReader"], cfg["wallet_users"],
              cfg["wallet_seconds"], {})
        mixed_users = cfg["members"] + cfg["senders"] + 1 + cfg["hot_claimers"]
        phase("mixed", "mixed", ["ChatMember", "Sender", "HotSender", "HotClaimer"], mixed_users,
              cfg["mixed_seconds"], {**hot, "quit_after_rounds": False, "hot_rounds": 1000,
                                     "hot_gap": cfg["hot_gap"], "hot_first_delay": 2.0, "senders": cfg["senders"]})
        time.sleep(2 * sampler.interval)
        cpu = cpu_report(sampler, runs)

        swept = wait_until_swept(cfg["sweep"], limit=cfg["ttl"] + 4 * cfg["sweep"] + 30)
        every_run = {r["name"]: r for r in [warm, *runs["trivial"], *runs["send"], *runs["burst"], *runs["mixed"]]}
        checks = check_invariants(ctx, every_run, cfg["sweep"], swept)
        if checks["tracebacks"]:
            checks["violations"].append(f"{checks['tracebacks']} tracebacks in gunicorn's log")
        if not (worker.alive() and beat.alive() and web.alive()):
            checks["violations"].append("a server process died during the run")

        # Figures: each kind of phase over all its runs.
        phases = {kind: summarize(results, 0.0 if kind == "burst" else WARMUP_SECONDS)
                  for kind, results in runs.items()}
        trivial = [rps_of_trivial(r, WARMUP_SECONDS) for r in runs["trivial"]]
        one, spread = burst_figures(runs["burst"], "one"), burst_figures(runs["burst"], "spread")
        every = [s for summary in phases.values() for s in summary.values()]
        requests = sum(s["requests"] for s in every)
        errors = sum(s["errors"] for s in every)
        fivexx = sum(s["5xx"] for s in every)
        trivial_mean = phases["trivial"][TRIVIAL]["rps"]
        ratio_one = one["rps"] / trivial_mean if trivial_mean else 0.0
        ratio_spread = spread["rps"] / trivial_mean if trivial_mean else 0.0
        send_rps = phases.get("send", {}).get(SEND_LOOP, {}).get("rps", 0.0)
        headline = {"trivial_rps": trivial_mean, "trivial_each": trivial, "one": one, "spread": spread,
                    "ratio_one": ratio_one, "ratio_spread": ratio_spread, "ratio": min(ratio_one, ratio_spread),
                    "send_rps": send_rps, "send_ratio": send_rps / trivial_mean if trivial_mean else 0.0,
                    "requests": requests, "errors": errors, "error_rate": errors / requests if requests else 0.0,
                    "5xx": fivexx}
        report = {"cfg": {**cfg, "mode": mode}, "headline": headline, "phases": phases, "checks": checks, "cpu": cpu}
        (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))

        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        trivial_note = ", ".join(f"{x:.0f}" for x in trivial)
        burst_note = "; ".join(f"{name}: " + ", ".join(f"{x:.0f}" for x in figures["each"])
                               for name, figures in (("one packet", one), ("spread", spread)))
        intro = (
            f"Run {stamp} ({mode} mode) on {os.cpu_count()} cores shared by everything: PostgreSQL {pg_version}, "
            f"Redis (broker and cache), gunicorn `config.wsgi:application` with {args.web_workers} workers × "
            f"{args.web_threads} threads, `celery -A config worker --concurrency={args.worker_concurrency}` and "
            f"`celery -A config beat`, production settings with `API_THROTTLE=off`, "
            f"`REDPACKET_TTL_SECONDS={cfg['ttl']}`, `REDPACKET_SWEEP_SECONDS={cfg['sweep']}`; and locust itself "
            f"(one process, FastHttpUser). {cfg['users']} users, {cfg['groups']} groups of {cfg['group_size']} and "
            f"one hot group of {cfg['hot_claimers'] + 1}. Every figure below comes from this one run."
        )
        phases_note = (
            f"Phases: *trivial* — {cfg['wallet_users']} users reading their wallet with no pause, "
            f"{len(trivial)} runs of {cfg['wallet_seconds']} s ({trivial_note} req/s), taking turns with "
            f"*send* — each of the {cfg['groups']} group owners sending fixed packets of 5 shares with no pause "
            f"({cfg['send_seconds']} s each) and "
            f"*burst* — {cfg['segments']} × {cfg['burst_rounds']} rounds in which {cfg['hot_claimers']} members of "
            "the hot group, released at the same instant, claim hot random packets sent just before through the "
            f"API (PIN, Idempotency-Key): in turn one packet of {cfg['hot_shares']} shares for all of them, and "
            f"{spread['packets']} such packets with as many claimers each as shares; the claim rate is claims over "
            f"the rounds' own time, first claim sent to last answer (per round, {burst_note} claims/s); "
            f"*mixed* — {cfg['members']} members of the groups (wallet, history, packet views, claims, group "
            f"packet lists; 0.5–2 s pauses), {cfg['senders']} senders (one send in ten retried under its "
            f"Idempotency-Key) and a hot-packet round every {cfg['hot_gap']:.0f} s ({cfg['mixed_seconds']} s). "
            f"Rates and percentiles leave out each closed-loop phase's first {WARMUP_SECONDS:.0f} s; errors and "
            "5xx count every request. Claims answered 409 `packet_exhausted` or 410 `packet_expired` are the "
            "rules working, not errors."
        )
        notes = (
            "How to read it: the claim rates count every answer of the claim endpoint during the rounds, paid "
            f"(201) or not (409 once the {cfg['hot_shares']} shares are gone), over the time claims were in flight; "
            "the target is read on the lower one, usually the spread rounds where every claim moves money. "
            "The burst phase's own req/s in the second table also counts the pauses while the next hot packets are "
            "sent. Last column of the third table: CPU seconds of "
            "gunicorn and of the PostgreSQL backends per request, which other work on the machine moves much "
            "less than the rates. What moved the figures: a claim that finds no free share in its first read "
            "answers 409/410 from that read instead of a transaction that tries, waits and rolls back (3 "
            "statements instead of 11); most claimers of a hot packet take that path. Clients drop a kept-alive "
            "connection idle for more than 1 s, under gunicorn's 2 s `--keep-alive` default: without that, a "
            "request sent as gunicorn closes an idle connection is lost, and a POST is not retried; a proxy in "
            "front of gunicorn needs the same (an upstream keep-alive timeout below gunicorn's)."
        )
        verdict = "met" if headline["ratio"] >= 0.5 and fivexx == 0 and not checks["violations"] else "MISSED"
        text = "\n\n".join([
            intro, render(report), render_checks(report), phases_note, notes,
            f"Target: claims at least 50% of the trivial endpoint's rate, zero 5xx, zero invariant violations: "
            f"**{verdict}**. Run it with `.venv/bin/python bench/load/run.py` (`--short` for the CI-sized run, "
            "`--no-write` to leave this page alone); logs and raw results go to `var/load/`.",
        ])
        print()
        print(text)
        if not args.no_write:
            write_doc(text)
            log(f"written to {PERFORMANCE_DOC.relative_to(ROOT)}")
        log(f"done in {time.monotonic() - started:.0f} s; logs in {run_dir}")
        print(f"LOAD RESULT: 5xx={fivexx + checks['access_5xx']} errors={errors} requests={requests} "
              f"violations={len(checks['violations'])} claim_rps={min(one['rps'], spread['rps']):.1f} "
              f"claim_one_rps={one['rps']:.1f} claim_spread_rps={spread['rps']:.1f} trivial_rps={trivial_mean:.1f} "
              f"ratio={headline['ratio']:.3f} target={'met' if headline['ratio'] >= 0.5 else 'missed'} "
              f"send_rps={send_rps:.1f} send_ratio={headline['send_ratio']:.3f}", flush=True)
        return 0 if fivexx + checks["access_5xx"] == 0 and not checks["violations"] else 1
    except RunFailed as exc:
        print(f"LOAD RUN FAILED: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        signal.alarm(0)
        if sampler is not None:
            sampler.stop()
        for proc in reversed(procs):
            proc.stop()
        if not args.keep_db:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:
                pass
            try:
                drop_database(args.database)
            except Exception as exc:
                print(f"could not drop {args.database}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
