"""The reconcile command and the operators' admin: search, entries, adjustments, reconciliation."""

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.test import Client
from django.urls import NoReverseMatch, reverse

from tests.factories import PASSWORD, UserFactory
from wallets.models import (
    Account,
    AdjustmentRequest,
    LedgerEntry,
    LedgerTransaction,
    ReconciliationMode,
    ReconciliationRun,
    SystemAccount,
    TransactionKind,
)
from wallets.selectors import ledger_reconcile
from wallets.services import wallet_topup

pytestmark = pytest.mark.django_db


def tamper_balance(user, **update):
    """Corrupt a wallet's balance past the database's guards (which refuse it:
    tests/wallets/test_ledger_guards.py), as a bad restore or a manual fix would:
    reconcile must still report it."""
    if connection.vendor == "postgresql":
        connection.check_constraints()  # the checks the postings so far queued for commit run now, on honest data
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")  # no triggers for this session
        try:
            Account.objects.filter(user=user).update(**update)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = DEFAULT")
    else:
        Account.objects.filter(user=user).update(**update)

User = get_user_model()


def reconcile() -> str:
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    return out.getvalue()


@pytest.fixture
def superuser():
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def staff_client() -> Client:
    """Staff who may view wallets but is not a superuser."""
    staff = User.objects.create_user("clerk", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_wallet", "view_account"]))
    client = Client()
    client.force_login(staff)
    return client


# --- reconcile ------------------------------------------------------------------------


def test_reconcile_passes_and_reports_on_a_clean_ledger():
    UserFactory(balance=500)
    UserFactory(balance=250)

    output = reconcile()

    assert "wallets checked: 2" in output
    assert "transactions checked: 2" in output
    assert "sum of wallet balances: 750" in output
    assert "OK: the ledger balances" in output
    assert "PROBLEM" not in output


def test_reconcile_passes_on_an_empty_ledger():
    output = reconcile()

    assert "OK: the ledger balances" in output


def test_reconcile_fails_after_a_wallet_balance_is_tampered_with():
    victim = UserFactory(balance=500)
    UserFactory(balance=100)
    tamper_balance(victim, balance=F("balance") + 1)
    out = io.StringIO()

    with pytest.raises(CommandError, match="reconciliation failed"):
        call_command("reconcile", stdout=out)

    output = out.getvalue()
    assert "mode: full, the whole ledger" in output
    assert f"Wallet of {victim.username}: balance 501 but entries sum to 500" in output
    assert "wallets plus system accounts sum to 1" in output
    assert "OK: the ledger balances" not in output


def test_reconcile_fails_after_a_balance_is_lowered_without_a_ledger_entry():
    victim = UserFactory(balance=500)
    tamper_balance(victim, balance=0)

    with pytest.raises(CommandError):
        reconcile()

    assert not ledger_reconcile().ok


# --- admin: wallets -----------------------------------------------------------------------


def test_wallet_changelist_searches_by_username(admin_client):
    UserFactory(username="alice_searchable", balance=123)
    UserFactory(username="bobby_hidden", balance=456)

    response = admin_client.get("/admin/wallets/wallet/", {"q": "alice_search"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list.values_list("user__username", flat=True)) == ["alice_searchable"]
    assert b"alice_searchable" in response.content
    assert b"bobby_hidden" not in response.content


def test_wallet_changelist_lists_wallets_only(admin_client):
    UserFactory(username="alice", balance=123)

    response = admin_client.get("/admin/wallets/wallet/")

    assert response.status_code == 200
    wallets = list(response.context["cl"].result_list)
    assert [w.user.username for w in wallets] == ["alice"]


def test_wallet_change_page_shows_its_entries(admin_client):
    alice = UserFactory(username="alice", balance=321)
    other = UserFactory(balance=999)
    wallet = Account.objects.get(user=alice)
    topup = LedgerTransaction.objects.get(entries__account=wallet)
    others = LedgerTransaction.objects.get(entries__account__user=other)

    response = admin_client.get(f"/admin/wallets/wallet/{wallet.pk}/change/")

    assert response.status_code == 200
    assert str(topup.id).encode() in response.content
    assert str(others.id).encode() not in response.content
    assert b"Request adjustment" in response.content


def test_a_system_account_has_no_adjustment_page_under_wallets(admin_client):
    UserFactory(balance=500)
    funding = Account.objects.get(code=SystemAccount.FUNDING)

    response = admin_client.post(f"/admin/wallets/wallet/{funding.pk}/request-adjustment/",
                                 {"amount": "5", "reason": "x", "confirm": "yes"})

    assert response.status_code == 404
    assert not AdjustmentRequest.objects.exists()


def test_staff_who_may_only_view_wallets_see_no_adjustment_link_and_cannot_request(staff_client):
    wallet = Account.objects.get(user=UserFactory(username="alice", balance=500))

    change = staff_client.get(f"/admin/wallets/wallet/{wallet.pk}/change/")
    attempt = staff_client.post(f"/admin/wallets/wallet/{wallet.pk}/request-adjustment/",
                                {"amount": "10", "reason": "for me", "confirm": "yes"})

    assert change.status_code == 200
    assert b"Request adjustment" not in change.content
    assert attempt.status_code == 403
    assert not AdjustmentRequest.objects.exists()


def test_the_direct_adjust_page_is_gone(admin_client):
    wallet = Account.objects.get(user=UserFactory(balance=500))

    response = admin_client.post(f"/admin/wallets/wallet/{wallet.pk}/adjust/", {"amount": "100", "reason": "x"},
                                 follow=True)

    with pytest.raises(NoReverseMatch):
        reverse("admin:wallets_wallet_adjust", args=[wallet.pk])
    assert response.status_code == 200  # the admin's "no such object" redirect
    assert not LedgerTransaction.objects.filter(kind=TransactionKind.ADJUSTMENT).exists()


def test_wallets_cannot_be_added_edited_or_deleted_in_the_admin(admin_client):
    wallet = Account.objects.get(user=UserFactory(balance=500))

    add = admin_client.get("/admin/wallets/wallet/add/")
    edit = admin_client.post(f"/admin/wallets/wallet/{wallet.pk}/change/", {"balance": "999999"})
    delete = admin_client.post(f"/admin/wallets/wallet/{wallet.pk}/delete/", {"post": "yes"})

    assert add.status_code == 403
    assert edit.status_code == 403
    assert delete.status_code == 403
    wallet.refresh_from_db()
    assert wallet.balance == 500


# --- admin: the ledger and reconciliation ----------------------------------------------------


def test_ledger_transaction_admin_has_no_add_and_no_delete(admin_client):
    UserFactory(balance=500)
    tx = LedgerTransaction.objects.get()

    changelist = admin_client.get("/admin/wallets/ledgertransaction/")
    add = admin_client.get("/admin/wallets/ledgertransaction/add/")
    delete = admin_client.post(f"/admin/wallets/ledgertransaction/{tx.pk}/delete/", {"post": "yes"})
    bulk_delete = admin_client.post(
        "/admin/wallets/ledgertransaction/", {"action": "delete_selected", "_selected_action": [str(tx.pk)], "post": "yes"}
    )

    assert changelist.status_code == 200
    assert str(tx.pk).encode() in changelist.content
    assert b"/admin/wallets/ledgertransaction/add/" not in changelist.content
    assert b"delete_selected" not in changelist.content
    assert add.status_code == 403
    assert delete.status_code == 403
    assert bulk_delete.status_code in (200, 302)
    assert LedgerTransaction.objects.filter(pk=tx.pk).exists()
    assert LedgerEntry.objects.filter(transaction=tx).count() == 2


def test_ledger_transaction_change_page_is_read_only(admin_client):
    UserFactory(balance=500)
    tx = LedgerTransaction.objects.get()

    page = admin_client.get(f"/admin/wallets/ledgertransaction/{tx.pk}/change/")
    edit = admin_client.post(f"/admin/wallets/ledgertransaction/{tx.pk}/change/", {"memo": "rewritten"})

    assert page.status_code == 200
    assert b'name="memo"' not in page.content
    assert edit.status_code == 403
    tx.refresh_from_db()
    assert tx.memo == "Sandbox topup"


def test_reconcile_page_reports_the_last_run_on_a_clean_ledger(admin_client):
    UserFactory(balance=500)
    reconcile()

    response = admin_client.get("/admin/wallets/wallet/reconcile/")

    assert response.status_code == 200
    assert b"OK: the ledger balances" in response.content
    assert b"sum of wallet balances: 500" in response.content


def test_reconcile_page_reports_the_last_run_finding_a_tampered_balance(admin_client):
    victim = UserFactory(balance=500)
    tamper_balance(victim, balance=700)
    with pytest.raises(CommandError):
        reconcile()

    response = admin_client.get("/admin/wallets/wallet/reconcile/")

    assert response.status_code == 200
    assert b"problem(s) found" in response.content
    assert b"balance 700 but entries sum to 500" in response.content


def test_admin_pages_need_a_staff_login():
    wallet = Account.objects.get(user=UserFactory(balance=500))
    client = Client()
    client.force_login(UserFactory())

    for url in ["/admin/wallets/wallet/", f"/admin/wallets/wallet/{wallet.pk}/adjust/", "/admin/wallets/wallet/reconcile/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url


def test_reconcile_incremental_records_a_run_from_the_checkpoint_and_says_how_long_it_took():
    alice = UserFactory(balance=500)
    reconcile()
    wallet_topup(user=alice, amount=5)
    out = io.StringIO()

    call_command("reconcile", "--incremental", stdout=out)

    output = out.getvalue()
    first, last = ReconciliationRun.objects.order_by("id")
    assert last.mode == ReconciliationMode.INCREMENTAL and last.from_position == first.checkpoint_position
    assert re.search(rf"Incremental reconciliation #{last.pk}: \d+\.\d{{3}} s", output)
    assert f"mode: incremental, entries after position {first.checkpoint_position}" in output
    assert "entries checked: 2" in output
    assert output.strip().splitlines()[-1] == "OK: the ledger balances"
