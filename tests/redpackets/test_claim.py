"""Claiming packets over the API, one request at a time, and what the packet view shows."""

import uuid
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from redpackets import allocation, services
from redpackets.models import Share
from tests.assertions import assert_error, integers_in
from tests.factories import UserFactory, group_with_members, login
from wallets.models import Account, AccountKind, LedgerEntry

pytestmark = [pytest.mark.django_db(transaction=True)]




def balance(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def escrow_held() -> int:
    return LedgerEntry.objects.filter(account__kind=AccountKind.ESCROW).aggregate(s=Sum("amount"))["s"] or 0


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))




def claim(client, packet):
    return client.post(f"/api/v1/packets/{packet.id}/claim")


def view(client, packet) -> dict:
    response = client.get(f"/api/v1/packets/{packet.id}")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def sender():
    return UserFactory(balance=100_000)


@pytest.fixture
def members():
    return [UserFactory() for _ in range(3)]


@pytest.fixture
def group(sender, members):
    return group_with_members(sender, members)


@pytest.fixture
def send(sender, group):
    def send(*, kind="random", share_count=3, total_amount=None, share_amount=None, recipient=None):
        if kind == "random" and total_amount is None:
            total_amount = 1000
        return services.packet_send(
            sender=sender, group_id=group.id, kind=kind, share_count=share_count, total_amount=total_amount,
            share_amount=share_amount, recipient_username=recipient.username if recipient else None,
        )

    return send


@pytest.fixture
def fixed_split(monkeypatch):
    """Make the next random packets split into exactly these shares, in claim order."""

    def use(amounts):
        monkeypatch.setattr(allocation, "split_random", lambda **kwargs: list(amounts))

    return use


@pytest.fixture
def clock(monkeypatch):
    """Freeze django.utils.timezone.now (services, selectors and the ORM all read it)."""

    class Clock:
        def __init__(self):
            self.now = timezone.now()

        def set(self, moment):
            self.now = moment

    frozen = Clock()
    monkeypatch.setattr(timezone, "now", lambda: frozen.now)
    return frozen


# --- claiming -------------------------------------------------------------------------------------


def test_a_member_claims_a_share_and_is_paid_it(members, send):
    alice = members[0]
    packet = send(total_amount=1000)
    client = login(alice)

    response = claim(client, packet)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"packet", "amount", "claimed_at"}
    assert body["packet"] == str(packet.id)
    share = Share.objects.get(packet=packet, claimed_by=alice)
    assert body["amount"] == share.amount
    assert 1 <= body["amount"] <= 1000 - 2
    assert parse_time(body["claimed_at"]) == share.claimed_at
    assert balance(alice) == body["amount"]
    assert escrow_held() == 1000 - body["amount"]


def test_a_claim_appears_in_the_claimers_history(members, send):
    alice = members[0]
    packet = send(total_amount=1000)
    client = login(alice)

    response = claim(client, packet)

    history = client.get("/api/v1/wallet/transactions").json()["results"]
    assert [entry["kind"] for entry in history] == ["packet_claim"]
    assert history[0]["amount"] == response.json()["amount"]
    assert history[0]["balance_after"] == response.json()["amount"]
    assert history[0]["packet"] == str(packet.id)


def test_claiming_again_returns_the_first_claim_and_pays_nothing_more(members, send):
    alice = members[0]
    packet = send(total_amount=1000)
    client = login(alice)
    first = claim(client, packet)

    second = claim(client, packet)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert balance(alice) == first.json()["amount"]
    assert Share.objects.filter(packet=packet, claimed_by__isnull=False).count() == 1
    assert LedgerEntry.objects.filter(account__user=alice, transaction__kind="packet_claim").count() == 1


def test_the_sender_may_claim_their_own_packet(sender, send):
    packet = send(total_amount=1000)

    response = claim(login(sender), packet)

    assert response.status_code == 201
    assert balance(sender) == 100_000 - 1000 + response.json()["amount"]


def test_a_non_member_cannot_claim_and_is_paid_nothing(send):
    outsider = UserFactory()
    packet = send(total_amount=1000)

    response = claim(login(outsider), packet)

    assert_error(response, 404, "not_found")
    assert balance(outsider) == 0
    assert escrow_held() == 1000
    assert not Share.objects.filter(claimed_by__isnull=False).exists()


def test_claiming_an_unknown_packet_is_not_found(members):
    response = login(members[0]).post(f"/api/v1/packets/{uuid.uuid4()}/claim")

    assert_error(response, 404, "not_found")


def test_claiming_needs_authentication(api, send):
    packet = send(total_amount=1000)

    response = claim(api, packet)

    assert_error(response, 401, "not_authenticated")
    assert escrow_held() == 1000


def test_an_exclusive_packet_refuses_other_members(members, send):
    alice, bob = members[0], members[1]
    packet = send(share_count=1, total_amount=888, recipient=alice)

    response = claim(login(bob), packet)

    assert_error(response, 403, "not_recipient")
    assert balance(bob) == 0
    assert escrow_held() == 888


def test_an_exclusive_packet_refuses_even_its_sender(sender, members, send):
    packet = send(share_count=1, total_amount=888, recipient=members[0])

    response = claim(login(sender), packet)

    assert_error(response, 403, "not_recipient")
    assert balance(sender) == 100_000 - 888


def test_the_recipient_claims_the_whole_exclusive_packet(members, send):
    alice, bob = members[0], members[1]
    packet = send(share_count=1, total_amount=888, recipient=alice)
    claim(login(bob), packet)

    response = claim(login(alice), packet)

    assert response.status_code == 201
    assert response.json()["amount"] == 888
    assert balance(alice) == 888
    assert escrow_held() == 0
    assert view(login(alice), packet)["status"] == "finished"


def test_a_claim_after_every_share_is_taken_is_refused(members, send):
    alice, bob, carol = members
    packet = send(share_count=2, total_amount=1000)
    first, second = claim(login(alice), packet), claim(login(bob), packet)

    response = claim(login(carol), packet)

    assert first.status_code == second.status_code == 201
    assert_error(response, 409, "packet_exhausted")
    assert balance(carol) == 0
    assert balance(alice) + balance(bob) == 1000
    assert escrow_held() == 0


def test_a_claimer_of_an_exhausted_packet_still_gets_their_own_claim_back(members, send):
    alice, bob = members[0], members[1]
    packet = send(share_count=2, total_amount=1000)
    first = claim(login(alice), packet)
    claim(login(bob), packet)

    again = claim(login(alice), packet)

    assert again.status_code == 200
    assert again.json() == first.json()


def test_fixed_packet_claims_pay_the_share_amount(sender, members, send):
    packet = send(kind="fixed", share_count=3, share_amount=250)

    responses = [claim(login(member), packet) for member in members]

    assert [r.status_code for r in responses] == [201, 201, 201]
    assert [r.json()["amount"] for r in responses] == [250, 250, 250]
    assert [balance(member) for member in members] == [250, 250, 250]
    assert escrow_held() == 0


def test_claims_of_a_random_packet_add_up_to_its_total(members, send, sender):
    packet = send(share_count=4, total_amount=997)
    claimers = [*members, sender]

    amounts = [claim(login(user), packet).json()["amount"] for user in claimers]

    assert sum(amounts) == 997
    assert all(a >= 1 for a in amounts)
    assert sum(balance(u) for u in members) + balance(sender) == 100_000
    assert escrow_held() == 0


# --- expiry ----------------------------------------------------------------------------------------------


def test_a_claim_at_the_expiry_time_is_refused(members, send, clock):
    alice = members[0]
    packet = send(total_amount=1000)
    clock.set(packet.expires_at)

    response = claim(login(alice), packet)

    assert_error(response, 410, "packet_expired")
    assert balance(alice) == 0
    assert escrow_held() == 1000


def test_a_claim_just_before_the_expiry_time_is_paid(members, send, clock):
    alice = members[0]
    packet = send(total_amount=1000)
    clock.set(packet.expires_at - timedelta(microseconds=1))

    response = claim(login(alice), packet)

    assert response.status_code == 201
    assert balance(alice) == response.json()["amount"]


def test_a_claim_after_a_short_ttl_has_passed_is_refused(settings, members, send, clock):
    settings.REDPACKET_TTL_SECONDS = 1
    alice = members[0]
    packet = send(total_amount=1000)
    clock.set(clock.now + timedelta(seconds=1))

    response = claim(login(alice), packet)

    assert_error(response, 410, "packet_expired")
    assert balance(alice) == 0


def test_a_claimer_still_sees_their_claim_after_expiry(members, send, clock):
    alice = members[0]
    packet = send(total_amount=1000)
    first = claim(login(alice), packet)
    clock.set(packet.expires_at + timedelta(hours=1))

    again = claim(login(alice), packet)

    assert again.status_code == 200
    assert again.json() == first.json()


def test_an_expired_packet_is_refunded_once_and_the_view_shows_it(sender, members, send, fixed_split, clock):
    alice, bob, _ = members
    fixed_split([123, 456, 421])
    packet = send(share_count=3, total_amount=1000)
    claim(login(alice), packet)
    clock.set(packet.expires_at + timedelta(seconds=1))

    refunded = services.packet_refund_expired(packet_id=packet.id)
    again = services.packet_refund_expired(packet_id=packet.id)

    assert refunded == 1000 - 123
    assert again is None
    body = view(login(sender), packet)
    assert body["status"] == "expired"
    assert body["claimed_count"] == 1
    assert body["claimed_amount"] == 123
    assert body["refunded_amount"] == 1000 - 123
    assert body["remaining_amount"] == 0
    refunds = LedgerEntry.objects.filter(account__user=sender, transaction__kind="packet_refund")
    assert [entry.amount for entry in refunds] == [1000 - 123]
    assert str(refunds[0].transaction.packet_id) == str(packet.id)
    assert balance(sender) == 100_000 - 123
    assert balance(alice) == 123
    assert escrow_held() == 0
    assert_error(claim(login(bob), packet), 410, "packet_expired")
    assert balance(bob) == 0
    call_command("reconcile")


def test_the_refund_appears_in_the_senders_history(sender, members, send, clock):
    packet = send(share_count=3, total_amount=1000)
    clock.set(packet.expires_at)

    services.packet_refund_expired(packet_id=packet.id)

    history = login(sender).get("/api/v1/wallet/transactions").json()["results"]
    assert history[0]["kind"] == "packet_refund"
    assert history[0]["amount"] == 1000
    assert history[0]["packet"] == str(packet.id)
    assert [entry["kind"] for entry in history].count("packet_refund") == 1
    assert balance(sender) == 100_000


def test_a_packet_is_not_refunded_before_it_expires(sender, send):
    packet = send(total_amount=1000)

    refunded = services.packet_refund_expired(packet_id=packet.id)

    assert refunded is None
    assert balance(sender) == 100_000 - 1000
    assert escrow_held() == 1000
    assert view(login(sender), packet)["status"] == "active"


def test_a_finished_packet_stays_finished_after_its_expiry_and_refunds_nothing(sender, members, send, clock):
    packet = send(share_count=2, total_amount=1000)
    claim(login(members[0]), packet)
    claim(login(members[1]), packet)
    clock.set(packet.expires_at + timedelta(seconds=1))

    services.packet_refund_expired(packet_id=packet.id)

    body = view(login(sender), packet)
    assert body["status"] == "finished"
    assert body["refunded_amount"] == 0
    assert body["remaining_amount"] == 0
    assert not LedgerEntry.objects.filter(transaction__kind="packet_refund").exists()
    assert balance(sender) == 100_000 - 1000
    call_command("reconcile")


def test_a_packet_past_expiry_shows_expiring_with_its_remainder_on_the_way_back_until_the_refund(
    sender, members, send, clock
):
    packet = send(total_amount=1000)
    paid = claim(login(members[0]), packet).json()["amount"]
    clock.set(packet.expires_at)

    body = view(login(sender), packet)

    assert body["status"] == "expiring"
    assert body["remaining_amount"] == 1000 - paid
    assert body["refunded_amount"] == 0
    assert body["finished_at"] == view(login(sender), packet)["expires_at"]
    assert body["proof"] is None
    assert [c["share_index"] for c in body["claims"]] == [None]
    assert_error(claim(login(members[1]), packet), 410, "packet_expired")

    services.packet_refund_expired(packet_id=packet.id)

    body = view(login(sender), packet)
    assert body["status"] == "expired"
    assert body["remaining_amount"] == 0
    assert body["refunded_amount"] == 1000 - paid


# --- the packet view ----------------------------------------------------------------------------------------


def test_the_view_counts_claims_and_what_remains(members, send, fixed_split):
    alice = members[0]
    fixed_split([111, 222, 667])
    packet = send(share_count=3, total_amount=1000)
    claim(login(alice), packet)

    body = view(login(alice), packet)

    assert body["status"] == "active"
    assert body["claimed_count"] == 1
    assert body["claimed_amount"] == 111
    assert body["remaining_amount"] == 889
    assert body["refunded_amount"] == 0
    assert body["finished_at"] is None
    assert [(c["user"], c["amount"], c["best_luck"]) for c in body["claims"]] == [(alice.username, 111, False)]


def test_the_view_never_reveals_unclaimed_share_amounts(members, send, fixed_split):
    alice, bob, _ = members
    fixed_split([111, 222, 667])
    packet = send(share_count=3, total_amount=1000)
    claim(login(alice), packet)

    bodies = [view(login(user), packet) for user in (alice, bob)]
    listed = login(bob).get(f"/api/v1/groups/{packet.group_id}/packets").json()["results"]

    for body in [*bodies, *listed]:
        numbers = integers_in(body)
        assert 222 not in numbers
        assert 667 not in numbers


def test_my_claim_is_the_callers_own_claim_or_null(sender, members, send):
    alice, bob, _ = members
    packet = send(share_count=3, total_amount=1000)
    alices_claim = claim(login(alice), packet).json()
    bobs_claim = claim(login(bob), packet).json()

    seen_by_alice, seen_by_bob, seen_by_sender = (view(login(u), packet) for u in (alice, bob, sender))

    assert seen_by_alice["my_claim"]["amount"] == alices_claim["amount"]
    assert parse_time(seen_by_alice["my_claim"]["claimed_at"]) == parse_time(alices_claim["claimed_at"])
    assert seen_by_bob["my_claim"]["amount"] == bobs_claim["amount"]
    assert seen_by_sender["my_claim"] is None


def test_the_view_lists_claims_in_claim_order(members, send):
    alice, bob, carol = members
    packet = send(share_count=3, total_amount=1000)
    responses = [claim(login(user), packet).json() for user in (carol, alice, bob)]

    body = view(login(alice), packet)

    assert [c["user"] for c in body["claims"]] == [carol.username, alice.username, bob.username]
    assert [c["amount"] for c in body["claims"]] == [r["amount"] for r in responses]


def test_a_packet_finishes_when_every_share_is_claimed(sender, members, send):
    packet = send(share_count=3, total_amount=1000)
    responses = []
    for user in members[:2]:
        responses.append(claim(login(user), packet).json())
    before_last = view(login(sender), packet)
    responses.append(claim(login(members[2]), packet).json())

    body = view(login(sender), packet)

    assert before_last["status"] == "active"
    assert before_last["finished_at"] is None
    assert body["status"] == "finished"
    assert body["claimed_count"] == 3
    assert body["claimed_amount"] == 1000
    assert body["remaining_amount"] == 0
    assert body["refunded_amount"] == 0
    assert parse_time(body["finished_at"]) == parse_time(responses[-1]["claimed_at"])


def test_best_luck_marks_exactly_the_largest_claim_of_a_finished_random_packet(members, send):
    packet = send(share_count=3, total_amount=1000)
    for user in members:
        claim(login(user), packet)

    claims = view(login(members[0]), packet)["claims"]

    assert [c["best_luck"] for c in claims].count(True) == 1
    best = next(c for c in claims if c["best_luck"])
    largest = max(c["amount"] for c in claims)
    assert best["amount"] == largest
    assert best == next(c for c in claims if c["amount"] == largest)


def test_best_luck_goes_to_the_earliest_of_equal_largest_claims(members, send, fixed_split):
    alice, bob, carol = members
    fixed_split([300, 350, 350])
    packet = send(share_count=3, total_amount=1000)
    for user in (alice, bob, carol):
        claim(login(user), packet)

    claims = view(login(alice), packet)["claims"]

    assert [(c["user"], c["amount"], c["best_luck"]) for c in claims] == [
        (alice.username, 300, False),
        (bob.username, 350, True),
        (carol.username, 350, False),
    ]


def test_best_luck_is_false_on_an_unfinished_random_packet(members, send, fixed_split):
    fixed_split([600, 300, 100])
    packet = send(share_count=3, total_amount=1000)
    claim(login(members[0]), packet)
    claim(login(members[1]), packet)

    claims = view(login(members[0]), packet)["claims"]

    assert [(c["amount"], c["best_luck"]) for c in claims] == [(600, False), (300, False)]


def test_best_luck_is_false_on_an_expired_random_packet(members, send, fixed_split, clock):
    fixed_split([600, 300, 100])
    packet = send(share_count=3, total_amount=1000)
    claim(login(members[0]), packet)
    clock.set(packet.expires_at)
    services.packet_refund_expired(packet_id=packet.id)

    claims = view(login(members[0]), packet)["claims"]

    assert [(c["amount"], c["best_luck"]) for c in claims] == [(600, False)]


def test_best_luck_is_false_everywhere_on_a_fixed_packet(members, send):
    packet = send(kind="fixed", share_count=3, share_amount=250)
    for user in members:
        claim(login(user), packet)

    body = view(login(members[0]), packet)

    assert body["status"] == "finished"
    assert [c["best_luck"] for c in body["claims"]] == [False, False, False]


def test_best_luck_is_true_on_the_only_claim_of_a_finished_exclusive_random_packet(members, send):
    alice = members[0]
    packet = send(share_count=1, total_amount=500, recipient=alice)
    claim(login(alice), packet)

    claims = view(login(alice), packet)["claims"]

    assert [(c["user"], c["amount"], c["best_luck"]) for c in claims] == [(alice.username, 500, True)]


def test_a_non_member_cannot_view_the_packet(send):
    packet = send(total_amount=1000)

    response = login(UserFactory()).get(f"/api/v1/packets/{packet.id}")

    assert_error(response, 404, "not_found")


def test_money_reconciles_after_claims_and_refunds(sender, members, send, clock):
    finished = send(kind="fixed", share_count=2, share_amount=100)
    partial = send(share_count=3, total_amount=900)
    for user in members[:2]:
        claim(login(user), finished)
    claim(login(members[2]), partial)
    clock.set(partial.expires_at)

    services.packet_refund_expired(packet_id=partial.id)
    services.packet_refund_expired(packet_id=finished.id)

    call_command("reconcile")
    assert sum(balance(u) for u in [sender, *members]) == 100_000
    assert escrow_held() == 0
