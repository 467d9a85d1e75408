"""Idempotency-Key for money-moving POSTs, as one reusable piece.

The key row is inserted in the same database transaction as the money movement,
under a unique (user, key) constraint. A concurrent request with the same key
waits on that unique index until the first commits, then finds the stored
response and replays it: money moves once and every caller sees one answer.
Only successful responses are stored; a refused request rolls its key back, so
the client may fix the cause and retry with the same key.
"""

import json
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from rest_framework.request import Request

from config.errors import IdempotencyConflict, ValidationFailed
from wallets.ledger import db_value
from wallets.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_OWS = " \t"


def request_fingerprint(request: Request) -> str:
    canonical = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    message = f"{request.method} {request.path.rstrip('/')}\n{canonical}"
    # Keyed, because bodies carry the payment PIN.
    return salted_hmac("idempotency-fingerprint", message, algorithm="sha256").hexdigest()


def idempotency_key(request: Request) -> str | None:
    """The request's key, or None without one; a blank or too long key is a validation error.

    Views that check anything with side effects first (the PIN's try count) call this before.
    """
    key = request.headers.get(HEADER)
    if key is None:
        return None
    # The length as sent, as the schema's maxLength says. Spaces and tabs around a header value
    # are not part of it (HTTP's OWS); no other character is stripped, as the schema's pattern says.
    if len(key) > MAX_KEY_LENGTH or not key.strip(_OWS):
        raise ValidationFailed.on(HEADER, f"An {HEADER} is 1 to {MAX_KEY_LENGTH} characters.")
    return key.strip(_OWS)


def run_idempotent(request: Request, execute: Callable[[], tuple[int, dict]]) -> tuple[int, dict]:
    """Run `execute` (which returns status and body) at most once per user and key."""
    key = idempotency_key(request)
    if key is None:
        with transaction.atomic():
            return execute()
    fingerprint = request_fingerprint(request)
    with transaction.atomic():
        record_id = _insert_key(request.user.pk, key, fingerprint)
        if record_id is None:
            return _replay(request, key, fingerprint)
        status, body = execute()
        with connection.cursor() as cursor:
            cursor.execute(_STORE_RESPONSE, [status, db_value(IdempotencyRecord, "response_body", body), record_id])
        return status, body


_INSERT_KEY = (
    f"INSERT INTO {IdempotencyRecord._meta.db_table} (user_id, key, request_fingerprint, created_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, key) DO NOTHING RETURNING id"
)


# Plain SQL, like the insert: the ORM's update machinery costs more than the statement.
_STORE_RESPONSE = f"UPDATE {IdempotencyRecord._meta.db_table} SET response_status = %s, response_body = %s WHERE id = %s"


def _insert_key(user_id: int, key: str, fingerprint: str) -> int | None:
    """The new record's id, or None when the key exists (having waited for its request to commit).

    ON CONFLICT DO NOTHING waits on the unique index like a plain insert, without a
    savepoint to roll back to: two round trips fewer than catching the IntegrityError.
    """
    created_at = db_value(IdempotencyRecord, "created_at", timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_KEY, [user_id, key, fingerprint, created_at])
        row = cursor.fetchone()
    return row[0] if row else None


def idempotency_records_purge() -> int:
    """Forget keys older than IDEMPOTENCY_KEY_TTL (a retry after that runs anew, as with Stripe)."""
    cutoff = timezone.now() - settings.IDEMPOTENCY_KEY_TTL
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _replay(request: Request, key: str, fingerprint: str) -> tuple[int, dict]:
    record = IdempotencyRecord.objects.get(user=request.user, key=key)
    if record.request_fingerprint != fingerprint:
        raise IdempotencyConflict()
    return record.response_status, record.response_body
