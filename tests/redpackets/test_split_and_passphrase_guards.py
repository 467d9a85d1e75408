"""The database refuses a broken verifiable split or passphrase count even when the
services are bypassed (migrations 0004 and 0005)."""

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from redpackets import allocation, passphrases
from redpackets.models import Packet, PacketKind, PassphraseAttempt, Share
from redpackets.services import packet_send
from tests.factories import UserFactory, group_with_members
from wallets.ledger import ledger_post, system_account
from wallets.models import Account, SystemAccount, TransactionKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture
def sender():
    return UserFactory(balance=10_000)


@pytest.fixture
def member():
    return UserFactory(pin=None)


@pytest.fixture
def group(sender, member):
    return group_with_members(sender, [member])


def create_packet_bypassing_the_service(sender, group, *, kind=PacketKind.RANDOM, amounts=(60, 40), seqs=None,
                                        cap=20000, seed=b"\x01" * 32, passphrase_hmac=None, hint=""):
    """A funded packet with these share rows, written directly (one transaction)."""
    escrow = system_account(code=SystemAccount.ESCROW, currency="CNY")
    packet_id, now, total = uuid.uuid4(), timezone.now(), sum(amounts)
    with transaction.atomic():
        ledger_post(kind=TransactionKind.PACKET_SEND, wallet_legs={Account.objects.get(user=sender).id: -total},
                    system_legs={escrow.id: total}, packet_id=packet_id)
        packet = Packet.objects.create(
            id=packet_id, group=group, sender=sender, kind=kind, currency="CNY", total_amount=total,
            share_count=len(amounts), escrow_account=escrow, created_at=now, expires_at=now + timedelta(hours=1),
            split_seed=seed, share_cap=cap, passphrase_hmac=passphrase_hmac, hint=hint,
        )
        Share.objects.bulk_create([Share(packet=packet, seq=seq, amount=amount)
                                   for seq, amount in zip(seqs or range(len(amounts)), amounts, strict=True)])
    return packet


def test_the_bypass_helper_writes_a_packet_the_database_accepts(sender, group):
    assert create_packet_bypassing_the_service(sender, group).share_count == 2


@pytest.mark.parametrize("seed", [b"\x01" * 31, b"\x01" * 33, b""])
def test_database_refuses_a_split_seed_of_any_length_but_32_bytes(sender, group, seed):
    with pytest.raises(IntegrityError, match="packet_split_seed_length"):
        create_packet_bypassing_the_service(sender, group, seed=seed)


def test_database_refuses_a_random_packet_without_its_seed(sender, group):
    with pytest.raises(IntegrityError, match="packet_random_has_split_seed|packet_split_seed_with_cap"):
        create_packet_bypassing_the_service(sender, group, seed=None, cap=None)


def test_database_refuses_a_fixed_packet_with_a_seed(sender, group):
    with pytest.raises(IntegrityError, match="packet_fixed_has_no_split_seed"):
        create_packet_bypassing_the_service(sender, group, kind=PacketKind.FIXED, amounts=(50, 50))


def test_database_refuses_a_total_above_share_count_times_the_cap(sender, group):
    with pytest.raises(IntegrityError, match="packet_split_seed_with_cap_within_it"):
        create_packet_bypassing_the_service(sender, group, amounts=(60, 40), cap=49)


def test_database_refuses_a_share_above_the_cap(sender, group):
    with pytest.raises(IntegrityError, match="up to its cap 55"):
        create_packet_bypassing_the_service(sender, group, amounts=(60, 40), cap=55)


def test_database_refuses_shares_not_numbered_from_zero(sender, group):
    with pytest.raises(IntegrityError, match="numbered 1 to 2"):
        create_packet_bypassing_the_service(sender, group, seqs=[1, 2])


def test_database_refuses_a_passphrase_hash_of_the_wrong_length_and_a_hint_without_a_passphrase(sender, group):
    with pytest.raises(IntegrityError, match="packet_passphrase_hmac_length"):
        create_packet_bypassing_the_service(sender, group, passphrase_hmac=b"open sesame")
    with pytest.raises(IntegrityError, match="packet_hint_only_with_passphrase"):
        create_packet_bypassing_the_service(sender, group, hint="a clue")


def test_database_refuses_changing_a_packets_seed_or_passphrase(sender, group):
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=2, total_amount=100,
                         passphrase="moon")

    for change in ({"split_seed": b"\x02" * 32}, {"share_cap": 100}, {"passphrase_hmac": passphrases.passphrase_hmac("sun")},
                   {"hint": "new"}):
        with pytest.raises(IntegrityError, match="terms would change"), transaction.atomic():
            Packet.objects.filter(id=packet.id).update(**change)


@pytest.fixture
def passphrase_packet(sender, group):
    return packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=10,
                       passphrase="moon")


def test_database_refuses_more_than_five_wrong_tries(passphrase_packet, member):
    attempt = PassphraseAttempt.objects.create(packet=passphrase_packet, user=member, wrong_tries=1,
                                               last_tried_at=timezone.now())
    for _ in range(4):
        PassphraseAttempt.objects.filter(id=attempt.id).update(wrong_tries=attempt.wrong_tries + 1)
        attempt.refresh_from_db()

    with pytest.raises(IntegrityError, match="passphrase_attempt_wrong_tries_bounded"), transaction.atomic():
        PassphraseAttempt.objects.filter(id=attempt.id).update(wrong_tries=6)

    assert PassphraseAttempt.objects.get(id=attempt.id).wrong_tries == 5


def test_database_refuses_lowering_skipping_or_deleting_a_try_count(passphrase_packet, member):
    attempt = PassphraseAttempt.objects.create(packet=passphrase_packet, user=member, wrong_tries=1,
                                               last_tried_at=timezone.now())
    PassphraseAttempt.objects.filter(id=attempt.id).update(wrong_tries=2)

    for change in ({"wrong_tries": 1}, {"wrong_tries": 4}):
        with pytest.raises(IntegrityError, match="only up by one"), transaction.atomic():
            PassphraseAttempt.objects.filter(id=attempt.id).update(**change)
    with pytest.raises(IntegrityError, match="never deleted"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {PassphraseAttempt._meta.db_table} WHERE id = %s", [attempt.id])

    assert PassphraseAttempt.objects.get(id=attempt.id).wrong_tries == 2


def test_database_refuses_a_second_count_row_or_one_on_a_packet_without_a_passphrase(
    sender, group, passphrase_packet, member
):
    PassphraseAttempt.objects.create(packet=passphrase_packet, user=member, wrong_tries=1, last_tried_at=timezone.now())
    plain = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=10)

    with pytest.raises(IntegrityError, match="passphrase_attempt_one_row_per_member"), transaction.atomic():
        PassphraseAttempt.objects.create(packet=passphrase_packet, user=member, wrong_tries=1,
                                         last_tried_at=timezone.now())
    with pytest.raises(IntegrityError, match="has no passphrase"), transaction.atomic():
        PassphraseAttempt.objects.create(packet=plain, user=member, wrong_tries=1, last_tried_at=timezone.now())
    with pytest.raises(IntegrityError, match="a first count of 3"), transaction.atomic():
        PassphraseAttempt.objects.create(packet=passphrase_packet, user=sender, wrong_tries=3,
                                         last_tried_at=timezone.now())


def test_a_packet_from_the_service_matches_its_seed(sender, group):
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=2, total_amount=100)

    shares = list(packet.shares.order_by("seq").values_list("amount", flat=True))

    assert shares == allocation.split_random(total=100, share_count=2, cap=packet.share_cap,
                                             seed=bytes(packet.split_seed))
