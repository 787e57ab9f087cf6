"""Dense bipolar resonator network (hdsim.factorizers.resonator)."""

from __future__ import annotations


import pytest
import torch

from conftest import bipolar_brute_force as brute_force
from hdsim.errors import HdsimError
from hdsim.factorizers.resonator import (
    BipolarCodebooks,
    ResonatorConfig,
    ResonatorNetwork,
    bipolar_sign,
    make_bipolar_queries,
    make_problem,
    random_bipolar_codebooks,
    unbind_others,
)


@pytest.mark.parametrize("F,M,D", [(2, 8, 256), (3, 10, 500), (3, (4, 7, 9), 1000)])
def test_exact_queries_match_brute_force(F, M, D):
    cb, q, truth = make_problem(F, M, D, n=40, seed=3)
    res = ResonatorNetwork(cb).factorize(q)
    assert torch.equal(res.indices, brute_force(cb, q))
    assert res.accuracy(truth) == 1.0
    assert res.converged.all()
    assert torch.allclose(res.max_similarity, torch.ones_like(res.max_similarity))


def test_noisy_queries_match_brute_force():
    cb, q, truth = make_problem(2, 10, 512, n=40, seed=5, noise=0.1)
    assert not torch.equal(q, cb.product(truth))  # the noise did flip entries
    res = ResonatorNetwork(cb).factorize(q)
    assert torch.equal(res.indices, brute_force(cb, q))
    assert res.accuracy(truth) == 1.0


def test_result_shapes_and_dtypes():
    cb, q, _ = make_problem(3, 6, 256, n=5, seed=0)
    res = ResonatorNetwork(cb).factorize(q)
    assert res.indices.shape == (5, 3) and res.indices.dtype == torch.int64
    assert res.iterations.shape == (5,) and res.iterations.dtype == torch.int64
    assert res.converged.shape == (5,) and res.converged.dtype == torch.bool
    assert res.max_similarity.shape == (5, 3)
    assert all(t.device.type == "cpu" for t in (res.indices, res.iterations, res.converged, res.max_similarity))


def test_single_query_vector_accepted():
    cb, q, truth = make_problem(2, 5, 256, n=1, seed=0)
    res = ResonatorNetwork(cb).factorize(q[0])
    assert torch.equal(res.indices, truth)


def test_same_seed_same_problem_different_seed_differs():
    a = make_problem(3, 10, 300, n=8, seed=11)
    b = make_problem(3, 10, 300, n=8, seed=11)
    c = make_problem(3, 10, 300, n=8, seed=12)
    for x, y in zip(a[0].vectors, b[0].vectors):
        assert torch.equal(x, y)
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[0].vectors[0], c[0].vectors[0])


def test_codebooks_are_bipolar_and_seeded():
    cb = random_bipolar_codebooks(2, (3, 5), 64, seed=0)
    assert cb.sizes == (3, 5) and cb.D == 64 and cb.problem_size == 15
    assert all(bool((X.abs() == 1).all()) for X in cb.vectors)
    assert torch.equal(cb.vectors[1], random_bipolar_codebooks(2, (3, 5), 64, seed=0).vectors[1])


def test_flip_noise_rate():
    cb = random_bipolar_codebooks(2, 4, 2000, seed=0)
    q, truth = make_bipolar_queries(cb, 50, seed=1, flip_p=0.2)
    rate = float((q != cb.product(truth)).float().mean())
    assert 0.18 < rate < 0.22


def test_deterministic_and_batch_size_invariant():
    cb, q, _ = make_problem(3, 30, 500, n=24, seed=2)
    net = ResonatorNetwork(cb)
    full = net.factorize(q)
    again = net.factorize(q)
    split = net.factorize(q, batch_size=5)
    for r in (again, split):
        assert torch.equal(full.indices, r.indices)
        assert torch.equal(full.iterations, r.iterations)
        assert torch.equal(full.converged, r.converged)


def test_float64_matches_float32():
    cb, q, _ = make_problem(3, 30, 500, n=16, seed=4)
    r32 = ResonatorNetwork(cb).factorize(q)
    r64 = ResonatorNetwork(cb, dtype=torch.float64).factorize(q)
    assert r64.max_similarity.dtype == torch.float64
    assert torch.equal(r32.indices, r64.indices)
    assert torch.equal(r32.iterations, r64.iterations)


def test_sign_ties_and_init():
    assert torch.equal(bipolar_sign(torch.tensor([0.0, -0.5, 2.0])), torch.tensor([1.0, -1.0, 1.0]))
    X = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]])  # column sums 2, 0, 0, -2
    net = ResonatorNetwork(BipolarCodebooks((X, X.clone())))
    init = net.initial_estimates(2)
    assert init.shape == (2, 2, 4)
    assert torch.equal(init[0, 0], torch.tensor([1.0, 1.0, 1.0, -1.0]))


def test_unbind_others_recovers_factor():
    cb, q, truth = make_problem(3, 5, 128, n=4, seed=0)
    x = torch.stack([cb.vectors[f][truth[:, f]] for f in range(3)], dim=1)
    for f in range(3):
        assert torch.equal(unbind_others(q, x, f), x[:, f])


def test_abs_readout_resolves_sign_symmetry():
    cb, q, truth = make_problem(3, 10, 256, n=3, seed=0)
    # (a, -b, -c) binds to the same product as (a, b, c).
    x = torch.stack([cb.vectors[0][truth[:, 0]], -cb.vectors[1][truth[:, 1]], -cb.vectors[2][truth[:, 2]]], dim=1)
    assert torch.equal(x[:, 0] * x[:, 1] * x[:, 2], q)
    idx, val = ResonatorNetwork(cb).readout(x)
    assert torch.equal(idx, truth)
    assert torch.allclose(val, torch.ones_like(val))
    signed_idx, _ = ResonatorNetwork(cb, ResonatorConfig(readout="signed")).readout(x)
    assert torch.equal(signed_idx[:, 0], truth[:, 0])
    assert not torch.equal(signed_idx[:, 1], truth[:, 1])


def test_convergence_flags():
    cb, q, _ = make_problem(3, 20, 500, n=10, seed=1)
    capped = ResonatorNetwork(cb, ResonatorConfig(max_iter=1)).factorize(q)
    # the first iteration always moves away from the init, so nothing converges at cap 1
    assert not capped.converged.any()
    assert (capped.iterations == 1).all()
    full = ResonatorNetwork(cb).factorize(q)
    assert full.converged.all()
    assert (full.iterations >= 2).all() and (full.iterations < 1000).all()


def test_limit_cycle_reports_unconverged():
    # Far above capacity (M=60 at D=100): some queries never settle.
    cb, q, _ = make_problem(3, 60, 100, n=30, seed=0)
    res = ResonatorNetwork(cb, ResonatorConfig(max_iter=50)).factorize(q)
    assert not res.converged.all()
    assert (res.iterations[~res.converged] == 50).all()
    assert (res.iterations[res.converged] <= 50).all()


@pytest.mark.parametrize("kwargs,name", [
    (dict(F=0, M=5, D=64), "F"),
    (dict(F=2, M=0, D=64), "M"),
    (dict(F=2, M=(5,), D=64), "M"),
    (dict(F=2, M=5, D=0), "D"),
    (dict(F=2, M=5, D=64, noise=1.5), "noise"),
    (dict(F=2, M=5, D=64, noise=float("nan")), "noise"),
])
def test_bad_problem_parameters(kwargs, name):
    with pytest.raises(HdsimError, match=rf"^{name}:"):
        make_problem(n=4, seed=0, **kwargs)


@pytest.mark.parametrize("cfg,name", [
    (ResonatorConfig(max_iter=0), "max_iter"),
    (ResonatorConfig(max_iter=2.5), "max_iter"),
    (ResonatorConfig(readout="max"), "readout"),
])
def test_bad_config(cfg, name):
    cb, _, _ = make_problem(2, 5, 64, n=1, seed=0)
    with pytest.raises(HdsimError, match=rf"^{name}:"):
        ResonatorNetwork(cb, cfg)


def test_bad_queries_and_arguments():
    cb, q, _ = make_problem(2, 5, 64, n=3, seed=0)
    net = ResonatorNetwork(cb)
    bad = q.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(HdsimError, match="^queries:.*NaN"):
        net.factorize(bad)
    with pytest.raises(HdsimError, match=r"^queries:.*shape"):
        net.factorize(q[:, :10])
    with pytest.raises(HdsimError, match=r"^queries:.*shape"):
        net.factorize(q.reshape(3, 8, 8))
    with pytest.raises(HdsimError, match="^queries:"):
        net.factorize(q.tolist())
    with pytest.raises(HdsimError, match="^batch_size:"):
        net.factorize(q, batch_size=0)
    with pytest.raises(HdsimError, match="^dtype:"):
        ResonatorNetwork(cb, dtype=torch.int32)
    with pytest.raises(HdsimError, match="^codebooks:"):
        ResonatorNetwork(BipolarCodebooks((cb.vectors[0] * 2, cb.vectors[1])))
    with pytest.raises(HdsimError, match="^codebooks:"):
        ResonatorNetwork(BipolarCodebooks((cb.vectors[0], cb.vectors[1][:, :10])))


@pytest.mark.cuda  # skipped without a CUDA device (conftest.py)
def test_cuda_matches_cpu():
    cb, q, _ = make_problem(3, 40, 600, n=32, seed=2)
    cpu = ResonatorNetwork(cb).factorize(q)
    gpu = ResonatorNetwork(cb, device="cuda").factorize(q)
    assert torch.equal(cpu.indices, gpu.indices)
    assert torch.equal(cpu.iterations, gpu.iterations)
    assert torch.equal(cpu.converged, gpu.converged)
