"""Who the client is (config/proxies.py): X-Forwarded-For believed only from TRUSTED_PROXIES, read from the right."""

import ipaddress

import pytest
from django.test import RequestFactory, override_settings

from config.proxies import client_address, peer_is_trusted_proxy
from tests.test_schema_and_deploy import manage

BALANCERS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    "peer, forwarded_for, client",
    [
        ("10.0.0.2", "203.0.113.7", "203.0.113.7"),
        # What the client wrote itself sits left of what the balancer appended: ignored
        ("10.0.0.2", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        ("10.0.0.2", "not-an-address, 203.0.113.7", "203.0.113.7"),
        # Two balancers in a row: the first hop that is not one of them
        ("10.0.0.2", "203.0.113.7, 10.1.2.3", "203.0.113.7"),
        ("10.0.0.2", "2001:db8::1, fd00::5", "2001:db8::1"),
        # Nothing usable from the balancer: the last trusted hop is the best that can be said
        ("10.0.0.2", "", "10.0.0.2"),
        ("10.0.0.2", "203.0.113.7, garbage", "10.0.0.2"),
        ("10.0.0.2", "10.9.9.9", "10.9.9.9"),
        # From anyone else the header counts for nothing
        ("198.51.100.9", "203.0.113.7", "198.51.100.9"),
        ("198.51.100.9", "10.0.0.2", "198.51.100.9"),
    ],
)
def test_the_client_address_is_taken_from_x_forwarded_for_only_behind_a_trusted_proxy(peer, forwarded_for, client):
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded_for)

    with override_settings(TRUSTED_PROXIES=BALANCERS):
        assert client_address(request) == client
        assert peer_is_trusted_proxy(request) is peer.startswith("10.")


def test_nobody_is_a_trusted_proxy_by_default():
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")

    assert not peer_is_trusted_proxy(request)
    assert client_address(request) == "127.0.0.1"


@pytest.mark.parametrize(
    "env, trusted",
    [
        ({"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"}, "10.0.0.0/8 192.0.2.1/32"),
        ({"REQUEST_ID_TRUSTED_PROXIES": "10.0.0.0/8"}, "10.0.0.0/8"),  # the variable's earlier name
        ({"TRUSTED_PROXIES": "192.0.2.1", "REQUEST_ID_TRUSTED_PROXIES": "10.0.0.0/8"}, "192.0.2.1/32"),
    ],
)
def test_trusted_proxies_come_from_the_environment_under_either_name(env, trusted, tmp_path):
    result = manage(
        "shell", "--no-imports", "-c",
        "from django.conf import settings; print(*settings.TRUSTED_PROXIES)",
        env={"DJANGO_SETTINGS_MODULE": "config.settings.base", **env}, tmp_path=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == trusted
