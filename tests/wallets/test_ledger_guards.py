"""The database refuses bad ledger states even when the service is bypassed."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from tests.factories import UserFactory
from wallets.ledger import system_account
from wallets.models import Account, LedgerEntry, LedgerTransaction, SystemAccount, TransactionKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_database_refuses_a_negative_wallet_balance():
    user = UserFactory(balance=100)

    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(user=user).update(balance=-1)

    assert Account.objects.get(user=user).balance == 100


def test_database_refuses_an_unbalanced_transaction():
    user = UserFactory()
    wallet = Account.objects.get(user=user)
    funding = system_account(code=SystemAccount.FUNDING, currency="CNY")

    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        tx = LedgerTransaction.objects.create(kind=TransactionKind.TOPUP)
        LedgerEntry.objects.create(transaction=tx, account=wallet, amount=500, balance_after=500)
        LedgerEntry.objects.create(transaction=tx, account=funding, amount=-400)

    assert not LedgerTransaction.objects.exists()


def test_database_refuses_a_transaction_without_entries():
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        LedgerTransaction.objects.create(kind=TransactionKind.TOPUP)


def test_database_refuses_editing_or_deleting_a_posted_entry():
    user = UserFactory(balance=300)
    entry = LedgerEntry.objects.get(account__user=user)

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(id=entry.id).update(amount=3000)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM wallets_ledgerentry WHERE id = %s", [entry.id])
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerTransaction.objects.filter(id=entry.transaction_id).update(kind=TransactionKind.ADJUSTMENT)

    entry.refresh_from_db()
    assert entry.amount == 300


def test_database_refuses_a_stored_balance_on_a_system_account():
    funding = system_account(code=SystemAccount.FUNDING, currency="CNY")

    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(id=funding.id).update(balance=10)


def test_database_refuses_a_zero_entry():
    user = UserFactory()
    wallet = Account.objects.get(user=user)

    with pytest.raises(IntegrityError), transaction.atomic():
        tx = LedgerTransaction.objects.create(id=uuid.uuid4(), kind=TransactionKind.ADJUSTMENT)
        LedgerEntry.objects.create(transaction=tx, account=wallet, amount=0)


def test_database_refuses_a_wallet_balance_that_moves_without_a_posting():
    user = UserFactory(balance=500)

    with pytest.raises(IntegrityError, match="its entries end at 500"), transaction.atomic():
        Account.objects.filter(user=user).update(balance=F("balance") + 1)

    assert Account.objects.get(user=user).balance == 500


def test_database_refuses_a_wallet_entry_that_breaks_the_balance_chain():
    user = UserFactory(balance=500)
    wallet = Account.objects.get(user=user)
    funding = system_account(code=SystemAccount.FUNDING, currency="CNY")

    with pytest.raises(IntegrityError, match="previous entry left 500"), transaction.atomic():
        tx = LedgerTransaction.objects.create(kind=TransactionKind.TOPUP)
        LedgerEntry.objects.create(transaction=tx, account=wallet, amount=100, balance_after=9999)
        LedgerEntry.objects.create(transaction=tx, account=funding, amount=-100)

    assert LedgerEntry.objects.filter(account=wallet).count() == 1


def test_database_refuses_a_balance_on_a_system_account_entry():
    user = UserFactory()
    wallet = Account.objects.get(user=user)
    funding = system_account(code=SystemAccount.FUNDING, currency="CNY")

    with pytest.raises(IntegrityError, match="carries a balance"), transaction.atomic():
        tx = LedgerTransaction.objects.create(kind=TransactionKind.TOPUP)
        LedgerEntry.objects.create(transaction=tx, account=funding, amount=-100, balance_after=0)
        LedgerEntry.objects.create(transaction=tx, account=wallet, amount=100, balance_after=100)
