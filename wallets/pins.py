"""How a payment PIN is stored and checked: HMAC-SHA256 under a server key.

A PIN has 10^6 values, so a slow hash (PBKDF2) buys almost nothing against
someone holding the table: it costs them 10^6 tries, and costs us 0.3 s of CPU
on every send. What protects a PIN is the lockout (a guesser online gets 5
tries per 15 minutes) and a key that the database does not hold: without
PIN_KEY a leaked `pin_hash` column cannot be tested offline at all. The user's
id is in the message, so two users with the same PIN have different digests.

Each row stores the id of the key it was made with, so the key can rotate:
the current key (PIN_KEY_ID) signs new hashes, older keys (PIN_RETIRED_KEYS)
still verify, and a right PIN under an older key or under the v1 PBKDF2
hasher is rehashed under the current key (`pin_check`'s second value).
See docs/reliability.md, "Payment PIN".
"""

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ImproperlyConfigured

ALGORITHM = "hmac-sha256"


@dataclass(frozen=True)
class PinHash:
    key_id: str
    digest: str


def _keys() -> dict[str, bytes]:
    keys = {key_id: key.encode() for key_id, key in settings.PIN_RETIRED_KEYS.items()}
    keys[settings.PIN_KEY_ID] = settings.PIN_KEY.encode()
    return keys


def _digest(key: bytes, user_id: int, pin: str) -> str:
    mac = hmac.new(key, f"{user_id}:{pin}".encode(), hashlib.sha256).hexdigest()
    return f"{ALGORITHM}${mac}"


def pin_hash(*, user_id: int, pin: str) -> PinHash:
    """The stored form of a PIN under the current key."""
    return PinHash(key_id=settings.PIN_KEY_ID, digest=_digest(settings.PIN_KEY.encode(), user_id, pin))


def pin_check(*, user_id: int, pin: str, stored: PinHash) -> tuple[bool, bool]:
    """(right PIN, stored form should be replaced by `pin_hash`), in constant time for HMAC rows.

    A row without a key id holds a v1 Django password hash (PBKDF2).
    """
    if not stored.key_id:
        return (right := check_password(pin, stored.digest)), right
    key = _keys().get(stored.key_id)
    if key is None:
        # Refusing would count a wrong try against a right PIN; this is the operator's to fix.
        raise ImproperlyConfigured(f"PIN key {stored.key_id!r} is not configured (PIN_KEY_ID / PIN_RETIRED_KEYS).")
    right = hmac.compare_digest(_digest(key, user_id, pin), stored.digest)
    return right, right and stored.key_id != settings.PIN_KEY_ID
