"""A real Celery worker with embedded beat refunds expired packets from the database.

The worker runs as a subprocess against the test's own database (committed
data: transaction=True) and the test broker, with REDPACKET_SWEEP_SECONDS=2 so
beat sweeps every 0.5 s.
"""

import os
import signal
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from redpackets.models import Packet, PacketKind, Share
from redpackets.services import packet_claim, packet_send
from tests.factories import UserFactory, group_with_members
from tests.processes import Proc, database_url
from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, TransactionKind

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
]

SWEEP_SECONDS = 2
SETTLE_TIMEOUT = 40


class Worker(Proc):
    """`celery -A config worker --beat` on the test database and broker."""

    def __init__(self, var_dir: Path, log_path: Path):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "REDPACKET_SWEEP_SECONDS": str(SWEEP_SECONDS),
            "VAR_DIR": str(var_dir),
            "PYTHONUNBUFFERED": "1",
            "CELERY_TASK_LOG_LEVEL": "INFO",  # wait_ready() reads the per-task lines
        }
        super().__init__(
            "worker",
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--loglevel=info",
             "--concurrency=1", "-n", f"redpackets-test-{uuid.uuid4().hex[:8]}@%h"],
            env,
            log_path,
        )

    def wait_ready(self) -> None:
        self.wait_until(" ready.")
        # Beat has sent a sweep and the worker ran it: the whole loop is up.
        self.wait_until("refund_expired_packets", timeout=30)
        self.wait_until("succeeded", timeout=30)


@pytest.fixture
def workers(tmp_path):
    """Start workers with `workers.start()`; all are stopped at the end.

    Their output is printed at teardown; pytest shows it only when the test fails.
    """
    started: list[Worker] = []
    var_dir = tmp_path / "var"
    var_dir.mkdir()

    class Starter:
        def start(self) -> Worker:
            worker = Worker(var_dir, tmp_path / f"worker-{len(started)}.log")
            started.append(worker)
            return worker

    try:
        yield Starter()
    finally:
        for worker in started:
            worker.stop()
        for index, worker in enumerate(started):
            print(f"----- output of worker {index} (exit code {worker.process.returncode}) -----")
            print(worker.output())


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def wait_until_settled(packet: Packet, worker: Worker, timeout: float = SETTLE_TIMEOUT) -> Packet:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        packet.refresh_from_db()
        if packet.settled_at is not None:
            return packet
        assert worker.process.poll() is None, f"the worker exited with {worker.process.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"packet {packet.id} was not settled within {timeout} s")


def assert_refunded_once(packet: Packet, sender, sender_balance_before: int, claimed: int) -> None:
    refund = packet.total_amount - claimed
    assert packet.refunded_amount == refund
    refunds = LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_REFUND)
    assert refunds.count() == 1
    assert LedgerEntry.objects.get(transaction=refunds.get(), account__user=sender).amount == refund
    assert sum(Share.objects.filter(packet=packet, refunded=True).values_list("amount", flat=True)) == refund
    assert not Share.objects.filter(packet=packet, claimed_by__isnull=True, refunded=False).exists()
    assert balance_of(sender) == sender_balance_before + refund


def test_a_running_worker_refunds_an_expired_packet_within_the_sweep_window(workers):
    # Given a worker with beat, running
    worker = workers.start()
    worker.wait_ready()
    sender = UserFactory(balance=50_000)
    crowd = [UserFactory(pin=None) for _ in range(4)]
    group = group_with_members(sender, crowd)

    # When a two-second packet is sent and partly claimed
    with override_settings(REDPACKET_TTL_SECONDS=2):
        packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=4,
                             total_amount=4_000)
    claimed = sum(packet_claim(packet_id=packet.id, user=user).amount for user in crowd[:2])
    after_send = balance_of(sender)

    # Then the worker refunds the rest once, soon after expiry
    packet = wait_until_settled(packet, worker)
    assert packet.settled_at >= packet.expires_at
    assert packet.settled_at - packet.expires_at < timedelta(seconds=SWEEP_SECONDS)
    time.sleep(1.5)  # a few more sweeps run over the settled packet
    packet.refresh_from_db()
    assert_refunded_once(packet, sender, after_send, claimed)
    assert worker.process.poll() is None
    call_command("reconcile")


def test_a_worker_killed_while_idle_is_replaced_and_the_packet_is_refunded_once(workers):
    # Given a worker that was killed with SIGKILL while idle
    first = workers.start()
    first.wait_ready()
    first.kill()
    assert first.process.returncode == -signal.SIGKILL

    # and a packet that expires while no worker runs
    sender = UserFactory(balance=50_000)
    crowd = [UserFactory(pin=None) for _ in range(3)]
    group = group_with_members(sender, crowd)
    with override_settings(REDPACKET_TTL_SECONDS=1):
        packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=3,
                             share_amount=700)
    claimed = packet_claim(packet_id=packet.id, user=crowd[0]).amount
    after_send = balance_of(sender)
    time.sleep(max(0.0, (packet.expires_at - timezone.now()).total_seconds()) + 0.5)
    packet.refresh_from_db()
    assert packet.settled_at is None  # nobody refunded it meanwhile

    # When another worker starts (same beat schedule file)
    second = workers.start()
    second.wait_until(" ready.")

    # Then it refunds the packet exactly once
    packet = wait_until_settled(packet, second)
    time.sleep(1.5)
    packet.refresh_from_db()
    assert_refunded_once(packet, sender, after_send, claimed)
    assert second.process.poll() is None
    call_command("reconcile")
