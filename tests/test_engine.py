"""The decode engines (hdsim.engine numba, hdsim.engine_torch continuous batching) and the fair NumPy
baseline against the float reference BlockCodeFactorizer (float64, the same LFSR sampler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers import BCFConfig, BlockCodeFactorizer
from hdsim.lfsr import LFSRSampler
from hdsim.queries import QueryNoise, make_queries

numba = pytest.importorskip("numba")

from hdsim.bench.numpy_bcf import numpy_bcf  # noqa: E402
from hdsim.engine import OP_NAMES, NumbaBCF  # noqa: E402
from hdsim.engine_torch import ContinuousBCF  # noqa: E402

CASES = [  # (F, M, gaussian noise sigma, config); "dot" thresholds are scaled by B = 4 below
    (2, 40, 0.0, BCFConfig(T=0.03, A=6, Tc=0.5, max_iter=40)),
    (2, 60, 0.02, BCFConfig(T=0.02, A=9, Tc=0.6, max_iter=30)),
    (2, 30, 0.01, BCFConfig(T=0.05, A=5, Tc=0.5, max_iter=30, similarity="dot")),
    (3, 12, 0.0, BCFConfig(T=0.02, A=5, max_iter=40)),
    (3, 8, 0.01, BCFConfig(T=0.1, A=3, Tc=0.4, max_iter=30, similarity="dot")),
    (2, 12, 0.03, BCFConfig(T=0.05, A=30, Tc=0.5, max_iter=20)),  # A >= M: every codevector weighted 1
]


def _problem(F, M, noise, cfg, n=48):
    cb = random_codebooks(F=F, M=M, D=256, B=4, seed=3)
    qs = make_queries(cb, n, seed=5, noise=QueryNoise("gaussian", noise) if noise else QueryNoise(),
                      dtype=torch.float64)
    if cfg.similarity == "dot":
        cfg = BCFConfig(T=cfg.T * 4, A=cfg.A, Tc=cfg.Tc * 4, max_iter=cfg.max_iter, similarity="dot")
    return cb, qs, cfg


def _reference(cb, qs, cfg, seed=7, first_id=0):
    """The float64 reference with an LFSR sampler, and how many sampled draws it made."""
    sampler = LFSRSampler(seed)
    drawn = []
    real = sampler.draw
    sampler.draw = lambda ids, M, A: drawn.append(len(ids)) or real(ids, M, A)
    ref = BlockCodeFactorizer(cb, cfg, sampler=sampler, dtype=torch.float64).factorize(qs.queries, first_id=first_id)
    return ref, sum(drawn)


def _assert_same_decisions(idx, iters, conv, ref, exact_zeros=True):
    """Same iterations and convergence everywhere, same indices except where the reference's largest
    similarity is an exact 0 that its FFT's round-off (1e-17) turned into a maximum elsewhere: every
    similarity is then exactly 0 and the first maximum (SPEC: lowest index) is 0 where ``idx`` comes
    from exact sums (``exact_zeros``; an FFT on another device breaks such ties its own way)."""
    np.testing.assert_array_equal(iters, ref.iterations.numpy())
    np.testing.assert_array_equal(conv, ref.converged.numpy())
    tie = ref.max_similarity.numpy() < 1e-12
    np.testing.assert_array_equal(idx[~tie], ref.indices.numpy()[~tie])
    if exact_zeros:
        assert (idx[tie] == 0).all()
    assert tie.mean() < 0.1


@pytest.mark.parametrize("F,M,noise,cfg", CASES)
def test_numba_engine_takes_the_references_decisions(F, M, noise, cfg):
    cb, qs, cfg = _problem(F, M, noise, cfg)
    ref, drawn = _reference(cb, qs, cfg, first_id=5)
    idx, iters, conv, amax, ops = NumbaBCF.from_codebooks(cb, cfg, seed=7).decode_arrays(qs.queries, first_id=5)
    _assert_same_decisions(idx, iters, conv, ref)
    np.testing.assert_allclose(amax, ref.max_similarity.numpy(), rtol=1e-9, atol=1e-12)
    if cfg.A < M:
        assert drawn > 10  # the comparison covered conditional sampling


@pytest.mark.parametrize("F,M,noise,cfg", [CASES[1], CASES[4]])
def test_numba_engine_decodes_the_same_with_one_or_two_threads(F, M, noise, cfg):
    cb, qs, cfg = _problem(F, M, noise, cfg)
    eng = NumbaBCF.from_codebooks(cb, cfg, seed=7)
    one, two = eng.decode_arrays(qs.queries, threads=1), eng.decode_arrays(qs.queries, threads=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_numba_engine_counts_the_per_step_work_of_spec_section_3():
    # Hand derivation, per factor step: at most M*B gathers and M compares (linf with T > 0 stops
    # reading a codevector once its partial min is below T, but block 0 is read for all M); a bundle
    # adds B entries per non-zero weight, at least the B of a pulled-up winner; a step that is not
    # pulled up normalizes B blocks of L (a sum and a division each), a pulled-up one sets B ones.
    cb, qs, cfg = _problem(2, 40, 0.0, CASES[0][3])
    idx, iters, conv, amax, ops = NumbaBCF.from_codebooks(cb, cfg, seed=7).decode_arrays(qs.queries)
    steps = iters * 2
    col = {k: ops[:, i] for i, k in enumerate(OP_NAMES)}
    assert (col["similarity_gathers"] >= steps * 40).all() and (col["similarity_gathers"] <= steps * 40 * 4).all()
    assert (col["similarity_gathers"] < steps * 40 * 4).any()  # the early stop happened
    assert (col["activation_compares"] <= steps * 40).all()
    assert (col["normalize_ops"] % (2 * 4 * 64) == 0).all() and (col["normalize_ops"] < steps * 2 * 4 * 64).all()
    assert (col["unbind_madds"] >= steps * 4).all() and (col["bundle_adds"] >= steps * 4).all()
    # linf with T = 0 (no early stop): exactly M*B gathers and M compares per step
    cfg0 = BCFConfig(T=0.0, A=0, Tc=0.5, max_iter=20)
    idx, iters, conv, amax, ops = NumbaBCF.from_codebooks(cb, cfg0, seed=7).decode_arrays(qs.queries)
    np.testing.assert_array_equal(ops[:, OP_NAMES.index("similarity_gathers")], iters * 2 * 40 * 4)
    np.testing.assert_array_equal(ops[:, OP_NAMES.index("activation_compares")], iters * 2 * 40)
    # F = 1, one iteration, a noisy query (no pull-up): no unbinding, u = q, T = 0 keeps every
    # similarity, so the bundle adds B entries per codevector whose min-gathered similarity is > 0
    cb1 = random_codebooks(F=1, M=10, D=64, B=4, seed=1)
    q1 = make_queries(cb1, 3, seed=2, noise=QueryNoise("gaussian", 0.1), dtype=torch.float64).queries.numpy()
    out = NumbaBCF.from_codebooks(cb1, BCFConfig(max_iter=1), seed=1).decode_arrays(q1)
    qn = q1.reshape(3, 4, 16) / q1.reshape(3, 4, 16).sum(axis=2, keepdims=True)
    X = cb1.indices[0].numpy()
    a = np.array([[min(qn[n, b, X[m, b]] for b in range(4)) for m in range(10)] for n in range(3)])
    assert (a.max(axis=1) < 0.9).all()  # not pulled up
    np.testing.assert_array_equal(out[4][:, OP_NAMES.index("unbind_madds")], 0)
    np.testing.assert_array_equal(out[4][:, OP_NAMES.index("bundle_adds")], 4 * (a > 0).sum(axis=1))


@pytest.mark.parametrize("F,M,noise,cfg", [CASES[1], CASES[3]])
def test_torch_engine_refills_slots_and_equals_the_reference_bit_for_bit(F, M, noise, cfg):
    cb, qs, cfg = _problem(F, M, noise, cfg, n=24)
    ref, _ = _reference(cb, qs, cfg, first_id=3)
    res = ContinuousBCF(cb, cfg, seed=7, slots=7).factorize(qs.queries, first_id=3)  # 7 slots: many refills
    for k in ("indices", "iterations", "converged", "max_similarity"):
        assert torch.equal(getattr(res, k), getattr(ref, k)), k


@pytest.mark.parametrize("F,M,noise,cfg", [CASES[1], CASES[3], CASES[4]])
def test_fair_numpy_baseline_takes_the_references_decisions_with_its_sampler(F, M, noise, cfg):
    cb, qs, cfg = _problem(F, M, noise, cfg)
    fz = BlockCodeFactorizer(cb, cfg, sampler=LFSRSampler(7), dtype=torch.float64)
    ref = fz.factorize(qs.queries)
    idx, iters, conv = numpy_bcf(qs.queries.numpy(), [x.numpy() for x in cb.indices], cfg.T, cfg.A, fz.Tc,
                                 fz.max_iter, 0, cfg.similarity, sampler=LFSRSampler(7).draw)
    _assert_same_decisions(idx, iters, conv, ref)


def test_fair_numpy_baseline_with_its_own_sampler_is_as_accurate_as_the_reference():
    cb = random_codebooks(F=2, M=300, D=512, B=4, seed=0)
    qs = make_queries(cb, 64, seed=1, dtype=torch.float64)
    cfg = BCFConfig(T=0.0045, A=134)
    fz = BlockCodeFactorizer(cb, cfg, sampler=LFSRSampler(1), dtype=torch.float64)
    ref = fz.factorize(qs.queries)
    idx, iters, conv = numpy_bcf(qs.queries.numpy(), [x.numpy() for x in cb.indices], cfg.T, cfg.A, fz.Tc,
                                 fz.max_iter, 0)
    acc = float((idx == qs.factors.numpy()).all(axis=1).mean())
    assert ref.accuracy(qs.factors) >= 0.95 and abs(acc - ref.accuracy(qs.factors)) <= 2 / 64
    assert iters.max() > 2  # sampling and thresholds were exercised, not a one-step decode


@pytest.mark.parametrize("bad,msg", [
    (dict(seed=0), "seed"), (dict(L=0), "L"), (dict(config="x"), "config"),
    (dict(config=BCFConfig(T=2.0)), "T"),
])
def test_numba_engine_refuses_bad_parameters(bad, msg):
    kw = dict(indices=[np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2]])], L=4, config=BCFConfig(), seed=1)
    kw.update(bad)
    with pytest.raises(HdsimError, match=msg):
        NumbaBCF(**kw)


@pytest.mark.parametrize("q,msg", [(np.full((2, 8), np.nan), "NaN"), (-np.ones((2, 8)), "non-negative"),
                                   (np.ones((2, 9)), "shape")])
def test_numba_engine_refuses_bad_queries(q, msg):
    eng = NumbaBCF([np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2]])], 4, BCFConfig())
    with pytest.raises(HdsimError, match=msg):
        eng.decode_arrays(q)
    with pytest.raises(HdsimError, match="first_id"):
        eng.decode_arrays(np.ones((1, 8)), first_id=-1)


@pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)
@pytest.mark.parametrize("F,M,noise,cfg", [CASES[1], CASES[3]])
def test_cuda_engine_takes_the_cpu_decisions(F, M, noise, cfg):
    cb, qs, cfg = _problem(F, M, noise, cfg, n=128)
    cpu = ContinuousBCF(cb, cfg, seed=7, slots=32).factorize(qs.queries)
    gpu = ContinuousBCF(cb, cfg, seed=7, slots=32, device="cuda").factorize(qs.queries)
    idx, iters, conv, *_ = NumbaBCF.from_codebooks(cb, cfg, seed=7).decode_arrays(qs.queries)
    _assert_same_decisions(gpu.indices.numpy(), gpu.iterations.numpy(), gpu.converged.numpy(), cpu,
                           exact_zeros=False)
    _assert_same_decisions(idx, iters, conv, gpu)


def test_capacity_sweep_counts_collisions_like_brute_force_and_engines_agree(tmp_path):
    from hdsim.sweep.capacity import CSV_COLUMNS, CapacitySweepConfig, run_capacity_sweep

    # D=16, B=4: L=4, only 4^4 = 256 distinct SBCs for 400 products, so many queries collide
    rows = {}
    for engine in ("numba", "reference", "torch"):
        cfg = CapacitySweepConfig(F=(2,), M=(20,), D=16, B=4, queries=40, max_iter=30, engine=engine,
                                  out=str(tmp_path / engine), plot=engine == "numba", progress=False)
        rows[engine] = run_capacity_sweep(cfg)["rows"][0]
    assert (tmp_path / "numba" / "capacity.png").stat().st_size > 0
    header = (tmp_path / "numba" / "capacity.csv").read_text().splitlines()[0].split(",")
    assert header == list(CSV_COLUMNS) and "collision_rate" in header and "accuracy_noncolliding" in header
    # oracle: every product by hand, the query's product compared with all the others
    cb = random_codebooks(2, 20, 16, 4, seed=0)
    qs = make_queries(cb, 40, seed=1)
    X0, X1 = cb.indices[0].tolist(), cb.indices[1].tolist()
    prods = [tuple((a + b) % 4 for a, b in zip(X0[i], X1[j])) for i in range(20) for j in range(20)]
    own = [tuple((a + b) % 4 for a, b in zip(X0[i], X1[j])) for i, j in qs.factors.tolist()]
    expected = sum(prods.count(p) > 1 for p in own) / 40
    assert 0 < expected < 1 and rows["numba"]["collision_rate"] == expected
    for engine in ("reference", "torch"):  # the same decisions: the same row but for the timing
        assert {k: v for k, v in rows[engine].items() if k != "seconds"} == \
            {k: v for k, v in rows["numba"].items() if k != "seconds"}
