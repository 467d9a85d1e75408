"""Gauges computed from the database at scrape time: one query each, exact across hosts."""

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from events.models import Delivery, DeliveryState, Event
from redpackets.selectors import sweep_lag_seconds


def outbox_pending() -> int:
    """Outbox work not done: events not yet given a feed position, plus webhook deliveries still pending."""
    return Event.objects.filter(position__isnull=True).count() + Delivery.objects.filter(
        state=DeliveryState.PENDING).count()


class DatabaseGauges(Collector):
    def collect(self):
        yield GaugeMetricFamily(
            "redpacket_oldest_unsettled_expired_seconds",
            "Seconds since the oldest packet still waiting for its expiry refund expired (0: none waits): "
            "how far the sweep lags.",
            value=sweep_lag_seconds(),
        )
        yield GaugeMetricFamily("event_outbox_pending", "Events not yet relayed to the feed, plus webhook deliveries "
                                "still pending (retries included).",
                                value=outbox_pending())
