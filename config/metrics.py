"""The service's Prometheus counters, and the one place each is counted.

Multiprocess mode: every gunicorn worker and Celery process writes its own
values into files under PROMETHEUS_MULTIPROC_DIR (set by the settings, before
this module imports prometheus_client), and GET /metrics sums them, so the
counters add up over all processes of a host and survive a worker's death.

The money services carry the decorators below instead of counting inline: a
claim's outcome, a send and a refund are each counted where the service
decides them, and nothing here touches the database.
"""

import functools
import time

from django.db import transaction
from prometheus_client import Counter, Histogram

from config.errors import PacketExhausted, PacketExpired, ServiceError

CLAIM_OUTCOMES = ("paid", "repeat", "exhausted", "expired", "rejected")
# What a delivery attempt of the events app ends in (webhook_delivery_counted).
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")

claims_total = Counter(
    "redpacket_claims", "Claims answered, by outcome: paid, repeat (the earlier claim again), exhausted, "
    "expired, rejected (any other refusal).", ["outcome"],
)
claim_duration_seconds = Histogram(
    "redpacket_claim_duration_seconds", "Time the claim service took, every outcome.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
sends_total = Counter("redpacket_sends", "Packets sent (committed).")
refunds_total = Counter("redpacket_refunds", "Expiry refunds posted (one packet_refund each).")
refunded_amount_total = Counter("redpacket_refunded_amount", "Minor units returned to senders by expiry refunds.")
webhook_deliveries_total = Counter(
    "webhook_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"],
)

# Every labelled series exists from the start (at 0), so a dashboard's rate() has data.
for _outcome in CLAIM_OUTCOMES:
    claims_total.labels(outcome=_outcome)
for _outcome in WEBHOOK_OUTCOMES:
    webhook_deliveries_total.labels(outcome=_outcome)


def claim_outcome(*, created: bool | None = None, error: Exception | None = None) -> str:
    if error is None:
        return "paid" if created else "repeat"
    if isinstance(error, PacketExhausted):
        return "exhausted"
    if isinstance(error, PacketExpired):
        return "expired"
    return "rejected"


def claim_counted(service):
    """Counts each claim by outcome and times it. The service returns a result with `created`."""

    @functools.wraps(service)
    def counted(*args, **kwargs):
        started = time.perf_counter()
        try:
            result = service(*args, **kwargs)
        except ServiceError as error:
            claims_total.labels(outcome=claim_outcome(error=error)).inc()
            raise
        finally:
            claim_duration_seconds.observe(time.perf_counter() - started)
        claims_total.labels(outcome=claim_outcome(created=result.created)).inc()
        return result

    return counted


def send_counted(service):
    """Counts a send once its transaction commits (an enclosing idempotency transaction may still roll back)."""

    @functools.wraps(service)
    def counted(*args, **kwargs):
        packet = service(*args, **kwargs)
        transaction.on_commit(sends_total.inc)
        return packet

    return counted


def refunds_counted(service):
    """Counts the refunds the service posted; it returns {packet: refunded amount}, 0 where nothing was posted."""

    @functools.wraps(service)
    def counted(*args, **kwargs):
        settled = service(*args, **kwargs)
        amounts = [amount for amount in settled.values() if amount]
        if amounts:
            transaction.on_commit(lambda: (refunds_total.inc(len(amounts)), refunded_amount_total.inc(sum(amounts))))
        return settled

    return counted


def webhook_delivery_counted(outcome: str) -> None:
    """The hook the events app's delivery calls once per attempt (an outcome of WEBHOOK_OUTCOMES)."""
    webhook_deliveries_total.labels(outcome=outcome).inc()
