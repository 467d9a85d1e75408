"""Idempotency-Key on topups: a retried POST replays its first answer and moves money once."""

import threading
import time

import pytest
from django.db import connection, connections
from django.test import override_settings
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.concurrency import run_concurrently
from tests.factories import UserFactory, login
from wallets import services
from wallets.models import Account, IdempotencyRecord, LedgerTransaction, TransactionKind


def balance_of(user) -> int:
    return Account.objects.get(user=user).balance


def topup(client: APIClient, amount: int, key: str | None = None):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/api/v1/wallet/topups", {"amount": amount}, format="json", headers=headers)


def client_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def in_background(fn) -> tuple[threading.Thread, dict]:
    """Run fn on a thread with its own connection; its result lands in the returned dict."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = fn()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_until_a_session_waits_on_a_lock(timeout: float = 10.0) -> None:
    """Until another session waits on a lock this connection holds (pg_locks is read live)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the competing request never waited on the first one's key")


@pytest.mark.django_db
def test_same_key_and_body_replays_the_first_response_and_moves_money_once(user, user_api):
    first = topup(user_api, 500, key="order-1")

    second = topup(user_api, 500, key="order-1")

    assert first.status_code == 201, first.content
    assert second.status_code == 201, second.content
    assert second.json() == first.json()
    assert first.json()["balance"] == 500
    assert balance_of(user) == 500
    assert LedgerTransaction.objects.filter(kind=TransactionKind.TOPUP).count() == 1
    assert IdempotencyRecord.objects.filter(user=user, key="order-1").count() == 1


@pytest.mark.django_db
def test_a_replay_answers_the_stored_balance_not_the_current_one(user, user_api):
    first = topup(user_api, 500, key="order-1")
    topup(user_api, 70)

    replay = topup(user_api, 500, key="order-1")

    assert replay.json() == first.json() == {"id": first.json()["id"], "amount": 500, "balance": 500}
    assert balance_of(user) == 570


@pytest.mark.django_db
def test_same_key_with_a_different_body_is_a_conflict(user, user_api):
    first = topup(user_api, 500, key="order-1")

    response = topup(user_api, 900, key="order-1")

    assert first.status_code == 201
    assert_error(response, 409, "idempotency_conflict")
    assert balance_of(user) == 500
    assert LedgerTransaction.objects.count() == 1


@pytest.mark.django_db
def test_different_keys_move_money_each_time(user, user_api):
    first = topup(user_api, 500, key="order-1")

    second = topup(user_api, 500, key="order-2")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert balance_of(user) == 1000


@pytest.mark.django_db
def test_requests_without_a_key_are_not_deduplicated(user, user_api):
    first = topup(user_api, 500)

    second = topup(user_api, 500)

    assert first.json()["id"] != second.json()["id"]
    assert balance_of(user) == 1000
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_request_refused_by_validation_does_not_burn_the_key(user, user_api):
    refused = topup(user_api, 0, key="order-1")

    retried = topup(user_api, 500, key="order-1")

    assert_error(refused, 400, "validation_error")
    assert retried.status_code == 201, retried.content
    assert balance_of(user) == 500


@pytest.mark.django_db
def test_a_request_refused_by_the_service_does_not_burn_the_key(user, user_api):
    with override_settings(SANDBOX_TOPUPS=False):
        refused = topup(user_api, 500, key="order-1")

    retried = topup(user_api, 500, key="order-1")

    assert_error(refused, 403, "permission_denied")
    assert retried.status_code == 201, retried.content
    assert retried.json()["balance"] == 500
    assert balance_of(user) == 500
    assert IdempotencyRecord.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_keys_are_per_user(user, user_api):
    other = UserFactory()
    other_api = login(other)

    mine = topup(user_api, 500, key="order-1")
    theirs = topup(other_api, 500, key="order-1")

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert balance_of(user) == 500
    assert balance_of(other) == 500
    assert IdempotencyRecord.objects.filter(key="order-1").count() == 2


@pytest.mark.django_db
def test_another_users_key_with_a_different_body_is_not_a_conflict(user, user_api):
    other_api = login(UserFactory())
    topup(other_api, 900, key="order-1")

    response = topup(user_api, 500, key="order-1")

    assert response.status_code == 201, response.content
    assert balance_of(user) == 500


@pytest.mark.django_db
@pytest.mark.parametrize("key", [pytest.param("", id="empty"), pytest.param("k" * 256, id="too-long")])
def test_an_unusable_key_is_refused(user, user_api, key):
    response = topup(user_api, 500, key=key)

    error = assert_error(response, 400, "validation_error")
    assert "Idempotency-Key" in error["fields"]
    assert balance_of(user) == 0
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_retries_with_one_key_move_money_once_and_answer_alike():
    user = UserFactory(pin=None)
    token = AuthToken.objects.create(user)[1]
    clients = []
    for _ in range(10):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        clients.append(client)

    responses, errors = run_concurrently(lambda client: topup(client, 777, key="retry-storm"), [(c,) for c in clients])

    assert errors == [None] * 10
    assert {r.status_code for r in responses} == {201}
    bodies = [r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies), bodies
    assert bodies[0]["amount"] == 777 and bodies[0]["balance"] == 777
    assert balance_of(user) == 777
    assert LedgerTransaction.objects.filter(kind=TransactionKind.TOPUP).count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert str(LedgerTransaction.objects.get().id) == bodies[0]["id"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_retry_arriving_while_the_first_request_is_in_flight_waits_and_replays(monkeypatch):
    user = UserFactory(pin=None)
    token = AuthToken.objects.create(user)[1]
    real_topup, calls, retry = services.wallet_topup, [], {}

    def topup_with_a_retry_in_flight(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            # The key row is inserted and uncommitted: the retry must queue behind it.
            retry["thread"], retry["outcome"] = in_background(lambda: topup(client_for(token), 500, key="k"))
            wait_until_a_session_waits_on_a_lock()
        return real_topup(**kwargs)

    monkeypatch.setattr(services, "wallet_topup", topup_with_a_retry_in_flight)

    first = topup(client_for(token), 500, key="k")
    retry["thread"].join(timeout=30)

    second = retry["outcome"]["result"]
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert len(calls) == 1
    assert balance_of(user) == 500
    assert LedgerTransaction.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_retry_waiting_on_a_request_that_fails_goes_ahead_and_moves_money_once(monkeypatch):
    from config.errors import PermissionDenied

    user = UserFactory(pin=None)
    token = AuthToken.objects.create(user)[1]
    real_topup, calls, retry = services.wallet_topup, [], {}

    def first_fails_with_a_retry_in_flight(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            retry["thread"], retry["outcome"] = in_background(lambda: topup(client_for(token), 500, key="k"))
            wait_until_a_session_waits_on_a_lock()
            raise PermissionDenied("The provider declined.")
        return real_topup(**kwargs)

    monkeypatch.setattr(services, "wallet_topup", first_fails_with_a_retry_in_flight)

    first = topup(client_for(token), 500, key="k")
    retry["thread"].join(timeout=30)

    second = retry["outcome"]["result"]
    assert_error(first, 403, "permission_denied")
    assert second.status_code == 201, second.content
    assert len(calls) == 2
    assert balance_of(user) == 500
    assert IdempotencyRecord.objects.get().response_body == second.json()


@pytest.mark.django_db
def test_keys_older_than_their_time_to_live_are_purged_and_newer_ones_kept(settings):
    from datetime import timedelta

    from django.utils import timezone

    from wallets.idempotency import idempotency_records_purge
    from wallets.models import IdempotencyRecord

    # Given one key from two days ago and one from an hour ago
    settings.IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
    user = UserFactory()
    old = IdempotencyRecord.objects.create(user=user, key="old", request_fingerprint="x")
    new = IdempotencyRecord.objects.create(user=user, key="new", request_fingerprint="y")
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    IdempotencyRecord.objects.filter(pk=new.pk).update(created_at=timezone.now() - timedelta(hours=1))

    # When the hourly purge runs
    purged = idempotency_records_purge()

    # Then only the old key is gone
    assert purged == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
