"""The decode-path LFSR (hdsim.lfsr): period, known outputs, sampling, sampler protocol, Verilog header."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hdsim.errors import HdsimError
from hdsim.lfsr import (
    LFSR,
    LFSR_DEFAULT_SEED,
    LFSR_TAPS,
    LFSR_WIDTH,
    VERILOG_HEADER,
    LFSRBank,
    LFSRSampler,
    _expected_words,
    draw_distinct,
    draw_distinct_batch,
    query_seed,
    query_seeds,
    tie_break,
    tie_break_batch,
    uniform_index,
    uniform_index_batch,
    verilog_header_text,
)

TAPS16 = 0xB400  # x^16 + x^14 + x^13 + x^11 + 1, a known primitive polynomial (Galois right-shift mask)


def taps_from_exponents(exps: list[int]) -> int:
    """Mask bit e-1 for each term x^e, e >= 1 (the +1 is implicit)."""
    return sum(1 << (e - 1) for e in exps)


# ---------------------------------------------------------------- GF(2) matrix algebra on the step map

def step_matrix(width: int, taps: int) -> list[int]:
    """Columns of the one-step transition matrix, taken from the implementation itself."""
    cols = []
    for b in range(width):
        r = LFSR(1 << b, width, taps)
        r.step()
        cols.append(r.state)
    return cols


def apply(cols: list[int], v: int) -> int:
    out, b = 0, 0
    while v:
        if v & 1:
            out ^= cols[b]
        v >>= 1
        b += 1
    return out


def compose(a: list[int], b: list[int]) -> list[int]:
    return [apply(a, c) for c in b]


def mat_pow(cols: list[int], e: int) -> list[int]:
    result = [1 << b for b in range(len(cols))]
    base = cols
    while e:
        if e & 1:
            result = compose(base, result)
        base = compose(base, base)
        e >>= 1
    return result


def test_polynomial_constant_is_the_documented_one():
    assert LFSR_WIDTH == 32
    assert LFSR_TAPS == 0x80200003 == taps_from_exponents([32, 22, 2, 1])
    assert TAPS16 == taps_from_exponents([16, 14, 13, 11])


def test_full_period_width16_by_enumeration():
    # The same generic code at width 16 visits all 2^16 - 1 nonzero states before repeating.
    bank = LFSRBank([1], width=16, taps=TAPS16)
    seen = np.zeros(1 << 16, dtype=bool)
    for _ in range((1 << 16) - 1):
        s = int(bank.states[0])
        assert not seen[s]
        seen[s] = True
        bank.step()
    assert int(bank.states[0]) == 1
    assert seen[1:].all() and not seen[0]


@pytest.mark.parametrize("width,taps", [(16, TAPS16), (LFSR_WIDTH, LFSR_TAPS)])
def test_transition_matrix_has_maximal_order(width, taps):
    # Order of the step map is exactly 2^n - 1  <=>  characteristic polynomial primitive
    # <=> every nonzero state has period 2^n - 1 (prime factors of 2^32 - 1: 3, 5, 17, 257, 65537).
    n = (1 << width) - 1
    primes = [p for p in (3, 5, 17, 257, 65537) if n % p == 0]
    assert np.prod(primes, dtype=object) == n
    T = step_matrix(width, taps)
    ident = [1 << b for b in range(width)]
    assert mat_pow(T, n) == ident
    for p in primes:
        assert mat_pow(T, n // p) != ident


def test_non_maximal_polynomial_is_detected():
    # x^16 + 1 (mask 0x8000) is a pure rotation of period 16: the order check must fail.
    T = step_matrix(16, 0x8000)
    assert mat_pow(T, 16) == [1 << b for b in range(16)]


def test_width32_no_repeat_over_long_stretch():
    r = LFSR(LFSR_DEFAULT_SEED)
    states = []
    for _ in range(500_000):
        states.append(r.state)
        r.step()
    assert len(set(states)) == len(states)


def test_first_outputs_hand_computed_width32():
    # seed 1: out=1, s=0x80200003; out=1, s=(0x40100001)^T=0xC0300002; out=0, s=0x60180001; ...
    r = LFSR(1)
    expected = [(1, 0x80200003), (1, 0xC0300002), (0, 0x60180001), (1, 0xB02C0003),
                (1, 0xD8360002), (0, 0x6C1B0001), (1, 0xB62D8003), (1, 0xDB36C002)]
    for bit, state in expected:
        assert r.step() == bit
        assert r.state == state
    assert LFSR(1).next_bits(8) == 0b11011011


def test_first_outputs_hand_computed_width16():
    # 0xACE1 -> lsb 1: 0x5670 ^ 0xB400 = 0xE270 -> 0x7138 -> 0x389C -> 0x1C4E -> 0x0E27 -> 0x0713 ^ 0xB400.
    r = LFSR(0xACE1, width=16, taps=TAPS16)
    states = []
    bits = []
    for _ in range(6):
        bits.append(r.step())
        states.append(r.state)
    assert bits == [1, 0, 0, 0, 0, 1]
    assert states == [0xE270, 0x7138, 0x389C, 0x1C4E, 0x0E27, 0xB313]


def test_next_word_msb_first():
    r1, r2 = LFSR(12345), LFSR(12345)
    bits = [r1.step() for _ in range(32)]
    assert r2.next_word() == int("".join(map(str, bits)), 2)
    assert r1.state == r2.state
    assert LFSR(5).next_bits(0) == 0


@settings(max_examples=30, deadline=None)
@given(seeds=st.lists(st.integers(1, (1 << 32) - 1), min_size=1, max_size=6),
       n=st.integers(0, 64))
def test_bank_equals_scalar_registers(seeds, n):
    bank = LFSRBank(seeds)
    regs = [LFSR(s) for s in seeds]
    for _ in range(3):
        words = bank.next_bits(n)
        assert [int(w) for w in words] == [r.next_bits(n) for r in regs]
        assert [int(s) for s in bank.states] == [r.state for r in regs]
    bits = bank.step()
    assert list(bits) == [r.step() for r in regs]


def test_bank_active_mask_only_advances_active():
    bank = LFSRBank([7, 7, 7])
    w = bank.next_bits(10, np.array([True, False, True]))
    assert w[1] == 0 and w[0] == w[2] == LFSR(7).next_bits(10)
    assert int(bank.states[1]) == 7


def test_determinism():
    assert [LFSR(99).next_word() for _ in range(3)] == [LFSR(99).next_word()] * 3
    assert draw_distinct(LFSR(3), 50, 10) == draw_distinct(LFSR(3), 50, 10)
    a = LFSRSampler(11)(torch.arange(4), 0, 100, 7)
    b = LFSRSampler(11)(torch.arange(4), 0, 100, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, LFSRSampler(12)(torch.arange(4), 0, 100, 7))


def test_draw_distinct_follows_documented_algorithm():
    # Replay the documented steps by hand on a separate register.
    M, A = 10, 3
    got = draw_distinct(LFSR(1), M, A)
    r, taken, out = LFSR(1), set(), []
    while len(out) < A:
        w = r.next_bits(4)  # k = bit_length(9) = 4
        if w < M and w not in taken:
            taken.add(w)
            out.append(w)
    assert got == out == [6, 4, 5]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(1, (1 << 32) - 1), M=st.integers(1, 300), frac=st.floats(0, 1))
def test_draw_distinct_range_and_distinctness(seed, M, frac):
    A = int(round(frac * M))
    idx = draw_distinct(LFSR(seed), M, A)
    assert len(idx) == A == len(set(idx))
    assert all(0 <= i < M for i in idx)


@settings(max_examples=20, deadline=None)
@given(seeds=st.lists(st.integers(1, (1 << 32) - 1), min_size=1, max_size=5),
       M=st.integers(1, 200), A=st.integers(0, 40))
def test_draw_distinct_batch_equals_scalar(seeds, M, A):
    A = min(A, M)
    bank = LFSRBank(seeds)
    got = draw_distinct_batch(bank, M, A)
    regs = [LFSR(s) for s in seeds]
    want = np.array([draw_distinct(r, M, A) for r in regs], dtype=np.int64).reshape(len(seeds), A)
    assert np.array_equal(got, want)
    assert [int(s) for s in bank.states] == [r.state for r in regs]


@pytest.mark.parametrize("first_block", [None, 1, 7])
def test_draw_distinct_batch_large_and_block_retries(first_block):
    # Realistic BCF sizes; tiny first blocks force the "redo with a longer block" path.
    seeds = [5, 99, 1234567, 0xFFFFFFFF]
    bank = LFSRBank(seeds)
    got = draw_distinct_batch(bank, 1155, 238, _first_block=first_block)
    regs = [LFSR(s) for s in seeds]
    assert np.array_equal(got, np.array([draw_distinct(r, 1155, 238) for r in regs]))
    assert [int(s) for s in bank.states] == [r.state for r in regs]
    # k = 0 (M = 1): no step taken.
    bank = LFSRBank([9])
    assert draw_distinct_batch(bank, 1, 1).tolist() == [[0]] and int(bank.states[0]) == 9


def test_draw_is_roughly_uniform():
    counts = np.bincount(draw_distinct_batch(LFSRBank(query_seeds(5, np.arange(4000))), 12, 3).ravel(),
                         minlength=12)
    expected = 4000 * 3 / 12
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_uniform_index_and_tie_break():
    r = LFSR(77)
    vals = [uniform_index(r, 5) for _ in range(2000)]
    assert set(vals) == set(range(5))
    # One candidate: no bits consumed.
    r = LFSR(77)
    assert uniform_index(r, 1) == 0 and r.state == 77
    assert tie_break(LFSR(77), [9]) == 9
    # Same choice whatever the listing order; picks among the candidates.
    assert tie_break(LFSR(4), [30, 2, 17]) == tie_break(LFSR(4), [2, 17, 30])
    assert tie_break(LFSR(4), [30, 2, 17]) in (2, 17, 30)
    # Batch forms equal the scalar forms.
    seeds = [3, 1000, 65537]
    ns = [5, 1, 130]
    got = uniform_index_batch(LFSRBank(seeds), ns)
    assert list(got) == [uniform_index(LFSR(s), n) for s, n in zip(seeds, ns)]
    mask = np.zeros((3, 8), dtype=bool)
    mask[0, [1, 4, 6]] = True
    mask[1, [0]] = True
    mask[2, [2, 3, 5, 7]] = True
    got = tie_break_batch(LFSRBank(seeds), mask)
    want = [tie_break(LFSR(s), np.flatnonzero(m).tolist()) for s, m in zip(seeds, mask)]
    assert list(got) == want


def _mix(q: int) -> int:
    """The documented per-query mix, in Python integers (module docstring of hdsim.lfsr)."""
    m = ((q + 1) * 0x9E3779B9) % (1 << 32)
    return m ^ (m >> 16)


def test_query_seed_derivation():
    # Hand-computed: q = 0 -> m = 0x9E3779B9; m ^ (m >> 16) = 0x9E3779B9 ^ 0x00009E37 = 0x9E37E78E.
    assert query_seed(1, 0) == 1 ^ 0x9E37E78E
    assert query_seed(0xDEADBEEF, 5) == 0xDEADBEEF ^ _mix(5)
    # The one query id whose mix equals the seed falls back to the seed (never state 0).
    assert query_seed(0x9E37E78E, 0) == 0x9E37E78E
    ids = np.arange(50_000)
    s = query_seeds(LFSR_DEFAULT_SEED, ids)
    assert (s != 0).all() and np.unique(s).size == ids.size
    assert [int(v) for v in s[:20]] == [query_seed(LFSR_DEFAULT_SEED, int(q)) for q in ids[:20]]


def test_sampler_protocol_and_batch_independence():
    sampler = LFSRSampler(seed=2024)
    out = sampler(torch.arange(6), factor=0, M=40, A=5)
    assert out.shape == (6, 5) and out.dtype == torch.int64
    assert all(len(set(r.tolist())) == 5 for r in out)
    assert int(out.min()) >= 0 and int(out.max()) < 40
    # Second call continues each query's own stream.
    out2 = sampler(torch.tensor([4, 1]), factor=1, M=40, A=5)

    # Same draws when the queries come one by one, in another order.
    other = LFSRSampler(seed=2024)
    rows = {int(q): other(torch.tensor([q]), 0, 40, 5)[0] for q in [5, 3, 0, 1, 4, 2]}
    for q in range(6):
        assert torch.equal(rows[q], out[q])
    assert torch.equal(other(torch.tensor([1]), 1, 40, 5)[0], out2[1])
    assert torch.equal(other(torch.tensor([4]), 1, 40, 5)[0], out2[0])

    # reset() replays from the seeds; state() exposes the register for RTL comparison.
    assert sampler.state(0) != query_seed(2024, 0)
    sampler.reset()
    assert sampler.state(0) == query_seed(2024, 0)
    assert torch.equal(sampler(torch.arange(6), 0, 40, 5), out)


def test_sampler_in_bcf_is_batch_size_independent():
    from hdsim.codes import random_codebooks
    from hdsim.factorizers.bcf import BCFConfig, BlockCodeFactorizer
    from hdsim.queries import make_queries

    cb = random_codebooks(F=2, M=60, D=256, B=4, seed=3)
    qs = make_queries(cb, 12, seed=4)
    cfg = BCFConfig(T=0.05, A=10, max_iter=30)  # high threshold: forces sampling
    r1 = BlockCodeFactorizer(cb, cfg, sampler=LFSRSampler(7)).factorize(qs.queries)
    r2 = BlockCodeFactorizer(cb, cfg, sampler=LFSRSampler(7)).factorize(qs.queries, batch_size=5)
    assert torch.equal(r1.indices, r2.indices)
    assert torch.equal(r1.iterations, r2.iterations)


def test_expected_words_documented_example():
    # Hand derivation: the i-th distinct pick accepts a k-bit word with probability (M - i) / 2^k,
    # so it takes 2^k / (M - i) words on average (geometric); M = 1155 gives k = 11, 2^k = 2048, and
    # sum_{i<238} 2048 / (1155 - i) = 2048 (H_1155 - H_917) = 472.34 (exact rational below).
    exact = sum(Fraction(2048, 1155 - i) for i in range(238))
    assert _expected_words(1155, 238) == pytest.approx(float(exact), rel=1e-12)
    assert 472.3 < float(exact) < 472.4


def test_expected_words_is_what_draw_distinct_consumes():
    """Oracle: the words the real draw_distinct takes from real LFSRs, averaged over 1500 seeds
    spread over the register's range (consecutive small seeds give correlated first words)."""

    class Counting(LFSR):
        words = 0

        def next_bits(self, n):
            Counting.words += 1
            return super().next_bits(n)

    M, A, n = 20, 10, 1500
    for seed in np.random.default_rng(0).integers(1, 2**32, n):
        draw_distinct(Counting(int(seed)), M, A)
    mean = Counting.words / n
    expected = _expected_words(M, A)  # 32 (H_20 - H_10) = 21.40
    # the per-draw count's std is about 4.4 words (sum of geometric variances), so the mean's is 0.11
    assert abs(mean - expected) < 0.5, (mean, expected)


def test_errors():
    with pytest.raises(HdsimError, match="seed"):
        LFSR(0)
    with pytest.raises(HdsimError, match="seed"):
        LFSR(1 << 32)
    with pytest.raises(HdsimError, match="seed"):
        LFSRSampler(0)
    with pytest.raises(HdsimError, match="width"):
        LFSR(1, width=1)
    with pytest.raises(HdsimError, match="width"):
        LFSR(1, width=65)
    with pytest.raises(HdsimError, match="taps"):
        LFSR(1, width=16, taps=0x0400)  # top bit missing
    with pytest.raises(HdsimError, match="taps"):
        LFSR(1, width=16, taps=0x1B400)
    with pytest.raises(HdsimError, match="A"):
        draw_distinct(LFSR(1), 5, 6)
    with pytest.raises(HdsimError, match="A"):
        LFSRSampler(1)(torch.arange(2), 0, 5, 6)
    with pytest.raises(HdsimError, match="M"):
        draw_distinct(LFSR(1), 0, 0)
    with pytest.raises(HdsimError, match="states"):
        LFSRBank([1, 0])
    with pytest.raises(HdsimError, match="query_ids"):
        LFSRSampler(1)(torch.tensor([1, 1]), 0, 5, 2)
    with pytest.raises(HdsimError, match="query_ids"):
        LFSRSampler(1)(torch.tensor([-1]), 0, 5, 2)
    with pytest.raises(HdsimError, match="query_id"):
        query_seed(1, -1)
    with pytest.raises(HdsimError, match="n"):
        LFSR(1).next_bits(65)
    with pytest.raises(HdsimError, match="candidates"):
        tie_break(LFSR(1), [])
    with pytest.raises(HdsimError, match="mask"):
        tie_break_batch(LFSRBank([1]), np.zeros((1, 3), dtype=bool))


def test_shipped_verilog_header_matches_generator(tmp_path):
    assert VERILOG_HEADER.read_text(encoding="utf-8") == verilog_header_text()
    text = verilog_header_text()
    assert "`define HDSIM_LFSR_TAPS 32'h80200003" in text
    assert "`define HDSIM_LFSR_WIDTH 32" in text
    from hdsim.lfsr import write_verilog_header
    p = write_verilog_header(tmp_path / "x.vh")
    assert p.read_text(encoding="utf-8") == text
    nested = write_verilog_header(tmp_path / "a" / "b" / "x.vh")  # missing parent folders are created
    assert nested.read_text(encoding="utf-8") == text


def test_bank_next_word_and_argument_checks():
    """Mutation-found gaps: a bank's next_word is its width's worth of bits; query ids and candidate
    counts are checked at their bounds and by type, with messages naming the argument."""
    from hdsim.lfsr import _MAX_QUERY_ID, uniform_index, uniform_index_batch

    a, b = LFSRBank([5, 9], width=16, taps=TAPS16), LFSRBank([5, 9], width=16, taps=TAPS16)
    assert a.next_word().tolist() == b.next_bits(16).tolist() == [LFSR(s, 16, TAPS16).next_bits(16) for s in (5, 9)]
    query_seed(1, _MAX_QUERY_ID)  # the largest query id is accepted
    for bad in (_MAX_QUERY_ID + 1, -1, 1.0, True):
        with pytest.raises(HdsimError, match="query_id"):
            query_seed(1, bad)
    for bad in (0, 2.0, True):
        with pytest.raises(HdsimError, match="^n: number of candidates"):
            uniform_index(LFSR(3), bad)
    with pytest.raises(HdsimError, match="^n: every number of candidates"):
        uniform_index_batch(LFSRBank([3, 4]), [2, 0])
    with pytest.raises(HdsimError, match=r"^n: expected shape \(2,\)"):
        uniform_index_batch(LFSRBank([3, 4]), [2, 3, 4])
    with pytest.raises(HdsimError, match="^candidates: tie-break needs at least one candidate"):
        tie_break(LFSR(3), [])
    with pytest.raises(HdsimError, match="^mask: every row needs at least one candidate"):
        tie_break_batch(LFSRBank([3, 4]), np.array([[True, False], [False, False]]))
    for bad in (np.ones(2, dtype=bool), np.ones((3, 2), dtype=bool)):  # not 2-D; not one row per register
        with pytest.raises(HdsimError, match=r"^mask: expected shape \(2, n\)"):
            tie_break_batch(LFSRBank([3, 4]), bad)
    counts = np.array([[0, 2, 1, 0], [3, 0, 0, 1]])  # non-zero counts are candidates, like True
    assert tie_break_batch(LFSRBank([3, 4]), counts).tolist() == tie_break_batch(LFSRBank([3, 4]), counts > 0).tolist()
    # one register per candidate count, 1 (no draw) and 2 (one bit) included: the scalar reference's picks
    seeds, ns = list(range(3, 13)), [1, 2, 2, 2, 2, 2, 3, 5, 8, 1]
    got = uniform_index_batch(LFSRBank(seeds), ns)
    assert got.dtype == np.int64 and got.tolist() == [uniform_index(LFSR(s), n) for s, n in zip(seeds, ns)]


# ------------------------------------------------- argument checks, boundaries and dtypes (issue 17, mutation)

_MAX_ID = (1 << 32) - 2  # the largest query id (SPEC section 5)


def _sampler_draw(ids, M=5, A=2):
    return LFSRSampler(1).draw(ids, M, A)


@pytest.mark.parametrize("call, message", [
    (lambda: LFSR(1, width=1), "width: LFSR width must be an integer in [2, 64], got 1"),
    (lambda: LFSR(1, width=65), "width: LFSR width must be an integer in [2, 64], got 65"),
    (lambda: LFSR(1, width=16.0, taps=TAPS16), "width: LFSR width must be an integer in [2, 64], got 16.0"),
    (lambda: LFSR(1, width=True), "width: LFSR width must be an integer in [2, 64], got True"),
    (lambda: LFSR(1, width=16, taps=0), "taps: feedback mask must be a positive 16-bit integer, got 0"),
    (lambda: LFSR(1, width=16, taps=1 << 16), "taps: feedback mask must be a positive 16-bit integer, got 65536"),
    (lambda: LFSR(1, width=16, taps=True), "taps: feedback mask must be a positive 16-bit integer, got True"),
    (lambda: LFSR(1, width=16, taps=46080.0), "taps: feedback mask must be a positive 16-bit integer, got 46080.0"),
    (lambda: LFSR(1, width=16, taps=1), "taps: bit 15 (the x^16 term) must be set, got 0x1"),
    (lambda: LFSR(1, width=16, taps=0x7400), "taps: bit 15 (the x^16 term) must be set, got 0x7400"),
    (lambda: LFSR(0), "seed: must be nonzero (the all-zero state never leaves zero)"),
    (lambda: LFSR(True), "seed: expected an integer, got bool"),
    (lambda: LFSR(1.0), "seed: expected an integer, got float"),
    (lambda: LFSR(-5), "seed: must be in [1, 2^32 - 1], got -5"),
    (lambda: LFSR(1 << 32), "seed: must be in [1, 2^32 - 1], got 4294967296"),
    (lambda: LFSR(1 << 16, width=16, taps=TAPS16), "seed: must be in [1, 2^16 - 1], got 65536"),
    (lambda: LFSRSampler(0), "seed: must be nonzero (the all-zero state never leaves zero)"),
    (lambda: LFSR(1).next_bits(65), "n: number of bits must be an integer in [0, 64], got 65"),
    (lambda: LFSR(1).next_bits(-1), "n: number of bits must be an integer in [0, 64], got -1"),
    (lambda: LFSR(1).next_bits(True), "n: number of bits must be an integer in [0, 64], got True"),
    (lambda: LFSR(1).next_bits(8.0), "n: number of bits must be an integer in [0, 64], got 8.0"),
    (lambda: LFSRBank([[1, 2]]), "states: expected a 1-D array of register states, got shape (1, 2)"),
    (lambda: LFSRBank(5), "states: expected a 1-D array of register states, got shape ()"),
    (lambda: LFSRBank([1.0, 2.0]), "states: expected integers, got dtype float64"),
    (lambda: LFSRBank([1, 0]), "states: every register state must be nonzero"),
    (lambda: LFSRBank([3, 1 << 16], width=16, taps=TAPS16), "states: every register state must be < 2^16"),
    (lambda: query_seeds(1, [[0, 1]]), "query_ids: expected a 1-D integer array, got shape (1, 2) dtype int64"),
    (lambda: query_seeds(1, [0.5]), "query_ids: expected a 1-D integer array, got shape (1,) dtype float64"),
    (lambda: query_seeds(1, [3, -1]), "query_ids: every id must be in [0, 2^32 - 2]"),
    (lambda: query_seeds(1, [_MAX_ID + 1, 3]), "query_ids: every id must be in [0, 2^32 - 2]"),
    (lambda: query_seeds(0, [1]), "seed: must be nonzero (the all-zero state never leaves zero)"),
    (lambda: draw_distinct(LFSR(1), 0, 0), "M: number of candidates must be an integer >= 1, got 0"),
    (lambda: draw_distinct(LFSR(1), True, 0), "M: number of candidates must be an integer >= 1, got True"),
    (lambda: draw_distinct(LFSR(1), 5.0, 1), "M: number of candidates must be an integer >= 1, got 5.0"),
    (lambda: draw_distinct(LFSR(1), 5, -1), "A: number of draws must be an integer >= 0, got -1"),
    (lambda: draw_distinct(LFSR(1), 5, True), "A: number of draws must be an integer >= 0, got True"),
    (lambda: draw_distinct(LFSR(1), 5, 1.0), "A: number of draws must be an integer >= 0, got 1.0"),
    (lambda: draw_distinct(LFSR(1), 5, 6), "A: cannot draw 6 distinct indices from M=5"),
    (lambda: draw_distinct_batch(LFSRBank([1]), 5, 6), "A: cannot draw 6 distinct indices from M=5"),
    (lambda: _expected_words((1 << 32) + 1, 1), "M: at most 2^32 candidates, got 4294967297"),
    (lambda: LFSRSampler(1)(np.arange(2), 0, 5, 2), "query_ids: expected a 1-D integer tensor"),
    (lambda: LFSRSampler(1)(torch.zeros(1, 2, dtype=torch.int64), 0, 5, 2), "query_ids: expected a 1-D integer tensor"),
    (lambda: LFSRSampler(1)(torch.tensor([0.0, 1.0]), 0, 5, 2), "query_ids: expected a 1-D integer tensor"),
    (lambda: LFSRSampler(1)(torch.tensor([True, False]), 0, 5, 2), "query_ids: expected a 1-D integer tensor"),
    (lambda: _sampler_draw(np.zeros((1, 2), dtype=np.int64)), "query_ids: expected a 1-D integer array"),
    (lambda: _sampler_draw(np.array([0.0, 1.0])), "query_ids: expected a 1-D integer array"),
    (lambda: _sampler_draw(np.array([1, 1])), "query_ids: must be distinct (one register per query)"),
    (lambda: _sampler_draw(np.array([2, -1])), "query_ids: every id must be in [0, 2^32 - 2]"),
    (lambda: _sampler_draw(np.array([_MAX_ID + 1, 2])), "query_ids: every id must be in [0, 2^32 - 2]"),
    (lambda: _sampler_draw(np.array([0]), 5, 6), "A: cannot draw 6 distinct indices from M=5"),
])
def test_argument_checks_exact_messages(call, message):
    """Every check fires on its own bad value (bounds, bools, floats) with a message that names the
    argument, matched in full: a check that fires late, or for another reason, reads differently."""
    with pytest.raises(HdsimError) as err:
        call()
    assert str(err.value) == message


def test_register_bounds_accepted():
    """The extreme widths, seeds and word sizes the checks admit, against hand-stepped registers."""
    # width 2, x^2 + x + 1 (mask 0b11): 1 -> 3 -> 2 -> 1 (out 1, 1, 0), period 3 = 2^2 - 1
    r = LFSR(1, width=2, taps=0b11)
    assert [(r.step(), r.state) for _ in range(3)] == [(1, 3), (1, 2), (0, 1)]
    # width 64 (x^64 + x^4 + x^3 + x + 1): seed 1 shifts out 1 and takes the mask; 2^64 - 1 is a seed
    t64 = taps_from_exponents([64, 4, 3, 1])
    r = LFSR(1, width=64, taps=t64)
    assert r.step() == 1 and r.state == t64
    top = LFSR((1 << 64) - 1, width=64, taps=t64)
    assert top.step() == 1 and top.state == ((1 << 63) - 1) ^ t64
    bank = LFSRBank(np.array([1, (1 << 64) - 1, 1 << 63], dtype=np.uint64), width=64, taps=t64)
    regs = [LFSR(s, 64, t64) for s in (1, (1 << 64) - 1, 1 << 63)]
    assert bank.next_bits(64).tolist() == [x.next_bits(64) for x in regs]
    assert bank.states.tolist() == [x.state for x in regs]
    # the largest 32-bit seed; numpy integers as seeds and bit counts
    assert LFSR((1 << 32) - 1).state == (1 << 32) - 1
    r = LFSR(np.uint32(5))
    assert r.state == 5 and type(r.state) is int
    assert LFSR(77).next_bits(np.int64(8)) == LFSR(77).next_bits(8)
    # next_bits(64) and next_bits(1): the bits of single steps, first bit most significant
    a, b = LFSR(12345), LFSR(12345)
    assert a.next_bits(64) == int("".join(str(b.step()) for _ in range(64)), 2)
    assert LFSR(1).next_bits(1) == 1 and LFSR(2).next_bits(1) == 0


def test_bank_dtypes_empty_bank_and_single_bits():
    """Words are uint64 whatever the path (n = 0, all registers, an active subset), step bits uint8;
    an empty bank is a valid bank; one-bit words equal single steps."""
    bank = LFSRBank([5, 9, 12])
    assert bank.states.dtype == np.uint64 and len(bank) == 3
    zero = bank.next_bits(0)
    assert zero.dtype == np.uint64 and zero.tolist() == [0, 0, 0] and bank.states.tolist() == [5, 9, 12]
    part = bank.next_bits(40, np.array([False, True, True]))
    assert part.dtype == np.uint64 and part.tolist() == [0, LFSR(9).next_bits(40), LFSR(12).next_bits(40)]
    regs = [LFSR(5), LFSR(9), LFSR(12)]
    regs[1].next_bits(40), regs[2].next_bits(40)
    one = bank.next_bits(1)
    assert one.dtype == np.uint64 and one.tolist() == [r.step() for r in regs]
    bits = bank.step()
    assert bits.dtype == np.uint8 and bits.tolist() == [r.step() for r in regs]
    assert bank.states.tolist() == [r.state for r in regs]
    empty = LFSRBank([])
    assert len(empty) == 0 and empty.states.dtype == np.uint64 and empty.states.shape == (0,)
    assert empty.next_bits(7).shape == (0,)
    assert draw_distinct_batch(empty, 10, 3).shape == (0, 3)
    assert tie_break_batch(empty, np.zeros((0, 4), dtype=bool)).shape == (0,)
    assert query_seeds(1, []).shape == (0,)


def test_query_seeds_bounds_and_zero_fallback():
    # the largest id: (2^32 - 1) * MIX mod 2^32 = 2^32 - MIX, then the xorshift
    assert _mix(_MAX_ID) == (((1 << 32) - 0x9E3779B9) ^ (((1 << 32) - 0x9E3779B9) >> 16))
    assert query_seeds(7, [_MAX_ID, 0]).tolist() == [7 ^ _mix(_MAX_ID), 7 ^ _mix(0)] == \
        [query_seed(7, _MAX_ID), query_seed(7, 0)]
    # the seed equal to query 0's mix (0x9E37E78E, hand-computed above) would give state 0: the seed instead
    seed = 0x9E37E78E
    assert query_seeds(seed, [0, 1, 2]).tolist() == [seed, seed ^ _mix(1), seed ^ _mix(2)]
    assert query_seeds(seed, np.array([2, 0], dtype=np.int32)).tolist() == [seed ^ _mix(2), seed]


def test_draw_distinct_bounds_by_hand():
    """A = 0, A = M, M = 1 and a power-of-two M, replayed by hand with k written out."""
    r = LFSR(3)
    assert draw_distinct(r, 5, 0) == [] and r.state == 3  # nothing drawn, no step
    r = LFSR(3)
    assert draw_distinct(r, 1, 1) == [0] and r.state == 3  # k = 0: no step
    assert sorted(draw_distinct(LFSR(3), 7, 7)) == list(range(7))
    for M, k in ((8, 3), (16, 4), (17, 5), (2, 1)):
        got, r = draw_distinct(LFSR(99), M, 5 if M > 2 else 2), LFSR(99)
        want: list[int] = []
        while len(want) < min(5, M):
            w = r.next_bits(k)
            if w < M and w not in want:
                want.append(w)
        assert got == want, M
    assert draw_distinct(LFSR(5), np.int64(10), np.int32(3)) == draw_distinct(LFSR(5), 10, 3)


def test_expected_words_small_cases_by_hand():
    # one draw takes 2^k / M words: k = bit_length(M - 1)
    assert _expected_words(1, 1) == 1.0  # k = 0
    assert _expected_words(16, 1) == 1.0  # k = 4
    assert _expected_words(17, 1) == 32 / 17  # k = 5
    assert _expected_words(1 << 32, 1) == 1.0  # the largest M: k = 32
    assert _expected_words(2, 2) == 2 / 2 + 2 / 1
    assert _expected_words(5, 0) == 0.0


@pytest.mark.parametrize("seeds, M, A", [
    ([5, 6, 7], 2, 1), ([5, 6, 7], 2, 2), ([11, 12], 7, 7), ([11, 12], 131_000, 2000), ([21, 22], 10, 1)])
def test_draw_distinct_batch_edge_sizes_equal_scalar(seeds, M, A):
    """k = 1, A = M, A = 1, and M above 2^16 with enough draws that valid words collide modulo 2^16
    (sort keys must not be cut to 16 bits there): the scalar reference's picks and end states."""
    bank = LFSRBank(seeds)
    got = draw_distinct_batch(bank, M, A)
    regs = [LFSR(s) for s in seeds]
    assert got.dtype == np.int64 and got.tolist() == [draw_distinct(r, M, A) for r in regs]
    assert bank.states.tolist() == [r.state for r in regs]
    zero = LFSRBank(seeds)
    assert draw_distinct_batch(zero, M, 0).shape == (len(seeds), 0) and zero.states.tolist() == seeds


def test_advance_from_chunk_states_equals_stepping():
    """_advance(states, ..., chunk states every 64 steps, steps) against single steps, for step
    counts 0, 1, 63, 64, 65 and 133 (no chunk, part of one, whole chunks and a remainder)."""
    from hdsim.lfsr import _advance

    seeds = [3, 77, 1000, 65537, 0xFFFFFFFF, 12345]
    steps = np.array([0, 1, 63, 64, 65, 133])
    chunk_states = np.zeros((len(seeds), 3), dtype=np.uint64)
    want = []
    for i, (s, n) in enumerate(zip(seeds, steps)):
        r = LFSR(s)
        for t in range(1, 3 * 64 + 1):
            r.step()
            if t % 64 == 0:
                chunk_states[i, t // 64 - 1] = r.state
        r = LFSR(s)
        for _ in range(int(n)):
            r.step()
        want.append(r.state)
    got = _advance(np.array(seeds, dtype=np.uint64), LFSR_WIDTH, LFSR_TAPS, chunk_states, steps)
    assert got.tolist() == want


def test_sampler_draw_edges():
    """Empty batches (integer or float ids), the largest id, int32 ids, and the tie-break batch dtype."""
    s = LFSRSampler(9)
    for empty in (np.array([], dtype=np.int64), np.array([])):
        out = s.draw(empty, 10, 3)
        assert out.shape == (0, 3) and out.dtype == np.int64
    assert s(torch.tensor([], dtype=torch.int64), 0, 10, 3).shape == (0, 3)
    got = LFSRSampler(9).draw(np.array([_MAX_ID, 4]), 10, 3)
    assert got.tolist() == [draw_distinct(LFSR(query_seed(9, _MAX_ID)), 10, 3),
                            draw_distinct(LFSR(query_seed(9, 4)), 10, 3)]
    a = LFSRSampler(9)(torch.tensor([3, 1], dtype=torch.int32), 0, 50, 4)
    b = LFSRSampler(9)(torch.tensor([3, 1]), 0, 50, 4)
    assert a.dtype == torch.int64 and torch.equal(a, b)
    mask = np.array([[False, True, True], [True, False, False]])
    picks = tie_break_batch(LFSRBank([3, 4]), mask)
    assert picks.dtype == np.int64
    assert picks.tolist() == [tie_break(LFSR(3), [1, 2]), 0]


def test_draw_distinct_batch_on_another_polynomial():
    """The batch draw keeps the bank's own width and taps (a 16-bit register of TAPS16), with the
    expected-size block and with one-word blocks (every redo and the 64-step chunk advance)."""
    seeds = [1, 0xACE1, 0xFFFF, 12345]
    for first_block in (None, 1):
        bank = LFSRBank(seeds, width=16, taps=TAPS16)
        got = draw_distinct_batch(bank, 40, 6, _first_block=first_block)
        regs = [LFSR(s, 16, TAPS16) for s in seeds]
        assert got.tolist() == [draw_distinct(r, 40, 6) for r in regs]
        assert bank.states.tolist() == [r.state for r in regs]


def test_tie_break_batch_takes_nonzero_counts_as_candidates():
    """A count mask: every non-zero entry is one candidate (not ``count`` of them), for 20 registers
    against the scalar tie-break among the non-zero columns."""
    counts = np.random.default_rng(1).integers(0, 6, size=(20, 7))
    counts[:, 3] = 4  # at least one candidate per row
    seeds = list(range(3, 23))
    got = tie_break_batch(LFSRBank(seeds), counts)
    assert got.tolist() == [tie_break(LFSR(s), np.flatnonzero(row).tolist()) for s, row in zip(seeds, counts)]


def test_sampler_calls_continue_each_querys_register():
    """A query's second draw continues its own register where its first draw left it, whichever
    other queries share the calls: scalar registers started at query_seed are the oracle."""
    seed = 31
    r2, r7 = LFSR(query_seed(seed, 2)), LFSR(query_seed(seed, 7))
    sampler = LFSRSampler(seed)
    first = sampler.draw(np.array([2, 7]), 50, 4)
    assert first.tolist() == [draw_distinct(r2, 50, 4), draw_distinct(r7, 50, 4)]
    assert sampler.draw(np.array([7]), 9, 3).tolist() == [draw_distinct(r7, 9, 3)]
    assert sampler(torch.tensor([2]), 1, 50, 4).tolist() == [draw_distinct(r2, 50, 4)]
    assert sampler.state(2) == r2.state and sampler.state(7) == r7.state
