"""Concurrent claims on PostgreSQL: real threads, then the invariants.

Each test lets many threads claim at once (tests/concurrency.py releases them
together), then checks counts, sums and balances, and finishes with the
`reconcile` command, which raises on any ledger or escrow mismatch.
"""

import random
import threading
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.db.models import Sum

from config.errors import NotFound, PacketExhausted
from redpackets import allocation
from redpackets.models import PacketKind, PacketStatus, Share
from redpackets.selectors import packet_detail
from redpackets.services import ClaimResult, packet_claim, packet_send
from tests.concurrency import run_concurrently
from tests.factories import PIN, UserFactory, group_with_members, login
from wallets.models import Account, AccountKind, LedgerTransaction, TransactionKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

# Leave PostgreSQL connections for the other test runs sharing the server.
THREADS = 50


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def members(count: int) -> list:
    return [UserFactory(pin=None) for _ in range(count)]


def claim(packet_id, user) -> ClaimResult:
    return packet_claim(packet_id=packet_id, user=user)


def test_two_hundred_members_racing_for_a_hundred_shares_get_exactly_a_hundred():
    sender = UserFactory(balance=100_000)
    crowd = members(200)
    group = group_with_members(sender, crowd)
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=100, total_amount=88_888)
    before = {user.pk: balance_of(user) for user in crowd}

    results, errors = run_concurrently(claim, [(packet.id, user) for user in random.sample(crowd, len(crowd))],
                                       threads=THREADS)

    winners = [result for result in results if result is not None]
    assert len(winners) == 100
    assert all(result.created for result in winners)
    assert sum(result.amount for result in winners) == 88_888
    unexpected = [error for error in errors if error is not None and not isinstance(error, PacketExhausted)]
    assert unexpected == []
    assert sum(1 for error in errors if error is not None) == 100

    shares = Share.objects.filter(packet=packet)
    assert shares.filter(claimed_by__isnull=False).count() == 100
    claimers = Counter(shares.exclude(claimed_by=None).values_list("claimed_by_id", flat=True))
    assert max(claimers.values()) == 1  # nobody paid twice
    paid = dict(shares.exclude(claimed_by=None).values_list("claimed_by_id", "amount"))
    for user in crowd:
        assert balance_of(user) == before[user.pk] + paid.get(user.pk, 0)
    assert LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_CLAIM).count() == 100
    assert balance_of(sender) == 100_000 - 88_888

    view = packet_detail(packet_id=packet.id, viewer=sender)
    assert view.status == PacketStatus.FINISHED
    assert view.claimed_count == 100
    assert view.claimed_amount == 88_888
    assert view.remaining_amount == 0
    assert sum(c.best_luck for c in view.claims) == 1
    call_command("reconcile")


def test_every_concurrent_claimer_got_the_share_at_their_index_of_the_published_proof():
    sender = UserFactory(balance=100_000)
    crowd = members(120)
    group = group_with_members(sender, crowd)
    client = login(sender)
    sent = client.post("/api/v1/packets", {"group": str(group.id), "kind": "random", "share_count": 100,
                                           "total_amount": 99_999, "pin": PIN}, format="json").json()

    results, errors = run_concurrently(claim, [(sent["id"], user) for user in crowd], threads=THREADS)

    paid = {user.username: result.amount for user, result in zip(crowd, results, strict=True) if result}
    assert len(paid) == 100
    assert all(isinstance(error, PacketExhausted) for error in errors if error is not None)
    body = client.get(f"/api/v1/packets/{sent['id']}").json()
    assert body["status"] == "finished"
    proof = body["proof"]
    assert proof["shares"] == allocation.split_random(
        total=99_999, share_count=100, cap=proof["cap"], seed=bytes.fromhex(proof["seed"])
    )
    assert allocation.commitment(
        packet_id=sent["id"], total=99_999, share_count=100, cap=proof["cap"], seed=bytes.fromhex(proof["seed"])
    ) == sent["commitment"]
    assert sorted(c["share_index"] for c in body["claims"]) == list(range(100))
    for c in body["claims"]:
        assert c["amount"] == proof["shares"][c["share_index"]] == paid[c["user"]]
    call_command("reconcile")


@pytest.mark.parametrize("share_count", [1, 3], ids=["last-share", "several-shares"])
def test_one_member_claiming_twenty_times_at_once_is_paid_once(share_count):
    sender = UserFactory(balance=10_000)
    others = members(2)
    claimer = UserFactory(pin=None)
    group = group_with_members(sender, [*others, claimer])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=share_count,
                         total_amount=3_000)

    results, errors = run_concurrently(claim, [(packet.id, claimer)] * 20, threads=20)

    assert errors == [None] * 20
    assert sum(result.created for result in results) == 1
    amounts = {result.amount for result in results}
    assert len(amounts) == 1
    (amount,) = amounts
    assert {result.claimed_at for result in results} == {next(r for r in results if r.created).claimed_at}
    assert Share.objects.filter(packet=packet, claimed_by=claimer).count() == 1
    assert Share.objects.filter(packet=packet, claimed_by__isnull=False).count() == 1
    assert balance_of(claimer) == amount
    claims = LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_CLAIM)
    assert claims.count() == 1
    call_command("reconcile")


def _backend_is_waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def test_a_claim_waits_for_a_share_locked_by_a_transaction_that_rolls_back_instead_of_reporting_exhausted():
    # Given a packet with one free share left
    sender = UserFactory(balance=10_000)
    first, second = members(2)
    group = group_with_members(sender, [first, second])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=700)
    packet_claim(packet_id=packet.id, user=first)
    last_share = Share.objects.get(packet=packet, claimed_by__isnull=True)

    # and a competing transaction that holds that share's row lock
    locked, release = threading.Event(), threading.Event()
    claimer_ready, claimer_done = threading.Event(), threading.Event()
    outcome: dict = {}

    def competitor():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT id FROM redpackets_share WHERE packet_id = %s AND claimed_by_id IS NULL "
                        "AND NOT refunded FOR UPDATE",
                        [packet.id],
                    )
                    outcome["locked"] = [row[0] for row in cursor.fetchall()]
                locked.set()
                release.wait(timeout=30)
                transaction.set_rollback(True)
        finally:
            locked.set()
            connections.close_all()

    def claimer():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            claimer_ready.set()
            outcome["result"] = packet_claim(packet_id=packet.id, user=second)
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc
        finally:
            claimer_ready.set()
            claimer_done.set()
            connections.close_all()

    competing = threading.Thread(target=competitor)
    competing.start()
    assert locked.wait(timeout=30)
    assert outcome["locked"] == [last_share.id]

    # When another member claims while the lock is held
    claiming = threading.Thread(target=claimer)
    claiming.start()
    assert claimer_ready.wait(timeout=30)
    deadline = time.monotonic() + 20
    waited = False
    while time.monotonic() < deadline and not claimer_done.is_set():
        if _backend_is_waiting_on_a_lock(outcome["pid"]):
            waited = True
            break
        time.sleep(0.01)
    still_running = not claimer_done.is_set()
    release.set()  # the competitor rolls back
    competing.join(timeout=30)
    claiming.join(timeout=30)

    # Then the claim waited for the lock and took the share the competitor left
    assert "error" not in outcome, outcome.get("error")
    assert waited and still_running, "the claim did not wait for the locked share"
    result = outcome["result"]
    assert result.created
    assert result.amount == 700
    last_share.refresh_from_db()
    assert last_share.claimed_by_id == second.pk
    assert balance_of(second) == 700
    assert packet_detail(packet_id=packet.id, viewer=sender).status == PacketStatus.FINISHED
    call_command("reconcile")


def test_a_claim_behind_a_committing_competitor_reports_exhausted_only_when_the_share_is_really_gone():
    # Given the last free share locked by another member's claim that is about to commit
    sender = UserFactory(balance=10_000)
    first, second = members(2)
    group = group_with_members(sender, [first, second])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=500)
    locked, release, claimer_ready, claimer_done = (threading.Event() for _ in range(4))
    outcome: dict = {}

    def competitor():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT id FROM redpackets_share WHERE packet_id = %s AND claimed_by_id IS NULL FOR UPDATE",
                        [packet.id],
                    )
                locked.set()
                release.wait(timeout=30)
                # Hand the lock over to a real claim of `first` inside the same transaction.
                outcome["first"] = packet_claim(packet_id=packet.id, user=first)
        finally:
            locked.set()
            connections.close_all()

    def claimer():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            claimer_ready.set()
            outcome["result"] = packet_claim(packet_id=packet.id, user=second)
        except Exception as exc:
            outcome["error"] = exc
        finally:
            claimer_ready.set()
            claimer_done.set()
            connections.close_all()

    competing = threading.Thread(target=competitor)
    competing.start()
    assert locked.wait(timeout=30)

    # When the second member claims meanwhile
    claiming = threading.Thread(target=claimer)
    claiming.start()
    assert claimer_ready.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not claimer_done.is_set():
        if _backend_is_waiting_on_a_lock(outcome["pid"]):
            break
        time.sleep(0.01)
    release.set()
    competing.join(timeout=30)
    claiming.join(timeout=30)

    # Then the competitor got the share and the waiting claim is told the packet is exhausted
    assert outcome["first"].amount == 500
    assert isinstance(outcome.get("error"), PacketExhausted), outcome
    assert balance_of(first) == 500
    assert balance_of(second) == 0
    call_command("reconcile")


def test_overlapping_members_claiming_several_packets_at_once_keep_every_packet_and_wallet_exact():
    # Given two groups that share half their members, and packets of both kinds in each
    sender_a, sender_b = UserFactory(balance=200_000), UserFactory(balance=200_000)
    crowd = members(60)
    group_a = group_with_members(sender_a, crowd[:40], name="A")
    group_b = group_with_members(sender_b, crowd[20:], name="B")
    packets = [
        packet_send(sender=sender_a, group_id=group_a.id, kind=PacketKind.RANDOM, share_count=25, total_amount=9_999),
        packet_send(sender=sender_a, group_id=group_a.id, kind=PacketKind.FIXED, share_count=41, share_amount=111),
        packet_send(sender=sender_b, group_id=group_b.id, kind=PacketKind.RANDOM, share_count=10, total_amount=1_234),
        packet_send(sender=sender_b, group_id=group_b.id, kind=PacketKind.FIXED, share_count=30, share_amount=50),
        packet_send(sender=sender_b, group_id=group_b.id, kind=PacketKind.RANDOM, share_count=41, total_amount=41),
    ]
    everyone = [sender_a, sender_b, *crowd]
    before = {user.pk: balance_of(user) for user in everyone}
    # Everybody tries every packet, twice, in a random order: outsiders get NotFound.
    calls = [(packet.id, user) for packet in packets for user in everyone] * 2
    random.shuffle(calls)

    results, errors = run_concurrently(claim, calls, threads=THREADS)

    # Then each packet paid min(shares, members) claims, once per member
    outcomes = Counter(type(error).__name__ for error in errors if error is not None)
    assert set(outcomes) <= {"PacketExhausted", "NotFound"}, outcomes
    members_of = {group_a.id: {u.pk for u in [sender_a, *crowd[:40]]}, group_b.id: {u.pk for u in [sender_b, *crowd[20:]]}}
    for packet in packets:
        eligible = members_of[packet.group_id]
        claimed = Share.objects.filter(packet=packet, claimed_by__isnull=False)
        assert claimed.count() == min(packet.share_count, len(eligible))
        claimer_ids = list(claimed.values_list("claimed_by_id", flat=True))
        assert len(set(claimer_ids)) == len(claimer_ids)
        assert set(claimer_ids) <= eligible
        for (packet_id, user), result, error in zip(calls, results, errors):
            if packet_id != packet.id:
                continue
            if user.pk not in eligible:
                assert isinstance(error, NotFound)
            elif user.pk in claimer_ids:
                assert result is not None and result.amount == claimed.get(claimed_by=user).amount
        assert LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_CLAIM).count() == len(
            claimer_ids
        )
        expected_status = PacketStatus.FINISHED if packet.share_count <= len(eligible) else PacketStatus.ACTIVE
        assert packet_detail(packet_id=packet.id, viewer=packet.sender).status == expected_status
    # and every wallet rose by exactly what its owner claimed
    paid = Share.objects.filter(claimed_by__isnull=False).values("claimed_by_id").annotate(total=Sum("amount"))
    paid = {row["claimed_by_id"]: row["total"] for row in paid}
    for user in everyone:
        assert balance_of(user) == before[user.pk] + paid.get(user.pk, 0)
    assert sum(r.created for r in results if r is not None) == Share.objects.filter(claimed_by__isnull=False).count()
    call_command("reconcile")
