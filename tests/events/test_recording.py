"""Events are recorded with the change they describe: none lost, none invented, one end per packet."""

import threading
import uuid
from datetime import timedelta

import pytest
import structlog
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.errors import InsufficientFunds
from events.models import Event, EventType
from events.services import event_record, events_relay
from redpackets.models import PacketKind
from redpackets.services import group_add_member, packet_claim, packet_refund_expired, packet_send, packets_finish_claimed
from redpackets.tasks import FINISH_CURSOR_KEY, finish_claimed_packets, refund_expired_packets
from tests.concurrency import run_concurrently
from tests.factories import UserFactory, group_with_members, login


def feed_top() -> int:
    return Event.objects.aggregate(top=Max("position"))["top"]


def events_of(subject, type=None):
    qs = Event.objects.filter(subject=str(subject)).order_by("id")
    return list(qs.filter(type=type) if type else qs)


@pytest.mark.django_db
def test_send_records_packet_sent_with_the_packet_as_the_api_renders_it():
    # Given a group of two
    sender, other = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(sender, [other])

    # When the sender sends a packet
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=300)

    # Then one packet.sent carries exactly what GET /packets/{id} shows, my_claim null
    (event,) = events_of(packet.id)
    assert event.type == EventType.PACKET_SENT
    assert event.group_id == group.id
    shown = login(other).get(f"/api/v1/packets/{packet.id}").json()
    assert event.data == {"packet": shown}
    assert event.data["packet"]["my_claim"] is None


@pytest.mark.django_db
def test_a_send_that_fails_records_nothing():
    sender, other = UserFactory(balance=100), UserFactory()
    group = group_with_members(sender, [other])
    before = Event.objects.count()

    with pytest.raises(InsufficientFunds), transaction.atomic():
        packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=300)

    assert Event.objects.count() == before


@pytest.mark.django_db
def test_each_claim_records_packet_claimed_and_a_repeat_records_nothing():
    # Given a packet of three shares
    sender, a, b = UserFactory(balance=10_000), UserFactory(), UserFactory()
    group = group_with_members(sender, [a, b])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=3, total_amount=900)

    # When a claims twice and b once
    first = packet_claim(packet_id=packet.id, user=a)
    packet_claim(packet_id=packet.id, user=a)
    second = packet_claim(packet_id=packet.id, user=b)

    # Then two packet.claimed events with the claims, and no end yet
    claimed = events_of(packet.id, EventType.PACKET_CLAIMED)
    assert [e.data["claim"]["user"] for e in claimed] == [a.username, b.username]
    assert [e.data["claim"]["amount"] for e in claimed] == [first.amount, second.amount]
    assert claimed[0].data["packet"] == str(packet.id) and claimed[0].data["group"] == str(group.id)
    assert not events_of(packet.id, EventType.PACKET_FINISHED)


@pytest.mark.django_db
def test_group_creation_records_one_member_added_per_member_and_adding_one_more_records_it():
    owner, a, b, late = UserFactory(), UserFactory(), UserFactory(), UserFactory()

    group = group_with_members(owner, [a, b])
    group_add_member(group_id=group.id, actor=owner, username=late.username)
    group_add_member(group_id=group.id, actor=owner, username=late.username)  # already a member

    added = events_of(group.id, EventType.GROUP_MEMBER_ADDED)
    assert [e.data for e in added] == [
        {"group": str(group.id), "user": name} for name in (owner.username, a.username, b.username, late.username)
    ]


@pytest.mark.django_db
def test_the_expiry_refund_records_packet_expired_with_the_settled_packet():
    sender, a, b = UserFactory(balance=10_000), UserFactory(), UserFactory()
    group = group_with_members(sender, [a, b])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=3, share_amount=100)
    packet_claim(packet_id=packet.id, user=a)

    packet_refund_expired(packet_id=packet.id, force=True)
    packet_refund_expired(packet_id=packet.id, force=True)

    (expired,) = events_of(packet.id, EventType.PACKET_EXPIRED)
    assert expired.data["packet"]["status"] == "expired"
    assert expired.data["packet"]["refunded_amount"] == 200
    assert not events_of(packet.id, EventType.PACKET_FINISHED)


@pytest.mark.django_db
def test_packet_expired_carries_exactly_what_the_api_shows_of_the_settled_packet():
    # Given a random packet of five shares, three claimed one after the other
    sender, *members = UserFactory(balance=10_000), *(UserFactory() for _ in range(4))
    group = group_with_members(sender, members)
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=5, total_amount=777)
    for member in members[:3]:
        packet_claim(packet_id=packet.id, user=member)

    # When the expiry refund settles it (rendering the event from the rows it holds, not read back)
    packet_refund_expired(packet_id=packet.id, force=True)

    # Then the event is GET /packets/{id} of a member who did not claim: claims in order, proof, refund
    (expired,) = events_of(packet.id, EventType.PACKET_EXPIRED)
    shown = login(members[3]).get(f"/api/v1/packets/{packet.id}").json()
    assert expired.data == {"packet": shown}
    assert [c["user"] for c in shown["claims"]] == [m.username for m in members[:3]]
    assert shown["proof"] is not None and len(shown["proof"]["shares"]) == 5


@pytest.mark.django_db
def test_a_fully_claimed_packet_that_the_expiry_sweep_settles_ends_finished_not_expired():
    # Given a packet whose claims all committed, but whose finished event was never recorded
    sender, a = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(sender, [a])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    # Inside the test's transaction, which never commits, the claimer's after-commit check never
    # runs: as if its process died right after the claim committed.
    packet_claim(packet_id=packet.id, user=a)
    assert not events_of(packet.id, EventType.PACKET_FINISHED)

    # When the expiry sweep settles it
    packet_refund_expired(packet_id=packet.id, force=True)

    # Then its one end is packet.finished
    ends = [e.type for e in events_of(packet.id) if e.unique_key]
    assert ends == [EventType.PACKET_FINISHED]


@pytest.mark.django_db
def test_the_finish_sweep_records_finished_for_a_packet_whose_last_claimer_died_after_commit():
    sender, a = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(sender, [a])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    packet_claim(packet_id=packet.id, user=a)  # its after-commit check never runs (see above)
    events_relay()

    assert packets_finish_claimed(after_position=0) == (1, feed_top())
    assert packets_finish_claimed(after_position=0) == (0, feed_top())

    (finished,) = events_of(packet.id, EventType.PACKET_FINISHED)
    assert finished.data["packet"]["status"] == "finished"


@pytest.mark.django_db
def test_the_finish_sweep_reads_only_the_claims_committed_since_its_last_run():
    # Given a packet whose last claimer died after commit, found by a first run of the sweep
    cache.delete(FINISH_CURSOR_KEY)
    sender, a, b = UserFactory(balance=10_000), UserFactory(), UserFactory()
    group = group_with_members(sender, [a, b])
    first = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    packet_claim(packet_id=first.id, user=a)
    events_relay()
    assert finish_claimed_packets() == 1

    # When another packet is claimed out, and the sweep runs twice
    second = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    packet_claim(packet_id=second.id, user=b)
    events_relay()
    with CaptureQueriesContext(connection) as captured:
        recorded = finish_claimed_packets()
    again = finish_claimed_packets()

    # Then the second run finished the new packet from the events after its cursor, and the third found nothing
    assert (recorded, again) == (1, 0)
    assert events_of(second.id, EventType.PACKET_FINISHED)
    assert cache.get(FINISH_CURSOR_KEY) == feed_top()
    assert not any('"events_event"."created_at" <' in query["sql"] for query in captured.captured_queries)  # no walk back


@pytest.mark.django_db
@pytest.mark.postgres
def test_the_database_refuses_a_second_end_for_a_packet():
    group_id = uuid.uuid4()
    with transaction.atomic():
        event_record(type=EventType.PACKET_FINISHED, group_id=group_id, data={}, unique_key="packet-end:x")
        # The service's ON CONFLICT makes a second one a no-op ...
        assert event_record(type=EventType.PACKET_EXPIRED, group_id=group_id, data={}, unique_key="packet-end:x") is None
    # ... and an insert around the service is refused.
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events_event (type, group_id, subject, data, created_at, unique_key) "
            "VALUES ('packet.expired', %s, '', '{}', now(), 'packet-end:x')", [group_id]
        )


@pytest.mark.django_db
def test_an_event_keeps_the_request_id_it_was_recorded_under_and_none_outside_a_request_or_task():
    group_id = uuid.uuid4()

    with transaction.atomic():
        bare = event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group_id, data={})
        with structlog.contextvars.bound_contextvars(request_id="lb-7f3a9c"):
            caused = event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group_id, data={})
        with structlog.contextvars.bound_contextvars(request_id="x" * 300):
            long = event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group_id, data={})

    assert Event.objects.get(id=bare).request_id is None
    assert Event.objects.get(id=caused).request_id == "lb-7f3a9c"
    assert Event.objects.get(id=long).request_id == "x" * 128


@pytest.mark.django_db
def test_an_event_of_the_expiry_sweep_carries_the_sweep_tasks_id(monkeypatch):
    # Given a packet past its expiry
    sender, other = UserFactory(balance=10_000), UserFactory()
    packet = packet_send(sender=sender, group_id=group_with_members(sender, [other]).id, kind=PacketKind.FIXED,
                         share_count=2, share_amount=300)
    later = packet.expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)

    # When the sweep task runs (in this process, with the worker's task signals)
    result = refund_expired_packets.apply()

    # Then its packet.expired event has the task's own id: nothing else caused it
    (expired,) = events_of(packet.id, EventType.PACKET_EXPIRED)
    assert result.get() == 1
    assert expired.request_id == result.id


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError):
        event_record(type=EventType.PACKET_SENT, group_id=uuid.uuid4(), data={})


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_last_claims_record_finished_once_after_every_claim():
    # Given packets whose every share is claimed at once by as many threads
    for round_ in range(3):
        sender = UserFactory(balance=100_000)
        crowd = [UserFactory(pin=None) for _ in range(12)]
        group = group_with_members(sender, crowd)
        packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.RANDOM, share_count=12,
                             total_amount=12_000)
        barrier = threading.Barrier(len(crowd))

        def claim(user):
            barrier.wait(timeout=30)
            return packet_claim(packet_id=packet.id, user=user)

        # When they all claim together
        results, errors = run_concurrently(claim, [(u,) for u in crowd], threads=len(crowd))
        assert errors == [None] * len(crowd)

        # Then exactly one packet.finished, after every packet.claimed in feed order, showing all 12 claims
        events_relay()
        events = events_of(packet.id)
        finished = [e for e in events if e.type == EventType.PACKET_FINISHED]
        claimed = [e for e in events if e.type == EventType.PACKET_CLAIMED]
        assert len(finished) == 1 and len(claimed) == 12
        assert finished[0].position > max(e.position for e in claimed)
        assert finished[0].data["packet"]["claimed_count"] == 12
        assert finished[0].data["packet"]["status"] == "finished"
        assert sum(c["amount"] for c in finished[0].data["packet"]["claims"]) == 12_000
