"""A local webhook receiver for tests: a threaded HTTP server on a free port.

It verifies each request's Standard Webhooks signature with the `standardwebhooks`
package (an implementation we did not write) and answers as the test scripts it:
`plan(attempt_number, headers) -> (status, headers, delay_seconds)`. An answer
delayed by `timeout` or more does not count as delivered: the sender gave up.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.processes import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int
    delay: float
    at: float = field(default_factory=time.monotonic)

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, secret: str, plan=None, timeout: float = float("inf")):
        self.secret, self.timeout = secret, timeout
        self.plan = plan or (lambda attempt, headers: (200, {}, 0))
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver.lock:
                    attempt = 1 + sum(1 for r in receiver.received if r.headers.get("webhook-id") == headers.get("webhook-id"))
                status, extra, delay = receiver.plan(attempt, headers)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, verified, status, delay))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting: a timeout on its side

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def by_id(self) -> dict[str, list[Received]]:
        with self.lock:
            grouped: dict[str, list[Received]] = {}
            for r in self.received:
                grouped.setdefault(r.headers["webhook-id"], []).append(r)
            return grouped

    def delivered_ids(self) -> set[str]:
        return {i for i, rs in self.by_id().items() if any(200 <= r.status < 300 and r.delay < self.timeout for r in rs)}

    def wait_for(self, ids: set[str], timeout: float, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= self.delivered_ids():
                return
            assert alive(), "the worker exited"
            time.sleep(0.1)
        missing = ids - self.delivered_ids()
        raise AssertionError(f"{len(missing)} events not delivered within {timeout} s: {sorted(missing)[:5]}")
