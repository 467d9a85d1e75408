"""`expiring`: past expires_at with the refund not yet posted, the packet says so, and
money is conserved at every moment, also while the refund's transaction is open.

Conservation, as the contract states it: the sum of wallet balances plus the
`remaining_amount` of `active` and `expiring` packets equals all topups.
"""

import threading
import time

import pytest
from django.db import connections
from django.db.models import Sum
from django.utils import timezone

from redpackets import services
from redpackets.models import PacketKind
from tests.assertions import assert_error
from tests.factories import UserFactory, group_with_members, login
from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, TransactionKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture
def sender():
    return UserFactory(balance=50_000)


@pytest.fixture
def members():
    return [UserFactory(balance=1_000, pin=None) for _ in range(3)]


@pytest.fixture
def group(sender, members):
    return group_with_members(sender, members)


def view(client, packet_id) -> dict:
    response = client.get(f"/api/v1/packets/{packet_id}")
    assert response.status_code == 200, response.content
    return response.json()


def topups() -> int:
    return LedgerEntry.objects.filter(
        transaction__kind=TransactionKind.TOPUP, account__kind=AccountKind.WALLET
    ).aggregate(total=Sum("amount"))["total"]


def conserved(client, group) -> tuple[int, int]:
    """(wallets + remaining of active and expiring packets, topups), read through the API for the packets."""
    packets = client.get(f"/api/v1/groups/{group.id}/packets").json()["results"]
    in_flight = sum(p["remaining_amount"] for p in packets if p["status"] in ("active", "expiring"))
    wallets = Account.objects.filter(kind=AccountKind.WALLET).aggregate(total=Sum("balance"))["total"]
    return wallets + in_flight, topups()


def sleep_past(packet) -> None:
    time.sleep(max(0.0, (packet.expires_at - timezone.now()).total_seconds()) + 0.05)


def test_past_expiry_with_no_worker_the_packet_reads_expiring_until_the_sweep_posts_its_refund(
    sender, members, group, settings
):
    settings.REDPACKET_TTL_SECONDS = 1
    packet = services.packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=3,
                                  total_amount=900)
    paid = services.packet_claim(packet_id=packet.id, user=members[0]).amount
    client = login(members[1])
    sleep_past(packet)

    window = view(client, packet.id)

    assert window["status"] == "expiring"
    assert window["remaining_amount"] == 900 - paid
    assert window["refunded_amount"] == 0
    assert window["proof"] is None
    assert not LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_REFUND).exists()
    assert_error(client.post(f"/api/v1/packets/{packet.id}/claim"), 410, "packet_expired")
    assert conserved(client, group)[0] == conserved(client, group)[1]

    services.packet_refund_expired(packet_id=packet.id)

    settled = view(client, packet.id)
    assert settled["status"] == "expired"
    assert settled["remaining_amount"] == 0
    assert settled["refunded_amount"] == 900 - paid
    assert settled["proof"] is not None
    total, expected = conserved(client, group)
    assert total == expected


def test_money_is_conserved_while_the_refund_transaction_is_open_and_after_it_commits(
    sender, members, group, settings, monkeypatch
):
    # Given an active packet, an expired one partly claimed, and a finished one
    active = services.packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=3,
                                  total_amount=3000)
    services.packet_claim(packet_id=active.id, user=members[0])
    settings.REDPACKET_TTL_SECONDS = 1
    expiring = services.packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=3,
                                    share_amount=700)
    services.packet_claim(packet_id=expiring.id, user=members[1])
    finished = services.packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1,
                                    share_amount=55)
    services.packet_claim(packet_id=finished.id, user=members[2])
    sleep_past(expiring)
    client = login(sender)
    before = conserved(client, group)
    assert before[0] == before[1]

    # When the sweep's refund has posted its entry but not committed yet
    posted, release = threading.Event(), threading.Event()
    real_post = services.ledger_post_many

    def held_post(postings):
        result = real_post(postings)
        if any(posting.kind == TransactionKind.PACKET_REFUND for posting in postings):
            posted.set()
            assert release.wait(timeout=60)
        return result

    monkeypatch.setattr(services, "ledger_post_many", held_post)
    outcome = {}

    def sweep():
        try:
            outcome["refunded"] = services.packet_refund_expired(packet_id=expiring.id)
        finally:
            connections.close_all()

    worker = threading.Thread(target=sweep)
    worker.start()
    try:
        assert posted.wait(timeout=60)

        # Then from outside the packet is still expiring, its remainder still counted, and money adds up
        mid = view(client, expiring.id)
        assert mid["status"] == "expiring"
        assert mid["remaining_amount"] == 1400
        assert mid["refunded_amount"] == 0
        during = conserved(client, group)
        assert during[0] == during[1] == before[1]
    finally:
        release.set()
        worker.join(timeout=60)

    # And once it commits the packet is expired, the money back with the sender, still conserved
    assert outcome["refunded"] == 1400
    after = view(client, expiring.id)
    assert after["status"] == "expired"
    assert after["remaining_amount"] == 0
    assert after["refunded_amount"] == 1400
    total, expected = conserved(client, group)
    assert total == expected == before[1]
    assert view(client, active.id)["status"] == "active"
    assert view(client, finished.id)["status"] == "finished"
