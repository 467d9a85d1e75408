"""Rate limits that fail open: an unreachable cache never takes the API down.

The throttle counters are the cache's only use. When Redis is hung or gone,
DRF's ScopedRateThrottle raises the cache's connection error and every
throttled endpoint (sends, claims, topups, auth) would answer 500. Rate limits
protect the service; they are not worth refusing payments for. So this throttle
logs the outage (at most every LOG_EVERY seconds per process) and lets the
request through; the short socket timeouts of the cache client (settings,
CACHES) keep such a request from waiting long on a hung Redis.

Anonymous requests (register, token) are counted per client address as
config/proxies.py finds it, not by DRF's own reading of X-Forwarded-For, which
believes the header from anyone.
"""

import logging
import time

from redis.exceptions import RedisError
from rest_framework.throttling import ScopedRateThrottle

from config.proxies import client_address

logger = logging.getLogger(__name__)

LOG_EVERY = 10.0
_last_logged = 0.0


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            _log_outage(exc)
            return True

    def get_ident(self, request) -> str:
        return client_address(request)


def _log_outage(exc: Exception) -> None:
    global _last_logged
    now = time.monotonic()
    if now - _last_logged >= LOG_EVERY:
        _last_logged = now
        logger.warning("Throttle cache unreachable, rate limits are off until it is back: %s: %s", type(exc).__name__, exc)
