"""Identities of the blockwise algebra (SPEC section 2), example-based and property-based."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hdsim import functional as hf
from hdsim.codes import random_codebooks, seeded_generator

# 40 examples per property, no deadline; set per test: loading a profile here would replace the
# suite's derandomized one (tests/conftest.py) for every module after this one
ci = settings(max_examples=40, deadline=None)


def direct_conv(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z[b, l] = sum_j x[b, j] y[b, (l - j) mod L], written out (the SPEC formula)."""
    L = x.shape[-1]
    z = torch.zeros_like(x)
    for l in range(L):
        for j in range(L):
            z[..., l] += x[..., j] * y[..., (l - j) % L]
    return z


def direct_corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    L = x.shape[-1]
    z = torch.zeros_like(x)
    for l in range(L):
        for j in range(L):
            z[..., l] += x[..., (l + j) % L] * y[..., j]
    return z


@st.composite
def gsbc(draw, B=None, L=None, n=2):
    B = draw(st.integers(1, 4)) if B is None else B
    L = draw(st.integers(2, 9)) if L is None else L
    seed = draw(st.integers(0, 2**31 - 1))
    g = seeded_generator(seed)
    x = torch.rand(n, B, L, generator=g, dtype=torch.float64)
    x = x * (torch.rand(n, B, L, generator=g, dtype=torch.float64) < 0.6)  # some exact zeros
    return hf.block_normalize(x)


@ci
@given(st.data())
def test_bind_unbind_match_spec_formulas(data):
    x = data.draw(gsbc())
    y = data.draw(gsbc(B=x.shape[1], L=x.shape[2]))
    torch.testing.assert_close(hf.bind(x, y), direct_conv(x, y), atol=1e-12, rtol=0)
    torch.testing.assert_close(hf.unbind(x, y), direct_corr(x, y), atol=1e-12, rtol=0)


@ci
@given(st.integers(1, 6), st.integers(2, 64), st.integers(0, 10_000))
def test_unbind_inverts_bind_on_sbcs(B, L, seed):
    g = seeded_generator(seed)
    a, b = torch.randint(0, L, (2, 5, B), generator=g)
    xa, xb = hf.sbc_to_dense(a, L, torch.float64), hf.sbc_to_dense(b, L, torch.float64)
    bound = hf.bind(xa, xb)
    assert torch.equal(hf.dense_to_sbc(bound), hf.bind_sbc(a, b, L))
    assert torch.equal(hf.dense_to_sbc(hf.unbind(bound, xb)), a)
    assert torch.equal(hf.unbind_sbc(hf.bind_sbc(a, b, L), b, L), a)
    torch.testing.assert_close(hf.unbind(bound, xb), xa, atol=1e-12, rtol=0)


@ci
@given(st.data())
def test_normalization_is_kept_by_bind_and_unbind(data):
    x = data.draw(gsbc())
    y = data.draw(gsbc(B=x.shape[1], L=x.shape[2]))
    for z in (hf.bind(x, y), hf.unbind(x, y)):
        torch.testing.assert_close(z.sum(-1), x.sum(-1) * y.sum(-1), atol=1e-12, rtol=0)


@ci
@given(st.data())
def test_linf_equals_min_gather_form(data):
    u = data.draw(gsbc(n=3))
    B, L = u.shape[1:]
    cb = torch.randint(0, L, (7, B), generator=seeded_generator(data.draw(st.integers(0, 999))))
    torch.testing.assert_close(hf.similarity(u, cb, "linf"),
                               hf.linf_similarity_dense(u, hf.sbc_to_dense(cb, L, u.dtype)),
                               atol=1e-12, rtol=0)


@ci
@given(st.data())
def test_bundle_sbc_equals_dense_bundle(data):
    B, L = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 16))
    g = seeded_generator(data.draw(st.integers(0, 999)))
    cb = torch.randint(0, L, (9, B), generator=g)
    w = torch.rand(3, 9, generator=g, dtype=torch.float64) * (torch.rand(3, 9, generator=g) < 0.5)
    z = hf.bundle_sbc(cb, w, L)
    torch.testing.assert_close(z, hf.bundle(hf.sbc_to_dense(cb, L, torch.float64), w), atol=1e-12, rtol=0)
    sums = z.sum(-1)
    nonzero = w.sum(-1) > 0
    torch.testing.assert_close(sums[nonzero], torch.ones_like(sums[nonzero]))
    assert torch.all(sums[~nonzero] == 0)


def test_block_normalize_keeps_zero_blocks_and_normalizes_the_rest():
    x = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 2.0]]])
    z = hf.block_normalize(x)
    assert torch.equal(z[0, 0], torch.zeros(3))
    torch.testing.assert_close(z[0, 1], torch.tensor([0.25, 0.25, 0.5]))


def test_dot_similarity_counts_matching_entries():
    u = hf.sbc_to_dense(torch.tensor([[1, 2, 3, 0]]), 4)
    cb = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0], [0, 0, 0, 1]])
    assert hf.similarity(u, cb, "dot").tolist() == [[4.0, 3.0, 0.0]]
    assert hf.similarity(u, cb, "linf").tolist() == [[1.0, 0.0, 0.0]]


def test_similarity_rejects_unknown_mode():
    with pytest.raises(ValueError, match="similarity mode"):
        hf.similarity(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), "cos")


def test_multibind_is_associative_product():
    cb = random_codebooks(3, 4, 64, 4, seed=3)
    idx = torch.tensor([[1, 2, 3]])
    xs = torch.stack([hf.sbc_to_dense(cb.indices[f][idx[:, f]], cb.L) for f in range(3)], dim=1)
    assert torch.equal(hf.dense_to_sbc(hf.multibind(xs)), cb.product(idx))


def test_gsbc_shape_views_tensors_and_arrays_alike_and_names_bad_shapes():
    import numpy as np

    from hdsim.codes import gsbc_shape
    from hdsim.errors import HdsimError

    for q in (torch.arange(24.0).reshape(2, 12), torch.arange(24.0).reshape(2, 12).numpy()):
        v = gsbc_shape(q, 3, 4)
        assert type(v) is type(q) and tuple(v.shape) == (2, 3, 4) and float(v[1, 2, 3]) == 23.0
        assert tuple(gsbc_shape(q[0], 3, 4).shape) == (1, 3, 4)  # a single query
    for bad in (torch.zeros(2, 13), np.zeros((2, 4, 3)), torch.zeros(2, 3, 4, 1)):
        with pytest.raises(HdsimError, match=r"query: expected shape \(N, 12\) or \(N, 3, 4\)"):
            gsbc_shape(bad, 3, 4)
    with pytest.raises(HdsimError, match="torch.Tensor or numpy array"):
        gsbc_shape([0.0] * 12, 3, 4)


def test_multibind_of_one_and_two_and_an_odd_block_length():
    """Mutation-found gaps: K = 1 returns the vector itself (no FFT round trip: exact), K = 2 is one
    bind, and an odd L keeps its length (irfft needs n = L)."""
    g = seeded_generator(4)
    x = torch.rand(3, 2, 4, 5, generator=g, dtype=torch.float64)  # (N, K, B, L=5)
    assert torch.equal(hf.multibind(x[:, :1]), x[:, 0])
    torch.testing.assert_close(hf.multibind(x[:, :2]), direct_conv(x[:, 0], x[:, 1]))
    torch.testing.assert_close(hf.multibind(x[:, :2]), hf.bind(x[:, 0], x[:, 1]))


def test_defaults_of_bundle_and_similarity():
    """``bundle`` without weights weighs every vector 1; ``similarity`` defaults to ``linf``."""
    cb = random_codebooks(1, 6, 32, 4, seed=2)
    dense = hf.sbc_to_dense(cb.indices[0], 8, torch.float64)
    torch.testing.assert_close(hf.bundle(dense), hf.bundle(dense, torch.ones(6, dtype=torch.float64)))
    torch.testing.assert_close(hf.bundle(dense), hf.block_normalize(dense.sum(dim=0)))
    w32 = torch.rand(2, 6, generator=seeded_generator(3))  # float32 weights: cast to the vectors' dtype
    assert hf.bundle(dense, w32).dtype == torch.float64
    torch.testing.assert_close(hf.bundle(dense, w32), hf.bundle(dense, w32.double()))
    u = hf.block_normalize(torch.rand(3, 4, 8, generator=seeded_generator(1), dtype=torch.float64))
    want = torch.stack([u[:, b, cb.indices[0][:, b]] for b in range(4)], dim=0).amin(dim=0)  # min_b u[b, c_b]
    assert torch.equal(hf.similarity(u, cb.indices[0]), want)
