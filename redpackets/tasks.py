"""Celery tasks: thin, idempotent, driven by a periodic sweep over the database."""

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from redpackets.services import packet_refund_expired, packet_take_due, packets_due_count, packets_finish_claimed

# Packets with a claim this recent are checked; an older one ends at the latest with its expiry refund.
FINISH_SWEEP_WINDOW = timedelta(minutes=10)

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def refund_expired_packets(fan_out: bool = False) -> int:
    """Refund packets past their expiry, oldest first, until none is due (or for at most
    REDPACKET_SWEEP_SECONDS); returns how many it settled.

    Safe to run twice, on many workers at once, or again after a worker died halfway:
    each packet is taken under its row lock with SKIP LOCKED, so sweeps at once take
    different packets, and settled exactly once by `packet_refund_expired` (in a
    savepoint of that transaction, so one broken packet does not hold back the rest).
    Beat's run (`fan_out`) with a backlog of more than REDPACKET_SWEEP_BATCH packets
    starts REDPACKET_SWEEP_TASKS - 1 more sweeps, one per worker process.
    """
    if fan_out and settings.REDPACKET_SWEEP_TASKS > 1:
        if packets_due_count(limit=settings.REDPACKET_SWEEP_BATCH + 1) > settings.REDPACKET_SWEEP_BATCH:
            for _ in range(settings.REDPACKET_SWEEP_TASKS - 1):
                refund_expired_packets.delay()
    settled = 0
    skip = set()  # failed or found settled in this run: left to the next sweep
    deadline = time.monotonic() + settings.REDPACKET_SWEEP_SECONDS
    while time.monotonic() < deadline:
        with transaction.atomic():
            packet_id = packet_take_due(skip=skip)
            if packet_id is None:
                break
            try:
                refunded = packet_refund_expired(packet_id=packet_id)
            except Exception:
                logger.exception("Refund of packet %s failed", packet_id)
                refunded = None
            if refunded is None:
                skip.add(packet_id)
            else:
                settled += 1
    if settled:
        logger.info("Settled %d expired packets", settled)
    return settled


@shared_task(acks_late=True)
def finish_claimed_packets() -> int:
    """Record packet.finished for packets claimed recently whose last claimer did not (it died after commit)."""
    return packets_finish_claimed(since=timezone.now() - FINISH_SWEEP_WINDOW)
