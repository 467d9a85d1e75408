"""event_record_many, the outbox's batch insert: rows in the order given, data as given, on
either form `config.sql_rows` renders (a VALUES list for a few rows, one JSON document for more),
on whichever database the suite runs."""

import uuid

import pytest
from django.db import transaction

from config.sql_rows import VALUES_UP_TO
from events.models import Event
from events.services import NewEvent, event_record_many
from redpackets.models import ChatGroup
from tests.factories import UserFactory


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, VALUES_UP_TO, VALUES_UP_TO + 1, 40])
def test_a_batch_of_events_is_stored_in_order_with_its_data_and_keys(count):
    group = ChatGroup.objects.create(name="Family", owner=UserFactory())
    events = [
        NewEvent(type="packet.claimed", group_id=group.id, subject=str(uuid.uuid4()),
                 data={"n": n, "text": 'quotes " and \\ backslashes, 红包', "nested": {"list": [n, None, True]}},
                 unique_key=f"key-{n}" if n % 2 else None)
        for n in range(count)
    ]

    with transaction.atomic():
        stored = event_record_many(events)

    rows = list(Event.objects.filter(group_id=group.id).order_by("id"))
    assert [row.data for row in rows] == [event.data for event in events]
    assert [(row.subject, row.unique_key, row.type) for row in rows] == [
        (event.subject, event.unique_key, event.type) for event in events]
    assert sorted(str(key) for _, key in stored) == sorted(str(event.unique_key) for event in events)


@pytest.mark.django_db
@pytest.mark.parametrize("count", [2, VALUES_UP_TO + 4])
def test_an_event_whose_key_is_taken_is_left_out_of_a_batch(count):
    group = ChatGroup.objects.create(name="Family", owner=UserFactory())
    with transaction.atomic():
        event_record_many([NewEvent(type="packet.finished", group_id=group.id, data={}, unique_key="packet-end:1")])
    batch = [NewEvent(type="packet.expired", group_id=group.id, data={"n": n}, unique_key=f"packet-end:{n}")
             for n in range(count)]

    with transaction.atomic():
        stored = event_record_many(batch)

    assert sorted(key for _, key in stored) == sorted(f"packet-end:{n}" for n in range(count) if n != 1)
    assert Event.objects.get(unique_key="packet-end:1").type == "packet.finished"
