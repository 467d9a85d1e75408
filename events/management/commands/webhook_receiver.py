"""A local webhook receiver for trying the webhooks out: verifies each signature and prints the event."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.core.management.base import BaseCommand
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Command(BaseCommand):
    help = "Listen on 127.0.0.1:PORT, verify Standard Webhooks signatures with SECRET, print each event."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9000)
        parser.add_argument("--secret", required=True, help="the endpoint's whsec_... secret")

    def handle(self, *args, port, secret, **options):
        webhook, out, style = Webhook(secret), self.stdout, self.style

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    event = webhook.verify(body, dict(self.headers.items()))
                except WebhookVerificationError as exc:
                    out.write(style.ERROR(f"refused ({exc}): {body[:200]!r}"))
                    self.send_response(400)
                else:
                    out.write(style.SUCCESS(f"{event['id']} {event['type']}") + " " + json.dumps(event["data"])[:300])
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        out.write(f"Listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
        try:
            ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        except KeyboardInterrupt:
            pass
