"""The operators' lists: newest first on an index, money as money, a wallet's entries a page at a time."""

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from redpackets.models import Packet, PacketKind
from redpackets.services import packet_send
from tests.factories import PASSWORD, UserFactory, group_with_members
from wallets.admin import WALLET_ENTRIES_PER_PAGE
from wallets.models import Account, LedgerEntry, LedgerTransaction, SystemAccount
from wallets.services import wallet_topup

pytestmark = pytest.mark.django_db

TRANSACTIONS = reverse("admin:wallets_ledgertransaction_changelist")
PACKETS = reverse("admin:redpackets_packet_changelist")


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password=PASSWORD))
    return client


def shown(client: Client, url: str, **query) -> list:
    response = client.get(url, query)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def plan_with_indexes_only(queryset) -> str:
    """The plan PostgreSQL picks when a sort is the only alternative to an index (tables are tiny in tests)."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            return queryset.explain()
        finally:
            cursor.execute("SET enable_seqscan = on")


def test_ledger_transactions_are_listed_newest_first(admin_client):
    alice = UserFactory(balance=100)
    for amount in range(1, 15):
        wallet_topup(user=alice, amount=amount)

    listed = shown(admin_client, TRANSACTIONS)

    assert len(listed) == 15
    assert [t.created_at for t in listed] == sorted((t.created_at for t in listed), reverse=True)
    assert listed == list(LedgerTransaction.objects.order_by("-created_at", "-id"))


def test_packets_are_listed_newest_first(admin_client):
    sender = UserFactory(balance=100_000)
    group = group_with_members(sender, [UserFactory(pin=None)])
    for _ in range(12):
        packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)

    listed = shown(admin_client, PACKETS)

    assert listed == list(Packet.objects.order_by("-created_at", "-id"))


@pytest.mark.postgres
@pytest.mark.parametrize(("url", "index"), [(TRANSACTIONS, "created_at"), (PACKETS, "packet_recent")])
def test_the_newest_first_order_is_read_from_an_index(admin_client, url, index):
    UserFactory(balance=100)
    response = admin_client.get(url)

    changelist = response.context["cl"]
    plan = plan_with_indexes_only(changelist.queryset[: changelist.list_per_page])  # the page's query

    assert re.search(rf"Index Scan (Backward )?using \S*{index}\S*", plan), plan
    assert not re.search(r"^\s*(->\s*)?Sort  \(", plan, re.MULTILINE), plan  # no full sort (an incremental one is fine)


def test_the_ledger_list_shows_each_transactions_amount_and_wallets(admin_client):
    alice = UserFactory(username="alice", balance=98_750)

    response = admin_client.get(TRANSACTIONS)

    content = response.content.decode()
    wallet = Account.objects.get(user=alice)
    assert '<td class="field-amount">987.50 CNY</td>' in content
    assert f'<a href="/admin/wallets/wallet/{wallet.pk}/change/">alice</a> +987.50 CNY' in content


def test_the_ledger_list_costs_the_same_queries_for_3_or_30_transactions(admin_client):
    users = [UserFactory(balance=100) for _ in range(3)]
    with CaptureQueriesContext(connection) as few:
        admin_client.get(TRANSACTIONS)
    for user in users:
        for _ in range(9):
            wallet_topup(user=user, amount=5)
    assert LedgerTransaction.objects.count() == 30

    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(TRANSACTIONS)

    assert len(response.context["cl"].result_list) == 30
    assert len(many) == len(few), [q["sql"] for q in many]


def test_a_wallets_entries_come_a_page_at_a_time_newest_first(admin_client):
    alice = UserFactory(balance=1)
    for amount in range(2, 133):
        wallet_topup(user=alice, amount=amount)
    wallet = Account.objects.get(user=alice)
    entries = list(LedgerEntry.objects.filter(account=wallet).order_by("-id"))
    assert len(entries) == 132
    url = reverse("admin:wallets_wallet_change", args=[wallet.pk])

    first = admin_client.get(url)
    last = admin_client.get(url, {"entries_page": 6})

    assert [e.id for e in first.context["entries_page"]] == [e.id for e in entries[:WALLET_ENTRIES_PER_PAGE]]
    assert [e.id for e in last.context["entries_page"]] == [e.id for e in entries[5 * WALLET_ENTRIES_PER_PAGE:]]
    assert first.content.decode().count('<td class="field-amount">') == WALLET_ENTRIES_PER_PAGE
    assert last.content.decode().count('<td class="field-amount">') == 132 - 5 * WALLET_ENTRIES_PER_PAGE
    assert "Page 1 of 6 (132 entries)" in first.content.decode()
    assert '<a href="?entries_page=2">older' in first.content.decode()
    assert '<td class="field-amount">+1.32 CNY</td>' in first.content.decode()
    assert '<td class="field-balance_after">87.78 CNY</td>' in first.content.decode()  # 1 + 2 + ... + 132


def test_balances_read_as_money_on_the_wallet_list_and_page(admin_client):
    alice = UserFactory(username="alice", balance=98_750)
    wallet = Account.objects.get(user=alice)

    listed = admin_client.get(reverse("admin:wallets_wallet_changelist")).content.decode()
    page = admin_client.get(reverse("admin:wallets_wallet_change", args=[wallet.pk])).content.decode()

    assert '<td class="field-balance_display">987.50 CNY</td>' in listed
    assert "98750" not in listed
    assert re.search(r'field-balance_display">.*?<div class="readonly">987.50 CNY</div>', page, re.DOTALL)


def test_where_an_operator_reconciles_the_minor_units_are_shown_too(admin_client):
    UserFactory(balance=98_750)
    topup = LedgerTransaction.objects.get()
    funding = Account.objects.get(code=SystemAccount.FUNDING)
    call_command("reconcile", stdout=io.StringIO())

    detail = admin_client.get(reverse("admin:wallets_ledgertransaction_change", args=[topup.pk])).content.decode()
    accounts = admin_client.get(reverse("admin:wallets_account_changelist")).content.decode()
    report = admin_client.get(reverse("admin:wallets_wallet_reconcile")).content.decode()

    cells = re.findall(r'<td class="field-(amount_display|amount|balance_after)">\s*<p>([^<]*)</p>', detail)
    assert ("amount_display", "+987.50 CNY") in cells and ("amount", "98750") in cells
    assert ("amount_display", "-987.50 CNY") in cells and ("amount", "-98750") in cells
    assert ("balance_after", "98750") in cells
    assert '<td class="field-entry_balance">-987.50 CNY</td><td class="field-entry_balance_minor">-98750</td>' in accounts
    assert funding.code in accounts
    assert "sum of wallet balances: 98750" in report
