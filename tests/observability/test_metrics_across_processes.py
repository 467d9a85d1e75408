"""Counters add up over every gunicorn worker and the Celery worker, and survive a worker's SIGKILL."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.test import override_settings
from knox.models import AuthToken
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from redpackets.models import Packet, PacketKind
from redpackets.services import packet_send
from tests.factories import UserFactory, group_with_members

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def scrape(stack) -> dict:
    response = requests.get(stack.url("/metrics"), headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200, response.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(response.text) for s in f.samples}


def paid_by_process(metrics_dir) -> dict[int, float]:
    """Paid claims counted in each process's own file."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        for family in multiprocess.MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in family.samples:
                if sample.name == "redpacket_claims_total" and sample.labels == {"outcome": "paid"} and sample.value:
                    counts[int(path.stem.rsplit("_", 1)[1])] = sample.value
    return counts


def gunicorn_workers(master_pid: int) -> list[int]:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as children:
        return [int(pid) for pid in children.read().split()]


def test_counters_sum_over_gunicorn_workers_and_celery_and_survive_a_killed_worker(stack):
    # Given two gunicorn workers and a Celery worker with beat, sharing one metrics directory
    sender = UserFactory(balance=1_000_000)
    claimers = [UserFactory(pin=None) for _ in range(40)]
    group = group_with_members(sender, claimers)
    hot = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=40, share_amount=100)
    tokens = {user.pk: AuthToken.objects.create(user)[1] for user in claimers}
    web = stack.web(workers=2)
    stack.worker(REDPACKET_SWEEP_SECONDS="2")
    with override_settings(REDPACKET_TTL_SECONDS=3):
        expiring = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=5,
                               share_amount=70)

    # When 40 members claim the hot packet, each on a new connection, 8 at a time, and 2 the expiring one
    def claim(user, packet):
        return requests.post(stack.url(f"/api/v1/packets/{packet.id}/claim"), timeout=30,
                             headers={"Authorization": f"Bearer {tokens[user.pk]}", "Connection": "close"}).status_code

    assert [claim(u, expiring) for u in claimers[:2]] == [201, 201]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda u: claim(u, hot), claimers))
    deadline = time.monotonic() + 30
    while Packet.objects.filter(id=expiring.id, settled_at__isnull=True).exists():
        assert time.monotonic() < deadline, "the sweep did not refund the expiring packet"
        time.sleep(0.2)
    time.sleep(0.5)

    # Then both gunicorn workers paid claims, and every scrape (whichever worker answers) shows the sum
    assert statuses == [201] * 40
    by_process = paid_by_process(stack.metrics_dir)
    assert len(by_process) >= 2 and sum(by_process.values()) == 42, by_process
    scrapes = [scrape(stack) for _ in range(6)]
    for samples in scrapes:
        assert samples[("redpacket_claims_total", (("outcome", "paid"),))] == 42
        assert samples[("redpacket_claim_duration_seconds_count", ())] == 42
        # and the refund, counted in the Celery worker's process, is in the web server's sum
        assert samples[("redpacket_refunds_total", ())] == 1
        assert samples[("redpacket_refunded_amount_total", ())] == 3 * 70

    # When one gunicorn worker is SIGKILLed and replaced
    victim = next(pid for pid in by_process if pid in gunicorn_workers(web.pid))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in gunicorn_workers(web.pid) or len(gunicorn_workers(web.pid)) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.2)

    # Then its claims still count
    for _ in range(4):
        assert scrape(stack)[("redpacket_claims_total", (("outcome", "paid"),))] == 42
