"""Passphrase packets through the API: only a keyed hash is kept, answers compare
after NFKC + case folding + trimming, wrong ones pay nothing, and the 5th wrong
try locks that member out of that packet, counted in the database."""

import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from config.errors import PassphraseLocked, WrongPassphrase
from redpackets import passphrases, services
from redpackets.models import Packet, PassphraseAttempt, Share
from tests.assertions import assert_error
from tests.concurrency import run_concurrently
from tests.factories import PIN, UserFactory, group_with_members, login
from wallets.models import Account, AccountKind, IdempotencyRecord

pytestmark = [pytest.mark.django_db(transaction=True)]

PASSPHRASE = "Straße of the Red Dragon"
HINT = "Where did we eat on New Year's Eve?"


@pytest.fixture
def sender():
    return UserFactory(balance=100_000)


@pytest.fixture
def members():
    return [UserFactory(pin=None) for _ in range(3)]


@pytest.fixture
def group(sender, members):
    return group_with_members(sender, members)


def send_body(group, **extra):
    return {"group": str(group.id), "kind": "random", "share_count": 3, "total_amount": 3000, "pin": PIN, **extra}


@pytest.fixture
def packet_id(sender, group):
    response = login(sender).post("/api/v1/packets", send_body(group, passphrase=PASSPHRASE, hint=HINT), format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def claim(user, packet_id, passphrase=None):
    body = {} if passphrase is None else {"passphrase": passphrase}
    return login(user).post(f"/api/v1/packets/{packet_id}/claim", body, format="json")


def balance(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def wrong_tries(user, packet_id) -> int:
    attempt = PassphraseAttempt.objects.filter(user=user, packet_id=packet_id).first()
    return attempt.wrong_tries if attempt else 0


# --- sending ------------------------------------------------------------------------------------------


def test_a_passphrase_packet_shows_that_it_has_one_and_its_hint_never_the_passphrase(sender, members, packet_id):
    body = login(members[0]).get(f"/api/v1/packets/{packet_id}").json()

    assert body["has_passphrase"] is True
    assert body["hint"] == HINT
    assert PASSPHRASE.lower() not in str(body).lower()
    packet = Packet.objects.get(id=packet_id)
    assert bytes(packet.passphrase_hmac) == passphrases.passphrase_hmac(PASSPHRASE)
    assert len(bytes(packet.passphrase_hmac)) == 32
    stored = " ".join(str(v) for v in Packet.objects.filter(id=packet_id).values().first().values())
    assert "dragon" not in stored.lower()


def test_a_packet_without_a_passphrase_shows_none_and_an_empty_hint(sender, group):
    body = login(sender).post("/api/v1/packets", send_body(group), format="json").json()

    assert body["has_passphrase"] is False
    assert body["hint"] == ""


def test_the_idempotency_record_of_a_send_holds_no_passphrase(sender, group):
    client = login(sender)

    first = client.post("/api/v1/packets", send_body(group, passphrase="open sesame"), format="json",
                        HTTP_IDEMPOTENCY_KEY="k1")
    again = client.post("/api/v1/packets", send_body(group, passphrase="open sesame"), format="json",
                        HTTP_IDEMPOTENCY_KEY="k1")

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert "sesame" not in str(list(IdempotencyRecord.objects.values()))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"passphrase": ""}, "passphrase"),
        ({"passphrase": "   \t "}, "passphrase"),
        ({"passphrase": "x" * 33}, "passphrase"),
        ({"passphrase": 1234}, "passphrase"),
        ({"passphrase": "ok", "hint": "h" * 101}, "hint"),
        ({"hint": "a hint without a passphrase"}, "hint"),
    ],
)
def test_a_bad_passphrase_or_hint_is_refused_and_moves_nothing(sender, group, extra, field):
    response = login(sender).post("/api/v1/packets", send_body(group, **extra), format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert balance(sender) == 100_000


def test_a_passphrase_of_32_characters_inside_surrounding_blanks_is_taken(sender, members, group):
    passphrase = "  " + "p" * 32 + "\n "
    response = login(sender).post("/api/v1/packets", send_body(group, passphrase=passphrase), format="json")

    assert response.status_code == 201, response.content
    assert claim(members[0], response.json()["id"], "P" * 32).status_code == 201


# --- claiming -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [PASSPHRASE, "  straße of the red dragon ", "STRASSE OF THE RED DRAGON", "Ｓｔｒａｓｓｅ ｏｆ ｔｈｅ ｒｅｄ ｄｒａｇｏｎ\u3000"],
)
def test_the_right_passphrase_claims_after_nfkc_case_folding_and_trimming(members, packet_id, answer):
    response = claim(members[0], packet_id, answer)

    assert response.status_code == 201, response.content
    assert balance(members[0]) == response.json()["amount"] > 0


@pytest.mark.parametrize("answer", [None, "", "  ", "Strasse of the Red Dragon!", "dragon"])
def test_a_missing_or_wrong_passphrase_is_refused_and_pays_nothing(members, packet_id, answer):
    response = claim(members[0], packet_id, answer)

    error = assert_error(response, 403, "wrong_passphrase")
    assert "dragon" not in error["message"].lower()
    assert balance(members[0]) == 0
    assert not Share.objects.filter(packet_id=packet_id, claimed_by=members[0]).exists()


def test_a_missing_passphrase_is_not_counted_as_a_try(members, packet_id):
    for _ in range(6):
        assert_error(claim(members[0], packet_id), 403, "wrong_passphrase")

    assert wrong_tries(members[0], packet_id) == 0
    assert claim(members[0], packet_id, PASSPHRASE).status_code == 201


def test_four_wrong_tries_leave_the_member_free_to_answer_right(members, packet_id):
    messages = [assert_error(claim(members[0], packet_id, f"guess {i}"), 403, "wrong_passphrase")["message"]
                for i in range(4)]

    assert messages[-1] == "The passphrase is wrong; 1 try left."
    assert claim(members[0], packet_id, PASSPHRASE).status_code == 201


def test_the_fifth_wrong_try_locks_the_member_out_of_that_packet_even_with_the_right_passphrase(
    sender, members, group, packet_id
):
    alice, bob, _ = members
    for i in range(4):
        assert_error(claim(alice, packet_id, f"guess {i}"), 403, "wrong_passphrase")

    fifth = assert_error(claim(alice, packet_id, "guess 5"), 403, "wrong_passphrase")

    assert "locked out" in fifth["message"]
    assert_error(claim(alice, packet_id, PASSPHRASE), 423, "passphrase_locked")
    assert_error(claim(alice, packet_id, "guess 6"), 423, "passphrase_locked")
    assert_error(claim(alice, packet_id), 423, "passphrase_locked")
    assert wrong_tries(alice, packet_id) == 5
    assert balance(alice) == 0
    # Only that member, only that packet.
    assert claim(bob, packet_id, PASSPHRASE).status_code == 201
    other = login(sender).post("/api/v1/packets", send_body(group, passphrase="other"), format="json").json()
    assert claim(alice, other["id"], "other").status_code == 201


def test_a_member_who_claimed_gets_the_first_claim_again_whatever_they_send(members, packet_id):
    first = claim(members[0], packet_id, PASSPHRASE)

    repeats = [claim(members[0], packet_id, answer) for answer in (None, "wrong", PASSPHRASE)]

    assert first.status_code == 201
    assert [r.status_code for r in repeats] == [200, 200, 200]
    assert all(r.json() == first.json() for r in repeats)
    assert wrong_tries(members[0], packet_id) == 0


def test_a_passphrase_sent_to_a_packet_without_one_is_ignored(sender, members, group):
    packet = login(sender).post("/api/v1/packets", send_body(group), format="json").json()

    assert claim(members[0], packet["id"], "anything").status_code == 201


def test_a_settled_passphrase_packet_answers_expired_before_asking_for_the_passphrase(sender, members, packet_id):
    services.packet_refund_expired(packet_id=packet_id, force=True)

    assert_error(claim(members[0], packet_id, "wrong"), 410, "packet_expired")
    assert wrong_tries(members[0], packet_id) == 0


@pytest.mark.postgres
def test_concurrent_wrong_tries_of_one_member_never_count_past_five(members, packet_id):
    alice = members[0]

    results, errors = run_concurrently(
        lambda i: services.packet_claim(packet_id=packet_id, user=alice, passphrase=f"guess {i}"),
        [(i,) for i in range(30)], threads=15,
    )

    assert results == [None] * 30
    assert sum(isinstance(e, WrongPassphrase) for e in errors) == 5
    assert sum(isinstance(e, PassphraseLocked) for e in errors) == 25
    assert wrong_tries(alice, packet_id) == 5
    assert_error(claim(alice, packet_id, PASSPHRASE), 423, "passphrase_locked")
    assert balance(alice) == 0


@pytest.mark.postgres
def test_concurrent_right_answers_each_claim_once(sender, group):
    crowd = [UserFactory(pin=None) for _ in range(12)]
    for user in crowd:
        group.memberships.create(user=user)
    packet = services.packet_send(sender=sender, group_id=group.id, kind="random", share_count=8, total_amount=8000,
                                  passphrase="lantern", hint="What do we light?")

    results, errors = run_concurrently(
        lambda user, answer: services.packet_claim(packet_id=packet.id, user=user, passphrase=answer),
        [(user, "LANTERN " if i % 2 else "lantern") for i, user in enumerate(crowd)], threads=12,
    )

    paid = [r for r in results if r is not None]
    assert len(paid) == 8 and sum(r.amount for r in paid) == 8000
    assert all(type(e).__name__ == "PacketExhausted" for e in errors if e is not None)


# --- the claim path of packets without a passphrase ------------------------------------------------


def claim_statements(user, packet_id, passphrase=None) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        services.packet_claim(packet_id=packet_id, user=user, passphrase=passphrase)
    return [q["sql"] for q in queries.captured_queries]


def test_a_claim_without_a_passphrase_is_still_one_read_then_one_transaction(sender, members, group, packet_id):
    plain = services.packet_send(sender=sender, group_id=group.id, kind="random", share_count=3, total_amount=900)

    plain_claim = claim_statements(members[0], plain.id)
    answered_claim = claim_statements(members[0], packet_id, PASSPHRASE)

    # The first statement is the one read; no other read happens before the transaction.
    assert plain_claim[0].lstrip().upper().startswith("SELECT")
    assert not plain_claim[1].lstrip().upper().startswith("SELECT")
    assert not any(PassphraseAttempt._meta.db_table in sql and "INSERT" in sql.upper() for sql in plain_claim)
    # A right passphrase costs no statement more.
    assert len(answered_claim) == len(plain_claim)


# --- never in the admin or the logs -----------------------------------------------------------------------


def test_the_passphrase_is_not_in_the_admin(admin_client, members, packet_id):
    claim(members[0], packet_id, "a wrong guess")

    pages = [
        admin_client.get(reverse("admin:redpackets_packet_change", args=[packet_id])),
        admin_client.get(reverse("admin:redpackets_packet_changelist")),
    ]

    hmac_hex = bytes(Packet.objects.get(id=packet_id).passphrase_hmac).hex()
    for page in pages:
        assert page.status_code == 200
        content = page.content.decode().lower()
        assert "dragon" not in content
        assert hmac_hex not in content
    assert HINT.replace("'", "&#x27;") in pages[0].content.decode()


def test_the_passphrase_is_not_in_any_log_line(sender, members, group, caplog):
    caplog.set_level(logging.DEBUG)

    response = login(sender).post("/api/v1/packets", send_body(group, passphrase="Secret Lantern"), format="json")
    claim(members[0], response.json()["id"], "wrong lantern")
    claim(members[0], response.json()["id"], "secret lantern")

    assert "lantern" not in caplog.text.lower()


def test_a_passphrase_packet_with_every_share_claimed_answers_exhausted_without_counting_a_try(
    sender, members, group
):
    response = login(sender).post(
        "/api/v1/packets", send_body(group, share_count=1, total_amount=100, passphrase="moon"), format="json"
    )
    packet_id = response.json()["id"]
    assert claim(members[0], packet_id, "moon").status_code == 201

    assert_error(claim(members[1], packet_id, "sun"), 409, "packet_exhausted")
    assert wrong_tries(members[1], packet_id) == 0
