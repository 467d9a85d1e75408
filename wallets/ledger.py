"""Posting to the ledger: the only code that changes a balance.

Every money movement in the service ends here, as one call of `ledger_post`
(or `ledger_post_many`, for a batch such as the expiry sweep's refunds) inside
the caller's database transaction.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from config.errors import InsufficientFunds
from config.sql_rows import rows_sql
from wallets.models import SYSTEM_ACCOUNT_KINDS, Account, AccountKind, LedgerEntry, LedgerTransaction, SystemAccount


def db_value(model, field_name: str, value):
    """A Python value as the database takes it in plain SQL (UUIDs and datetimes differ on SQLite)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)


def system_account(*, code: SystemAccount, currency: str) -> Account:
    account, _ = Account.objects.get_or_create(
        code=code, currency=currency, defaults={"kind": SYSTEM_ACCOUNT_KINDS[code]}
    )
    return account


@dataclass(frozen=True)
class Posting:
    """One balanced transaction to post: {account id: signed amount} per side."""

    kind: str
    wallet_legs: Mapping[int, int]
    system_legs: Mapping[int, int]
    packet_id: uuid.UUID | None = None
    memo: str = ""
    created_by_id: int | None = None
    transaction_id: uuid.UUID | None = None

    def __post_init__(self):
        if sum(self.wallet_legs.values()) + sum(self.system_legs.values()) != 0:
            raise ValueError("A ledger transaction must balance to zero.")
        if any(amount == 0 for amount in (*self.wallet_legs.values(), *self.system_legs.values())):
            raise ValueError("A ledger entry moves a non-zero amount.")


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
    """Post one balanced transaction: {account id: signed amount} per side (see `ledger_post_many`)."""
    (posted,) = ledger_post_many([
        Posting(kind=kind, wallet_legs=wallet_legs, system_legs=system_legs, packet_id=packet_id, memo=memo,
                created_by_id=created_by_id, transaction_id=transaction_id)
    ])
    return posted


_ACCOUNT_TABLE = Account._meta.db_table
# Several wallets are locked in ascending id order first, the one lock order of the service.
_WALLETS_LOCK = f"SELECT id FROM {_ACCOUNT_TABLE} WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
_WALLETS_MOVE = f"""
    WITH moves (id, change) AS ({{rows}})
    UPDATE {_ACCOUNT_TABLE} SET balance = balance + moves.change FROM moves
    WHERE {_ACCOUNT_TABLE}.id = moves.id AND kind = %s AND balance + moves.change >= 0
    RETURNING {_ACCOUNT_TABLE}.id, balance
"""
_INSERT_TRANSACTIONS = (
    f"INSERT INTO {LedgerTransaction._meta.db_table} (id, kind, packet_id, memo, created_by_id, created_at) {{rows}}"
)
# Rows are inserted, and numbered, in the order given: the balance_after chain trigger
# sees a wallet's earlier entries of the same statement.
_INSERT_ENTRIES = f"INSERT INTO {LedgerEntry._meta.db_table} (transaction_id, account_id, amount, balance_after) {{rows}}"


def ledger_post_many(postings: Sequence[Posting]) -> list[LedgerTransaction]:
    """Post balanced transactions, in order, in two statements whatever their number: the
    wallets' balances, then the transactions and their entries (plain SQL: this runs on every
    claim, and the ORM's insert machinery costs more than the round trips themselves).

    Wallet rows are locked in ascending id order, the one lock order of the service,
    so two postings never deadlock each other. A wallet that would go below zero
    raises InsufficientFunds (the CHECK constraints refuse it too, should this guard
    ever be bypassed). Each wallet entry carries the balance right after it: a
    wallet's entries follow the order of `postings`.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger_post must run inside the caller's transaction.")
    moved: dict[int, int] = {}
    for posting in postings:
        for account_id, amount in posting.wallet_legs.items():
            moved[account_id] = moved.get(account_id, 0) + amount

    with connection.cursor() as cursor:
        running: dict[int, int] = {}  # each wallet's balance before the first of these postings
        if moved:
            if len(moved) > 1 and connection.features.has_select_for_update:
                cursor.execute(_WALLETS_LOCK, [sorted(moved)])
            rows, params = rows_sql(["bigint", "bigint"], sorted(moved.items()))
            cursor.execute(_WALLETS_MOVE.format(rows=rows), [*params, AccountKind.WALLET])
            running = {account_id: balance - moved[account_id] for account_id, balance in cursor.fetchall()}
        for account_id, change in sorted(moved.items()):
            if account_id not in running:
                balance = Account.objects.filter(id=account_id, kind=AccountKind.WALLET).values_list(
                    "balance", flat=True
                ).first()
                if balance is None:
                    raise ValueError(f"Account {account_id} is not a wallet.")
                raise InsufficientFunds(f"Your balance is {balance}, this needs {-change}.")

        now = timezone.now()
        created_at = db_value(LedgerTransaction, "created_at", now)
        posted, transaction_rows, entry_rows = [], [], []
        for posting in postings:
            ledger_transaction = LedgerTransaction(
                id=posting.transaction_id or uuid.uuid4(), kind=posting.kind, packet_id=posting.packet_id,
                memo=posting.memo, created_by_id=posting.created_by_id, created_at=now,
            )
            ledger_transaction._state.adding = False
            posted.append(ledger_transaction)
            tx_id = db_value(LedgerTransaction, "id", ledger_transaction.id)
            transaction_rows.append([tx_id, posting.kind, db_value(LedgerTransaction, "packet_id", posting.packet_id),
                                     posting.memo, posting.created_by_id, created_at])
            for account_id, amount in posting.wallet_legs.items():
                running[account_id] += amount
                if running[account_id] < 0:  # a later posting of the batch pays it back; this one may not wait
                    raise InsufficientFunds(f"Your balance is {running[account_id] - amount}, this needs {-amount}.")
                entry_rows.append([tx_id, account_id, amount, running[account_id]])
            for account_id, amount in posting.system_legs.items():
                entry_rows.append([tx_id, account_id, amount, None])

        transactions, transaction_params = rows_sql(["uuid", "text", "uuid", "text", "integer", "timestamptz"],
                                                    transaction_rows)
        entries, entry_params = rows_sql(["uuid", "bigint", "bigint", "bigint"], entry_rows)
        if connection.vendor == "postgresql":
            # Both INSERTs in one statement: one round trip fewer for every claim and send.
            cursor.execute(f"WITH posted AS ({_INSERT_TRANSACTIONS.format(rows=transactions)}) "
                           + _INSERT_ENTRIES.format(rows=entries), transaction_params + entry_params)
        else:
            cursor.execute(_INSERT_TRANSACTIONS.format(rows=transactions), transaction_params)
            cursor.execute(_INSERT_ENTRIES.format(rows=entries), entry_params)
    return posted
