"""The admin dashboard: a few figures an operator checks first, each linking to the list behind it.

Each app contributes its figures with a function listed in
settings.ADMIN_DASHBOARD_FIGURES, called on every view of the page; each query
is backed by an index (partial ones on the unsettled packets, free shares,
unpositioned events and pending deliveries).
"""

from dataclasses import dataclass

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Figure:
    section: str
    label: str
    value: str
    url: str | None = None
    detail: str = ""
    # Needs an operator's attention (shown highlighted).
    alert: bool = False


def dashboard_sections() -> dict[str, list[Figure]]:
    sections: dict[str, list[Figure]] = {}
    for provider in settings.ADMIN_DASHBOARD_FIGURES:
        for figure in import_string(provider)():
            sections.setdefault(figure.section, []).append(figure)
    return sections


def events_backlog_figures() -> list[Figure]:
    """The outbox (events the relay has not given a feed position yet) and the webhook
    deliveries still to be made, each with how long its oldest has waited."""
    from events.models import Delivery, DeliveryState, Event

    now = timezone.now()
    outbox = Event.objects.filter(position__isnull=True)  # the event_unpositioned index
    outbox_oldest = outbox.order_by("id").values_list("created_at", flat=True).first()
    pending = Delivery.objects.filter(state=DeliveryState.PENDING)  # the delivery_due index
    due_oldest = pending.filter(next_attempt_at__lte=now).order_by("next_attempt_at").values_list(
        "next_attempt_at", flat=True).first()
    failed = Delivery.objects.filter(state=DeliveryState.FAILED).count()
    events, deliveries = reverse("admin:events_event_changelist"), reverse("admin:events_delivery_changelist")
    relay_window = max(settings.EVENTS_RELAY_SECONDS * 10, 10)
    outbox_wait = (now - outbox_oldest).total_seconds() if outbox_oldest else 0.0
    due_wait = (now - due_oldest).total_seconds() if due_oldest else 0.0
    return [
        Figure("Events", "Outbox backlog", str(outbox.count()), f"{events}?position__isnull=True",
               f"events not relayed yet; the oldest waited {outbox_wait:.0f} s" if outbox_oldest
               else "every event is in the feed", alert=outbox_wait > relay_window),
        Figure("Events", "Webhook backlog", str(pending.count()), f"{deliveries}?state__exact={DeliveryState.PENDING}",
               (f"deliveries to make or retry; the oldest due one waited {due_wait:.0f} s" if due_oldest
                else "no delivery is overdue") + (f"; {failed} failed for good" if failed else ""),
               alert=due_wait > relay_window or failed > 0),
    ]
