"""The NumPy float BCF and brute force (hdsim.bcf_numpy) against the torch float reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdsim.bcf_numpy import bcf_decode, bruteforce_decode, product_offsets
from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers import BCFConfig, BlockCodeFactorizer
from hdsim.factorizers.bruteforce import bruteforce_decode as torch_bruteforce
from hdsim.lfsr import LFSRSampler
from hdsim.queries import QueryNoise, make_queries


@pytest.mark.parametrize("F,M,noise,cfg", [
    (2, 20, 0.0, BCFConfig()),
    (2, 40, 0.02, BCFConfig(T=0.02, A=6, Tc=0.5, max_iter=40)),  # sampling happens (asserted below)
    (3, 8, 0.01, BCFConfig(T=0.1, A=3, Tc=0.4, max_iter=30, similarity="dot")),
    (2, 12, 0.03, BCFConfig(T=0.05, A=30, Tc=0.5, max_iter=20)),  # A >= M: every codevector weighted 1
])
def test_numpy_bcf_takes_the_float_references_decisions(F, M, noise, cfg):
    cb = random_codebooks(F=F, M=M, D=256, B=4, seed=3)
    qs = make_queries(cb, 64, seed=5, noise=QueryNoise("gaussian", noise) if noise else QueryNoise(),
                      dtype=torch.float64)
    if cfg.similarity == "dot":
        cfg = BCFConfig(T=cfg.T * 4, A=cfg.A, Tc=cfg.Tc * 4, max_iter=cfg.max_iter, similarity="dot")
    sampler = LFSRSampler(7)
    drawn = []
    real_draw = sampler.draw
    sampler.draw = lambda ids, M_, A_: drawn.append(len(ids)) or real_draw(ids, M_, A_)
    ref = BlockCodeFactorizer(cb, cfg, sampler=sampler, dtype=torch.float64).factorize(qs.queries)
    X = [x.numpy() for x in cb.indices]
    idx, iters, conv, amax = bcf_decode(qs.queries.numpy(), X, cb.L, cfg, seed=7)
    np.testing.assert_array_equal(idx, ref.indices.numpy())
    np.testing.assert_array_equal(iters, ref.iterations.numpy())
    np.testing.assert_array_equal(conv, ref.converged.numpy())
    np.testing.assert_allclose(amax, ref.max_similarity.numpy(), rtol=1e-9, atol=1e-12)
    if cfg.A and cfg.A < M:
        assert sum(drawn) > 10  # the comparison covered conditional sampling


def test_numpy_bruteforce_equals_the_torch_search_and_a_loop():
    cb = random_codebooks(F=2, M=9, D=128, B=4, seed=1)
    qs = make_queries(cb, 40, seed=2, noise=QueryNoise("gaussian", 0.05), dtype=torch.float64)
    X = [x.numpy() for x in cb.indices]
    for mode in ("linf", "dot"):
        idx, best = bruteforce_decode(qs.queries.numpy(), X, cb.L, mode, chunk=7)  # chunks split the products
        ref, rbest = torch_bruteforce(qs.queries, cb, mode)
        np.testing.assert_array_equal(idx, ref.numpy())
        np.testing.assert_allclose(best, rbest.numpy(), rtol=1e-12)
    # oracle: an explicit loop over the products, offsets added by hand
    q = qs.queries.numpy()
    q = q / q.sum(axis=-1, keepdims=True)
    for n in range(5):
        scores = {(i, j): min(q[n, b, (X[0][i, b] + X[1][j, b]) % cb.L] for b in range(cb.B))
                  for i in range(9) for j in range(9)}
        top = max(scores.values())
        first = min(k for k, v in scores.items() if v == top)  # lowest product index wins ties
        assert tuple(bruteforce_decode(q[n:n + 1], X, cb.L)[0][0]) == first


def test_product_offsets_are_mixed_radix_first_factor_most_significant():
    X = [np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2], [3, 0]])]
    off, digits = product_offsets(X, 4)
    assert digits.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert off[5].tolist() == [(2 + 3) % 4, (3 + 0) % 4]


@pytest.mark.parametrize("bad,msg", [
    (np.full((2, 8), np.nan), "NaN"), (-np.ones((2, 8)), "non-negative"), (np.ones((2, 9)), "shape"),
])
def test_numpy_decoders_refuse_bad_queries(bad, msg):
    X = [np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2]])]
    with pytest.raises(HdsimError, match=msg):
        bcf_decode(bad, X, 4, BCFConfig())
    with pytest.raises(HdsimError, match=msg):
        bruteforce_decode(bad, X, 4)
    with pytest.raises(HdsimError, match="codebooks"):
        bcf_decode(np.ones((1, 8)), [np.array([[0, 4]])], 4, BCFConfig())


@pytest.mark.parametrize("F,M,L,B", [(2, 12, 16, 2), (3, 5, 8, 3), (2, 9, 128, 1)])
def test_colliding_products_equal_a_brute_force_count_on_both_paths(F, M, L, B, monkeypatch):
    import itertools

    import hdsim.bcf_numpy as bn

    rng = np.random.default_rng(F * 100 + M)
    X = [rng.integers(0, L, (M, B)) for _ in range(F)]
    factors = rng.integers(0, M, (40, F))
    # oracle: every product by explicit loops, counted by its offsets
    seen: dict[tuple, int] = {}
    for digits in itertools.product(range(M), repeat=F):
        key = tuple(sum(X[f][digits[f], b] for f in range(F)) % L for b in range(B))
        seen[key] = seen.get(key, 0) + 1
    want = [seen[tuple(sum(X[f][d[f], b] for f in range(F)) % L for b in range(B))] > 1 for d in factors]
    assert any(want) and not all(want)  # the small problems collide sometimes
    assert bn.colliding_products(X, L, factors).tolist() == want  # all products tabulated
    monkeypatch.setattr(bn, "MAX_COLLISION_PRODUCTS", 1)
    assert bn.colliding_products(X, L, factors).tolist() == want  # per query, over the first F - 1 factors


def test_bench_collision_metrics_on_codebooks_with_a_duplicated_codevector():
    """Factor 0's codevectors 0 and 1 are equal: exactly the queries with digit 0 or 1 there collide."""
    from hdsim.bench.factorizer import collision_metrics
    from hdsim.codes import BlockCodebooks
    from hdsim.factorizers.base import FactorizationResult

    rng = np.random.default_rng(4)
    X0 = rng.permutation(64)[:10].reshape(10, 1).repeat(2, axis=1)  # distinct rows...
    X0[1] = X0[0]  # ...but one duplicate
    X1 = np.arange(10).reshape(10, 1).repeat(2, axis=1)
    cb = BlockCodebooks((torch.from_numpy(X0), torch.from_numpy(X1)), 64)
    truth = torch.from_numpy(rng.integers(0, 10, (200, 2)))
    # products X0[a] + X1[b] collide across different (a, b) only through the duplicate: check by loop
    offs = {}
    for a in range(10):
        for b in range(10):
            offs.setdefault(tuple((X0[a] + X1[b]) % 64), []).append((a, b))
    want = np.array([len(offs[tuple((X0[a] + X1[b]) % 64)]) > 1 for a, b in truth.tolist()])
    guess = truth.clone()
    guess[:100, 0] = 0  # half the decodes answer digit 0 for factor 0
    res = FactorizationResult(guess, torch.ones(200, dtype=torch.long), torch.ones(200, dtype=torch.bool),
                              torch.ones(200, 2))
    m = collision_metrics(cb, truth, res)
    assert m["collision_rate"] == pytest.approx(want.mean()) and 0 < want.mean() < 1
    right = (guess == truth).all(dim=1).numpy()
    assert m["accuracy_noncolliding"] == pytest.approx(right[~want].mean())
