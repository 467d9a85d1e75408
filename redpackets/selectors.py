"""Selectors that read: groups, packet views (status derived from shares), escrow checks."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, F, Max, Min, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.errors import NotFound
from redpackets import allocation
from redpackets.models import ChatGroup, GroupMembership, Packet, PacketKind, PacketStatus, Share
from wallets.models import Account, AccountKind
from wallets.selectors import ReconciliationScope


def groups_of_member(*, viewer: AbstractBaseUser) -> QuerySet[ChatGroup]:
    return ChatGroup.objects.filter(memberships__user=viewer).select_related("owner").prefetch_related("members")


def group_ids_of_member(*, user: AbstractBaseUser) -> QuerySet:
    """The ids of the groups `user` is in: whose events they see (settings.EVENTS_GROUPS_OF_USER)."""
    return GroupMembership.objects.filter(user=user).values_list("group_id", flat=True)


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
    share_index: int | None  # published with the proof


@dataclass(frozen=True)
class SplitProof:
    """What a member needs to recompute a settled random packet's shares (rp-split-v1)."""

    algorithm: str
    seed: str
    cap: int
    shares: list[int]


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
    commitment: str | None
    proof: SplitProof | None

    @property
    def has_passphrase(self) -> bool:
        return self.packet.passphrase_hmac is not None


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
    # Claimed and refunded shares: the claims, and once settled every share, for the proof.
    # A free share's amount never leaves the database.
    settled_shares = (
        Share.objects.filter(Q(claimed_by__isnull=False) | Q(refunded=True))
        .select_related("claimed_by")
        .order_by("claimed_at", "seq")
    )
    return packets_with_progress().prefetch_related(
        Prefetch("shares", queryset=settled_shares, to_attr="settled_shares")
    )


def packet_status(packet: Packet, *, now: datetime | None = None) -> tuple[str, datetime | None]:
    """(status, finished_at) of a packet from `packets_with_progress`.

    finished: every share claimed (at the last claim); expired: settled, its
    refund posted; expiring: past expires_at, the refund not posted yet (claims
    are refused, the remainder is on its way back); active otherwise. An ended
    packet's finished_at is when it stopped taking claims.
    """
    now = now or timezone.now()
    if packet.claimed_count == packet.share_count:
        return PacketStatus.FINISHED, packet.last_claimed_at
    if packet.settled_at is not None:
        return PacketStatus.EXPIRED, min(packet.settled_at, packet.expires_at)
    if now >= packet.expires_at:
        return PacketStatus.EXPIRING, packet.expires_at
    return PacketStatus.ACTIVE, None


def packet_commitment(packet: Packet) -> str | None:
    """The rp-split-v1 commitment of a random packet; None for fixed (and pre-v1.1) ones."""
    if packet.split_seed is None:
        return None
    return allocation.commitment(
        packet_id=str(packet.id), total=packet.total_amount, share_count=packet.share_count,
        cap=packet.share_cap, seed=bytes(packet.split_seed),
    )


def packet_view(packet: Packet, *, viewer: AbstractBaseUser) -> PacketView:
    """The public view of a packet fetched by `_packets_with_claims`."""
    status, finished_at = packet_status(packet)
    shares = [s for s in packet.settled_shares if s.claimed_by_id is not None]
    best = None
    if status == PacketStatus.FINISHED and packet.kind == PacketKind.RANDOM:
        # Shares are in claim order, so max() keeps the earliest of equal amounts.
        best = max(shares, key=lambda s: s.amount)
    # The seed and the claims' share numbers come out together, once no share is left to claim.
    settled = status in (PacketStatus.FINISHED, PacketStatus.EXPIRED)
    proof = None
    if settled and packet.split_seed is not None:
        proof = SplitProof(
            algorithm=allocation.ALGORITHM,
            seed=bytes(packet.split_seed).hex(),
            cap=packet.share_cap,
            shares=[s.amount for s in sorted(packet.settled_shares, key=lambda s: s.seq)],
        )
    claims = [
        ClaimView(
            user=s.claimed_by.username, amount=s.amount, claimed_at=s.claimed_at, best_luck=s is best,
            share_index=s.seq if proof is not None else None,
        )
        for s in shares
    ]
    my_claim = next((c for c, s in zip(claims, shares) if s.claimed_by_id == viewer.pk), None)
    return PacketView(
        packet=packet,
        status=status,
        claimed_count=packet.claimed_count,
        claimed_amount=packet.claimed_amount,
        # Active: still claimable; expiring: on its way back to the sender.
        remaining_amount=(
            packet.total_amount - packet.claimed_amount
            if status in (PacketStatus.ACTIVE, PacketStatus.EXPIRING) else 0
        ),
        finished_at=finished_at,
        claims=claims,
        my_claim=my_claim,
        commitment=packet_commitment(packet),
        proof=proof,
    )


def packet_view_of_shares(packet: Packet, *, shares: list[Share], viewer: AbstractBaseUser) -> PacketView:
    """The view of a packet from its shares (claimed_by fetched; free ones may be left out), as a refund
    that holds them or a plain read sees them: what `_packets_with_claims` would read, without its subqueries."""
    claimed = [s for s in shares if s.claimed_by_id is not None]
    packet.claimed_count = len(claimed)
    packet.claimed_amount = sum(s.amount for s in claimed)
    packet.last_claimed_at = max((s.claimed_at for s in claimed), default=None)
    # _packets_with_claims' order: claims by time, then the refunded shares (NULL claimed_at sorts last).
    packet.settled_shares = sorted(
        (s for s in shares if s.claimed_by_id is not None or s.refunded),
        key=lambda s: (0, s.claimed_at, s.seq) if s.claimed_at is not None else (1, s.seq),
    )
    return packet_view(packet, viewer=viewer)


def packet_view_of_sent(packet: Packet, *, viewer: AbstractBaseUser) -> PacketView:
    """The view of a packet `packet_send` has just created, without reading it back: nothing is claimed yet."""
    packet.claimed_count, packet.claimed_amount, packet.last_claimed_at, packet.settled_shares = 0, 0, None, []
    return packet_view(packet, viewer=viewer)


def packet_detail(*, packet_id: uuid.UUID, viewer: AbstractBaseUser) -> PacketView:
    packet = _packets_with_claims().filter(id=packet_id, group__memberships__user=viewer).first()
    if packet is None:
        raise NotFound("No such packet.")
    return packet_view(packet, viewer=viewer)


def packet_detail_for_events(*, packet_id: uuid.UUID) -> PacketView:
    """The packet as every member sees it (my_claim null): what its events carry. Two key reads,
    the packet and its shares: the last claim of a packet renders its packet.finished with them."""
    packet = Packet.objects.select_related("sender", "recipient").get(id=packet_id)
    # Claimed and refunded shares only: a free share's amount never leaves the database.
    shares = list(Share.objects.filter(Q(claimed_by__isnull=False) | Q(refunded=True), packet_id=packet_id)
                  .select_related("claimed_by"))
    return packet_view_of_shares(packet, shares=shares, viewer=AnonymousUser())


def group_packets(*, group_id: uuid.UUID, viewer: AbstractBaseUser) -> QuerySet[Packet]:
    """A member's view of a group's packets, newest first; map pages through `packet_view`."""
    group_for_member(group_id=group_id, viewer=viewer)
    return _packets_with_claims().filter(group_id=group_id).order_by("-created_at")


def sweep_lag_seconds(*, now: datetime | None = None) -> float:
    """How long the oldest expired packet has waited for its refund; 0 when none waits."""
    now = now or timezone.now()
    oldest = Packet.objects.filter(settled_at__isnull=True, expires_at__lte=now).aggregate(at=Min("expires_at"))["at"]
    return (now - oldest).total_seconds() if oldest else 0.0


# Packets of an incremental run looked at per query (bind parameters are limited).
PACKETS_PER_QUERY = 5000


def escrow_reconcile(*, scope: ReconciliationScope) -> list[str]:
    """Reconciliation check: escrow holds exactly the free shares of unsettled packets,
    and every packet's claims plus refund plus free shares equal its total (in an
    incremental run: every packet with a posting after the checkpoint)."""
    problems = []
    # The free shares (the share_free_by_packet index: live packets only), each packet's escrow
    # looked up per share: PostgreSQL takes "unclaimed and not refunded" for a sixth of all the
    # shares (it assumes the two independent), and would hash every packet to join them.
    free_by_escrow = dict(
        Share.objects.filter(claimed_by__isnull=True, refunded=False)
        .annotate(escrow_id=Subquery(Packet.objects.filter(id=OuterRef("packet_id")).values("escrow_account_id")[:1]))
        .values("escrow_id").annotate(total=Sum("amount")).values_list("escrow_id", "total")
    )
    for escrow in Account.objects.filter(kind=AccountKind.ESCROW):
        held = scope.balances.get(escrow.id, 0)
        free = free_by_escrow.get(escrow.id, 0)
        if held != free:
            problems.append(f"{escrow}: holds {held} but the free shares sum to {free}")
    touched = scope.packet_ids()
    chunks = [None] if touched is None else [touched[i:i + PACKETS_PER_QUERY]
                                             for i in range(0, len(touched), PACKETS_PER_QUERY)]
    for chunk in chunks:
        packets = Packet.objects.all() if chunk is None else Packet.objects.filter(id__in=chunk)
        broken = (
            packets.annotate(
                claimed=Coalesce(Sum("shares__amount", filter=Q(shares__claimed_by__isnull=False)), 0),
                refunded_shares=Coalesce(Sum("shares__amount", filter=Q(shares__refunded=True)), 0),
                free=Coalesce(Sum("shares__amount", filter=Q(shares__claimed_by__isnull=True, shares__refunded=False)), 0),
            )
            .exclude(Q(total_amount=F("claimed") + F("refunded_shares") + F("free"))
                     & Q(refunded_amount=F("refunded_shares")))
            .values_list("id", flat=True)[:20]
        )
        problems += [f"packet {packet_id}: claims + refund + free shares do not equal its total" for packet_id in broken]
        settled_with_free = packets.filter(
            settled_at__isnull=False, shares__claimed_by__isnull=True, shares__refunded=False
        ).values_list("id", flat=True).distinct()[:20]
        problems += [f"packet {packet_id}: settled but still has free shares" for packet_id in settled_with_free]
    return problems
