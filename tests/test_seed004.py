"""Seed 004: partition dropout (LFSR partitions, coverage) and stochastic scalar products (unbiased,
error shrinking with the sample count), against hand derivations and brute force."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdsim.errors import HdsimError
from hdsim.lfsr import LFSR
from hdsim.partition_dropout import PartitionSchedule, check_partitions, partition_cycle
from hdsim.stochastic_products import check_fraction, sample_weights, samples_for_fraction


# ---- partition dropout --------------------------------------------------------------------------
@pytest.mark.parametrize("P", [2, 3, 5, 9])
def test_every_unit_is_dropped_exactly_once_per_cycle_of_P_steps(P):
    s = PartitionSchedule(37, P, seed=11)
    for cycle in range(3):
        dropped = np.array([~s.next_mask() for _ in range(P)])  # (P, units)
        assert (dropped.sum(axis=0) == 1).all()  # covered: each unit dropped once, kept P - 1 times
    assert s.scale == pytest.approx(P / (P - 1))


def test_partitions_are_floor_of_the_lfsr_word_times_P():
    ref = LFSR(5)  # an independent register, the same seed
    P, words = 7, [ref.next_word() for _ in range(50)]
    r = LFSR(5)
    assert partition_cycle(r, 50, P).tolist() == [int(Fraction(w, 2**32) * P) for w in words]  # floor(xi * P)


def test_partitions_change_between_cycles_and_spread_over_P():
    s = PartitionSchedule(4000, 4, seed=3)
    s.next_mask()
    first = s.partitions.copy()
    for _ in range(4):
        s.next_mask()
    assert not np.array_equal(first, s.partitions)  # a fresh draw each cycle
    counts = np.bincount(first, minlength=4) / 4000
    assert np.abs(counts - 0.25).max() < 0.03  # xi uniform: partitions of about units / P


@pytest.mark.parametrize("P", [1, 0, -3, 2.5, True])
def test_fewer_than_two_partitions_is_a_one_line_error(P):
    with pytest.raises(HdsimError, match=r"^partition_dropout: the number of partitions P must be an integer >= 2"):
        check_partitions(P)


# ---- stochastic scalar products ------------------------------------------------------------------
def test_counts_sum_to_n_and_keep_signs_and_zeros():
    w = np.array([[0.3, -0.2, 0.0, 0.5, -0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    q, scale = sample_weights(w, 13, np.random.default_rng(1))
    assert np.abs(q[0]).sum() == 13 and q[0, 2] == 0 and q[0, 4] == 0
    assert (np.sign(q[0]) * np.sign(w[0]) >= 0).all() and (q[1] == 0).all() and scale[1] == 0
    assert scale[0] == pytest.approx(1.0 / 13)
    # stratified: each count is within 1 of its mean n |w_i| / ||w||_1
    assert np.all(np.abs(np.abs(q[0]) - 13 * np.abs(w[0]) / 1.0) < 2)


def test_below_the_fan_in_the_weights_are_mostly_ternary():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, (20, 64)) * rng.choice([-1, 1], (20, 64))  # every |w_i| below ||w||_1 / n
    q, _ = sample_weights(w, samples_for_fraction(64, 0.25), rng)
    # an interval shorter than a stratum meets at most two strata: at most 2 draws, mostly 1
    assert np.abs(q).max() <= 2 and (np.abs(q).sum(axis=1) == 16).all()
    assert (np.abs(q[q != 0]) == 1).mean() > 0.8


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=2, max_size=12), st.integers(1, 20))
def test_the_estimate_is_unbiased(weights, n):
    w = np.array([weights])
    if not np.abs(w).sum() > 0:
        return
    x = np.linspace(-1, 2, w.shape[1])
    rng = np.random.default_rng(12)
    est = []
    for _ in range(3000):
        q, scale = sample_weights(w, n, rng)
        est.append(float((q[0] * scale[0]) @ x))
    exact = float(w[0] @ x)
    spread = np.abs(w).sum() * np.abs(x).max()  # |estimate - exact| is at most 2 ||w||_1 max|x|
    assert abs(np.mean(est) - exact) <= 0.06 * spread + 1e-12  # 3000 draws: well inside sampling error


def test_the_error_shrinks_as_n_grows():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(200, 256))
    x = rng.normal(size=256)
    exact = w @ x
    errs = []
    for n in (16, 64, 256, 1024):
        q, scale = sample_weights(w, n, rng)
        errs.append(float(np.sqrt(np.mean(((q * scale[:, None]) @ x - exact) ** 2))))
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[-1] < 0.25 * errs[0]


def test_the_sample_count_of_a_fraction_and_bad_fractions():
    assert samples_for_fraction(9, 0.25) == 3 and samples_for_fraction(64, 0.25) == 16
    assert samples_for_fraction(64, 1.0) == 64 and samples_for_fraction(3, 0.01) == 1
    for bad in (0, -0.5, 1.5, "x", float("nan")):
        with pytest.raises(HdsimError, match=r"^stochastic_fraction: "):
            check_fraction(bad)
    with pytest.raises(HdsimError, match="^weights: contain NaN"):
        sample_weights(np.array([[np.nan, 1.0]]), 2, np.random.default_rng(0))
    with pytest.raises(HdsimError, match="^n: samples per row"):
        sample_weights(np.ones((1, 3)), 0, np.random.default_rng(0))
