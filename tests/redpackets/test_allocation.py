"""Properties of the share split: rp-split-v1's test vectors, exact sums, bounds,
determinism, and no favoured claim position."""

import hashlib
import math
import random
import statistics
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redpackets.allocation import commitment, new_seed, split_fixed, split_random

MAX_SHARE = 20000  # the default REDPACKET_MAX_SHARE
VECTOR_PACKET_ID = "3f2a0c1e-8b7d-4e5f-9a6b-1c2d3e4f5a6b"
seeds = st.binary(min_size=32, max_size=32)


@st.composite
def random_packets(draw, max_count=100, max_cap=MAX_SHARE):
    """(total, share_count, cap) that can be split; totals lean towards both bounds."""
    share_count = draw(st.integers(min_value=1, max_value=max_count))
    cap = draw(st.integers(min_value=1, max_value=max_cap))
    low, high = share_count, share_count * cap
    total = draw(
        st.one_of(
            st.integers(min_value=low, max_value=high),
            st.integers(min_value=low, max_value=min(high, low + 5)),
            st.integers(min_value=max(low, high - 5), max_value=high),
            # Near share_count × cap, where the cap loop does most of the work.
            st.integers(min_value=max(low, high - high // 10), max_value=high),
        )
    )
    return total, share_count, cap


def assert_valid_split(shares, *, total, share_count, cap):
    assert len(shares) == share_count
    assert all(type(share) is int for share in shares)
    assert sum(shares) == total
    assert min(shares) >= 1
    assert max(shares) <= cap


def seeded(i: int) -> bytes:
    return hashlib.sha256(f"test seed {i}".encode()).digest()


# --- rp-split-v1: the contract's test vectors ------------------------------------------------


@pytest.mark.parametrize(
    ("total", "share_count", "cap", "seed", "shares", "expected_commitment"),
    [
        (1000, 5, 20000, bytes(32), [126, 408, 225, 82, 159],
         "sha256:843c4750147132fed348924ac0ff6bcb1339678518a6d31d4f9dabed89d9a9ac"),
        (10, 10, 20000, b"\x11" * 32, [1] * 10,
         "sha256:eacee9d62c6e05c2ee7c489fc3a74a81dfcc8168c8e6d65a90e589c4439d6407"),
        (888, 7, 200, bytes(range(32)), [49, 200, 200, 200, 18, 144, 77],
         "sha256:e6efd5fa46b003985d1b0cdbc6ef0250c97f6640829d4e80f5a8d048c61b8306"),
        (190000, 10, 20000, hashlib.sha256(b"red packet").digest(),
         [15599, 20000, 20000, 20000, 20000, 20000, 20000, 20000, 14401, 20000],
         "sha256:1e20c58eef2f96a3b8b26489e3e3c3dcb30dac59014c9524fc708efdc799f892"),
        (6, 3, 2, b"\xff" * 32, [2, 2, 2],
         "sha256:f0ca62f9fd18524a96ebfc31863ff8a180f582972eee4f52202b7ef209217343"),
        (100, 1, 20000, b"\xab" * 32, [100],
         "sha256:08452aa8bec0e15b70ef011549858d02a0b5955451d99d8c4122df6552df0d67"),
    ],
)
def test_the_contracts_test_vectors_give_their_shares_and_commitments(
    total, share_count, cap, seed, shares, expected_commitment
):
    assert split_random(total=total, share_count=share_count, cap=cap, seed=seed) == shares
    assert commitment(
        packet_id=VECTOR_PACKET_ID, total=total, share_count=share_count, cap=cap, seed=seed
    ) == expected_commitment


def test_the_fourth_vectors_seed_is_the_one_the_contract_spells_out():
    assert hashlib.sha256(b"red packet").hexdigest() == "50f2284d699c07c9badf69dfc2d3713f9908ebedd113f660641a512a6e001157"


# --- random split: properties -------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(random_packets(), seeds)
@example((1, 1, 1), bytes(32))
@example((1, 1, MAX_SHARE), bytes(32))
@example((100, 100, MAX_SHARE), bytes(32))
@example((100 * MAX_SHARE, 100, MAX_SHARE), bytes(32))
@example((100 * MAX_SHARE - 1, 100, MAX_SHARE), bytes(32))
@example((101, 100, MAX_SHARE), bytes(32))
@example((90, 5, 20), bytes(32))
@example((99, 5, 20), bytes(32))
def test_random_split_sums_exactly_to_the_total_within_bounds(packet, seed):
    total, share_count, cap = packet

    shares = split_random(total=total, share_count=share_count, cap=cap, seed=seed)

    assert_valid_split(shares, total=total, share_count=share_count, cap=cap)


@settings(max_examples=200, deadline=None)
@given(random_packets(), seeds)
def test_random_split_is_a_function_of_its_terms_and_seed(packet, seed):
    total, share_count, cap = packet

    first = split_random(total=total, share_count=share_count, cap=cap, seed=seed)
    second = split_random(total=total, share_count=share_count, cap=cap, seed=bytes(seed))

    assert first == second


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=MAX_SHARE), seeds)
def test_random_split_of_the_minimum_total_gives_everyone_one_unit(share_count, cap, seed):
    shares = split_random(total=share_count, share_count=share_count, cap=cap, seed=seed)

    assert shares == [1] * share_count


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=MAX_SHARE), seeds)
def test_random_split_of_the_maximum_total_gives_everyone_the_cap(share_count, cap, seed):
    shares = split_random(total=share_count * cap, share_count=share_count, cap=cap, seed=seed)

    assert shares == [cap] * share_count


def test_random_split_of_a_single_share_is_the_whole_total():
    shares = split_random(total=12345, share_count=1, cap=MAX_SHARE, seed=new_seed())

    assert shares == [12345]


def test_new_seeds_are_32_fresh_bytes_from_the_secure_source():
    random.seed(1234)
    first = new_seed()
    random.seed(1234)
    second = new_seed()

    assert len(first) == len(second) == 32
    assert first != second


def test_random_split_actually_varies_the_shares_with_the_seed():
    splits = {tuple(split_random(total=1000, share_count=5, cap=MAX_SHARE, seed=seeded(i))) for i in range(50)}

    assert len(splits) == 50
    assert all(len(set(shares)) > 1 for shares in splits)


@settings(max_examples=50, deadline=None)
@given(random_packets(max_count=20), seeds)
def test_the_commitment_changes_with_every_term_and_the_seed(packet, seed):
    total, share_count, cap = packet
    terms = {"packet_id": VECTOR_PACKET_ID, "total": total, "share_count": share_count, "cap": cap, "seed": seed}
    base = commitment(**terms)

    changed = [
        commitment(**{**terms, "packet_id": "3f2a0c1e-8b7d-4e5f-9a6b-1c2d3e4f5a6c"}),
        commitment(**{**terms, "total": total + 1}),
        commitment(**{**terms, "share_count": share_count + 1}),
        commitment(**{**terms, "cap": cap + 1}),
        commitment(**{**terms, "seed": bytes([seed[0] ^ 1]) + seed[1:]}),
    ]

    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert base not in changed


# --- random split: invalid input ---------------------------------------------------


@pytest.mark.parametrize(
    ("total", "share_count", "cap"),
    [
        (10, 0, 100),  # no shares
        (10, -1, 100),  # negative count
        (4, 5, 100),  # less than one unit per share
        (0, 1, 100),  # nothing to split
        (-5, 1, 100),  # negative total
        (501, 5, 100),  # more than the cap per share
        (1, 1, 0),  # a cap below the minimum share
        (MAX_SHARE * 3 + 1, 3, MAX_SHARE),  # one unit above count * cap
    ],
)
def test_random_split_refuses_impossible_packets(total, share_count, cap):
    with pytest.raises(ValueError):
        split_random(total=total, share_count=share_count, cap=cap, seed=bytes(32))


# --- fixed split -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_SHARE), st.integers(min_value=1, max_value=100))
def test_fixed_split_gives_every_share_the_same_amount(share_amount, share_count):
    shares = split_fixed(share_amount=share_amount, share_count=share_count)

    assert shares == [share_amount] * share_count
    assert sum(shares) == share_amount * share_count


@pytest.mark.parametrize(
    ("share_amount", "share_count"),
    [(100, 0), (100, -1), (0, 5), (-1, 5)],
)
def test_fixed_split_refuses_empty_packets(share_amount, share_count):
    with pytest.raises(ValueError):
        split_fixed(share_amount=share_amount, share_count=share_count)


# --- random split: no claim position is favoured -----------------------------------------


def _positions(samples):
    """Per claim position: the list of its shares over all sampled packets."""
    return list(zip(*samples, strict=True))


def _best_positions(samples):
    """How often each position holds the best share; the earliest wins a tie."""
    wins = [0] * len(samples[0])
    for shares in samples:
        wins[shares.index(max(shares))] += 1
    return wins


def _assert_same_mean(positions, expected_mean, n):
    for values in positions:
        mean = statistics.fmean(values)
        standard_error = statistics.pstdev(values) / math.sqrt(n)
        assert abs(mean - expected_mean) <= 5 * standard_error + 1e-9, (mean, expected_mean, standard_error)


def _assert_same_spread(positions, n):
    """Each position's variance matches the pooled one within 5 standard errors of a variance."""
    variances = [statistics.pvariance(values) for values in positions]
    pooled = statistics.fmean(variances)
    for values, variance in zip(positions, variances, strict=True):
        mean = statistics.fmean(values)
        fourth_moment = statistics.fmean((v - mean) ** 4 for v in values)
        variance_error = math.sqrt(max(fourth_moment - variance**2, 0.0) / n)
        assert abs(variance - pooled) <= 5 * variance_error + 1e-9, (variance, pooled, variance_error)


def _assert_same_chance(counts, n, expected_probability):
    standard_error = math.sqrt(expected_probability * (1 - expected_probability) / n)
    for count in counts:
        assert abs(count / n - expected_probability) <= 5 * standard_error, (count / n, expected_probability)


def test_every_claim_position_gets_the_same_distribution():
    total, share_count, n = 1000, 5, 20_000

    samples = [split_random(total=total, share_count=share_count, cap=MAX_SHARE, seed=seeded(i)) for i in range(n)]

    positions = _positions(samples)
    _assert_same_mean(positions, total / share_count, n)
    _assert_same_spread(positions, n)
    _assert_same_chance(_best_positions(samples), n, 1 / share_count)
    # A real lucky draw: shares range from the minimum to several times the mean.
    assert min(min(values) for values in positions) == 1
    assert max(max(values) for values in positions) > 3 * total / share_count


def test_every_claim_position_gets_the_same_distribution_near_the_cap():
    total, share_count, cap, n = 90, 5, 20, 20_000

    samples = [split_random(total=total, share_count=share_count, cap=cap, seed=seeded(i)) for i in range(n)]

    positions = _positions(samples)
    _assert_same_mean(positions, total / share_count, n)
    _assert_same_spread(positions, n)
    # Near the cap most packets have several shares at the cap, so the best share
    # is nearly always a tie (won by the earliest claimer, by the best_luck rule);
    # what must not depend on the position is the distribution itself: the mean,
    # the spread, and the chance of sitting at the cap or well below the mean.
    at_cap = [sum(1 for v in values if v == cap) for values in positions]
    overall = sum(at_cap) / (n * share_count)
    assert 0 < overall < 1
    _assert_same_chance(at_cap, n, overall)
    # The low end too: the chance of a share well below the mean.
    low = [sum(1 for v in values if v < 15) for values in positions]
    overall_low = sum(low) / (n * share_count)
    assert 0 < overall_low < 1
    _assert_same_chance(low, n, overall_low)


def test_every_claim_position_gets_the_same_distribution_when_the_cap_binds_often():
    # Mean 15000 with a cap of 20000: about half the first draws pass the cap, so most
    # shares are shaped by the cap loop, which must not favour any position either.
    total, share_count, cap, n = 150_000, 10, MAX_SHARE, 10_000

    samples = [split_random(total=total, share_count=share_count, cap=cap, seed=seeded(-i)) for i in range(n)]

    positions = _positions(samples)
    _assert_same_mean(positions, total / share_count, n)
    _assert_same_spread(positions, n)
    at_cap = [sum(1 for v in values if v == cap) for values in positions]
    overall = sum(at_cap) / (n * share_count)
    assert 0.1 < overall < 0.9
    _assert_same_chance(at_cap, n, overall)
    low = [sum(1 for v in values if v < total / share_count / 2) for values in positions]
    overall_low = sum(low) / (n * share_count)
    assert 0 < overall_low < 1
    _assert_same_chance(low, n, overall_low)


def test_below_the_cap_every_split_of_a_small_packet_is_equally_likely():
    # 7 in 3 shares of at least 1: the 15 compositions of 4 into 3 parts, each 1/15.
    n = 15_000

    counts = Counter(tuple(split_random(total=7, share_count=3, cap=MAX_SHARE, seed=seeded(i))) for i in range(n))

    assert len(counts) == math.comb(4 + 2, 2)
    _assert_same_chance(counts.values(), n, 1 / len(counts))
