"""How a packet's total is split into shares. Pure functions, integers only.

Random split (see docs/allocation.md for the distribution):
1. every share starts at the minimum, 1 minor unit;
2. the rest is spread in proportion to symmetric Dirichlet(ALPHA) weights
   (independent Gamma(ALPHA) draws), rounded to integers by largest remainder,
   so the shares sum exactly to the total;
3. a share that would pass the cap is held at the cap and its excess is spread
   again over the others, by the same weights (water-filling);
4. the shares are shuffled.

Each step treats every position alike, and the final shuffle makes the vector
exchangeable by construction: whichever share a claimer takes, in whatever order,
its distribution is the same, with mean total / count. All randomness comes
from the operating system's CSPRNG (`secrets.SystemRandom`).
"""

import random
import secrets

# Dirichlet concentration: 1 is the uniform distribution on the simplex, a
# spread close to WeChat's (a share ranges from the minimum to several times
# the mean, and the best share is usually 2-4 times the mean for 5-10 shares).
ALPHA = 1.0
MIN_SHARE = 1
_WEIGHT_SCALE = 2**48

_csprng = secrets.SystemRandom()


def split_fixed(*, share_amount: int, share_count: int) -> list[int]:
    if share_count < 1 or share_amount < MIN_SHARE:
        raise ValueError("A fixed packet has at least one share of at least one minor unit.")
    return [share_amount] * share_count


def split_random(*, total: int, share_count: int, cap: int, rng: random.Random | None = None) -> list[int]:
    """Split `total` into `share_count` shares in [1, cap]; `rng` only for seeded tests."""
    rng = rng or _csprng
    if share_count < 1:
        raise ValueError("A packet has at least one share.")
    if not share_count * MIN_SHARE <= total <= share_count * cap:
        raise ValueError(f"{total} cannot be split into {share_count} shares of {MIN_SHARE} to {cap}.")

    shares = [MIN_SHARE] * share_count
    weights = [rng.gammavariate(ALPHA, 1.0) for _ in range(share_count)]
    remaining = total - MIN_SHARE * share_count
    open_positions = list(range(share_count))
    while remaining > 0:
        portions = _apportion(remaining, [weights[i] for i in open_positions], rng)
        remaining = 0
        still_open = []
        for position, portion in zip(open_positions, portions):
            room = cap - shares[position]
            given = min(portion, room)
            shares[position] += given
            remaining += portion - given
            if shares[position] < cap:
                still_open.append(position)
        open_positions = still_open
    rng.shuffle(shares)
    return shares


def _apportion(amount: int, weights: list[float], rng: random.Random) -> list[int]:
    """Integers proportional to `weights` that sum exactly to `amount` (largest remainder).

    Weights are scaled to integers first so the arithmetic is exact; ties between
    equal remainders are broken at random, so no position is favoured.
    """
    scaled = [int(w * _WEIGHT_SCALE) + 1 for w in weights]
    total_weight = sum(scaled)
    floors = [amount * w // total_weight for w in scaled]
    remainders = [amount * w % total_weight for w in scaled]
    order = list(range(len(weights)))
    rng.shuffle(order)
    order.sort(key=lambda i: remainders[i], reverse=True)
    for i in order[: amount - sum(floors)]:
        floors[i] += 1
    return floors
