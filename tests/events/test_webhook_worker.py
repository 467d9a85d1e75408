"""Webhooks through a real Celery worker (embedded beat runs the relay) on the test database:
retries until delivered with the same id, isolation from a dead endpoint, and a drill where
the worker is SIGKILLed with deliveries in flight."""

import os
import signal
import sys
import time
import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from events.models import Delivery, DeliveryState, Event, EventType
from events.services import webhook_endpoint_create
from redpackets.models import Packet, PacketKind
from redpackets.services import packet_claim, packet_send
from tests.events.receiver import Receiver
from tests.events.test_webhooks import new_secret
from tests.factories import UserFactory, group_with_members
from tests.processes import Proc, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

TIMEOUT_SECONDS = 1


class Worker(Proc):
    """One worker on both queues, with embedded beat (relay every 0.5 s)."""

    def __init__(self, tmp_path, n: int, **env: str):
        super().__init__(
            f"worker-{n}",
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "-Q", "celery,webhooks",
             "--pool", "threads", "--concurrency", "6", "--loglevel=info", "--without-gossip", "--without-mingle",
             "-n", f"events-test-{uuid.uuid4().hex[:8]}@%h", "-s", str(tmp_path / "celerybeat-schedule")],
            {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": database_url(),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
                "VAR_DIR": str(tmp_path / "var"),
                "EVENTS_RELAY_SECONDS": "0.5",
                "REDPACKET_SWEEP_SECONDS": "2",
                "WEBHOOK_RETRY_SECONDS": "1,1,1",
                "WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            tmp_path / f"worker-{n}.log",
        )


@pytest.fixture
def workers(tmp_path):
    (tmp_path / "var").mkdir()
    started: list[Worker] = []

    class Starter:
        def start(self, **env) -> Worker:
            worker = Worker(tmp_path, len(started), **env)
            started.append(worker)
            worker.wait_until(" ready.", timeout=60)
            return worker

    try:
        yield Starter()
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            print(f"----- {worker.name} -----\n{worker.output()[-20000:]}")


def packet_with_claims(shares=2):
    sender = UserFactory(balance=50_000)
    crowd = [UserFactory(pin=None) for _ in range(shares)]
    group = group_with_members(sender, crowd)
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=shares,
                         total_amount=shares * 100)
    for user in crowd:
        packet_claim(packet_id=packet.id, user=user)
    return group, packet


def test_every_event_of_a_packet_arrives_after_failures_and_a_timeout_with_the_same_id(workers):
    # Given a receiver that fails each event's first attempt and times out on its second
    def plan(attempt, headers):
        return {1: (500, {}, 0), 2: (200, {}, TIMEOUT_SECONDS + 1.5)}.get(attempt, (200, {}, 0))

    with Receiver(secret := new_secret(), plan=plan, timeout=TIMEOUT_SECONDS) as receiver:
        webhook_endpoint_create(url=receiver.url, secret=secret)
        worker = workers.start()

        # When a packet is sent and claimed to the end
        group, packet = packet_with_claims()
        ids = {e.public_id for e in Event.objects.filter(group_id=group.id)}
        assert len(ids) == 3 + 1 + 2 + 1  # three members added, sent, two claims, finished

        # Then every event arrives, signed, with the same id and body on every attempt
        receiver.wait_for(ids, timeout=60, alive=worker.alive)
        by_id = receiver.by_id()
        for event_id in ids:
            attempts = by_id[event_id]
            assert [a.status for a in attempts[:3]] == [500, 200, 200]
            assert all(a.verified for a in attempts)
            assert len({a.body for a in attempts}) == 1
            assert attempts[0].event["id"] == event_id
        types = {by_id[i][0].event["type"] for i in ids}
        assert types == set(EventType.values) - {EventType.PACKET_EXPIRED}
        finished = next(by_id[i][0].event for i in ids if by_id[i][0].event["type"] == "packet.finished")
        assert finished["data"]["packet"]["status"] == "finished"
        assert finished["data"]["packet"]["claimed_count"] == 2
        deadline = time.monotonic() + 10
        while Delivery.objects.exclude(state=DeliveryState.DELIVERED).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Delivery.objects.exclude(state=DeliveryState.DELIVERED).exists()


def test_a_dead_endpoint_delays_neither_the_others_nor_the_expiry_refunds(workers):
    # Given one endpoint that never answers in time and one that does
    with Receiver(dead_secret := new_secret(), plan=lambda a, h: (200, {}, 30), timeout=TIMEOUT_SECONDS) as dead, \
            Receiver(secret := new_secret()) as healthy:
        dead_endpoint = webhook_endpoint_create(url=dead.url, secret=dead_secret)
        webhook_endpoint_create(url=healthy.url, secret=secret)
        worker = workers.start()

        # When many events are recorded and a short-lived packet expires meanwhile
        groups = [packet_with_claims(shares=3)[0] for _ in range(4)]
        sender, other = UserFactory(balance=10_000), UserFactory()
        with override_settings(REDPACKET_TTL_SECONDS=1):
            expiring = packet_send(sender=sender, group_id=group_with_members(sender, [other]).id,
                                   kind=PacketKind.FIXED, share_count=2, share_amount=100)
        ids = {e.public_id for e in Event.objects.filter(group_id__in=[g.id for g in groups])}

        # Then the healthy endpoint gets every event and the packet is refunded, while the dead one
        # has had no more than its bound of attempts in flight
        healthy.wait_for(ids, timeout=30, alive=worker.alive)
        deadline = time.monotonic() + 20
        while Packet.objects.get(id=expiring.id).settled_at is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert Packet.objects.get(id=expiring.id).settled_at is not None
        assert Delivery.objects.filter(endpoint=dead_endpoint, state=DeliveryState.PENDING).exists()
        started_at = sorted(r.at for r in dead.received)
        in_flight_at_once = max(sum(1 for t in started_at if s <= t < s + TIMEOUT_SECONDS) for s in started_at)
        assert in_flight_at_once <= settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT


def test_drill_a_worker_sigkilled_with_deliveries_in_flight_is_replaced_and_every_event_arrives(workers):
    # Given a receiver that is slow at first, so that deliveries are in flight
    slow = {"delay": 0.8}
    with Receiver(secret := new_secret(), plan=lambda a, h: (200, {}, slow["delay"])) as receiver:
        webhook_endpoint_create(url=receiver.url, secret=secret)
        groups = [packet_with_claims(shares=2)[0] for _ in range(5)]
        ids = {e.public_id for e in Event.objects.filter(group_id__in=[g.id for g in groups])}
        first = workers.start(WEBHOOK_TIMEOUT_SECONDS="2")
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.received, "no delivery started"

        # When the worker is SIGKILLed mid-delivery, and another one starts
        first.kill()
        assert first.process.returncode == -signal.SIGKILL
        pending = Delivery.objects.filter(state=DeliveryState.PENDING).count()
        slow["delay"] = 0
        second = workers.start(WEBHOOK_TIMEOUT_SECONDS="2")

        # Then every event arrives (the killed worker's leases run out and are sent again)
        receiver.wait_for(ids, timeout=60, alive=second.alive)
    assert pending > 0
    assert all(r.verified for r in receiver.received)
