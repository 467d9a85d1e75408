"""The pull feed: the caller's groups only, oldest first, and every event exactly once
even when transactions commit out of order."""

import threading
import time


import pytest
from django.db import connections, transaction

from events.models import Event, EventType
from events.services import event_record
from redpackets.models import PacketKind
from redpackets.services import packet_claim, packet_send
from tests.factories import UserFactory, group_with_members, login


def follow(client, url="/api/v1/events", pages=50):
    """Follow `next` until a page comes back empty; returns (events, the last next)."""
    seen = []
    for _ in range(pages):
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["next"]
        url = body["next"]
        if not body["results"]:
            return seen, url
        seen += body["results"]
    raise AssertionError("the feed did not run dry")



def marked(group, **marks) -> dict:
    """A group.member_added event's data as the schema types it, with marks for the test to follow."""
    return {"group": str(group.id), "user": "someone", **marks}

@pytest.mark.django_db
def test_the_feed_shows_a_members_group_events_oldest_first_with_next_always_set(api):
    # Given a group with a packet sent and claimed
    sender, member = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(sender, [member])
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=100)
    packet_claim(packet_id=packet.id, user=member)

    # When the member follows the feed
    events, next_url = follow(login(member))

    # Then they see the roster, the send and the claim, in that order, with the contract's body
    assert [e["type"] for e in events] == ["group.member_added", "group.member_added", "packet.sent", "packet.claimed"]
    assert all(set(e) == {"id", "type", "timestamp", "data"} and "." not in e["id"] for e in events)
    assert events[2]["data"]["packet"]["id"] == str(packet.id)
    assert events[3]["data"]["claim"]["user"] == member.username
    assert next_url.endswith(f"/api/v1/events?after={events[-1]['id']}")
    assert login(member).get("/api/v1/events", {"after": events[-1]["id"]}).json() == {"results": [], "next": next_url}


@pytest.mark.django_db
def test_a_non_member_never_sees_a_groups_events(api):
    # Given a group's events, and an outsider with a group of their own
    sender, member, outsider = UserFactory(balance=10_000), UserFactory(), UserFactory()
    group = group_with_members(sender, [member])
    packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=2, share_amount=100)
    own_group = group_with_members(outsider, [])
    member_events, _ = follow(login(member))

    # When the outsider follows the feed, from the start and from the group's event ids
    client = login(outsider)
    events, _ = follow(client)
    probes = [client.get("/api/v1/events", {"after": e["id"]}) for e in member_events]

    # Then they see only their own group's event, and the others' ids are unknown to them
    assert [e["data"] for e in events] == [{"group": str(own_group.id), "user": outsider.username}]
    assert {r.status_code for r in probes} == {404}
    assert probes[0].json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/events").status_code == 401


@pytest.mark.django_db
def test_a_page_holds_at_most_100_events_and_next_leads_to_the_rest():
    owner = UserFactory()
    group = group_with_members(owner, [])
    with transaction.atomic():
        for n in range(249):
            event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group.id, data=marked(group, n=n))
    client = login(owner)

    first = client.get("/api/v1/events").json()
    events, _ = follow(client)

    assert len(first["results"]) == 100
    assert len(events) == 250
    assert [e["data"].get("n") for e in events[1:]] == list(range(249))


@pytest.mark.django_db
@pytest.mark.parametrize("after", ["nope", "evt_", "evt_99999999", "evt_1.5", "x" * 300])
def test_an_unknown_after_is_404(after):
    client = login(UserFactory())
    response = client.get("/api/v1/events", {"after": after})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_follower_sees_every_event_once_in_order_when_transactions_commit_out_of_order():
    # Given a member following the feed on its own thread, polling all the time
    owner = UserFactory()
    group = group_with_members(owner, [])
    client = login(owner)
    seen: list[dict] = []
    stop = threading.Event()

    def follower():
        url = "/api/v1/events"
        try:
            while True:
                body = client.get(url).json()
                seen.extend(body["results"])
                url = body["next"]
                if stop.is_set() and not body["results"]:
                    return
                time.sleep(0.005)
        finally:
            connections.close_all()

    thread = threading.Thread(target=follower)
    thread.start()

    # When a transaction records an event and stays open while later ones record and commit
    held_open, release = threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group.id, data=marked(group, n="held"))
                held_open.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert held_open.wait(timeout=10)
    for n in range(30):
        with transaction.atomic():
            event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group.id, data=marked(group, n=n))
    time.sleep(0.3)  # the follower polls past them while the first transaction is still open
    early = [e["data"].get("n") for e in seen]
    release.set()
    writer.join()
    for n in range(30, 60):
        with transaction.atomic():
            event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group.id, data=marked(group, n=n))
    stop.set()
    thread.join(timeout=60)

    # Then the follower saw every event exactly once: the late-committing one after those that
    # committed before it, though its id is smaller than theirs
    ns = [e["data"].get("n") for e in seen]
    assert "held" not in early and 29 in early
    assert sorted(map(str, ns)) == sorted(map(str, [None, "held", *range(60)]))
    assert len({e["id"] for e in seen}) == len(seen) == 62
    assert ns.index("held") > ns.index(29)
    held = Event.objects.get(data__n="held")
    assert held.id < Event.objects.get(data__n=0).id
    assert held.position > Event.objects.get(data__n=29).position


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_writers_and_followers_agree_on_one_order_with_nothing_lost():
    # Given members of one group and writers recording events concurrently from many threads
    owner = UserFactory()
    group = group_with_members(owner, [])
    done = threading.Event()
    followers = {n: [] for n in range(3)}

    def write(worker):
        try:
            for n in range(40):
                with transaction.atomic():
                    event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group.id, data=marked(group, w=worker, n=n))
                    if n % 7 == 0:
                        time.sleep(0.02)  # some transactions stay open while others commit
        finally:
            connections.close_all()

    def follow_all(n):
        client, url = login(owner), "/api/v1/events"
        try:
            while True:
                body = client.get(url).json()
                followers[n].extend(e["id"] for e in body["results"])
                url = body["next"]
                if done.is_set() and not body["results"]:
                    return
        finally:
            connections.close_all()

    readers = [threading.Thread(target=follow_all, args=(n,)) for n in followers]
    writers = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join(timeout=60)

    # Then every follower saw all 241 events once, in the same order
    expected = [e.public_id for e in Event.objects.filter(group_id=group.id).order_by("position")]
    assert len(expected) == 241
    for ids in followers.values():
        assert ids == expected


@pytest.mark.django_db
def test_the_feed_is_in_the_schema():
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/events"]["get"]
    assert operation["operationId"] == "events_list"
    assert {p["name"] for p in operation["parameters"]} == {"after"}
    assert {"200", "401", "404"} <= set(operation["responses"])
