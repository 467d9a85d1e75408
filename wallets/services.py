"""Services that write: users and their wallets, topups, adjustments, the payment PIN, reconciliation runs."""

from contextlib import contextmanager
from dataclasses import asdict

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from knox.models import AuthToken

from config.errors import InsufficientFunds, InvalidPin, PermissionDenied, PinLocked, PinNotSet, ValidationFailed
from wallets.ledger import ledger_post, system_account
from wallets.models import (
    Account,
    AccountKind,
    AdjustmentRequest,
    AdjustmentStatus,
    LedgerTransaction,
    PaymentPin,
    PinUnlock,
    ReconciliationMode,
    ReconciliationRun,
    SystemAccount,
    TransactionKind,
)
from wallets.money import format_money
from wallets.pins import PinHash, pin_check, pin_hash
from wallets.selectors import ledger_committed_position, ledger_reconcile, reconciliation_checkpoint

User = get_user_model()


def wallet_get_or_create(*, user: AbstractBaseUser) -> Account:
    """The user's wallet; users made outside `user_register` (createsuperuser) get one on first use."""
    wallet = Account.objects.filter(user=user, kind=AccountKind.WALLET).first()
    if wallet is not None:
        return wallet
    try:
        with transaction.atomic():
            return Account.objects.create(user=user, kind=AccountKind.WALLET, currency=settings.DEFAULT_CURRENCY)
    except IntegrityError:
        return Account.objects.get(user=user, kind=AccountKind.WALLET)


@transaction.atomic
def user_register(*, username: str, password: str) -> AbstractBaseUser:
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationFailed.on("username", "A user with that username already exists.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password)
    except IntegrityError:
        raise ValidationFailed.on("username", "A user with that username already exists.") from None
    Account.objects.create(user=user, kind=AccountKind.WALLET, currency=settings.DEFAULT_CURRENCY)
    return user


def auth_token_issue(*, user: AbstractBaseUser) -> tuple[AuthToken, str]:
    """A new bearer token (stored hashed); the user's expired tokens and their oldest
    beyond AUTH_TOKENS_PER_USER are deleted (wallets/auth.py does not sweep them per request)."""
    instance, token = AuthToken.objects.create(user)
    keep = AuthToken.objects.filter(user=user).order_by("-created").values("pk")[: settings.AUTH_TOKENS_PER_USER]
    AuthToken.objects.filter(user=user).filter(Q(expiry__lt=timezone.now()) | ~Q(pk__in=keep)).delete()
    return instance, token


def wallet_topup(*, user: AbstractBaseUser, amount: int) -> LedgerTransaction:
    """Sandbox stand-in for a payment provider: money enters from external funding."""
    if not settings.SANDBOX_TOPUPS:
        raise PermissionDenied("Sandbox topups are switched off on this server.")
    wallet = wallet_get_or_create(user=user)
    with transaction.atomic():
        funding = system_account(code=SystemAccount.FUNDING, currency=wallet.currency)
        return ledger_post(
            kind=TransactionKind.TOPUP,
            wallet_legs={wallet.id: amount},
            system_legs={funding.id: -amount},
            created_by_id=user.pk,
            memo="Sandbox topup",
        )


@transaction.atomic
def wallet_adjust(*, wallet: Account, amount: int, reason: str, operator: AbstractBaseUser) -> LedgerTransaction:
    """An operator's correction, balanced against the adjustments account."""
    if not reason.strip():
        raise ValidationFailed.on("reason", "An adjustment needs a written reason.")
    if amount == 0:
        raise ValidationFailed.on("amount", "An adjustment moves a non-zero amount.")
    adjustments = system_account(code=SystemAccount.ADJUSTMENTS, currency=wallet.currency)
    return ledger_post(
        kind=TransactionKind.ADJUSTMENT,
        wallet_legs={wallet.id: amount},
        system_legs={adjustments.id: -amount},
        created_by_id=operator.pk,
        memo=reason.strip()[:255],
    )


def adjustment_request(*, wallet: Account, amount: int, reason: str, operator: AbstractBaseUser) -> AdjustmentRequest:
    """One operator asks for a balance adjustment; nothing moves until another approves it."""
    if not operator.has_perm("wallets.add_adjustmentrequest"):
        raise PermissionDenied("You may not request balance adjustments.")
    if wallet.kind != AccountKind.WALLET:
        raise ValidationFailed("Only a user's wallet is adjusted.")
    if not reason.strip():
        raise ValidationFailed.on("reason", "An adjustment needs a written reason.")
    if amount == 0:
        raise ValidationFailed.on("amount", "An adjustment moves a non-zero amount.")
    if wallet.balance + amount < 0:
        # Checked again when it is posted: the balance may change in between.
        raise InsufficientFunds(f"{wallet} holds {format_money(wallet.balance, wallet.currency)}: an adjustment of "
                                f"{format_money(amount, wallet.currency, signed=True)} would take it below zero.")
    return AdjustmentRequest.objects.create(wallet=wallet, amount=amount, reason=reason.strip()[:255],
                                            requested_by=operator)


def _adjustment_for_decision(*, adjustment_id: int, operator: AbstractBaseUser) -> AdjustmentRequest:
    """The pending request, row-locked until the caller's transaction ends: of two approvers
    (or a double click) the second waits here, then finds it decided."""
    adjustment = AdjustmentRequest.objects.select_for_update().select_related("wallet").get(pk=adjustment_id)
    if adjustment.status != AdjustmentStatus.PENDING:
        raise ValidationFailed(f"{adjustment} was decided already: {adjustment.get_status_display().lower()}.")
    if adjustment.requested_by_id == operator.pk:
        raise PermissionDenied("Nobody decides their own adjustment request: another operator must.")
    if not operator.has_perm("wallets.approve_adjustmentrequest"):
        raise PermissionDenied("You may not approve or reject balance adjustments.")
    return adjustment


@transaction.atomic
def adjustment_approve(*, adjustment_id: int, approver: AbstractBaseUser) -> AdjustmentRequest:
    """The second pair of eyes: posts the requested adjustment, exactly once."""
    adjustment = _adjustment_for_decision(adjustment_id=adjustment_id, operator=approver)
    posted = wallet_adjust(wallet=adjustment.wallet, amount=adjustment.amount, reason=adjustment.reason, operator=approver)
    adjustment.status, adjustment.transaction = AdjustmentStatus.APPROVED, posted
    adjustment.decided_by, adjustment.decided_at = approver, timezone.now()
    adjustment.save(update_fields=["status", "transaction", "decided_by", "decided_at"])
    return adjustment


@transaction.atomic
def adjustment_reject(*, adjustment_id: int, approver: AbstractBaseUser, note: str) -> AdjustmentRequest:
    if not note.strip():
        raise ValidationFailed.on("note", "A rejection says why.")
    adjustment = _adjustment_for_decision(adjustment_id=adjustment_id, operator=approver)
    adjustment.status, adjustment.decision_note = AdjustmentStatus.REJECTED, note.strip()[:255]
    adjustment.decided_by, adjustment.decided_at = approver, timezone.now()
    adjustment.save(update_fields=["status", "decision_note", "decided_by", "decided_at"])
    return adjustment


def pin_unlock(*, user: AbstractBaseUser, operator: AbstractBaseUser, reason: str) -> PinUnlock:
    """Support lifts a locked PIN (the user proved who they are some other way); audited.
    Touches the lock fields only."""
    if not operator.has_perm("wallets.add_pinunlock"):
        raise PermissionDenied("You may not unlock PINs.")
    if operator.pk == user.pk:
        raise PermissionDenied("Nobody unlocks their own PIN.")
    if not reason.strip():
        raise ValidationFailed.on("reason", "An unlock needs a written reason.")
    with transaction.atomic():
        record = PaymentPin.objects.select_for_update().filter(user=user).first()
        if record is None:
            raise PinNotSet("This user has no payment PIN.")
        if record.locked_until is None or record.locked_until <= timezone.now():
            raise ValidationFailed("This PIN is not locked.")
        lifted = record.locked_until
        record.failed_attempts, record.first_failed_at, record.locked_until = 0, None, None
        record.save(update_fields=["failed_attempts", "first_failed_at", "locked_until", "updated_at"])
        return PinUnlock.objects.create(user=user, unlocked_by=operator, reason=reason.strip()[:255],
                                        lifted_lock_until=lifted)


def pin_set(*, user: AbstractBaseUser, pin: str, current_pin: str | None = None) -> None:
    """Set the PIN, or change it by proving the current one (a wrong one counts as a try)."""
    with transaction.atomic():
        record = PaymentPin.objects.select_for_update().filter(user=user).first()
        if record is None:
            stored = pin_hash(user_id=user.pk, pin=pin)
            PaymentPin.objects.create(user=user, pin_hash=stored.digest, pin_key_id=stored.key_id)
            return
        if not current_pin:
            raise ValidationFailed.on("current_pin", "The current PIN is required to change it.")
        failure = _pin_try(record, current_pin)
        if failure is None:
            _pin_store(record, pin)
            return
    # Raised after the block commits, so the wrong try stays counted.
    raise failure


def pin_require_set(*, user: AbstractBaseUser) -> PaymentPin:
    """A user without a payment PIN cannot send, whatever else the request says.

    Returns the row as read (unlocked), which `pin_verify` takes to spare a second read.
    """
    record = _pin_unlocked(user=user)
    if record is None:
        raise PinNotSet()
    return record


def pin_verify(*, user: AbstractBaseUser, pin: str | None, read: PaymentPin | None = None) -> None:
    """Authorise a payment with the PIN, counting wrong tries in the database.

    Runs in its own transaction and must not be nested in another: a wrong try
    has to stay counted when the request then fails. `read`: the row `pin_require_set`
    returned in this request, if it ran.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("pin_verify commits the try count; call it outside a transaction.")
    if pin and _pin_right_and_clean(read or _pin_unlocked(user=user), pin=pin):
        return
    with transaction.atomic():
        record = PaymentPin.objects.select_for_update().filter(user=user).first()
        if record is None:
            raise PinNotSet()
        if not pin:
            raise ValidationFailed.on("pin", "The payment PIN is required.")
        failure = _pin_try(record, pin)
    if failure is not None:
        raise failure


_PIN_READ_FIELDS = ("id", "user_id", "pin_hash", "pin_key_id", "failed_attempts", "locked_until")
# Plain SQL: every send reads the PIN, and building the ORM's query costs more than the read.
_PIN_READ = f"SELECT {', '.join(_PIN_READ_FIELDS)} FROM {PaymentPin._meta.db_table} WHERE user_id = %s"


def _pin_unlocked(*, user: AbstractBaseUser) -> PaymentPin | None:
    """The row without a lock, its other fields deferred (`locked_until` as the driver returns it:
    naive on SQLite; only whether it is set is asked of it)."""
    with connection.cursor() as cursor:
        cursor.execute(_PIN_READ, [user.pk])
        row = cursor.fetchone()
    return None if row is None else PaymentPin.from_db(connection.alias, _PIN_READ_FIELDS, row)


def _pin_right_and_clean(record: PaymentPin | None, *, pin: str) -> bool:
    """The common case without a row lock: the right PIN, current key, no wrong tries, not locked.

    Nothing is written then, so the lock buys nothing: a wrong try committed just after this
    read cannot make this PIN wrong, and one that locked the PIN an instant earlier lost
    the race to a caller who knew the PIN. Everything else takes the locked path.
    """
    if record is None or record.failed_attempts or record.locked_until:
        return False
    right, outdated = pin_check(
        user_id=record.user_id, pin=pin, stored=PinHash(key_id=record.pin_key_id, digest=record.pin_hash)
    )
    return right and not outdated


def _pin_try(record: PaymentPin, pin: str) -> InvalidPin | PinLocked | None:
    """One try of a PIN against a row the caller has locked; records the outcome on it.

    Wrong tries within PIN_FAILURE_WINDOW are counted; the PIN_MAX_FAILURES-th
    locks the PIN for PIN_LOCK_DURATION, during which even the right PIN is refused.
    """
    now = timezone.now()
    if record.locked_until and record.locked_until > now:
        return PinLocked(locked_until=record.locked_until)
    fields = ["failed_attempts", "first_failed_at", "locked_until", "updated_at"]
    right, outdated = pin_check(
        user_id=record.user_id, pin=pin, stored=PinHash(key_id=record.pin_key_id, digest=record.pin_hash)
    )
    if right:
        if outdated:
            _pin_store(record, pin)
        if record.failed_attempts or record.locked_until:
            record.failed_attempts, record.first_failed_at, record.locked_until = 0, None, None
            record.save(update_fields=fields)
        return None
    if record.first_failed_at is None or now - record.first_failed_at > settings.PIN_FAILURE_WINDOW:
        record.failed_attempts, record.first_failed_at = 0, now
    record.failed_attempts += 1
    if record.failed_attempts >= settings.PIN_MAX_FAILURES:
        record.locked_until = now + settings.PIN_LOCK_DURATION
        record.failed_attempts, record.first_failed_at = 0, None
        record.save(update_fields=fields)
        return InvalidPin(f"The payment PIN is wrong; it is now locked until {record.locked_until.isoformat()}.")
    record.save(update_fields=fields)
    remaining = settings.PIN_MAX_FAILURES - record.failed_attempts
    return InvalidPin(f"The payment PIN is wrong; {remaining} tries left before it locks.")


def _pin_store(record: PaymentPin, pin: str) -> None:
    """Store `pin` on a locked row under the current PIN key."""
    stored = pin_hash(user_id=record.user_id, pin=pin)
    record.pin_hash, record.pin_key_id = stored.digest, stored.key_id
    record.save(update_fields=["pin_hash", "pin_key_id", "updated_at"])


def reconciliation_run(*, mode: str, requested_by_id: int | None = None) -> ReconciliationRun:
    """Reconcile the ledger and record the run: the only writer of ReconciliationRun.

    Incremental starts from the highest checkpoint a clean run verified (a full run when
    there is none yet). The run row is committed first, so the admin shows it running;
    the checks then read one snapshot; a clean run records how far it verified.
    """
    checkpoint = reconciliation_checkpoint() if mode == ReconciliationMode.INCREMENTAL else None
    run = ReconciliationRun.objects.create(
        mode=ReconciliationMode.INCREMENTAL if checkpoint else ReconciliationMode.FULL,
        requested_by_id=requested_by_id, started_at=timezone.now(),
        from_position=checkpoint.position if checkpoint else None,
    )
    try:
        up_to = ledger_committed_position(wait_seconds=settings.RECONCILIATION_WRITERS_WAIT_SECONDS)
        with _ledger_snapshot():
            report = ledger_reconcile(checkpoint=checkpoint, up_to=up_to)
    except Exception as exc:
        ReconciliationRun.objects.filter(pk=run.pk).update(
            finished_at=timezone.now(), ok=False, error=f"{type(exc).__name__}: {exc}")
        raise
    run.finished_at = timezone.now()
    run.ok = report.ok
    run.problems = report.problems
    run.entries_checked = report.entries_checked
    run.report = {name: value for name, value in asdict(report).items()
                  if name not in ("problems", "checkpoint_balances")}
    if report.ok:
        run.checkpoint_position = report.checkpoint_position
        run.checkpoint_balances = report.checkpoint_balances
    run.save()
    return run


@contextmanager
def _ledger_snapshot():
    """One snapshot for every check of a run (PostgreSQL: REPEATABLE READ, read only, and
    no statement timeout: a full run over millions of entries takes longer than a
    request may). Inside a caller's transaction (the tests'), that one's."""
    outermost = not transaction.get_connection().in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SET LOCAL statement_timeout = 0")
        yield
