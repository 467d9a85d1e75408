"""The database refuses packet money that does not match the ledger, even when
the services are bypassed: funding, claims and refunds."""

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from redpackets.models import Packet, PacketKind, Share
from redpackets.services import packet_send
from tests.factories import UserFactory, group_with_members
from wallets.ledger import ledger_post, system_account
from wallets.models import Account, SystemAccount, TransactionKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture
def sender():
    return UserFactory(balance=10_000)


@pytest.fixture
def members():
    return [UserFactory(pin=None) for _ in range(2)]


@pytest.fixture
def packet(sender, members):
    group = group_with_members(sender, members)
    return packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=300)


def wallet_id(user) -> int:
    return Account.objects.get(user=user).id


def test_database_refuses_a_packet_funded_with_less_than_its_total(sender, members):
    group = group_with_members(sender, members)
    escrow = system_account(code=SystemAccount.ESCROW, currency="CNY")
    packet_id, now = uuid.uuid4(), timezone.now()

    with pytest.raises(IntegrityError, match="is funded with 99"), transaction.atomic():
        ledger_post(kind=TransactionKind.PACKET_SEND, wallet_legs={wallet_id(sender): -99},
                    system_legs={escrow.id: 99}, packet_id=packet_id)
        created = Packet.objects.create(
            id=packet_id, group=group, sender=sender, kind=PacketKind.FIXED, currency="CNY", total_amount=100,
            share_count=1, escrow_account=escrow, created_at=now, expires_at=now + timedelta(hours=1),
        )
        Share.objects.create(packet=created, seq=0, amount=100)

    assert Account.objects.get(user=sender).balance == 10_000


def claim_bypassing_the_service(packet, claimer, *, paid_to, amount_paid):
    share = Share.objects.filter(packet=packet, claimed_by__isnull=True).order_by("seq").first()
    tx_id = uuid.uuid4()
    Share.objects.filter(id=share.id).update(claimed_by=claimer, claimed_at=timezone.now(), claim_transaction_id=tx_id)
    ledger_post(kind=TransactionKind.PACKET_CLAIM, wallet_legs={wallet_id(paid_to): amount_paid},
                system_legs={packet.escrow_account_id: -amount_paid}, packet_id=packet.id, transaction_id=tx_id)


def test_database_refuses_a_claim_that_pays_more_than_the_share(packet, members):
    with pytest.raises(IntegrityError, match="pays 301 to its claimer"), transaction.atomic():
        claim_bypassing_the_service(packet, members[0], paid_to=members[0], amount_paid=301)

    assert not Share.objects.filter(packet=packet, claimed_by__isnull=False).exists()


def test_database_refuses_a_claim_paid_into_someone_elses_wallet(packet, members):
    with pytest.raises(IntegrityError, match="pays <NULL> to its claimer"), transaction.atomic():
        claim_bypassing_the_service(packet, members[0], paid_to=members[1], amount_paid=300)

    assert Account.objects.get(user=members[1]).balance == 0


def test_database_refuses_settling_a_refund_that_does_not_match_the_shares_or_the_ledger(packet, sender):
    with pytest.raises(IntegrityError, match="settles a refund of 600, its refunded shares sum to 600 and escrow paid 0"):
        with transaction.atomic():
            Share.objects.filter(packet=packet).update(refunded=True)
            Packet.objects.filter(id=packet.id).update(settled_at=timezone.now(), refunded_amount=600)

    with pytest.raises(IntegrityError, match="refunded shares sum to 0"), transaction.atomic():
        ledger_post(kind=TransactionKind.PACKET_REFUND, wallet_legs={wallet_id(sender): 600},
                    system_legs={packet.escrow_account_id: -600}, packet_id=packet.id)
        Packet.objects.filter(id=packet.id).update(settled_at=timezone.now(), refunded_amount=600)

    packet.refresh_from_db()
    assert packet.settled_at is None
    assert Account.objects.get(user=sender).balance == 10_000 - 600
