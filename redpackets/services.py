"""Services that write: groups, sending, claiming and refunding packets.

The money rules of a packet live here and in `allocation.py`:
- send: the total leaves the sender's wallet for escrow in the ledger
  transaction that creates the packet and its pre-generated shares;
- claim: one free share row (the lowest-numbered free one) is taken with SKIP
  LOCKED and paid from escrow to the claimer in one ledger transaction; the
  packet row is only read; a passphrase packet first wants its passphrase;
- refund: after expiry, the free shares are marked refunded and their sum goes
  back to the sender as one `packet_refund`, under the packet row lock.
"""

import json
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from config.errors import (
    NotFound,
    NotRecipient,
    PacketExhausted,
    PacketExpired,
    PassphraseLocked,
    PermissionDenied,
    ValidationFailed,
    WrongPassphrase,
)
from config.metrics import claim_counted, refunds_counted, send_counted
from config.sql_rows import rows_sql
from events.models import EventType
from events.selectors import event_keys_recorded, event_subjects_positioned_after
from redpackets import allocation, event_payloads, passphrases, selectors
from redpackets.models import (
    PASSPHRASE_MAX_WRONG_TRIES,
    ChatGroup,
    GroupMembership,
    Packet,
    PacketKind,
    PacketStatus,
    PassphraseAttempt,
    Share,
)
from wallets.ledger import Posting, db_value, ledger_post, ledger_post_many, system_account
from wallets.models import Account, AccountKind, LedgerTransaction, SystemAccount, TransactionKind
from wallets.services import wallet_get_or_create

User = get_user_model()


# --- Groups -----------------------------------------------------------------------


def _users_by_username(usernames: list[str], field: str) -> list[AbstractBaseUser]:
    wanted = list(dict.fromkeys(usernames))
    found = {u.username: u for u in User.objects.filter(username__in=wanted, is_active=True)}
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValidationFailed.on(field, f"No such user: {', '.join(missing)}.")
    return [found[name] for name in wanted]


@transaction.atomic
def group_create(*, owner: AbstractBaseUser, name: str, member_usernames: list[str]) -> ChatGroup:
    members = _users_by_username(member_usernames, "members")
    group = ChatGroup.objects.create(name=name, owner=owner)
    joined = [owner, *(m for m in members if m.pk != owner.pk)]
    GroupMembership.objects.bulk_create([GroupMembership(group=group, user=user) for user in joined])
    # One group.member_added per member, the owner first: the events alone tell the whole roster.
    for user in joined:
        event_payloads.record_member_added(group_id=group.id, username=user.username)
    return group


def group_add_member(*, group_id: uuid.UUID, actor: AbstractBaseUser, username: str) -> bool:
    """Add a member (owner only); False when they were a member already."""
    group = ChatGroup.objects.filter(id=group_id, memberships__user=actor).first()
    if group is None:
        raise NotFound("No such group.")
    if group.owner_id != actor.pk:
        raise PermissionDenied("Only the group's owner can add members.")
    (user,) = _users_by_username([username], "username")
    with transaction.atomic():
        _, created = GroupMembership.objects.get_or_create(group=group, user=user)
        if created:
            event_payloads.record_member_added(group_id=group.id, username=user.username)
    return created


# --- Sending ----------------------------------------------------------------------

_SHARE_TABLE = Share._meta.db_table
# A packet's shares in one statement, however many: the ORM's bulk insert builds a
# model instance and a parameter set per share, the whole cost of a 5,000-share send.
_INSERT_SHARES_FROM_ARRAY = f"""
    INSERT INTO {_SHARE_TABLE} (packet_id, seq, amount, refunded)
    SELECT %s, s.n - 1, s.amount, false FROM unnest(%s::bigint[]) WITH ORDINALITY AS s(amount, n)
"""
# SQLite: the amounts as a JSON array, whose keys count from 0.
_INSERT_SHARES_FROM_JSON = (
    f"INSERT INTO {_SHARE_TABLE} (packet_id, seq, amount, refunded) SELECT %s, key, value, 0 FROM json_each(%s)"
)


def _shares_create(*, packet_id: uuid.UUID, amounts: list[int]) -> None:
    """Share number i is element i of the split: claims take the lowest free number first."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_SHARES_FROM_ARRAY, [db_value(Packet, "id", packet_id), amounts])
        else:
            cursor.execute(_INSERT_SHARES_FROM_JSON, [db_value(Packet, "id", packet_id), json.dumps(amounts)])


# One read answers what a send asks before the money moves: is the sender a member, how many
# members are there, and which are the sender's wallet and its currency's escrow (created on
# first use when missing). The ORM's three queries cost more Python than the send's ledger work.
_SEND_CONTEXT = f"""
    SELECT (SELECT COUNT(*) FROM {GroupMembership._meta.db_table} m WHERE m.group_id = g.id) AS member_count,
           w.id AS wallet_id, w.currency,
           (SELECT e.id FROM {Account._meta.db_table} e
             WHERE e.code = '{SystemAccount.ESCROW}' AND e.currency = w.currency) AS escrow_id
    FROM {ChatGroup._meta.db_table} g
    JOIN {GroupMembership._meta.db_table} me ON me.group_id = g.id AND me.user_id = %(user)s
    LEFT JOIN {Account._meta.db_table} w ON w.user_id = %(user)s AND w.kind = '{AccountKind.WALLET}'
    WHERE g.id = %(group)s
"""


@send_counted
def packet_send(
    *,
    sender: AbstractBaseUser,
    group_id: uuid.UUID,
    kind: str,
    share_count: int,
    total_amount: int | None = None,
    share_amount: int | None = None,
    greeting: str = "",
    recipient_username: str | None = None,
    passphrase: str | None = None,
    hint: str = "",
) -> Packet:
    """Fund a packet for a group. The caller has verified the sender's PIN.

    A `passphrase` makes members answer it to claim; only its HMAC is kept.
    """
    with connection.cursor() as cursor:
        cursor.execute(_SEND_CONTEXT, {"group": db_value(ChatGroup, "id", group_id), "user": sender.pk})
        context = cursor.fetchone()
    if context is None:
        raise NotFound("No such group.")
    member_count, wallet_id, currency, escrow_id = context
    max_shares = min(member_count, settings.REDPACKET_MAX_SHARES)
    if not 1 <= share_count <= max_shares:
        raise ValidationFailed.on(
            "share_count", f"share_count must be between 1 and {max_shares} (the group has {member_count} members)."
        )

    recipient = None
    if recipient_username is not None:
        recipient = User.objects.filter(username=recipient_username, group_memberships__group_id=group_id).first()
        if recipient is None:
            raise ValidationFailed.on("recipient", f"{recipient_username} is not a member of this group.")
        if share_count != 1:
            raise ValidationFailed.on("share_count", "An exclusive packet has exactly one share.")

    passphrase_hmac = None
    if passphrase is not None:
        if not 1 <= len(passphrase.strip()) <= passphrases.MAX_LENGTH or not passphrases.normalise(passphrase):
            raise ValidationFailed.on(
                "passphrase", f"A passphrase is 1 to {passphrases.MAX_LENGTH} characters, not counting surrounding blanks."
            )
        passphrase_hmac = passphrases.passphrase_hmac(passphrase)
    elif hint:
        raise ValidationFailed.on("hint", "A hint goes with a passphrase.")

    cap = settings.REDPACKET_MAX_SHARE
    seed = None
    if kind == PacketKind.RANDOM:
        if total_amount is None:
            raise ValidationFailed.on("total_amount", "A random packet needs total_amount.")
        if not share_count <= total_amount <= share_count * cap:
            raise ValidationFailed.on(
                "total_amount",
                f"total_amount must be between {share_count} and {share_count * cap} "
                f"for {share_count} shares (1 to {cap} each).",
            )
        seed = allocation.new_seed()
        amounts = allocation.split_random(total=total_amount, share_count=share_count, cap=cap, seed=seed)
    else:
        if share_amount is None:
            raise ValidationFailed.on("share_amount", "A fixed packet needs share_amount.")
        if not 1 <= share_amount <= cap:
            raise ValidationFailed.on("share_amount", f"share_amount must be between 1 and {cap}.")
        amounts = allocation.split_fixed(share_amount=share_amount, share_count=share_count)
    total = sum(amounts)

    if wallet_id is None:
        wallet = wallet_get_or_create(user=sender)
        wallet_id, currency = wallet.id, wallet.currency
    now = timezone.now()
    packet_id = uuid.uuid4()
    # No savepoint: a failure here fails the caller's transaction too (the Idempotency-Key's included).
    with transaction.atomic(savepoint=False):
        if escrow_id is None:
            escrow_id = system_account(code=SystemAccount.ESCROW, currency=currency).id
        ledger_post(
            kind=TransactionKind.PACKET_SEND,
            wallet_legs={wallet_id: -total},
            system_legs={escrow_id: total},
            packet_id=packet_id,
            created_by_id=sender.pk,
        )
        packet = Packet.objects.create(
            id=packet_id,
            group_id=group_id,
            sender=sender,
            recipient=recipient,
            kind=kind,
            greeting=greeting,
            currency=currency,
            total_amount=total,
            share_count=share_count,
            escrow_account_id=escrow_id,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.REDPACKET_TTL_SECONDS),
            split_seed=seed,
            share_cap=cap if seed is not None else None,
            passphrase_hmac=passphrase_hmac,
            hint=hint,
        )
        _shares_create(packet_id=packet.id, amounts=amounts)
        event_payloads.record_packet_sent(packet=packet)
    return packet


# --- Claiming ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimResult:
    packet_id: uuid.UUID
    amount: int
    claimed_at: datetime
    created: bool  # False when the caller had claimed before: nothing was paid now


_TAKE_FREE_SHARE = f"""
    UPDATE {_SHARE_TABLE} SET claimed_by_id = %s, claimed_at = %s, claim_transaction_id = %s
    WHERE id = (
        SELECT id FROM {_SHARE_TABLE}
        WHERE packet_id = %s AND claimed_by_id IS NULL AND NOT refunded
        ORDER BY seq LIMIT 1 {{lock}}
    )
    RETURNING amount
"""
# Take the first free share that no concurrent claim holds; SKIP LOCKED lets
# hundreds of claimers of one packet each take a different row at once.
_TAKE_SKIPPING_LOCKED = _TAKE_FREE_SHARE.format(lock="FOR UPDATE SKIP LOCKED")
# Only when every free share is locked: wait for those claims to end, so a claim
# that rolls back leaves its share to us instead of a false "exhausted".
_TAKE_WAITING = _TAKE_FREE_SHARE.format(lock="FOR UPDATE")
# SQLite has no row locks: its IMMEDIATE transactions already run one writer at a time.
_TAKE_SERIALISED = _TAKE_FREE_SHARE.format(lock="")


class _EveryFreeShareBusy(Exception):
    """The SKIP LOCKED attempt found no free share that nobody holds."""


def _take_free_share(params: list, *, wait: bool) -> tuple[int] | None:
    """One attempt; without `wait`, raises _EveryFreeShareBusy instead of returning None.

    The waiting attempt must run in a new (sub)transaction: SKIP LOCKED can lock a
    share that a claim committed after the statement's snapshot (the recheck then
    drops the row, but the lock stays until the transaction ends). Two claimers
    waiting while each holds such a stray lock would deadlock each other; rolling
    the first attempt back releases them, and a single waiting statement takes
    its locks in seq order only.
    """
    with connection.cursor() as cursor:
        if not connection.features.has_select_for_update_skip_locked:
            cursor.execute(_TAKE_SERIALISED, params)
            return cursor.fetchone()
        cursor.execute(_TAKE_WAITING if wait else _TAKE_SKIPPING_LOCKED, params)
        row = cursor.fetchone()
        if row is None and not wait:
            raise _EveryFreeShareBusy
        return row


_CLAIM_CONTEXT = f"""
    SELECT p.id, p.recipient_id, p.expires_at, p.escrow_account_id,
           EXISTS (SELECT 1 FROM {GroupMembership._meta.db_table} m
                   WHERE m.group_id = p.group_id AND m.user_id = %(user)s) AS is_member,
           (SELECT a.id FROM {Account._meta.db_table} a
             WHERE a.user_id = %(user)s AND a.kind = '{AccountKind.WALLET}') AS wallet_id,
           s.amount AS my_amount, s.claimed_at AS my_claimed_at, p.settled_at,
           EXISTS (SELECT 1 FROM {_SHARE_TABLE} f
                   WHERE f.packet_id = p.id AND f.claimed_by_id IS NULL AND NOT f.refunded) AS has_free_share,
           p.passphrase_hmac,
           -- Looked up only for a packet with a passphrase (a CASE evaluates its subquery lazily).
           CASE WHEN p.passphrase_hmac IS NOT NULL THEN
               (SELECT t.wrong_tries FROM {PassphraseAttempt._meta.db_table} t
                 WHERE t.packet_id = p.id AND t.user_id = %(user)s)
           END AS my_wrong_tries,
           p.group_id
    FROM {Packet._meta.db_table} p
    LEFT JOIN {_SHARE_TABLE} s ON s.packet_id = p.id AND s.claimed_by_id = %(user)s
    WHERE p.id = %(packet)s
"""


@dataclass(frozen=True)
class _ClaimContext:
    id: uuid.UUID
    recipient_id: int | None
    expires_at: datetime
    escrow_account_id: int
    is_member: bool
    wallet_id: int | None
    my_amount: int | None
    my_claimed_at: datetime | None
    settled_at: datetime | None
    has_free_share: bool
    passphrase_hmac: bytes | None
    my_wrong_tries: int | None
    group_id: uuid.UUID

    def __post_init__(self):
        # SQLite hands back text and naive datetimes; PostgreSQL typed values.
        object.__setattr__(self, "id", uuid.UUID(str(self.id)))
        object.__setattr__(self, "group_id", uuid.UUID(str(self.group_id)))
        object.__setattr__(self, "expires_at", _as_datetime(self.expires_at))


def _as_datetime(value):
    """PostgreSQL returns aware datetimes; SQLite naive UTC ones (or text)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = parse_datetime(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@claim_counted
def packet_claim(*, packet_id: uuid.UUID, user: AbstractBaseUser, passphrase: str | None = None) -> ClaimResult:
    """Claim one share of a packet for `user`; a repeat returns the first claim.

    `passphrase` is the member's answer, for a packet with one (ignored otherwise).
    """
    # One read answers every question asked before the money moves.
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_CONTEXT, {"packet": db_value(Packet, "id", packet_id), "user": user.pk})
        row = cursor.fetchone()
    packet = _ClaimContext(*row) if row else None
    if packet is None or not packet.is_member:
        raise NotFound("No such packet.")
    if packet.my_amount is not None:
        return ClaimResult(
            packet_id=packet.id, amount=packet.my_amount, claimed_at=_as_datetime(packet.my_claimed_at), created=False
        )
    now = timezone.now()
    if now >= packet.expires_at:
        raise PacketExpired()
    if packet.recipient_id is not None and packet.recipient_id != user.pk:
        raise NotRecipient()
    if not packet.has_free_share:
        # Every share was claimed or refunded, and committed, when the read above ran (a
        # claim still in flight leaves its share free to this read), and a share never
        # becomes free again (trigger share_settled_is_final): the answer the claim
        # transaction would reach, without taking and releasing row locks for it. Most
        # claimers of a hot packet end here.
        raise _no_free_share(settled=packet.settled_at is not None)
    if packet.passphrase_hmac is not None:
        # After the no-free-share answer: a try on a packet with nothing left is no try.
        _passphrase_check(packet, user=user, passphrase=passphrase)
    wallet_id = packet.wallet_id or wallet_get_or_create(user=user).id

    transaction_id = uuid.uuid4()
    params = [
        user.pk,
        db_value(Share, "claimed_at", now),
        db_value(LedgerTransaction, "id", transaction_id),
        db_value(Packet, "id", packet.id),
    ]
    try:
        for wait in (False, True):
            try:
                with transaction.atomic():
                    row = _take_free_share(params, wait=wait)
                    if row is None:
                        # We may have waited on the last share for a concurrent claim of
                        # the same member: that claim, not "exhausted", is the answer.
                        previous = _claim_of(packet.id, user)
                        if previous is not None:
                            return previous
                        raise _no_free_share(
                            settled=Packet.objects.filter(id=packet.id, settled_at__isnull=False).exists()
                        )
                    (amount,) = row
                    ledger_post(
                        kind=TransactionKind.PACKET_CLAIM,
                        wallet_legs={wallet_id: amount},
                        system_legs={packet.escrow_account_id: -amount},
                        packet_id=packet.id,
                        created_by_id=user.pk,
                        transaction_id=transaction_id,
                    )
                    event_payloads.record_packet_claimed(
                        packet_id=packet.id, group_id=packet.group_id, username=user.username, amount=amount,
                        claimed_at=now,
                    )
                    # After commit, this claimer sees every claim that committed before it: the last one
                    # to commit sees no free share and records packet.finished.
                    transaction.on_commit(lambda: packet_finish_if_claimed(packet_id=packet.id), robust=True)
                break
            except _EveryFreeShareBusy:
                continue  # rolled back; now wait for the shares in flight
    except IntegrityError:
        # A concurrent claim of the same member won the unique (packet, claimed_by).
        previous = _claim_of(packet.id, user)
        if previous is None:
            raise
        return previous
    return ClaimResult(packet_id=packet.id, amount=amount, claimed_at=now, created=True)


_ATTEMPT_TABLE = PassphraseAttempt._meta.db_table
# One statement counts a wrong try: concurrent tries of a member take turns on the
# row, and none counts past the lock (the CHECK on wrong_tries backs this up).
_COUNT_WRONG_TRY = f"""
    INSERT INTO {_ATTEMPT_TABLE} (packet_id, user_id, wrong_tries, last_tried_at) VALUES (%s, %s, 1, %s)
    ON CONFLICT (packet_id, user_id) DO UPDATE
        SET wrong_tries = {_ATTEMPT_TABLE}.wrong_tries + 1, last_tried_at = excluded.last_tried_at
        WHERE {_ATTEMPT_TABLE}.wrong_tries < {PASSPHRASE_MAX_WRONG_TRIES}
    RETURNING wrong_tries
"""


def _passphrase_check(packet: _ClaimContext, *, user: AbstractBaseUser, passphrase: str | None) -> None:
    """Let a member with the right passphrase through; count a wrong one (committed on its own).

    The PASSPHRASE_MAX_WRONG_TRIES-th wrong try locks the member out of the packet,
    the right passphrase included. A missing one is no try: a client that does not
    know passphrases yet must not lock its user out.
    """
    if (packet.my_wrong_tries or 0) >= PASSPHRASE_MAX_WRONG_TRIES:
        raise PassphraseLocked()
    if passphrase is None or not passphrase.strip():
        raise WrongPassphrase()
    if passphrases.passphrase_matches(passphrase, packet.passphrase_hmac):
        return
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _COUNT_WRONG_TRY,
            [db_value(Packet, "id", packet.id), user.pk, db_value(PassphraseAttempt, "last_tried_at", now)],
        )
        row = cursor.fetchone()
    if row is None:
        raise PassphraseLocked()  # concurrent wrong tries locked the member out since the read
    left = PASSPHRASE_MAX_WRONG_TRIES - row[0]
    if left == 0:
        raise WrongPassphrase("The passphrase is wrong; you are now locked out of this packet.")
    raise WrongPassphrase(f"The passphrase is wrong; {left} {'try' if left == 1 else 'tries'} left.")


def _claim_of(packet_id: uuid.UUID, user: AbstractBaseUser) -> ClaimResult | None:
    share = Share.objects.filter(packet_id=packet_id, claimed_by=user).values("amount", "claimed_at").first()
    if share is None:
        return None
    return ClaimResult(packet_id=packet_id, amount=share["amount"], claimed_at=share["claimed_at"], created=False)


def _no_free_share(*, settled: bool) -> Exception:
    """No free share: the expiry refund took the rest, or every share is claimed."""
    return PacketExpired() if settled else PacketExhausted()


# --- Expiry -----------------------------------------------------------------------


def packets_take_due(*, limit: int, skip: Collection[uuid.UUID] = ()) -> list[Packet]:
    """Row-lock up to `limit` of the oldest packets due for their refund that no other sweep
    holds, inside the caller's transaction, for `packets_settle`. Sweeps running at once take
    disjoint packets (SKIP LOCKED) instead of queueing behind each other on the same ones."""
    return list(
        Packet.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("sender", "recipient")
        .filter(settled_at__isnull=True, expires_at__lte=timezone.now())
        .exclude(id__in=skip)
        .order_by("expires_at")[:limit]
    )


def packet_refund_expired(*, packet_id: uuid.UUID, force: bool = False) -> int | None:
    """Settle one packet past its expiry (`packets_settle`), waiting for claims in flight.

    Returns the refunded amount, or None when there was nothing to do (not yet
    expired, or settled already). Runs in its own transaction; the packet row
    lock makes concurrent runs take turns, and the settled_at check under it,
    backed by the one-refund-per-packet unique constraint of the ledger, makes
    every run after the first a no-op. `force` settles an active packet now (the
    admin's "expire now").
    """
    with transaction.atomic():
        packet = (
            Packet.objects.select_for_update(of=("self",)).select_related("sender", "recipient")
            .filter(id=packet_id).first()
        )
        if packet is None or packet.settled_at is not None:
            return None
        if not force and timezone.now() < packet.expires_at:
            return None
        return packets_settle(packets=[packet], wait_for_claims=True)[packet.id]


_PACKET_TABLE = Packet._meta.db_table
# One statement settles every packet of a batch.
_MARK_SETTLED = f"""
    WITH settled (id, amount) AS ({{rows}})
    UPDATE {_PACKET_TABLE} SET settled_at = %s, refunded_amount = settled.amount
    FROM settled WHERE {_PACKET_TABLE}.id = settled.id
"""


@refunds_counted
def packets_settle(*, packets: list[Packet], wait_for_claims: bool) -> dict[uuid.UUID, int]:
    """Settle packets the caller has row-locked and found due: each one's free shares are
    marked refunded and go back to its sender as one `packet_refund`, the packet records
    when and how much, and its end event is recorded. Returns {packet id: refunded amount}
    of the packets settled; a set-based pass (a few statements for the whole batch).

    Every share of the packets is locked first, in the claims' lock order (seq): their
    claims in flight commit before, and are read as committed. With `wait_for_claims`
    the locks wait for them; without (the sweep), a packet whose share a claim holds is
    left out, for a later sweep, instead of holding up the rest of the batch.
    """
    locked = defaultdict(list)
    for share in (
        Share.objects.filter(packet_id__in=[packet.id for packet in packets]).select_related("claimed_by")
        .order_by("packet_id", "seq").select_for_update(of=("self",), skip_locked=not wait_for_claims)
    ):
        locked[share.packet_id].append(share)
    settling = [packet for packet in packets if len(locked[packet.id]) == packet.share_count]
    if not settling:
        return {}
    # Every sender has a wallet: the send debited it.
    wallets = dict(
        Account.objects.filter(user_id__in={p.sender_id for p in settling}, kind=AccountKind.WALLET)
        .values_list("user_id", "id")
    )
    now = timezone.now()
    refunded_shares, postings, ends = [], [], []
    for packet in settling:
        shares = locked[packet.id]
        free = [share for share in shares if share.claimed_by_id is None and not share.refunded]
        amount = sum(share.amount for share in free)
        if free:
            postings.append(Posting(
                kind=TransactionKind.PACKET_REFUND,
                wallet_legs={wallets[packet.sender_id]: amount},
                system_legs={packet.escrow_account_id: -amount},
                packet_id=packet.id,
                memo=f"{len(free)} unclaimed share{'' if len(free) == 1 else 's'}",
            ))
        for share in free:
            share.refunded = True
        refunded_shares += free
        packet.settled_at, packet.refunded_amount = now, amount
        # Every claim has committed (the share locks saw to it): the packet's end comes after all of
        # them. With nothing to refund every share was claimed: finished, not expired.
        ends.append((packet, shares, EventType.PACKET_EXPIRED if free else EventType.PACKET_FINISHED))

    # The events first: rendering them is the batch's longest step, and the senders' wallets are
    # not locked yet (their own sends and claims wait only for the last few statements).
    event_payloads.record_packets_settled(ends)
    Share.objects.filter(id__in=[share.id for share in refunded_shares]).update(refunded=True)
    if postings:
        ledger_post_many(postings)
    # After the shares and the postings: the database checks the settlement against both.
    rows, params = rows_sql(["uuid", "bigint"],
                            [[db_value(Packet, "id", packet.id), packet.refunded_amount] for packet in settling])
    with connection.cursor() as cursor:
        cursor.execute(_MARK_SETTLED.format(rows=rows), [*params, db_value(Packet, "settled_at", now)])
    return {packet.id: packet.refunded_amount for packet in settling}


_ANY_FREE_SHARE = (
    f"SELECT EXISTS (SELECT 1 FROM {_SHARE_TABLE} WHERE packet_id = %s AND claimed_by_id IS NULL AND NOT refunded)"
)


def packet_finish_if_claimed(*, packet_id: uuid.UUID) -> bool:
    """Record packet.finished once every share is claimed; True when this call recorded it.

    Runs after a claim commits (and from the sweep `redpackets.tasks.finish_claimed_packets`),
    so the finished event is inserted after every packet.claimed of the packet has committed.
    The events' unique key keeps it to one end per packet, whoever gets there first.
    """
    # Plain SQL: every paying claim runs this after commit. The partial index of free shares answers it.
    with connection.cursor() as cursor:
        cursor.execute(_ANY_FREE_SHARE, [db_value(Packet, "id", packet_id)])
        if cursor.fetchone()[0]:
            return False
    with transaction.atomic():
        # One read of the packet and its settled shares: whether every share is claimed (a refunded
        # one means the expiry ended it) and what packet.finished carries.
        view = selectors.packet_detail_for_events(packet_id=packet_id)
        if view.status != PacketStatus.FINISHED:
            return False
        return event_payloads.record_packet_finished(view)


def packets_finish_claimed(*, after_position: int, limit: int = 10_000) -> tuple[int, int]:
    """packet_finish_if_claimed for every packet with a packet.claimed among the next `limit` events
    of the feed after `after_position` that has no end yet; returns how many it recorded, and the
    last position it read (the next call's `after_position`)."""
    packet_ids, last = event_subjects_positioned_after(type=EventType.PACKET_CLAIMED, position=after_position,
                                                       limit=limit)
    ended = event_keys_recorded(keys=[event_payloads.packet_end_key(p) for p in packet_ids])
    finished = sum(
        packet_finish_if_claimed(packet_id=uuid.UUID(p)) for p in packet_ids if event_payloads.packet_end_key(p) not in ended
    )
    return finished, last


def packets_due_count(*, limit: int) -> int:
    return Packet.objects.filter(settled_at__isnull=True, expires_at__lte=timezone.now())[:limit].count()
