"""Recorded reconciliation runs: the checkpoint, incremental runs that catch what was
posted after it, the Celery task behind the admin's "Run now", and the dashboard figure."""

import threading
import time
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from redpackets.models import PacketKind, Share
from redpackets.services import packet_send
from tests.factories import PASSWORD, UserFactory, group_with_members
from tests.processes import control_connection
from wallets.ledger import system_account
from wallets.models import (
    Account,
    LedgerEntry,
    LedgerTransaction,
    ReconciliationMode,
    ReconciliationRun,
    SystemAccount,
    TransactionKind,
)
from wallets.selectors import reconciliation_checkpoint
from wallets.services import reconciliation_run, wallet_topup
from wallets.tasks import reconcile_ledger

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]
User = get_user_model()
FULL, INCREMENTAL = ReconciliationMode.FULL, ReconciliationMode.INCREMENTAL


@contextmanager
def guards_off():
    """The database refuses a broken ledger (tests/wallets/test_ledger_guards.py); this
    session writes one anyway, as a bad restore or a manual fix would, triggers off."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


def post_unchecked(legs: list[tuple[Account, int, int | None]], *, wallet_balance: tuple[Account, int] | None = None):
    """A topup transaction of these (account, amount, balance_after) legs, past the guards."""
    with guards_off():
        tx = LedgerTransaction.objects.create(kind=TransactionKind.TOPUP, memo="posted behind the guards")
        for account, amount, balance_after in legs:
            LedgerEntry.objects.create(transaction=tx, account=account, amount=amount, balance_after=balance_after)
        if wallet_balance:
            Account.objects.filter(pk=wallet_balance[0].pk).update(balance=wallet_balance[1])
    return tx


def funding() -> Account:
    return system_account(code=SystemAccount.FUNDING, currency="CNY")


def top_entry() -> int:
    return LedgerEntry.objects.order_by("-id").values_list("id", flat=True).first()


def test_a_clean_full_run_records_its_outcome_time_and_checkpoint():
    UserFactory(balance=500)
    UserFactory(balance=250)

    run = reconciliation_run(mode=FULL)

    run.refresh_from_db()
    assert run.ok is True and run.problems == [] and run.error == ""
    assert run.mode == FULL and run.from_position is None
    assert run.finished_at >= run.started_at and run.duration.total_seconds() >= 0
    assert run.entries_checked == 4
    assert run.checkpoint_position == top_entry()
    assert run.checkpoint_balances == {str(funding().pk): -750}
    assert run.report["wallets_checked"] == 2 and run.report["total_wallet_balance"] == 750


def test_incremental_without_a_checkpoint_runs_full():
    UserFactory(balance=500)

    run = reconciliation_run(mode=INCREMENTAL)

    assert run.mode == FULL and run.ok and run.checkpoint_position == top_entry()


def test_incremental_checks_only_what_was_posted_after_the_checkpoint():
    alice = UserFactory(balance=500)
    UserFactory(balance=250)
    first = reconciliation_run(mode=FULL)
    wallet_topup(user=alice, amount=30)
    wallet_topup(user=alice, amount=20)

    run = reconciliation_run(mode=INCREMENTAL)

    assert run.mode == INCREMENTAL and run.ok, run.problems
    assert run.from_position == first.checkpoint_position
    assert run.entries_checked == 4  # two topups of two legs, nothing older
    assert run.report["wallets_checked"] == 1 and run.report["transactions_checked"] == 2
    assert run.checkpoint_position == top_entry()
    assert run.checkpoint_balances == {str(funding().pk): -800}
    assert reconciliation_checkpoint().position == run.checkpoint_position


def test_incremental_catches_an_unbalanced_transaction_posted_after_the_checkpoint():
    alice = UserFactory(balance=500)
    checkpoint = reconciliation_run(mode=FULL).checkpoint_position
    wallet = alice.wallet
    broken = post_unchecked([(wallet, 100, 600), (funding(), -90, None)], wallet_balance=(wallet, 600))

    run = reconciliation_run(mode=INCREMENTAL)

    assert run.mode == INCREMENTAL and run.ok is False
    assert f"transaction {broken.id} sums to 10, not 0" in run.problems
    assert "wallets plus system accounts sum to 10, not 0" in run.problems
    assert run.checkpoint_position is None and run.checkpoint_balances is None
    assert reconciliation_checkpoint().position == checkpoint


def test_incremental_catches_a_broken_balance_chain_and_a_wallet_off_its_entries():
    alice, bob = UserFactory(balance=500), UserFactory(balance=300)
    reconciliation_run(mode=FULL)
    # alice: an entry that claims a balance its predecessor does not leave (the stored balance follows it)
    post_unchecked([(alice.wallet, 100, 700), (funding(), -100, None)], wallet_balance=(alice.wallet, 700))
    # bob: a right entry, but the stored balance moved more than it
    post_unchecked([(bob.wallet, 50, 350), (funding(), -50, None)], wallet_balance=(bob.wallet, 360))

    run = reconciliation_run(mode=INCREMENTAL)

    problems = "\n".join(run.problems)
    assert f"Wallet of {alice.username}: balance 700 but entries sum to 600" in problems
    assert f"Wallet of {alice.username}: entry" in problems
    assert "says balance 700 after it, but its entries sum to 600 there" in problems
    assert f"Wallet of {bob.username}: balance 360 but entries sum to 350" in problems
    assert f"Wallet of {bob.username}: entry" not in problems
    assert not run.ok and run.checkpoint_position is None


def test_a_run_with_findings_does_not_advance_the_checkpoint_and_the_next_one_finds_them_again():
    alice = UserFactory(balance=500)
    clean = reconciliation_run(mode=FULL)
    post_unchecked([(alice.wallet, 100, 600), (funding(), -90, None)], wallet_balance=(alice.wallet, 600))
    failed = reconciliation_run(mode=INCREMENTAL)
    wallet_topup(user=alice, amount=5)  # an honest posting after the broken one

    again = reconciliation_run(mode=INCREMENTAL)

    assert not failed.ok and not again.ok
    assert again.from_position == failed.from_position == clean.checkpoint_position
    assert any("sums to 10, not 0" in p for p in again.problems)
    assert ReconciliationRun.objects.filter(checkpoint_position__isnull=False).get() == clean


def test_a_full_run_finds_an_old_entry_changed_behind_the_checkpoint_that_incremental_runs_cannot_see():
    alice = UserFactory(balance=500)
    reconciliation_run(mode=FULL)
    with guards_off():
        LedgerEntry.objects.filter(account=alice.wallet).update(amount=F("amount") + 1)

    incremental = reconciliation_run(mode=INCREMENTAL)
    full = reconciliation_run(mode=FULL)

    assert incremental.ok  # nothing was posted after the checkpoint
    assert not full.ok
    assert f"Wallet of {alice.username}: balance 500 but entries sum to 501" in full.problems
    assert any("sums to 1, not 0" in p for p in full.problems)


def test_incremental_catches_escrow_and_shares_that_disagree_on_a_packet_sent_after_the_checkpoint():
    sender = UserFactory(balance=10_000)
    group = group_with_members(sender, [UserFactory(pin=None), UserFactory(pin=None)])
    reconciliation_run(mode=FULL)
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=100)
    with guards_off():
        Share.objects.filter(packet=packet, seq=0).update(amount=101)

    run = reconciliation_run(mode=INCREMENTAL)

    assert not run.ok
    assert "Packet escrow (CNY): holds 200 but the free shares sum to 201" in run.problems
    assert f"packet {packet.id}: claims + refund + free shares do not equal its total" in run.problems


def test_a_run_waits_for_a_posting_in_flight_so_its_checkpoint_cannot_skip_it():
    # Given a posting that has drawn an entry id but not committed (a claim between its INSERT and COMMIT)
    alice = UserFactory(balance=500)
    reconciliation_run(mode=FULL)
    wallet, funding_id = alice.wallet, funding().pk
    slow = control_connection("slow-posting")
    slow.execute("BEGIN")
    slow.execute("SET LOCAL session_replication_role = replica")
    tx = slow.execute("INSERT INTO wallets_ledgertransaction (id, kind, memo, created_at) "
                      "VALUES (gen_random_uuid(), 'topup', 'late', now()) RETURNING id").fetchone()[0]
    slow.execute("INSERT INTO wallets_ledgerentry (transaction_id, account_id, amount, balance_after) "
                 "VALUES (%s, %s, 100, 600), (%s, %s, -90, NULL)", [tx, wallet.pk, tx, funding_id])
    slow.execute("UPDATE wallets_account SET balance = 600 WHERE id = %s", [wallet.pk])
    # and an honest one with a higher id that commits first
    wallet_topup(user=UserFactory(), amount=7)
    runs = []
    thread = threading.Thread(target=lambda: (runs.append(reconciliation_run(mode=INCREMENTAL)), connection.close()))

    # When an incremental run starts while the first is still in flight, and it commits a moment later
    thread.start()
    time.sleep(0.5)
    assert not runs, "the run did not wait for the posting in flight"
    slow.execute("COMMIT")
    thread.join(timeout=30)
    slow.close()

    # Then the run saw the late posting (lower id, committed last) and took no checkpoint past it
    (run,) = runs
    assert not run.ok
    assert f"transaction {tx} sums to 10, not 0" in run.problems
    assert reconciliation_checkpoint().position < LedgerEntry.objects.filter(transaction_id=tx).order_by("id")[0].id


def test_the_task_records_a_run():
    UserFactory(balance=500)

    result = reconcile_ledger.apply(kwargs={"mode": FULL})

    assert result.get() is True
    run = ReconciliationRun.objects.get()
    assert run.ok and run.mode == FULL and run.finished_at is not None


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=PASSWORD))
    return client


def test_run_now_enqueues_the_task_and_the_request_reads_no_ledger_entry(admin_client, monkeypatch):
    for _ in range(3):
        UserFactory(balance=500)
    enqueued = []
    monkeypatch.setattr(reconcile_ledger, "apply_async", lambda args=None, kwargs=None, **options: enqueued.append(kwargs))

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(reverse("admin:wallets_wallet_reconcile"), {"mode": FULL}, follow=True)

    assert response.status_code == 200
    assert enqueued == [{"mode": FULL, "requested_by_id": response.context["user"].pk}]
    assert not ReconciliationRun.objects.exists()
    assert b"A full reconciliation is queued" in response.content
    assert not [q["sql"] for q in queries if "wallets_ledgerentry" in q["sql"]]


def test_a_worker_runs_what_run_now_queued_and_the_page_and_dashboard_show_it(admin_client, stack):
    # Given a worker on the default queue
    UserFactory(balance=500)
    stack.worker()

    # When an operator presses "Run now"
    admin_client.post(reverse("admin:wallets_wallet_reconcile"), {"mode": INCREMENTAL})
    deadline = time.monotonic() + 30
    while not ReconciliationRun.objects.filter(finished_at__isnull=False).exists():
        assert time.monotonic() < deadline, "no run was recorded within 30 s"
        time.sleep(0.2)

    # Then the run is recorded as theirs (a full one: there was no checkpoint), and shown
    run = ReconciliationRun.objects.get()
    assert run.ok and run.mode == FULL and run.requested_by.username == "root"
    page = admin_client.get(reverse("admin:wallets_wallet_reconcile")).content.decode()
    assert f'data-run="{run.pk}"' in page and "OK: the ledger balances" in page
    assert "sum of wallet balances: 500" in page
    dashboard = admin_client.get(reverse("admin:dashboard"))
    (figure,) = [f for s in dashboard.context["sections"].values() for f in s if f.label == "Last reconciliation"]
    assert figure.value == "OK" and not figure.alert
    assert f"full run #{run.pk}" in figure.detail and "took" in figure.detail
    assert figure.url == reverse("admin:wallets_wallet_reconcile")


def test_the_dashboard_flags_a_run_with_problems_and_an_older_failed_full_run(admin_client):
    alice = UserFactory(balance=500)
    with guards_off():
        Account.objects.filter(pk=alice.wallet.pk).update(balance=501)
    reconciliation_run(mode=FULL)
    with guards_off():
        Account.objects.filter(pk=alice.wallet.pk).update(balance=500)
    wallet_topup(user=alice, amount=1)
    # no checkpoint yet (the full run failed): this one runs full and is clean
    clean = reconciliation_run(mode=INCREMENTAL)
    assert clean.ok and clean.mode == FULL

    dashboard = admin_client.get(reverse("admin:dashboard"))

    (figure,) = [f for s in dashboard.context["sections"].values() for f in s if f.label == "Last reconciliation"]
    assert figure.value == "OK" and not figure.alert  # the newest full run is the clean one

    with guards_off():
        Account.objects.filter(pk=alice.wallet.pk).update(balance=999)
    failed = reconciliation_run(mode=INCREMENTAL)
    dashboard = admin_client.get(reverse("admin:dashboard"))
    (figure,) = [f for s in dashboard.context["sections"].values() for f in s if f.label == "Last reconciliation"]
    assert figure.value == f"{len(failed.problems)} problem(s)" and figure.alert
