#!/usr/bin/env python3
"""Verify a red packet's random split (rp-split-v1) without the service.

Usage:
    python3 verify_packet.py PACKET.json COMMITMENT
    curl -s -H "Authorization: Bearer $TOKEN" $API/api/v1/packets/$ID | python3 verify_packet.py - COMMITMENT

PACKET.json is the packet as GET /api/v1/packets/{id} returns it, once it is
`finished` or `expired` (the proof is published then). COMMITMENT is the
`commitment` you saw earlier, before anyone claimed (the send response, or the
packet as it first appeared in the chat). Prints OK, or each check that fails;
exits 0 when every check passes, 1 when one fails, 2 when the input is unusable.

Only Python 3's standard library; this file is the whole verifier (the algorithm
is the API contract's "Verifiable random split"; docs/verifiable-split.md).
"""

import argparse
import hashlib
import json
import struct
import sys

ALGORITHM = "rp-split-v1"
TWO_64 = 2**64
FOUR_U64 = struct.Struct(">4Q")


class ByteStream:
    """SHA-256(seed || u64be(0)) || SHA-256(seed || u64be(1)) || ..., 8 bytes per u64()."""

    def __init__(self, seed):
        self.seed, self.block, self.words = seed, 0, []

    def u64(self):
        if not self.words:
            digest = hashlib.sha256(self.seed + self.block.to_bytes(8, "big")).digest()
            self.block += 1
            self.words = list(reversed(FOUR_U64.unpack(digest)))
        return self.words.pop()

    def below(self, k):
        limit = TWO_64 - TWO_64 % k
        while True:
            x = self.u64()
            if x < limit:
                return x % k


def compose(stream, m, k):
    if k == 1:
        return [m]
    chosen = set()
    for j in range(m, m + k - 1):
        t = stream.below(j + 1)
        chosen.add(j if t in chosen else t)
    bars = sorted(chosen)
    return [bars[0]] + [bars[i] - bars[i - 1] - 1 for i in range(1, k - 1)] + [(m + k - 2) - bars[-1]]


def split(total, count, cap, seed):
    stream = ByteStream(seed)
    shares = [1 + part for part in compose(stream, total - count, count)]
    while any(s > cap for s in shares):
        excess = sum(s - cap for s in shares if s > cap)
        shares = [min(s, cap) for s in shares]
        below_cap = [i for i, s in enumerate(shares) if s < cap]
        for i, part in zip(below_cap, compose(stream, excess, len(below_cap))):
            shares[i] += part
    return shares


def commitment(packet_id, total, count, cap, seed_hex):
    text = f"{ALGORITHM}\n{packet_id}\n{total}\n{count}\n{cap}\n{seed_hex}"
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class Unusable(Exception):
    """The input is not a packet with a proof: nothing to verify yet."""


def verify(packet, seen_commitment):
    """The list of failed checks (empty: every check passed)."""
    if not isinstance(packet, dict) or not {"id", "total_amount", "share_count", "claims"} <= set(packet):
        raise Unusable("this is not a packet as GET /api/v1/packets/{id} returns it")
    proof = packet.get("proof")
    if proof is None:
        raise Unusable(
            f"the packet has no proof yet (status {packet.get('status')!r}, kind {packet.get('kind')!r}); "
            "random packets publish it once finished or expired"
        )
    failures = []
    try:
        seed_hex, cap, shares = proof["seed"], proof["cap"], proof["shares"]
        seed = bytes.fromhex(seed_hex)
    except (KeyError, TypeError, ValueError) as exc:
        raise Unusable(f"the proof is malformed: {exc!r}") from None
    total, count = packet["total_amount"], packet["share_count"]
    if proof.get("algorithm") != ALGORITHM:
        failures.append(f"unknown algorithm {proof.get('algorithm')!r}, expected {ALGORITHM!r}")
    if len(seed) != 32 or seed_hex != seed.hex():
        failures.append(f"the seed is not 64 lowercase hex digits: {seed_hex!r}")

    recomputed = commitment(packet["id"], total, count, cap, seed_hex)
    if recomputed != seen_commitment:
        failures.append(
            f"commitment mismatch: the proof gives {recomputed}, but the commitment seen earlier was {seen_commitment}"
        )
    if packet.get("commitment") != seen_commitment:
        failures.append(f"the packet's commitment is now {packet.get('commitment')}, not {seen_commitment}")

    if not (isinstance(cap, int) and isinstance(count, int) and isinstance(total, int) and 1 <= count <= total <= count * cap):
        failures.append(f"no rp-split-v1 split of {total} in {count} shares of at most {cap} exists")
        expected = None
    else:
        expected = split(total, count, cap, seed)
        if shares != expected:
            where = next((i for i, (a, b) in enumerate(zip(shares, expected)) if a != b), min(len(shares), len(expected)))
            failures.append(
                f"shares do not recompute from the seed: share {where} is "
                f"{shares[where] if where < len(shares) else 'missing'}, rp-split-v1 gives "
                f"{expected[where] if where < len(expected) else 'no such share'} "
                f"({len(shares)} published, {len(expected)} expected)"
            )

    taken = {}
    for claim in packet["claims"]:
        index, amount, user = claim.get("share_index"), claim.get("amount"), claim.get("user")
        if not isinstance(index, int) or not 0 <= index < len(shares):
            failures.append(f"claim of {user}: share_index {index!r} is not a share of this packet")
            continue
        if amount != shares[index]:
            failures.append(f"claim of {user}: amount {amount} != shares[{index}] = {shares[index]}")
        if index in taken:
            failures.append(f"duplicate share_index {index}: claimed by {taken[index]} and {user}")
        taken.setdefault(index, user)

    unclaimed = sum(s for i, s in enumerate(shares) if i not in taken)
    refunded = packet.get("refunded_amount")
    if packet.get("status") == "expired" or refunded:
        if refunded != unclaimed:
            failures.append(f"refunded_amount {refunded} != {unclaimed}, the sum of the unclaimed shares")
    elif unclaimed:
        failures.append(f"the packet is {packet.get('status')!r} but shares worth {unclaimed} are neither claimed nor refunded")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a red packet's rp-split-v1 proof.")
    parser.add_argument("packet", help="the packet's JSON file, or - for standard input")
    parser.add_argument("commitment", help="the packet's commitment seen before anyone claimed (sha256:...)")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.packet == "-" else open(args.packet, encoding="utf-8").read()
        packet = json.loads(text)
        failures = verify(packet, args.commitment.strip())
    except (OSError, ValueError, Unusable) as exc:
        print(f"CANNOT VERIFY: {exc}")
        return 2
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}")
        return 1
    print(
        f"OK: packet {packet['id']}: the {packet['share_count']} shares recompute from the committed seed, "
        f"{len(packet['claims'])} claims each took the share at its index, "
        f"refunded {packet.get('refunded_amount', 0)} = the unclaimed shares"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
