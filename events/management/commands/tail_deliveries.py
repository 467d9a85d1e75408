"""Print webhook delivery attempts as they are logged (Ctrl-C to stop)."""

import time

from django.core.management.base import BaseCommand

from events.models import DeliveryAttempt


class Command(BaseCommand):
    help = "Follow the webhook delivery log: one line per attempt, newest last."

    def add_arguments(self, parser):
        parser.add_argument("--last", type=int, default=10, help="attempts already logged to show first")
        parser.add_argument("--interval", type=float, default=1.0)

    def handle(self, *args, last, interval, **options):
        attempts = DeliveryAttempt.objects.select_related("delivery__event", "delivery__endpoint").order_by("id")
        newest = list(attempts.order_by("-id")[:last])[::-1]
        seen = newest[-1].id if newest else 0
        for attempt in newest:
            self._print(attempt)
        try:
            while True:
                time.sleep(interval)
                for attempt in attempts.filter(id__gt=seen):
                    self._print(attempt)
                    seen = attempt.id
        except KeyboardInterrupt:
            pass

    def _print(self, attempt):
        event, endpoint = attempt.delivery.event, attempt.delivery.endpoint
        outcome = attempt.status_code or "-"
        style = self.style.SUCCESS if attempt.succeeded else self.style.ERROR
        self.stdout.write(style(
            f"{attempt.attempted_at:%H:%M:%S} {event.public_id} {event.type:<20} -> {endpoint.url} "
            f"{outcome} {attempt.latency_ms} ms {attempt.error}".rstrip()
        ), ending="\n")
        self.stdout.flush()
