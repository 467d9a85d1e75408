"""Selectors that read: the pull feed and the lookups the producing services need."""

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Max, Min
from django.utils.module_loading import import_string
from rest_framework.fields import DateTimeField

from config.errors import NotFound
from events.models import Event

FEED_PAGE = 100
_timestamp = DateTimeField()


def event_body(event: Event) -> dict:
    """The event as the feed and the webhooks carry it."""
    return {"id": event.public_id, "type": event.type, "timestamp": _timestamp.to_representation(event.created_at),
            "data": event.data}


def groups_of(user: AbstractBaseUser) -> list[uuid.UUID]:
    """The groups whose events `user` may see (EVENTS_GROUPS_OF_USER: this app knows no groups)."""
    return list(import_string(settings.EVENTS_GROUPS_OF_USER)(user=user))


_FEED_SQL = f"""
    SELECT e.* FROM unnest(%s::uuid[]) AS g(id)
    CROSS JOIN LATERAL (
        SELECT * FROM {Event._meta.db_table} ev
        WHERE ev.group_id = g.id AND ev.position > %s
        ORDER BY ev.position LIMIT %s
    ) e
    ORDER BY e.position LIMIT %s
"""


def events_feed(*, viewer: AbstractBaseUser, after: str | None, limit: int = FEED_PAGE) -> list[Event]:
    """Events of the viewer's groups strictly after the event `after`, oldest first.

    The order is the feed position, assigned after commit by the relay. On
    PostgreSQL each of the viewer's groups is one range scan of the (group_id,
    position) index that stops after `limit` rows, whatever the table's size.
    """
    groups = groups_of(viewer)
    start = 0
    if after is not None:
        pk = Event.pk_from_public_id(after)
        start = (
            Event.objects.filter(pk=pk, group_id__in=groups, position__isnull=False).values_list("position", flat=True).first()
            if pk is not None and groups else None
        )
        if start is None:
            # Unknown, not yet in the feed, or of a group the viewer is not in: all look the same.
            raise NotFound(f"No such event: {after}.")
    if not groups:
        return []
    if connection.vendor == "postgresql":
        return list(Event.objects.raw(_FEED_SQL, [groups, start, limit, limit]))
    return list(Event.objects.filter(group_id__in=groups, position__gt=start).order_by("position")[:limit])


def event_position_since(*, since: datetime) -> int:
    """A feed position every event recorded since about `since` comes after: where a reader of the
    feed without a cursor of its own starts.

    A walk back from the newest id to the first older event (no index on the time: one index less
    on the claim path), then the lowest position after it; created_at is set just before the insert,
    so the boundary is approximate by a moment: the callers look back a wide window."""
    boundary = Event.objects.filter(created_at__lt=since).order_by("-id").values_list("id", flat=True).first() or 0
    first = Event.objects.filter(id__gt=boundary).aggregate(first=Min("position"))["first"]
    if first is not None:
        return first - 1
    return Event.objects.aggregate(top=Max("position"))["top"] or 0


def event_subjects_positioned_after(*, type: str, position: int, limit: int) -> tuple[set[str], int]:
    """The subjects of the events of `type` among the next `limit` events of the feed after `position`,
    and the last position read (`position` when there is none): a cursor over what committed since."""
    rows = list(Event.objects.filter(position__gt=position).order_by("position")
                .values_list("position", "type", "subject")[:limit])
    return {subject for _, event_type, subject in rows if event_type == type}, (rows[-1][0] if rows else position)


def event_keys_recorded(*, keys: list[str]) -> set[str]:
    return set(Event.objects.filter(unique_key__in=keys).values_list("unique_key", flat=True))
