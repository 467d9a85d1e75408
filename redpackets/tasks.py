"""Celery tasks: thin, idempotent, driven by a periodic sweep over the database."""

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from redpackets.services import packet_refund_expired, packets_due_for_refund, packets_finish_claimed

# Packets with a claim this recent are checked; an older one ends at the latest with its expiry refund.
FINISH_SWEEP_WINDOW = timedelta(minutes=10)

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def refund_expired_packets() -> int:
    """Refund every packet past its expiry, each in its own transaction.

    Safe to run twice, on two workers at once, or again after a worker died
    halfway: each packet is settled under its row lock, exactly once.
    """
    settled = 0
    for packet_id in packets_due_for_refund():
        try:
            if packet_refund_expired(packet_id=packet_id) is not None:
                settled += 1
        except Exception:
            # One packet that cannot settle must not hold back every later one;
            # it stays due and is tried again by the next sweep.
            logger.exception("Refund of packet %s failed", packet_id)
    if settled:
        logger.info("Settled %d expired packets", settled)
    return settled


@shared_task(acks_late=True)
def finish_claimed_packets() -> int:
    """Record packet.finished for packets claimed recently whose last claimer did not (it died after commit)."""
    return packets_finish_claimed(since=timezone.now() - FINISH_SWEEP_WINDOW)
