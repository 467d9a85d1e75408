"""Expiry: the sweep refunds a packet's unclaimed shares exactly once.

Packets are made to expire for real: they are sent with a one- or two-second
TTL and the test waits past `expires_at` (a trigger forbids changing a packet's
terms, so `expires_at` is never rewritten).
"""

import logging
import random
import threading
import time
from datetime import timedelta
from unittest import mock

import psycopg
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from config.errors import PacketExpired
from redpackets import services, tasks
from redpackets.models import Packet, PacketKind, PacketStatus, Share
from redpackets.selectors import packet_detail
from redpackets.services import packet_claim, packet_refund_expired, packet_send
from redpackets.tasks import refund_expired_packets
from tests.concurrency import run_concurrently
from tests.factories import UserFactory, group_with_members
from wallets.ledger import ledger_post, ledger_post_many
from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, TransactionKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def send(sender, group, *, ttl: int = 1, **terms) -> Packet:
    terms.setdefault("kind", PacketKind.RANDOM)
    with override_settings(REDPACKET_TTL_SECONDS=ttl):
        return packet_send(sender=sender, group_id=group.id, **terms)


def wait_until_expired(*packets: Packet) -> None:
    latest = max(packet.expires_at for packet in packets)
    delay = (latest - timezone.now()).total_seconds()
    if delay > 0:
        time.sleep(delay + 0.05)
    assert timezone.now() >= latest


def refunds_of(packet: Packet):
    return LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_REFUND)


def assert_refunded_once(packet: Packet) -> int:
    """The packet is settled, every share is claimed xor refunded, and one refund paid the rest back."""
    packet.refresh_from_db()
    shares = Share.objects.filter(packet=packet)
    claimed = sum(shares.filter(claimed_by__isnull=False).values_list("amount", flat=True))
    refunded = sum(shares.filter(refunded=True).values_list("amount", flat=True))
    assert packet.settled_at is not None
    assert not shares.filter(claimed_by__isnull=True, refunded=False).exists()
    assert not shares.filter(claimed_by__isnull=False, refunded=True).exists()
    assert claimed + refunded == packet.total_amount
    assert packet.refunded_amount == refunded
    refunds = list(refunds_of(packet))
    if refunded:
        assert len(refunds) == 1
        entry = LedgerEntry.objects.get(transaction=refunds[0], account__user=packet.sender)
        assert entry.amount == refunded
    else:
        assert refunds == []
    return refunded


@pytest.fixture
def sender():
    return UserFactory(balance=100_000)


@pytest.fixture
def crowd():
    return [UserFactory(pin=None) for _ in range(6)]


@pytest.fixture
def group(sender, crowd):
    return group_with_members(sender, crowd)


def test_the_sweep_refunds_an_expired_packets_unclaimed_shares_once(sender, crowd, group):
    # Given a packet of 5 shares, two of them claimed before it expired
    packet = send(sender, group, share_count=5, total_amount=1_000)
    claims = [packet_claim(packet_id=packet.id, user=user) for user in crowd[:2]]
    claimed = sum(claim.amount for claim in claims)
    wait_until_expired(packet)

    # When the sweep runs
    settled = refund_expired_packets()

    # Then the three free shares went back to the sender in one refund
    assert settled == 1
    assert assert_refunded_once(packet) == 1_000 - claimed
    assert balance_of(sender) == 100_000 - claimed
    assert Share.objects.filter(packet=packet, refunded=True).count() == 3
    view = packet_detail(packet_id=packet.id, viewer=sender)
    assert view.status == PacketStatus.EXPIRED
    assert view.packet.refunded_amount == 1_000 - claimed
    assert view.remaining_amount == 0
    assert view.claimed_count == 2
    with pytest.raises(PacketExpired):
        packet_claim(packet_id=packet.id, user=crowd[3])
    call_command("reconcile")

    # and running it again changes nothing
    settled_at = Packet.objects.get(id=packet.id).settled_at
    assert refund_expired_packets() == 0
    assert packet_refund_expired(packet_id=packet.id) is None
    assert refunds_of(packet).count() == 1
    assert balance_of(sender) == 100_000 - claimed
    assert Packet.objects.get(id=packet.id).settled_at == settled_at
    call_command("reconcile")


def test_refunding_a_packet_directly_waits_for_expiry_and_then_refunds_once(sender, crowd, group):
    packet = send(sender, group, ttl=2, kind=PacketKind.FIXED, share_count=4, share_amount=250)
    packet_claim(packet_id=packet.id, user=crowd[0])

    assert packet_refund_expired(packet_id=packet.id) is None  # not expired yet
    assert refunds_of(packet).count() == 0
    wait_until_expired(packet)
    assert packet_refund_expired(packet_id=packet.id) == 750
    assert packet_refund_expired(packet_id=packet.id) is None

    assert assert_refunded_once(packet) == 750
    assert balance_of(sender) == 100_000 - 250
    assert balance_of(crowd[0]) == 250
    call_command("reconcile")


def test_a_fully_claimed_packet_is_settled_without_a_refund_transaction(sender, crowd, group):
    packet = send(sender, group, kind=PacketKind.FIXED, share_count=2, share_amount=300)
    for user in crowd[:2]:
        packet_claim(packet_id=packet.id, user=user)
    wait_until_expired(packet)

    assert refund_expired_packets() == 1
    assert refund_expired_packets() == 0

    assert assert_refunded_once(packet) == 0
    assert packet_detail(packet_id=packet.id, viewer=sender).status == PacketStatus.FINISHED
    assert balance_of(sender) == 100_000 - 600
    call_command("reconcile")


def test_a_claim_at_the_exact_expiry_instant_is_rejected(sender, crowd, group):
    packet = send(sender, group, ttl=60, share_count=3, total_amount=300)

    with mock.patch("django.utils.timezone.now", return_value=packet.expires_at - timedelta(microseconds=1)):
        first = packet_claim(packet_id=packet.id, user=crowd[0])
    with mock.patch("django.utils.timezone.now", return_value=packet.expires_at):
        with pytest.raises(PacketExpired):
            packet_claim(packet_id=packet.id, user=crowd[1])
        assert refund_expired_packets() == 1

    assert first.created
    assert assert_refunded_once(packet) == 300 - first.amount
    call_command("reconcile")


@pytest.mark.parametrize("sweeps", [2, 8])
def test_concurrent_sweeps_refund_each_of_several_packets_once(sender, crowd, group, sweeps):
    # Given six expired packets, some partly claimed, from two senders
    other = UserFactory(balance=50_000)
    other_group = group_with_members(other, crowd, name="Other")
    packets = [send(sender, group, share_count=3, total_amount=900 + i) for i in range(3)]
    packets += [send(other, other_group, kind=PacketKind.FIXED, share_count=4, share_amount=100 + i) for i in range(3)]
    for packet, user in zip(packets, crowd):
        packet_claim(packet_id=packet.id, user=user)
    wait_until_expired(*packets)
    sender_before, other_before = balance_of(sender), balance_of(other)

    # When several sweeps run at once
    results, errors = run_concurrently(refund_expired_packets, [()] * sweeps, threads=sweeps)

    # Then every packet was settled by exactly one of them
    assert errors == [None] * sweeps
    assert sum(results) == 6
    refunded = {packet.id: assert_refunded_once(packet) for packet in packets}
    assert balance_of(sender) == sender_before + sum(refunded[p.id] for p in packets[:3])
    assert balance_of(other) == other_before + sum(refunded[p.id] for p in packets[3:])
    assert LedgerTransaction.objects.filter(kind=TransactionKind.PACKET_REFUND).count() == 6
    call_command("reconcile")


def test_many_refunds_of_one_packet_at_once_settle_it_once(sender, crowd, group):
    packet = send(sender, group, share_count=6, total_amount=6_000)
    packet_claim(packet_id=packet.id, user=crowd[0])
    wait_until_expired(packet)

    results, errors = run_concurrently(lambda: packet_refund_expired(packet_id=packet.id), [()] * 12, threads=12)

    assert errors == [None] * 12
    paid = [result for result in results if result is not None]
    assert len(paid) == 1
    assert paid[0] == assert_refunded_once(packet)
    assert balance_of(sender) == 100_000 - 6_000 + paid[0]
    call_command("reconcile")


class WorkerDied(BaseException):
    """The process dying: like SystemExit, it passes the sweep's `except Exception`."""


def _die_before_posting(monkeypatch):
    calls = []

    def failing_post(postings):
        calls.append(postings)
        if len(calls) == 2:
            raise WorkerDied("killed before posting the refunds")
        return ledger_post_many(postings)

    monkeypatch.setattr(services, "ledger_post_many", failing_post)


def _die_after_posting(monkeypatch):
    calls = []

    def failing_post(postings):
        posted = ledger_post_many(postings)
        calls.append(postings)
        if len(calls) == 2:
            raise WorkerDied("killed after posting the refunds, before settling the packets")
        return posted

    monkeypatch.setattr(services, "ledger_post_many", failing_post)


def _die_between_batches(monkeypatch):
    real, calls = services.packets_settle, []

    def failing_settle(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise WorkerDied("killed between two batches")
        return real(**kwargs)

    monkeypatch.setattr(tasks, "packets_settle", failing_settle)


@pytest.mark.parametrize(
    "crash", [_die_before_posting, _die_after_posting, _die_between_batches],
    ids=["before-posting", "after-posting", "between-batches"],
)
def test_a_sweep_that_dies_halfway_leaves_nothing_half_done_and_the_next_one_finishes(
    sender, crowd, group, monkeypatch, crash
):
    # Given six expired packets, each partly claimed, swept two per commit
    packets = [send(sender, group, share_count=4, total_amount=1_000 * (i + 1)) for i in range(6)]
    for packet in packets:
        packet_claim(packet_id=packet.id, user=random.choice(crowd))
    wait_until_expired(*packets)
    before = balance_of(sender)

    # When the sweep dies while settling its second batch
    crash(monkeypatch)
    with override_settings(REDPACKET_SWEEP_BATCH=2), pytest.raises(WorkerDied):
        refund_expired_packets()
    monkeypatch.undo()

    # Then the first batch is refunded and the others are untouched
    first_refunds = [assert_refunded_once(packet) for packet in packets[:2]]
    for packet in packets[2:]:
        packet.refresh_from_db()
        assert packet.settled_at is None
        assert packet.refunded_amount == 0
        assert not Share.objects.filter(packet=packet, refunded=True).exists()
        assert refunds_of(packet).count() == 0
    assert balance_of(sender) == before + sum(first_refunds)
    call_command("reconcile")

    # When the next sweep runs, and another after it
    assert refund_expired_packets() == 4
    assert refund_expired_packets() == 0

    # Then every packet was refunded exactly once
    refunded = [assert_refunded_once(packet) for packet in packets]
    assert balance_of(sender) == before + sum(refunded)
    assert LedgerTransaction.objects.filter(kind=TransactionKind.PACKET_REFUND).count() == 6
    call_command("reconcile")


def test_a_packet_that_cannot_settle_does_not_hold_back_the_others_of_its_batch(sender, crowd, group, monkeypatch):
    # Given five expired packets, the second oldest of which fails to refund every time
    packets = [send(sender, group, share_count=2, total_amount=500 * (i + 1)) for i in range(5)]
    wait_until_expired(*packets)
    real, batches = services.packets_settle, []

    def refund_all_but_the_broken_one(*, packets, **kwargs):
        batches.append(len(packets))
        if any(packet.id == broken.id for packet in packets):
            raise RuntimeError("this packet is broken")
        return real(packets=packets, **kwargs)

    broken = packets[1]
    monkeypatch.setattr(tasks, "packets_settle", refund_all_but_the_broken_one)

    # When the sweep runs
    settled = refund_expired_packets()

    # Then the other four are refunded, and the broken one stays due for the next sweep
    assert settled == 4
    assert batches[0] == 5  # the whole batch first, then parts of it
    for packet in packets:
        if packet.id != broken.id:
            assert_refunded_once(packet)
    broken.refresh_from_db()
    assert broken.settled_at is None
    assert not Share.objects.filter(packet=broken, refunded=True).exists()
    monkeypatch.undo()
    assert refund_expired_packets() == 1
    assert_refunded_once(broken)
    call_command("reconcile")


def test_a_share_held_by_a_claim_in_flight_leaves_its_packet_to_a_later_sweep_and_holds_up_nothing_else(
    sender, crowd, group, caplog
):
    # Given three expired packets, and a transaction elsewhere holding a free share of the second
    packets = [send(sender, group, share_count=3, total_amount=600 + i) for i in range(3)]
    wait_until_expired(*packets)
    params = {**connection.get_connection_params(), "autocommit": False}
    params.pop("cursor_factory", None)
    params.pop("context", None)
    holder = psycopg.connect(**params)
    holder.execute("SELECT id FROM redpackets_share WHERE packet_id = %s AND seq = 1 FOR UPDATE", [packets[1].id])

    try:
        # When the sweep runs (in one batch) while the share is held
        settled = refund_expired_packets()

        # Then it settled the other two and left the held one untouched, without waiting on the held
        # share (a wait would end in the lock timeout: the batch, then that packet, logged as failed)
        assert settled == 2
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert_refunded_once(packets[0])
        assert_refunded_once(packets[2])
        packets[1].refresh_from_db()
        assert packets[1].settled_at is None
        assert not Share.objects.filter(packet=packets[1], refunded=True).exists()
    finally:
        holder.rollback()
        holder.close()

    # and once the share is free again the next sweep settles it, once
    assert refund_expired_packets() == 1
    assert_refunded_once(packets[1])
    call_command("reconcile")


def test_one_batch_refunds_many_packets_of_one_sender_each_once_with_an_unbroken_balance_chain(sender, crowd, group):
    # Given twelve expired packets of one sender, partly claimed, and one of another sender
    other = UserFactory(balance=10_000)
    group_with_members(other, crowd, name="Other")
    packets = [send(sender, group, share_count=3, total_amount=300 + i) for i in range(12)]
    packets.append(send(other, group_with_members(other, crowd[:3], name="Third"), share_count=2, total_amount=77))
    for packet in packets[::3]:
        packet_claim(packet_id=packet.id, user=crowd[0])
    wait_until_expired(*packets)
    before = balance_of(sender)

    # When one sweep settles them all in one commit
    with override_settings(REDPACKET_SWEEP_BATCH=100):
        assert refund_expired_packets() == 13

    # Then each was refunded once, the sender's entries chain one after the other, and reconcile agrees
    refunded = [assert_refunded_once(packet) for packet in packets]
    assert balance_of(sender) == before + sum(refunded[:12])
    assert balance_of(other) == 10_000 - 77 + refunded[12]
    entries = list(LedgerEntry.objects.filter(account__user=sender).order_by("id").values_list("amount", "balance_after"))
    running = 0
    for amount, balance_after in entries:
        running += amount
        assert balance_after == running
    assert running == balance_of(sender)
    call_command("reconcile")


def test_claims_racing_the_sweep_at_expiry_leave_every_share_claimed_xor_refunded():
    # Given 120 members around a 100-share packet that expires in two seconds
    sender = UserFactory(balance=100_000)
    crowd = [UserFactory(pin=None) for _ in range(120)]
    group = group_with_members(sender, crowd)
    packet = send(sender, group, ttl=2, share_count=100, total_amount=77_777)
    expires = packet.expires_at.timestamp()
    # 80 claims aimed at the last 0.3 s before expiry, 40 just after it: at most 80
    # can succeed, so the sweep always has something to refund.
    offsets = sorted([random.uniform(-0.3, 0) for _ in range(80)] + [random.uniform(0, 0.15) for _ in range(40)])
    order = random.sample(crowd, len(crowd))
    sweeps_done = threading.Event()

    def claim_at(at, user):
        time.sleep(max(0.0, at - time.time()))
        return packet_claim(packet_id=packet.id, user=user)

    def sweep_from(at):
        time.sleep(max(0.0, at - time.time()))
        settled = 0
        deadline = time.time() + 20
        while not Packet.objects.filter(id=packet.id, settled_at__isnull=False).exists() and time.time() < deadline:
            settled += refund_expired_packets()
        sweeps_done.set()
        return settled

    calls = [(sweep_from, (expires,)), (sweep_from, (expires + 0.001,))]
    calls += [(claim_at, (expires + offset, user)) for offset, user in zip(offsets, order)]

    # When the claims and two sweeps run at once
    results, errors = run_concurrently(lambda fn, args: fn(*args), calls, threads=60)

    # Then the packet was settled once, and every claim either got a share or was told it expired
    assert sweeps_done.is_set()
    assert errors[:2] == [None, None]
    assert sum(results[:2]) == 1
    claim_results, claim_errors = results[2:], errors[2:]
    assert all(error is None or isinstance(error, PacketExpired) for error in claim_errors), claim_errors
    winners = [result for result in claim_results if result is not None]
    assert all(result.created and result.claimed_at < packet.expires_at for result in winners)
    refunded = assert_refunded_once(packet)
    claimed = Share.objects.filter(packet=packet, claimed_by__isnull=False)
    assert claimed.count() == len(winners)
    assert 0 < len(winners) < 100
    assert sum(result.amount for result in winners) + refunded == 77_777
    assert balance_of(sender) == 100_000 - 77_777 + refunded
    for (_, (_, user)), result in zip(calls[2:], claim_results):
        assert balance_of(user) == (result.amount if result else 0)
    call_command("reconcile")


def test_the_database_refuses_a_second_refund_of_a_packet(sender, crowd, group):
    # Given a refunded packet
    packet = send(sender, group, share_count=3, total_amount=3_000)
    packet_claim(packet_id=packet.id, user=crowd[0])
    wait_until_expired(packet)
    refund = packet_refund_expired(packet_id=packet.id)
    wallet = Account.objects.get(user=sender)

    # When something posts a second refund for it, around the service
    with pytest.raises(IntegrityError, match="ledger_one_send_and_one_refund_per_packet"), transaction.atomic():
        ledger_post(
            kind=TransactionKind.PACKET_REFUND,
            wallet_legs={wallet.id: 1},
            system_legs={packet.escrow_account_id: -1},
            packet_id=packet.id,
        )

    # Then nothing moved
    assert refunds_of(packet).count() == 1
    assert balance_of(sender) == 100_000 - 3_000 + refund
    call_command("reconcile")


def test_the_database_refuses_refunding_a_claimed_share_or_claiming_a_refunded_one(sender, crowd, group):
    packet = send(sender, group, share_count=3, total_amount=3_000)
    packet_claim(packet_id=packet.id, user=crowd[0])
    wait_until_expired(packet)
    packet_refund_expired(packet_id=packet.id)
    claimed = Share.objects.get(packet=packet, claimed_by__isnull=False)
    refunded = Share.objects.filter(packet=packet, refunded=True).first()
    claim_tx = LedgerTransaction.objects.get(packet_id=packet.id, kind=TransactionKind.PACKET_CLAIM)

    with pytest.raises(IntegrityError, match="claimed or refunded"), transaction.atomic():
        Share.objects.filter(id=claimed.id).update(refunded=True)
    with pytest.raises(IntegrityError, match="claimed or refunded"), transaction.atomic():
        Share.objects.filter(id=refunded.id).update(
            refunded=False, claimed_by=crowd[1], claimed_at=timezone.now(), claim_transaction=claim_tx
        )
    with pytest.raises(IntegrityError, match="settled"), transaction.atomic():
        Packet.objects.filter(id=packet.id).update(refunded_amount=0)

    claimed.refresh_from_db()
    refunded.refresh_from_db()
    assert claimed.refunded is False and claimed.claimed_by_id == crowd[0].pk
    assert refunded.refunded is True and refunded.claimed_by_id is None
    call_command("reconcile")
