"""Sparse resonator network on maximally sparse segment codes (hdsim.factorizers.sparse_resonator)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from hdsim.codes import BlockCodebooks, random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers.bruteforce import bruteforce_decode
from hdsim.factorizers.sparse_resonator import (
    SparseResonatorConfig,
    SparseResonatorNetwork,
    check_sbc_queries,
    default_sparse_max_iter,
    make_problem,
)
from hdsim.functional import sbc_to_dense
from hdsim.hashing import counter_bits, mix32, seed_key
from hdsim.queries import QueryNoise, make_queries
from hdsim.sparse_resonator_numpy import content_ids, sparse_resonator_decode, thin_queries


def fmix32(h: int) -> int:
    """MurmurHash3's fmix32 on unbounded Python ints, masked by hand: the oracle of hdsim.hashing."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def numpy_decode(cb: BlockCodebooks, q: torch.Tensor, cfg: SparseResonatorConfig, seed: int, first_id: int = 0,
                 ids=None):
    """The NumPy twin on a torch problem (the config's Tc and restarts passed on)."""
    return sparse_resonator_decode(q.numpy(), [X.numpy() for X in cb.indices], cb.L, a=cfg.a,
                                   max_iter=cfg.resolved_max_iter(cb.sizes), seed=seed, first_id=first_id, ids=ids,
                                   Tc=cfg.Tc, restarts=cfg.restarts)


def result_arrays(res) -> tuple[np.ndarray, ...]:
    return tuple(t.numpy() for t in (res.indices, res.iterations, res.converged, res.max_similarity))


def assert_same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    for name, x, y in zip(("indices", "iterations", "converged", "max_similarity"), a, b):
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert np.array_equal(x, y), name


def brute_force(cb: BlockCodebooks, q: torch.Tensor) -> torch.Tensor:
    """argmax over all products of the overlap (agreeing blocks) with the query SBC."""
    combos = torch.tensor(list(itertools.product(*(range(m) for m in cb.sizes))))
    products = cb.product(combos)  # (P, B) offsets
    overlap = (q.unsqueeze(1) == products.unsqueeze(0)).sum(dim=2)  # (N, P)
    return combos[overlap.argmax(dim=1)]


@pytest.mark.parametrize("F,M,D,B", [(2, 10, 256, 16), (3, 8, 512, 64), (3, 10, 1024, 64), (3, (5, 9, 7), 512, 64)])
def test_exact_queries_match_brute_force(F, M, D, B):
    cb, q, truth = make_problem(F, M, D, n=30, seed=4, B=B)
    res = SparseResonatorNetwork(cb, seed=1).factorize(q)
    assert torch.equal(res.indices, brute_force(cb, q))
    assert res.accuracy(truth) == 1.0
    assert res.converged.all()
    # converged on the exact product: every block agrees
    assert torch.allclose(res.max_similarity, torch.ones_like(res.max_similarity))
    idx, _, conv, _ = numpy_decode(cb, q, SparseResonatorConfig(), seed=1)
    assert np.array_equal(idx, brute_force(cb, q).numpy()) and conv.all()


def test_cnn_head_shape_recovers_only_what_its_fixed_points_allow():
    # F=2, M=10, D=128, B=4 (L=32): the oracle (library brute force, 'dot' = agreeing blocks) finds
    # every exact product, but with 4 blocks the "no estimate changes" stop often lands on a wrong
    # fixed point (the earlier torch-generator draws did the same: 80 / 52 / 75% right on these seeds).
    # What must hold: a decode is right exactly when all B blocks agree, and most are.
    for seed in range(3):
        cb, q, truth = make_problem(2, 10, 128, n=40, seed=seed, B=4)
        oracle, best = bruteforce_decode(sbc_to_dense(q, cb.L), cb, "dot")
        assert torch.equal(oracle, truth) and (best == cb.B).all()
        res = SparseResonatorNetwork(cb, seed=1).factorize(q)
        assert res.converged.all()
        right = (res.indices == oracle).all(dim=1)
        assert torch.equal(right, (res.max_similarity == 1).all(dim=1))
        assert float(right.float().mean()) >= 0.6
        idx, _, _, sim = numpy_decode(cb, q, SparseResonatorConfig(), seed=1)
        assert np.array_equal((idx == oracle.numpy()).all(axis=1), (sim == 1).all(axis=1))


def test_noisy_queries_match_brute_force():
    cb, q, truth = make_problem(2, 10, 1024, n=30, seed=2, noise=0.1, B=64)
    assert not torch.equal(q, cb.product(truth))  # some blocks did move
    res = SparseResonatorNetwork(cb, seed=0).factorize(q)
    assert torch.equal(res.indices, brute_force(cb, q))
    assert res.accuracy(truth) == 1.0


def test_dense_queries_give_same_result_as_offsets():
    cb = random_codebooks(3, 10, 512, 64, seed=0)
    qs = make_queries(cb, 12, seed=1)
    offsets = cb.product(qs.factors)
    net = SparseResonatorNetwork(cb, seed=3)
    a = net.factorize(offsets)
    b = net.factorize(qs.queries)  # dense (N, B, L)
    c = net.factorize(qs.queries.reshape(12, -1))  # dense (N, D)
    for r in (b, c):
        assert torch.equal(a.indices, r.indices) and torch.equal(a.iterations, r.iterations)
    assert a.accuracy(qs.factors) == 1.0


def test_gaussian_noise_problem_is_thinned_to_offsets():
    cb, q, truth = make_problem(2, 8, 512, n=10, seed=0, noise=QueryNoise("gaussian", 0.05), B=32)
    assert q.dtype == torch.int64 and q.shape == (10, 32)
    assert SparseResonatorNetwork(cb).factorize(q).accuracy(truth) == 1.0


def test_make_problem_defaults_and_seeding():
    cb, q, truth = make_problem(3, 6, 1024, n=5, seed=9)
    assert (cb.B, cb.L) == (64, 16)
    assert q.shape == (5, 64) and truth.shape == (5, 3)
    assert torch.equal(q, cb.product(truth))
    again = make_problem(3, 6, 1024, n=5, seed=9)
    other = make_problem(3, 6, 1024, n=5, seed=10)
    assert all(torch.equal(x, y) for x, y in zip(cb.indices, again[0].indices))
    assert torch.equal(q, again[1])
    assert not torch.equal(cb.indices[0], other[0].indices[0])


def test_same_seed_identical_different_seed_differs():
    cb, q, _ = make_problem(3, 30, 1024, n=16, seed=0, B=64)
    a = SparseResonatorNetwork(cb, seed=5).factorize(q)
    b = SparseResonatorNetwork(cb, seed=5).factorize(q)
    c = SparseResonatorNetwork(cb, seed=6).factorize(q)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.iterations, b.iterations)
    assert torch.equal(a.max_similarity, b.max_similarity)
    assert not torch.equal(a.iterations, c.iterations)
    net = SparseResonatorNetwork(cb, seed=5)  # each call re-seeds
    assert torch.equal(net.factorize(q).iterations, net.factorize(q).iterations)


def test_thinning_breaks_ties_by_the_largest_key_among_maxima():
    cb, _, _ = make_problem(1, 4, 16, n=1, seed=0, B=1)
    net = SparseResonatorNetwork(cb)
    bundled = torch.tensor([[0.3, 0.0, 0.3, 0.1] * 4]).reshape(1, 1, 16).expand(400, -1, -1).clone()
    bundled[:, 0, 5] = 0.3
    tied = [0, 2, 4, 5, 6, 8, 10, 12, 14]  # every position holding the maximum 0.3
    keys = counter_bits(seed_key(0), torch.arange(400), 0, 16).view(400, 1, 16)
    picks = net.thin(bundled, keys).flatten()
    assert set(picks.tolist()) == set(tied)  # only maxima, and each of them gets picked
    # the winner is the tied position with the largest key, checked one query at a time
    expected = [max(tied, key=lambda l: (int(keys[i, 0, l]), -l)) for i in range(400)]
    assert picks.tolist() == expected
    # a unique maximum wins whatever its key; equal keys go to the lowest position
    unique = torch.tensor([[[0.1, 0.7, 0.2]]])
    assert int(net.thin(unique, torch.tensor([[[9, 0, 9]]]))) == 1
    flat = torch.tensor([[[0.5, 0.0, 0.5, 0.5]]])
    assert int(net.thin(flat, torch.tensor([[[4, 9, 7, 7]]]))) == 2
    assert int(net.thin(flat, torch.tensor([[[2**32 - 1, 0, 2**32 - 1, 5]]]))) == 0


def test_initial_estimates_are_thinned_bundles():
    cb = BlockCodebooks((torch.tensor([[0, 1], [0, 2], [3, 2]]), torch.tensor([[1, 1]])), L=4)
    net = SparseResonatorNetwork(cb)
    init = net.initial_estimates(torch.arange(50))
    assert init.shape == (50, 2, 2)
    assert (init[:, 0, 0] == 0).all()  # block 0: position 0 has 2 of 3 votes
    assert (init[:, 0, 1] == 2).all()  # block 1: position 2 has 2 of 3 votes
    assert (init[:, 1] == 1).all()


def test_initial_ties_use_each_factors_init_event():
    # Every position of every block ties (each offset appears once per block), so the init picks,
    # per block, the position with the largest word of the documented stream: event f for factor f.
    L, B = 4, 2
    X = torch.tensor([[0, 3], [1, 2], [2, 1], [3, 0]])
    net = SparseResonatorNetwork(BlockCodebooks((X, X.flip(0)), L=L), seed=12)
    ids = [0, 7, 2**32 + 3]  # ids are taken mod 2^32
    init = net.initial_estimates(torch.tensor(ids))
    key = fmix32(fmix32((12 ^ 0x9E3779B9)) ^ 0)  # seed_key by hand (seed < 2^32)
    for i, qid in enumerate(ids):
        for f in range(2):
            h = fmix32(fmix32(key ^ (qid & 0xFFFFFFFF)) ^ f)
            words = [fmix32(h ^ j) for j in range(B * L)]
            for b in range(B):
                block = words[b * L:(b + 1) * L]
                assert int(init[i, f, b]) == block.index(max(block))


def test_hashing_matches_murmur3_by_hand():
    # fmix32(1) step by step, each intermediate written out: h ^= h >> 16 leaves 1; times
    # 0x85ebca6b; ^= >> 13; times 0xc2b2ae35 mod 2^32; ^= >> 16
    assert 0x85EBCA6B >> 13 == 0x42F5E and 0x85EBCA6B ^ 0x42F5E == 0x85EFE535
    assert 0x85EFE535 * 0xC2B2AE35 % 2**32 == 0x514E79F9
    assert 0x514E79F9 ^ (0x514E79F9 >> 16) == 0x514E28B7
    assert fmix32(1) == 0x514E28B7
    # 0xdeadbeef: 0xdead6042 -> 0x87014f96 -> 0x8705779c -> 0x0de5cb4c -> 0x0de5c6a9
    assert 0xDEADBEEF ^ 0xDEAD == 0xDEAD6042 and 0xDEAD6042 * 0x85EBCA6B % 2**32 == 0x87014F96
    assert 0x87014F96 ^ (0x87014F96 >> 13) == 0x8705779C and 0x8705779C * 0xC2B2AE35 % 2**32 == 0x0DE5CB4C
    assert fmix32(0xDEADBEEF) == 0x0DE5CB4C ^ 0x0DE5 == 0x0DE5C6A9
    assert mix32(1) == 1364076727 and mix32(0) == 0
    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF, 123456789]
    want = [fmix32(x) for x in xs]
    assert [mix32(x) for x in xs] == want
    assert mix32(np.array(xs, dtype=np.int64)).tolist() == want  # int64 arrays: no overflow
    assert mix32(torch.tensor(xs)).tolist() == want
    from hdsim.factorizers.base import mix32 as re_exported
    assert re_exported is mix32
    # seed_key and counter_bits follow their documented chains
    s = 0x1_2345_6789_ABCD
    assert seed_key(s) == fmix32(fmix32((s & 0xFFFFFFFF) ^ 0x9E3779B9) ^ (s >> 32))
    ids, event, key = [0, 3, 2**31 + 5], 41, seed_key(9)
    want = [[fmix32(fmix32(fmix32(key ^ i) ^ event) ^ j) for j in range(6)] for i in ids]
    assert counter_bits(key, np.array(ids, dtype=np.int64), event, 6).tolist() == want
    assert counter_bits(key, torch.tensor(ids), event, 6).tolist() == want
    per_query = counter_bits(key, torch.tensor(ids), torch.tensor([event, 1, 2]), 6)  # per-query events
    assert per_query[0].tolist() == want[0] and per_query[1].tolist() != want[1]


def test_draws_are_uniform_and_streams_distinct():
    key = seed_key(0)
    words = counter_bits(key, np.arange(2000, dtype=np.int64), 5, 10).ravel()  # 20,000 words
    assert words.min() >= 0 and words.max() < 2**32
    # 16 bins of the top 4 bits, of the 16 noise bits' low 4 bits (r's finest), and of the lowest 4
    # bits: chi-square with 15 degrees of freedom; P(chi2 > 44.3) = 1e-4 for uniform words.
    for bins in (words >> 28, (words >> 16) & 15, words & 15):
        counts = np.bincount(bins, minlength=16)
        chi2 = float(((counts - 1250.0) ** 2 / 1250.0).sum())
        assert chi2 < 44.3, chi2
    r = (words >> 16) / 2**16
    assert 0 <= r.min() and r.max() < 1 and abs(r.mean() - 0.5) < 0.01
    # distinct seeds, ids and events each give a different stream (no shared words)
    ref = counter_bits(key, np.array([7], dtype=np.int64), 3, 1000)[0]
    others = [counter_bits(seed_key(1), np.array([7], dtype=np.int64), 3, 1000)[0],
              counter_bits(seed_key(2**32), np.array([7], dtype=np.int64), 3, 1000)[0],
              counter_bits(key, np.array([8], dtype=np.int64), 3, 1000)[0],
              counter_bits(key, np.array([7], dtype=np.int64), 4, 1000)[0]]
    assert len(set(ref.tolist())) == 1000
    for o in others:
        assert len(set(ref.tolist()) & set(o.tolist())) <= 1
    # swapping id and event does not reproduce a stream
    assert not np.array_equal(counter_bits(key, np.array([3], dtype=np.int64), 7, 50),
                              counter_bits(key, np.array([7], dtype=np.int64), 3, 50))


def test_convergence_flags_and_iteration_cap():
    cb, q, _ = make_problem(3, 10, 512, n=10, seed=1, B=64)
    capped = SparseResonatorNetwork(cb, SparseResonatorConfig(max_iter=1)).factorize(q)
    assert not capped.converged.any()  # the first iteration always moves off the init
    assert (capped.iterations == 1).all()
    full = SparseResonatorNetwork(cb).factorize(q)
    assert full.converged.all()
    assert (full.iterations >= 2).all() and (full.iterations < 2000).all()


def test_hard_problem_reports_unconverged():
    cb, q, _ = make_problem(3, 40, 256, n=10, seed=0, B=16)  # far beyond capacity
    res = SparseResonatorNetwork(cb, SparseResonatorConfig(max_iter=20)).factorize(q)
    assert not res.converged.all()
    assert (res.iterations[~res.converged] == 20).all()


def test_attention_sparsity_matters():
    # a = 1 freezes the state at the first triple of codevectors; the default explores.
    cb, q, truth = make_problem(3, 30, 1024, n=20, seed=0, B=64)
    frozen = SparseResonatorNetwork(cb, SparseResonatorConfig(a=1), seed=1).factorize(q)
    default = SparseResonatorNetwork(cb, seed=1).factorize(q)
    assert frozen.accuracy(truth) < 0.5
    assert default.accuracy(truth) == 1.0


def test_default_max_iter():
    assert default_sparse_max_iter((10, 10)) == 2000
    assert default_sparse_max_iter((200, 200, 200)) == 8000
    cb, _, _ = make_problem(2, 5, 64, n=1, seed=0, B=4)
    assert SparseResonatorNetwork(cb).max_iter == 2000
    assert SparseResonatorConfig(max_iter=7).as_dict(cb.sizes)["max_iter"] == 7


def test_float64_and_batches():
    cb, q, truth = make_problem(2, 8, 512, n=9, seed=0, B=64)
    res = SparseResonatorNetwork(cb, dtype=torch.float64).factorize(q, batch_size=4)
    assert res.max_similarity.dtype == torch.float64
    assert res.indices.shape == (9, 2) and res.iterations.shape == (9,)
    assert res.accuracy(truth) == 1.0


@pytest.mark.parametrize("cfg,name", [
    (SparseResonatorConfig(a=0), "a"),
    (SparseResonatorConfig(a=2.5), "a"),
    (SparseResonatorConfig(max_iter=0), "max_iter"),
])
def test_bad_config(cfg, name):
    cb, _, _ = make_problem(2, 5, 64, n=1, seed=0, B=4)
    with pytest.raises(HdsimError, match=rf"^{name}:"):
        SparseResonatorNetwork(cb, cfg)


def test_bad_inputs():
    with pytest.raises(HdsimError, match="^M:"):
        make_problem(2, 0, 64, n=2, seed=0, B=4)
    with pytest.raises(HdsimError, match="^D:"):
        make_problem(2, 5, 100, n=2, seed=0, B=16)  # 100 is not a multiple of 16
    with pytest.raises(HdsimError, match="^noise"):
        make_problem(2, 5, 64, n=2, seed=0, noise=-0.1, B=4)
    cb, q, _ = make_problem(2, 5, 64, n=3, seed=0, B=4)
    net = SparseResonatorNetwork(cb)
    with pytest.raises(HdsimError, match=r"^queries:.*\[0, 16\)"):
        net.factorize(q + 16)
    with pytest.raises(HdsimError, match=r"^queries:.*shape"):
        net.factorize(q[:, :3])
    dense = sbc_to_dense(q, 16)
    dense[0, 0, 0] = float("nan")
    with pytest.raises(HdsimError, match="^queries:.*NaN"):
        net.factorize(dense)
    with pytest.raises(HdsimError, match="^queries:.*non-negative"):
        net.factorize(-sbc_to_dense(q, 16))
    with pytest.raises(HdsimError, match=r"^queries:.*shape"):
        net.factorize(torch.zeros(3, 60))
    with pytest.raises(HdsimError, match="^queries:"):
        net.factorize(q.bool())
    with pytest.raises(HdsimError, match="^batch_size:"):
        net.factorize(q, batch_size=0)
    with pytest.raises(HdsimError, match="^dtype:"):
        SparseResonatorNetwork(cb, dtype=torch.float16)
    assert torch.equal(check_sbc_queries(q[0], 4, 16), q[:1])


def test_bad_draw_arguments():
    cb, q, _ = make_problem(2, 5, 64, n=3, seed=0, B=4)
    for seed in (-1, 2**64, 1.5, True):
        with pytest.raises(HdsimError, match="^seed:"):
            SparseResonatorNetwork(cb, seed=seed)
    net = SparseResonatorNetwork(cb)
    for first_id in (-1, 2.0, None):
        with pytest.raises(HdsimError, match="^first_id:"):
            net.factorize(q, first_id=first_id)


# --- the NumPy twin (hdsim.sparse_resonator_numpy) -----------------------------------------------

TWIN_CASES = [  # F, M, D, B, bit-flip noise, a, max_iter
    (2, 10, 1024, 64, 0.0, 6, None),
    (2, 10, 1024, 64, 0.1, 6, None),
    (3, 10, 512, 64, 0.0, 6, None),
    (3, 8, 512, 64, 0.1, 6, None),
    (3, 30, 1024, 64, 0.0, 6, 12),  # many queries still running at the cap: their readout is compared
    (3, 12, 256, 16, 0.1, 1, 30),  # a = 1
    (2, 10, 128, 4, 0.1, 10, 40),  # a = M: keep every weight
    (3, (5, 9, 7), 512, 32, 0.05, 50, 8),  # a > M, unequal sizes, capped
]


@pytest.mark.parametrize("F,M,D,B,noise,a,max_iter", TWIN_CASES)
def test_numpy_twin_equals_torch_float64(F, M, D, B, noise, a, max_iter):
    cb, q, _ = make_problem(F, M, D, n=24, seed=F + B, noise=noise, B=B)
    cfg = SparseResonatorConfig(a=a, max_iter=max_iter)
    ref = SparseResonatorNetwork(cb, cfg, seed=3, dtype=torch.float64).factorize(q)
    twin = numpy_decode(cb, q, cfg, seed=3)
    assert_same(twin, result_arrays(ref))
    if max_iter is not None and max_iter <= 12:
        assert not twin[2].all()  # the capped cases do compare unconverged readouts
    assert twin[2].any()


def test_numpy_twin_equals_torch_float32_where_sums_are_exact():
    # B = 4, a = 6: a (B + 1) 2^16 = 1,966,080 < 2^24, so float32 weights and sums are exact too
    cb, q, _ = make_problem(2, 10, 128, n=40, seed=2, noise=0.1, B=4)
    for cfg in (SparseResonatorConfig(a=6, max_iter=3), SparseResonatorConfig(a=6)):
        ref = SparseResonatorNetwork(cb, cfg, seed=8).factorize(q)
        assert ref.max_similarity.dtype == torch.float32
        twin = numpy_decode(cb, q, cfg, seed=8)
        assert_same(twin[:3], result_arrays(ref)[:3])
        assert np.array_equal(twin[3], ref.max_similarity.double().numpy())  # k / 4: exact in both
    assert not numpy_decode(cb, q, SparseResonatorConfig(a=6, max_iter=3), seed=8)[2].all()


def test_results_do_not_depend_on_batching():
    cb, q, _ = make_problem(3, 16, 512, n=13, seed=5, noise=0.05, B=64)
    cfg = SparseResonatorConfig(max_iter=25)
    net = SparseResonatorNetwork(cb, cfg, seed=2)
    full = result_arrays(net.factorize(q))
    assert not full[2].all() and full[2].any()  # a mix of converged and capped queries
    for bs in (1, 3, 100):
        assert_same(result_arrays(net.factorize(q, batch_size=bs)), full)
    tail = result_arrays(net.factorize(q[5:], first_id=5))
    assert_same(tail, tuple(x[5:] for x in full))
    assert_same(result_arrays(net.factorize(q[5:], batch_size=2, first_id=5)), tail)
    shifted = result_arrays(net.factorize(q[5:]))  # other ids: other draws
    assert not all(np.array_equal(x, y) for x, y in zip(shifted, tail))
    # a query's result does not depend on its neighbours: decode one alone
    assert_same(result_arrays(net.factorize(q[7:8], first_id=7)), tuple(x[7:8] for x in full))
    # the twin: same ids, same draws (against float64: at B = 64, a = 6 float32 sums may round)
    full64 = result_arrays(SparseResonatorNetwork(cb, cfg, seed=2, dtype=torch.float64).factorize(q, batch_size=4))
    assert_same(numpy_decode(cb, q[5:], cfg, seed=2, first_id=5), tuple(x[5:] for x in full64))


def test_factorizer_bench_batch_changes_timing_not_results():
    from hdsim.bench.factorizer import FactorizerBenchConfig, run_factorizer_bench

    runs = [run_factorizer_bench(FactorizerBenchConfig(method="sparse-resonator", D=512, F=3, M=12, queries=24,
                                                       batch=b, max_iter=15, seed=3, dtype="float64"))
            for b in (5, 24)]
    keys = ("accuracy", "factor_accuracy", "mean_iterations", "p95_iterations", "converged")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]
    assert 0 < runs[0]["converged"] < 1  # both converged and capped queries were compared


def test_numpy_module_does_not_import_torch():
    code = "import sys, hdsim.sparse_resonator_numpy, hdsim.hashing, hdsim.errors; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_thin_queries():
    x = np.array([[0.1, 0.7, 0.2, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.3],
                  [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 2.0, -1.0, 5.0, 5.0, 0.0]])
    out = thin_queries(x, B=3)
    assert out.dtype == np.int64
    assert out.tolist() == [[1, 0, 3], [0, 2, 1]]  # ties (all-zero block, two 5.0) to the lowest index
    cb, q, _ = make_problem(2, 8, 256, n=6, seed=1, B=16)
    dense = sbc_to_dense(q, cb.L, torch.float64).reshape(6, -1).numpy() * 0.9 + 0.01
    assert np.array_equal(thin_queries(dense, 16), q.numpy())


@pytest.mark.parametrize("x,B,match", [
    (np.zeros(8), 2, r"^queries: expected dense queries of shape \(N, D\)"),
    (np.zeros((2, 2, 4)), 2, r"^queries: expected dense queries of shape \(N, D\)"),
    (np.zeros((2, 9)), 2, "^queries: dimension 9 is not a multiple"),
    (np.zeros((0, 8)), 2, "^queries: expected at least 1 query, got 0$"),
    (np.array([[0.0, np.nan, 0.0, 1.0]]), 2, "^queries: NaN or inf"),
    (np.array([[0.0, np.inf, 0.0, 1.0]]), 2, "^queries: NaN or inf"),
    (np.zeros((2, 8), dtype=np.int64), 2, "^queries: expected a float array"),
    (np.zeros((2, 8)), 0, "^B:"),
])
def test_thin_queries_refuses(x, B, match):
    with pytest.raises(HdsimError, match=match) as err:
        thin_queries(x, B)
    assert "\n" not in str(err.value)


def test_thin_queries_names_its_input():
    with pytest.raises(HdsimError, match="^features: NaN"):
        thin_queries(np.full((1, 4), np.nan), 2, name="features")


def test_numpy_decode_refuses_bad_input():
    cb, q, _ = make_problem(2, 5, 64, n=3, seed=0, B=4)
    cbs, qn = [X.numpy() for X in cb.indices], q.numpy()

    def decode(queries=qn, codebooks=cbs, L=16, **kw):
        args = dict(a=2, max_iter=5, seed=0) | kw
        return sparse_resonator_decode(queries, codebooks, L, **args)

    bad = [
        (dict(queries=qn + 16), r"^queries: offsets must be in \[0, 16\)"),
        (dict(queries=qn - 17), r"^queries: offsets must be in \[0, 16\)"),
        (dict(queries=qn[:, :3]), r"^queries: expected integer offsets of shape \(N, 4\)"),
        (dict(queries=qn[0]), r"^queries: expected integer offsets of shape \(N, 4\)"),
        (dict(queries=qn[:0]), "^queries: expected at least 1 query, got 0$"),
        (dict(queries=qn.astype(np.float64)), "^queries: expected integer offsets"),
        (dict(queries=qn.astype(bool)), "^queries: expected integer offsets"),
        (dict(codebooks=[]), "^codebooks:"),
        (dict(codebooks=cbs[0]), "^codebooks:"),
        (dict(codebooks=[cbs[0], cbs[1] + 16]), r"^codebooks\[1\]: offsets must be in \[0, 16\)"),
        (dict(codebooks=[cbs[0], cbs[1][:, :2]]), r"^codebooks\[1\]: has 2 blocks"),
        (dict(codebooks=[cbs[0].astype(float), cbs[1]]), r"^codebooks\[0\]: expected integer"),
        (dict(codebooks=[cbs[0][:0], cbs[1]]), r"^codebooks\[0\]: expected offsets of shape"),
        (dict(L=0), "^L:"),
        (dict(a=0), "^a:"),
        (dict(a=2.5), "^a:"),
        (dict(max_iter=0), "^max_iter:"),
        (dict(seed=-1), "^seed:"),
        (dict(seed=2**64), "^seed:"),
        (dict(first_id=-1), "^first_id:"),
    ]
    for kw, match in bad:
        with pytest.raises(HdsimError, match=match) as err:
            decode(**kw)
        assert "\n" not in str(err.value), kw
    idx, its, conv, sim = decode(queries=qn.astype(np.int16), codebooks=[X.astype(np.int32) for X in cbs])
    assert idx.dtype == np.int64 and its.dtype == np.int64 and conv.dtype == bool and sim.dtype == np.float64
    assert idx.shape == (3, 2) and its.shape == (3,) and sim.shape == (3, 2)


@pytest.mark.cuda  # skipped without a CUDA device (conftest.py)
def test_cuda_matches_cpu():
    cb, q, _ = make_problem(3, 30, 1024, n=16, seed=0, B=64)
    cpu = SparseResonatorNetwork(cb, seed=5).factorize(q)
    gpu = SparseResonatorNetwork(cb, seed=5, device="cuda").factorize(q)
    assert torch.equal(cpu.indices, gpu.indices)
    assert torch.equal(cpu.iterations, gpu.iterations)
    # float64: every sum exact, so the device (a matrix product there) changes nothing at all
    cfg = SparseResonatorConfig(max_iter=40)
    cpu = SparseResonatorNetwork(cb, cfg, seed=5, dtype=torch.float64).factorize(q)
    gpu = SparseResonatorNetwork(cb, cfg, seed=5, device="cuda", dtype=torch.float64).factorize(q, batch_size=5)
    assert_same(result_arrays(gpu), result_arrays(cpu))
    assert_same(numpy_decode(cb, q, cfg, seed=5), result_arrays(gpu))
    # threshold, restarts (their bundles are dense matrix products on CUDA) and content ids
    cb, q, _ = make_problem(2, 10, 128, n=40, seed=0, B=4, noise=0.1)
    cfg = SparseResonatorConfig(max_iter=30, Tc=1.0, restarts=True)
    ids = content_ids(q.numpy())
    gpu = SparseResonatorNetwork(cb, cfg, seed=5, device="cuda", dtype=torch.float64).factorize(q, batch_size=7,
                                                                                                ids=ids)
    assert_same(numpy_decode(cb, q, cfg, seed=5, ids=ids), result_arrays(gpu))
    assert gpu.converged.any() and not gpu.converged.all()


# --- convergence threshold Tc, restarts, query ids -------------------------------------------------

def all_products(cb: BlockCodebooks) -> tuple[torch.Tensor, torch.Tensor]:
    """Every index tuple (P, F) and its product's offsets (P, B), by offset addition mod L."""
    combos = torch.tensor(list(itertools.product(*(range(m) for m in cb.sizes))))
    products = sum(X[combos[:, f]] for f, X in enumerate(cb.indices)) % cb.L
    return combos, products


RESTART_CASES = [  # F, M, D, B, bit-flip noise, a, max_iter, Tc
    (2, 10, 128, 4, 0.0, 6, 200, 1.0),  # the CNN head's shape
    (2, 10, 128, 4, 0.0, 6, 6, 1.0),  # capped: stuck queries restart and never converge
    (2, 10, 128, 4, 0.25, 6, 40, 0.75),
    (3, 8, 192, 8, 0.0, 6, 60, 1.0),
    (3, 8, 192, 8, 0.15, 4, 15, 0.75),
    (3, (5, 9, 7), 256, 16, 0.1, 50, 30, 0.8),  # a > M, unequal sizes
]


@pytest.mark.parametrize("F,M,D,B,noise,a,max_iter,Tc", RESTART_CASES)
def test_numpy_twin_equals_torch_float64_with_threshold_and_restarts(F, M, D, B, noise, a, max_iter, Tc):
    cb, q, _ = make_problem(F, M, D, n=40, seed=F + B + 1, noise=noise, B=B)
    cfg = SparseResonatorConfig(a=a, max_iter=max_iter, Tc=Tc, restarts=True)
    net = SparseResonatorNetwork(cb, cfg, seed=3, dtype=torch.float64)
    ref = result_arrays(net.factorize(q))
    assert_same(numpy_decode(cb, q, cfg, seed=3), ref)
    ids = content_ids(q.numpy())
    by_content = result_arrays(net.factorize(q, batch_size=7, ids=ids))
    assert_same(numpy_decode(cb, q, cfg, seed=3, ids=ids), by_content)
    # the restarts did happen (results differ from Tc alone), and converged and capped queries were compared
    no_restarts = numpy_decode(cb, q, SparseResonatorConfig(a=a, max_iter=max_iter, Tc=Tc), seed=3)
    assert not all(np.array_equal(x, y) for x, y in zip(no_restarts, ref))
    assert ref[2].any()
    if max_iter <= 40:
        assert not ref[2].all() and (ref[1][~ref[2]] == max_iter).all()
    # a converged query met the threshold in every factor
    assert (ref[3][ref[2]].min(axis=1) >= Tc).all()


def test_numpy_twin_equals_torch_float32_with_restarts_at_the_head_shape():
    # B = 4, a = 6, M = 10: weights, bundles and restart bundles (M <= 256) are exact in float32 too
    cb, q, _ = make_problem(2, 10, 128, n=40, seed=6, noise=0.1, B=4)
    cfg = SparseResonatorConfig(max_iter=25, Tc=1.0, restarts=True)
    ref = result_arrays(SparseResonatorNetwork(cb, cfg, seed=2).factorize(q, batch_size=9))
    twin = numpy_decode(cb, q, cfg, seed=2)
    assert_same(twin[:3], ref[:3])
    assert np.array_equal(twin[3], ref[3].astype(np.float64))
    assert twin[2].any() and not twin[2].all()


@pytest.mark.parametrize("F,M,D,B,noise", [(2, 10, 128, 4, 0.1), (3, 12, 256, 16, 0.1)])
def test_default_threshold_and_restarts_change_nothing(F, M, D, B, noise):
    cb, q, _ = make_problem(F, M, D, n=40, seed=2, noise=noise, B=B)
    plain = SparseResonatorConfig(max_iter=30)
    base = result_arrays(SparseResonatorNetwork(cb, plain, seed=4).factorize(q))
    base_np = numpy_decode(cb, q, plain, seed=4)
    # Tc = 0 and restarts = False spelled out; restarts with Tc = 0 never trigger (no change converges)
    for cfg in (SparseResonatorConfig(max_iter=30, Tc=0.0, restarts=False),
                SparseResonatorConfig(max_iter=30, Tc=0.0, restarts=True)):
        assert_same(result_arrays(SparseResonatorNetwork(cb, cfg, seed=4).factorize(q)), base)
        assert_same(numpy_decode(cb, q, cfg, seed=4), base_np)
    explicit = sparse_resonator_decode(q.numpy(), [X.numpy() for X in cb.indices], cb.L, a=6, max_iter=30, seed=4,
                                       first_id=0, ids=None, Tc=0, restarts=False)
    assert_same(explicit, base_np)


def test_restarts_recover_every_exact_query_at_the_head_shape():
    cb, q, truth = make_problem(2, 10, 128, n=200, seed=0, B=4)
    # oracle: the overlap (agreeing blocks) of every product with every query
    combos, products = all_products(cb)
    overlap = (q.unsqueeze(1) == products.unsqueeze(0)).sum(dim=2)  # (200, 100)
    assert ((overlap == cb.B).sum(dim=1) == 1).all()  # one product agrees in all 4 blocks ...
    oracle = combos[overlap.argmax(dim=1)]
    assert torch.equal(oracle, truth)  # ... the true one
    # The seed's rule stops 69 of these 200 (34.5%) at a wrong fixed point (65.5% right, all "converged").
    seed_rule = SparseResonatorNetwork(cb, SparseResonatorConfig(max_iter=200), seed=1).factorize(q)
    assert seed_rule.converged.all() and seed_rule.accuracy(truth) < 0.9
    strict = SparseResonatorNetwork(cb, SparseResonatorConfig(Tc=1.0, restarts=True), seed=1).factorize(q)
    assert strict.converged.all()
    assert torch.equal(strict.indices, oracle)
    assert (strict.max_similarity == 1).all()
    # Capped at 200 iterations, a query whose truth has a small basin (3-10% of starts reach it) may
    # still be restarting at the cap (1 of these 200; 6 of 400 on the same problem seed): it reports
    # converged=False; every converged query is right.
    capped = SparseResonatorNetwork(cb, SparseResonatorConfig(max_iter=200, Tc=1.0, restarts=True),
                                    seed=1).factorize(q)
    conv = capped.converged
    assert torch.equal(capped.indices[conv], oracle[conv])
    assert (capped.max_similarity[conv] == 1).all()
    assert (capped.iterations[~conv] == 200).all()
    assert float(conv.float().mean()) >= 0.95


def test_threshold_without_restarts_keeps_iterating_below_it():
    cb, q, _ = make_problem(2, 10, 128, n=60, seed=3, B=4, noise=0.25)
    loose = SparseResonatorNetwork(cb, SparseResonatorConfig(max_iter=50), seed=1).factorize(q)
    assert (loose.max_similarity[loose.converged].min(dim=1).values < 0.75).any()  # the seed's rule stops lower
    for cfg in (SparseResonatorConfig(max_iter=50, Tc=0.75),
                SparseResonatorConfig(max_iter=50, Tc=0.75, restarts=True)):
        res = SparseResonatorNetwork(cb, cfg, seed=1, dtype=torch.float64).factorize(q)
        conv = res.converged
        assert conv.any() and not conv.all()
        assert (res.max_similarity[conv].min(dim=1).values >= 0.75).all()
        assert (res.max_similarity[conv] == 0.75).any()  # ">=": exactly at the threshold converges
        assert (res.iterations[~conv] == 50).all()
        assert_same(numpy_decode(cb, q, cfg, seed=1), result_arrays(res))


def test_restart_draws_follow_the_documented_stream():
    # restart after iteration t: x_f = thin(bundle(X_f, v), keys), v_m = (word >> 16) / 2^16 from event
    # 2 (F (t - 1) + f) and keys from the next event, of the stream keyed seed_key(seed) ^ 0x5BD1E995.
    L, B, seed, t = 4, 3, 21, 5
    X0 = torch.tensor([[0, 1, 2], [0, 3, 2], [1, 1, 0]])
    X1 = torch.tensor([[3, 3, 3], [2, 0, 1]])
    net = SparseResonatorNetwork(BlockCodebooks((X0, X1), L=L), seed=seed, dtype=torch.float64)
    ids = [4, 2**32 + 9, 123456]
    got = net.restart_estimates(torch.tensor(ids), t)
    key = fmix32(fmix32(seed ^ 0x9E3779B9) ^ 0) ^ 0x5BD1E995
    for i, qid in enumerate(ids):
        for f, X in enumerate((X0, X1)):
            event = 2 * (2 * (t - 1) + f)
            words = lambda e, n: [fmix32(fmix32(fmix32(key ^ (qid & 0xFFFFFFFF)) ^ e) ^ j) for j in range(n)]
            v = [(w >> 16) / 65536 for w in words(event, X.shape[0])]
            keys = words(event + 1, B * L)
            for b in range(B):
                sums = [sum(v[m] for m in range(X.shape[0]) if int(X[m, b]) == pos) for pos in range(L)]
                top = max(sums)
                want = max((p for p in range(L) if sums[p] == top), key=lambda p: (keys[b * L + p], -p))
                assert int(got[i, f, b]) == want
    # the restart stream is not the main stream: the same events there give other words
    main = counter_bits(seed_key(seed), torch.tensor(ids), 2 * (2 * (t - 1)), 8)
    assert not torch.equal(main, counter_bits(seed_key(seed) ^ 0x5BD1E995, torch.tensor(ids), 2 * (2 * (t - 1)), 8))


def test_content_ids_follow_their_formula():
    q = np.array([[0, 0, 0, 0], [31, 2, 7, 5], [5, 7, 2, 31], [31, 2, 7, 5]])
    ids = content_ids(q)
    assert ids.dtype == np.int64 and ids.shape == (4,)
    for row, got in zip(q.tolist(), ids.tolist()):
        h = 0x27D4EB2F ^ len(row)
        for o in row:
            h = fmix32(h ^ o)
        assert got == h
    assert ids[1] == ids[3] and len(set(ids[:3].tolist())) == 3  # order matters: row 2 is row 1 reversed
    assert content_ids(q.astype(np.uint8)).tolist() == ids.tolist()
    cb, qt, _ = make_problem(2, 10, 128, n=300, seed=0, B=4)
    rows = {tuple(r) for r in qt.tolist()}
    assert len(set(content_ids(qt.numpy()).tolist())) == len(rows)  # distinct rows, distinct ids here


@pytest.mark.parametrize("x,match", [
    (np.zeros(4, dtype=np.int64), r"^offsets: expected integer offsets of shape \(N, B\)"),
    (np.zeros((2, 0), dtype=np.int64), r"^offsets: expected integer offsets of shape \(N, B\)"),
    (np.zeros((2, 3)), "^offsets: expected integer SBC offsets, got dtype float64$"),
    (np.zeros((2, 3), dtype=bool), "^offsets: expected integer SBC offsets"),
    (np.array([[1, -2]]), "^offsets: must be non-negative, found -2$"),
])
def test_content_ids_refuse(x, match):
    with pytest.raises(HdsimError, match=match):
        content_ids(x)


def test_content_ids_make_results_independent_of_position():
    cb, q, _ = make_problem(2, 10, 128, n=30, seed=5, B=4, noise=0.1)
    q = torch.cat([q, q[:5]])  # rows 30..34 repeat rows 0..4
    cfg = SparseResonatorConfig(max_iter=30, Tc=0.75, restarts=True)
    net = SparseResonatorNetwork(cb, cfg, seed=7, dtype=torch.float64)
    perm = torch.randperm(35, generator=torch.Generator().manual_seed(0))
    ids = content_ids(q.numpy())
    assert np.array_equal(ids[30:], ids[:5])
    base = result_arrays(net.factorize(q, ids=torch.from_numpy(ids)))
    moved = result_arrays(net.factorize(q[perm], batch_size=4, ids=content_ids(q[perm].numpy())))
    assert_same(moved, tuple(x[perm.numpy()] for x in base))
    assert_same(tuple(x[30:] for x in base), tuple(x[:5] for x in base))  # duplicates: same result
    twin = numpy_decode(cb, q[perm], cfg, seed=7, ids=content_ids(q[perm].numpy()))
    assert_same(twin, moved)
    assert base[2].any() and not base[2].all()  # restarts, convergence and the cap all took part
    # positional ids: the same permutation does change results
    pos = result_arrays(net.factorize(q))
    pos_moved = result_arrays(net.factorize(q[perm]))
    assert not all(np.array_equal(x, y[perm.numpy()]) for x, y in zip(pos_moved, pos))


def test_ids_override_first_id_and_follow_batches():
    cb, q, _ = make_problem(3, 16, 512, n=13, seed=5, noise=0.05, B=64)
    net = SparseResonatorNetwork(cb, SparseResonatorConfig(max_iter=25), seed=2)
    by_first_id = result_arrays(net.factorize(q, first_id=40))
    ids = torch.arange(13) + 40
    for kw in (dict(ids=ids), dict(ids=ids.numpy()), dict(ids=ids, first_id=3), dict(ids=ids, batch_size=4)):
        assert_same(result_arrays(net.factorize(q, **kw)), by_first_id)
    # ids are taken mod 2^32
    assert_same(result_arrays(net.factorize(q, ids=ids + 2**32)), by_first_id)
    # each query keeps its id when the batch is shuffled: the results are shuffled alike
    shuffled = torch.tensor([7, 3, 11, 0, 12, 5, 1, 9, 2, 10, 4, 8, 6])
    assert_same(result_arrays(net.factorize(q[shuffled], ids=shuffled + 40)),
                tuple(x[shuffled.numpy()] for x in by_first_id))


@pytest.mark.parametrize("cfg,name", [
    (SparseResonatorConfig(Tc=-0.1), "Tc"),
    (SparseResonatorConfig(Tc=1.5), "Tc"),
    (SparseResonatorConfig(Tc=float("nan")), "Tc"),
    (SparseResonatorConfig(Tc="0.5"), "Tc"),
    (SparseResonatorConfig(Tc=True), "Tc"),
    (SparseResonatorConfig(Tc=None), "Tc"),
    (SparseResonatorConfig(restarts=1), "restarts"),
    (SparseResonatorConfig(restarts="yes"), "restarts"),
    (SparseResonatorConfig(restarts=None), "restarts"),
])
def test_bad_threshold_and_restart_config(cfg, name):
    cb, _, _ = make_problem(2, 5, 64, n=1, seed=0, B=4)
    with pytest.raises(HdsimError, match=rf"^{name}:") as err:
        SparseResonatorNetwork(cb, cfg)
    assert "\n" not in str(err.value)
    for ok in (SparseResonatorConfig(Tc=0), SparseResonatorConfig(Tc=1, restarts=True),
               SparseResonatorConfig(Tc=np.float32(0.5), restarts=np.bool_(True))):
        SparseResonatorNetwork(cb, ok)


def test_bad_ids():
    cb, q, _ = make_problem(2, 5, 64, n=3, seed=0, B=4)
    net = SparseResonatorNetwork(cb)
    cbs = [X.numpy() for X in cb.indices]
    bad = [
        (torch.tensor([0, 1]), r"^ids: expected one id per query, shape \(3,\), got \(2,\)"),
        (np.zeros((3, 1), dtype=np.int64), r"^ids: expected one id per query"),
        (np.array([0, -1, 2]), "^ids: ids must be non-negative, found -1$"),
        (torch.tensor([0.0, 1.0, 2.0]), "^ids: expected integer query ids, got dtype float32$"),
        (np.array([True, False, True]), "^ids: expected integer query ids, got dtype bool$"),
    ]
    for ids, match in bad:
        with pytest.raises(HdsimError, match=match):
            net.factorize(q, ids=ids)
        with pytest.raises(HdsimError, match=match):
            sparse_resonator_decode(q.numpy(), cbs, 16, a=2, max_iter=5, seed=0, ids=ids)
    for kw, match in [(dict(Tc=2.0), "^Tc:"), (dict(Tc=-1), "^Tc:"), (dict(restarts=1), "^restarts:"),
                      (dict(restarts=None), "^restarts:")]:
        with pytest.raises(HdsimError, match=match):
            sparse_resonator_decode(q.numpy(), cbs, 16, a=2, max_iter=5, seed=0, **kw)
