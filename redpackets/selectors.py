"""Selectors that read: groups, packet views (status derived from shares), escrow checks."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, Max, Min, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.errors import NotFound
from redpackets.models import ChatGroup, Packet, PacketKind, PacketStatus, Share
from wallets.models import Account, AccountKind


def groups_of_member(*, viewer: AbstractBaseUser) -> QuerySet[ChatGroup]:
    return ChatGroup.objects.filter(memberships__user=viewer).select_related("owner").prefetch_related("members")


def group_for_member(*, group_id: uuid.UUID, viewer: AbstractBaseUser) -> ChatGroup:
    group = groups_of_member(viewer=viewer).filter(id=group_id).first()
    if group is None:
        raise NotFound("No such group.")
    return group


@dataclass(frozen=True)
class ClaimView:
    user: str
    amount: int
    claimed_at: datetime
    best_luck: bool


@dataclass(frozen=True)
class PacketView:
    packet: Packet
    status: str
    claimed_count: int
    claimed_amount: int
    remaining_amount: int
    finished_at: datetime | None
    claims: list[ClaimView]
    my_claim: ClaimView | None


def _claimed(field: str, aggregate):
    shares = Share.objects.filter(packet=OuterRef("pk"), claimed_by__isnull=False).order_by()
    return Coalesce(
        Subquery(shares.values("packet").annotate(v=aggregate(field)).values("v")[:1]),
        None if aggregate is Max else 0,
    )


def packets_with_progress() -> QuerySet[Packet]:
    """Packets annotated with what their claimed shares add up to."""
    return Packet.objects.select_related("sender", "recipient", "group").annotate(
        claimed_count=_claimed("id", Count),
        claimed_amount=_claimed("amount", Sum),
        last_claimed_at=_claimed("claimed_at", Max),
    )


def _packets_with_claims() -> QuerySet[Packet]:
    claimed_shares = (
        Share.objects.filter(claimed_by__isnull=False).select_related("claimed_by").order_by("claimed_at", "seq")
    )
    return packets_with_progress().prefetch_related(
        Prefetch("shares", queryset=claimed_shares, to_attr="claimed_shares")
    )


def packet_status(packet: Packet, *, now: datetime | None = None) -> tuple[str, datetime | None]:
    """(status, finished_at) of a packet from `packets_with_progress`.

    finished: every share claimed (at the last claim); expired: settled by the
    refund, or past expires_at; active otherwise.
    """
    now = now or timezone.now()
    if packet.claimed_count == packet.share_count:
        return PacketStatus.FINISHED, packet.last_claimed_at
    if packet.settled_at is not None or now >= packet.expires_at:
        return PacketStatus.EXPIRED, min(t for t in (packet.settled_at, packet.expires_at) if t is not None)
    return PacketStatus.ACTIVE, None


def packet_view(packet: Packet, *, viewer: AbstractBaseUser) -> PacketView:
    """The public view of a packet fetched by `_packets_with_claims`."""
    status, finished_at = packet_status(packet)
    shares = packet.claimed_shares
    best = None
    if status == PacketStatus.FINISHED and packet.kind == PacketKind.RANDOM:
        # Shares are in claim order, so max() keeps the earliest of equal amounts.
        best = max(shares, key=lambda s: s.amount)
    claims = [
        ClaimView(user=s.claimed_by.username, amount=s.amount, claimed_at=s.claimed_at, best_luck=s is best)
        for s in shares
    ]
    my_claim = next((c for c, s in zip(claims, shares) if s.claimed_by_id == viewer.pk), None)
    return PacketView(
        packet=packet,
        status=status,
        claimed_count=packet.claimed_count,
        claimed_amount=packet.claimed_amount,
        remaining_amount=packet.total_amount - packet.claimed_amount if status == PacketStatus.ACTIVE else 0,
        finished_at=finished_at,
        claims=claims,
        my_claim=my_claim,
    )


def packet_detail(*, packet_id: uuid.UUID, viewer: AbstractBaseUser) -> PacketView:
    packet = _packets_with_claims().filter(id=packet_id, group__memberships__user=viewer).first()
    if packet is None:
        raise NotFound("No such packet.")
    return packet_view(packet, viewer=viewer)


def group_packets(*, group_id: uuid.UUID, viewer: AbstractBaseUser) -> QuerySet[Packet]:
    """A member's view of a group's packets, newest first; map pages through `packet_view`."""
    group_for_member(group_id=group_id, viewer=viewer)
    return _packets_with_claims().filter(group_id=group_id).order_by("-created_at")


def sweep_lag_seconds(*, now: datetime | None = None) -> float:
    """How long the oldest expired packet has waited for its refund; 0 when none waits."""
    now = now or timezone.now()
    oldest = Packet.objects.filter(settled_at__isnull=True, expires_at__lte=now).aggregate(at=Min("expires_at"))["at"]
    return (now - oldest).total_seconds() if oldest else 0.0


def escrow_reconcile() -> list[str]:
    """Reconciliation check: escrow holds exactly the free shares of unsettled packets,
    and every packet's claims plus refund plus free shares equal its total."""
    problems = []
    for escrow in Account.objects.filter(kind=AccountKind.ESCROW).annotate(held=Sum("entries__amount")):
        free = Share.objects.filter(
            packet__escrow_account=escrow, claimed_by__isnull=True, refunded=False
        ).aggregate(total=Coalesce(Sum("amount"), 0))["total"]
        if (escrow.held or 0) != free:
            problems.append(f"{escrow}: holds {escrow.held or 0} but the free shares sum to {free}")
    broken = (
        Packet.objects.annotate(
            claimed=Coalesce(Sum("shares__amount", filter=Q(shares__claimed_by__isnull=False)), 0),
            refunded_shares=Coalesce(Sum("shares__amount", filter=Q(shares__refunded=True)), 0),
            free=Coalesce(Sum("shares__amount", filter=Q(shares__claimed_by__isnull=True, shares__refunded=False)), 0),
        )
        .exclude(Q(total_amount=F("claimed") + F("refunded_shares") + F("free"))
                 & Q(refunded_amount=F("refunded_shares")))
        .values_list("id", flat=True)[:20]
    )
    problems += [f"packet {packet_id}: claims + refund + free shares do not equal its total" for packet_id in broken]
    settled_with_free = Packet.objects.filter(
        settled_at__isnull=False, shares__claimed_by__isnull=True, shares__refunded=False
    ).values_list("id", flat=True).distinct()[:20]
    problems += [f"packet {packet_id}: settled but still has free shares" for packet_id in settled_with_free]
    return problems
