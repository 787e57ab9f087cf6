"""Sparse resonator network on maximally sparse segment codes (hdsim.factorizers.sparse_resonator)."""

from __future__ import annotations

import itertools

import pytest
import torch

from hdsim.codes import BlockCodebooks, random_codebooks, seeded_generator
from hdsim.errors import HdsimError
from hdsim.factorizers.sparse_resonator import (
    SparseResonatorConfig,
    SparseResonatorNetwork,
    check_sbc_queries,
    default_sparse_max_iter,
    make_problem,
)
from hdsim.functional import sbc_to_dense
from hdsim.queries import QueryNoise, make_queries


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


def test_thinning_breaks_ties_at_random_among_maxima():
    cb, _, _ = make_problem(1, 4, 16, n=1, seed=0, B=1)
    net = SparseResonatorNetwork(cb)
    bundled = torch.tensor([[0.3, 0.0, 0.3, 0.1] * 4]).reshape(1, 1, 16).expand(400, -1, -1)
    bundled = bundled.clone()
    bundled[:, 0, 5] = 0.3
    picks = net.thin(bundled, seeded_generator(0)).flatten()
    tied = {0, 2, 4, 5, 6, 8, 10, 12, 14}  # every position holding the maximum 0.3
    assert set(picks.tolist()) == tied  # only maxima, and each of them gets picked
    unique = torch.tensor([[[0.1, 0.7, 0.2]]])
    assert int(net.thin(unique, seeded_generator(1))) == 1


def test_initial_estimates_are_thinned_bundles():
    cb = BlockCodebooks((torch.tensor([[0, 1], [0, 2], [3, 2]]), torch.tensor([[1, 1]])), L=4)
    net = SparseResonatorNetwork(cb)
    init = net.initial_estimates(50, seeded_generator(0))
    assert init.shape == (50, 2, 2)
    assert (init[:, 0, 0] == 0).all()  # block 0: position 0 has 2 of 3 votes
    assert (init[:, 0, 1] == 2).all()  # block 1: position 2 has 2 of 3 votes
    assert (init[:, 1] == 1).all()


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cb, q, _ = make_problem(3, 30, 1024, n=16, seed=0, B=64)
    cpu = SparseResonatorNetwork(cb, seed=5).factorize(q)
    gpu = SparseResonatorNetwork(cb, seed=5, device="cuda").factorize(q)
    assert torch.equal(cpu.indices, gpu.indices)
    assert torch.equal(cpu.iterations, gpu.iterations)
