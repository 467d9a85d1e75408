"""Properties of the share split: exact sums, bounds, and no favoured claim position."""

import math
import random
import statistics

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redpackets.allocation import split_fixed, split_random

MAX_SHARE = 20000  # the default REDPACKET_MAX_SHARE


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
        )
    )
    return total, share_count, cap


def assert_valid_split(shares, *, total, share_count, cap):
    assert len(shares) == share_count
    assert all(type(share) is int for share in shares)
    assert sum(shares) == total
    assert min(shares) >= 1
    assert max(shares) <= cap


# --- random split: properties -------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(random_packets(), st.integers(min_value=0, max_value=2**64).map(random.Random))
@example((1, 1, 1), random.Random(0))
@example((1, 1, MAX_SHARE), random.Random(0))
@example((100, 100, MAX_SHARE), random.Random(0))
@example((100 * MAX_SHARE, 100, MAX_SHARE), random.Random(0))
@example((100 * MAX_SHARE - 1, 100, MAX_SHARE), random.Random(0))
@example((101, 100, MAX_SHARE), random.Random(0))
@example((90, 5, 20), random.Random(0))
@example((99, 5, 20), random.Random(0))
def test_random_split_sums_exactly_to_the_total_within_bounds(packet, rng):
    total, share_count, cap = packet

    shares = split_random(total=total, share_count=share_count, cap=cap, rng=rng)

    assert_valid_split(shares, total=total, share_count=share_count, cap=cap)


@settings(max_examples=100, deadline=None)
@given(random_packets(max_count=50, max_cap=1000))
def test_random_split_from_the_secure_source_keeps_the_same_rules(packet):
    total, share_count, cap = packet

    shares = split_random(total=total, share_count=share_count, cap=cap)

    assert_valid_split(shares, total=total, share_count=share_count, cap=cap)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=MAX_SHARE))
def test_random_split_of_the_minimum_total_gives_everyone_one_unit(share_count, cap):
    shares = split_random(total=share_count, share_count=share_count, cap=cap)

    assert shares == [1] * share_count


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=MAX_SHARE))
def test_random_split_of_the_maximum_total_gives_everyone_the_cap(share_count, cap):
    shares = split_random(total=share_count * cap, share_count=share_count, cap=cap)

    assert shares == [cap] * share_count


def test_random_split_of_a_single_share_is_the_whole_total():
    shares = split_random(total=12345, share_count=1, cap=MAX_SHARE)

    assert shares == [12345]


def test_random_split_is_reproducible_with_a_seeded_generator():
    first = split_random(total=10000, share_count=10, cap=MAX_SHARE, rng=random.Random(42))

    second = split_random(total=10000, share_count=10, cap=MAX_SHARE, rng=random.Random(42))

    assert first == second


def test_random_split_does_not_follow_the_global_random_seed():
    random.seed(1234)
    first = split_random(total=1_000_000, share_count=100, cap=MAX_SHARE)

    random.seed(1234)
    second = split_random(total=1_000_000, share_count=100, cap=MAX_SHARE)

    assert first != second


def test_random_split_actually_varies_the_shares():
    rng = random.Random(7)

    splits = {tuple(split_random(total=1000, share_count=5, cap=MAX_SHARE, rng=rng)) for _ in range(50)}

    assert len(splits) == 50
    assert all(len(set(shares)) > 1 for shares in splits)


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
        split_random(total=total, share_count=share_count, cap=cap)


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
    rng = random.Random(20240601)

    samples = [split_random(total=total, share_count=share_count, cap=MAX_SHARE, rng=rng) for _ in range(n)]

    positions = _positions(samples)
    _assert_same_mean(positions, total / share_count, n)
    _assert_same_spread(positions, n)
    _assert_same_chance(_best_positions(samples), n, 1 / share_count)
    # A real lucky draw: shares range from the minimum to several times the mean.
    assert min(min(values) for values in positions) == 1
    assert max(max(values) for values in positions) > 3 * total / share_count


def test_every_claim_position_gets_the_same_distribution_near_the_cap():
    total, share_count, cap, n = 90, 5, 20, 20_000
    rng = random.Random(99)

    samples = [split_random(total=total, share_count=share_count, cap=cap, rng=rng) for _ in range(n)]

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
