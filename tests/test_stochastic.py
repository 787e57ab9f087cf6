"""Stochastic in-memory factorizer (hdsim.factorizers.stochastic)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import bipolar_brute_force as brute_force
from hdsim.errors import HdsimError
from hdsim.factorizers.stochastic import (
    GaussianSimilarityNoise,
    StochasticConfig,
    StochasticFactorizer,
    default_sigma,
    default_stochastic_max_iter,
    default_threshold,
    make_problem,
)


@pytest.mark.parametrize("F,M,D", [(2, 10, 256), (3, 8, 256), (3, 10, 512)])
def test_exact_queries_match_brute_force(F, M, D):
    cb, q, truth = make_problem(F, M, D, n=30, seed=7)
    res = StochasticFactorizer(cb, seed=1).factorize(q)
    assert torch.equal(res.indices, brute_force(cb, q))
    assert res.accuracy(truth) == 1.0
    assert res.converged.all()
    # the factor that fired the detection had a noisy similarity > 0.625; its
    # noise-free readout differs from that only by the noise (sigma ~0.01-0.015)
    assert (res.max_similarity.amax(dim=1) > 0.55).all()
    assert (res.max_similarity <= 1.0).all()


def test_noisy_queries_match_brute_force():
    cb, q, truth = make_problem(2, 10, 512, n=30, seed=2, noise=0.1)
    res = StochasticFactorizer(cb, seed=0).factorize(q)
    assert torch.equal(res.indices, brute_force(cb, q))
    assert res.accuracy(truth) == 1.0


def test_defaults():
    assert default_sigma(512) == pytest.approx(0.0107)
    assert default_sigma(256) == pytest.approx(0.0107 * math.sqrt(2))
    # T is defined by the Gaussian tail: P(N(0, 1/D) > T) = active / M. Oracle: the tail through
    # math.erfc (not the NormalDist quantile the code inverts); 0.1379 at M = D = 256 follows.
    for M in (16, 64, 256, 1000):
        T = default_threshold(M, 256)
        assert 0.5 * math.erfc(T * math.sqrt(256) / math.sqrt(2)) == pytest.approx(3.5 / M, rel=1e-9)
    assert default_threshold(256, 256) == pytest.approx(0.1379, abs=1e-4)
    assert default_threshold(3, 256) == 0.0  # M <= 3.5 active: no threshold
    assert default_stochastic_max_iter((10, 10, 10)) == 2000  # ceil(1000 / 1000) = 1 < 2000
    assert default_stochastic_max_iter((256, 256, 256)) == 16778  # ceil(16777216 / 1000) = 16778
    cb, _, _ = make_problem(2, (16, 64), 256, n=1, seed=0)
    fac = StochasticFactorizer(cb)
    assert fac.T == (default_threshold(16, 256), default_threshold(64, 256))
    assert fac.sigma == pytest.approx(default_sigma(256))
    d = StochasticConfig(T=0.1).as_dict(256, (16, 64))
    assert d["T"] == [0.1, 0.1] and d["max_iter"] == 2000


def test_same_seed_identical_different_seed_differs():
    cb, q, _ = make_problem(3, 24, 256, n=12, seed=0)
    a = StochasticFactorizer(cb, seed=5).factorize(q)
    b = StochasticFactorizer(cb, seed=5).factorize(q)
    c = StochasticFactorizer(cb, seed=6).factorize(q)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.iterations, b.iterations)
    assert torch.equal(a.max_similarity, b.max_similarity)
    assert not torch.equal(a.iterations, c.iterations)  # the noise steers the search
    # every call re-seeds, so calling twice gives the same result
    fac = StochasticFactorizer(cb, seed=5)
    assert torch.equal(fac.factorize(q).iterations, fac.factorize(q).iterations)


def test_problem_seeding():
    a = make_problem(3, 8, 128, n=5, seed=1)
    b = make_problem(3, 8, 128, n=5, seed=1)
    c = make_problem(3, 8, 128, n=5, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a[0].vectors, b[0].vectors))
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0].vectors[0], c[0].vectors[0])


def test_gaussian_noise_is_seeded_and_scaled():
    a = torch.zeros(200, 256)
    n1 = GaussianSimilarityNoise(0.02, seed=3)(a, 0)
    n2 = GaussianSimilarityNoise(0.02, seed=3)(a, 0)
    n3 = GaussianSimilarityNoise(0.02, seed=4)(a, 0)
    assert torch.equal(n1, n2) and not torch.equal(n1, n3)
    assert float(n1.std()) == pytest.approx(0.02, rel=0.05)
    assert torch.equal(GaussianSimilarityNoise(0.0, seed=0)(a, 1), a)


def test_injected_noise_is_called_per_factor():
    cb, q, truth = make_problem(3, 10, 256, n=6, seed=0)
    calls = []
    gaussian = GaussianSimilarityNoise(default_sigma(256), seed=4)

    def recorded(a: torch.Tensor, factor: int) -> torch.Tensor:
        calls.append((factor, tuple(a.shape)))
        return gaussian(a, factor)

    res = StochasticFactorizer(cb, similarity_noise=recorded).factorize(q)
    assert res.accuracy(truth) == 1.0
    assert calls[:3] == [(0, (6, 10)), (1, (6, 10)), (2, (6, 10))]
    assert len(calls) >= 3 * int(res.iterations.min())
    # the callable replaced the default: the same draw as the default noise with seed 4
    ref = StochasticFactorizer(cb, seed=4).factorize(q)
    assert torch.equal(res.indices, ref.indices) and torch.equal(res.iterations, ref.iterations)


def test_noise_is_what_unlocks_the_search():
    # Without noise the network stalls (threshold silences every factor, the state
    # freezes); the default Gaussian noise solves the same queries.
    cb, q, truth = make_problem(3, 10, 256, n=30, seed=7)
    quiet = StochasticFactorizer(cb, StochasticConfig(sigma=0.0, max_iter=300)).factorize(q)
    noisy = StochasticFactorizer(cb, StochasticConfig(max_iter=300), seed=1).factorize(q)
    assert not quiet.converged.all()
    assert noisy.converged.all() and noisy.accuracy(truth) == 1.0


def test_silent_factor_keeps_its_estimate():
    cb, q, _ = make_problem(3, 10, 256, n=4, seed=0)
    # noise pushing every similarity below T: a' is always all zero
    fac = StochasticFactorizer(cb, StochasticConfig(max_iter=7), similarity_noise=lambda a, f: a - 10.0)
    res = fac.factorize(q)
    assert not res.converged.any()
    assert (res.iterations == 7).all()
    # the estimates never left the init, so the readout is the init's readout
    x0 = fac.initial_estimates(4)
    idx, val = fac.readout(q, x0)
    assert torch.equal(res.indices, idx)
    assert torch.equal(res.max_similarity, val)


def test_detection_threshold_stops_early():
    cb, q, _ = make_problem(2, 10, 256, n=8, seed=0)
    # similarities clipped at 1 never exceed detection = 1: every query runs to max_iter
    res = StochasticFactorizer(cb, StochasticConfig(detection=1.0, max_iter=15),
                               similarity_noise=lambda a, f: a.clamp(max=1.0)).factorize(q)
    assert not res.converged.any() and (res.iterations == 15).all()
    early = StochasticFactorizer(cb, StochasticConfig(max_iter=15)).factorize(q)
    assert early.converged.all() and (early.iterations < 15).all()


def test_float64_option_and_shapes():
    cb, q, truth = make_problem(2, 8, 256, n=5, seed=0)
    res = StochasticFactorizer(cb, dtype=torch.float64).factorize(q, batch_size=2)
    assert res.max_similarity.dtype == torch.float64
    assert res.indices.shape == (5, 2) and res.indices.dtype == torch.int64
    assert res.iterations.shape == (5,) and res.converged.dtype == torch.bool
    assert res.accuracy(truth) == 1.0


@pytest.mark.parametrize("cfg,name", [
    (StochasticConfig(sigma=-1.0), "sigma"),
    (StochasticConfig(sigma=float("nan")), "sigma"),
    (StochasticConfig(T=-0.1), "T"),
    (StochasticConfig(T=1.0), "T"),
    (StochasticConfig(detection=0.0), "detection"),
    (StochasticConfig(detection=1.5), "detection"),
    (StochasticConfig(max_iter=0), "max_iter"),
    (StochasticConfig(silent="drop"), "silent"),
])
def test_bad_config(cfg, name):
    cb, _, _ = make_problem(2, 5, 64, n=1, seed=0)
    with pytest.raises(HdsimError, match=rf"^{name}:"):
        StochasticFactorizer(cb, cfg)


def test_bad_inputs():
    with pytest.raises(HdsimError, match="^M:"):
        make_problem(2, 0, 64, n=2, seed=0)
    with pytest.raises(HdsimError, match="^D:"):
        make_problem(2, 4, -3, n=2, seed=0)
    cb, q, _ = make_problem(2, 5, 64, n=3, seed=0)
    fac = StochasticFactorizer(cb)
    bad = q.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(HdsimError, match="^queries:.*NaN or infinite"):
        fac.factorize(bad)
    with pytest.raises(HdsimError, match=r"^queries:.*shape"):
        fac.factorize(q[:, :32])
    with pytest.raises(HdsimError, match="^batch_size:"):
        fac.factorize(q, batch_size=-1)
    with pytest.raises(HdsimError, match="^similarity_noise:"):
        StochasticFactorizer(cb, similarity_noise=3)
    with pytest.raises(HdsimError, match="^similarity_noise:.*shape"):
        StochasticFactorizer(cb, similarity_noise=lambda a, f: a[:, :1]).factorize(q)


@pytest.mark.cuda  # skipped without a CUDA device (conftest.py)
def test_cuda_matches_cpu():
    cb, q, _ = make_problem(3, 24, 256, n=16, seed=0)
    cpu = StochasticFactorizer(cb, seed=5).factorize(q)
    gpu = StochasticFactorizer(cb, seed=5, device="cuda").factorize(q)
    assert torch.equal(cpu.indices, gpu.indices)
    assert torch.equal(cpu.iterations, gpu.iterations)
