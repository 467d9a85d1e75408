"""Passphrases of passphrase packets: normalised, then kept only as a keyed hash.

Two passphrases are the same after Unicode NFKC normalisation, case folding and
trimming of surrounding whitespace (the contract). The database holds
HMAC-SHA256(key, normalised passphrase), never the text: quiz answers are easy to
guess, so an unkeyed hash in a leaked database would be read back in seconds.
"""

import hashlib
import hmac
import unicodedata

from django.conf import settings
from django.utils.crypto import salted_hmac

MAX_LENGTH = 32  # characters, after trimming


def normalise(passphrase: str) -> str:
    # NFKC again after case folding, which can leave a string unnormalised (Unicode's NFKC_Casefold).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", passphrase).casefold()).strip()


def _key() -> bytes:
    if settings.REDPACKET_PASSPHRASE_KEY:
        return settings.REDPACKET_PASSPHRASE_KEY.encode()
    return salted_hmac("redpackets.passphrase-key", "v1", algorithm="sha256").digest()


def passphrase_hmac(passphrase: str) -> bytes:
    return hmac.new(_key(), normalise(passphrase).encode(), hashlib.sha256).digest()


def passphrase_matches(passphrase: str, stored_hmac: bytes) -> bool:
    return hmac.compare_digest(passphrase_hmac(passphrase), bytes(stored_hmac))
