"""Register a webhook endpoint: `add_webhook_endpoint URL --secret whsec_... [--events TYPE,TYPE]`; prints its id."""

from django.core.management.base import BaseCommand, CommandError

from config.errors import ValidationFailed
from events.services import webhook_endpoint_create


class Command(BaseCommand):
    help = "Register a webhook endpoint for the events (all types by default) and print its id."

    def add_arguments(self, parser):
        parser.add_argument("url")
        parser.add_argument("--secret", required=True, help="whsec_ followed by base64")
        parser.add_argument("--events", default="", help="comma-separated event types (default: all)")
        parser.add_argument("--description", default="")

    def handle(self, *args, url, secret, events, description, **options):
        types = [t.strip() for t in events.split(",") if t.strip()]
        try:
            endpoint = webhook_endpoint_create(url=url, secret=secret, event_types=types, description=description)
        except ValidationFailed as exc:
            raise CommandError("; ".join(f"{f}: {' '.join(m)}" for f, m in exc.fields.items()) or exc.message) from exc
        self.stdout.write(str(endpoint.id))
