"""The admin's login: TOTP two-factor under production settings, and throttled failures.

Through Django's test client; `ADMIN_REQUIRE_OTP` is what production settings
turn on (the last test checks that they do, in a fresh process).
"""

import io
import ipaddress

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.factories import PASSWORD, UserFactory
from tests.test_schema_and_deploy import manage, production_env

pytestmark = pytest.mark.django_db
User = get_user_model()
LOGIN = "/admin/login/?next=/admin/"
require_otp = override_settings(ADMIN_REQUIRE_OTP=True)


@pytest.fixture
def root():
    return User.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def device(root) -> TOTPDevice:
    return TOTPDevice.objects.create(user=root, name="phone", confirmed=True)


def code_of(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift):06d}"


def log_in(client: Client, **fields):
    return client.post(LOGIN, {"username": "root", "password": PASSWORD, **fields})


def in_admin(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


# --- two-factor ------------------------------------------------------------------------


@require_otp
def test_with_two_factor_required_a_password_alone_does_not_open_the_admin(root, device):
    client = Client()

    page = client.get(LOGIN)
    refused = log_in(client)
    wrong = log_in(client, otp_token="000000" if code_of(device) != "000000" else "111111")

    assert b'name="otp_token"' in page.content
    assert refused.status_code == 200 and refused.context["form"].errors
    assert wrong.status_code == 200 and wrong.context["form"].errors
    assert not in_admin(client)


@require_otp
def test_with_two_factor_required_password_and_the_current_code_open_the_admin(root, device):
    client = Client()

    response = log_in(client, otp_token=code_of(device))

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert in_admin(client)


@require_otp
def test_with_two_factor_required_a_session_without_a_verified_device_is_not_staff(root, device):
    client = Client()
    client.force_login(root)  # a password login from elsewhere (the API's session, an old cookie)

    response = client.get("/admin/")

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@require_otp
def test_with_two_factor_required_staff_without_a_device_cannot_log_in(root):
    client = Client()

    response = log_in(client, otp_token="123456")

    assert response.status_code == 200 and response.context["form"].errors
    assert not in_admin(client)


def test_under_base_settings_a_password_login_opens_the_admin(root):
    assert settings.ADMIN_REQUIRE_OTP is False
    client = Client()

    response = log_in(client)

    assert response.status_code == 302 and in_admin(client)


def test_add_totp_device_gives_a_staff_user_a_device_that_logs_in(root):
    out = io.StringIO()

    call_command("add_totp_device", "root", "--name", "phone", stdout=out)

    device = TOTPDevice.objects.get(user=root)
    assert device.confirmed and device.name == "phone"
    assert device.config_url in out.getvalue()
    with require_otp:
        client = Client()
        assert log_in(client, otp_token=code_of(device)).status_code == 302
        assert in_admin(client)


def test_production_settings_require_two_factor_on_an_otp_admin_site(tmp_path):
    result = manage(
        "shell", "--no-imports", "-c",
        "from django.conf import settings; from django.contrib import admin; "
        "from django_otp.admin import OTPAdminSite; "
        "print(settings.ADMIN_REQUIRE_OTP, isinstance(admin.site, OTPAdminSite), admin.site.name)",
        env=production_env(), tmp_path=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "admin"]


# --- throttling -------------------------------------------------------------------------


def test_admin_logins_lock_after_repeated_failures_even_with_the_right_password_then(root):
    client = Client()

    failures = [log_in(client, password="wrong-password") for _ in range(settings.AXES_FAILURE_LIMIT)]
    locked = log_in(client)

    assert [r.status_code for r in failures] == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    assert not in_admin(client)
    assert AccessAttempt.objects.get(username="root").failures_since_start >= settings.AXES_FAILURE_LIMIT


def test_a_successful_admin_login_clears_earlier_failures(root):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, password="wrong-password")

    assert log_in(client).status_code == 302
    assert not AccessAttempt.objects.filter(username="root").exists()


def test_the_apis_token_login_is_not_throttled_or_recorded_by_the_admins_lockout(api):
    alice = UserFactory(username="alice")
    wrong = [api.post("/api/v1/auth/token", {"username": "alice", "password": "nope-nope"}, format="json")
             for _ in range(settings.AXES_FAILURE_LIMIT + 2)]

    right = api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json")

    assert {r.status_code for r in wrong} == {401}
    assert wrong[-1].json()["error"]["code"] == "not_authenticated"
    assert right.status_code == 200 and right.json()["token"]
    assert not AccessAttempt.objects.exists()
    # Nor does an admin lockout of the same username stop the user's API login
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    for _ in range(settings.AXES_FAILURE_LIMIT):
        Client().post(LOGIN, {"username": "alice", "password": "wrong-password"})
    assert AccessAttempt.objects.filter(username="alice").exists()
    assert api.post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json").status_code == 200


# Behind the load balancer (10.0.0.2, trusted), the client is the address it appends to X-Forwarded-For.
behind_balancer = override_settings(TRUSTED_PROXIES=[ipaddress.ip_network("10.0.0.0/8")])


def fail_logins_as_strangers(client: Client, times: int, **headers) -> list[int]:
    """Failed logins under a new username each time: only the address can connect them."""
    return [client.post(LOGIN, {"username": f"stranger{n}", "password": "wrong-password"}, **headers).status_code
            for n in range(times)]


@behind_balancer
def test_behind_a_trusted_proxy_each_forwarded_client_is_locked_out_on_its_own(root):
    # Given an attacker and an operator behind the same load balancer
    attacker = Client(REMOTE_ADDR="10.0.0.2")
    operator = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.4")

    # When the attacker fails the limit, writing a new X-Forwarded-For of its own before each try
    failures = [fail_logins_as_strangers(attacker, 1, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.7")[0]
                for n in range(settings.AXES_FAILURE_LIMIT)]

    # Then the attacker's address is locked out, even with the right password, and the operator's is not
    assert failures[-1] == 429
    assert log_in(Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.99, 203.0.113.7")).status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}
    assert log_in(operator).status_code == 302 and in_admin(operator)


def test_from_an_untrusted_peer_x_forwarded_for_is_ignored(root):
    # Given no trusted proxy (the default), a client that sends a new X-Forwarded-For each try
    client = Client(REMOTE_ADDR="198.51.100.9")

    failures = [fail_logins_as_strangers(client, 1, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")[0]
                for n in range(settings.AXES_FAILURE_LIMIT)]

    # Then its own address is locked out all the same, and another address is not
    assert failures[-1] == 429
    assert log_in(Client(REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR="203.0.113.200")).status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.9"}
    assert log_in(Client(REMOTE_ADDR="198.51.100.10")).status_code == 302
