"""Fixed-point BCF (SPEC section 5): hand-computed ops, observe hook, widths, LFSR agreement, errors."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers import BCFConfig, BlockCodeFactorizer
from hdsim.fixed import Datapath, FixedBCF, FixedWidths, quantize_query
from hdsim.fixed.bcf import QUERY_PRESCALE_BITS
from hdsim.fixed import rounding as rd
from hdsim.lfsr import LFSRSampler
from hdsim.queries import QueryNoise, make_queries

T = torch.tensor


# ---- rounding and overflow helpers -----------------------------------------------------------

def test_shift_floor_and_round_half_up_ties():
    assert rd.shift_floor(T([7, 6, -7, -8]), 2).tolist() == [1, 1, -2, -2]
    # ties (x.5) go up, also for negatives: -1.5 -> -1, -0.5 -> 0
    assert rd.shift_round_half_up(T([2, 6, 5, -6, -2, 7]), 2).tolist() == [1, 2, 1, -1, 0, 2]
    assert rd.shift_round_half_up(T([3]), 0).tolist() == [3]
    # shift 1: x / 2 rounded half up (0.5 -> 1, 1.5 -> 2, -0.5 -> 0, -1.5 -> -1); shift_floor: floor(x / 2)
    assert rd.shift_round_half_up(T([1, 2, 3, -1, -3]), 1).tolist() == [1, 1, 2, 0, -1]
    assert rd.shift_round_half_up(T([3, -3]), -2).tolist() == [12, -12]  # a negative shift widens: x 2^2
    assert rd.shift_floor(T([1, 2, 3, -1, -3]), 1).tolist() == [0, 1, 1, -1, -2]
    assert rd.shift_floor(T([5, -5]), 0).tolist() == [5, -5] and rd.shift_floor(T([5, -5]), -2).tolist() == [20, -20]


def test_saturation_and_wrap():
    assert rd.saturate_unsigned(T([-1, 0, 15, 16, 99]), 4).tolist() == [0, 0, 15, 15, 15]
    assert rd.saturate_signed(T([-9, -8, 7, 8]), 4).tolist() == [-8, -8, 7, 7]
    assert rd.wrap_unsigned(T([16, 17, -1]), 4).tolist() == [0, 1, 15]


def test_bit_length_matches_python():
    xs = [0, 1, 2, 3, 7, 8, 255, 256, 2**31, 2**32 - 1, 2**32, 2**40 - 1, 2**53 - 1, 2**53, 2**53 + 1,
          2**62, 2**63 - 1]
    xs += [(1 << k) + d for k in range(63) for d in (-1, 0) if (1 << k) + d >= 0]  # every power's edge
    assert rd.bit_length(T(xs)).tolist() == [x.bit_length() for x in xs]  # oracle: Python's int.bit_length
    assert rd.bit_length(T([], dtype=torch.long)).tolist() == []
    with pytest.raises(ValueError, match="^bit_length: values must be non-negative$"):
        rd.bit_length(T([3, -1]))


def exact_round_half_up(value: float, frac_bits: int, bits: int) -> int:
    """Oracle: the rational ``value * 2^frac_bits`` rounded half up (Fraction arithmetic), clipped."""
    r = Fraction(value) * 2**frac_bits
    n = r.numerator // r.denominator  # floor
    n += r - n >= Fraction(1, 2)
    return max(0, min(n, 2**bits - 1))


def test_quantize_constants_round_half_up():
    assert rd.quantize_unsigned(0.5 / 256, 8, 8) == 1  # exactly half an LSB rounds up
    assert rd.quantize_unsigned(0.9, 8, 8) == 230  # 230.4
    assert rd.quantize_unsigned(1.0, 8, 8) == 255  # saturates
    assert rd.quantize_unsigned(-0.3, 8, 8) == 0  # clips at 0
    # Edge values where a float ``x + 0.5`` rounds: just below a half (the sum rounds up to 1.0),
    # and odd integers from 2^52 on (x + 0.5 is not a float there; ties go to the even neighbour).
    below_half = math.nextafter(0.5, 0.0)  # 0.49999999999999994
    cases = [(below_half, 0, 8), (0.5, 0, 8), (math.nextafter(0.5, 1.0), 0, 8), (math.nextafter(1.5, 0.0), 0, 8),
             (below_half / 256, 8, 8), (float(2**52 + 1), 0, 60), (2**51 + 0.5, 0, 60), (float(2**53 + 2), 0, 60),
             (2**52 - 0.5, 0, 60), (5e-324, 30, 30), (0.0076, 8, 8), (0.9, 8, 9), (0.1, 30, 30)]
    for v, f, b in cases:
        assert rd.quantize_unsigned(v, f, b) == exact_round_half_up(v, f, b), (v, f, b)
    assert rd.quantize_unsigned(below_half, 0, 8) == 0 and rd.quantize_unsigned(2**51 + 0.5, 0, 60) == 2**51 + 1
    assert rd.quantize_unsigned(float(2**52 + 1), 0, 60) == 2**52 + 1
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            rd.quantize_unsigned(bad, 8, 8)


@given(st.floats(min_value=0.0, max_value=2.0**40, allow_nan=False), st.integers(0, 30), st.integers(1, 62))
def test_quantize_unsigned_is_exact_rounding(value, frac_bits, bits):
    assert rd.quantize_unsigned(value, frac_bits, bits) == exact_round_half_up(value, frac_bits, bits)


def test_quantize_query_ties_and_saturation():
    q = T([[[0.125, 0.375, 0.5], [1.0, 0.0, 0.0]]], dtype=torch.float64)  # 2-bit words: 0.5, 1.5, 2 LSB; 4 LSB
    assert quantize_query(q, 2).tolist() == [[[1, 2, 2], [3, 0, 0]]]
    assert quantize_query(torch.zeros(1, 2, 3), 8).tolist() == [[[0, 0, 0], [0, 0, 0]]]  # empty blocks stay 0
    tiny = T([[[0.0, 5e-324, 1e-323]]], dtype=torch.float64)  # subnormal: a block, not an empty one
    assert quantize_query(tiny, 2).tolist() == [[[0, 1, 3]]]  # 0, 4/3, 8/3 LSB


def exact_query_words(block: list[float], bits: int) -> list[int]:
    """The documented query rule in exact rational arithmetic (a test oracle independent of torch)."""
    from fractions import Fraction

    e = math.frexp(max(block))[1]
    v = [math.floor(Fraction(x) * Fraction(2) ** (QUERY_PRESCALE_BITS - e)) for x in block]
    S = sum(v)
    return [0 if S == 0 else min(math.floor(Fraction(x * 2 ** bits, S) + Fraction(1, 2)), 2 ** bits - 1)
            for x in v]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=40), st.integers(2, 30),
       st.sampled_from([1.0, 2.0 ** -70, 2.0 ** 70, 0.75]))
def test_quantize_query_is_the_exact_rounding_of_q_over_the_block_sum(ints, bits, scale):
    """Integers times a short-mantissa scale lose nothing to the 31-bit prescale (v is q times a power
    of two): the words are the exact rational rounding of ``q_l / sum(q) 2^bits``."""
    from fractions import Fraction

    q = torch.tensor(ints, dtype=torch.float64).reshape(1, 1, -1) * scale
    total = sum(ints)
    want = [0 if total == 0 else min(int(Fraction(v * 2 ** bits, total) + Fraction(1, 2)), 2 ** bits - 1)
            for v in ints]
    assert quantize_query(q, bits).flatten().tolist() == want
    perm = torch.randperm(len(ints), generator=torch.Generator().manual_seed(len(ints)))
    assert quantize_query(q[..., perm], bits).flatten().tolist() == [want[i] for i in perm.tolist()]  # order-free


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0e3, allow_subnormal=False), min_size=2, max_size=40), st.integers(2, 30),
       st.sampled_from([1.0, 3.0e20, 1.0e-3, 2.0 ** -70, 1.0e-310, 1.0e300]))
def test_quantize_query_follows_the_documented_rule_for_any_float(xs, bits, scale):
    """Arbitrary mantissas: the 31-bit floor loses low bits, and the words are exactly the documented
    rule (floor to ``v``, then round ``v 2^bits / S`` half up). The floor moves ``S`` by less than the
    block length ``n`` against ``S >= 2^30``, so up to 24-bit words stay within one LSB of the real ratio."""
    from fractions import Fraction

    q = torch.tensor(xs, dtype=torch.float64).reshape(1, 1, -1) * scale
    block = q.flatten().tolist()
    got = quantize_query(q, bits).flatten().tolist()
    assert got == exact_query_words(block, bits)
    total = sum(Fraction(x) for x in block)
    if total > 0 and bits <= 24:
        real = [min(math.floor(Fraction(x) * 2 ** bits / total + Fraction(1, 2)), 2 ** bits - 1) for x in block]
        assert max(abs(a - b) for a, b in zip(got, real)) <= 1


# ---- datapath ops on hand-computed cases ------------------------------------------------------

def small_model(widths=FixedWidths(4, 4, 4, 4), **cfg) -> FixedBCF:
    cb = random_codebooks(2, 3, 8, 2, seed=0)  # B=2, L=4
    return FixedBCF(cb, BCFConfig(**cfg), widths)


def brute_correlation(t: torch.Tensor, x: torch.Tensor) -> list:
    """Oracle: ``acc[n, b, l] = sum_j t[n, b, (l + j) mod L] x[n, b, j]`` on Python integers."""
    k, B, L = t.shape
    return [[[sum(int(t[n, b, (l + j) % L]) * int(x[n, b, j]) for j in range(L)) for l in range(L)]
             for b in range(B)] for n in range(k)]


def test_correlate_is_the_exact_circular_correlation():
    m = small_model()
    t = T([[[1, 2, 3, 4], [0, 0, 15, 0]]])
    x = T([[[5, 0, 0, 1], [0, 2, 0, 0]]])
    # acc[l] = sum_j t[(l+j) mod 4] x[j]; block 0: l=0: 1*5 + 4*1 = 9; l=1: 2*5+1*1 = 11; ...
    assert m.correlate(t, x).tolist() == [[[9, 11, 17, 23], [0, 30, 0, 0]]]  # block 1: t[l+1] * 2


def test_correlation_at_the_int32_bound_is_exact():
    """acc_bits = 16 + 15 = 31 takes the int32 convolution: the largest accumulator the bound allows,
    (2^16 - 1) * 2^15 = 2^31 - 2^15, equals Python's integers (no wrap-around)."""
    m = FixedBCF(random_codebooks(2, 4, 32, 2, seed=0), BCFConfig(), FixedWidths(16, 15, 16, 15))
    assert m.dp.acc_bits == 31 and m._int == torch.int32
    t = torch.full((2, 2, 16), 2**16 - 1)
    x = torch.zeros(2, 2, 16, dtype=torch.long)
    x[..., 0], x[..., 3], x[..., 7] = 2**14, 2**14 - 1, 1  # a block sum of 2^15
    for got in (m.correlate(t, x), m.correlate_gather(t, x)):
        assert got.dtype == torch.int64 and (got == (2**16 - 1) * 2**15).all()


def test_correlation_split_into_two_int32_convolutions_is_exact():
    """16-bit words (acc_bits = 32): t splits at bit h = 31 - 16 = 15 into two int32 convolutions;
    at the largest operands the bound allows the sum equals Python's integers (2^32 - 2^16)."""
    m = FixedBCF(random_codebooks(2, 4, 32, 2, seed=0), BCFConfig(), FixedWidths.uniform(16))
    assert m.dp.acc_bits == 32 and m._split == 15
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 2**16, (3, 2, 16), generator=g)
    t[0] = 2**16 - 1
    x = torch.zeros(3, 2, 16, dtype=torch.long)
    x[..., 2], x[..., 11], x[..., 15] = 2**15, 2**15 - 9, 9  # a block sum of 2^16
    exact = brute_correlation(t, x)
    assert m.correlate(t, x).tolist() == exact and exact[0][0][0] == (2**16 - 1) * 2**16


def test_correlation_is_integer_exact_beyond_float64_at_the_widest_words():
    """At 30-bit words the accumulator reaches ~2^60: both formulations (the CPU's int64 conv1d and
    the gather-multiply-sum other devices take) equal Python's integers, where float64 does not."""
    m = FixedBCF(random_codebooks(2, 4, 32, 2, seed=0), BCFConfig(), FixedWidths(30, 30, 20, 29))
    assert m.dp.acc_bits == 60 and m._int == torch.int64 and m._split is None  # 30 + 2 * 30 > 62
    g = torch.Generator().manual_seed(0)
    k, B, L = 3, 2, 16
    t = torch.randint(2**29, 2**30, (k, B, L), generator=g)
    x = torch.zeros(k, B, L, dtype=torch.long)
    x[..., 0], x[..., 5], x[..., 9] = 2**29 - 3, 2**28 + 1, 2**28 - 7  # a block sum below 2^30
    exact = brute_correlation(t, x)
    for got in (m.correlate(t, x), m.correlate_gather(t, x), m.correlate_gather(t, x, chunk=1)):
        assert got.dtype == torch.int64 and got.tolist() == exact
    as_float = torch.nn.functional.conv1d(torch.cat([t, t[..., :L - 1]], -1).double().reshape(1, k * B, -1),
                                          x.double().reshape(k * B, 1, L), groups=k * B)
    assert as_float.reshape(k, B, L).long().tolist() != exact  # the oracle tells float64 apart


class GatheredSizes(torch.overrides.TorchFunctionMode):
    """Records how many entries each ``gather`` returns (what ``correlate_gather``'s ``chunk`` bounds)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.gather, torch.Tensor.gather):
            self.sizes.append(out.numel())
        return out


def test_correlate_gather_in_chunks_is_the_brute_force_correlation():
    """Every batch size (1 query included) and chunk: the brute-force correlation, with each gather
    holding ``step = max(1, chunk // (B L^2))`` queries (the last one the rest), none empty."""
    m = small_model()  # correlate_gather reads its shapes from t and x, not from the model
    g = torch.Generator().manual_seed(11)
    B, L = 3, 5
    per_query = B * L * L  # entries gathered for one query
    for k in (1, 2, 5, 7):
        t = torch.randint(0, 1000, (k, B, L), generator=g)
        x = torch.randint(0, 300, (k, B, L), generator=g)
        want = brute_correlation(t, x)
        assert m.correlate(t, x).tolist() == want
        for chunk, step in ((1, 1), (per_query, 1), (2 * per_query + 1, 2), (3 * per_query, 3), (1 << 24, k)):
            with GatheredSizes() as mode:
                got = m.correlate_gather(t, x, chunk=chunk)
            assert got.dtype == torch.int64 and got.tolist() == want, (k, chunk)
            full, rest = divmod(k, step)
            assert mode.sizes == [step * per_query] * full + [rest * per_query] * (rest > 0), (k, chunk)
    empty = torch.zeros(0, B, L, dtype=torch.long)  # no queries left: an empty result of the same shape
    for out in (m.correlate(empty, empty), m.correlate_gather(empty, empty)):
        assert out.shape == (0, B, L) and out.dtype == torch.int64


def test_correlation_just_past_the_split_bound_is_exact():
    """Wt + 2 Wx = 63 > 62 (Wq = Wu = 29, Wx = 17): a split at h = 31 - 17 = 14 would leave
    conv(t_hi, x) < 2^(29 - 14 + 17) = 2^32, past int32, so one int64 convolution runs instead; at the
    largest operands the bound allows it equals Python's integers (sum x = 2^17, every t = 2^29 - 1)."""
    m = FixedBCF(random_codebooks(2, 4, 32, 2, seed=0), BCFConfig(), FixedWidths(29, 17, 29, 16))
    assert m.dp.acc_bits == 46 and m._split is None and m._int == torch.int64
    t = torch.full((2, 2, 16), 2**29 - 1)
    t[1, :, 5] = 2**28  # one row not constant: the shifts matter
    x = torch.zeros(2, 2, 16, dtype=torch.long)
    x[..., 1], x[..., 6], x[..., 12] = 2**16, 2**16 - 5, 5  # a block sum of 2^17
    assert m.correlate(t, x).tolist() == brute_correlation(t, x)


@pytest.mark.parametrize("M, D, B", [(10, 256, 4), (3, 64, 4), (40, 256, 4)])
def test_correlation_with_an_estimate_uses_its_support_and_equals_the_dense_one(M, D, B):
    # An estimate is a bundle of its factor's codevectors: zero outside their positions,
    # so the sparse path (M small against L) must give the dense correlation's integers.
    m = FixedBCF(random_codebooks(2, M, D, B, seed=3), BCFConfig(), FixedWidths())
    assert (m._supports[0] is not None) == (4 * min(M, D // B) <= D // B)
    g = torch.Generator().manual_seed(M)
    for k in (1, 5, 40):  # 40: the dense path a large batch takes
        t = torch.randint(0, 256, (k, B, D // B), generator=g)
        for f in range(2):
            w = torch.randint(0, 1000, (k, M), generator=g)
            w[0, : M // 2] = 0  # some codevectors absent
            x, _, _ = m.bundle(w, f)
            assert torch.equal(m.correlate_estimate(t, x, f), m.correlate(t, x))


def test_unbind_requantizes_with_round_half_up():
    m = small_model()  # Wq = Wx = Wu = 4: acc >> 4, round half up
    q = T([[[1, 2, 3, 4], [0, 0, 15, 0]]])
    x = torch.zeros(1, 2, 2, 4, dtype=torch.long)
    x[0, 1] = T([[5, 0, 0, 1], [0, 2, 0, 0]])  # estimate of factor 1; factor 0 is decoded
    # acc = [[9, 11, 17, 23], [0, 30, 0, 0]] / 16 -> [[0.56, 0.69, 1.06, 1.44], [0, 1.875, 0, 0]]
    assert m.unbind(q, x, 0).tolist() == [[[1, 1, 1, 1], [0, 2, 0, 0]]]


def test_normalize_reciprocal_scheme():
    m = small_model(FixedWidths(4, 4, 4, 3))  # Wx = 4, G = 3
    s = T([[[3, 1, 0, 0], [0, 0, 4, 0]], [[1, 1, 1, 0], [3, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    S = T([4, 3, 0])
    x, R = m.normalize(s, S)
    # S=4: p=3, R=floor(2^6/4)=16, x = (s*16) >> 2 = s*4 -> [12, 4] and 16 saturates to 15
    # S=3: p=2, R=floor(2^5/3)=10, x = (s*10) >> 1 -> 1 -> 5, 3 -> 15
    assert R.tolist() == [16, 10, 0]
    assert x.tolist() == [[[12, 4, 0, 0], [0, 0, 15, 0]], [[5, 5, 5, 0], [15, 0, 0, 0]],
                          [[0, 0, 0, 0], [0, 0, 0, 0]]]


def test_bundle_weights_every_block_and_sums_S():
    m = small_model()
    X = m.codebooks.indices[0]
    w = T([[2, 0, 1]])
    x, S, R = m.bundle(w, 0)
    assert S.tolist() == [3]
    s = torch.zeros(2, 4, dtype=torch.long)
    for mi in range(3):
        for b in range(2):
            s[b, X[mi, b]] += w[0, mi]
    x2, _ = m.normalize(s.unsqueeze(0), S)
    assert torch.equal(x, x2)


# ---- the decode and its observe hook ----------------------------------------------------------

def run_observed(model, queries, **kw):
    states = []
    res = model.factorize(queries, observe=states.append, **kw)
    return res, states


def test_observe_hook_replays_the_whole_state_sequence():
    cb = random_codebooks(2, 200, 256, 4, seed=3)
    qs = make_queries(cb, 24, seed=4, noise=QueryNoise("gaussian", 0.01))
    model = FixedBCF(cb, BCFConfig(T=0.01, A=30, max_iter=25, Tc=0.6), FixedWidths.uniform(8),
                     sampler=LFSRSampler(5))
    res, states = run_observed(model, qs.queries)
    assert [s.iteration for s in states] == list(range(1, len(states) + 1))
    q = model.prepare_queries(qs.queries)
    x = model.initial_estimates(24)
    last = {}
    for st_ in states:
        ids = torch.from_numpy(st_.query_ids)
        xa = x[ids].clone()
        for f, fs in enumerate(st_.factors):
            u = model.unbind(q[ids], xa, f)  # recomputed from the previous state
            assert np.array_equal(u.numpy(), fs.u)
            assert np.array_equal(fs.amax, fs.a.max(1)) and np.array_equal(fs.argmax, fs.a.argmax(1))
            assert not (fs.sampled & fs.pulled).any()
            xa[:, f] = torch.from_numpy(fs.x)
        x[ids] = xa
        conv = np.logical_and.reduce([fs.pulled for fs in st_.factors])
        assert np.array_equal(st_.converged, conv)
        for i, qid in enumerate(st_.query_ids):
            last[int(qid)] = (st_.iteration, [int(fs.argmax[i]) for fs in st_.factors], bool(conv[i]))
    assert sorted(last) == list(range(24))  # every query observed
    for qid, (it, idx, conv) in last.items():
        assert res.iterations[qid] == it and res.indices[qid].tolist() == idx and res.converged[qid] == conv
    assert any(fs.sampled.any() for s in states for fs in s.factors)  # the LFSR path ran


def test_batch_size_splits_the_decode_and_changes_no_result():
    """``batch_size`` bounds how many queries decode together (the memory a call needs): with 7
    queries in batches of 3 the hook's first iteration of each batch sees positions 0-2, 3-5, 6 (by
    hand), and the results equal the one-batch decode, since each query's LFSR draws depend on its
    position in the call, not in the batch."""
    cb = random_codebooks(2, 30, 256, 4, seed=8)
    qs = make_queries(cb, 7, seed=9, noise=QueryNoise("gaussian", 0.02))
    model = FixedBCF(cb, BCFConfig(T=0.05, A=4, max_iter=10, Tc=0.6), FixedWidths(), sampler=LFSRSampler(3))
    whole = model.factorize(qs.queries)
    states = []
    parts = model.factorize(qs.queries, batch_size=3, observe=states.append)
    firsts = [s.query_ids.tolist() for s in states if s.iteration == 1]
    assert firsts == [[0, 1, 2], [3, 4, 5], [6]]
    for name in ("indices", "iterations", "converged", "max_similarity"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name


def test_an_injected_sampler_is_asked_per_factor_with_its_codebook_size():
    """A custom sampler (the ``Sampler`` protocol: ``(query_ids, factor, M, A)``) is told which
    factor it draws for and that factor's codebook size; ``LFSRSampler`` ignores the factor (one
    register per query, as in the RTL), so only an injected sampler shows it. Factor sizes 9 and
    14 tell the two apart."""
    calls = []
    inner = LFSRSampler(4)

    def sampler(ids, factor, M, A):
        calls.append((factor, M, A))
        return inner(ids, factor, M, A)

    cb = random_codebooks(2, (9, 14), 256, 4, seed=2)
    qs = make_queries(cb, 6, seed=3, noise=QueryNoise("gaussian", 0.05))
    FixedBCF(cb, BCFConfig(T=0.3, A=3, max_iter=6, Tc=0.9), FixedWidths(), sampler=sampler).factorize(qs.queries)
    assert {0, 1} == {f for f, _, _ in calls}  # T = 0.3: both factors sample
    assert all(M == (9, 14)[f] and A == 3 for f, M, A in calls)


def test_the_models_defaults_seed_1_and_tc_scaled_by_the_block_count_for_dot():
    """Defaults, by hand: without ``seed`` the model samples as with ``seed=1`` (its documented
    default), and the dot similarity's default ``Tc = 0.9 B``: at B = 4 and 8-bit unbound words
    ``round_half_up(3.6 * 2^8) = round(921.6) = 922`` (linf: ``round(0.9 * 256) = 230``)."""
    cb = random_codebooks(2, 25, 256, 4, seed=6)
    qs = make_queries(cb, 8, seed=7, noise=QueryNoise("gaussian", 0.05))
    cfg = BCFConfig(T=0.3, A=3, max_iter=8, Tc=0.9)
    default, one, two = (FixedBCF(cb, cfg, **kw).factorize(qs.queries) for kw in ({}, {"seed": 1}, {"seed": 2}))
    assert torch.equal(default.indices, one.indices) and torch.equal(default.iterations, one.iterations)
    assert not torch.equal(default.indices, two.indices)  # the seed matters (T = 0.3: the draws decide)
    assert FixedBCF(cb, BCFConfig(similarity="dot")).dp.Tc_int == 922
    assert FixedBCF(cb, BCFConfig()).dp.Tc_int == 230


def test_integer_queries_give_the_same_decode_as_float_ones():
    cb = random_codebooks(2, 50, 256, 4, seed=1)
    qs = make_queries(cb, 16, seed=2, noise=QueryNoise("gaussian", 0.02))
    m = FixedBCF(cb, BCFConfig(Tc=0.5), FixedWidths.uniform(10))
    a = m.factorize(qs.queries)
    b = m.factorize(quantize_query(qs.queries / qs.queries.sum(-1, keepdim=True), 10))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.iterations, b.iterations)


@pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)
def test_cuda_decode_is_bit_identical_to_cpu():
    """On CUDA the correlation is an int64 gather-multiply-sum (no float, no TF32 conv): every
    iteration's integers equal the CPU's int32/int64 convolution."""
    cb = random_codebooks(2, 40, 512, 4, seed=1)
    qs = make_queries(cb, 48, seed=2, noise=QueryNoise("gaussian", 0.02))
    runs = {}
    for dev in ("cpu", "cuda"):
        states = []
        res = FixedBCF(cb, BCFConfig(T=0.02, A=8), FixedWidths(), device=dev).factorize(
            qs.queries, observe=lambda st: states.append(st))
        runs[dev] = (res, states)
    (a, sa), (b, sb) = runs["cpu"], runs["cuda"]
    assert torch.equal(a.indices, b.indices.cpu()) and torch.equal(a.iterations, b.iterations.cpu())
    assert len(sa) == len(sb)
    for x, y in zip(sa, sb):
        for fx, fy in zip(x.factors, y.factors):
            assert all(np.array_equal(getattr(fx, k), getattr(fy, k)) for k in ("u", "a", "w", "x"))


def test_same_lfsr_seed_same_result_and_float_agreement_at_wide_words():
    cb = random_codebooks(2, 500, 512, 4, seed=0)
    qs = make_queries(cb, 64, seed=1)
    cfg = BCFConfig(T=0.0045, A=134, max_iter=60)
    model = FixedBCF(cb, cfg, FixedWidths.uniform(16), sampler=LFSRSampler(9))
    fx1 = model.factorize(qs.queries)
    fx2 = FixedBCF(cb, cfg, FixedWidths.uniform(16), sampler=LFSRSampler(9)).factorize(qs.queries)
    fl = BlockCodeFactorizer(cb, cfg, sampler=LFSRSampler(9), dtype=torch.float64).factorize(qs.queries)
    assert torch.equal(fx1.indices, fx2.indices) and torch.equal(fx1.iterations, fx2.iterations)
    fx3 = model.factorize(qs.queries, batch_size=7)  # the same object again: its LFSRs restart
    assert torch.equal(fx1.indices, fx3.indices) and torch.equal(fx1.iterations, fx3.iterations)
    assert fx1.iterations.float().mean() > 3  # the LFSR was drawn from
    assert (fx1.indices == fl.indices).all(1).float().mean() >= 0.98
    assert (fx1.iterations == fl.iterations).float().mean() >= 0.9


def test_eight_bit_words_decode_the_reference_kind_of_problem():
    cb = random_codebooks(2, 442, 512, 4, seed=2)
    qs = make_queries(cb, 64, seed=3)
    res = FixedBCF(cb, BCFConfig(T=0.0045, A=134), FixedWidths.uniform(8)).factorize(qs.queries)
    assert res.accuracy(qs.factors) >= 0.95


# ---- widths are never exceeded (property) --------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(bits=st.integers(4, 12), M=st.integers(2, 40), F=st.integers(2, 3), A=st.integers(0, 12),
       T=st.floats(0, 0.05), sim=st.sampled_from(["linf", "dot"]), seed=st.integers(0, 1000),
       noise=st.floats(0, 0.05))
def test_no_intermediate_exceeds_its_declared_width(bits, M, F, A, T, sim, seed, noise):
    B, D = 4, 64
    cb = random_codebooks(F, M, D, B, seed=seed)
    qs = make_queries(cb, 6, seed=seed + 1, noise=QueryNoise("gaussian", noise))
    Tc = 0.9 if sim == "linf" else 3.2
    Tscaled = T if sim == "linf" else T * B
    m = FixedBCF(cb, BCFConfig(T=Tscaled, A=A, Tc=Tc, max_iter=6, similarity=sim),
                 FixedWidths.uniform(bits), sampler=LFSRSampler(seed + 1))
    dp = m.dp
    q = m.prepare_queries(qs.queries)
    assert q.max() < 2 ** bits and q.min() >= 0
    x_prev = m.initial_estimates(6)
    states = []
    m.factorize(qs.queries, observe=states.append)
    for s in states:
        ids = torch.from_numpy(s.query_ids)
        xa = x_prev[ids].clone()
        for f, fs in enumerate(s.factors):
            for g in range(F):  # every unbinding accumulator fits acc_bits
                if g != f:
                    assert m.correlate(q[ids], xa[:, g]).max() < 2 ** dp.acc_bits
            assert fs.u.min() >= 0 and fs.u.max() < 2 ** bits
            assert fs.a.min() >= 0 and fs.a.max() < 2 ** dp.a_bits
            assert fs.S.max() < 2 ** dp.s_bits and fs.R.max() < 2 ** dp.recip_bits
            assert (fs.S.astype(object) * fs.R.astype(object)).max() < 2 ** dp.prod_bits  # s <= S
            assert fs.x.min() >= 0 and fs.x.max() < 2 ** bits
            assert fs.x.sum(-1).max() <= 2 ** bits  # normalization never overshoots one
            xa[:, f] = torch.from_numpy(fs.x)
        x_prev[ids] = xa


# ---- clear errors -------------------------------------------------------------------------

@pytest.mark.parametrize("widths,match", [
    (FixedWidths(1, 8, 8, 10), "widths.query"), (FixedWidths(8, 40, 8, 40), "widths.estimate"),
    (FixedWidths(8, 8, 8, 3), "widths.recip_guard"), (FixedWidths(8, 8.5, 8, 10), "widths.estimate"),
    (FixedWidths(8, 8, 2, 10), "Tc="),
])
def test_bad_widths_are_clear_errors(widths, match):
    cb = random_codebooks(2, 5, 64, 4, seed=0)
    with pytest.raises(HdsimError, match=match):
        FixedBCF(cb, BCFConfig(), widths)


def test_widths_file(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"query": 6, "unbound": 9}))
    assert FixedWidths.from_file(p) == FixedWidths(6, 8, 9, 10)
    p.write_text("{not json")
    with pytest.raises(HdsimError, match="not valid JSON"):
        FixedWidths.from_file(p)
    p.write_text(json.dumps({"qeury": 6}))
    with pytest.raises(HdsimError, match="unknown field"):
        FixedWidths.from_file(p)
    with pytest.raises(HdsimError, match="not found"):
        FixedWidths.from_file(tmp_path / "missing.json")


def test_widths_file_that_is_not_an_object(tmp_path):
    p = tmp_path / "w.json"
    for text in ("[8, 8, 8, 10]", "8", "null"):  # valid JSON, but no object of named widths
        p.write_text(text)
        with pytest.raises(HdsimError) as e:
            FixedWidths.from_file(p)
        assert str(e.value) == f"widths file {p}: expected a JSON object of widths"


def _error(fn) -> str:
    with pytest.raises(HdsimError) as e:
        fn()
    return str(e.value)


def test_widths_bounds_and_exact_messages():
    """Each width's range ends (queries, estimates and unbinding results 2..30 bits, the guard 0..30 and
    at least estimate - 1), accepted at the bound and refused one past it, every message in full."""
    for ok in (FixedWidths(2, 2, 2, 1), FixedWidths(30, 30, 30, 30), FixedWidths(8, 8, 8, 7)):
        ok.validate()  # no error
    cases = [
        (FixedWidths(1, 8, 8, 10), "widths.query: must be in [2, 30] bits, got 1"),
        (FixedWidths(8, 31, 8, 30), "widths.estimate: must be in [2, 30] bits, got 31"),
        (FixedWidths(8, 8, 1, 10), "widths.unbound: must be in [2, 30] bits, got 1"),
        (FixedWidths(8, 8, 8, -1), "widths.recip_guard: must be in [0, 30] bits, got -1"),
        (FixedWidths(8, 8, 8, 31), "widths.recip_guard: must be in [0, 30] bits, got 31"),
        (FixedWidths(8, True, 8, 10), "widths.estimate: expected an integer number of bits, got True"),
        (FixedWidths(8.0, 8, 8, 10), "widths.query: expected an integer number of bits, got 8.0"),
        (FixedWidths(8, 8, 8, 6), ("widths.recip_guard: must be >= estimate - 1 = 7 so the normalization "
                                   "shift is non-negative, got 6")),
    ]
    for w, msg in cases:
        assert _error(w.validate) == msg
        assert _error(lambda w=w: Datapath.build(w, 4, 16, (5, 5), "linf", 0.0, 0.9, 0)) == msg
    assert FixedWidths.uniform(5) == FixedWidths(5, 5, 5, 7)
    assert FixedWidths().as_dict() == {"query": 8, "estimate": 8, "unbound": 8, "recip_guard": 10}


def test_datapath_build_refusals_exact_messages():
    """The configurations the widths cannot hold, at and one past each limit (values by hand)."""
    def build(widths, M=(5, 5), sim="linf", T=0.0, Tc=0.9):
        return Datapath.build(widths, 4, 16, M, sim, T, Tc, 0)

    # Wu = 2, linf: a has 2 bits (largest 3); Tc = 0.9 * 4 = 3.6 -> 4 > 3
    assert _error(lambda: build(FixedWidths(8, 8, 2, 10))) == (
        "widths.unbound: Tc=0.9 quantizes to 4, above the largest linf similarity 3 of 2 bits; "
        "widen unbound or lower Tc")
    # Tc = 2.0 * 4 = 8 does not fit a_bits + 1 = 3 bits: reported saturated, 7
    assert _error(lambda: build(FixedWidths(8, 8, 2, 10), Tc=2.0)).startswith("widths.unbound: Tc=2.0 quantizes to 7,")
    assert build(FixedWidths(8, 8, 2, 10), Tc=0.75).Tc_int == 3  # 0.75 * 4 = 3: the largest similarity, accepted
    # dot at B = 4 adds clog2(4) = 2 bits: the same Tc fits (largest 15)
    assert build(FixedWidths(8, 8, 2, 10), sim="dot").Tc_int == 4
    assert _error(lambda: build(FixedWidths(8, 8, 2, 10), Tc=0.1)) == (
        "widths.unbound: Tc=0.1 quantizes to 0 at 2 fractional bits; widen unbound")  # 0.4 -> 0
    assert build(FixedWidths(8, 8, 2, 10), Tc=0.125).Tc_int == 1  # 0.5 LSB rounds up: accepted
    # s*R: s = Wu + clog2(M + 1), R = G + 2 bits. Wu = 28, M = 3, G = 30: 30 + 32 = 62 bits, accepted;
    # Wu = 29: 63 bits, refused
    assert build(FixedWidths(8, 8, 28, 30), M=(3,)).prod_bits == 62
    assert _error(lambda: build(FixedWidths(8, 8, 29, 30), M=(3, 2))) == (
        "widths: normalization product needs 63 bits (> 62) for M=3; narrow unbound or recip_guard")


def test_bad_integer_queries_are_clear_errors():
    cb = random_codebooks(2, 5, 64, 4, seed=0)
    m = FixedBCF(cb, BCFConfig(), FixedWidths.uniform(8))
    with pytest.raises(HdsimError, match=r"\[0, 255\]"):
        m.factorize(torch.full((2, 4, 16), 256, dtype=torch.long))
    with pytest.raises(HdsimError, match="shape"):
        m.factorize(torch.zeros(2, 4, 15, dtype=torch.long))
    with pytest.raises(HdsimError, match="NaN"):
        m.factorize(torch.full((2, 4, 16), float("nan")))


def test_datapath_table_lists_every_signal():
    dp = Datapath.build(FixedWidths.uniform(8), 4, 128, (1155, 1155), "linf", 0.0076, 0.9, 238)
    names = [r["signal"] for r in dp.table()]
    for sig in ("q", "x_f", "acc", "u_f", "a_m", "T", "Tc", "w_m", "s", "S", "R", "s*R", "idx_f", "flags"):
        assert sig in names
    assert dp.T_int == 2 and dp.Tc_int == 230


TABLE_KEYS = ["signal", "bits", "format", "op", "rounding", "overflow"]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "fixed_point.md"


def documented_table() -> list[list]:
    """The signal table of ``docs/fixed_point.md`` (its reference configuration), one list of cells
    per row, backticks removed and ``bits`` as an int: the oracle the code's table must reproduce."""
    lines = DOCS.read_text().splitlines()
    start = lines.index("| signal | bits | format | produced by | rounding | overflow |")
    rows = []
    for line in lines[start + 2:]:  # after the header and its |---| line, up to the table's end
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        rows.append([cells[0], int(cells[1]), *cells[2:]])
    return rows


def table_cells(dp: Datapath) -> list[list]:
    rows = dp.table()
    assert all(list(r) == TABLE_KEYS for r in rows)  # every row has exactly these keys, in this order
    return [[r[k] for k in TABLE_KEYS] for r in rows]


# The op, rounding and overflow cells that do not depend on the configuration (docs/fixed_point.md).
Q_OP = "query input: round_half_up(q / block sum * 2^Wq) (quantize_query)"
X_OP = "estimate: (s * R) >> (p + G - Wx)"
ACC_OP = "unbind: sum_j t[(l+j) mod L] * x[j]"
U_OP = "unbind result: acc / 2^(Win + Wx - Wu)"
W_OP = "bundling weight: a_m if kept, 1 if sampled or pulled up, else 0"
A_OVERFLOW = "saturate (only an added IMC perturbation can leave the range)"
BOUND = "cannot overflow (bound)"


def test_datapath_table_is_the_documented_table():
    """Every cell of the reference configuration's table equals docs/fixed_point.md's (written by hand:
    8-bit words; acc 8 + 8 = 16 bits; s = 8 + clog2(1156) = 19 bits; p holds 0..19 in 5 bits;
    R = G + 2 = 12 bits; s*R 31 bits; idx clog2(1155) = 11 bits)."""
    dp = Datapath.build(FixedWidths.uniform(8), 4, 128, (1155, 1155), "linf", 0.0076, 0.9, 238)
    doc = documented_table()
    a_m = next(row for row in doc if row[0] == "a_m")
    dot_note = " (dot: sum_b, Q2.8 at B=4)"  # the doc's a_m cell also names the dot variant
    assert a_m[3].endswith(dot_note)
    a_m[3] = a_m[3][:-len(dot_note)]
    assert table_cells(dp) == doc
    # the note: dot similarities at B=4 are sums of 4 words, Q2.8 in 10 bits
    dot = Datapath.build(FixedWidths.uniform(8), 4, 128, (1155, 1155), "dot", 0.0304, 3.6, 238)
    assert next(r for r in table_cells(dot) if r[0] == "a_m") == [
        "a_m", 10, "Q2.8", "similarity: sum_b u[b,c_b]", "exact", A_OVERFLOW]


def test_datapath_as_dict_of_the_reference_configuration():
    """What ``hdsim bench fixed`` prints as ``datapath``: every derived width of the documented table
    (docs/fixed_point.md) and the configuration, the widths as their own object."""
    dp = Datapath.build(FixedWidths.uniform(8), 4, 128, (1155, 1155), "linf", 0.0076, 0.9, 238)
    assert dp.as_dict() == {
        "B": 4, "L": 128, "M": (1155, 1155), "similarity": "linf", "T_int": 2, "Tc_int": 230, "A": 238,
        "a_bits": 8, "s_bits": 19, "recip_bits": 12, "prod_bits": 31, "acc_bits": 16, "idx_bits": 11,
        "widths": {"query": 8, "estimate": 8, "unbound": 8, "recip_guard": 10}}


def test_datapath_table_of_two_more_configurations_by_hand():
    """Unequal widths, both similarities, and p's width on either side of a power of two (it holds
    bit_length(S) in 0..s_bits: clog2(s_bits + 1) bits), each cell derived by hand."""
    # dot, B = 3: a = Wu + clog2(3) = 6 + 2 = 8 bits, Q2.6; s = 8 + clog2(101) = 15, p: 0..15 in 4 bits;
    # R = 11 + 2 = 13, s*R = 28; acc = max(9, 6) + 7 = 16; idx = clog2(100) = 7;
    # T = 0.05 * 64 = 3.2 -> 3, Tc = 2.0 * 64 = 128 (<= 255)
    dot = Datapath.build(FixedWidths(9, 7, 6, 11), 3, 80, (100, 20), "dot", 0.05, 2.0, 3)
    assert table_cells(dot) == [
        ["q", 9, "Q0.9", Q_OP, "round-half-up", "saturate"],
        ["x_f", 7, "Q0.7", X_OP, "floor", "saturate"],
        ["acc", 16, "Q0.16", ACC_OP, "exact", BOUND],
        ["u_f", 6, "Q0.6", U_OP, "round-half-up", "saturate"],
        ["a_m", 8, "Q2.6", "similarity: sum_b u[b,c_b]", "exact", A_OVERFLOW],
        ["T", 8, "Q2.6", "constant round_half_up(T * 2^Wu) = 3", "round-half-up", "saturate"],
        ["Tc", 8, "Q2.6", "constant round_half_up(Tc * 2^Wu) = 128", "round-half-up", "error if above range"],
        ["w_m", 8, "Q2.6", W_OP, "exact", "n/a"],
        ["s", 15, "integer", "bundle accumulator: sum_{m: X[m,b]=l} w_m", "exact", BOUND],
        ["S", 15, "integer", "per-block weight sum: sum_m w_m (the same for every block)", "exact", BOUND],
        ["p", 4, "integer", "bit length of S (priority encoder)", "exact", "n/a"],
        ["R", 13, "integer", "reciprocal: floor(2^(p+G) / S)", "floor", BOUND],
        ["s*R", 28, "integer", "normalization product", "exact", BOUND],
        ["idx_f", 7, "integer", "argmax_m a_m (lowest index on ties)", "n/a", "n/a"],
        ["flags", 1, "bit", "sampled, pulled-up, converged per factor", "n/a", "n/a"],
    ]
    # linf: a = Wu = 7 bits, Q0.7; s = 7 + clog2(301) = 16, p: 0..16 in 5 bits; R = 14, s*R = 30;
    # acc = max(10, 7) + 5 = 15; idx = clog2(300) = 9; T = 0.02 * 128 = 2.56 -> 3, Tc = 0.8 * 128 = 102.4 -> 102
    linf = table_cells(Datapath.build(FixedWidths(10, 5, 7, 12), 2, 64, (300, 40), "linf", 0.02, 0.8, 0))
    assert [r[:3] for r in linf] == [
        ["q", 10, "Q0.10"], ["x_f", 5, "Q0.5"], ["acc", 15, "Q0.15"], ["u_f", 7, "Q0.7"], ["a_m", 7, "Q0.7"],
        ["T", 7, "Q0.7"], ["Tc", 7, "Q0.7"], ["w_m", 7, "Q0.7"], ["s", 16, "integer"], ["S", 16, "integer"],
        ["p", 5, "integer"], ["R", 14, "integer"], ["s*R", 30, "integer"], ["idx_f", 9, "integer"],
        ["flags", 1, "bit"]]
    assert linf[4][3] == "similarity: min_b u[b,c_b]"
    # the one-bit end of clog2: B = 2 adds 1 bit to a dot similarity, 2 codevectors need a 1-bit index,
    # and s = a + clog2(3) = 6 + 2 bits; a single codevector (M = 1) still gets a 1-bit index
    small = Datapath.build(FixedWidths(4, 4, 5, 6), 2, 8, (2, 2), "dot", 0.1, 1.5, 1)
    assert (small.a_bits, small.s_bits, small.idx_bits) == (6, 8, 1)
    assert Datapath.build(FixedWidths(4, 4, 5, 6), 2, 8, (1,), "dot", 0.1, 1.5, 1).idx_bits == 1
    assert linf[5][3].endswith("= 3") and linf[6][3].endswith("= 102")
    # F = 3 with Wu > Wq: the second unbinding takes an unbound result (Wu bits), so the accumulator
    # holds Q0.(6 + 5) from the query and Q0.(9 + 5) from u, in max(6, 9) + 5 = 14 bits
    three = table_cells(Datapath.build(FixedWidths(6, 5, 9, 12), 2, 64, (10, 10, 10), "linf", 0.02, 0.8, 0))
    assert three[2][:3] == ["acc", 14, "Q0.11 (from q), Q0.14 (from u)"]
    # F = 2 unbinds only the query: one format even when Wu > Wq
    two = table_cells(Datapath.build(FixedWidths(6, 5, 9, 12), 2, 64, (10, 10), "linf", 0.02, 0.8, 0))
    assert two[2][:3] == ["acc", 14, "Q0.11"]


# ---- the compiled decoder (numba) against the model -------------------------------------------

@pytest.mark.parametrize("F, M, D, B, cfg, widths", [
    (2, 10, 256, 4, BCFConfig(), FixedWidths()),
    (2, 40, 512, 4, BCFConfig(T=0.02), FixedWidths.uniform(6)),
    (3, 8, 256, 4, BCFConfig(Tc=0.7, max_iter=20), FixedWidths()),
    (2, 20, 240, 3, BCFConfig(similarity="dot", Tc=2.0), FixedWidths(8, 8, 10, 12)),
    (3, 12, 512, 8, BCFConfig(T=0.01), FixedWidths(6, 7, 8, 9)),
])
def test_compiled_decoder_matches_the_model_every_iteration(F, M, D, B, cfg, widths):
    pytest.importorskip("numba", reason="numba is not installed (export extra)")
    from hdsim.fixed.compiled import CompiledFixedBCF, compiled_decoder

    cb = random_codebooks(F, M, D, B, seed=0)
    model = FixedBCF(cb, cfg, widths)
    n = 48
    g = torch.Generator().manual_seed(M)
    q = torch.cat([make_queries(cb, n, seed=1).queries,
                   make_queries(cb, n, seed=2, noise=QueryNoise("gaussian", 0.05)).queries,
                   torch.rand(n, B, D // B, generator=g), torch.zeros(3, B, D // B)])
    states = []
    ref = model.factorize(q, observe=states.append)
    got, (x_tr, a_tr, w_tr) = compiled_decoder(model).factorize(q, trace=True)
    for name in ("indices", "iterations", "converged", "max_similarity"):
        assert torch.equal(getattr(ref, name), getattr(got, name)), name
    assert bool(ref.converged.any()) and not bool(ref.converged.all())  # both kinds of query covered
    for state in states:  # every iteration's estimates, similarities and weights, every factor
        for f, step in enumerate(state.factors):
            m = step.a.shape[1]
            assert np.array_equal(step.x, x_tr[state.query_ids, state.iteration - 1, f]), (state.iteration, f)
            assert np.array_equal(step.a, a_tr[state.query_ids, state.iteration - 1, f, :m]), (state.iteration, f)
            assert np.array_equal(step.w, w_tr[state.query_ids, state.iteration - 1, f, :m]), (state.iteration, f)
    assert isinstance(compiled_decoder(model), CompiledFixedBCF)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_compiled_query_quantization_equals_the_model(dtype):
    pytest.importorskip("numba", reason="numba is not installed (export extra)")
    from hdsim.fixed.compiled import compiled_decoder

    cb = random_codebooks(2, 10, 256, 4, seed=0)
    g = torch.Generator().manual_seed(3)
    for bits in (2, 8, 16, 30):
        model = FixedBCF(cb, BCFConfig(), FixedWidths(bits, 8, 8, 10))
        fast = compiled_decoder(model)
        big = 1e30 if dtype != torch.float16 else 1e4
        q = torch.cat([torch.rand(20, 4, 64, generator=g) ** 8,  # many tiny entries next to large ones
                       torch.randint(0, 4, (20, 4, 64), generator=g).float(),  # exact ties
                       torch.rand(10, 4, 64, generator=g) * big, torch.rand(10, 4, 64, generator=g) / big,
                       torch.zeros(2, 4, 64)]).to(dtype)
        q[-1, 2, 7] = 0.25  # one entry in a block of zeros: saturates
        if dtype == torch.float64:  # the extremes of the exponent range: subnormal and huge block maxima
            extremes = torch.tensor([5e-324, 1e-310, 1e-300, 1e300], dtype=dtype)[:, None]
            q[-2] = torch.rand(4, 64, generator=g, dtype=dtype) * extremes
        assert np.array_equal(fast.prepare_queries(q), model.prepare_queries(q).numpy()), bits
        assert np.array_equal(fast.decode_arrays(q)[0], model.factorize(q).indices.numpy()), bits


@pytest.mark.parametrize("bad, match", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
                                        (-0.5, "non-negative")])
def test_compiled_decoder_rejects_bad_queries_like_the_model(bad, match):
    pytest.importorskip("numba", reason="numba is not installed (export extra)")
    from hdsim.fixed.compiled import compiled_decoder

    cb = random_codebooks(2, 10, 256, 4, seed=0)
    model = FixedBCF(cb)
    q = torch.rand(5, 256, generator=torch.Generator().manual_seed(0))
    q[3, 100] = bad
    for decode in (model.factorize, compiled_decoder(model).factorize, compiled_decoder(model).prepare_queries):
        with pytest.raises(HdsimError, match=match):
            decode(q)
    with pytest.raises(HdsimError, match="expected shape"):
        compiled_decoder(model).factorize(torch.ones(5, 255))


def test_compiled_decoder_declines_what_it_does_not_implement():
    pytest.importorskip("numba", reason="numba is not installed (export extra)")
    from hdsim.factorizers.base import RandomSampler
    from hdsim.fixed.compiled import CompiledFixedBCF, compiled_decoder

    cb = random_codebooks(2, 10, 256, 4, seed=0)
    # conditional sampling compiles with the default LFSR sampler only (tests/test_fixed_compiled.py)
    assert isinstance(compiled_decoder(FixedBCF(cb, BCFConfig(T=0.01, A=4))), CompiledFixedBCF)
    assert compiled_decoder(FixedBCF(cb, BCFConfig(T=0.01, A=4), sampler=RandomSampler(0))) is None
    # the default sampler is the LFSR of seed 1 (docs/fixed_point.md); A = 1 samples too
    default = FixedBCF(cb, BCFConfig(T=0.01, A=1))
    assert type(default.sampler) is LFSRSampler and default.sampler.seed == 1 and compiled_decoder(default).seed == 1
    assert compiled_decoder(FixedBCF(cb, BCFConfig(T=0.01, A=1), sampler=RandomSampler(0))) is None
    with pytest.raises(HdsimError, match="^model: conditional sampling \\(A=1\\) compiles only with the default "
                                         "hdsim.lfsr.LFSRSampler, got RandomSampler$"):
        CompiledFixedBCF(FixedBCF(cb, BCFConfig(T=0.01, A=1), sampler=RandomSampler(0)))
