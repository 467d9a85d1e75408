"""The operator's endpoints: liveness, readiness and Prometheus metrics (contract: "Operating it").

Plain Django views outside the API: no session, no DRF authentication, no
throttle, so a probe costs nothing and never counts against a client's limits.
"""

import hmac
import logging
import os

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from kombu import Connection
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from config.errors import envelope
from observability.collectors import DatabaseGauges

logger = logging.getLogger(__name__)


@require_GET
def healthz(request):
    """The process serves requests; nothing else is asked (a restart would not fix the database)."""
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request):
    """Can this process do its work now: does the database answer, does the broker?"""
    checks = {"database": _database_answers(), "broker": _broker_answers()}
    body = {name: "ok" if ok else "unavailable" for name, ok in checks.items()}
    return JsonResponse(body, status=200 if all(checks.values()) else 503)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError as exc:
        logger.warning("readiness: the database does not answer: %s", exc)
        return False


def _broker_answers() -> bool:
    url, timeout = settings.CELERY_BROKER_URL, settings.READINESS_TIMEOUT_SECONDS
    try:
        if url.startswith(("redis://", "rediss://")):
            # redis-py directly, with short timeouts: kombu would retry a hung Redis for seconds.
            client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
            try:
                return bool(client.ping())
            finally:
                client.close()
        if url == "filesystem://":
            folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
            return os.access(folder, os.W_OK)
        with Connection(url, connect_timeout=timeout) as broker:
            broker.ensure_connection(max_retries=1)
            return True
    except Exception as exc:  # any failure of any transport means "not ready", never a 500
        logger.warning("readiness: the broker does not answer: %s", exc)
        return False


@require_GET
def metrics(request):
    """Every process's counters summed (multiprocess mode) and the database gauges."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.METRICS_DIR))
    registry.register(DatabaseGauges())
    # The text format Prometheus asks for in Accept (0.0.4 when it names none), as prometheus_client's own server does.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)


def _metrics_refusal(request) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    if not token:
        if not settings.METRICS_TOKEN_REQUIRED:
            return None
        return JsonResponse(envelope("permission_denied", "Metrics are off until METRICS_TOKEN is set."), status=403)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
        return None
    response = JsonResponse(envelope("not_authenticated", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>."),
                            status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
