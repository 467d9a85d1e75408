"""The throttle fails open: an unreachable or hung cache turns rate limits off, not the API.

Fast, in-process companions of drill 2 in test_fault_drills.py (which stops a
real Redis under a real server).
"""

import ipaddress
import logging
import socket
import time

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.throttling import ScopedRateThrottle

from config import throttling
from config.throttling import FailOpenScopedRateThrottle
from tests.assertions import assert_error
from tests.factories import PASSWORD, UserFactory, login
from wallets import apis as wallet_apis
from wallets.models import Account

pytestmark = [pytest.mark.django_db]


def redis_cache_at(port: int) -> dict:
    # The options of config/settings/base.py's Redis cache.
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": f"redis://127.0.0.1:{port}/0",
                        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}


@pytest.fixture
def throttled_topups(monkeypatch):
    """Topups throttled (whatever API_THROTTLE says) at 2 a minute."""
    monkeypatch.setattr(wallet_apis.TopupApi, "throttle_classes", [FailOpenScopedRateThrottle])
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "money", "2/min")
    monkeypatch.setattr(throttling, "_last_logged", 0.0)
    cache.clear()
    yield
    cache.clear()


def test_the_throttle_still_limits_while_the_cache_works(throttled_topups):
    user = UserFactory()
    client = login(user)

    answers = [client.post("/api/v1/wallet/topups", {"amount": 10}, format="json") for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [201, 201]
    assert_error(answers[2], 429, "throttled")
    assert Account.objects.get(user=user).balance == 20


def test_an_unreachable_cache_lets_requests_through_and_logs_it_once(throttled_topups, caplog):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket is closed
    user = UserFactory()
    client = login(user)

    with override_settings(CACHES=redis_cache_at(port)), caplog.at_level(logging.WARNING, logger="config.throttling"):
        answers = [client.post("/api/v1/wallet/topups", {"amount": 10}, format="json") for _ in range(4)]

    assert [a.status_code for a in answers] == [201] * 4  # over the limit of 2: the limits are off
    assert Account.objects.get(user=user).balance == 40
    warnings = [r for r in caplog.records if r.name == "config.throttling"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


def test_a_hung_cache_costs_a_request_about_its_socket_timeout(throttled_topups):
    # A server that accepts connections and never answers: a Redis that hangs.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        user = UserFactory()
        client = login(user)

        with override_settings(CACHES=redis_cache_at(hung.getsockname()[1])):
            started = time.monotonic()
            answer = client.post("/api/v1/wallet/topups", {"amount": 10}, format="json")
            took = time.monotonic() - started

    assert answer.status_code == 201, answer.content
    assert took < 3, f"a hung cache held the request for {took:.1f} s"
    assert Account.objects.get(user=user).balance == 10


@pytest.fixture
def throttled_token_logins(monkeypatch):
    """Token logins throttled (whatever API_THROTTLE says) at 2 a minute per client address."""
    monkeypatch.setattr(wallet_apis.TokenApi, "throttle_classes", [FailOpenScopedRateThrottle])
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", "2/min")
    cache.clear()
    yield
    cache.clear()


def token_logins(api, user, forwarded_for: list[str], peer: str) -> list[int]:
    return [api.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}, format="json",
                     REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=xff).status_code for xff in forwarded_for]


@override_settings(TRUSTED_PROXIES=[ipaddress.ip_network("10.0.0.0/8")])
def test_the_auth_limit_counts_each_client_behind_a_trusted_proxy_on_its_own(throttled_token_logins, api):
    user = UserFactory()

    first = token_logins(api, user, ["192.0.2.1, 203.0.113.7", "192.0.2.2, 203.0.113.7", "203.0.113.7"], "10.0.0.2")
    second = token_logins(api, user, ["198.51.100.4"], "10.0.0.2")

    assert first == [200, 200, 429] and second == [200]


def test_the_auth_limit_ignores_x_forwarded_for_from_an_untrusted_peer(throttled_token_logins, api):
    user = UserFactory()

    answers = token_logins(api, user, ["203.0.113.1", "203.0.113.2", "203.0.113.3"], "198.51.100.9")

    assert answers == [200, 200, 429]
