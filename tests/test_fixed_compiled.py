"""The compiled decoder (hdsim.fixed.compiled) against the torch model FixedBCF: conditional sampling
(A > 0) bit for bit with the default LFSRSampler, F = 1, construction from numpy arrays without
torch, and its input errors. (tests/test_fixed.py compares the A = 0 decode and the query words.)"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hdsim.codes import BlockCodebooks, random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers import BCFConfig
from hdsim.fixed import FixedBCF, FixedWidths
from hdsim.fixed.bcf import codevector_positions
from hdsim.lfsr import LFSRSampler
from hdsim.queries import QueryNoise, make_queries

pytest.importorskip("numba", reason="numba is not installed (export extra)")

from hdsim.fixed import compiled  # noqa: E402
from hdsim.fixed.compiled import CompiledFixedBCF, compiled_decoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the model's many small ops: ~10x faster on 2 cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ("indices", "iterations", "converged", "max_similarity")


def mixed_queries(cb, n: int, seed: int) -> torch.Tensor:
    """Exact, noisy (two levels), uniform random and all-zero queries (zero ones sample every step)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([make_queries(cb, n, seed=seed).queries,
                      make_queries(cb, n, seed=seed + 1, noise=QueryNoise("gaussian", 0.05)).queries,
                      make_queries(cb, n, seed=seed + 2, noise=QueryNoise("gaussian", 0.2)).queries,
                      torch.rand(n, cb.B, cb.L, generator=g), torch.zeros(2, cb.B, cb.L)])


def assert_same_decode(model: FixedBCF, dec: CompiledFixedBCF, q) -> list:
    """The model's result and every iteration's (x, a, w) equal the compiled trace; returns the states."""
    states = []
    ref = model.factorize(q, observe=states.append)
    got, (x_tr, a_tr, w_tr) = dec.factorize(q, trace=True)
    for name in RESULTS:
        assert torch.equal(getattr(ref, name), getattr(got, name)), name
    assert x_tr.shape[1] == model.max_iter
    # the untraced decode (linf with T > 0 prunes the similarity there: a_m is no longer read in full)
    # gives the model's results too, on one thread and on two (queries spread over them)
    for threads in (1, 2):
        fast = dec.decode_arrays(q, threads=threads)
        for name, value in zip(RESULTS, fast):
            assert np.array_equal(getattr(ref, name).numpy(), value), (name, threads)
    for state in states:
        ids, i = state.query_ids, state.iteration - 1
        for f, step in enumerate(state.factors):
            m = step.a.shape[1]
            assert np.array_equal(step.a, a_tr[ids, i, f, :m]), (state.iteration, f)
            assert np.array_equal(step.w, w_tr[ids, i, f, :m]), (state.iteration, f)
            assert np.array_equal(step.x, x_tr[ids, i, f]), (state.iteration, f)
    return states


def sampled_steps(states) -> tuple[int, int]:
    """(factor steps that sampled, factor steps in all)."""
    return (sum(int(fs.sampled.sum()) for s in states for fs in s.factors),
            sum(fs.sampled.size for s in states for fs in s.factors))


# (F, M, D, B, config, widths, LFSR seed): A < M (several), A = 1, A = M and A > M, linf and dot, F = 1..3
SAMPLING = [
    (2, 10, 256, 4, BCFConfig(T=0.05, A=3, max_iter=12), FixedWidths(), 1),
    (2, 10, 256, 4, BCFConfig(T=0.05, A=3, max_iter=12), FixedWidths(), 0xDEADBEEF),
    (2, 12, 256, 4, BCFConfig(T=0.05, A=1, max_iter=12), FixedWidths(), 7),
    (2, 6, 256, 4, BCFConfig(T=0.05, A=6, max_iter=10), FixedWidths(), 3),  # A = M: every codevector
    (2, 6, 256, 4, BCFConfig(T=0.05, A=9, max_iter=10), FixedWidths(), 3),  # A > M
    (3, 8, 256, 4, BCFConfig(T=0.03, A=3, Tc=0.7, max_iter=10), FixedWidths(), 12345),
    (2, 20, 240, 3, BCFConfig(T=0.15, A=5, similarity="dot", Tc=2.0, max_iter=12), FixedWidths(8, 8, 10, 12), 5),
    (2, 150, 512, 4, BCFConfig(T=0.01, A=30, Tc=0.6, max_iter=10), FixedWidths.uniform(8), 9),  # int32 words
    (2, 40, 256, 4, BCFConfig(T=0.02, A=7, max_iter=8), FixedWidths.uniform(16), 2),  # int64 words
    (1, 30, 256, 4, BCFConfig(T=0.05, A=4, max_iter=5), FixedWidths(10, 8, 8, 10), 11),  # F = 1, Wq > Wu
    (1, 30, 256, 4, BCFConfig(T=0.05, A=4, max_iter=5), FixedWidths(6, 8, 8, 10), 13),  # F = 1, Wq < Wu
    (2, 10, 256, 4, BCFConfig(T=0.6, A=2, Tc=0.5, max_iter=10), FixedWidths(), 21),  # Tc < T: sampled, never pulled
    (2, (5, 12), 256, 4, BCFConfig(T=0.05, A=5, max_iter=10), FixedWidths(), 8),  # A = M_0 (no draw), A < M_1
    # 9-bit words (a byte from the LFSR tables, then a bit), L = 128 (sparse unbinding of exact queries)
    (2, 300, 512, 4, BCFConfig(T=0.01, A=40, Tc=0.6, max_iter=8), FixedWidths.uniform(8), 77),
]


@pytest.mark.parametrize("F, M, D, B, cfg, widths, seed", SAMPLING)
def test_sampling_decode_matches_the_model_every_iteration(F, M, D, B, cfg, widths, seed):
    cb = random_codebooks(F, M, D, B, seed=seed % 1000)
    model = FixedBCF(cb, cfg, widths, seed=seed)
    dec = compiled_decoder(model)
    assert isinstance(dec, CompiledFixedBCF) and dec.seed == seed
    q = mixed_queries(cb, 8, seed % 100)
    states = assert_same_decode(model, dec, q)
    n_sampled, n_steps = sampled_steps(states)
    assert n_sampled >= max(20, n_steps // 5), (n_sampled, n_steps)  # the LFSR path ran, often
    # decoded in slices the query ids (row positions) restart from 0, in the model and here
    assert_same_decode(model, dec, q[5:12])


@pytest.mark.parametrize("T, Tc, seed", [(0.05, None, 4), (0.6, 0.5, 5)])
def test_the_pruned_linf_similarity_without_sampling_matches_the_model(T, Tc, seed):
    """A = 0, linf, T > 0: the untraced decode reads only the codevectors whose partial min is still
    >= T, and every a_m in full where none is (then every similarity is a weight)."""
    cb = random_codebooks(2, 40, 256, 4, seed=seed)
    model = FixedBCF(cb, BCFConfig(T=T, A=0, Tc=Tc, max_iter=8), FixedWidths(), seed=seed)
    dec = compiled_decoder(model)
    assert dec.dp.T_int > 0
    states = assert_same_decode(model, dec, mixed_queries(cb, 8, seed))
    maxima = [int(fs.a[k].max()) for s in states for fs in s.factors for k in range(fs.a.shape[0])]
    assert min(maxima) < dec.dp.T_int <= max(maxima)  # both branches: some a_m >= T, and none


def _random_settings(k: int):
    rng = np.random.default_rng(k)
    F, B = int(rng.integers(1, 4)), int(rng.choice([2, 4]))
    M = tuple(int(m) for m in rng.integers(2, 25, F))
    sim = str(rng.choice(["linf", "dot"]))
    top = 1.0 if sim == "linf" else float(B)
    T, Tc = float(rng.uniform(0.0, 0.12)) * top, float(rng.uniform(0.4, 0.95)) * top
    cfg = BCFConfig(T=T, A=int(rng.integers(1, max(M) + 3)), Tc=Tc, max_iter=int(rng.integers(2, 9)), similarity=sim)
    widths = FixedWidths(*(int(b) for b in rng.integers(6, 13, 3)), 12)
    return F, M, B * int(rng.choice([8, 32])), B, cfg, widths, int(rng.integers(1, 2 ** 32))


@pytest.mark.parametrize("k", range(16))
def test_sampling_decode_matches_the_model_on_random_settings(k):
    F, M, D, B, cfg, widths, seed = _random_settings(k)
    cb = random_codebooks(F, M, D, B, seed=k)
    model = FixedBCF(cb, cfg, widths, seed=seed)
    states = assert_same_decode(model, compiled_decoder(model), mixed_queries(cb, 6, k))
    assert sampled_steps(states)[0] > 0


def test_the_draws_depend_on_the_seed_and_the_query_position():
    """A wrong seed or query id would go unnoticed if the draws did not change the decode: they do."""
    cb = random_codebooks(2, 10, 256, 4, seed=1)
    cfg = BCFConfig(T=0.05, A=3, max_iter=12)
    q = mixed_queries(cb, 8, 1)
    _, (_, _, w1) = CompiledFixedBCF(FixedBCF(cb, cfg, seed=1)).factorize(q, trace=True)
    _, (_, _, w2) = CompiledFixedBCF(FixedBCF(cb, cfg, seed=2)).factorize(q, trace=True)
    assert not np.array_equal(w1, w2)
    zero = torch.zeros(2, 4, 64)  # two identical queries: only their ids differ
    _, (_, _, wz) = CompiledFixedBCF(FixedBCF(cb, cfg, seed=1)).factorize(zero, trace=True)
    assert not np.array_equal(wz[0], wz[1])
    assert (wz[0, 0, 0] == 1).sum() == 3  # A codevectors drawn, weight 1


def test_batched_model_decode_equals_the_compiled_decode_query_by_query():
    """``FixedBCF.factorize(batch_size=b)`` decodes slices, yet query ``n`` keeps drawing from the LFSR
    of its position ``n`` in the whole batch: every slicing gives the compiled decoder's results (it
    decodes query by query, seeded by position), and each call replays the draws (the sampler restarts)."""
    cb = random_codebooks(2, 10, 256, 4, seed=2)
    model = FixedBCF(cb, BCFConfig(T=0.05, A=3, max_iter=12), FixedWidths(), seed=3)
    q = mixed_queries(cb, 3, 2)  # 14 queries: exact, noisy, random, zero
    dec = compiled_decoder(model)
    assert dec.model is model  # the model it compiles
    want = dec.factorize(q)
    for batch in (None, 1, 4, 13, 20):
        got = model.factorize(q, batch_size=batch)
        for name in RESULTS:
            assert torch.equal(getattr(got, name), getattr(want, name)), (batch, name)
    # the oracle has power: decoded alone (ids restarting at 0) the later queries draw otherwise
    alone = model.factorize(q[4:])
    assert not all(torch.equal(getattr(alone, name), getattr(want, name)[4:]) for name in RESULTS)
    for bad in (0, 2.5, True):
        with pytest.raises(HdsimError, match=re.escape(f"batch_size: must be an integer >= 1, got {bad!r}")):
            model.factorize(q, batch_size=bad)


def test_threads_single_queries_and_the_first_querys_errors():
    """Any thread count (``None``: numba's default) gives the model's results and leaves numba's setting
    as it was; a batch of one float query (quantized in the kernel) or one integer query decodes like
    the model; a bad first query (id 0) is reported as query 0."""
    import numba

    cb = random_codebooks(2, 10, 256, 4, seed=5)
    model = FixedBCF(cb, BCFConfig(T=0.05, A=2, max_iter=10), FixedWidths(), seed=4)
    dec = compiled_decoder(model)
    q = mixed_queries(cb, 2, 5)
    ref = model.factorize(q)
    before = numba.get_num_threads()
    for threads in (None, 1, 2):
        for name, value in zip(RESULTS, dec.decode_arrays(q, threads=threads)):
            assert np.array_equal(getattr(ref, name).numpy(), value), (name, threads)
        assert numba.get_num_threads() == before
    for bad in (0, 1.5, True):
        msg = re.escape("threads: must be an integer in [1, ") + r"\d+" + re.escape(f"], got {bad!r}")
        _one_line_error(lambda bad=bad: dec.decode_arrays(q, threads=bad), "^" + msg + "$")
    for i in (2, 5):  # an exact and a noisy query, alone: its LFSR is query 0's
        one = model.factorize(q[i:i + 1])
        for queries in (q[i:i + 1], q[i:i + 1].numpy(), model.prepare_queries(q[i:i + 1]).numpy()):
            for name, value in zip(RESULTS, dec.decode_arrays(queries)):
                assert np.array_equal(getattr(one, name).numpy(), value), (name, i)
    words = dec.prepare_queries(q)  # in the kernel's word type (int32 at 8-bit words)
    assert words.dtype == dec.dtype == np.int32 and np.array_equal(words, model.prepare_queries(q).numpy())
    bad = q.clone()
    bad[0, 1, 7] = float("nan")
    for fn in (dec.decode_arrays, dec.prepare_queries):
        _one_line_error(lambda fn=fn: fn(bad), r"^query: contains NaN or infinite values \(query 0\)$")
    bad[0, 1, 7] = -0.25
    for fn in (dec.decode_arrays, dec.prepare_queries):
        _one_line_error(lambda fn=fn: fn(bad), r"^query: GSBC entries must be non-negative, found -0\.25 \(query 0\)$")


def test_any_model_without_a_sampler_compiles_when_it_does_not_sample():
    """``CompiledFixedBCF(model)`` reads the model's codebooks, config and widths; a sampler only where
    ``A > 0``. An object with no ``sampler`` attribute compiles at A = 0 (the model's decode), and
    ``compiled_decoder`` declines it at A > 0."""
    from types import SimpleNamespace

    cb = random_codebooks(2, 10, 256, 4, seed=6)
    q = mixed_queries(cb, 2, 6)
    bare = SimpleNamespace(codebooks=cb, config=BCFConfig(T=0.05, max_iter=8), widths=FixedWidths())
    want = FixedBCF(cb, bare.config, bare.widths).factorize(q)
    got = CompiledFixedBCF(bare).factorize(q)
    for name in RESULTS:
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert compiled_decoder(SimpleNamespace(codebooks=cb, config=BCFConfig(T=0.05, A=2), widths=FixedWidths())) is None


def test_without_numba_the_model_keeps_its_own_decode(monkeypatch):
    """numba missing (its import fails): ``numba_available()`` is false and ``compiled_decoder`` gives
    ``None``, so callers keep the torch model."""
    model = FixedBCF(random_codebooks(2, 10, 256, 4, seed=0))
    assert compiled.numba_available() is True
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    assert compiled.numba_available() is False
    assert compiled_decoder(model) is None


def test_from_arrays_equals_the_model_built_decoder():
    cb = random_codebooks(3, (9, 14, 5), 384, 4, seed=4)
    cfg, widths = BCFConfig(T=0.04, A=4, Tc=0.8, max_iter=9), FixedWidths(9, 8, 8, 10)
    model = FixedBCF(cb, cfg, widths, seed=77)
    arrays = CompiledFixedBCF.from_arrays([X.numpy().astype(np.int32) for X in cb.indices], cb.L, cfg, widths,
                                          seed=77)
    assert arrays.model is None and arrays.max_iter == model.max_iter
    assert (arrays.dp.T_int, arrays.dp.Tc_int) == (model.dp.T_int, model.dp.Tc_int)
    assert arrays.dp == model.dp  # every derived width and constant, the configuration it describes too
    q = mixed_queries(cb, 6, 3)
    assert_same_decode(model, arrays, q)
    a, b = arrays.decode_arrays(q.numpy(), trace=True), compiled_decoder(model).decode_arrays(q, trace=True)
    for u, v in zip(a[:4] + a[4], b[:4] + b[4]):
        assert np.array_equal(u, v)
    words = model.prepare_queries(q)  # integer queries: the same decode
    for got, want in zip(arrays.decode_arrays(words.numpy().astype(np.uint16)), a[:4]):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("F, M, D, B", [(2, 10, 256, 4), (3, (7, 30, 3), 96, 3), (1, 200, 128, 4), (2, 5, 8, 2)])
def test_numpy_initial_estimates_and_positions_equal_the_model(F, M, D, B):
    cb = random_codebooks(F, M, D, B, seed=D)  # M > L too: repeated offsets in a block
    X = [x.numpy() for x in cb.indices]
    for widths in (FixedWidths(), FixedWidths(6, 5, 8, 4), FixedWidths.uniform(16)):
        model = FixedBCF(cb, BCFConfig(), widths)
        assert np.array_equal(compiled.initial_estimates(X, cb.L, widths), model.initial_estimates(1)[0].numpy())
    for x, (pos, count), (tpos, _) in zip(X, compiled.codevector_positions(X), codevector_positions(cb)):
        for b in range(B):  # oracle: the sorted set of the block's offsets, zero-padded
            want = sorted(set(x[:, b].tolist()))
            assert count[b] == len(want) and pos[b, :len(want)].tolist() == want and not pos[b, len(want):].any()
        assert np.array_equal(pos, tpos.numpy())  # the model's tensors are the same positions


def test_from_arrays_decodes_without_importing_torch(tmp_path):
    cb = random_codebooks(2, 12, 256, 4, seed=2)
    cfg, widths, seed = BCFConfig(T=0.05, A=3, max_iter=10), FixedWidths(), 99
    q = mixed_queries(cb, 5, 4)
    model = FixedBCF(cb, cfg, widths, seed=seed)
    words = model.prepare_queries(q).numpy()
    np.savez(tmp_path / "in.npz", X0=cb.indices[0].numpy(), X1=cb.indices[1].numpy(), q=q.numpy(), words=words)
    code = f"""
import json, sys
import numpy as np
from hdsim.factorizers.config import BCFConfig
from hdsim.fixed.compiled import CompiledFixedBCF
from hdsim.fixed.widths import FixedWidths
z = np.load(sys.argv[1])
dec = CompiledFixedBCF.from_arrays([z["X0"], z["X1"]], {cb.L}, {cfg!r}, {widths!r}, seed={seed})
out = {{}}
for kind in ("q", "words"):
    idx, it, conv, amax = dec.decode_arrays(z[kind])
    out[kind] = [idx.tolist(), it.tolist(), conv.tolist(), amax.tolist()]
assert "torch" not in sys.modules, "torch imported"
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.npz")], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    ref = model.factorize(q)
    want = [ref.indices.tolist(), ref.iterations.tolist(), ref.converged.tolist(), ref.max_similarity.tolist()]
    out = json.loads(proc.stdout)
    assert out["q"] == want and out["words"] == want
    assert ref.iterations.max() > 1


def test_compiled_decoder_declines_only_a_custom_sampler_with_sampling():
    cb = random_codebooks(2, 10, 256, 4, seed=0)

    class Fixed:  # any Sampler: a custom one cannot be compiled
        def __call__(self, ids, factor, M, A):
            return torch.arange(A).expand(len(ids), A)

    class Sub(LFSRSampler):  # might draw otherwise
        pass

    for sampler in (Fixed(), Sub(3)):
        model = FixedBCF(cb, BCFConfig(T=0.01, A=4), sampler=sampler)
        assert compiled_decoder(model) is None
        with pytest.raises(HdsimError, match="^model: conditional sampling"):
            CompiledFixedBCF(model)
        assert isinstance(compiled_decoder(FixedBCF(cb, BCFConfig(), sampler=sampler)), CompiledFixedBCF)  # A = 0
    assert compiled_decoder(FixedBCF(cb, BCFConfig(T=0.01, A=4), seed=5)).seed == 5


def _one_line_error(fn, match: str) -> None:
    with pytest.raises(HdsimError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_from_arrays_refusals_name_the_type_given_and_decode_arrays_returns_traces_only_when_asked():
    """A config or widths of the wrong type is refused naming that object's type (a message naming
    another type would mislead); ``decode_arrays`` returns the four results, with the traces as a
    fifth part only with ``trace=True`` (callers unpack them; ``zip`` over the results would hide
    an extra part)."""
    X = [np.zeros((3, 2), np.int64), np.ones((3, 2), np.int64)]
    _one_line_error(lambda: CompiledFixedBCF.from_arrays(X, 8, {"T": 0.1}, FixedWidths()),
                    r"^config: expected a BCFConfig, got dict$")
    _one_line_error(lambda: CompiledFixedBCF.from_arrays(X, 8, BCFConfig(), (8, 8, 8, 10)),
                    r"^widths: expected a FixedWidths, got tuple$")
    cb = random_codebooks(2, (5, 6), 64, 4, seed=3)
    dec = CompiledFixedBCF.from_arrays([ix.numpy() for ix in cb.indices], cb.L, BCFConfig(A=2), FixedWidths(), seed=5)
    q = mixed_queries(cb, 3, 1).numpy()
    plain, traced = dec.decode_arrays(q), dec.decode_arrays(q, trace=True)
    assert len(plain) == 4 and len(traced) == 5 and len(traced[4]) == 3
    for u, v in zip(plain, traced[:4]):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("indices, L, match", [
    ([], 8, r"^indices: expected at least one codebook"),
    (np.zeros((3, 2), np.int64), 8, r"^indices\[0\]: expected a non-empty \(M, B\) integer array"),
    ([np.zeros((3, 2, 1), np.int64)], 8, r"^indices\[0\]: expected a non-empty \(M, B\)"),
    ([np.zeros((0, 2), np.int64)], 8, r"^indices\[0\]: expected a non-empty"),
    ([np.zeros((3, 2), np.float32)], 8, r"^indices\[0\]: .*dtype float32"),
    ([np.zeros((3, 2), np.int64), np.zeros((3, 3), np.int64)], 8, r"^indices\[1\]: expected B=2 blocks"),
    ([np.zeros((3, 2), np.int64), np.full((3, 2), 8)], 8, r"^indices\[1\]: offsets must be in \[0, 8\).*found 8"),
    ([np.full((3, 2), -1)], 8, r"^indices\[0\]: offsets must be in \[0, 8\).*found -1"),
    ("ab", 8, r"^indices: expected a sequence"),
    ([np.zeros((3, 2), np.int64)], 0, r"^L: must be an integer >= 1"),
    ([np.zeros((3, 2), np.int64)], 8.0, r"^L: must be an integer >= 1"),
])
def test_from_arrays_rejects_bad_codebooks(indices, L, match):
    _one_line_error(lambda: CompiledFixedBCF.from_arrays(indices, L, BCFConfig(), FixedWidths()), match)


@pytest.mark.parametrize("kw, match", [
    (dict(config=BCFConfig(T=1.5)), r"^T: threshold must be in"),
    (dict(config=BCFConfig(A=-1)), r"^A: sampling width"),
    (dict(config={"T": 0.1}), r"^config: expected a BCFConfig"),
    (dict(widths=FixedWidths(1, 8, 8, 10)), r"^widths.query"),
    (dict(widths=FixedWidths(8, 8, 2, 10)), r"^widths.unbound: Tc="),
    (dict(widths=(8, 8, 8, 10)), r"^widths: expected a FixedWidths"),
    (dict(seed=0), r"^seed: must be nonzero"),
    (dict(seed=2 ** 32), r"^seed: must be in \[1, 2\^32 - 1\]"),
])
def test_from_arrays_rejects_bad_settings(kw, match):
    args = dict(config=BCFConfig(), widths=FixedWidths(), seed=1) | kw
    X = [np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2], [3, 0]])]
    _one_line_error(lambda: CompiledFixedBCF.from_arrays(X, 4, **args), match)


def test_bad_queries_are_one_line_errors_like_the_model():
    cb = random_codebooks(2, 10, 256, 4, seed=0)
    model = FixedBCF(cb, BCFConfig(T=0.01, A=2), FixedWidths.uniform(8))
    dec = CompiledFixedBCF.from_arrays(cb.as_numpy(), cb.L, model.config, model.widths)
    over = np.full((2, 4, 64), 255, np.int64)
    over[1, 2, 3] = 256
    for q in (over, over.astype(np.uint16), torch.from_numpy(over), -over.astype(np.int32)):
        msg = r"^query: integer entries must be in \[0, 255\] for 8-bit words$"
        _one_line_error(lambda: dec.decode_arrays(q), msg)
        _one_line_error(lambda: model.factorize(torch.as_tensor(q)), msg)
    ok = np.full((2, 256), 255, np.int64)  # the top word is allowed, in either shape, as bool too
    assert np.array_equal(dec.decode_arrays(ok)[0], model.factorize(torch.from_numpy(ok)).indices.numpy())
    assert np.array_equal(dec.prepare_queries(ok > 0), model.prepare_queries(torch.from_numpy(ok > 0)).numpy())
    _one_line_error(lambda: dec.decode_arrays(np.zeros((2, 4, 63), np.int64)), r"^query: expected shape \(N, 256\)")
    _one_line_error(lambda: dec.decode_arrays(np.zeros((0, 256), np.float32)), r"^query: expected at least 1 query")
    _one_line_error(lambda: dec.decode_arrays([[0.0] * 256]), r"^query: expected a torch.Tensor or numpy array")
    _one_line_error(lambda: dec.decode_arrays(np.zeros((1, 256), complex)), r"^query: expected float or integer")
    nan = np.ones((3, 256))
    nan[2, 5] = np.nan
    _one_line_error(lambda: dec.decode_arrays(nan), r"^query: contains NaN or infinite values \(query 2\)")


def test_queries_of_no_number_type_are_refused_naming_their_dtype():
    """Neither float nor integer (nor bool): one message naming the dtype, for tensors and arrays alike."""
    X = [np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2], [3, 0]])]
    dec = CompiledFixedBCF.from_arrays(X, 4, BCFConfig(), FixedWidths())
    assert dec.seed == 1  # the default seed, FixedBCF's (docs/fixed_point.md: from_arrays(..., seed=1))
    cases = [(torch.zeros(1, 2, 4, dtype=torch.complex64), "torch.complex64"),
             (np.zeros((1, 8), complex), "complex128"), (np.zeros((1, 2, 4), object), "object"),
             (np.zeros((1, 8), "datetime64[s]"), "datetime64[s]")]
    for q, dtype in cases:
        for fn in (dec.decode_arrays, dec.prepare_queries):
            msg = f"query: expected float or integer entries, got dtype {dtype}"
            _one_line_error(lambda fn=fn, q=q: fn(q), "^" + re.escape(msg) + "$")


@pytest.mark.parametrize("preset,A,noise", [("pcm-default", 0, 0.0), ("pcm-chip", 0, 0.01), ("pcm-chip", 3, 0.02),
                                            ("ideal-periphery", 0, 0.0)])
def test_the_crossbar_decode_equals_the_model_with_its_perturbation_bit_for_bit(preset, A, noise):
    from hdsim.imc import FixedPointPerturbation
    from hdsim.imc.fixed_crossbar import FixedPointCrossbar
    from hdsim.queries import QueryNoise

    cb = random_codebooks(F=2, M=24, D=256, B=4, seed=1)
    qs = make_queries(cb, 48, seed=2, noise=QueryNoise("gaussian", noise) if noise else QueryNoise())
    cfg, widths = BCFConfig(T=0.4, A=A, Tc=0.75 * 4, similarity="dot", max_iter=25), FixedWidths()
    states: list = []
    ref = FixedBCF(cb, cfg, widths, seed=5).factorize(
        qs.queries, perturb=FixedPointPerturbation(cb, widths, preset, t=20.0, seed=3, record=False),
        observe=states.append)
    X = [x.numpy() for x in cb.indices]
    xb = FixedPointCrossbar(X, cb.L, widths.unbound, preset, t=20.0, seed=3)
    idx, iters, conv, amax, (x_tr, a_tr, w_tr) = CompiledFixedBCF.from_arrays(X, cb.L, cfg, widths, seed=5) \
        .decode_arrays(qs.queries.numpy(), trace=True, crossbar=xb)
    for got, want in ((idx, ref.indices), (iters, ref.iterations), (conv, ref.converged), (amax, ref.max_similarity)):
        np.testing.assert_array_equal(got, want.numpy())
    steps = 0
    for st in states:  # every iteration's perturbed similarities, weights and estimates
        for f, step in enumerate(st.factors):
            M = step.a.shape[1]
            np.testing.assert_array_equal(a_tr[st.query_ids, st.iteration - 1, f, :M], step.a)
            np.testing.assert_array_equal(w_tr[st.query_ids, st.iteration - 1, f, :M], step.w)
            np.testing.assert_array_equal(x_tr[st.query_ids, st.iteration - 1, f], step.x)
            steps += len(st.query_ids)
    assert steps >= 4 * 48  # query-factor steps compared
    if preset != "ideal-periphery":  # the crossbar really moved the similarities
        exact = CompiledFixedBCF.from_arrays(X, cb.L, cfg, widths, seed=5).decode_arrays(qs.queries.numpy())
        assert not np.array_equal(exact[3], amax)


def test_a_crossbar_of_other_codebooks_or_similarity_is_refused():
    from hdsim.imc.fixed_crossbar import FixedPointCrossbar

    cb = random_codebooks(F=2, M=8, D=64, B=4, seed=1)
    X = [x.numpy() for x in cb.indices]
    xb = FixedPointCrossbar(X, cb.L, 8, "pcm-default")
    q = make_queries(cb, 2, seed=0).queries.numpy()
    with pytest.raises(HdsimError, match="^crossbar: expected a hdsim.imc.fixed_crossbar.FixedPointCrossbar, got "
                                         "list$"):
        CompiledFixedBCF.from_arrays(X, cb.L, BCFConfig(similarity="dot"), FixedWidths(), 1).decode_arrays(
            q, crossbar=[xb])
    with pytest.raises(HdsimError, match="^crossbar: a crossbar computes the dot similarity"):
        CompiledFixedBCF.from_arrays(X, cb.L, BCFConfig(), FixedWidths(), 1).decode_arrays(q, crossbar=xb)
    with pytest.raises(HdsimError, match="^crossbar: built for M=\\[8, 8\\], Wu=8"):
        CompiledFixedBCF.from_arrays(X, cb.L, BCFConfig(similarity="dot"), FixedWidths(8, 8, 9, 10), 1) \
            .decode_arrays(q, crossbar=xb)


def test_bench_fixed_decodes_on_the_compiled_twin_with_the_models_results():
    """hdsim bench fixed with sampling on: the compiled decode reports what the torch model reports."""
    from hdsim.bench.fixed import FixedBenchConfig, run_fixed_bench

    base = FixedBenchConfig(D=256, M=60, F=2, T=0.02, A=6, Tc=0.6, max_iter=40, queries=96, batch=32, seed=3,
                            noise="gaussian", noise_level=0.02)
    fast = run_fixed_bench(base)
    slow = run_fixed_bench(FixedBenchConfig(**{**base.__dict__, "compiled": False}))
    assert fast["fixed_decoder"] == "CompiledFixedBCF" and slow["fixed_decoder"] == "FixedBCF"
    for k in ("accuracy", "factor_accuracy", "agreement_with_float", "iteration_agreement", "mean_iterations",
              "converged"):
        assert fast[k] == slow[k], k
    assert fast["converged"] < 1.0 or fast["mean_iterations"] > 1  # a problem where the decode works
    # two numba threads and alternating repeats: the same decisions (per-query LFSR registers), a time per run
    two = run_fixed_bench(FixedBenchConfig(**{**base.__dict__, "threads": 2, "repeats": 2}))
    for k in ("accuracy", "factor_accuracy", "agreement_with_float", "iteration_agreement", "mean_iterations"):
        assert two[k] == fast[k], k
    assert two["threads"] == 2 and len(two["seconds"]) == len(two["float_seconds"]) == 2
    with pytest.raises(HdsimError, match="^repeats: must be an integer >= 1"):
        run_fixed_bench(FixedBenchConfig(**{**base.__dict__, "repeats": 0}))


@pytest.mark.parametrize("Wx, expected", [
    # Wx = 2: M = 1 gives 2^Wx = 4, saturated to 3; s = 4 of M = 5 gives 3.2 -> 3, the word's top
    # without saturation; s = 1 of 5 gives 0.8 -> 0
    (2, [[[3, 0, 0, 0], [0, 3, 0, 0]], [[3, 0, 0, 0], [0, 3, 0, 0]]]),
    # Wx = 8: 256 saturated to 255; 4 * 1638 >> 5 = 204, 1638 >> 5 = 51
    (8, [[[255, 0, 0, 0], [0, 255, 0, 0]], [[204, 51, 0, 0], [51, 204, 0, 0]]]),
])
def test_initial_estimates_at_the_estimate_words_top_by_hand(Wx, expected):
    """The initial estimates where normalization reaches the word's top, derived by hand: x =
    min((s R) >> (p + G - Wx), 2^Wx - 1), R = floor(2^(p+G) / M), p = bit_length(M), G = 10.
    Factor 0 has one codevector (s = S = 1: p = 1, R = 2^11, 2^11 >> (11 - Wx) = 2^Wx, one above
    the word); factor 1 has five, four of them at one offset per block (p = 3, R = floor(8192 / 5)
    = 1638). Random codebooks never put every codevector, or nearly every one, on one offset, so
    no other test reaches the saturation; the numpy twin and the model must both give these."""
    X0 = np.array([[0, 1]])
    X1 = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [1, 0]])
    widths = FixedWidths(8, Wx, 8, 10)
    assert compiled.initial_estimates([X0, X1], 4, widths).tolist() == expected
    cb = BlockCodebooks((torch.from_numpy(X0), torch.from_numpy(X1)), 4)
    model = FixedBCF(cb, BCFConfig(T=0.1, A=0, max_iter=4), widths, seed=1)
    assert model.initial_estimates(1)[0].tolist() == expected


@pytest.mark.parametrize("widths, M, similarity, bits, dtype", [
    # (acc = max(Wq, Wu) + Wx, a = Wu [+ clog2 B for dot], s = a + clog2(M + 1)), by hand
    (FixedWidths(8, 8, 8, 10), 10, "linf", (16, 8, 12), np.int32),
    (FixedWidths(15, 14, 15, 14), 10, "linf", (29, 15, 19), np.int32),  # acc at the int32 limit
    (FixedWidths(15, 15, 15, 14), 10, "linf", (30, 15, 19), np.int64),  # one bit past it
    (FixedWidths(8, 4, 20, 3), 511, "linf", (24, 20, 29), np.int32),  # s at the limit
    (FixedWidths(8, 4, 20, 3), 512, "linf", (24, 20, 30), np.int64),  # s alone past it
    (FixedWidths(8, 4, 18, 3), 512, "dot", (22, 20, 30), np.int64),  # dot: a = Wu + 2 at B = 4
])
def test_the_compiled_word_type_is_int32_exactly_while_every_signal_leaves_two_bits(widths, M, similarity, bits,
                                                                                     dtype):
    """The kernel's words are int32 while the widest signal of the datapath (unbinding accumulator,
    similarity, bundle sum) plus two bits of headroom (the sign and a spare bit) fits int32's 31
    value bits, i.e. up to 29-bit signals, and int64 beyond. Each case's widths are derived by hand
    from the datapath's rules (docs/fixed_point.md); the bundle sum decides alone in the last two."""
    cb = random_codebooks(2, M, 256, 4, seed=1)
    Tc = 0.9 if similarity == "linf" else 3.0
    dec = CompiledFixedBCF.from_arrays([X.numpy() for X in cb.indices], cb.L,
                                       BCFConfig(T=0.05, A=0, Tc=Tc, similarity=similarity), widths)
    assert (dec.dp.acc_bits, dec.dp.a_bits, dec.dp.s_bits) == bits
    assert dec.dtype is dtype and dec.x0.dtype == dtype
