"""Sandbox topups: what they accept, when they are allowed, and that concurrent ones all count."""

import io

import pytest
from django.core.management import call_command
from django.test import override_settings

from tests.assertions import assert_error
from tests.concurrency import run_concurrently
from tests.factories import UserFactory
from wallets.ledger import system_account
from wallets.models import Account, LedgerEntry, LedgerTransaction, SystemAccount, TransactionKind
from wallets.services import wallet_topup


def balance_of(user) -> int:
    return Account.objects.get(user=user).balance


@pytest.mark.django_db
def test_topup_credits_the_wallet_and_answers_id_amount_and_balance(user, user_api):
    wallet_topup(user=user, amount=250)

    response = user_api.post("/api/v1/wallet/topups", {"amount": 1000}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "amount", "balance"}
    assert body["amount"] == 1000
    assert body["balance"] == 1250
    assert balance_of(user) == 1250
    topup = LedgerTransaction.objects.get(id=body["id"])
    assert topup.kind == TransactionKind.TOPUP
    assert topup.created_by == user
    legs = dict(topup.entries.values_list("account__code", "amount"))
    assert legs == {"": 1000, SystemAccount.FUNDING: -1000}
    assert user_api.get("/api/v1/wallet").json() == {"balance": 1250, "currency": "CNY"}


@pytest.mark.django_db
@override_settings(SANDBOX_TOPUP_MAX=5000)
def test_topup_of_exactly_the_sandbox_maximum_is_accepted(user, user_api):
    response = user_api.post("/api/v1/wallet/topups", {"amount": 5000}, format="json")

    assert response.status_code == 201, response.content
    assert balance_of(user) == 5000


@pytest.mark.django_db
@override_settings(SANDBOX_TOPUP_MAX=5000)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"amount": 0}, id="zero"),
        pytest.param({"amount": -5}, id="negative"),
        pytest.param({"amount": 1.5}, id="fraction"),
        pytest.param({"amount": 10.0}, id="float-with-integer-value"),
        pytest.param({"amount": "10"}, id="string"),
        pytest.param({"amount": True}, id="boolean"),
        pytest.param({"amount": None}, id="null"),
        pytest.param({"amount": [10]}, id="list"),
        pytest.param({}, id="missing"),
        pytest.param({"amount": 5001}, id="above-sandbox-max"),
    ],
)
def test_topup_refuses_an_invalid_amount_and_moves_nothing(user, user_api, body):
    response = user_api.post("/api/v1/wallet/topups", body, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["amount"]
    assert balance_of(user) == 0
    assert not LedgerTransaction.objects.exists()
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db
@override_settings(SANDBOX_TOPUPS=False)
def test_topup_is_forbidden_while_sandbox_topups_are_off(user, user_api):
    response = user_api.post("/api/v1/wallet/topups", {"amount": 100}, format="json")

    assert_error(response, 403, "permission_denied")
    assert balance_of(user) == 0
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db
def test_topup_needs_authentication(api):
    response = api.post("/api/v1/wallet/topups", {"amount": 100}, format="json")

    assert_error(response, 401, "not_authenticated")
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db
def test_topup_goes_to_the_callers_wallet_only(user, user_api):
    other = UserFactory(balance=40)

    response = user_api.post("/api/v1/wallet/topups", {"amount": 300}, format="json")

    assert response.status_code == 201
    assert balance_of(user) == 300
    assert balance_of(other) == 40


@pytest.mark.django_db
def test_topup_service_refuses_while_sandbox_topups_are_off(user, settings):
    from config.errors import PermissionDenied

    settings.SANDBOX_TOPUPS = False

    with pytest.raises(PermissionDenied):
        wallet_topup(user=user, amount=100)

    assert balance_of(user) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_topups_to_one_wallet_all_count():
    # The funding account does not exist yet: the threads also race to create it.
    user = UserFactory(pin=None)
    amounts = [100 + i for i in range(50)]

    results, errors = run_concurrently(lambda amount: wallet_topup(user=user, amount=amount), [(a,) for a in amounts])

    assert errors == [None] * 50
    assert balance_of(user) == sum(amounts)
    topups = LedgerTransaction.objects.filter(kind=TransactionKind.TOPUP)
    assert topups.count() == 50
    assert {tx.id for tx in results} == set(topups.values_list("id", flat=True))
    funding = system_account(code=SystemAccount.FUNDING, currency="CNY")
    assert sorted(LedgerEntry.objects.filter(account=funding).values_list("amount", flat=True)) == sorted(
        -a for a in amounts
    )
    wallet_entries = LedgerEntry.objects.filter(account__user=user).order_by("id")
    # Each entry's balance_after is the running balance in posting order.
    running = 0
    for entry in wallet_entries:
        running += entry.amount
        assert entry.balance_after == running
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    assert "OK: the ledger balances" in out.getvalue()
