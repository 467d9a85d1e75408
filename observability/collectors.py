"""Gauges computed from the database at scrape time: one query each, exact across hosts."""

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from redpackets.selectors import sweep_lag_seconds


def outbox_pending() -> int:
    """Events recorded but not yet delivered everywhere they go. The events app is not installed yet: 0."""
    return 0


class DatabaseGauges(Collector):
    def collect(self):
        yield GaugeMetricFamily(
            "redpacket_oldest_unsettled_expired_seconds",
            "Seconds since the oldest packet still waiting for its expiry refund expired (0: none waits): "
            "how far the sweep lags.",
            value=sweep_lag_seconds(),
        )
        yield GaugeMetricFamily("event_outbox_pending", "Events not yet delivered to every endpoint.",
                                value=outbox_pending())
