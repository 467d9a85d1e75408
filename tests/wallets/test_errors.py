"""Every error path answers with the one envelope and the contract's status and code."""

import uuid

import pytest
from django.test import override_settings
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from tests.assertions import assert_error
from tests.factories import PASSWORD, UserFactory, group_with_members, login
from wallets import apis as wallet_apis
from wallets.models import Account, LedgerTransaction

pytestmark = pytest.mark.django_db


def test_validation_errors_name_each_bad_field(user_api):
    response = user_api.post("/api/v1/groups", {"name": "", "members": "not-a-list"}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert set(error["fields"]) == {"name", "members"}
    assert all(isinstance(m, str) for messages in error["fields"].values() for m in messages)
    assert error["message"].startswith(("name: ", "members: "))


def test_malformed_json_is_a_validation_error(user, user_api):
    response = user_api.post("/api/v1/wallet/topups", data='{"amount": 10', content_type="application/json")

    error = assert_error(response, 400, "validation_error")
    assert error["fields"] == {}
    assert Account.objects.get(user=user).balance == 0


def test_a_json_body_that_is_not_an_object_is_a_validation_error(user, user_api):
    response = user_api.post("/api/v1/wallet/topups", data="[100]", content_type="application/json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["non_field_errors"]
    assert not LedgerTransaction.objects.exists()


def test_no_token_is_not_authenticated(api):
    response = api.get("/api/v1/wallet/transactions")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_token_is_not_authenticated(api):
    api.credentials(HTTP_AUTHORIZATION="Bearer " + "0" * 64)

    response = api.post("/api/v1/wallet/topups", {"amount": 100}, format="json")

    assert_error(response, 401, "not_authenticated")


def test_an_action_reserved_to_the_owner_is_permission_denied():
    owner, member, newcomer = UserFactory(), UserFactory(), UserFactory()
    group = group_with_members(owner, [member])

    response = login(member).post(f"/api/v1/groups/{group.id}/members", {"username": newcomer.username}, format="json")

    assert_error(response, 403, "permission_denied")
    assert not group.memberships.filter(user=newcomer).exists()


@override_settings(SANDBOX_TOPUPS=False)
def test_a_switched_off_feature_is_permission_denied(user_api):
    response = user_api.post("/api/v1/wallet/topups", {"amount": 100}, format="json")

    assert_error(response, 403, "permission_denied")


@pytest.mark.parametrize("path", ["/api/v1/no-such-endpoint", "/api/v2/wallet", "/api/", "/api/v1/groups/not-a-uuid"])
def test_an_unknown_api_url_is_not_found(user_api, path):
    response = user_api.get(path)

    assert_error(response, 404, "not_found")


def test_an_unknown_api_url_is_not_found_without_a_token_too(api):
    response = api.post("/api/v1/no-such-endpoint", {"x": 1}, format="json")

    assert_error(response, 404, "not_found")


@override_settings(DEBUG=True)
def test_an_unknown_api_url_answers_the_envelope_even_in_debug(user_api):
    response = user_api.get("/api/v1/no-such-endpoint")

    assert_error(response, 404, "not_found")


def test_an_unknown_url_outside_the_api_answers_the_envelope(api):
    response = api.get("/no-such-page")

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("kind", ["packets", "groups"])
def test_a_missing_object_is_not_found(user_api, kind):
    response = user_api.get(f"/api/v1/{kind}/{uuid.uuid4()}")

    assert_error(response, 404, "not_found")


def test_a_group_the_caller_is_not_in_is_not_found():
    owner, outsider = UserFactory(), UserFactory()
    group = group_with_members(owner, [])

    response = login(outsider).get(f"/api/v1/groups/{group.id}")

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/v1/wallet/topups"), ("delete", "/api/v1/wallet"), ("post", "/api/v1/wallet/transactions")],
)
def test_a_wrong_method_is_method_not_allowed(user_api, method, path):
    response = getattr(user_api, method)(path)

    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"]


def test_a_form_encoded_body_is_unsupported_media_type(user, user_api):
    response = user_api.post(
        "/api/v1/wallet/topups", data="amount=100", content_type="application/x-www-form-urlencoded"
    )

    assert_error(response, 415, "unsupported_media_type")
    assert Account.objects.get(user=user).balance == 0
    assert not LedgerTransaction.objects.exists()


def test_too_many_auth_requests_are_throttled(api, monkeypatch):
    user = UserFactory()
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", "2/min")
    # Throttling is on unless API_THROTTLE=off; this test needs it on either way.
    monkeypatch.setattr(wallet_apis.TokenApi, "throttle_classes", [ScopedRateThrottle])
    credentials = {"username": user.username, "password": PASSWORD}

    allowed = [api.post("/api/v1/auth/token", credentials, format="json") for _ in range(2)]
    refused = api.post("/api/v1/auth/token", credentials, format="json")

    assert [r.status_code for r in allowed] == [200, 200]
    assert_error(refused, 429, "throttled")
    assert int(refused["Retry-After"]) > 0
    assert user.auth_token_set.count() == 2


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("wallets.services.wallet_get_or_create", "/api/v1/wallet"),
        ("wallets.selectors.wallet_history", "/api/v1/wallet/transactions"),
    ],
)
def test_an_unexpected_exception_is_an_internal_error_that_reveals_nothing(user, monkeypatch, target, path):
    def explode(**kwargs):
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(target, explode)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)

    response = client.get(path)

    error = assert_error(response, 500, "internal_error")
    assert error["fields"] == {}
    assert b"secret detail" not in response.content


def test_an_unexpected_exception_outside_the_api_answers_the_envelope_too(monkeypatch):
    from django.contrib.auth import get_user_model
    from django.test import Client

    admin = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)

    def explode():
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr("wallets.admin.reconciliation_runs_recent", explode)
    client = Client(raise_request_exception=False)
    client.force_login(admin)

    response = client.get("/admin/wallets/wallet/reconcile/")

    assert_error(response, 500, "internal_error")
    assert b"secret detail" not in response.content


def test_a_forged_cursor_position_on_a_packet_list_is_not_found_but_real_cursors_work():
    from redpackets.services import packet_send

    owner = UserFactory(balance=1000)
    group = group_with_members(owner, [UserFactory()])
    sent = [packet_send(sender=owner, group_id=group.id, kind="fixed", share_count=1, share_amount=10) for _ in range(2)]
    client = login(owner)
    first = client.get(f"/api/v1/groups/{group.id}/packets?page_size=1").json()

    second = client.get(first["next"])
    forged = client.get(f"/api/v1/groups/{group.id}/packets?cursor=cD1ub3QtYS1kYXRl")  # p=not-a-date

    assert second.status_code == 200, second.content
    assert [p["id"] for p in first["results"] + second.json()["results"]] == [str(sent[1].id), str(sent[0].id)]
    assert_error(forged, 404, "not_found")
