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
from django.db.models.functions import Length
from django.db.models.lookups import Exact
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
    # Past expires_at, the refund of the remainder not yet posted.
    EXPIRING = "expiring", "Expiring"
    EXPIRED = "expired", "Expired"


SPLIT_SEED_BYTES = 32  # allocation.SEED_BYTES; a literal here, as migrations freeze it
PASSPHRASE_HMAC_BYTES = 32  # HMAC-SHA256
PASSPHRASE_MAX_WRONG_TRIES = 5  # the 5th wrong try locks the member out of the packet


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
    # rp-split-v1 (random packets): the seed the shares were computed from, secret
    # until the packet is finished or expired, and the per-share cap in force at send.
    split_seed = models.BinaryField(null=True, blank=True, editable=False)
    share_cap = models.BigIntegerField(null=True, blank=True)
    # Passphrase packets: an HMAC of the normalised passphrase under a server key
    # (redpackets.passphrases), never the text.
    passphrase_hmac = models.BinaryField(null=True, blank=True, editable=False)
    hint = models.CharField(max_length=100, blank=True)

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
            models.CheckConstraint(
                condition=Q(split_seed__isnull=True) | Q(Exact(Length("split_seed"), SPLIT_SEED_BYTES)),
                name="packet_split_seed_length",
            ),
            models.CheckConstraint(
                condition=Q(kind=PacketKind.RANDOM) | Q(split_seed__isnull=True, share_cap__isnull=True),
                name="packet_fixed_has_no_split_seed",
            ),
            models.CheckConstraint(
                condition=Q(split_seed__isnull=True, share_cap__isnull=True)
                | Q(split_seed__isnull=False, share_cap__gte=1, total_amount__lte=models.F("share_count") * models.F("share_cap")),
                name="packet_split_seed_with_cap_within_it",
            ),
            models.CheckConstraint(
                condition=Q(passphrase_hmac__isnull=True) | Q(Exact(Length("passphrase_hmac"), PASSPHRASE_HMAC_BYTES)),
                name="packet_passphrase_hmac_length",
            ),
            models.CheckConstraint(
                condition=Q(passphrase_hmac__isnull=False) | Q(hint=""), name="packet_hint_only_with_passphrase"
            ),
        ]

    def __str__(self) -> str:
        total = format_money(self.total_amount, self.currency)
        return f"{self.get_kind_display()} packet {total} / {self.share_count} from {self.sender}"


class Share(models.Model):
    id = models.BigAutoField(primary_key=True)
    packet = models.ForeignKey(Packet, on_delete=models.PROTECT, related_name="shares")
    seq = models.PositiveSmallIntegerField()
    amount = models.BigIntegerField()
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="claimed_shares",
        db_index=False,  # share_claimed_by below, without the free shares
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
            # A member's claims (and the user FK's checks). Free shares are left out: with them in, a planner that
            # believes few shares are free (most old ones claimed) scanned every free share of the table through
            # this index for a claim's "any share still free?" instead of the packet's range of the one above.
            models.Index(fields=["claimed_by"], condition=Q(claimed_by__isnull=False), name="share_claimed_by"),
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


class PassphraseAttempt(models.Model):
    """One member's wrong passphrase tries on one packet, counted in one row.

    The count goes up by one per wrong try (an upsert, so concurrent tries take
    turns on the row) and never past PASSPHRASE_MAX_WRONG_TRIES: at that count the
    member is locked out of the packet.
    """

    id = models.BigAutoField(primary_key=True)
    packet = models.ForeignKey(Packet, on_delete=models.PROTECT, related_name="passphrase_attempts")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    wrong_tries = models.PositiveSmallIntegerField()
    last_tried_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["packet", "user"], name="passphrase_attempt_one_row_per_member"),
            models.CheckConstraint(
                condition=Q(wrong_tries__gte=1, wrong_tries__lte=PASSPHRASE_MAX_WRONG_TRIES),
                name="passphrase_attempt_wrong_tries_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} tried {self.wrong_tries} wrong passphrase(s) on {self.packet_id}"
