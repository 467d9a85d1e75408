"""How a packet's total is split into shares. Pure functions, integers only.

Random packets use `rp-split-v1` (the API contract, "Verifiable random split";
docs/allocation.md for the distribution, docs/verifiable-split.md for checking it):
a 32-byte seed drawn from the operating system's CSPRNG at send feeds a SHA-256
byte stream; the shares are `1 + compose(T - n, n)`, a composition uniform over
all of them, and any excess over the cap is re-spread as a uniform composition
over the shares still below it. The shares are a deterministic function of
(total, count, cap, seed), so anyone holding the seed can recompute them, and the
commitment (a SHA-256 over the packet's terms and the seed) published at send
fixes them before the first claim.

A uniform composition is exchangeable: every position, hence every claim order,
has the same distribution, with mean total / count. The cap loop treats the
positions below the cap alike, so it keeps that symmetry.

tools/verify_packet.py repeats this algorithm on purpose (a user runs it without
the service); tests/redpackets/test_verify_packet.py keeps the two in step.
"""

import hashlib
import secrets
import struct

ALGORITHM = "rp-split-v1"
MIN_SHARE = 1
SEED_BYTES = 32
_TWO_64 = 2**64
_FOUR_U64 = struct.Struct(">4Q")  # one SHA-256 block


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def split_fixed(*, share_amount: int, share_count: int) -> list[int]:
    if share_count < 1 or share_amount < MIN_SHARE:
        raise ValueError("A fixed packet has at least one share of at least one minor unit.")
    return [share_amount] * share_count


class _ByteStream:
    """SHA-256(seed || u64be(0)) || SHA-256(seed || u64be(1)) || ..., read 8 bytes at a time
    as big-endian unsigned integers (`u64()` of the contract)."""

    def __init__(self, seed: bytes):
        self._seed = seed
        self._block = 0
        self.words: list[int] = []  # the current block's unread u64s, the next one last

    def refill(self) -> None:
        digest = hashlib.sha256(self._seed + self._block.to_bytes(8, "big")).digest()
        self._block += 1
        self.words[:] = reversed(_FOUR_U64.unpack(digest))


def _compose(stream: _ByteStream, m: int, k: int) -> list[int]:
    """k non-negative integers summing to m, uniform over all such (Floyd's sample of
    k - 1 bar positions among m + k - 1, as stars and bars)."""
    if k == 1:
        return [m]
    words = stream.words
    chosen: set[int] = set()
    for j in range(m, m + k - 1):
        # t = below(j + 1): uniform in [0, j + 1) by rejection, no modulo bias. Inlined,
        # as this loop is the split's whole cost.
        size = j + 1
        limit = _TWO_64 - _TWO_64 % size
        while True:
            if not words:
                stream.refill()
            x = words.pop()
            if x < limit:
                break
        t = x % size
        chosen.add(j if t in chosen else t)
    bars = sorted(chosen)
    parts = [bars[0]]
    parts += [bars[i] - bars[i - 1] - 1 for i in range(1, k - 1)]
    parts.append((m + k - 2) - bars[-1])
    return parts


def split_random(*, total: int, share_count: int, cap: int, seed: bytes) -> list[int]:
    """rp-split-v1: share i of `total` in `share_count` shares of 1 to `cap`, from `seed`."""
    if share_count < 1:
        raise ValueError("A packet has at least one share.")
    if not share_count * MIN_SHARE <= total <= share_count * cap:
        raise ValueError(f"{total} cannot be split into {share_count} shares of {MIN_SHARE} to {cap}.")
    stream = _ByteStream(seed)
    shares = [MIN_SHARE + part for part in _compose(stream, total - share_count * MIN_SHARE, share_count)]
    while True:
        excess = sum(s - cap for s in shares if s > cap)
        if not excess:
            return shares
        shares = [min(s, cap) for s in shares]
        below_cap = [i for i, s in enumerate(shares) if s < cap]
        for i, part in zip(below_cap, _compose(stream, excess, len(below_cap)), strict=True):
            shares[i] += part


def commitment(*, packet_id: str, total: int, share_count: int, cap: int, seed: bytes) -> str:
    """The packet's public commitment to its split, published from the send response on."""
    text = f"{ALGORITHM}\n{packet_id}\n{total}\n{share_count}\n{cap}\n{seed.hex()}"
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
