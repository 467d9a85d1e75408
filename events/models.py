"""The outbox of events for the chat app, webhook endpoints, deliveries and their log.

An event row is written in the transaction of the change it describes (the
services of the other apps call `events.services.event_record`), so none is lost
and none describes a change that rolled back. Its feed `position` is assigned
after commit by the relay (`events.services.events_relay`), in the order the
events became visible: that, not the insert id, is the order of the pull feed.
"""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

EVENT_ID_PREFIX = "evt_"


class EventType(models.TextChoices):
    """The catalogue of the contract: every type a chat client may receive."""

    PACKET_SENT = "packet.sent"
    PACKET_CLAIMED = "packet.claimed"
    PACKET_FINISHED = "packet.finished"
    PACKET_EXPIRED = "packet.expired"
    GROUP_MEMBER_ADDED = "group.member_added"


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=40, choices=EventType.choices)
    # Members of this group see the event in their feed.
    group_id = models.UUIDField()
    # What the event is about (a packet's id), for the services that look events up.
    subject = models.CharField(max_length=64, blank=True)
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    # At most one event per key: the one end (finished or expired) of a packet.
    unique_key = models.CharField(max_length=100, null=True, blank=True)
    # Feed order, set once by the relay after the event's transaction committed.
    position = models.BigIntegerField(null=True, blank=True)
    # The id the recording code logged under: the request's, or a task's cause (its own id when
    # nothing caused it: the sweep). The relay and every delivery attempt log under it, and the
    # receiver gets it as X-Request-ID. Null when recorded outside both (a command, the shell).
    request_id = models.CharField(max_length=128, null=True, blank=True)

    class Meta:
        # Every index but the relay's work list is partial on what an insert leaves NULL: the
        # claim path's INSERT touches two indexes (the key and event_unpositioned), and the
        # feed's are written by the relay, off that path.
        indexes = [
            # The feed: one range scan per group of the caller.
            models.Index(fields=["group_id", "position"], condition=Q(position__isnull=False),
                         name="event_group_position"),
            # The relay's work list: committed events without a position yet.
            models.Index(fields=["id"], condition=Q(position__isnull=True), name="event_unpositioned"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["unique_key"], condition=Q(unique_key__isnull=False),
                                    name="event_unique_key"),
            models.UniqueConstraint(fields=["position"], condition=Q(position__isnull=False), name="event_position_unique"),
            models.CheckConstraint(condition=Q(position__isnull=True) | Q(position__gte=1), name="event_position_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.type}"

    @property
    def public_id(self) -> str:
        return f"{EVENT_ID_PREFIX}{self.id}"

    @staticmethod
    def pk_from_public_id(public_id: str) -> int | None:
        digits = public_id.removeprefix(EVENT_ID_PREFIX)
        if public_id.startswith(EVENT_ID_PREFIX) and digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(digits)
        return None


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # whsec_<base64>. During a rotation the new secret goes here and the old one in
    # previous_secret until every receiver has the new one: both signatures are sent.
    secret = models.CharField(max_length=200)
    previous_secret = models.CharField(max_length=200, blank=True)
    # Empty: every type.
    event_types = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    # First failed attempt since the last success; an endpoint failing for days is disabled.
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url

    def takes(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(models.Model):
    """One event to one endpoint: retried on its schedule until delivered or failed."""

    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A delivery task holds the lease while it sends; a lease that ran out (the
    # worker died) lets the next dispatch send it again.
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="delivery_once_per_endpoint"),
            models.CheckConstraint(
                condition=Q(state=DeliveryState.DELIVERED, delivered_at__isnull=False)
                | (~Q(state=DeliveryState.DELIVERED) & Q(delivered_at__isnull=True)),
                name="delivery_delivered_at_iff_delivered",
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(state="pending"), name="delivery_due"),
            models.Index(fields=["endpoint", "state"], name="delivery_endpoint_state"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint}"


class DeliveryAttempt(models.Model):
    """The log: one row per HTTP attempt, written once."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-attempted_at"]

    def __str__(self) -> str:
        return f"attempt at {self.attempted_at:%Y-%m-%d %H:%M:%S}: {self.status_code or self.error}"
