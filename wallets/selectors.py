"""Selectors that read: wallet history and the ledger reconciliation."""

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Count, Max, Q, QuerySet, Subquery, Sum
from django.utils.module_loading import import_string

from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, ReconciliationRun

ENTRIES = LedgerEntry._meta.db_table
ACCOUNTS = Account._meta.db_table
TRANSACTIONS = LedgerTransaction._meta.db_table
# Problems of one kind listed at most (a broken ledger can have millions).
PROBLEMS_LISTED = 20


def wallet_history(*, user: AbstractBaseUser) -> QuerySet[LedgerEntry]:
    """The caller's wallet entries, newest first (the cursor orders by entry id).

    The wallet is a scalar subquery, not a join: filtered through a join the planner does
    not know which account it reads, and walks the whole ledger backwards by id to find
    the caller's entries (all 10M of them for a newcomer); compared with the one account
    id it reads the (account, -id) index, a page's rows and no more.
    """
    wallet = Account.objects.filter(user=user, kind=AccountKind.WALLET).values("id")[:1]
    return (
        LedgerEntry.objects.filter(account_id=Subquery(wallet))
        .select_related("transaction")
        .order_by("-id")
    )


@dataclass(frozen=True)
class Checkpoint:
    """What a clean run verified: every entry up to `position`, and the system accounts'
    balances there ({account id: sum of its entries up to `position`})."""

    position: int
    balances: Mapping[int, int]


@dataclass(frozen=True)
class ReconciliationScope:
    """What the checks of settings.RECONCILIATION_CHECKS look at: the whole ledger, or
    (incremental) what was posted after `after_position`; `balances` are every system
    account's balance (the sum of its entries) in the run's snapshot."""

    after_position: int | None
    balances: Mapping[int, int]

    def packet_ids(self) -> list | None:
        """The packets with a posting in scope (None: every packet). Fetched first and handed
        over as a list: joined in one statement, PostgreSQL merges the whole index instead."""
        if self.after_position is None:
            return None
        with connection.cursor() as cursor:
            cursor.execute(f"""
                WITH new AS MATERIALIZED (SELECT DISTINCT transaction_id FROM {ENTRIES} WHERE id > %s)
                SELECT DISTINCT t.packet_id FROM new JOIN {TRANSACTIONS} t ON t.id = new.transaction_id
                WHERE t.packet_id IS NOT NULL""", [self.after_position])
            return [row[0] for row in cursor.fetchall()]


@dataclass
class ReconciliationReport:
    mode: str = "full"
    from_position: int | None = None
    checkpoint_position: int = 0
    wallets_checked: int = 0
    transactions_checked: int = 0
    entries_checked: int = 0
    total_wallet_balance: int = 0
    system_balances: dict[str, int] = field(default_factory=dict)
    # {system account id: balance at checkpoint_position}, as the next incremental run needs it.
    checkpoint_balances: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        scope = ("the whole ledger" if self.from_position is None
                 else f"entries after position {self.from_position}")
        out = [
            f"mode: {self.mode}, {scope}, up to position {self.checkpoint_position}",
            f"entries checked: {self.entries_checked}",
            f"wallets checked: {self.wallets_checked}",
            f"transactions checked: {self.transactions_checked}",
            f"sum of wallet balances: {self.total_wallet_balance}",
        ]
        out += [f"system account {name}: {balance}" for name, balance in sorted(self.system_balances.items())]
        out += [f"PROBLEM: {p}" for p in self.problems] or ["OK: the ledger balances"]
        return out


def reconciliation_checkpoint() -> Checkpoint | None:
    """The highest position a clean run verified (runs may overlap: any clean one vouches for its own)."""
    run = (ReconciliationRun.objects.filter(checkpoint_position__isnull=False)
           .order_by("-checkpoint_position").only("checkpoint_position", "checkpoint_balances").first())
    if run is None:
        return None
    return Checkpoint(run.checkpoint_position, {int(k): v for k, v in run.checkpoint_balances.items()})


def ledger_committed_position(*, wait_seconds: float) -> int | None:
    """A ledger position every entry at or below which has committed (or never will), for
    a snapshot taken after this returns; None: the snapshot's own highest entry is one.

    Entry ids come from a sequence when the INSERT runs, so they commit out of order:
    a posting can take id 100, id 101 commit, and 100 commit a moment later. A checkpoint
    at 101 taken before that would skip 100 for ever. So, on PostgreSQL: read the
    sequence, then wait until every transaction that was writing entries then has ended
    (each holds its ROW EXCLUSIVE lock on the table from before it drew an id until it
    ends; pg_locks lists them, fast-path ones too, without this taking a lock that could
    queue the claims). Ids drawn later are higher than what was read.

    SQLite has one writer at a time, and the run's IMMEDIATE transaction waits for it.
    """
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))", [ENTRIES])
        (position,) = cursor.fetchone()
        writers = f"""SELECT virtualtransaction FROM pg_locks
            WHERE locktype = 'relation' AND relation = '{ENTRIES}'::regclass AND mode = 'RowExclusiveLock'
              AND granted AND pid <> pg_backend_pid()"""
        cursor.execute(writers)
        in_flight = [row[0] for row in cursor.fetchall()]
        deadline = time.monotonic() + wait_seconds
        while in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(in_flight)} ledger writer(s) still in flight after {wait_seconds} s")
            time.sleep(0.05)
            cursor.execute(writers + " AND virtualtransaction = ANY(%s)", [in_flight])
            in_flight = [row[0] for row in cursor.fetchall()]
    return position or 0


def ledger_reconcile(*, checkpoint: Checkpoint | None = None, up_to: int | None = None) -> ReconciliationReport:
    """Every wallet equals the sum of its entries and each entry's balance_after the
    sum up to it, every transaction sums to zero, all balances plus system accounts
    sum to zero. Then the checks listed in settings.RECONCILIATION_CHECKS (the packets
    app checks escrow against its shares) add problems of their own.

    With a `checkpoint`, only what was posted after it: the transactions with an entry
    above it, the wallets with one (their balance_after chain continued from their last
    entry at or below it), the system accounts from their balances there; the sum of
    all wallet balances and system accounts stays a global check (one pass over the
    wallets, none over the entries).

    `up_to` is the position whose system balances the report records for the next
    checkpoint (ledger_committed_position); None: the highest entry this snapshot sees.
    Run it in one snapshot (wallets/services.py `reconciliation_run` does).
    """
    after = checkpoint.position if checkpoint else None
    if up_to is None:
        up_to = LedgerEntry.objects.aggregate(top=Max("id"))["top"] or 0
    if checkpoint is not None:
        up_to = max(up_to, checkpoint.position)
    report = ReconciliationReport(mode="full" if checkpoint is None else "incremental", from_position=after,
                                  checkpoint_position=up_to)
    if checkpoint is None:
        _check_all_wallets(report)
    else:
        _check_wallets_posted_after(report, after)
    _check_transactions(report, after)
    balances = _check_system_accounts(report, checkpoint, up_to)

    grand_total = report.total_wallet_balance + sum(balances.values())
    if grand_total != 0:
        report.problems.append(f"wallets plus system accounts sum to {grand_total}, not 0")
    scope = ReconciliationScope(after_position=after, balances=balances)
    for check_path in settings.RECONCILIATION_CHECKS:
        report.problems += import_string(check_path)(scope=scope)
    return report


def _check_all_wallets(report: ReconciliationReport) -> None:
    wallets = Account.objects.filter(kind=AccountKind.WALLET).annotate(
        entry_sum=Sum("entries__amount"), entry_count=Count("entries"))
    for wallet in wallets.iterator(chunk_size=2000):
        report.wallets_checked += 1
        report.entries_checked += wallet.entry_count
        report.total_wallet_balance += wallet.balance
        entry_sum = wallet.entry_sum or 0
        if wallet.balance != entry_sum:
            report.problems.append(f"{wallet}: balance {wallet.balance} but entries sum to {entry_sum}")
        if wallet.balance < 0:
            report.problems.append(f"{wallet}: negative balance {wallet.balance}")
    _check_balance_chain(report, f"""
        SELECT e.id, e.account_id, e.balance_after,
               SUM(e.amount) OVER (PARTITION BY e.account_id ORDER BY e.id) AS expected
        FROM {ENTRIES} e JOIN {ACCOUNTS} a ON a.id = e.account_id AND a.kind = 'wallet'""", {})


def _check_wallets_posted_after(report: ReconciliationReport, after: int) -> None:
    """The wallets with an entry above `after`: each continues from its last verified entry."""
    touched = f"""
        WITH touched AS (
            SELECT a.id, a.balance,
                   COALESCE((SELECT p.balance_after FROM {ENTRIES} p WHERE p.account_id = a.id AND p.id <= %(after)s
                             ORDER BY p.id DESC LIMIT 1), 0) AS anchor
            FROM {ACCOUNTS} a
            WHERE a.kind = 'wallet' AND a.id IN (SELECT account_id FROM {ENTRIES} WHERE id > %(after)s)
        )"""
    with connection.cursor() as cursor:
        cursor.execute(touched + f"""
            SELECT t.id, t.balance, t.anchor + SUM(e.amount), COUNT(*)
            FROM touched t JOIN {ENTRIES} e ON e.account_id = t.id AND e.id > %(after)s
            GROUP BY t.id, t.balance, t.anchor""", {"after": after})
        # (PostgreSQL's SUM of bigints is numeric)
        rows = [(account_id, balance, int(entry_sum), count) for account_id, balance, entry_sum, count in cursor]
        cursor.execute(f"SELECT COALESCE(SUM(balance), 0) FROM {ACCOUNTS} WHERE kind = 'wallet'")
        report.total_wallet_balance = int(cursor.fetchone()[0])
    names = {}
    broken = [row for row in rows if row[1] != row[2] or row[1] < 0]
    if broken:
        names = {a.id: str(a) for a in Account.objects.filter(id__in=[row[0] for row in broken]).select_related("user")}
    for account_id, balance, entry_sum, count in rows:
        report.wallets_checked += 1
        report.entries_checked += count
        if balance != entry_sum:
            report.problems.append(f"{names[account_id]}: balance {balance} but entries sum to {entry_sum}")
        if balance < 0:
            report.problems.append(f"{names[account_id]}: negative balance {balance}")
    _check_balance_chain(report, touched + f"""
        SELECT e.id, e.account_id, e.balance_after,
               t.anchor + SUM(e.amount) OVER (PARTITION BY e.account_id ORDER BY e.id) AS expected
        FROM {ENTRIES} e JOIN touched t ON t.id = e.account_id
        WHERE e.id > %(after)s""", {"after": after})


def _check_balance_chain(report: ReconciliationReport, entries_with_expected: str, params: dict) -> None:
    """Each wallet entry's balance_after is the wallet's balance after it (the expected column)."""
    with connection.cursor() as cursor:
        cursor.execute(f"""SELECT id, account_id, balance_after, expected FROM ({entries_with_expected}) chain
                           WHERE balance_after IS NULL OR balance_after <> expected ORDER BY id LIMIT {PROBLEMS_LISTED}""",
                       params)
        rows = cursor.fetchall()
    names = {a.id: str(a) for a in Account.objects.filter(id__in={row[1] for row in rows}).select_related("user")}
    report.problems += [f"{names[account_id]}: entry {entry_id} says balance {after} after it, "
                        f"but its entries sum to {int(expected)} there"
                        for entry_id, account_id, after, expected in rows]


def _check_transactions(report: ReconciliationReport, after: int | None) -> None:
    if after is not None:
        return _check_transactions_posted_after(report, after)
    report.transactions_checked = LedgerTransaction.objects.count()
    unbalanced = (
        LedgerTransaction.objects.annotate(total=Sum("entries__amount"), legs=Count("entries"))
        .filter(Q(legs__lt=2) | ~Q(total=0))
        .values_list("id", "total")[:PROBLEMS_LISTED]
    )
    report.problems += [f"transaction {tx_id} sums to {total}, not 0" for tx_id, total in unbalanced]


def _check_transactions_posted_after(report: ReconciliationReport, after: int) -> None:
    """Every transaction with an entry above `after`, with all its entries (one may straddle it).
    The new ids are materialized first, so the entries are looked up by transaction, not merged in full."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            WITH new AS MATERIALIZED (SELECT DISTINCT transaction_id FROM {ENTRIES} WHERE id > %s)
            SELECT new.transaction_id, SUM(e.amount), COUNT(*)
            FROM new JOIN {ENTRIES} e ON e.transaction_id = new.transaction_id GROUP BY new.transaction_id""",
                       [after])
        rows = cursor.fetchall()
    report.transactions_checked = len(rows)
    unbalanced = [(tx_id, int(total)) for tx_id, total, legs in rows if legs < 2 or total != 0]
    report.problems += [f"transaction {tx_id} sums to {total}, not 0" for tx_id, total in unbalanced[:PROBLEMS_LISTED]]


def _check_system_accounts(report: ReconciliationReport, checkpoint: Checkpoint | None, up_to: int) -> dict[int, int]:
    """Every system account's balance now, and at `up_to` for the next checkpoint."""
    with connection.cursor() as cursor:
        # The position in the join, not in a FILTER: an incremental run reads only the new entries.
        cursor.execute(f"""
            SELECT a.id, COALESCE(SUM(e.amount), 0), COALESCE(SUM(CASE WHEN e.id <= %(up_to)s THEN e.amount END), 0),
                   COUNT(e.id), COUNT(e.balance_after)
            FROM {ACCOUNTS} a LEFT JOIN {ENTRIES} e ON e.account_id = a.id AND e.id > %(after)s
            WHERE a.kind <> 'wallet' GROUP BY a.id""", {"after": checkpoint.position if checkpoint else 0, "up_to": up_to})
        rows = cursor.fetchall()
    accounts = Account.objects.in_bulk([row[0] for row in rows])
    balances = {}
    carrying = 0
    for account_id, entry_sum, sum_to_checkpoint, count, carrying_balance in rows:
        base = checkpoint.balances.get(account_id, 0) if checkpoint else 0
        balances[account_id] = base + int(entry_sum)
        report.system_balances[str(accounts[account_id])] = balances[account_id]
        report.checkpoint_balances[str(account_id)] = base + int(sum_to_checkpoint)
        report.entries_checked += count
        carrying += carrying_balance
    if carrying:
        report.problems.append(f"{carrying} system-account entries carry a wallet balance")
    return balances


def reconciliation_report(*, run: ReconciliationRun) -> ReconciliationReport:
    """A finished run's report, as it was made."""
    return ReconciliationReport(**run.report, problems=run.problems)


def reconciliation_runs_recent(*, limit: int = 20) -> list[ReconciliationRun]:
    return list(ReconciliationRun.objects.select_related("requested_by").order_by("-id")[:limit])
