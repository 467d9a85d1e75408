"""Celery tasks: the relay (default queue, beat every EVENTS_RELAY_SECONDS) and delivery (`webhooks` queue).

Deliveries are driven by the database, not by ETAs: a delivery waits in its row
until `next_attempt_at`; every relay run starts delivery tasks for the endpoints
with due deliveries, so a delivery whose worker died (its lease runs out) or that
no task picked up is sent again by a later run.
"""

import logging
import time

from celery import shared_task
from django.conf import settings

from config.logging import request_id_bound
from events.services import deliveries_dispatch, delivery_attempt, delivery_lease_next, events_relay

logger = logging.getLogger(__name__)

WEBHOOK_QUEUE = "webhooks"
# A delivery task sends one endpoint's due deliveries back to back for at most this long.
DRAIN_SECONDS = 20


@shared_task(acks_late=True)
def relay_events() -> int:
    positioned = 0
    while batch := events_relay():
        positioned += batch
        if batch < settings.EVENTS_RELAY_BATCH:
            break
    for endpoint_id, tasks in deliveries_dispatch().items():
        for _ in range(tasks):
            # Expires: a task still queued by the next run's time is superseded by that run's.
            deliver_to_endpoint.apply_async((str(endpoint_id),), queue=WEBHOOK_QUEUE,
                                            expires=max(settings.EVENTS_RELAY_SECONDS * 5, 5))
    return positioned


@shared_task(acks_late=True)
def deliver_to_endpoint(endpoint_id: str) -> int:
    """Send the endpoint's due deliveries one by one, holding one of its in-flight slots."""
    sent = 0
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and (lease := delivery_lease_next(endpoint_id=endpoint_id)):
        # Each attempt logs under the id of the request that recorded its event.
        with request_id_bound(lease.request_id):
            delivered = delivery_attempt(delivery_id=lease.delivery_id, token=lease.token)
            logger.info("Webhook delivery %s to endpoint %s: %s", lease.delivery_id, endpoint_id,
                        {True: "delivered", False: "failed, will retry or give up", None: "lease lost"}[delivered])
        sent += 1
    return sent
