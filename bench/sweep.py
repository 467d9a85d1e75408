"""Expiry that keeps up: the real sweep (Celery worker + beat) settling a backlog of expired packets.

    DATABASE_URL=postgres://.../rp_x CELERY_BROKER_URL=redis://.../n .venv/bin/python bench/sweep.py
        [--packets 20000] [--no-write]

In one run, on a database of its own (`<DATABASE_URL's name>_sweep`, recreated):
1. sends/s, the rate the sweep has to beat by 2x: over HTTP (gunicorn as the Procfile runs it,
   production settings, 40 senders in a closed loop: issue 9 part 1's figure), and of the send
   service alone (2 processes, `packet_send` with the PIN check, no HTTP);
2. for 1 and then 2 worker processes: `--packets` packets of 5 shares, 2 of them claimed,
   written in SQL (bench/fill.py), all falling due within one second a little later; then
   `celery worker --concurrency=N` and `celery beat` (REDPACKET_SWEEP_SECONDS=4: a sweep
   every second) start, and 4 claimer processes (`packet_claim`) claim other packets
   throughout: claims/s alone for `--claim-seconds` (the worker relaying their events,
   nothing due), then, once the backlog is due, while the sweep settles it. Refunds/s is the
   backlog over the time from its first to its last settlement; the lag is how long after
   its expiry the oldest unsettled packet waited, sampled four times a second; claims/s
   meanwhile is counted from the first settlement the driver sees to the drain.
Then every packet must be settled by exactly one packet_refund, and `reconcile` must pass.
Prints the table and writes it to docs/performance.md (unless --no-write).
"""

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
SECTION = "## Expiry sweep: refunds/s against sends/s and claims (bench/sweep.py)"
CLAIMERS = 4
SENDERS = 2
HTTP_PORT = 8131
HTTP_SENDERS = 40  # as bench/load's send phase: 40 senders in a closed loop
OPEN_LOOP_SHARE = 0.6  # the paced claims: this share of what the claimers do back to back
# The PINs are set by this driver and checked by gunicorn under production settings: one key for both.
os.environ.setdefault("PIN_KEY", "bench-sweep-pin-key-0123456789abcdef0123456789")

from bench.own_database import own_database  # noqa: E402

own_database("sweep")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ["REDPACKET_SWEEP_SECONDS"] = "4"
os.environ["API_THROTTLE"] = "off"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.db.models import Count, Max, Min  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.doc_sections import write_section  # noqa: E402
from bench.fill import fill_packets  # noqa: E402
from config.errors import ServiceError  # noqa: E402
from redpackets.models import Packet, PacketKind  # noqa: E402
from events.services import events_relay  # noqa: E402
from redpackets.services import group_create, packet_claim, packet_send, packets_settle, packets_take_due  # noqa: E402
from wallets.ledger import system_account  # noqa: E402
from wallets.models import LedgerTransaction, SystemAccount, TransactionKind  # noqa: E402
from wallets.services import pin_verify  # noqa: E402
from tests.factories import PIN, UserFactory  # noqa: E402


# --- workers of the run ------------------------------------------------------------------


def _claimer(user_id: int, packet_ids: list, start: float, stop_at, rate, counts, index: int, latencies) -> None:
    """Claims `packet_ids` in order: back to back while `rate` is 0 (closed loop), else on a schedule of
    `rate` claims/s shared by the CLAIMERS (open loop: each claim's latency from its scheduled time)."""
    from django.contrib.auth import get_user_model

    connections.close_all()
    user = get_user_model().objects.get(pk=user_id)
    while time.time() < start:
        time.sleep(0.005)
    due, timed = None, []
    for packet_id in packet_ids:
        if time.time() >= stop_at.value:
            break
        paced = rate.value
        if paced:
            due = time.time() if due is None else due + CLAIMERS / paced
            time.sleep(max(0.0, due - time.time()))
        try:
            packet_claim(packet_id=packet_id, user=user)
        except ServiceError:
            pass
        if paced:
            timed.append((due, time.time() - due))
        counts[index] += 1  # read live by the driver
    latencies.put(timed)
    connections.close_all()


def claims_running(users: list[int], packets: list, offset: int, seconds: float | None):
    """Start CLAIMERS processes claiming `packets[offset:]` in order, in a closed loop until the driver sets
    `rate`; returns (start, stop_at, rate, counts, latencies, procs)."""
    ctx = mp.get_context("fork")
    stop_at = ctx.Value("d", time.time() + (seconds if seconds else 3600))
    rate = ctx.Value("d", 0.0)
    counts = ctx.Array("i", CLAIMERS)
    latencies = ctx.Queue()
    start = time.time() + 0.5
    connections.close_all()
    procs = [ctx.Process(target=_claimer, args=(users[i], packets[offset:], start, stop_at, rate, counts, i, latencies))
             for i in range(CLAIMERS)]
    for p in procs:
        p.start()
    return start, stop_at, rate, counts, latencies, procs


def percentiles(timed: list[tuple[float, float]], since: float, until: float) -> tuple[float, float, int]:
    """p50 and p99 latency (ms) of the claims scheduled between `since` and `until`, and their number."""
    window = sorted(latency for due, latency in timed if since <= due < until)
    if not window:
        return float("nan"), float("nan"), 0
    return 1000 * window[len(window) // 2], 1000 * window[min(len(window) - 1, int(len(window) * 0.99))], len(window)


def _sender(user_id: int, group_id, start: float, seconds: float, counts, index: int) -> None:
    from django.contrib.auth import get_user_model

    connections.close_all()
    user = get_user_model().objects.get(pk=user_id)
    while time.time() < start:
        time.sleep(0.005)
    sent = 0
    while time.time() < start + seconds:
        pin_verify(user=user, pin=PIN)
        packet_send(sender=user, group_id=group_id, kind=PacketKind.FIXED, share_count=5, share_amount=100)
        sent += 1
    counts[index] = sent
    connections.close_all()


def send_rate(senders: list[int], group_id, seconds: float) -> float:
    ctx = mp.get_context("fork")
    counts = ctx.Array("i", SENDERS)
    start = time.time() + 0.5
    connections.close_all()
    procs = [ctx.Process(target=_sender, args=(senders[i], group_id, start, seconds, counts, i))
             for i in range(SENDERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return sum(counts) / seconds


def _http_sender(tokens: list[str], group_id: str, start: float, seconds: float, counts, index: int) -> None:
    import http.client
    import json
    import threading
    import uuid

    body = json.dumps({"group": group_id, "kind": "fixed", "share_count": 5, "share_amount": 100, "pin": PIN})
    sent = [0] * len(tokens)

    def loop(slot: int, token: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=30)
        while time.time() < start:
            time.sleep(0.005)
        while time.time() < start + seconds:
            conn.request("POST", "/api/v1/packets", body, {
                "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                "Idempotency-Key": str(uuid.uuid4())})
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"send answered {response.status}")
            sent[slot] += 1

    threads = [threading.Thread(target=loop, args=(slot, token)) for slot, token in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts[index] = sum(sent)


def http_send_rate(sender_ids: list[int], group_id, seconds: float, run_dir: Path) -> float:
    """POST /api/v1/packets/s over HTTP: gunicorn as the Procfile runs it (2 workers x 4 threads, production
    settings), HTTP_SENDERS senders in a closed loop from 2 client processes, as issue 9 part 1 measures sends."""
    import urllib.request

    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    users = get_user_model().objects.filter(pk__in=sender_ids)
    tokens = [AuthToken.objects.create(user)[1] for user in users][:HTTP_SENDERS]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "bench-" * 8,
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DJANGO_SECURE_SSL_REDIRECT": "false", "METRICS_TOKEN": "bench",
           "WEB_BIND": f"127.0.0.1:{HTTP_PORT}", "WEB_WORKERS": "2", "WEB_THREADS": "4",
           "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"), "ACCESS_LOG_LEVEL": "WARNING"}
    (run_dir / "metrics").mkdir(exist_ok=True)
    web = subprocess.Popen([str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "config.wsgi:application"], cwd=ROOT,
                           env=env, stdout=open(run_dir / "gunicorn.log", "wb"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        ctx = mp.get_context("fork")
        counts = ctx.Array("i", 2)
        connections.close_all()
        warm = time.time() + 0.5  # the first 2 s open connections and prepare statements: not counted
        procs = [ctx.Process(target=_http_sender, args=(tokens[i::2], str(group_id), warm, 2, counts, i)) for i in (0, 1)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        start = time.time() + 0.5
        procs = [ctx.Process(target=_http_sender, args=(tokens[i::2], str(group_id), start, seconds, counts, i))
                 for i in (0, 1)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"an HTTP sender failed: see {run_dir / 'gunicorn.log'}")
        return sum(counts) / seconds
    finally:
        stop(web)


def celery(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "celery"), "-A", "config", *args], cwd=ROOT, env=os.environ.copy(),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


# --- the run -----------------------------------------------------------------------------------


def sweep_phase(workers: int, backlog: int, claim_seconds: float, world: dict, run_dir: Path, *,
                open_loop: bool = False) -> dict:
    """Worker and beat up, claims running: claims alone for `claim_seconds`, then the backlog falls due.

    Closed loop: the claimers claim back to back (what the sweep's CPU takes from saturating claims).
    `open_loop`: after the closed-loop figure, the claimers are paced at OPEN_LOOP_SHARE of it (a load
    the machine can carry): their rate and latency alone, then while the backlog drains."""
    alone_seconds = claim_seconds * (2 if open_loop else 1) + 2
    due_at = timezone.now() + timedelta(seconds=alone_seconds + 15)
    t = time.monotonic()
    fill_packets(count=backlog, shares=5, claimed=2, group_id=world["group"], senders=world["senders"],
                 claimers=world["claimers"], escrow_id=world["escrow"], created_at=due_at - timedelta(days=1),
                 expires_first=due_at, expires_step_ms=1000 / backlog)
    fill_seconds = time.monotonic() - t
    connection.close()
    # As many sweeps at once as worker processes (REDPACKET_SWEEP_TASKS; the default is one).
    os.environ["REDPACKET_SWEEP_TASKS"] = str(workers)
    worker = celery("worker", f"--concurrency={workers}", "--loglevel=warning", "-n", f"sweep{workers}-{os.getpid()}@%h",
                    log=run_dir / f"worker-{workers}-{open_loop}.log")
    beat = celery("beat", "--loglevel=warning", "-s", str(run_dir / f"beat-{workers}-{open_loop}"),
                  log=run_dir / f"beat-{workers}-{open_loop}.log")
    start, stop_at, rate, counts, latencies, claimers = claims_running(
        world["claimer_ids"], world["live"], world["offset"], None)
    backlog_packets = Packet.objects.filter(expires_at__gte=due_at, expires_at__lt=due_at + timedelta(seconds=2))
    max_lag, deadline, samples, timed = 0.0, time.time() + 600, [], []
    figures = {"workers": workers, "backlog": backlog, "fill_seconds": fill_seconds, "open_loop": open_loop}
    try:
        # Claims alone: the same processes (the worker relaying the claims' events), nothing due yet.
        time.sleep(max(0.0, start + 2 - time.time()))
        alone_from, alone_claims = time.time(), sum(counts)
        time.sleep(claim_seconds)
        figures["claims_alone_per_s"] = (sum(counts) - alone_claims) / (time.time() - alone_from)
        if open_loop:
            rate.value = OPEN_LOOP_SHARE * figures["claims_alone_per_s"]
            time.sleep(2)
            paced_from, paced_claims = time.time(), sum(counts)
            time.sleep(claim_seconds)
            figures["paced_alone"] = ((sum(counts) - paced_claims) / (time.time() - paced_from), paced_from, time.time())
        if timezone.now() >= due_at:
            raise RuntimeError("the backlog fell due before the claims alone were measured: raise its margin")
        while time.time() < deadline:
            oldest = Packet.objects.filter(settled_at__isnull=True, expires_at__lte=timezone.now()).aggregate(
                m=Min("expires_at"))["m"]
            if oldest is not None:
                max_lag = max(max_lag, (timezone.now() - oldest).total_seconds())
            unsettled = backlog_packets.filter(settled_at__isnull=True).count()
            if unsettled < backlog:  # the sweep has started: claims are counted from here to the drain
                samples.append((time.time(), sum(counts), process_tree_cpu(worker.pid)))
            if unsettled == 0:
                break
            time.sleep(0.25)
    finally:
        stop_at.value = time.time()
        stop(beat)
        stop(worker)
        for p in claimers:
            if p.exitcode is None or p.exitcode == 0:
                timed += latencies.get(timeout=60)
        for p in claimers:
            p.join()
    window = backlog_packets.aggregate(first=Min("settled_at"), last=Max("settled_at"))
    seconds = (window["last"] - window["first"]).total_seconds()
    (first_at, first_claims, first_cpu), (last_at, last_claims, last_cpu) = samples[0], samples[-1]
    world["offset"] += max(counts) + 1
    # The worker's processes while the backlog drained, over the refunds settled meanwhile (its relay
    # of the claims' events included): what the sweep takes from the claims, next to its quiet cost.
    drained = backlog_packets.filter(settled_at__gte=datetime.fromtimestamp(first_at, UTC),
                                     settled_at__lte=datetime.fromtimestamp(last_at, UTC)).count()
    figures["worker_ms_per_refund"] = 1000 * (last_cpu - first_cpu) / drained if drained else float("nan")
    figures.update(seconds=seconds, refunds_per_s=backlog / seconds if seconds else 0.0, max_lag=max_lag,
                   claims_per_s=(last_claims - first_claims) / (last_at - first_at) if last_at > first_at else float("nan"))
    if open_loop:
        paced_rate, paced_from, paced_until = figures["paced_alone"]
        figures["paced_alone"] = (paced_rate, *percentiles(timed, paced_from, paced_until)[:2])
        figures["paced_sweep"] = (figures["claims_per_s"], *percentiles(timed, first_at, last_at)[:2])
        figures["offered"] = rate.value
    return figures


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (a Celery worker and its pool)."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def backend_cpu() -> float:
    """CPU seconds of this process's PostgreSQL backend."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return sum(psutil.Process(cursor.fetchone()[0]).cpu_times()[:2])


def refund_cost(world: dict, count: int = 4000) -> dict:
    """CPU of a refund and of relaying an event, in this process and its backend, with nothing else
    running: `count` expired packets settled as the sweep does (REDPACKET_SWEEP_BATCH a commit), then
    their events and the others waiting given feed positions."""
    now = timezone.now()
    fill_packets(count=count, shares=5, claimed=2, group_id=world["group"], senders=world["senders"],
                 claimers=world["claimers"], escrow_id=world["escrow"], created_at=now - timedelta(days=1),
                 expires_first=now - timedelta(minutes=1), expires_step_ms=1)
    settled, python, database = 0, time.process_time(), backend_cpu()
    while True:
        with transaction.atomic():
            packets = packets_take_due(limit=settings.REDPACKET_SWEEP_BATCH)
            if not packets:
                break
            settled += len(packets_settle(packets=packets, wait_for_claims=False))
    python, database = time.process_time() - python, backend_cpu() - database
    relayed, relay_python, relay_database = 0, time.process_time(), backend_cpu()
    while batch := events_relay():
        relayed += batch
    relay_python, relay_database = time.process_time() - relay_python, backend_cpu() - relay_database
    return {"refunds": settled, "python_ms": 1000 * python / settled, "database_ms": 1000 * database / settled,
            "events": relayed, "relay_ms": 1000 * (relay_python + relay_database) / relayed}


def exactly_once() -> list[str]:
    problems = []
    unsettled = Packet.objects.filter(settled_at__isnull=True, expires_at__lte=timezone.now()).count()
    if unsettled:
        problems.append(f"{unsettled} expired packets unsettled")
    twice = (LedgerTransaction.objects.filter(kind=TransactionKind.PACKET_REFUND).values("packet_id")
             .annotate(n=Count("id")).filter(n__gt=1).count())
    if twice:
        problems.append(f"{twice} packets refunded more than once")
    result = subprocess.run([sys.executable, "manage.py", "reconcile"], cwd=ROOT, env=os.environ.copy(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        problems.append("reconcile: " + result.stdout[-500:] + result.stderr[-500:])
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=20000, help="expired packets in each backlog")
    parser.add_argument("--claim-seconds", type=float, default=8, help="the claims-alone phase")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    run_dir = ROOT / "var" / "sweep" / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)

    call_command("migrate", verbosity=0)
    senders = [UserFactory(balance=0) for _ in range(50)]
    claimers = [UserFactory(pin=None) for _ in range(CLAIMERS)]
    extra = [UserFactory(pin=None) for _ in range(6)]
    from wallets.services import wallet_topup

    for sender in senders:
        wallet_topup(user=sender, amount=2 * args.packets * 500 // len(senders) + 10_000_000)
    group = group_create(owner=senders[0], name="sweep bench",
                         member_usernames=[u.username for u in senders[1:] + claimers + extra])
    escrow = system_account(code=SystemAccount.ESCROW, currency="CNY")
    world = {"group": group.id, "senders": [u.pk for u in senders], "claimers": [u.pk for u in extra],
             "claimer_ids": [u.pk for u in claimers], "escrow": escrow.id, "offset": 0}
    # Live packets for the claimers, one share per claimer: every claim is paid.
    live_count = 20000
    now = timezone.now()
    fill_packets(count=live_count, shares=CLAIMERS, claimed=0, group_id=group.id, senders=world["senders"],
                 claimers=world["claimers"], escrow_id=escrow.id, created_at=now,
                 expires_first=now + timedelta(hours=2), expires_step_ms=1)
    world["live"] = list(Packet.objects.filter(expires_at__gt=now + timedelta(hours=1))
                         .order_by("expires_at").values_list("id", flat=True))
    connection.close()

    sends = send_rate(world["senders"], group.id, 6)
    http_sends = http_send_rate(world["senders"], group.id, 10, run_dir)
    cost = refund_cost(world)
    phases = [sweep_phase(workers, args.packets, args.claim_seconds, world, run_dir) for workers in (1, 2)]
    paced = sweep_phase(1, args.packets, args.claim_seconds, world, run_dir, open_loop=True)
    problems = exactly_once()

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Run {stamp} on {os.cpu_count()} cores shared by everything (PostgreSQL {connection.pg_version // 10000}, "
        f"Redis, the Celery worker and beat, {CLAIMERS} claimer processes, this driver). Backlog: {args.packets} "
        "packets of 5 shares, 2 claimed, falling due within one second, written in SQL (bench/fill.py); "
        "REDPACKET_SWEEP_SECONDS=4.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| sends/s over HTTP, {HTTP_SENDERS} senders in a closed loop (gunicorn 2 x 4, production settings; "
        f"issue 9 part 1's figure) | {http_sends:.0f} |",
        f"| sends/s in-process, {SENDERS} processes calling `pin_verify` + `packet_send` (no HTTP) | {sends:.0f} |",
        f"| a refund's CPU, in-process with nothing else running ({cost['refunds']} packets, "
        f"REDPACKET_SWEEP_BATCH a commit): Python + PostgreSQL | {cost['python_ms']:.2f} + {cost['database_ms']:.2f} ms |",
        f"| relaying an event (feed position; no webhook endpoints), Python + PostgreSQL, "
        f"{cost['events']} events | {cost['relay_ms']:.3f} ms |",
    ]
    for ph in phases:
        lines += [
            f"| claims/s, {CLAIMERS} claimer processes, {ph['workers']} worker(s) up, nothing due | "
            f"{ph['claims_alone_per_s']:.0f} |",
            f"| refunds/s, {ph['workers']} worker process{'es' if ph['workers'] > 1 else ''} "
            f"({ph['backlog']} packets in {ph['seconds']:.1f} s) | **{ph['refunds_per_s']:.0f}** "
            f"({ph['refunds_per_s'] / http_sends:.1f}x sends over HTTP, {ph['refunds_per_s'] / sends:.1f}x in-process) |",
            f"| oldest unsettled packet's lag, {ph['workers']} worker(s), worst sample | {ph['max_lag']:.1f} s |",
            f"| worker CPU per refund while it drains (its relay of the claims' events included), "
            f"{ph['workers']} worker(s) | {ph['worker_ms_per_refund']:.2f} ms |",
            f"| claims/s meanwhile, {ph['workers']} worker(s) | {ph['claims_per_s']:.0f} "
            f"({ph['claims_per_s'] / ph['claims_alone_per_s']:.0%} of nothing due) |",
        ]
    (alone_rate, alone_p50, alone_p99), (sweep_rate, sweep_p50, sweep_p99) = paced["paced_alone"], paced["paced_sweep"]
    lines += [
        f"| paced claims ({OPEN_LOOP_SHARE:.0%} of {paced['claims_alone_per_s']:.0f}/s offered: {paced['offered']:.0f}/s), "
        f"nothing due: claims/s, p50 / p99 ms | {alone_rate:.0f}, {alone_p50:.0f} / {alone_p99:.0f} |",
        f"| paced claims while 1 worker settles the backlog ({paced['refunds_per_s']:.0f} refunds/s): claims/s, "
        f"p50 / p99 ms | {sweep_rate:.0f} ({sweep_rate / alone_rate:.0%}), {sweep_p50:.0f} / {sweep_p99:.0f} |",
    ]
    lines += [
        f"| backlog written in SQL | {phases[0]['fill_seconds']:.1f} s for {args.packets} packets |",
        f"| exactly once: expired packets unsettled / refunded twice / reconcile | "
        f"{'none; none; OK' if not problems else '; '.join(problems)} |",
        "",
        "Targets: refunds/s at least 2x sends/s (over HTTP: issue 9 part 1); claims during the sweep within 20% of "
        "claims alone. "
        "Both claim rates are taken with the same "
        "worker and beat running (the relay positions the claims' events either way), so what they differ by is "
        "the sweep. What moved it: the sweep settles its packets "
        "REDPACKET_SWEEP_BATCH (100) per commit, set-based (`packets_settle`): the packets taken with `FOR UPDATE "
        "SKIP LOCKED` (sweeps at once take disjoint batches), every share of the batch locked in one statement, "
        "one UPDATE marking the free ones refunded, the refunds posted by `ledger_post_many` (two statements for "
        "the batch), one UPDATE settling the packets and one INSERT of their end events, rendered by "
        "one serializer for the batch (DRF copies a serializer's fields per instance). Before (one ORM pass per "
        "packet, about 15 round trips): 39 refunds/s with 1 worker against 206 sends/s, claims at 56%.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
