"""Groups, packets and their shares.

A packet's shares are generated when it is sent and stored as rows. Claiming
takes one free share row (the unique (packet, claimed_by) constraint allows one
claim per member); expiry marks the remaining free rows refunded. A share is
therefore claimed xor refunded xor still free, and the packet row itself is never
written on the claim path: "finished" is derived from the shares.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from wallets.models import Account, LedgerTransaction
from wallets.money import format_money


class ChatGroup(models.Model):
    """A mirror of a chat group."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_groups")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="GroupMembership", related_name="chat_groups")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "chat group"

    def __str__(self) -> str:
        return self.name


class GroupMembership(models.Model):
    id = models.BigAutoField(primary_key=True)
    group = models.ForeignKey(ChatGroup, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="group_memberships")
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "user"], name="group_membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.group}"


class PacketKind(models.TextChoices):
    RANDOM = "random", "Random (lucky)"
    FIXED = "fixed", "Fixed"


class PacketStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    FINISHED = "finished", "Finished"
    EXPIRED = "expired", "Expired"


class Packet(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    group = models.ForeignKey(ChatGroup, on_delete=models.PROTECT, related_name="packets")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sent_packets")
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="exclusive_packets"
    )
    kind = models.CharField(max_length=8, choices=PacketKind.choices)
    greeting = models.CharField(max_length=100, blank=True)
    currency = models.CharField(max_length=3)
    total_amount = models.BigIntegerField()
    share_count = models.PositiveSmallIntegerField()
    # The escrow account holding the unclaimed money, read with the packet.
    escrow_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    # Set by packet_send from the same instant as expires_at.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    # Set once, by the expiry refund, under the packet row lock.
    settled_at = models.DateTimeField(null=True, blank=True)
    refunded_amount = models.BigIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["group", "-created_at"], name="packet_group_recent"),
            # The admin's packet list, newest first.
            models.Index(fields=["-created_at"], name="packet_recent"),
            models.Index(fields=["expires_at"], condition=Q(settled_at__isnull=True), name="packet_unsettled_by_expiry"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(share_count__gte=1), name="packet_share_count_positive"),
            models.CheckConstraint(condition=Q(total_amount__gte=models.F("share_count")), name="packet_min_one_unit_per_share"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=models.F("total_amount")),
                name="packet_refund_within_total",
            ),
            models.CheckConstraint(
                condition=Q(settled_at__isnull=False) | Q(refunded_amount=0), name="packet_refund_only_when_settled"
            ),
            models.CheckConstraint(condition=Q(recipient__isnull=True) | Q(share_count=1), name="packet_exclusive_has_one_share"),
            models.CheckConstraint(condition=Q(expires_at__gt=models.F("created_at")), name="packet_expires_after_creation"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} packet {format_money(self.total_amount, self.currency)} / {self.share_count} from {self.sender}"


class Share(models.Model):
    id = models.BigAutoField(primary_key=True)
    packet = models.ForeignKey(Packet, on_delete=models.PROTECT, related_name="shares")
    seq = models.PositiveSmallIntegerField()
    amount = models.BigIntegerField()
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="claimed_shares"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_transaction = models.OneToOneField(
        LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="claimed_share"
    )
    refunded = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # The claim path's only scan: free shares of one packet, in order.
            models.Index(
                fields=["packet", "seq"],
                condition=Q(claimed_by__isnull=True, refunded=False),
                name="share_free_by_packet",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["packet", "seq"], name="share_seq_unique"),
            models.UniqueConstraint(fields=["packet", "claimed_by"], name="share_one_claim_per_member"),
            models.CheckConstraint(condition=Q(amount__gte=1), name="share_amount_positive"),
            models.CheckConstraint(
                condition=(Q(claimed_by__isnull=True, claimed_at__isnull=True, claim_transaction__isnull=True)
                           | Q(claimed_by__isnull=False, claimed_at__isnull=False, claim_transaction__isnull=False)),
                name="share_claim_fields_together",
            ),
            models.CheckConstraint(
                condition=Q(claimed_by__isnull=True) | Q(refunded=False), name="share_claimed_xor_refunded"
            ),
        ]

    def __str__(self) -> str:
        return f"Share {self.seq} of {self.packet_id}: {self.amount}"
