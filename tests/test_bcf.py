"""BCF float reference (SPEC section 3): against brute force, seeds, sampler, errors, devices."""

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from hdsim.bench.numpy_bcf import numpy_bcf
from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers import BCFConfig, BlockCodeFactorizer, default_max_iter
from hdsim.factorizers.bruteforce import bruteforce_decode
from hdsim.queries import QueryNoise, make_queries


@pytest.mark.parametrize("F,M,D", [(2, 12, 128), (3, 6, 256), (2, 60, 512)])
def test_exact_queries_match_bruteforce(F, M, D):
    cb = random_codebooks(F, M, D, 4, seed=F * 100 + M)
    qs = make_queries(cb, 64, seed=5)
    res = BlockCodeFactorizer(cb, BCFConfig()).factorize(qs.queries)
    bf, _ = bruteforce_decode(qs.queries, cb)
    assert torch.equal(bf, qs.factors)
    assert torch.equal(res.indices, bf)
    assert bool(res.converged.all())
    assert (res.max_similarity > 0.9).all()


def test_noisy_queries_track_bruteforce():
    cb = random_codebooks(2, 40, 512, 4, seed=1)
    qs = make_queries(cb, 200, seed=2, noise=QueryNoise("gaussian", 0.02))
    res = BlockCodeFactorizer(cb, BCFConfig(Tc=0.3)).factorize(qs.queries)
    bf, _ = bruteforce_decode(qs.queries, cb)
    agree = (res.indices == bf).all(1).float().mean().item()
    assert agree >= 0.97
    assert res.accuracy(qs.factors) <= (bf == qs.factors).all(1).float().mean().item() + 1e-9


def test_bitflip_queries_decode():
    cb = random_codebooks(2, 30, 1024, 32, seed=4)
    qs = make_queries(cb, 100, seed=3, noise=QueryNoise("bitflip", 0.1))
    assert (qs.queries.sum(-1) == 1).all()
    res = BlockCodeFactorizer(cb, BCFConfig(Tc=0.5, similarity="dot")).factorize(qs.queries)
    # dot similarity tolerates flipped blocks that a min over blocks (linf) cannot.
    assert res.accuracy(qs.factors) >= 0.99


def test_same_seed_same_result_and_sampling_happens():
    cb = random_codebooks(2, 400, 256, 4, seed=0)
    qs = make_queries(cb, 128, seed=1)
    cfg = BCFConfig(T=0.01, A=60, max_iter=40)
    r1 = BlockCodeFactorizer(cb, cfg, seed=7).factorize(qs.queries, batch_size=50)
    r2 = BlockCodeFactorizer(cb, cfg, seed=7).factorize(qs.queries, batch_size=50)
    r3 = BlockCodeFactorizer(cb, cfg, seed=8).factorize(qs.queries, batch_size=50)
    for a, b in zip((r1.indices, r1.iterations, r1.converged), (r2.indices, r2.iterations, r2.converged)):
        assert torch.equal(a, b)
    assert not torch.equal(r1.iterations, r3.iterations)  # the sampler's seed matters


def test_sampling_decodes_repeat_and_do_not_depend_on_the_batching():
    """The default sampler draws per query (seed, query id, draw count) and restarts every call:
    the same object gives the same result twice, at any batch size, for any subset's positions.
    (float64: in float32 a batch-of-one FFT can round differently and flip a threshold decision.)"""
    cb = random_codebooks(2, 400, 256, 4, seed=0)
    qs = make_queries(cb, 96, seed=1)
    fz = BlockCodeFactorizer(cb, BCFConfig(T=0.01, A=60, max_iter=40), seed=7, dtype=torch.float64)
    first = fz.factorize(qs.queries)
    fields = ("indices", "iterations", "converged")
    for again in (fz.factorize(qs.queries), fz.factorize(qs.queries, batch_size=10),
                  fz.factorize(qs.queries, batch_size=1)):
        assert all(torch.equal(getattr(first, k), getattr(again, k)) for k in fields)
    assert first.iterations.float().mean() > 3  # queries did sample (T = 0.01 at M = 400)
    head = fz.factorize(qs.queries[:20])  # same positions 0..19, other queries absent
    assert torch.equal(head.iterations, first.iterations[:20]) and torch.equal(head.indices, first.indices[:20])


def test_random_sampler_draws_per_query_distinct_and_uniform():
    from hdsim.factorizers.base import RandomSampler

    s = RandomSampler(seed=3)
    both = s(torch.tensor([4, 9]), factor=0, M=50, A=10)
    second = s(torch.tensor([9]), factor=1, M=50, A=10)
    s.reset()
    assert torch.equal(s(torch.tensor([9]), 0, 50, 10), both[1:])  # query 9's first draw, alone
    assert torch.equal(s(torch.tensor([4, 9]), 1, 50, 10)[1:], second)  # its second draw, in company
    assert not torch.equal(RandomSampler(seed=4)(torch.tensor([4, 9]), 0, 50, 10), both)
    picks = RandomSampler(seed=0)(torch.arange(4000), 0, 40, 5)
    assert picks.shape == (4000, 5) and all(len(set(r)) == 5 for r in picks.tolist())
    counts = torch.bincount(picks.flatten(), minlength=40).double()  # 500 expected per index
    assert counts.min() > 420 and counts.max() < 580
    chi2 = float(((counts - 500) ** 2 / 500).sum())
    assert chi2 < 80  # 39 degrees of freedom: p < 1e-4 above 80


def test_mix32_is_murmur3s_finalizer():
    from hdsim.factorizers.base import mix32

    def fmix32(h: int) -> int:  # the reference: unbounded Python ints, masked
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF, 123456789]
    assert [mix32(x) for x in xs] == [fmix32(x) for x in xs]
    assert mix32(torch.tensor(xs)).tolist() == [fmix32(x) for x in xs]  # int64 tensors: no overflow


class FirstA:
    """A sampler that records its calls and returns deterministic picks."""

    def __init__(self):
        self.calls = []

    def __call__(self, query_ids, factor, M, A):
        self.calls.append((query_ids.clone(), factor, M, A))
        return (torch.arange(A).unsqueeze(0) + query_ids.unsqueeze(1) * 7) % M


def test_injected_sampler_is_used_with_global_query_ids():
    cb = random_codebooks(2, 300, 256, 4, seed=2)
    qs = make_queries(cb, 40, seed=3)
    sampler = FirstA()
    res = BlockCodeFactorizer(cb, BCFConfig(T=0.02, A=25, max_iter=30), sampler=sampler).factorize(
        qs.queries, batch_size=16)
    assert sampler.calls, "threshold 0.02 at M=300 should force sampling"
    ids = torch.cat([c[0] for c in sampler.calls])
    assert ids.min() >= 0 and ids.max() < 40 and (ids >= 16).any()  # ids are global, not per batch
    assert all(c[2] == 300 and c[3] == 25 for c in sampler.calls)
    again = BlockCodeFactorizer(cb, BCFConfig(T=0.02, A=25, max_iter=30), sampler=FirstA()).factorize(
        qs.queries, batch_size=16)
    assert torch.equal(res.indices, again.indices)


def test_converged_queries_stop_and_batching_does_not_change_decisions():
    cb = random_codebooks(2, 340, 512, 4, seed=9)
    qs = make_queries(cb, 60, seed=4)
    fz = BlockCodeFactorizer(cb, BCFConfig())  # no sampling: decisions are deterministic per query
    whole = fz.factorize(qs.queries)
    ones = fz.factorize(qs.queries, batch_size=1)
    assert torch.equal(whole.indices, ones.indices)
    assert torch.equal(whole.iterations, ones.iterations)
    assert whole.iterations.min() < whole.iterations.max()  # queries stop at different iterations


def test_numpy_baseline_agrees_without_randomness():
    cb = random_codebooks(2, 150, 512, 4, seed=11)
    qs = make_queries(cb, 64, seed=12)
    res = BlockCodeFactorizer(cb, BCFConfig(), dtype=torch.float64).factorize(qs.queries)
    idx, it, conv = numpy_bcf(qs.queries.numpy(), cb.as_numpy(), T=0.0, A=0, Tc=0.9,
                              max_iter=default_max_iter(cb.sizes), seed=0)
    assert np.array_equal(idx, res.indices.numpy())
    assert np.array_equal(it, res.iterations.numpy())


def test_float64_matches_float32_decisions():
    cb = random_codebooks(2, 300, 512, 4, seed=13)
    qs = make_queries(cb, 100, seed=14)
    r32 = BlockCodeFactorizer(cb, BCFConfig()).factorize(qs.queries)
    r64 = BlockCodeFactorizer(cb, BCFConfig(), dtype=torch.float64).factorize(qs.queries)
    assert (r32.indices == r64.indices).all(1).float().mean() >= 0.99
    assert r64.accuracy(qs.factors) == 1.0


def test_max_iter_default_and_cap():
    assert default_max_iter((1155, 1155)) == 577
    assert default_max_iter((10, 10, 10)) == 33
    assert default_max_iter((1, 1)) == 1
    cb = random_codebooks(2, 2000, 256, 4, seed=0)
    qs = make_queries(cb, 20, seed=1)
    res = BlockCodeFactorizer(cb, BCFConfig(max_iter=3)).factorize(qs.queries)
    assert res.iterations.max() <= 3
    assert (~res.converged).any()  # far beyond capacity in 3 iterations


@pytest.mark.parametrize("kwargs,match", [
    (dict(T=-0.1), "T:"), (dict(T=1.0), "T:"), (dict(Tc=0.0), "Tc:"), (dict(Tc=1.5), "Tc:"),
    (dict(A=-1), "A:"), (dict(max_iter=0), "max_iter:"), (dict(max_iter=2.5), "max_iter:"),
    (dict(similarity="cos"), "similarity:"),
])
def test_bad_config_is_a_clear_error(kwargs, match):
    cb = random_codebooks(2, 4, 64, 4, seed=0)
    with pytest.raises(HdsimError, match=match):
        BlockCodeFactorizer(cb, BCFConfig(**kwargs))


def test_dot_mode_ranges_scale_with_B():
    cb = random_codebooks(2, 4, 64, 4, seed=0)
    BlockCodeFactorizer(cb, BCFConfig(T=2.0, Tc=3.6, similarity="dot"))  # fine for dot, B=4
    with pytest.raises(HdsimError, match="Tc:"):
        BlockCodeFactorizer(cb, BCFConfig(Tc=4.5, similarity="dot"))


@pytest.mark.parametrize("args,match", [
    (dict(F=2, M=5, D=510, B=4), "D:"), (dict(F=2, M=0, D=64, B=4), "M:"),
    (dict(F=0, M=5, D=64, B=4), "F:"), (dict(F=2, M=(3,), D=64, B=4), "M:"),
])
def test_bad_codebook_parameters(args, match):
    with pytest.raises(HdsimError, match=match):
        random_codebooks(seed=0, **args)


@pytest.mark.parametrize("make,match", [
    (lambda q: -q, "non-negative"),
    (lambda q: q.masked_fill(torch.zeros_like(q, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True), float("nan")), "NaN"),
    (lambda q: q[:, :, :-1], "shape"),
    (lambda q: q.reshape(-1), "shape"),
    (lambda q: q.numpy(), "torch.Tensor"),
    (lambda q: q[:0], "at least 1 query"),
])
def test_bad_queries_are_clear_errors(make, match):
    cb = random_codebooks(2, 4, 64, 4, seed=0)
    q = make_queries(cb, 3, seed=1).queries
    with pytest.raises(HdsimError, match=match):
        BlockCodeFactorizer(cb).factorize(make(q))


def test_flat_queries_are_accepted():
    cb = random_codebooks(2, 10, 64, 4, seed=0)
    qs = make_queries(cb, 5, seed=1)
    res = BlockCodeFactorizer(cb).factorize(qs.queries.reshape(5, 64))
    assert torch.equal(res.indices, qs.factors)


@requires_cuda
def test_cuda_matches_cpu():
    cb = random_codebooks(2, 1155, 512, 4, seed=0)
    qs = make_queries(cb, 256, seed=1)
    cfg = BCFConfig(T=0.0076, A=238)
    cpu = BlockCodeFactorizer(cb, cfg, seed=3).factorize(qs.queries)
    gpu = BlockCodeFactorizer(cb, cfg, seed=3, device="cuda").factorize(qs.queries)
    same = (cpu.indices == gpu.indices).all(1).float().mean().item()
    assert same >= 0.99
    assert abs(cpu.accuracy(qs.factors) - gpu.accuracy(qs.factors)) <= 0.01
    again = BlockCodeFactorizer(cb, cfg, seed=3, device="cuda").factorize(qs.queries)
    for k in ("indices", "iterations", "converged", "max_similarity"):  # run to run: bit for bit
        assert torch.equal(getattr(gpu, k), getattr(again, k)), k


@pytest.mark.parametrize("batch_size", [0, 2.5, True])
def test_bad_batch_size_is_a_clear_error(batch_size):
    cb = random_codebooks(2, 4, 64, 4, seed=0)
    with pytest.raises(HdsimError, match="^batch_size: must be an integer >= 1"):
        BlockCodeFactorizer(cb).factorize(make_queries(cb, 3, seed=1).queries, batch_size=batch_size)


def test_an_empty_batch_is_the_same_error_for_every_decoder():
    from hdsim.factorizers import SparseResonatorNetwork
    from hdsim.fixed import FixedBCF

    cb = random_codebooks(2, 4, 64, 4, seed=0)
    empty = torch.zeros(0, 64)
    for decode in (BlockCodeFactorizer(cb).factorize, FixedBCF(cb).factorize, SparseResonatorNetwork(cb).factorize,
                   lambda q: bruteforce_decode(q, cb)):
        with pytest.raises(HdsimError, match="^quer(y|ies): expected at least 1 query, got 0$"):
            decode(empty)
