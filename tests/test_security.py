"""Security checks through the API: what one user can learn about, or do to, another.

- No endpoint reveals another user's wallet, history or PIN state.
- Non-members cannot see or claim a group's packets, even with leaked ids: 404,
  the same answer as for an id that does not exist, and no amounts in the body.
- Fields the server owns (balance, sender, status, amount, claimed_count,
  refunded_amount, owner, ...) in a request body change nothing.
- The PIN lock holds against parallel requests.
- Revoked and expired tokens stop working.
- An exclusive packet pays its recipient only; a topup cannot be negative; an
  Idempotency-Key of one user never replays another user's response.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from config.errors import InvalidPin, PinLocked
from redpackets.models import ChatGroup, GroupMembership, Packet, Share
from redpackets.services import packet_claim, packet_send
from tests.assertions import assert_error, integers_in
from tests.concurrency import run_concurrently
from tests.factories import PIN, UserFactory, group_with_members
from wallets.models import Account, AccountKind, IdempotencyRecord, LedgerEntry, LedgerTransaction, PaymentPin
from wallets.services import pin_verify

# transaction=True: the payment PIN is checked in a transaction of its own, never nested in a test's.
pytestmark = [pytest.mark.django_db(transaction=True)]

WRONG_PIN = "999999"
ALICE_BALANCE = 777_001  # distinctive, so a leak of it anywhere shows


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    """Throttle counters live in the process-wide cache; no test inherits another's."""
    cache.clear()
    yield
    cache.clear()


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def token_of(user) -> str:
    return AuthToken.objects.create(user)[1]


def as_user(user) -> APIClient:
    return bearer(token_of(user))


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def body_of(response) -> dict:
    return json.loads(response.content) if response.content else {}


def send_body(group, **extra) -> dict:
    return {"group": str(group.id), "kind": "fixed", "share_count": 1, "share_amount": 100, "pin": PIN, **extra}


# --- another user's wallet, history and PIN ------------------------------------------------------------


def test_no_endpoint_reveals_another_users_wallet_history_or_pin_state():
    # Given alice with a distinctive balance, a packet, a history and a half-locked PIN
    alice = UserFactory(balance=ALICE_BALANCE + 1234)
    carol = UserFactory(balance=100)
    group = group_with_members(alice, [carol])
    packet = packet_send(sender=alice, group_id=group.id, kind="fixed", share_count=2, share_amount=617)
    packet_claim(packet_id=packet.id, user=carol)
    for _ in range(3):
        with pytest.raises(InvalidPin):
            pin_verify(user=alice, pin=WRONG_PIN)
    assert balance_of(alice) == ALICE_BALANCE  # 2 x 617 sent
    alice_wallet = Account.objects.get(user=alice, kind=AccountKind.WALLET)
    alice_transactions = set(
        LedgerEntry.objects.filter(account=alice_wallet).values_list("transaction_id", flat=True)
    )
    bob = UserFactory(balance=5_000)
    bob_api = as_user(bob)
    hints = f"user={alice.username}&username={alice.username}&user_id={alice.pk}&account={alice_wallet.pk}" \
            f"&wallet={alice_wallet.pk}&owner={alice.username}"

    # When bob reads every endpoint he can, with alice's identifiers as parameters
    responses = {
        path: bob_api.get(path)
        for path in [
            "/api/v1/wallet", f"/api/v1/wallet?{hints}",
            "/api/v1/wallet/transactions", f"/api/v1/wallet/transactions?{hints}",
            "/api/v1/groups", f"/api/v1/groups?{hints}",
            f"/api/v1/groups/{group.id}", f"/api/v1/groups/{group.id}/packets", f"/api/v1/packets/{packet.id}",
            f"/api/v1/wallet/{alice_wallet.pk}", f"/api/v1/users/{alice.pk}/wallet",
        ]
    }

    # Then he sees only his own wallet and history, and nothing of alice's
    for path in ("/api/v1/wallet", f"/api/v1/wallet?{hints}"):
        assert responses[path].status_code == 200
        assert responses[path].json() == {"balance": 5_000, "currency": "CNY"}  # no PIN state, no owner
    for path in ("/api/v1/wallet/transactions", f"/api/v1/wallet/transactions?{hints}"):
        entries = responses[path].json()["results"]
        assert [e["amount"] for e in entries] == [5_000]
        assert not {uuid.UUID(e["id"]) for e in entries} & alice_transactions
    for path in ("/api/v1/groups", f"/api/v1/groups?{hints}"):
        assert responses[path].json()["results"] == []
    for path in (f"/api/v1/groups/{group.id}", f"/api/v1/groups/{group.id}/packets", f"/api/v1/packets/{packet.id}",
                 f"/api/v1/wallet/{alice_wallet.pk}", f"/api/v1/users/{alice.pk}/wallet"):
        assert_error(responses[path], 404, "not_found")
    for path, response in responses.items():
        content = response.content.decode()
        assert alice.username not in content, path
        assert not {ALICE_BALANCE, ALICE_BALANCE + 1234, 617, 1234} & set(integers_in(body_of(response))), path
        assert "pin" not in content.lower() and "attempt" not in content.lower(), path

    # and his own PIN tries neither show nor touch alice's
    wrong = bob_api.put("/api/v1/wallet/pin", {"pin": "111111", "current_pin": WRONG_PIN}, format="json")
    assert_error(wrong, 403, "invalid_pin")
    assert "4 tries left" in wrong.json()["error"]["message"]  # his count: alice's 3 are not his
    assert PaymentPin.objects.get(user=alice).failed_attempts == 3


def test_a_locked_pin_of_one_user_neither_shows_to_nor_blocks_another():
    # Given alice's PIN locked by wrong tries
    alice, bob = UserFactory(balance=1_000), UserFactory(balance=1_000)
    group = group_with_members(alice, [bob])
    alice_api, bob_api = as_user(alice), as_user(bob)
    for _ in range(settings.PIN_MAX_FAILURES):
        alice_api.post("/api/v1/packets", send_body(group, pin=WRONG_PIN), format="json")
    assert_error(alice_api.post("/api/v1/packets", send_body(group), format="json"), 423, "pin_locked")

    # When bob uses the same group with his right PIN
    wallet = bob_api.get("/api/v1/wallet")
    sent = bob_api.post("/api/v1/packets", send_body(group), format="json")

    # Then bob is served as usual, and nothing in his answers mentions alice's lock
    assert wallet.json() == {"balance": 1_000, "currency": "CNY"}
    assert sent.status_code == 201, sent.content
    assert "lock" not in sent.content.decode().lower()
    assert balance_of(alice) == 1_000


# --- non-members and leaked ids ------------------------------------------------------------------------


@pytest.fixture
def private_group():
    """alice's group with carol, a random packet in it, half claimed; bob is an outsider."""
    alice, carol = UserFactory(balance=100_000), UserFactory()
    group = group_with_members(alice, [carol], name="Family")
    packet = packet_send(sender=alice, group_id=group.id, kind="random", share_count=2, total_amount=8_765,
                         greeting="secret greeting")
    claimed = packet_claim(packet_id=packet.id, user=carol).amount
    return alice, carol, group, packet, claimed


def test_a_non_member_cannot_see_or_claim_a_groups_packets_even_with_leaked_ids(private_group):
    alice, carol, group, packet, _ = private_group
    bob = UserFactory(balance=3_000)
    bob_api = as_user(bob)
    unknown = uuid.uuid4()
    probes = [
        ("get", "/api/v1/groups/{group}", None),
        ("get", "/api/v1/groups/{group}/packets", None),
        ("get", "/api/v1/packets/{packet}", None),
        ("post", "/api/v1/packets/{packet}/claim", None),
        ("post", "/api/v1/groups/{group}/members", {"username": "{bob}"}),
        ("post", "/api/v1/packets", {"group": "{group}", "kind": "fixed", "share_count": 1, "share_amount": 10,
                                     "pin": PIN}),
    ]

    def fire(method, template, body, group_id, packet_id):
        fill = {"group": group_id, "packet": packet_id, "bob": bob.username}
        path = template.format(**fill)
        data = {k: v.format(**fill) if isinstance(v, str) else v for k, v in (body or {}).items()}
        return getattr(bob_api, method)(path, data, format="json") if body else getattr(bob_api, method)(path)

    for method, template, body in probes:
        # When bob uses the leaked ids, and ids that do not exist
        leaked = fire(method, template, body, group.id, packet.id)
        guessed = fire(method, template, body, unknown, unknown)

        # Then both are the same 404, which gives away neither existence nor amounts
        assert_error(leaked, 404, "not_found")
        assert_error(guessed, 404, "not_found")
        assert leaked.json() == guessed.json(), template
        assert integers_in(leaked.json()) == [], template
        content = leaked.content.decode()
        assert not any(ch.isdigit() for ch in content), (template, content)  # no amount, no id
        for secret in (alice.username, carol.username, "Family", "secret greeting"):
            assert secret not in content, (template, secret)

    # and nothing changed: no claim, no membership, no money moved, no packet sent
    assert not Share.objects.filter(claimed_by=bob).exists()
    assert not GroupMembership.objects.filter(user=bob).exists()
    assert balance_of(bob) == 3_000
    assert not Packet.objects.filter(sender=bob).exists()
    assert Share.objects.filter(packet=packet, claimed_by__isnull=False).count() == 1


def test_a_non_member_cannot_make_a_packet_for_himself_through_the_recipient_field(private_group):
    alice, carol, group, packet, _ = private_group
    bob = UserFactory(balance=3_000)

    # alice cannot address an exclusive packet to an outsider either
    response = as_user(alice).post("/api/v1/packets", send_body(group, recipient=bob.username), format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["recipient"]
    assert Packet.objects.count() == 1
    assert balance_of(bob) == 3_000


# --- mass assignment -----------------------------------------------------------------------------------


def test_server_owned_fields_in_a_topup_body_change_nothing():
    alice, bob = UserFactory(balance=1_000), UserFactory(balance=2_000)

    response = as_user(alice).post("/api/v1/wallet/topups", {
        "amount": 100, "balance": 10**9, "owner": bob.username, "user": bob.username, "wallet": bob.pk,
        "currency": "USD", "kind": "adjustment", "id": str(uuid.uuid4()), "balance_after": 10**9,
    }, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["balance"] == 1_100
    assert balance_of(alice) == 1_100
    assert balance_of(bob) == 2_000
    topup = LedgerTransaction.objects.get(id=response.json()["id"])
    assert topup.kind == "topup"
    assert Account.objects.get(user=alice, kind=AccountKind.WALLET).currency == "CNY"


def test_server_owned_fields_in_a_packet_body_change_nothing():
    alice, bob, carol = UserFactory(balance=10_000), UserFactory(balance=2_000), UserFactory(balance=3_000)
    group = group_with_members(alice, [bob, carol])
    chosen_id = uuid.uuid4()
    past = (timezone.now() - timedelta(days=1)).isoformat()

    response = as_user(alice).post("/api/v1/packets", {
        "group": str(group.id), "kind": "fixed", "share_count": 2, "share_amount": 300, "pin": PIN,
        "id": str(chosen_id), "sender": bob.username, "owner": bob.username, "status": "finished",
        "claimed_count": 2, "claimed_amount": 600, "remaining_amount": 0, "refunded_amount": 600,
        "amount": 1, "balance": 10**9, "currency": "USD", "created_at": past, "expires_at": past,
        "finished_at": past, "settled_at": past, "claims": [{"user": carol.username, "amount": 600}],
        "my_claim": {"amount": 600}, "escrow_account": 1,
    }, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != str(chosen_id)
    assert (body["sender"], body["status"]) == (alice.username, "active")
    assert (body["claimed_count"], body["claimed_amount"]) == (0, 0)
    assert (body["remaining_amount"], body["refunded_amount"], body["total_amount"]) == (600, 0, 600)
    assert body["currency"] == "CNY" and body["claims"] == [] and body["my_claim"] is None
    packet = Packet.objects.get(id=body["id"])
    assert packet.sender == alice and packet.settled_at is None and packet.refunded_amount == 0
    assert packet.expires_at - packet.created_at == timedelta(seconds=settings.REDPACKET_TTL_SECONDS)
    assert not Packet.objects.filter(id=chosen_id).exists()
    assert not Share.objects.filter(packet=packet, claimed_by__isnull=False).exists()
    assert (balance_of(alice), balance_of(bob), balance_of(carol)) == (9_400, 2_000, 3_000)


def test_server_owned_fields_in_a_claim_body_change_nothing():
    alice, bob, carol = UserFactory(balance=10_000), UserFactory(), UserFactory()
    group = group_with_members(alice, [bob, carol])
    packet = packet_send(sender=alice, group_id=group.id, kind="fixed", share_count=2, share_amount=250)
    other = packet_send(sender=alice, group_id=group.id, kind="fixed", share_count=2, share_amount=400)

    response = as_user(bob).post(f"/api/v1/packets/{packet.id}/claim", {
        "amount": 10**6, "user": carol.username, "claimed_by": carol.pk, "packet": str(other.id),
        "share_count": 1, "status": "finished",
    }, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["amount"] == 250 and response.json()["packet"] == str(packet.id)
    assert balance_of(bob) == 250 and balance_of(carol) == 0
    assert Share.objects.get(packet=packet, claimed_by__isnull=False).claimed_by == bob
    assert not Share.objects.filter(packet=other, claimed_by__isnull=False).exists()


def test_server_owned_fields_in_group_bodies_change_nothing():
    alice, bob, carol, dave = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    alice_api = as_user(alice)
    chosen_id = uuid.uuid4()

    created = alice_api.post("/api/v1/groups", {
        "name": "Mine", "members": [bob.username], "owner": carol.username, "id": str(chosen_id),
        "created_at": "2000-01-01T00:00:00Z",
    }, format="json")
    group_id = created.json()["id"]
    added = alice_api.post(f"/api/v1/groups/{group_id}/members", {"username": dave.username, "owner": dave.username,
                                                                 "role": "owner"}, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["owner"] == alice.username and group_id != str(chosen_id)
    assert sorted(created.json()["members"]) == sorted([alice.username, bob.username])
    assert added.status_code == 201, added.content
    group = ChatGroup.objects.get(id=group_id)
    assert group.owner == alice and group.created_at.year > 2000
    assert_error(as_user(dave).post(f"/api/v1/groups/{group_id}/members", {"username": carol.username},
                                    format="json"), 403, "permission_denied")


def test_server_owned_fields_in_a_registration_change_nothing(api):
    response = api.post("/api/v1/auth/register", {
        "username": "mallory", "password": "a-long-passphrase-42", "is_staff": True, "is_superuser": True,
        "is_active": True, "balance": 10**6, "id": 1, "groups": [1], "user_permissions": [1],
    }, format="json")

    assert response.status_code == 201, response.content
    mallory = get_user_model().objects.get(username="mallory")
    assert not mallory.is_staff and not mallory.is_superuser
    assert not mallory.user_permissions.exists() and not mallory.groups.exists()
    assert balance_of(mallory) == 0


def test_pin_lock_state_in_a_pin_change_body_changes_nothing():
    alice = UserFactory()
    alice_api = as_user(alice)
    for _ in range(settings.PIN_MAX_FAILURES):
        alice_api.put("/api/v1/wallet/pin", {"pin": "111111", "current_pin": WRONG_PIN}, format="json")

    response = alice_api.put("/api/v1/wallet/pin", {
        "pin": "111111", "current_pin": PIN, "failed_attempts": 0, "locked_until": None, "first_failed_at": None,
    }, format="json")

    assert_error(response, 423, "pin_locked")
    record = PaymentPin.objects.get(user=alice)
    assert record.locked_until is not None and record.locked_until > timezone.now()


def test_a_pin_change_body_naming_another_user_changes_only_the_callers_pin():
    alice, bob = UserFactory(), UserFactory()
    bob_hash = PaymentPin.objects.get(user=bob).pin_hash

    response = as_user(alice).put("/api/v1/wallet/pin", {"pin": "111111", "current_pin": PIN, "user": bob.username,
                                                         "username": bob.username}, format="json")

    assert response.status_code == 204, response.content
    assert PaymentPin.objects.get(user=bob).pin_hash == bob_hash
    pin_verify(user=alice, pin="111111")


# --- the PIN lock under parallel requests ---------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("endpoint", ["send", "pin-change"])
def test_parallel_wrong_pins_through_the_api_lock_after_exactly_five_and_move_no_money(endpoint):
    # Given a user with money and a PIN, and 12 requests with a wrong PIN ready on 12 threads
    alice, bob = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(alice, [bob])
    token = token_of(alice)
    pin_hash = PaymentPin.objects.get(user=alice).pin_hash
    attempts = 12

    def attempt():
        client = bearer(token)
        if endpoint == "send":
            return client.post("/api/v1/packets", send_body(group, pin=WRONG_PIN), format="json")
        return client.put("/api/v1/wallet/pin", {"pin": "111111", "current_pin": WRONG_PIN}, format="json")

    # When they all go at once
    results, errors = run_concurrently(attempt, [()] * attempts)

    # Then exactly five are invalid_pin, the rest pin_locked, and nothing moved or changed
    assert errors == [None] * attempts
    codes = [body_of(r)["error"]["code"] for r in results]
    assert codes.count("invalid_pin") == settings.PIN_MAX_FAILURES, codes
    assert codes.count("pin_locked") == attempts - settings.PIN_MAX_FAILURES, codes
    for response, code in zip(results, codes):
        assert_error(response, 403 if code == "invalid_pin" else 423, code)
    assert balance_of(alice) == 10_000
    assert not Packet.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="packet_send").exists()
    # and even the right PIN is refused now
    assert_error(bearer(token).post("/api/v1/packets", send_body(group), format="json"), 423, "pin_locked")
    assert_error(bearer(token).put("/api/v1/wallet/pin", {"pin": "111111", "current_pin": PIN}, format="json"),
                 423, "pin_locked")
    assert PaymentPin.objects.get(user=alice).pin_hash == pin_hash
    with pytest.raises(PinLocked):
        pin_verify(user=alice, pin=PIN)


# --- tokens ----------------------------------------------------------------------------------------------


def every_kind_of_request(client: APIClient, group, packet) -> list:
    return [
        client.get("/api/v1/wallet"),
        client.get("/api/v1/wallet/transactions"),
        client.post("/api/v1/wallet/topups", {"amount": 100}, format="json"),
        client.put("/api/v1/wallet/pin", {"pin": "111111", "current_pin": PIN}, format="json"),
        client.post("/api/v1/packets", send_body(group), format="json"),
        client.get(f"/api/v1/packets/{packet.id}"),
        client.post(f"/api/v1/packets/{packet.id}/claim"),
        client.get(f"/api/v1/groups/{group.id}"),
        client.post("/api/v1/auth/logout"),
    ]


@pytest.fixture
def world():
    alice, bob = UserFactory(balance=5_000), UserFactory(balance=5_000)
    group = group_with_members(bob, [alice])
    packet = packet_send(sender=bob, group_id=group.id, kind="fixed", share_count=2, share_amount=100)
    return alice, bob, group, packet


def assert_refused_and_nothing_moved(responses, alice, packet):
    for response in responses:
        assert_error(response, 401, "not_authenticated")
    assert balance_of(alice) == 5_000
    assert not Share.objects.filter(packet=packet, claimed_by=alice).exists()
    assert not Packet.objects.filter(sender=alice).exists()
    pin_verify(user=alice, pin=PIN)  # the PIN was not changed


def test_a_logged_out_token_stops_working_everywhere(world):
    alice, _, group, packet = world
    token, other = token_of(alice), token_of(alice)

    assert bearer(token).post("/api/v1/auth/logout").status_code == 204

    assert_refused_and_nothing_moved(every_kind_of_request(bearer(token), group, packet), alice, packet)
    assert bearer(other).get("/api/v1/wallet").status_code == 200


def test_logout_all_stops_every_token_of_the_user_everywhere(world):
    alice, bob, group, packet = world
    tokens = [token_of(alice) for _ in range(3)]
    bob_token = token_of(bob)

    assert bearer(tokens[1]).post("/api/v1/auth/logout-all").status_code == 204

    for token in tokens:
        assert_refused_and_nothing_moved(every_kind_of_request(bearer(token), group, packet), alice, packet)
    assert bearer(bob_token).get("/api/v1/wallet").status_code == 200


def test_an_expired_token_is_refused_everywhere(world):
    alice, _, group, packet = world
    instance, token = AuthToken.objects.create(alice, expiry=timedelta(hours=1))
    AuthToken.objects.filter(pk=instance.pk).update(expiry=timezone.now() - timedelta(seconds=1))

    assert_refused_and_nothing_moved(every_kind_of_request(bearer(token), group, packet), alice, packet)


def test_a_token_of_a_deactivated_user_is_refused(world):
    alice, _, group, packet = world
    token = token_of(alice)
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)

    assert_refused_and_nothing_moved(every_kind_of_request(bearer(token), group, packet), alice, packet)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"), id="last-character-changed"),
        pytest.param(lambda t: t[:15], id="only-the-lookup-prefix"),
        pytest.param(lambda t: t + "0", id="one-character-more"),
        pytest.param(lambda t: t.upper(), id="upper-case"),
    ],
)
def test_a_forged_variant_of_a_real_token_is_refused(world, forge):
    alice, _, group, packet = world
    token = token_of(alice)

    assert_refused_and_nothing_moved(every_kind_of_request(bearer(forge(token)), group, packet), alice, packet)
    assert bearer(token).get("/api/v1/wallet").status_code == 200


# --- exclusive packets ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_exclusive_packet_pays_its_recipient_only_even_when_everyone_claims_at_once():
    # Given an exclusive packet for carol in a group of five
    alice = UserFactory(balance=10_000)
    carol, *others = [UserFactory() for _ in range(4)]
    group = group_with_members(alice, [carol, *others])
    packet = packet_send(sender=alice, group_id=group.id, kind="random", share_count=1, total_amount=4_321,
                         recipient_username=carol.username)
    claimers = [alice, *others, carol]
    tokens = {user.pk: token_of(user) for user in claimers}

    # When every member, the sender included, claims it at once
    results, errors = run_concurrently(
        lambda user: bearer(tokens[user.pk]).post(f"/api/v1/packets/{packet.id}/claim"), [(u,) for u in claimers]
    )

    # Then only carol is paid; the others get not_recipient without the amount
    assert errors == [None] * len(claimers)
    by_user = dict(zip([u.pk for u in claimers], results))
    assert by_user[carol.pk].status_code == 201 and by_user[carol.pk].json()["amount"] == 4_321
    for user in [alice, *others]:
        assert_error(by_user[user.pk], 403, "not_recipient")
        assert integers_in(by_user[user.pk].json()) == []
        assert balance_of(user) == (10_000 - 4_321 if user == alice else 0)
    assert balance_of(carol) == 4_321
    # and they are refused again afterwards, too
    assert_error(bearer(tokens[others[0].pk]).post(f"/api/v1/packets/{packet.id}/claim"), 403, "not_recipient")


# --- negative and malformed topups ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(-100, id="negative"),
        pytest.param(-10**12, id="very-negative"),
        pytest.param(0, id="zero"),
        pytest.param(-0.5, id="negative-fraction"),
        pytest.param(100.0, id="float"),
        pytest.param("-100", id="negative-string"),
        pytest.param("100", id="string"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="null"),
        pytest.param([-100], id="list"),
        pytest.param({"amount": -100}, id="object"),
        pytest.param(2**63, id="beyond-bigint"),
        pytest.param(-(2**63) - 1, id="below-bigint"),
        pytest.param("1e3", id="exponent-string"),
    ],
)
def test_a_topup_cannot_be_negative_or_malformed_and_moves_nothing(amount):
    alice, bob = UserFactory(balance=1_000), UserFactory(balance=1_000)

    response = as_user(alice).post("/api/v1/wallet/topups", {"amount": amount, "user": bob.username}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["amount"]
    assert balance_of(alice) == 1_000 and balance_of(bob) == 1_000
    assert LedgerTransaction.objects.filter(kind="topup").count() == 2  # the factories' own


@pytest.mark.parametrize(
    ("field", "value"),
    [("share_amount", -100), ("share_amount", 0), ("share_count", -1), ("share_count", 0)],
)
def test_a_packet_cannot_have_negative_amounts_to_pull_money_from_others(field, value):
    alice, bob = UserFactory(balance=1_000), UserFactory(balance=1_000)
    group = group_with_members(alice, [bob])

    response = as_user(alice).post("/api/v1/packets", send_body(group, **{field: value}), format="json")

    error = assert_error(response, 400, "validation_error")
    assert field in error["fields"]
    assert balance_of(alice) == balance_of(bob) == 1_000
    assert not Packet.objects.exists()


def test_a_random_packet_cannot_have_a_negative_total():
    alice, bob = UserFactory(balance=1_000), UserFactory(balance=1_000)
    group = group_with_members(alice, [bob])

    response = as_user(alice).post("/api/v1/packets", {"group": str(group.id), "kind": "random", "share_count": 2,
                                                       "total_amount": -500, "pin": PIN}, format="json")

    assert "total_amount" in assert_error(response, 400, "validation_error")["fields"]
    assert balance_of(alice) == balance_of(bob) == 1_000


# --- Idempotency-Key across users -----------------------------------------------------------------------


def test_another_users_idempotency_key_never_replays_their_topup():
    alice, bob = UserFactory(balance=1_000), UserFactory(balance=50)
    alice_api, bob_api = as_user(alice), as_user(bob)
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-42"}

    alices = alice_api.post("/api/v1/wallet/topups", {"amount": 300}, format="json", **headers)
    bobs = bob_api.post("/api/v1/wallet/topups", {"amount": 300}, format="json", **headers)
    replay = alice_api.post("/api/v1/wallet/topups", {"amount": 300}, format="json", **headers)

    assert alices.status_code == bobs.status_code == replay.status_code == 201
    assert bobs.json()["id"] != alices.json()["id"]
    assert bobs.json()["balance"] == 350  # bob's own balance, not alice's 1_300
    assert ALICE_BALANCE not in integers_in(bobs.json()) and 1_300 not in integers_in(bobs.json())
    assert replay.json() == alices.json()
    assert (balance_of(alice), balance_of(bob)) == (1_300, 350)


def test_another_users_idempotency_key_never_replays_their_packet():
    # Given alice's packet sent under a key, and bob in the same group with the same PIN
    alice, bob = UserFactory(balance=5_000), UserFactory(balance=5_000)
    group = group_with_members(alice, [bob])
    headers = {"HTTP_IDEMPOTENCY_KEY": "packet-1"}
    body = send_body(group, share_amount=700)
    alices = as_user(alice).post("/api/v1/packets", body, format="json", **headers)

    # When bob sends the byte-identical request under the same key
    bobs = as_user(bob).post("/api/v1/packets", body, format="json", **headers)

    # Then bob's request is his own send: his packet, his money, not alice's stored answer
    assert alices.status_code == bobs.status_code == 201
    assert bobs.json()["id"] != alices.json()["id"]
    assert bobs.json()["sender"] == bob.username
    assert (balance_of(alice), balance_of(bob)) == (4_300, 4_300)
    assert IdempotencyRecord.objects.filter(key="packet-1").count() == 2


@pytest.mark.postgres
def test_two_users_racing_with_one_idempotency_key_each_get_their_own_topup():
    users = [UserFactory() for _ in range(6)]
    tokens = {user.pk: token_of(user) for user in users}

    def topup(user, amount):
        return bearer(tokens[user.pk]).post("/api/v1/wallet/topups", {"amount": amount}, format="json",
                                            HTTP_IDEMPOTENCY_KEY="shared-key")

    results, errors = run_concurrently(topup, [(user, 100 + i) for i, user in enumerate(users)])

    assert errors == [None] * len(users)
    assert [r.status_code for r in results] == [201] * len(users)
    assert [r.json()["balance"] for r in results] == [100 + i for i in range(len(users))]
    assert len({r.json()["id"] for r in results}) == len(users)
    assert [balance_of(user) for user in users] == [100 + i for i in range(len(users))]


# --- hostile input: every endpoint, with and without a token ---------------------------------------------

BIG_BODY = json.dumps({"username": "a" * 3_000_000, "password": "b", "pin": PIN})
DEEP_JSON = "[" * 100_000 + "]" * 100_000
JUST_TOO_DEEP = '{"name": ' + "[" * 40 + "]" * 40 + "}"
HUGE_INTEGER = '{"amount": ' + "9" * 5_000 + ', "share_count": 1}'


@pytest.fixture
def every_operation():
    """(method, concrete path, takes a body) for every operation of the schema, and a maker of fresh clients with a
    token (a logout revokes the one it is called with)."""
    owner = UserFactory(balance=100_000)
    member = UserFactory()
    group = group_with_members(owner, [member])
    packet = packet_send(sender=owner, group_id=group.id, kind="fixed", share_count=2, share_amount=50)
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    operations = []
    for template, item in schema["paths"].items():
        concrete = template.replace("{group_id}", str(group.id)).replace("{packet_id}", str(packet.id))
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                operations.append((method, concrete, "requestBody" in item[method]))
    assert len(operations) >= 13
    return operations, lambda: as_user(owner)


def assert_clean_refusal(response, status: int | set, code: str | set | None = None) -> None:
    statuses = {status} if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    if response.status_code != 204:
        assert response["Content-Type"].startswith("application/json")
    if response.status_code >= 400:
        error = json.loads(response.content)["error"]
        assert set(error) == {"code", "message", "fields"}
        if code is not None:
            assert error["code"] in ({code} if isinstance(code, str) else code)


def hostile(client, method: str, path: str, body: str, content_type: str = "application/json"):
    client.raise_request_exception = False
    return client.generic(method.upper(), path, data=body, content_type=content_type)


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "with-token"])
def test_a_body_of_3_mb_is_413_payload_too_large_on_every_endpoint(every_operation, authenticated):
    operations, client = every_operation
    for method, path, _ in operations:
        response = hostile(client() if authenticated else APIClient(), method, path, BIG_BODY)

        assert_clean_refusal(response, 413, "payload_too_large")


def _parses_body(path: str, takes_body: bool, authenticated: bool) -> bool:
    public = path.endswith(("/auth/register", "/auth/token"))
    return takes_body and (authenticated or public)


@pytest.mark.parametrize("body", [DEEP_JSON, JUST_TOO_DEEP], ids=["100000-deep", "40-deep"])
@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "with-token"])
def test_json_nested_too_deep_is_400_validation_error_on_every_endpoint(every_operation, authenticated, body):
    operations, client = every_operation
    for method, path, takes_body in operations:
        response = hostile(client() if authenticated else APIClient(), method, path, body)

        if _parses_body(path, takes_body, authenticated):
            assert_clean_refusal(response, 400, "validation_error")
            assert "nested deeper than" in json.loads(response.content)["error"]["message"]
        else:  # refused before the body is read (401), or a GET that reads none
            assert_clean_refusal(response, {200, 201, 204, 401, 403, 405})


def _is_strict_json(body: str) -> bool:
    """Parses as JSON without NaN/Infinity literals and within Python's integer digit limit."""
    def refuse(constant):
        raise ValueError(constant)

    try:
        json.loads(body, parse_constant=refuse)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "body",
    [HUGE_INTEGER, '{"amount": 1e999999, "share_count": 1e400}', '{"amount": 99999999999999999999999999999999}',
     '{"amount": -99999999999999999999999999999999, "share_amount": 9223372036854775808}', "NaN", '{"amount": Infinity}'],
    ids=["5000-digits", "float-overflow", "beyond-int64", "negative-beyond-int64", "nan", "infinity"],
)
@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "with-token"])
def test_huge_and_non_finite_numbers_are_refused_cleanly_on_every_endpoint(every_operation, authenticated, body):
    operations, client = every_operation
    for method, path, takes_body in operations:
        response = hostile(client() if authenticated else APIClient(), method, path, body)

        if _parses_body(path, takes_body, authenticated) and path.endswith("/claim") and _is_strict_json(body):
            # The claim's body has no number: these are extra properties, which every operation ignores.
            assert_clean_refusal(response, {200, 201})
        elif _parses_body(path, takes_body, authenticated):
            assert_clean_refusal(response, {400, 403}, {"validation_error", "pin_not_set", "permission_denied"})
        else:
            assert_clean_refusal(response, {200, 201, 204, 401, 403, 405})


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
     "application/json; charset=bogus-8", "application/json; charset=utf-16", "application/json;;;=",
     "application/octet-stream", "*/*"],
)
@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "with-token"])
def test_odd_content_types_are_refused_cleanly_on_every_endpoint(every_operation, authenticated, content_type):
    operations, client = every_operation
    body = json.dumps({"username": f"newbie-{uuid.uuid4().hex[:6]}", "password": "x", "amount": 1})
    for method, path, takes_body in operations:
        response = hostile(client() if authenticated else APIClient(), method, path, body, content_type)

        if _parses_body(path, takes_body, authenticated):
            # refused as unreadable, or (a charset Python knows, parameters it ignores) read and judged
            assert_clean_refusal(response, {201, 400, 401, 403, 415}, {"validation_error", "unsupported_media_type",
                                                                       "pin_not_set", "permission_denied",
                                                                       "not_authenticated"})
        else:
            assert_clean_refusal(response, {200, 201, 204, 401, 403, 405})


def _raw_request(port: int, head: bytes, body_parts: list[bytes], pause: float) -> tuple[bytes, float]:
    """Sends the head, then each body part after `pause` seconds; the whole answer and when it came."""
    import socket
    import time

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for part in body_parts:
            time.sleep(pause)
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and len(answer.split(b"\r\n\r\n", 1)[1]) >= int(
                    answer.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]):
                break
    return answer, time.monotonic() - started


@pytest.mark.postgres
@pytest.mark.slow
def test_slow_bodies_hold_no_thread_for_long_and_a_slow_but_steady_one_still_succeeds(stack):
    # Given the web server as deployed (1 worker, 4 threads), a body read timeout of 1 s
    from concurrent.futures import ThreadPoolExecutor

    import requests

    stack.web(workers=1, WEB_THREADS="4", API_BODY_READ_TIMEOUT_SECONDS="1")
    body = json.dumps({"username": f"slow-{uuid.uuid4().hex[:6]}", "password": "Slow-but-steady-42"}).encode()
    head = (b"POST /api/v1/auth/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))

    # When 6 clients send the head and one byte of the body, then nothing (more than the threads), while a
    # seventh sends its whole body a few bytes at a time, 0.3 s apart
    with ThreadPoolExecutor(8) as pool:
        stalled = [pool.submit(_raw_request, stack.port, head, [body[:1]], 0.1) for _ in range(6)]
        steady = pool.submit(_raw_request, stack.port, head, [body[i:i + 8] for i in range(0, len(body), 8)], 0.3)
        stalled_answers = [f.result() for f in stalled]
        after = requests.get(stack.url("/healthz"), timeout=10)
        steady_answer, steady_took = steady.result()

    # Then each stalled client got a clean 400 about a second after its last byte, the server kept serving,
    # and the slow but steady client registered
    for answer, took in stalled_answers:
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"code":"validation_error"' in answer and b"stopped arriving" in answer
        assert took < 10
    assert after.status_code == 200
    assert steady_answer.startswith(b"HTTP/1.1 201"), steady_answer[:300]
    assert steady_took > 1  # longer in all than the read timeout: the timeout is per read, as nginx's
