"""Fault drills: real processes, real faults, each bounded well under a minute.

1. A Celery worker is SIGKILLed in the middle of a refund sweep (a batch's
   transaction open, waiting on a wallet lock), then replaced: every expired
   packet is refunded exactly once.
2. Redis (broker and throttle cache) hangs, dies and comes back while packets are
   sent and claimed over HTTP: every answer is a success or the JSON envelope,
   nothing is half-applied, and the refunds happen once Redis is back.
3. PostgreSQL connections of the web server are terminated again and again while
   clients send and claim over HTTP: every answer is a success or the envelope,
   and every success is fully applied.

Each drill ends with `reconcile`. The processes (gunicorn, celery worker with
embedded beat, a private redis-server) run against the test's own database
(committed data: transaction=True), each in its own process group, and are
always ended in a finally block. Server-side database connections carry an
`application_name` unique to the drill, so only they are ever terminated.
"""

import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Count, Q, Sum
from django.test import override_settings
from django.utils import timezone
from knox.models import AuthToken

from redpackets.models import Packet, PacketKind, Share
from redpackets.services import packet_claim, packet_send
from tests.factories import PIN, UserFactory, group_with_members
from tests.processes import Proc, control_connection, database_url, free_port
from wallets.models import Account, AccountKind, IdempotencyRecord, LedgerEntry, LedgerTransaction, TransactionKind

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
]

SWEEP_SECONDS = 2  # beat sweeps every 0.5 s


# --- processes ----------------------------------------------------------------------------------------


@pytest.fixture
def procs(tmp_path):
    """Starts the drill's processes; stops every one of them at the end, whatever happened."""
    started: list[Proc] = []
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    tag = uuid.uuid4().hex[:8]

    class Starter:
        def __init__(self):
            self.tag = tag

        def app_env(self, application_name: str, **extra: str) -> dict[str, str]:
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": database_url(application_name),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
                "REDPACKET_SWEEP_SECONDS": str(SWEEP_SECONDS),
                "VAR_DIR": str(var_dir),
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "INFO",
            }
            env.pop("CACHE_URL", None)
            env.update(extra)
            return env

        def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
            proc = Proc(name, args, env, tmp_path / f"{len(started)}-{name}.log")
            started.append(proc)
            return proc

        def redis(self, port: int) -> Proc:
            proc = self.start(
                f"redis-{port}",
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no"],
                dict(os.environ),
            )
            proc.wait_until("Ready to accept connections", timeout=10)
            return proc

        def worker(self, env: dict[str, str]) -> Proc:
            return self.start(
                "worker",
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--loglevel=info",
                 "--concurrency=1", "--without-gossip", "--without-mingle", "-n", f"drill-{uuid.uuid4().hex[:8]}@%h"],
                env,
            )

        def web(self, port: int, env: dict[str, str]) -> Proc:
            return self.start(
                "web",
                [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
                 "--workers", "1", "--threads", "8", "--timeout", "30", "--graceful-timeout", "2"],
                env,
            )

    try:
        yield Starter()
    finally:
        for proc in reversed(started):
            proc.stop()
        for proc in started:
            print(f"----- {proc.name} (exit code {proc.process.returncode}) -----")
            print(proc.output()[-20_000:])


# --- HTTP ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    op: str
    status: int | None  # None: no HTTP answer at all
    content_type: str = ""
    body: bytes = b""
    seconds: float = 0.0
    error: str = ""
    phase: str = ""
    started: float = 0.0  # wall clock, to compare with the database's timestamps

    def json(self):
        return json.loads(self.body)

    def problem(self) -> str | None:
        """Why this is not a success or a clean error envelope; None when it is either."""
        if self.status is None:
            return f"no HTTP answer ({self.error})"
        if not self.content_type.startswith("application/json"):
            return f"{self.status} with {self.content_type or 'no content type'}: {self.body[:200]!r}"
        try:
            body = self.json()
        except ValueError:
            return f"{self.status} with a body that is not JSON: {self.body[:200]!r}"
        if self.status >= 400 and not (
            isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
        ):
            return f"{self.status} without the envelope: {body}"
        return None

    def code(self) -> str | None:
        return self.json()["error"]["code"] if self.status and self.status >= 400 and not self.problem() else None


def call(port: int, method: str, path: str, *, token: str, body=None, key: str | None = None, op: str = "",
         timeout: float = 20.0) -> Reply:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "Connection": "close"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Idempotency-Key"] = key
    wall, started = time.time(), time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return Reply(op, response.status, response.getheader("Content-Type", ""), data, time.monotonic() - started,
                     started=wall)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(op, None, seconds=time.monotonic() - started, error=repr(exc), started=wall)
    finally:
        conn.close()


def wait_for_http(port: int, token: str, web: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert web.alive(), f"the web server exited with {web.process.returncode}"
        if call(port, "GET", "/api/v1/wallet", token=token, timeout=2).status == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"the web server did not answer within {timeout} s")


def token_for(user) -> str:
    return AuthToken.objects.create(user)[1]


def in_threads(calls: list) -> list:
    """Run every zero-argument callable on its own thread, all at once; their results in order."""
    results: list = [None] * len(calls)

    def run(index, fn):
        results[index] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def assert_all_clean(replies: list[Reply]) -> None:
    problems = [f"{r.phase} {r.op}: {r.problem()}" for r in replies if r.problem()]
    assert not problems, f"{len(problems)} of {len(replies)} answers were not clean:\n" + "\n".join(problems[:20])


# --- the ledger's view --------------------------------------------------------------------------------


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def ledger_sum(user, kind: str) -> int:
    return LedgerEntry.objects.filter(account__user=user, transaction__kind=kind).aggregate(s=Sum("amount"))["s"] or 0


def claimed_in(packet_ids) -> int:
    return Share.objects.filter(packet_id__in=list(packet_ids), claimed_by__isnull=False).aggregate(
        s=Sum("amount"))["s"] or 0


def assert_settled_once(packet_ids) -> None:
    """Every packet is settled, with one refund of exactly its unclaimed shares (none if all were claimed)."""
    packets = Packet.objects.filter(id__in=list(packet_ids)).annotate(
        claimed=Sum("shares__amount", filter=Q(shares__claimed_by__isnull=False)),
    )
    refunds = dict(
        LedgerTransaction.objects.filter(packet_id__in=list(packet_ids), kind=TransactionKind.PACKET_REFUND)
        .values_list("packet_id").annotate(n=Count("id"))
    )
    for packet in packets:
        assert packet.settled_at is not None, f"packet {packet.id} was not settled"
        expected = packet.total_amount - (packet.claimed or 0)
        assert packet.refunded_amount == expected, (packet.id, packet.refunded_amount, expected)
        assert refunds.get(packet.id, 0) == (1 if expected else 0), (packet.id, refunds.get(packet.id))
        assert not Share.objects.filter(packet=packet, claimed_by__isnull=True, refunded=False).exists()


def wait_until(predicate, *, timeout: float, what: str, procs_alive: list[Proc] = ()) -> float:
    """Poll until predicate() is true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        for proc in procs_alive:
            assert proc.alive(), f"{proc.name} exited with {proc.process.returncode} while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# --- drill 1: a worker killed in the middle of a refund sweep -----------------------------------------


def test_a_worker_killed_mid_sweep_and_replaced_refunds_every_expired_packet_exactly_once(procs, monkeypatch):
    # Given 40 packets that expired an hour ago, partly claimed, while no worker ran: the first 15
    # in expiry order from one sender, the rest from another
    packet_count, blocked_at, batch = 40, 15, 5
    senders = [UserFactory(balance=1_000_000), UserFactory(balance=1_000_000)]
    crowd = [UserFactory(pin=None) for _ in range(3)]
    groups = [group_with_members(sender, crowd) for sender in senders]
    start = timezone.now() - timedelta(hours=2)
    packets = []
    with monkeypatch.context() as m, override_settings(REDPACKET_TTL_SECONDS=3600):
        for index in range(packet_count):
            moment = start + timedelta(seconds=index)  # expiry order is send order
            m.setattr(timezone, "now", lambda moment=moment: moment)
            sender, group = (senders[0], groups[0]) if index < blocked_at else (senders[1], groups[1])
            packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=3,
                                 share_amount=100 + index)
            for claimer in crowd[: index % 3]:
                packet_claim(packet_id=packet.id, user=claimer)
            packets.append(packet)
    assert all(p.expires_at < timezone.now() for p in packets)
    ids = [p.id for p in packets]
    before = [balance_of(sender) for sender in senders]
    unclaimed = sum(p.total_amount for p in packets) - claimed_in(ids)

    # and the test holding the second sender's wallet row, as a send of theirs in flight would: a sweep
    # of REDPACKET_SWEEP_BATCH=5 settles the first three batches, then its fourth (the 16th packet on)
    # marks its shares refunded and waits to post the refunds, in an open transaction
    holder = control_connection(f"drill-lock-{procs.tag}")
    holder.autocommit = False
    holder.execute("SELECT id FROM wallets_account WHERE user_id = %s AND kind = 'wallet' FOR UPDATE", [senders[1].pk])
    control = control_connection(f"drill-control-{procs.tag}")
    app_name = f"drill-worker-{procs.tag}"

    def settled() -> int:
        return Packet.objects.filter(id__in=ids, settled_at__isnull=False).count()

    def worker_waits_on_a_lock() -> bool:
        row = control.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database() "
            "AND wait_event_type = 'Lock'", [app_name],
        ).fetchone()
        return row[0] > 0

    try:
        # When a worker starts sweeping, blocks on that packet mid-way and is SIGKILLed there
        first = procs.worker(procs.app_env(app_name, REDPACKET_SWEEP_BATCH=str(batch)))
        first.wait_until(" ready.")
        waited = wait_until(lambda: worker_waits_on_a_lock() and settled() == blocked_at, timeout=30,
                            what="the sweep blocking on the locked packet", procs_alive=[first])
        time.sleep(1.0)  # several beat ticks later, the sweep is still stuck there
        assert worker_waits_on_a_lock() and settled() == blocked_at
        first.kill()
        assert first.process.returncode == -signal.SIGKILL

        # and the lock is released only after the kill
        holder.rollback()
        wait_until(
            lambda: control.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                [app_name],
            ).fetchone()[0] == 0,
            timeout=15, what="the dead worker's database session ending",
        )
        assert settled() == blocked_at  # the orphaned session refunded nothing more

        # and a new worker starts (same beat schedule file)
        second = procs.worker(procs.app_env(app_name, REDPACKET_SWEEP_BATCH=str(batch)))
        took = wait_until(lambda: settled() == packet_count, timeout=30, what="every packet settled",
                          procs_alive=[second])
        time.sleep(1.5)  # a few more sweeps run over the settled packets
    finally:
        holder.close()
        control.close()

    # Then every expired packet was refunded exactly once, and the ledger reconciles
    assert_settled_once(ids)
    assert LedgerTransaction.objects.filter(packet_id__in=ids, kind=TransactionKind.PACKET_REFUND).count() == packet_count
    assert sum(balance_of(sender) for sender in senders) == sum(before) + unclaimed
    assert second.alive()
    call_command("reconcile")
    print(f"drill 1: {packet_count} expired packets; sweep blocked after {blocked_at} settled ({waited:.1f} s); "
          f"worker SIGKILLed there; replacement settled the other {packet_count - blocked_at} in {took:.1f} s; "
          f"refunded {unclaimed} once")


# --- drill 2: Redis hangs, dies and comes back while packets are sent and claimed ---------------------


@dataclass
class Traffic:
    """Sends (by senders) and claims (by everyone else) over HTTP, all recorded."""

    port: int
    group_id: str
    tokens: dict  # user -> token
    replies: list = field(default_factory=list)
    sent: list = field(default_factory=list)  # (sender, packet id, total, phase)
    claims: dict = field(default_factory=dict)  # (user pk, packet id) -> amount

    def send(self, sender, phase: str) -> Reply:
        amount = random.randint(50, 500)
        body = {"group": self.group_id, "kind": "fixed", "share_count": 5, "share_amount": amount, "pin": PIN}
        reply = call(self.port, "POST", "/api/v1/packets", token=self.tokens[sender], body=body,
                     key=uuid.uuid4().hex, op="send")
        reply.phase = phase
        if reply.status == 201:
            self.sent.append((sender, reply.json()["id"], 5 * amount, phase))
        return reply

    def claim(self, user, packet_id: str, phase: str) -> Reply:
        reply = call(self.port, "POST", f"/api/v1/packets/{packet_id}/claim", token=self.tokens[user], op="claim")
        reply.phase = phase
        if reply.status in (200, 201):
            body = reply.json()
            previous = self.claims.setdefault((user.pk, body["packet"]), body["amount"])
            assert previous == body["amount"], "a repeated claim answered another amount"
        return reply

    def round(self, phase: str, senders, claimers, sends_each: int = 2) -> list[Reply]:
        replies = in_threads([lambda s=s: self.send(s, phase) for s in senders for _ in range(sends_each)])
        new = [packet_id for _, packet_id, _, p in self.sent if p == phase]
        # 1 to 4 of the 5 shares are claimed: every packet leaves something to refund
        replies += in_threads([lambda u=u, p=p: self.claim(u, p, phase)
                               for j, p in enumerate(new) for u in claimers[: 1 + j % len(claimers)]])
        self.replies += replies
        statuses = sorted(r.status or 0 for r in replies)
        print(f"phase {phase}: {len(replies)} requests, statuses "
              f"{ {s: statuses.count(s) for s in set(statuses)} }, slowest {max(r.seconds for r in replies):.2f} s")
        return replies


def test_redis_hung_then_dead_then_back_while_packets_are_sent_and_claimed(procs):
    # Given a private Redis as broker and throttle cache, a web server and a worker with beat on it
    redis_port, web_port = free_port(), free_port()
    redis_server = procs.redis(redis_port)
    senders = [UserFactory(balance=500_000) for _ in range(3)]
    claimers = [UserFactory(pin=None) for _ in range(4)]
    group = group_with_members(senders[0], senders[1:] + claimers)
    tokens = {user: token_for(user) for user in senders + claimers}
    before = {user.pk: balance_of(user) for user in senders + claimers}
    env = {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CACHE_URL": f"redis://127.0.0.1:{redis_port}/1",
        "API_THROTTLE": "on",
        "REDPACKET_TTL_SECONDS": "4",
    }
    web = procs.web(web_port, procs.app_env(f"drill-web-{procs.tag}", **env))
    worker = procs.worker(procs.app_env(f"drill-worker-{procs.tag}", **env))
    wait_for_http(web_port, tokens[senders[0]], web)
    worker.wait_until(" ready.")
    traffic = Traffic(web_port, str(group.id), tokens)
    timeline = {}

    # When packets are sent and claimed with Redis up
    up = traffic.round("up", senders, claimers)
    cache_keys = [k.decode() for k in redis_client(redis_port, db=1).keys("*")]
    assert any("throttle_money" in k for k in cache_keys), cache_keys  # the server counts in this Redis

    # and with Redis hung (SIGSTOP: connections are accepted, nothing answers)
    redis_server.signal(signal.SIGSTOP)
    hung = traffic.round("hung", senders, claimers)

    # and with Redis dead (SIGKILL)
    redis_server.kill()
    timeline["down"] = timezone.now()
    down = traffic.round("down", senders, claimers)
    outage = [packet_id for _, packet_id, _, phase in traffic.sent if phase in ("hung", "down")]
    assert outage, "no packet was sent while Redis was out"
    last_expiry = max(Packet.objects.filter(id__in=outage).values_list("expires_at", flat=True))
    time.sleep(max(0.0, (last_expiry - timezone.now()).total_seconds()) + 1.0)
    waiting = Packet.objects.filter(id__in=outage, settled_at__isnull=True).count()

    # and Redis comes back (empty: no persistence) on the same port
    redis_server = procs.redis(redis_port)
    timeline["back"] = timezone.now()
    back = traffic.round("back", senders, claimers)
    every_packet = [packet_id for _, packet_id, _, _ in traffic.sent]
    took = wait_until(
        lambda: not Packet.objects.filter(id__in=every_packet, settled_at__isnull=True).exists(),
        timeout=45, what="every packet refunded after Redis came back", procs_alive=[web, worker],
    )
    time.sleep(1.0)

    # Then every answer was a success or the envelope, promptly, and none was a 5xx
    assert_all_clean(traffic.replies)
    statuses = [r.status for r in traffic.replies]
    assert not [r for r in traffic.replies if r.status >= 500], [r.body for r in traffic.replies if r.status >= 500]
    slowest = max(r.seconds for r in traffic.replies)
    assert slowest < 5, f"a request took {slowest:.1f} s"
    for phase in (up, hung, down, back):
        assert any(r.status == 201 and r.op == "send" for r in phase), [(r.op, r.status) for r in phase]
    # and the packets sent while Redis was out waited for it, then were refunded once
    assert waiting == len(outage), f"{len(outage) - waiting} packets were settled while Redis was down"
    assert not Packet.objects.filter(id__in=outage, settled_at__lt=timeline["back"]).exists()
    assert_settled_once(every_packet)
    # and nothing is half-applied: the packets and claims are exactly the 201s, balances follow from them
    assert Packet.objects.filter(sender__in=senders).count() == len(traffic.sent)
    assert set(map(str, Packet.objects.values_list("id", flat=True))) == set(every_packet)
    db_claims = {(pk, str(p)): a for pk, p, a in Share.objects.filter(claimed_by__isnull=False)
                 .values_list("claimed_by_id", "packet_id", "amount")}
    assert db_claims == traffic.claims
    for user in senders + claimers:
        sent = sum(total for s, _, total, _ in traffic.sent if s == user)
        claimed = sum(a for (pk, _), a in traffic.claims.items() if pk == user.pk)
        refunded = ledger_sum(user, TransactionKind.PACKET_REFUND)
        assert balance_of(user) == before[user.pk] - sent + claimed + refunded, user.username
    assert sum(Packet.objects.filter(id__in=every_packet).values_list("refunded_amount", flat=True)) == sum(
        ledger_sum(s, TransactionKind.PACKET_REFUND) for s in senders)
    call_command("reconcile")
    by_phase = {p: sorted(r.status for r in traffic.replies if r.phase == p) for p in ("up", "hung", "down", "back")}
    print(f"drill 2: {len(traffic.replies)} requests, statuses {sorted(set(statuses))}, by phase "
          f"{ {p: {s: v.count(s) for s in set(v)} for p, v in by_phase.items()} }; slowest {slowest:.2f} s; "
          f"{len(outage)} packets sent while Redis was out, {waiting} of them still waiting when it came back; "
          f"all {len(every_packet)} refunded once, {took:.1f} s after the restart")


def redis_client(port: int, db: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=port, db=db, socket_connect_timeout=2, socket_timeout=2)


# --- drill 3: PostgreSQL connections of the web server terminated mid-request -------------------------


def test_database_connections_terminated_mid_request_leave_nothing_half_applied(procs):
    # Given a web server whose database sessions carry their own application_name
    web_port = free_port()
    app_name = f"drill-web-{procs.tag}"
    users = [UserFactory(balance=500_000) for _ in range(6)]
    group = group_with_members(users[0], users[1:])
    tokens = {user: token_for(user) for user in users}
    before = {user.pk: balance_of(user) for user in users}
    web = procs.web(web_port, procs.app_env(app_name, API_THROTTLE="off"))
    wait_for_http(web_port, tokens[users[0]], web)

    replies: list[Reply] = []
    sends: dict[str, tuple] = {}  # idempotency key -> (user, total, packet id or None, final code)
    claims: dict[tuple, int] = {}  # (user pk, packet id) -> amount
    final_at: dict = {}  # idempotency key or (user pk, packet id) -> when the answered attempt started
    packet_ids: list[str] = []
    lock = threading.Lock()
    stop_traffic = threading.Event()
    stop_faults = threading.Event()
    terminated = [0]

    crashed: list[BaseException] = []
    give_up_at = [time.monotonic() + 60]

    def until_answered(make_call) -> Reply:
        """Retry a call while the server answers 5xx (the same Idempotency-Key every time)."""
        while True:
            reply = make_call()
            with lock:
                replies.append(reply)
            if reply.status is not None and reply.status < 500:
                return reply
            if time.monotonic() > give_up_at[0]:
                raise AssertionError(f"still no answer below 500 after the faults stopped: {reply}")
            time.sleep(0.02)

    def client(user):
        rng = random.Random(user.pk)
        try:
            while not stop_traffic.is_set():
                key, amount = uuid.uuid4().hex, rng.randint(10, 300)
                body = {"group": str(group.id), "kind": "fixed", "share_count": 6, "share_amount": amount, "pin": PIN}
                reply = until_answered(lambda body=body, key=key: call(
                    web_port, "POST", "/api/v1/packets", token=tokens[user], body=body, key=key, op="send"))
                with lock:
                    packet_id = reply.json()["id"] if reply.status == 201 else None
                    sends[key] = (user, 6 * amount, packet_id, reply.code())
                    final_at[key] = reply.started
                    if packet_id:
                        packet_ids.append(packet_id)
                    targets = rng.sample(packet_ids, min(3, len(packet_ids)))
                for packet_id in targets:
                    reply = until_answered(lambda p=packet_id: call(web_port, "POST", f"/api/v1/packets/{p}/claim",
                                                                    token=tokens[user], op="claim"))
                    if reply.status in (200, 201):
                        answer = reply.json()
                        with lock:
                            final_at.setdefault((user.pk, answer["packet"]), reply.started)
                            assert claims.setdefault((user.pk, answer["packet"]), answer["amount"]) == answer["amount"]
        except BaseException as exc:  # reported by the test, not lost in the thread
            crashed.append(exc)

    def terminator(control):
        while not stop_faults.is_set():
            rows = control.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database() AND pid <> pg_backend_pid()",
                [app_name],
            ).fetchall()
            terminated[0] += sum(1 for (ok,) in rows if ok)
            time.sleep(random.uniform(0.02, 0.2))

    # When six clients send and claim for 8 s while the server's sessions are terminated every 20-200 ms
    control = control_connection(f"drill-control-{procs.tag}")
    try:
        faults = threading.Thread(target=terminator, args=(control,))
        clients = [threading.Thread(target=client, args=(user,)) for user in users]
        faults.start()
        for thread in clients:
            thread.start()
        time.sleep(8)
        stop_faults.set()  # then the faults stop, and the clients finish what they started
        faults.join(timeout=10)
        give_up_at[0] = time.monotonic() + 15
        stop_traffic.set()
        for thread in clients:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in clients)
        assert not crashed, crashed
    finally:
        stop_faults.set()
        stop_traffic.set()
        control.close()
    assert web.alive()

    # Then every answer was a success or the envelope: server errors are the JSON internal_error
    assert_all_clean(replies)
    failed = [r for r in replies if r.status >= 500]
    assert {(r.status, r.code()) for r in failed} <= {(500, "internal_error"), (503, "internal_error")}
    assert terminated[0] > 0 and failed, "the drill injected no fault that a request noticed"
    # and every logical send ended in exactly one packet, every claim in exactly one share
    assert all(code is None for _, _, _, code in sends.values()), {c for *_, c in sends.values()}
    assert IdempotencyRecord.objects.count() == len(sends)
    assert set(map(str, Packet.objects.values_list("id", flat=True))) == set(packet_ids)
    assert len(packet_ids) == len(sends)
    db_claims = {(pk, str(p)): a for pk, p, a in Share.objects.filter(claimed_by__isnull=False)
                 .values_list("claimed_by_id", "packet_id", "amount")}
    assert db_claims == claims
    # and every balance is what the successful answers add up to
    for user in users:
        sent = sum(total for u, total, _, _ in sends.values() if u == user)
        claimed = sum(a for (pk, _), a in claims.items() if pk == user.pk)
        assert balance_of(user) == before[user.pk] - sent + claimed, user.username
    call_command("reconcile")
    # (how often a request committed, answered 500 all the same, and its retry got the stored result)
    replayed_sends = sum(1 for record in IdempotencyRecord.objects.all()
                         if record.created_at.timestamp() < final_at[record.key])
    replayed_claims = sum(1 for pk, p, at in Share.objects.filter(claimed_by__isnull=False)
                          .values_list("claimed_by_id", "packet_id", "claimed_at")
                          if at.timestamp() < final_at[(pk, str(p))])
    statuses = sorted({r.status for r in replies})
    print(f"drill 3: {len(replies)} requests ({len(sends)} sends, {len(claims)} claims applied), statuses "
          f"{ {s: sum(1 for r in replies if r.status == s) for s in statuses} }; {terminated[0]} sessions terminated; "
          f"{len(failed)} answered 500 and were retried; {replayed_sends} sends and {replayed_claims} claims had "
          f"committed behind a 500 and were answered by the retry without moving money twice")
