"""The caller's wallet history: newest first, signed amounts, running balances, cursor pages."""

from datetime import datetime

import pytest
from django.contrib.auth import get_user_model

from redpackets.services import packet_claim, packet_send
from tests.assertions import assert_error
from tests.factories import PASSWORD, UserFactory, group_with_members, login
from wallets.models import Account, TransactionKind
from wallets.services import wallet_adjust, wallet_topup

pytestmark = pytest.mark.django_db

CONTRACT_FIELDS = {"id", "kind", "amount", "balance_after", "created_at", "packet"}


@pytest.fixture
def alice_and_bob():
    """alice: +100, +200, sends a 2 x 50 packet (-100), an operator takes 30 back; bob claims one share."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    first = wallet_topup(user=alice, amount=100)
    second = wallet_topup(user=alice, amount=200)
    group = group_with_members(alice, [bob])
    packet = packet_send(sender=alice, group_id=group.id, kind="fixed", share_count=2, share_amount=50)
    operator = get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
    adjustment = wallet_adjust(wallet=Account.objects.get(user=alice), amount=-30, reason="chargeback", operator=operator)
    claim = packet_claim(packet_id=packet.id, user=bob)
    return {"alice": alice, "bob": bob, "packet": packet, "topups": [first, second], "adjustment": adjustment,
            "claim": claim}


def test_history_lists_entries_newest_first_with_signed_amounts_and_running_balances(alice_and_bob):
    data = alice_and_bob

    response = login(data["alice"]).get("/api/v1/wallet/transactions")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"results", "next"}
    assert body["next"] is None
    rows = body["results"]
    assert [(r["kind"], r["amount"], r["balance_after"]) for r in rows] == [
        (TransactionKind.ADJUSTMENT, -30, 170),
        (TransactionKind.PACKET_SEND, -100, 200),
        (TransactionKind.TOPUP, 200, 300),
        (TransactionKind.TOPUP, 100, 100),
    ]
    assert [r["id"] for r in rows] == [
        str(data["adjustment"].id),
        rows[1]["id"],
        str(data["topups"][1].id),
        str(data["topups"][0].id),
    ]
    assert [r["packet"] for r in rows] == [None, str(data["packet"].id), None, None]
    assert all(CONTRACT_FIELDS <= set(r) for r in rows)
    assert rows[0]["balance_after"] == Account.objects.get(user=data["alice"]).balance


def test_history_times_are_iso_8601_utc(alice_and_bob):
    response = login(alice_and_bob["alice"]).get("/api/v1/wallet/transactions")

    times = [datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) for r in response.json()["results"]]
    assert all(t.utcoffset().total_seconds() == 0 for t in times)
    assert times == sorted(times, reverse=True)


def test_history_shows_a_claim_as_money_in_with_its_packet(alice_and_bob):
    data = alice_and_bob

    response = login(data["bob"]).get("/api/v1/wallet/transactions")

    rows = response.json()["results"]
    assert [(r["kind"], r["amount"], r["balance_after"], r["packet"]) for r in rows] == [
        (TransactionKind.PACKET_CLAIM, 50, 50, str(data["packet"].id)),
    ]


def test_history_never_shows_another_users_entries(alice_and_bob):
    data = alice_and_bob
    carol = UserFactory(balance=999)

    alice_ids = {r["id"] for r in login(data["alice"]).get("/api/v1/wallet/transactions").json()["results"]}
    bob_ids = {r["id"] for r in login(data["bob"]).get("/api/v1/wallet/transactions").json()["results"]}
    carol_rows = login(carol).get("/api/v1/wallet/transactions").json()["results"]

    assert not alice_ids & bob_ids
    assert len(alice_ids) == 4 and len(bob_ids) == 1
    assert [(r["kind"], r["amount"]) for r in carol_rows] == [(TransactionKind.TOPUP, 999)]
    assert not {r["id"] for r in carol_rows} & (alice_ids | bob_ids)


def test_a_new_wallet_has_an_empty_history(user_api):
    response = user_api.get("/api/v1/wallet/transactions")

    assert response.json() == {"results": [], "next": None}


def test_history_pages_follow_the_next_cursor(alice_and_bob):
    client = login(alice_and_bob["alice"])
    everything = client.get("/api/v1/wallet/transactions").json()["results"]

    first = client.get("/api/v1/wallet/transactions?page_size=2").json()
    second = client.get(first["next"]).json()

    assert [r["id"] for r in first["results"]] == [r["id"] for r in everything[:2]]
    assert first["next"] is not None
    assert [r["id"] for r in second["results"]] == [r["id"] for r in everything[2:]]
    assert second["next"] is None


def test_a_cursor_page_is_stable_when_new_entries_arrive(alice_and_bob):
    alice = alice_and_bob["alice"]
    client = login(alice)
    everything = client.get("/api/v1/wallet/transactions").json()["results"]
    first = client.get("/api/v1/wallet/transactions?page_size=2").json()

    wallet_topup(user=alice, amount=5)
    second = client.get(first["next"]).json()

    assert [r["id"] for r in second["results"]] == [r["id"] for r in everything[2:]]


def test_a_page_size_of_one_walks_every_entry_once(alice_and_bob):
    client = login(alice_and_bob["alice"])
    url, seen = "/api/v1/wallet/transactions?page_size=1", []

    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 1
        seen += [r["id"] for r in page["results"]]
        url = page["next"]

    assert len(seen) == len(set(seen)) == 4


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("bz1hYmM%3D", id="non-numeric-offset"),  # o=abc
        pytest.param("cD1hYmM%3D", id="non-numeric-position"),  # p=abc
    ],
)
def test_a_forged_cursor_is_not_found(user_api, cursor):
    response = user_api.get(f"/api/v1/wallet/transactions?cursor={cursor}")

    assert_error(response, 404, "not_found")


def test_history_needs_authentication(api):
    assert_error(api.get("/api/v1/wallet/transactions"), 401, "not_authenticated")
