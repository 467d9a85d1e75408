"""Celery tasks: thin, idempotent, driven by a periodic sweep over the database."""

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from events.selectors import event_position_since
from redpackets.services import packets_due_count, packets_finish_claimed, packets_settle, packets_take_due

# Without a cursor, packets with a claim this recent are checked; an older one ends at the latest with its expiry refund.
FINISH_SWEEP_WINDOW = timedelta(minutes=10)

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def refund_expired_packets(fan_out: bool = False) -> int:
    """Refund packets past their expiry, oldest first, REDPACKET_SWEEP_BATCH per commit, until
    none is due (or for at most REDPACKET_SWEEP_SECONDS); returns how many it settled.

    Safe to run twice, on many workers at once, or again after a worker died halfway:
    each batch is taken under its packets' row locks with SKIP LOCKED, so sweeps at once
    take different packets, and settled exactly once by `packets_settle` (in a savepoint
    of that transaction; should the batch fail, in halves down to the packet that fails,
    so one broken packet does not hold back the rest). Beat's run (`fan_out`) with a backlog of more than a
    batch starts REDPACKET_SWEEP_TASKS - 1 more sweeps, one per worker process.
    """
    batch = settings.REDPACKET_SWEEP_BATCH
    if fan_out and settings.REDPACKET_SWEEP_TASKS > 1 and packets_due_count(limit=batch + 1) > batch:
        for _ in range(settings.REDPACKET_SWEEP_TASKS - 1):
            refund_expired_packets.delay()
    settled = 0
    skip = set()  # failed, or a claim held a share: left to the next sweep
    deadline = time.monotonic() + settings.REDPACKET_SWEEP_SECONDS
    while time.monotonic() < deadline:
        with transaction.atomic():
            packets = packets_take_due(limit=batch, skip=skip)
            if not packets:
                break
            done = _settled_apart_from_failures(packets)
        skip.update(packet.id for packet in packets if packet.id not in done)
        settled += len(done)
    if settled:
        logger.info("Settled %d expired packets", settled)
    return settled


def _settled_apart_from_failures(packets: list) -> set:
    """The ids `packets_settle` settled, in a savepoint; when the batch fails, halves of it, down
    to the one packet that fails, which is logged and left out."""
    try:
        with transaction.atomic():
            return set(packets_settle(packets=packets, wait_for_claims=False))
    except Exception:
        if len(packets) == 1:
            logger.exception("Refund of packet %s failed", packets[0].id)
            return set()
    half = len(packets) // 2
    return _settled_apart_from_failures(packets[:half]) | _settled_apart_from_failures(packets[half:])


@shared_task(acks_late=True)
def finish_claimed_packets() -> int:
    """Record packet.finished for packets whose last claimer did not (it died after commit), among the
    claims committed since the last run: a cursor over the feed's positions (the relay gives them in
    commit order), kept in the cache, so each run reads only what is new. Without a cursor (a cold
    cache, or none reachable) it starts FINISH_SWEEP_WINDOW back."""
    after = _finish_cursor()
    if after is None:
        after = event_position_since(since=timezone.now() - FINISH_SWEEP_WINDOW)
    finished = 0
    while True:
        recorded, last = packets_finish_claimed(after_position=after)
        finished += recorded
        _finish_cursor_save(last)  # the cold start's too: the next run does not look back again
        if last == after:
            return finished
        after = last


FINISH_CURSOR_KEY = "redpackets:finish-claimed:after-position"


def _finish_cursor() -> int | None:
    try:
        return cache.get(FINISH_CURSOR_KEY)
    except Exception:
        logger.warning("The cache is unreachable: the finish sweep looks %s back", FINISH_SWEEP_WINDOW, exc_info=True)
        return None


def _finish_cursor_save(position: int) -> None:
    try:
        cache.set(FINISH_CURSOR_KEY, position, timeout=None)
    except Exception:
        logger.warning("The cache is unreachable: the finish sweep's cursor is not kept", exc_info=True)
