"""Selectors that read: wallet history and the ledger reconciliation."""

from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet, Subquery, Sum
from django.utils.module_loading import import_string

from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction


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


@dataclass
class ReconciliationReport:
    wallets_checked: int = 0
    transactions_checked: int = 0
    total_wallet_balance: int = 0
    system_balances: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [
            f"wallets checked: {self.wallets_checked}",
            f"transactions checked: {self.transactions_checked}",
            f"sum of wallet balances: {self.total_wallet_balance}",
        ]
        out += [f"system account {name}: {balance}" for name, balance in sorted(self.system_balances.items())]
        out += [f"PROBLEM: {p}" for p in self.problems] or ["OK: the ledger balances"]
        return out


def ledger_reconcile() -> ReconciliationReport:
    """Every wallet equals the sum of its entries, every transaction sums to zero,
    so all balances plus system accounts sum to zero. Then the checks listed in
    settings.RECONCILIATION_CHECKS (the packets app checks escrow against its
    shares) add problems of their own.
    """
    report = ReconciliationReport()
    wallets = Account.objects.filter(kind=AccountKind.WALLET).annotate(entry_sum=Sum("entries__amount"))
    for wallet in wallets.iterator(chunk_size=2000):
        report.wallets_checked += 1
        report.total_wallet_balance += wallet.balance
        entry_sum = wallet.entry_sum or 0
        if wallet.balance != entry_sum:
            report.problems.append(f"{wallet}: balance {wallet.balance} but entries sum to {entry_sum}")
        if wallet.balance < 0:
            report.problems.append(f"{wallet}: negative balance {wallet.balance}")

    report.transactions_checked = LedgerTransaction.objects.count()
    unbalanced = (
        LedgerTransaction.objects.annotate(total=Sum("entries__amount"), legs=Count("entries"))
        .filter(Q(legs__lt=2) | ~Q(total=0))
        .values_list("id", "total")[:20]
    )
    report.problems += [f"transaction {tx_id} sums to {total}, not 0" for tx_id, total in unbalanced]

    for account in Account.objects.exclude(kind=AccountKind.WALLET).annotate(entry_sum=Sum("entries__amount")):
        report.system_balances[str(account)] = account.entry_sum or 0

    grand_total = report.total_wallet_balance + sum(report.system_balances.values())
    if grand_total != 0:
        report.problems.append(f"wallets plus system accounts sum to {grand_total}, not 0")
    mismatched_after = LedgerEntry.objects.filter(balance_after__isnull=False).exclude(
        account__kind=AccountKind.WALLET
    ).count()
    if mismatched_after:
        report.problems.append(f"{mismatched_after} system-account entries carry a wallet balance")
    for check_path in settings.RECONCILIATION_CHECKS:
        report.problems += import_string(check_path)()
    return report

