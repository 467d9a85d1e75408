"""Posting to the ledger: the only code that changes a balance.

Every money movement in the service ends here, as one call of `ledger_post`
inside the caller's database transaction.
"""

import uuid
from collections.abc import Mapping

from django.db import connection, transaction
from django.utils import timezone

from config.errors import InsufficientFunds
from wallets.models import SYSTEM_ACCOUNT_KINDS, Account, AccountKind, LedgerEntry, LedgerTransaction, SystemAccount


def db_value(model, field_name: str, value):
    """A Python value as the database takes it in plain SQL (UUIDs and datetimes differ on SQLite)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)


def system_account(*, code: SystemAccount, currency: str) -> Account:
    account, _ = Account.objects.get_or_create(
        code=code, currency=currency, defaults={"kind": SYSTEM_ACCOUNT_KINDS[code]}
    )
    return account


def ledger_post(
    *,
    kind: str,
    wallet_legs: Mapping[int, int],
    system_legs: Mapping[int, int],
    packet_id: uuid.UUID | None = None,
    memo: str = "",
    created_by_id: int | None = None,
    transaction_id: uuid.UUID | None = None,
) -> LedgerTransaction:
    """Post one balanced transaction: {account id: signed amount} per side.

    Wallet rows are locked by their UPDATE in ascending id order, the one lock
    order of the service, so two postings never deadlock each other. A wallet
    that would go below zero raises InsufficientFunds (the CHECK constraint
    refuses it too, should this guard ever be bypassed).
    """
    if sum(wallet_legs.values()) + sum(system_legs.values()) != 0:
        raise ValueError("A ledger transaction must balance to zero.")
    if any(amount == 0 for amount in (*wallet_legs.values(), *system_legs.values())):
        raise ValueError("A ledger entry moves a non-zero amount.")
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger_post must run inside the caller's transaction.")

    balances_after: dict[int, int] = {}
    with connection.cursor() as cursor:
        for account_id in sorted(wallet_legs):
            amount = wallet_legs[account_id]
            cursor.execute(
                f"UPDATE {Account._meta.db_table} SET balance = balance + %s "
                "WHERE id = %s AND kind = %s AND balance + %s >= 0 RETURNING balance",
                [amount, account_id, AccountKind.WALLET, amount],
            )
            row = cursor.fetchone()
            if row is None:
                balance = Account.objects.filter(id=account_id, kind=AccountKind.WALLET).values_list(
                    "balance", flat=True
                ).first()
                if balance is None:
                    raise ValueError(f"Account {account_id} is not a wallet.")
                raise InsufficientFunds(f"Your balance is {balance}, this needs {-amount}.")
            balances_after[account_id] = row[0]

        # Plain SQL: this runs on every claim, and the ORM's insert machinery
        # costs more than the round trips themselves.
        ledger_transaction = LedgerTransaction(
            id=transaction_id or uuid.uuid4(),
            kind=kind,
            packet_id=packet_id,
            memo=memo,
            created_by_id=created_by_id,
            created_at=timezone.now(),
        )
        tx_id = db_value(LedgerTransaction, "id", ledger_transaction.id)
        cursor.execute(
            f"INSERT INTO {LedgerTransaction._meta.db_table} (id, kind, packet_id, memo, created_by_id, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [tx_id, kind, db_value(LedgerTransaction, "packet_id", packet_id), memo, created_by_id,
             db_value(LedgerTransaction, "created_at", ledger_transaction.created_at)],
        )
        legs = [*wallet_legs.items(), *system_legs.items()]
        cursor.execute(
            f"INSERT INTO {LedgerEntry._meta.db_table} (transaction_id, account_id, amount, balance_after) VALUES "
            + ", ".join(["(%s, %s, %s, %s)"] * len(legs)),
            [value for account_id, amount in legs
             for value in (tx_id, account_id, amount, balances_after.get(account_id))],
        )
    ledger_transaction._state.adding = False
    return ledger_transaction
