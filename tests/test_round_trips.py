"""Round trips to the database per request on the hot paths: the figures docs/performance.md
gives ("Send path and per-request cost"), kept from creeping back up. Counts, not timings:
they do not move with the machine's load."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events.models import Event, EventType
from redpackets.services import packet_send
from tests.factories import PIN, UserFactory, group_with_members, login

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

# Counted with BEGIN, COMMIT and savepoints. A send: knox, PIN, BEGIN, key, the one read (group, member count,
# wallet, escrow), wallet UPDATE, transaction and entries, packet, shares, event, the key's answer, COMMIT.
SEND_AT_MOST = 12
# knox, the one read, BEGIN, share, wallet, transaction and entries, event, COMMIT, then "any share still free?".
CLAIM_AT_MOST = 9
TRIVIAL_READ_AT_MOST = 2
# The claim that takes a packet's last share, then, after its commit: BEGIN, the packet, its settled shares,
# packet.finished, COMMIT.
FINISHING_CLAIM_AT_MOST = CLAIM_AT_MOST + 5


def statements(client_call) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client_call()
    assert response.status_code < 300, response.content
    return [query["sql"] for query in captured.captured_queries]


@pytest.fixture
def room():
    sender = UserFactory(balance=100_000)
    members = [UserFactory() for _ in range(3)]
    group = group_with_members(sender, members)
    return sender, members, group


def test_a_send_stays_within_its_round_trips(room):
    sender, _, group = room
    api = login(sender)
    body = {"group": str(group.id), "kind": "fixed", "share_count": 3, "share_amount": 100, "pin": PIN}
    api.post("/api/v1/packets", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))  # system accounts exist

    sent = statements(lambda: api.post("/api/v1/packets", body, format="json",
                                       HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())))

    assert len(sent) <= SEND_AT_MOST, "\n".join(sent)
    # One INSERT for all the shares, whatever their number.
    assert sum("redpackets_share" in sql and sql.lstrip().upper().startswith("INSERT") for sql in sent) == 1


def test_a_paying_claim_and_the_trivial_read_stay_within_theirs(room):
    sender, members, group = room
    packet = packet_send(sender=sender, group_id=group.id, kind="fixed", share_count=3, total_amount=None,
                         share_amount=100, greeting="", recipient_username=None, passphrase=None, hint="")
    api = login(members[0])
    api.get("/api/v1/wallet")

    claim = statements(lambda: api.post(f"/api/v1/packets/{packet.id}/claim", {}, format="json"))
    read = statements(lambda: api.get("/api/v1/wallet"))

    assert len(claim) <= CLAIM_AT_MOST, "\n".join(claim)
    assert len(read) <= TRIVIAL_READ_AT_MOST, "\n".join(read)


def test_the_claim_that_finishes_a_packet_reads_it_once_for_packet_finished(room):
    sender, members, group = room
    packet = packet_send(sender=sender, group_id=group.id, kind="fixed", share_count=2, total_amount=None,
                         share_amount=100, greeting="", recipient_username=None, passphrase=None, hint="")
    login(members[0]).post(f"/api/v1/packets/{packet.id}/claim", {}, format="json")
    api = login(members[1])
    api.get("/api/v1/wallet")

    finishing = statements(lambda: api.post(f"/api/v1/packets/{packet.id}/claim", {}, format="json"))

    assert Event.objects.filter(subject=str(packet.id), type=EventType.PACKET_FINISHED).count() == 1
    assert len(finishing) <= FINISHING_CLAIM_AT_MOST, "\n".join(finishing)
