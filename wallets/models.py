"""Wallets on an append-only, double-entry ledger, in integer minor units.

- An Account is a user's wallet or a system account (external funding, packet
  escrow, adjustments).
- A LedgerTransaction is one money movement; its LedgerEntry rows sum to zero.
- Only wallets keep a stored balance (with a CHECK that it is never negative), so
  a claim writes only the claimer's own wallet row: system accounts are hot (every
  claim touches escrow), so their balance is the sum of their entries.

The database enforces the rules (see migrations): balanced transactions through a
deferred constraint trigger on PostgreSQL, no UPDATE or DELETE of posted rows,
non-negative wallet balances.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class AccountKind(models.TextChoices):
    WALLET = "wallet", "User wallet"
    ESCROW = "escrow", "Packet escrow"
    EXTERNAL = "external", "External (funding, adjustments)"


class SystemAccount(models.TextChoices):
    """Codes of the system accounts, one per currency."""

    FUNDING = "funding", "External funding (topups)"
    ESCROW = "escrow", "Packet escrow"
    ADJUSTMENTS = "adjustments", "Operator adjustments"


SYSTEM_ACCOUNT_KINDS = {
    SystemAccount.FUNDING: AccountKind.EXTERNAL,
    SystemAccount.ESCROW: AccountKind.ESCROW,
    SystemAccount.ADJUSTMENTS: AccountKind.EXTERNAL,
}


class Account(models.Model):
    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=AccountKind.choices)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="wallet"
    )
    code = models.CharField(max_length=32, blank=True, choices=SystemAccount.choices)
    currency = models.CharField(max_length=3, default="CNY")
    # Stored for wallets only: system accounts are the sum of their entries.
    balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="account_balance_not_negative"),
            models.CheckConstraint(
                condition=(Q(kind=AccountKind.WALLET, user__isnull=False, code="")
                           | (~Q(kind=AccountKind.WALLET) & Q(user__isnull=True) & ~Q(code=""))),
                name="account_wallet_has_user_system_has_code",
            ),
            models.CheckConstraint(
                condition=Q(kind=AccountKind.WALLET) | Q(balance=0), name="account_system_balance_not_stored"
            ),
            models.UniqueConstraint(fields=["code", "currency"], condition=~Q(code=""), name="account_system_code_unique"),
        ]

    def __str__(self) -> str:
        if self.kind == AccountKind.WALLET:
            return f"Wallet of {self.user}"
        return f"{self.get_code_display()} ({self.currency})"


class Wallet(Account):
    """The users' accounts, for the admin."""

    class Meta:
        proxy = True


class TransactionKind(models.TextChoices):
    TOPUP = "topup", "Topup"
    PACKET_SEND = "packet_send", "Packet sent"
    PACKET_CLAIM = "packet_claim", "Packet claimed"
    PACKET_REFUND = "packet_refund", "Packet refunded"
    ADJUSTMENT = "adjustment", "Adjustment"


class LedgerTransaction(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=TransactionKind.choices)
    # A reference, not a foreign key: the ledger sits below the packets app.
    packet_id = models.UUIDField(null=True, blank=True, db_index=True)
    memo = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            # A packet is funded once and refunded at most once, whatever retries.
            models.UniqueConstraint(
                fields=["packet_id", "kind"],
                condition=Q(kind__in=["packet_send", "packet_refund"]),
                name="ledger_one_send_and_one_refund_per_packet",
            ),
            models.CheckConstraint(
                condition=Q(packet_id__isnull=True) | Q(kind__startswith="packet_"),
                name="ledger_packet_reference_only_on_packet_kinds",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.id}"


class LedgerEntry(models.Model):
    id = models.BigAutoField(primary_key=True)
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    # Signed: positive flows into the account, negative out of it.
    amount = models.BigIntegerField()
    # The wallet's balance right after this entry; null on system accounts.
    balance_after = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "-id"], name="ledger_entry_account_recent")]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_entry_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__isnull=True) | Q(balance_after__gte=0),
                name="ledger_entry_balance_after_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+d} on {self.account}"


class PaymentPin(models.Model):
    """A user's payment PIN (keyed hash, see wallets/pins.py) and the failed tries that lock it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="payment_pin")
    pin_hash = models.CharField(max_length=256)
    # The PIN key that made pin_hash; blank for a v1 PBKDF2 hash (rehashed on the next right PIN).
    pin_key_id = models.CharField(max_length=16, blank=True, default="")
    failed_attempts = models.PositiveSmallIntegerField(default=0)
    first_failed_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"PIN of {self.user}"


class IdempotencyRecord(models.Model):
    """One Idempotency-Key of one user, and the response it produced."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]


class AdjustmentStatus(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved and posted"
    REJECTED = "rejected", "Rejected"


class AdjustmentRequest(models.Model):
    """A balance adjustment by four eyes: one operator asks, a second one approves
    (and it is posted) or rejects. Kept for good; a decided request never changes
    (PostgreSQL trigger, see the migration)."""

    id = models.BigAutoField(primary_key=True)
    wallet = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="adjustment_requests")
    # Signed minor units: negative takes money out of the wallet.
    amount = models.BigIntegerField()
    reason = models.CharField(max_length=255)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=8, choices=AdjustmentStatus.choices, default=AdjustmentStatus.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=255, blank=True)
    # The posting an approval made: one per request, whatever double clicks or concurrent approvers.
    transaction = models.OneToOneField(
        LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="adjustment_request"
    )

    class Meta:
        permissions = [("approve_adjustmentrequest", "Can approve or reject balance adjustments")]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="adjustment_request_amount_not_zero"),
            models.CheckConstraint(condition=~Q(reason=""), name="adjustment_request_has_reason"),
            models.CheckConstraint(
                condition=Q(decided_by__isnull=True) | ~Q(decided_by=models.F("requested_by")),
                name="adjustment_request_decided_by_another_operator",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status=AdjustmentStatus.PENDING, decided_by__isnull=True, decided_at__isnull=True,
                      transaction__isnull=True)
                    | Q(status=AdjustmentStatus.APPROVED, decided_by__isnull=False, decided_at__isnull=False,
                        transaction__isnull=False)
                    | (Q(status=AdjustmentStatus.REJECTED, decided_by__isnull=False, decided_at__isnull=False,
                         transaction__isnull=True) & ~Q(decision_note=""))
                ),
                name="adjustment_request_decision_fields_match_status",
            ),
        ]

    def __str__(self) -> str:
        return f"Adjustment request #{self.pk}"


class PinUnlock(models.Model):
    """Audit record: support lifted a user's PIN lock, and why. Append-only."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    unlocked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=255)
    # The lock that was lifted: it would have lasted until then.
    lifted_lock_until = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "PIN unlock"
        constraints = [
            models.CheckConstraint(condition=~Q(reason=""), name="pin_unlock_has_reason"),
            models.CheckConstraint(condition=~Q(unlocked_by=models.F("user")), name="pin_unlock_not_by_its_owner"),
        ]

    def __str__(self) -> str:
        return f"PIN unlock #{self.pk} of {self.user}"


class ReconciliationMode(models.TextChoices):
    FULL = "full", "Full: the whole ledger"
    INCREMENTAL = "incremental", "Incremental: what was posted after the checkpoint"


class ReconciliationRun(models.Model):
    """One run of the reconciliation (wallets/services.py `reconciliation_run`), kept for good.

    A clean run records the checkpoint it verified the ledger up to: every entry at or
    below `checkpoint_position` had committed when the run took its snapshot, and the
    system accounts' balances at that position; an incremental run starts from the
    highest checkpoint."""

    id = models.BigAutoField(primary_key=True)
    mode = models.CharField(max_length=11, choices=ReconciliationMode.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    started_at = models.DateTimeField()
    # Null while it runs, or when it died before it could record its end.
    finished_at = models.DateTimeField(null=True, blank=True)
    # Null until it finished; a run that raised is not ok and says why in `error`.
    ok = models.BooleanField(null=True)
    problems = models.JSONField(default=list)
    # The figures of the report (wallets/selectors.py ReconciliationReport), problems aside.
    report = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    entries_checked = models.BigIntegerField(default=0)
    # Incremental: the checkpoint it started from (entries above it were checked).
    from_position = models.BigIntegerField(null=True, blank=True)
    checkpoint_position = models.BigIntegerField(null=True, blank=True)
    # {system account id: sum of its entries up to checkpoint_position}
    checkpoint_balances = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["-checkpoint_position"], condition=Q(checkpoint_position__isnull=False),
                         name="reconciliation_checkpoints"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(checkpoint_position__isnull=True, checkpoint_balances__isnull=True)
                | Q(ok=True, checkpoint_position__isnull=False, checkpoint_balances__isnull=False),
                name="reconciliation_checkpoint_only_from_a_clean_run",
            ),
            models.CheckConstraint(
                condition=Q(mode="incremental") | Q(from_position__isnull=True),
                name="reconciliation_only_incremental_starts_from_a_checkpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_mode_display().split(':')[0]} reconciliation #{self.pk}"

    @property
    def duration(self):
        return self.finished_at - self.started_at if self.finished_at else None
