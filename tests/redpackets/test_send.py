"""Sending packets over the API: the total leaves the wallet at once, or nothing moves."""

import uuid
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.test import override_settings

from redpackets.models import Packet, Share
from tests.assertions import assert_error, integers_in
from tests.factories import PIN, UserFactory, group_with_members, login
from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, PaymentPin

pytestmark = [pytest.mark.django_db(transaction=True)]

PACKET_FIELDS = {
    "id", "group", "sender", "kind", "greeting", "total_amount", "share_count", "claimed_count",
    "claimed_amount", "remaining_amount", "refunded_amount", "status", "created_at", "expires_at",
    "finished_at", "claims", "my_claim",
    # v1.1
    "commitment", "proof", "has_passphrase", "hint",
}




def balance(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def escrow_held() -> int:
    return LedgerEntry.objects.filter(account__kind=AccountKind.ESCROW).aggregate(s=Sum("amount"))["s"] or 0


def money_snapshot(*users):
    return {
        "balances": [balance(u) for u in users],
        "escrow": escrow_held(),
        "packets": Packet.objects.count(),
        "shares": Share.objects.count(),
        "transactions": LedgerTransaction.objects.count(),
    }


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def sender():
    return UserFactory(balance=100_000)


@pytest.fixture
def alice():
    return UserFactory()


@pytest.fixture
def bob():
    return UserFactory()


@pytest.fixture
def group(sender, alice, bob):
    return group_with_members(sender, [alice, bob])


@pytest.fixture
def sender_api(sender):
    return login(sender)


def random_body(group, /, **overrides):
    return {"group": str(group.id), "kind": "random", "share_count": 3, "total_amount": 1000, "pin": PIN,
            **overrides}


def fixed_body(group, /, **overrides):
    return {"group": str(group.id), "kind": "fixed", "share_count": 3, "share_amount": 250, "pin": PIN,
            **overrides}


# --- sending ----------------------------------------------------------------------------------


def test_sending_a_random_packet_moves_the_total_from_the_wallet_to_escrow(sender, group, sender_api):
    response = sender_api.post("/api/v1/packets", random_body(group, greeting="Happy new year"), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert PACKET_FIELDS <= set(body)
    assert body["group"] == str(group.id)
    assert body["sender"] == sender.username
    assert body["kind"] == "random"
    assert body["greeting"] == "Happy new year"
    assert body["total_amount"] == 1000
    assert body["share_count"] == 3
    assert body["claimed_count"] == 0
    assert body["claimed_amount"] == 0
    assert body["remaining_amount"] == 1000
    assert body["refunded_amount"] == 0
    assert body["status"] == "active"
    assert body["finished_at"] is None
    assert body["claims"] == []
    assert body["my_claim"] is None
    assert balance(sender) == 99_000
    assert escrow_held() == 1000
    packet = Packet.objects.get(id=body["id"])
    shares = list(packet.shares.values_list("amount", flat=True))
    assert len(shares) == 3 and sum(shares) == 1000 and min(shares) >= 1


def test_the_sent_packet_expires_after_the_configured_time(group, sender_api):
    with override_settings(REDPACKET_TTL_SECONDS=3600):
        response = sender_api.post("/api/v1/packets", random_body(group), format="json")

    assert response.status_code == 201
    body = response.json()
    created_at, expires_at = parse_time(body["created_at"]), parse_time(body["expires_at"])
    assert created_at.utcoffset() == timedelta(0)
    assert abs((expires_at - created_at) - timedelta(seconds=3600)) < timedelta(seconds=1)


def test_sending_a_packet_records_a_packet_send_entry_in_the_senders_history(sender, group, sender_api):
    response = sender_api.post("/api/v1/packets", random_body(group), format="json")

    history = sender_api.get("/api/v1/wallet/transactions").json()["results"]
    assert response.status_code == 201
    newest = history[0]
    assert newest["kind"] == "packet_send"
    assert newest["amount"] == -1000
    assert newest["balance_after"] == 99_000
    assert newest["packet"] == response.json()["id"]
    assert [entry["kind"] for entry in history].count("packet_send") == 1


def test_sending_a_fixed_packet_takes_share_amount_times_share_count(sender, group, sender_api):
    response = sender_api.post("/api/v1/packets", fixed_body(group), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "fixed"
    assert body["total_amount"] == 750
    assert body["share_count"] == 3
    assert body["remaining_amount"] == 750
    assert body["greeting"] == ""
    assert balance(sender) == 100_000 - 750
    assert escrow_held() == 750
    assert sorted(Share.objects.filter(packet_id=body["id"]).values_list("amount", flat=True)) == [250, 250, 250]
    entry = LedgerEntry.objects.get(account__user=sender, transaction__kind="packet_send")
    assert entry.amount == -750
    assert str(entry.transaction.packet_id) == body["id"]


def test_a_fixed_packet_may_state_its_matching_total(sender, group, sender_api):
    response = sender_api.post("/api/v1/packets", fixed_body(group, total_amount=750), format="json")

    assert response.status_code == 201
    assert response.json()["total_amount"] == 750
    assert balance(sender) == 100_000 - 750




def test_the_sent_packet_never_reveals_its_share_amounts(group, sender_api):
    response = sender_api.post("/api/v1/packets", random_body(group, total_amount=9973), format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) - PACKET_FIELDS <= {"recipient", "currency"}
    assert body["proof"] is None
    shares = Packet.objects.get(id=body["id"]).shares.values_list("amount", flat=True)
    public = {9973, 3, 0}  # total_amount, share_count, and the zero counters
    assert not [i for i in integers_in(body) if i in set(shares) - public]


def test_a_packet_that_uses_the_whole_balance_leaves_zero(group):
    poor = UserFactory(balance=300)
    group.memberships.create(user=poor)

    response = login(poor).post("/api/v1/packets", random_body(group, total_amount=300), format="json")

    assert response.status_code == 201
    assert balance(poor) == 0


def test_the_smallest_allowed_packets_are_accepted(sender, group, sender_api):
    random_ = sender_api.post("/api/v1/packets", random_body(group, share_count=3, total_amount=3), format="json")
    fixed = sender_api.post("/api/v1/packets", fixed_body(group, share_count=1, share_amount=1), format="json")

    assert random_.status_code == 201, random_.content
    assert fixed.status_code == 201, fixed.content
    assert sorted(Share.objects.filter(packet_id=random_.json()["id"]).values_list("amount", flat=True)) == [1, 1, 1]
    assert balance(sender) == 100_000 - 4
    assert escrow_held() == 4


def test_the_largest_allowed_packet_is_accepted(sender, alice, bob, group, sender_api):
    with override_settings(REDPACKET_MAX_SHARE=5000):
        response = sender_api.post("/api/v1/packets", random_body(group, total_amount=15_000), format="json")

    assert response.status_code == 201, response.content
    assert balance(sender) == 100_000 - 15_000
    assert sorted(Share.objects.values_list("amount", flat=True)) == [5000, 5000, 5000]


# --- exclusive packets -----------------------------------------------------------------------------


def test_an_exclusive_packet_goes_to_one_member(sender, alice, group, sender_api):
    response = sender_api.post(
        "/api/v1/packets", random_body(group, share_count=1, total_amount=888, recipient=alice.username),
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["share_count"] == 1
    assert body["total_amount"] == 888
    assert body["recipient"] == alice.username
    assert Packet.objects.get(id=body["id"]).recipient == alice
    assert balance(sender) == 100_000 - 888
    assert escrow_held() == 888


def test_an_exclusive_packet_must_have_one_share(sender, alice, bob, group, sender_api):
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post(
        "/api/v1/packets", random_body(group, share_count=2, recipient=alice.username), format="json"
    )

    assert_error(response, 400, "validation_error", fields=["share_count"])
    assert money_snapshot(sender, alice, bob) == before


def test_an_exclusive_packet_must_go_to_a_group_member(sender, alice, bob, group, sender_api):
    outsider = UserFactory()
    before = money_snapshot(sender, alice, bob)

    not_a_member = sender_api.post(
        "/api/v1/packets", random_body(group, share_count=1, recipient=outsider.username), format="json"
    )
    no_such_user = sender_api.post(
        "/api/v1/packets", random_body(group, share_count=1, recipient="nobody-here"), format="json"
    )

    assert_error(not_a_member, 400, "validation_error", fields=["recipient"])
    assert_error(no_such_user, 400, "validation_error", fields=["recipient"])
    assert money_snapshot(sender, alice, bob) == before


# --- validation: nothing moves ---------------------------------------------------------------------


INVALID_BODIES = [
    pytest.param({"share_count": 0}, "share_count", id="share_count-zero"),
    pytest.param({"share_count": -1}, "share_count", id="share_count-negative"),
    pytest.param({"share_count": 4}, "share_count", id="share_count-above-group-size"),
    pytest.param({"share_count": 3, "total_amount": 2}, "total_amount", id="total-below-share-count"),
    pytest.param({"total_amount": 0}, "total_amount", id="total-zero"),
    pytest.param({"total_amount": -100}, "total_amount", id="total-negative"),
    pytest.param({"share_count": 2, "total_amount": 2 * 20000 + 1}, "total_amount", id="total-above-cap"),
    pytest.param({"total_amount": 1000.0}, "total_amount", id="total-float-whole"),
    pytest.param({"total_amount": 1000.5}, "total_amount", id="total-float"),
    pytest.param({"total_amount": "1000"}, "total_amount", id="total-string"),
    pytest.param({"total_amount": True}, "total_amount", id="total-bool"),
    pytest.param({"share_count": 2.0}, "share_count", id="share_count-float"),
    pytest.param({"share_count": "2"}, "share_count", id="share_count-string"),
    pytest.param({"total_amount": None}, "total_amount", id="total-null"),
    pytest.param({"kind": "lucky"}, "kind", id="unknown-kind"),
    pytest.param({"share_amount": 100}, "share_amount", id="random-with-share_amount"),
    pytest.param({"group": "not-a-uuid"}, "group", id="group-not-a-uuid"),
    pytest.param({"total_amount": 10**30}, "total_amount", id="total-huge"),
    pytest.param({"share_count": 10**30}, "share_count", id="share_count-huge"),
    pytest.param({"greeting": "x" * 101}, "greeting", id="greeting-too-long"),
]


@pytest.mark.parametrize(("overrides", "field"), INVALID_BODIES)
def test_an_invalid_random_packet_is_refused_and_moves_nothing(sender, alice, bob, group, sender_api, overrides,
                                                               field):
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post("/api/v1/packets", random_body(group, **overrides), format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert money_snapshot(sender, alice, bob) == before


INVALID_FIXED_BODIES = [
    pytest.param({"share_amount": 0}, "share_amount", id="share_amount-zero"),
    pytest.param({"share_amount": 20001}, "share_amount", id="share_amount-above-cap"),
    pytest.param({"share_amount": 2.5}, "share_amount", id="share_amount-float"),
    pytest.param({"share_amount": 250.0}, "share_amount", id="share_amount-float-whole"),
    pytest.param({"share_amount": "250"}, "share_amount", id="share_amount-string"),
    pytest.param({"share_count": 4}, "share_count", id="share_count-above-group-size"),
    pytest.param({"total_amount": 751}, "total_amount", id="total-not-matching"),
]


@pytest.mark.parametrize(("overrides", "field"), INVALID_FIXED_BODIES)
def test_an_invalid_fixed_packet_is_refused_and_moves_nothing(sender, alice, bob, group, sender_api, overrides,
                                                              field):
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post("/api/v1/packets", fixed_body(group, **overrides), format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert money_snapshot(sender, alice, bob) == before


@pytest.mark.parametrize(
    ("body_of", "missing"),
    [
        pytest.param(random_body, "total_amount", id="random-without-total_amount"),
        pytest.param(fixed_body, "share_amount", id="fixed-without-share_amount"),
        pytest.param(random_body, "share_count", id="without-share_count"),
        pytest.param(random_body, "kind", id="without-kind"),
        pytest.param(random_body, "group", id="without-group"),
    ],
)
def test_a_packet_missing_a_required_field_is_refused(sender, alice, bob, group, sender_api, body_of, missing):
    body = body_of(group)
    del body[missing]
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post("/api/v1/packets", body, format="json")

    assert_error(response, 400, "validation_error", fields=[missing])
    assert money_snapshot(sender, alice, bob) == before


def test_share_count_is_capped_by_the_max_shares_setting(sender, group, sender_api):
    members = [UserFactory() for _ in range(3)]
    for member in members:
        group.memberships.create(user=member)
    before = money_snapshot(sender)

    with override_settings(REDPACKET_MAX_SHARES=5):
        too_many = sender_api.post("/api/v1/packets", random_body(group, share_count=6), format="json")
        at_the_limit = sender_api.post("/api/v1/packets", random_body(group, share_count=5), format="json")

    assert group.memberships.count() == 6
    assert_error(too_many, 400, "validation_error", fields=["share_count"])
    assert at_the_limit.status_code == 201, at_the_limit.content
    assert balance(sender) == before["balances"][0] - 1000
    assert Packet.objects.count() == 1


def test_share_amount_and_total_are_checked_against_the_max_share_setting(sender, alice, bob, group, sender_api):
    before = money_snapshot(sender, alice, bob)

    with override_settings(REDPACKET_MAX_SHARE=100):
        fixed = sender_api.post("/api/v1/packets", fixed_body(group, share_amount=101), format="json")
        random_ = sender_api.post("/api/v1/packets", random_body(group, total_amount=301), format="json")

    assert_error(fixed, 400, "validation_error", fields=["share_amount"])
    assert_error(random_, 400, "validation_error", fields=["total_amount"])
    assert money_snapshot(sender, alice, bob) == before


def test_a_body_that_is_not_json_is_refused(sender, alice, bob, sender_api):
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post("/api/v1/packets", "{not json", content_type="application/json")

    assert_error(response, 400, "validation_error")
    assert money_snapshot(sender, alice, bob) == before


# --- funds, PIN, membership ---------------------------------------------------------------------------


def test_sending_more_than_the_balance_is_refused_and_moves_nothing(alice, bob, group):
    poor = UserFactory(balance=300)
    group.memberships.create(user=poor)
    before = money_snapshot(poor, alice, bob)

    response = login(poor).post("/api/v1/packets", random_body(group, total_amount=1000), format="json")

    assert_error(response, 409, "insufficient_funds")
    assert money_snapshot(poor, alice, bob) == before
    assert balance(poor) == 300


def test_sending_a_fixed_packet_above_the_balance_is_refused(alice, bob, group):
    poor = UserFactory(balance=700)
    group.memberships.create(user=poor)

    response = login(poor).post("/api/v1/packets", fixed_body(group), format="json")

    assert_error(response, 409, "insufficient_funds")
    assert balance(poor) == 700
    assert not Packet.objects.exists()
    assert escrow_held() == 0


def test_sending_without_a_pin_set_is_refused(alice, bob, group):
    no_pin = UserFactory(balance=5000, pin=None)
    group.memberships.create(user=no_pin)
    before = money_snapshot(no_pin, alice, bob)

    response = login(no_pin).post("/api/v1/packets", random_body(group), format="json")

    assert_error(response, 403, "pin_not_set")
    assert money_snapshot(no_pin, alice, bob) == before


def test_sending_with_a_wrong_pin_is_refused_and_counted(sender, alice, bob, group, sender_api):
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post("/api/v1/packets", random_body(group, pin="135790"), format="json")

    assert_error(response, 403, "invalid_pin")
    assert money_snapshot(sender, alice, bob) == before
    assert PaymentPin.objects.get(user=sender).failed_attempts == 1


def test_a_locked_pin_refuses_even_the_right_pin(sender, alice, bob, group, sender_api, settings):
    before = money_snapshot(sender, alice, bob)
    wrong = [sender_api.post("/api/v1/packets", random_body(group, pin="135790"), format="json")
             for _ in range(settings.PIN_MAX_FAILURES)]

    response = sender_api.post("/api/v1/packets", random_body(group), format="json")

    assert all(r.json()["error"]["code"] == "invalid_pin" for r in wrong)
    assert_error(response, 423, "pin_locked")
    assert money_snapshot(sender, alice, bob) == before


def test_sending_without_the_pin_is_refused(sender, alice, bob, group, sender_api):
    body = random_body(group)
    del body["pin"]
    before = money_snapshot(sender, alice, bob)

    response = sender_api.post("/api/v1/packets", body, format="json")

    assert_error(response, 400, "validation_error", fields=["pin"])
    assert money_snapshot(sender, alice, bob) == before


def test_a_non_member_cannot_send_to_the_group(alice, bob, group):
    outsider = UserFactory(balance=5000)
    before = money_snapshot(outsider, alice, bob)

    response = login(outsider).post("/api/v1/packets", random_body(group), format="json")

    assert_error(response, 404, "not_found")
    assert money_snapshot(outsider, alice, bob) == before


def test_sending_to_an_unknown_group_is_not_found(sender, sender_api):
    response = sender_api.post("/api/v1/packets", {
        "group": str(uuid.uuid4()), "kind": "random", "share_count": 1, "total_amount": 100, "pin": PIN,
    }, format="json")

    assert_error(response, 404, "not_found")
    assert balance(sender) == 100_000


def test_sending_needs_authentication(api, sender, group):
    response = api.post("/api/v1/packets", random_body(group), format="json")

    assert_error(response, 401, "not_authenticated")
    assert balance(sender) == 100_000
    assert not Packet.objects.exists()


# --- idempotency --------------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_replays_the_packet_and_moves_money_once(sender, group, sender_api):
    body = random_body(group)

    first = sender_api.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="send-1")
    second = sender_api.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="send-1")

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json() == first.json()
    assert Packet.objects.count() == 1
    assert balance(sender) == 99_000
    assert escrow_held() == 1000
    assert LedgerEntry.objects.filter(account__user=sender, transaction__kind="packet_send").count() == 1


def test_an_idempotency_key_reused_with_a_different_body_is_refused(sender, alice, bob, group, sender_api):
    first = sender_api.post("/api/v1/packets", random_body(group), format="json", HTTP_IDEMPOTENCY_KEY="send-2")
    after_first = money_snapshot(sender, alice, bob)

    second = sender_api.post("/api/v1/packets", random_body(group, total_amount=2000), format="json",
                             HTTP_IDEMPOTENCY_KEY="send-2")

    assert first.status_code == 201
    assert_error(second, 409, "idempotency_conflict")
    assert money_snapshot(sender, alice, bob) == after_first
    assert balance(sender) == 99_000


def test_different_idempotency_keys_send_different_packets(sender, group, sender_api):
    body = random_body(group)

    first = sender_api.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="send-a")
    second = sender_api.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="send-b")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert balance(sender) == 98_000


def test_the_same_idempotency_key_from_another_user_is_their_own_request(sender, alice, group, sender_api):
    wallet_owner = UserFactory(balance=5000)
    group.memberships.create(user=wallet_owner)
    body = random_body(group)

    first = sender_api.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="shared-key")
    second = login(wallet_owner).post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="shared-key")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["sender"] == wallet_owner.username
    assert balance(sender) == 99_000
    assert balance(wallet_owner) == 4000


def test_a_refused_send_does_not_burn_its_idempotency_key(alice, bob, group):
    poor = UserFactory(balance=500)
    group.memberships.create(user=poor)
    client = login(poor)
    body = random_body(group, total_amount=1000)

    refused = client.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me")
    client.post("/api/v1/wallet/topups", {"amount": 1000}, format="json")
    retried = client.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me")

    assert_error(refused, 409, "insufficient_funds")
    assert retried.status_code == 201, retried.content
    assert balance(poor) == 500


def test_money_reconciles_after_sending(sender, group, sender_api):
    sender_api.post("/api/v1/packets", random_body(group), format="json")
    sender_api.post("/api/v1/packets", fixed_body(group), format="json")

    call_command("reconcile")

    assert balance(sender) == 100_000 - 1000 - 750
    assert escrow_held() == 1750


def test_a_sender_without_a_pin_is_told_to_set_one_whatever_the_body_says():
    # Given a member who never set a PIN
    no_pin = UserFactory(balance=1000, pin=None)
    group = group_with_members(no_pin, [UserFactory()])
    client = login(no_pin)

    # When they send with no pin field, and with an invalid body
    no_pin_field = client.post(
        "/api/v1/packets", {"group": str(group.id), "kind": "fixed", "share_count": 1, "share_amount": 10}, format="json"
    )
    invalid = client.post("/api/v1/packets", {"group": str(group.id), "kind": "nope"}, format="json")

    # Then both answers say to set a PIN first, and nothing moved
    assert_error(no_pin_field, 403, "pin_not_set")
    assert_error(invalid, 403, "pin_not_set")
    assert Account.objects.get(user=no_pin).balance == 1000
