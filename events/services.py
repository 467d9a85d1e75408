"""Services that write: recording events, the relay, endpoints and deliveries.

- `event_record` runs inside the caller's money transaction (one INSERT);
- `events_relay` gives committed events their feed position, in the order they
  became visible, and fans them out to the webhook endpoints (one relay at a
  time: an advisory lock on PostgreSQL, SQLite's single writer elsewhere);
- deliveries are leased one at a time per endpoint slot (at most
  WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT in flight), sent, and their outcome logged.
"""

import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from config.errors import ValidationFailed
from config.logging import current_request_id, request_id_bound
from config.metrics import webhook_delivery_counted
from config.sql_rows import rows_sql
from events import webhooks
from events.models import Delivery, DeliveryAttempt, DeliveryState, Event, EventType, WebhookEndpoint
from events.selectors import event_body
from wallets.ledger import db_value

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the relay: "rp-evnt".
RELAY_LOCK_KEY = 0x72702D65766E74

_EVENT_TABLE = Event._meta.db_table
# Plain SQL: the claim path runs this, and the ORM's insert machinery costs more than the round trip.
_INSERT_EVENTS = f"""
    INSERT INTO {_EVENT_TABLE} (type, group_id, subject, data, created_at, unique_key, request_id)
    {{rows}}
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id, unique_key
"""


class NewEvent(NamedTuple):
    type: str
    group_id: uuid.UUID
    data: dict
    subject: str = ""
    unique_key: str | None = None


def event_record(
    *, type: str, group_id: uuid.UUID, data: dict, subject: str = "", unique_key: str | None = None
) -> int | None:
    """Store one event in the caller's transaction; None when `unique_key` has one already."""
    recorded = event_record_many([NewEvent(type=type, group_id=group_id, data=data, subject=subject,
                                           unique_key=unique_key)])
    return recorded[0][0] if recorded else None


def event_record_many(events: list[NewEvent]) -> list[tuple[int, str | None]]:
    """Store events in the caller's transaction, in one INSERT; returns (id, unique_key) of those
    stored (an event whose `unique_key` has one already is left out)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_record must run inside the transaction of the change it records.")
    now = db_value(Event, "created_at", timezone.now())
    request_id = _causing_request_id()
    rows, params = rows_sql(
        ["text", "uuid", "text", "jsonb", "timestamptz", "text", "text"],
        [[event.type, db_value(Event, "group_id", event.group_id), event.subject, event.data,
          now, event.unique_key, request_id] for event in events],
    )
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENTS.format(rows=rows), params)
        return cursor.fetchall()


def _causing_request_id() -> str | None:
    request_id = current_request_id()
    return request_id[: Event._meta.get_field("request_id").max_length] if request_id else None


_POSITION_EVENTS = f"""
    WITH positioned (id, position) AS ({{rows}})
    UPDATE {_EVENT_TABLE} SET position = positioned.position FROM positioned WHERE {_EVENT_TABLE}.id = positioned.id
"""


def events_relay(*, limit: int | None = None) -> int:
    """Give the committed events without a position the next feed positions; returns how many.

    A position is assigned only once the event's transaction has committed (the
    relay cannot see it before), and every later run sees a newer snapshot and
    hands out larger positions: a reader following positions never skips an
    event whose transaction committed late. Each event also gets a pending
    delivery for every enabled endpoint that takes its type.
    """
    limit = limit or settings.EVENTS_RELAY_BATCH
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
        # Read after the lock: this statement's snapshot sees what the previous relay committed.
        pending = list(
            Event.objects.filter(position__isnull=True).order_by("id").only("id", "type", "request_id")[:limit]
        )
        if not pending:
            return 0
        top = Event.objects.aggregate(top=Max("position"))["top"] or 0
        for offset, event in enumerate(pending, start=1):
            event.position = top + offset
        # One statement for the batch: the ORM's bulk_update builds a CASE branch per event, which cost
        # more CPU than everything else the relay does.
        rows, params = rows_sql(["bigint", "bigint"], [[event.id, event.position] for event in pending])
        with connection.cursor() as cursor:
            cursor.execute(_POSITION_EVENTS.format(rows=rows), params)
        endpoints = list(WebhookEndpoint.objects.filter(disabled_at__isnull=True))
        takers = {event.id: [endpoint for endpoint in endpoints if endpoint.takes(event.type)] for event in pending}
        Delivery.objects.bulk_create(
            [Delivery(event=event, endpoint=endpoint) for event in pending for endpoint in takers[event.id]],
            ignore_conflicts=True,
        )
    for event in pending:
        with request_id_bound(event.request_id):
            logger.info("Event %s (%s) at feed position %s, queued for %s webhook endpoint(s)",
                        event.public_id, event.type, event.position, len(takers[event.id]))
    return len(pending)


# --- Endpoints --------------------------------------------------------------------


def webhook_endpoint_validate(*, url: str, secret: str, previous_secret: str = "", event_types: list[str]) -> None:
    """The registration checks, shared by the admin and the command; raises ValidationFailed."""
    try:
        webhooks.url_addresses(url, resolve=True)
    except webhooks.UnsafeWebhookUrl as exc:
        raise ValidationFailed.on("url", str(exc)) from exc
    for field, value in (("secret", secret), ("previous_secret", previous_secret)):
        if (value or field == "secret") and not webhooks.secret_is_valid(value):
            raise ValidationFailed.on(field, "A secret is whsec_ followed by base64 (non-empty).")
    unknown = sorted(set(event_types) - set(EventType.values))
    if unknown:
        raise ValidationFailed.on("event_types", f"Unknown event types: {', '.join(unknown)}.")


def webhook_endpoint_create(
    *, url: str, secret: str, event_types: list[str] | None = None, description: str = ""
) -> WebhookEndpoint:
    event_types = list(dict.fromkeys(event_types or []))
    webhook_endpoint_validate(url=url, secret=secret, event_types=event_types)
    return WebhookEndpoint.objects.create(url=url, secret=secret, event_types=event_types, description=description)


def webhook_endpoint_disable(*, endpoint_id: uuid.UUID, reason: str) -> bool:
    return bool(
        WebhookEndpoint.objects.filter(id=endpoint_id, disabled_at__isnull=True).update(
            disabled_at=timezone.now(), disabled_reason=reason[:200]
        )
    )


def webhook_endpoint_enable(*, endpoint_id: uuid.UUID) -> bool:
    return bool(
        WebhookEndpoint.objects.filter(id=endpoint_id, disabled_at__isnull=False).update(
            disabled_at=None, disabled_reason="", failing_since=None
        )
    )


_RESET = {"state": DeliveryState.PENDING, "attempts": 0, "leased_until": None, "lease_token": None,
          "delivered_at": None}


def event_redeliver(*, event_id: int) -> int:
    """Send an event again to every enabled endpoint that takes its type (an operator's action)."""
    event = Event.objects.get(id=event_id)
    count = 0
    for endpoint in WebhookEndpoint.objects.filter(disabled_at__isnull=True):
        if endpoint.takes(event.type):
            Delivery.objects.update_or_create(
                event=event, endpoint=endpoint, defaults={**_RESET, "next_attempt_at": timezone.now()}
            )
            count += 1
    return count


def endpoint_redeliver_failed(*, endpoint_id: uuid.UUID) -> int:
    return Delivery.objects.filter(endpoint_id=endpoint_id, state=DeliveryState.FAILED).update(
        **_RESET, next_attempt_at=timezone.now()
    )


# --- Deliveries -------------------------------------------------------------------


def _lease_seconds() -> float:
    # Connect, send and answer each have the timeout; the lease outlasts a whole attempt.
    return 3 * settings.WEBHOOK_TIMEOUT_SECONDS + 5


def _due(now: datetime) -> Q:
    return (
        Q(state=DeliveryState.PENDING, next_attempt_at__lte=now, endpoint__disabled_at__isnull=True)
        & (Q(leased_until__isnull=True) | Q(leased_until__lte=now))
    )


def deliveries_dispatch(*, now: datetime | None = None) -> dict[uuid.UUID, int]:
    """How many delivery tasks to start per endpoint: its due deliveries, up to its free slots."""
    now = now or timezone.now()
    due = dict(Delivery.objects.filter(_due(now)).values("endpoint").annotate(n=Count("id")).values_list("endpoint", "n"))
    if not due:
        return {}
    busy = dict(
        Delivery.objects.filter(endpoint__in=due, state=DeliveryState.PENDING, leased_until__gt=now)
        .values("endpoint").annotate(n=Count("id")).values_list("endpoint", "n")
    )
    slots = settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT
    return {endpoint: min(n, slots - busy.get(endpoint, 0)) for endpoint, n in due.items() if busy.get(endpoint, 0) < slots}


class Lease(NamedTuple):
    delivery_id: int
    token: uuid.UUID
    # The event's request_id: the attempt logs under it.
    request_id: str | None


def delivery_lease_next(*, endpoint_id: uuid.UUID) -> Lease | None:
    """Lease the endpoint's next due delivery, unless its slots are all in flight."""
    now = timezone.now()
    with transaction.atomic():
        # The endpoint row lock makes the count and the lease one step per endpoint.
        endpoint = WebhookEndpoint.objects.select_for_update().filter(id=endpoint_id, disabled_at__isnull=True).first()
        if endpoint is None:
            return None
        in_flight = Delivery.objects.filter(endpoint=endpoint, state=DeliveryState.PENDING, leased_until__gt=now).count()
        if in_flight >= settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT:
            return None
        due = (Delivery.objects.filter(_due(now), endpoint=endpoint).order_by("next_attempt_at", "id")
               .values_list("id", "event__request_id").first())
        if due is None:
            return None
        delivery_id, request_id = due
        token = uuid.uuid4()
        Delivery.objects.filter(id=delivery_id).update(
            leased_until=now + timedelta(seconds=_lease_seconds()), lease_token=token
        )
    return Lease(delivery_id, token, request_id)


def delivery_attempt(*, delivery_id: int, token: uuid.UUID) -> bool | None:
    """Send a leased delivery once and log it; True delivered, False not (yet), None lease lost."""
    delivery = Delivery.objects.select_related("event", "endpoint").filter(id=delivery_id).first()
    if delivery is None or delivery.lease_token != token or delivery.state != DeliveryState.PENDING:
        return None
    endpoint, event = delivery.endpoint, delivery.event
    body = json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=False)
    result = webhooks.post_event(
        url=endpoint.url, msg_id=event.public_id, body=body, secrets=[endpoint.secret, endpoint.previous_secret],
        request_id=event.request_id,
    )
    return _attempt_record(delivery_id=delivery_id, token=token, endpoint_id=endpoint.id, result=result)


def _attempt_record(*, delivery_id: int, token: uuid.UUID, endpoint_id: uuid.UUID,
                    result: webhooks.AttemptResult) -> bool | None:
    now = timezone.now()
    schedule = settings.WEBHOOK_RETRY_SECONDS
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(id=endpoint_id)
        delivery = Delivery.objects.select_for_update().get(id=delivery_id)
        DeliveryAttempt.objects.create(
            delivery=delivery, attempted_at=result.attempted_at, status_code=result.status_code,
            latency_ms=result.latency_ms, response_excerpt=result.response_excerpt, error=result.error,
            succeeded=result.succeeded,
        )
        if delivery.lease_token != token or delivery.state != DeliveryState.PENDING:
            return None  # re-leased after our lease ran out: the new holder decides
        delivery.attempts += 1
        delivery.leased_until = delivery.lease_token = None
        if result.succeeded:
            delivery.state, delivery.delivered_at = DeliveryState.DELIVERED, now
            endpoint.failing_since = None
        else:
            endpoint.failing_since = endpoint.failing_since or now
            gone = result.status_code == 410
            failing_for = now - endpoint.failing_since
            if gone or failing_for >= timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS):
                if endpoint.disabled_at is None:
                    endpoint.disabled_at = now
                    endpoint.disabled_reason = (
                        "410 Gone: the receiver asked for no more deliveries." if gone
                        else f"Every attempt failed for {failing_for.days} days ({failing_for})."
                    )[:200]
            if gone or delivery.attempts > len(schedule):
                delivery.state = DeliveryState.FAILED
            else:
                delay = max(schedule[delivery.attempts - 1], result.retry_after or 0)
                delivery.next_attempt_at = now + timedelta(seconds=delay)
        delivery.save(update_fields=["attempts", "leased_until", "lease_token", "state", "delivered_at",
                                     "next_attempt_at"])
        endpoint.save(update_fields=["failing_since", "disabled_at", "disabled_reason"])
        outcome = {DeliveryState.DELIVERED: "delivered", DeliveryState.FAILED: "failed"}.get(delivery.state, "retrying")
        transaction.on_commit(lambda: webhook_delivery_counted(outcome))
    return result.succeeded
