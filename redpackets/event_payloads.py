"""What the packet and group events carry, handed to events.services.event_record.

A packet is rendered exactly as GET /api/v1/packets/{id} renders it (same
selector, same serializer), with my_claim null: a field added to the packet
view appears in its events too. packet.sent renders the packet just sent without
reading it (or its shares) back, and the send's response is that same rendering.
"""

import uuid
from datetime import datetime

from django.contrib.auth.models import AnonymousUser
from rest_framework.fields import DateTimeField

from events.models import EventType
from events.services import NewEvent, event_record, event_record_many
from redpackets import selectors
from redpackets.models import Packet, Share

_datetime = DateTimeField()


def packet_end_key(packet_id: uuid.UUID) -> str:
    """One end per packet, finished or expired: the events' unique key."""
    return f"packet-end:{packet_id}"


def _rendered(view: selectors.PacketView) -> dict:
    (rendered,) = _rendered_many([view])
    return rendered


def _rendered_many(views: list[selectors.PacketView]) -> list[dict]:
    # Imported here: redpackets.apis imports the services, which import this module.
    from redpackets.apis import PacketOutputSerializer

    # One serializer for them all: DRF copies a serializer's fields for each instance.
    return PacketOutputSerializer(views, many=True).data


def packet_sent_rendered(packet: Packet) -> dict:
    """A packet `packet_send` has just created, as GET /packets/{id} shows it to anyone (nobody has
    claimed it, so my_claim is null whoever asks): packet.sent's packet and the send's response.

    Rendered once per instance, without reading it back."""
    if not hasattr(packet, "_sent_rendered"):
        packet._sent_rendered = _rendered(selectors.packet_view_of_sent(packet, viewer=AnonymousUser()))
    return packet._sent_rendered


def record_packet_sent(*, packet: Packet) -> None:
    event_record(type=EventType.PACKET_SENT, group_id=packet.group_id, subject=str(packet.id),
                 data={"packet": packet_sent_rendered(packet)})


def record_packet_claimed(*, packet_id: uuid.UUID, group_id: uuid.UUID, username: str, amount: int,
                          claimed_at: datetime) -> None:
    event_record(
        type=EventType.PACKET_CLAIMED, group_id=group_id, subject=str(packet_id),
        data={"packet": str(packet_id), "group": str(group_id),
              "claim": {"user": username, "amount": amount, "claimed_at": _datetime.to_representation(claimed_at)}},
    )


def record_packet_finished(view: selectors.PacketView) -> bool:
    """packet.finished of a packet whose shares are all claimed, unless it had its end already
    (the events' unique key: one end per packet, finished or expired); True when recorded."""
    packet = view.packet
    return event_record(
        type=EventType.PACKET_FINISHED, group_id=packet.group_id, subject=str(packet.id),
        unique_key=packet_end_key(packet.id), data={"packet": _rendered(view)},
    ) is not None


def record_packets_settled(settled: list[tuple[Packet, list[Share], EventType]]) -> None:
    """The end events of packets their refunds have just settled, in one INSERT: each
    (packet, every one of its shares as the refund holds them with claimed_by fetched, type)
    is rendered without reading it back. A packet that had its end already keeps it."""
    rendered = _rendered_many([selectors.packet_view_of_shares(packet, shares=shares, viewer=AnonymousUser())
                               for packet, shares, _ in settled])
    event_record_many([
        NewEvent(type=type, group_id=packet.group_id, subject=str(packet.id), unique_key=packet_end_key(packet.id),
                 data={"packet": packet_rendered})
        for (packet, _, type), packet_rendered in zip(settled, rendered, strict=True)
    ])


def record_member_added(*, group_id: uuid.UUID, username: str) -> None:
    event_record(type=EventType.GROUP_MEMBER_ADDED, group_id=group_id, subject=str(group_id),
                 data={"group": str(group_id), "user": username})
