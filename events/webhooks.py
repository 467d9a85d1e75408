"""The wire side of webhooks: which URLs may be called, signing, and one HTTP attempt.

Standard Webhooks: the body is the event JSON; `webhook-id` is the event id,
`webhook-timestamp` the attempt's Unix seconds, `webhook-signature` `v1,<base64
HMAC-SHA256>` of "{id}.{timestamp}.{body}" per secret, space-separated during a
rotation. Signing uses the `standardwebhooks` package. `X-Request-ID` carries the id of
the request (or task) that recorded the event, unsigned, for tracing only.

SSRF: without WEBHOOK_ALLOW_PRIVATE_URLS (production), only https URLs whose host
resolves to public addresses only; the check runs at registration and again at
every attempt, and the attempt connects to the address that was checked (no
second lookup an attacker's DNS could answer differently), never following a
redirect.
"""

import base64
import binascii
import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from config.logging import REQUEST_ID_HEADER

SECRET_PREFIX = "whsec_"
EXCERPT_BYTES = 500


class UnsafeWebhookUrl(ValueError):
    """The URL may not be called under the settings in force."""


def secret_is_valid(secret: str) -> bool:
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        return len(base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)) > 0
    except (binascii.Error, ValueError):
        return False


def url_addresses(url: str, *, resolve: bool = True) -> list[str]:
    """The addresses to connect to for `url`; raises UnsafeWebhookUrl when it may not be called."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeWebhookUrl(f"The URL must use {' or '.join(schemes)}.")
    if not parts.hostname:
        raise UnsafeWebhookUrl("The URL has no host.")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("The URL may not carry credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeWebhookUrl("The URL's port is not a number from 1 to 65535.") from exc
    if not resolve and allow_private:
        return []
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookUrl(f"The host {parts.hostname} does not resolve.") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if not ip.is_global:
                raise UnsafeWebhookUrl(f"The host {parts.hostname} resolves to a non-public address ({ip}).")
    return addresses


def signature_header(*, secrets: list[str], msg_id: str, timestamp: int, body: str) -> str:
    at = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body) for secret in secrets if secret)


@dataclass(frozen=True)
class AttemptResult:
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_excerpt: str
    error: str
    retry_after: int | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.error


def _retry_after(response: httpx.Response) -> int | None:
    """Retry-After on 429/503, in seconds (delta-seconds or an HTTP date)."""
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return int(value)
    try:
        from email.utils import parsedate_to_datetime

        return max(0, int((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()))
    except (TypeError, ValueError):
        return None


def post_event(*, url: str, msg_id: str, body: str, secrets: list[str], request_id: str | None = None) -> AttemptResult:
    """One attempt: POST the signed body to the checked address; never raises for the receiver's faults.

    `request_id` (the event's cause) goes in X-Request-ID, outside the signed content: the
    contract fixes the body's shape."""
    attempted_at = datetime.now(UTC)
    started = time.monotonic()
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS

    def result(status_code=None, excerpt="", error="", retry_after=None) -> AttemptResult:
        latency = int((time.monotonic() - started) * 1000)
        if status_code is not None and not error and latency > timeout * 1000:
            error = f"answered after {latency} ms, past WEBHOOK_TIMEOUT_SECONDS"
        return AttemptResult(attempted_at, status_code, latency, excerpt, error[:500], retry_after)

    try:
        address = url_addresses(url)[0]
    except UnsafeWebhookUrl as exc:
        return result(error=f"refused: {exc}")
    parts = urlsplit(url)
    host_in_url = f"[{address}]" if ":" in address else address
    netloc = f"{host_in_url}:{parts.port}" if parts.port else host_in_url
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    timestamp = int(attempted_at.timestamp())
    headers = {
        "host": parts.netloc.rpartition("@")[2],
        "content-type": "application/json",
        "user-agent": "redpackets-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets=secrets, msg_id=msg_id, timestamp=timestamp, body=body),
    }
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False) as client:
            with client.stream("POST", pinned, content=body.encode(), headers=headers, extensions=extensions) as response:
                excerpt = b""
                for chunk in response.iter_raw():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_BYTES or time.monotonic() - started > timeout:
                        break
                return result(
                    status_code=response.status_code,
                    excerpt=excerpt[:EXCERPT_BYTES].decode("utf-8", errors="replace"),
                    retry_after=_retry_after(response),
                )
    except httpx.TimeoutException:
        return result(error=f"timed out after {timeout:g} s")
    except httpx.HTTPError as exc:
        return result(error=f"{type(exc).__name__}: {exc}" or type(exc).__name__)
