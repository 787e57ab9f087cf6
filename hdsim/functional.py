"""Blockwise algebra of (generalized) sparse block codes — SPEC section 2.

Small pure functions over plain tensors, in the style of ``torchhd.functional``.
Every factorizer in :mod:`hdsim.factorizers` is composed from these; none
re-implements them.

Conventions
-----------
* A dense block code is a tensor of shape ``(..., B, L)``: ``B`` blocks of
  length ``L`` (``D = B * L``).
* An SBC in offset form is an integer tensor of shape ``(..., B)`` holding the
  position of the single 1 of each block, in ``[0, L)``.
* A codebook in offset form is an integer tensor of shape ``(M, B)``.

Dense bind/unbind use the FFT (``O(L log L)`` per block). The result equals the
direct circular convolution/correlation up to float round-off (about 1e-7
relative in float32); see ``docs/algorithms.md`` for why that is acceptable.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

SimilarityMode = Literal["linf", "dot"]

__all__ = [
    "SimilarityMode",
    "sbc_to_dense",
    "dense_to_sbc",
    "block_normalize",
    "bind",
    "unbind",
    "bind_sbc",
    "unbind_sbc",
    "multibind",
    "bundle",
    "bundle_sbc",
    "similarity",
    "linf_similarity_dense",
]


def sbc_to_dense(indices: Tensor, L: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Expand SBCs from offset form to dense one-hot blocks.

    ``x[..., b, l] = 1 if indices[..., b] == l else 0``

    Shapes:
        indices: ``(..., B)`` integer, values in ``[0, L)``
        returns: ``(..., B, L)`` of ``dtype``

    Example:
        >>> sbc_to_dense(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    return torch.nn.functional.one_hot(indices.long(), L).to(dtype)


def dense_to_sbc(x: Tensor) -> Tensor:
    """Offset form of a dense block code: the argmax of each block (lowest index on ties).

    Shapes:
        x: ``(..., B, L)``
        returns: ``(..., B)`` int64

    Example:
        >>> dense_to_sbc(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.0, 0.5]]))
        tensor([1, 0])
    """
    return x.argmax(dim=-1)


def block_normalize(x: Tensor) -> Tensor:
    """Per-block l1 normalization: ``x[b, :] / sum_l x[b, l]``; a block summing to 0 stays 0.

    Inputs are expected non-negative (GSBC weights), so the l1 norm is the plain sum.

    Shapes:
        x: ``(..., B, L)``
        returns: ``(..., B, L)``, same dtype

    Example:
        >>> block_normalize(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))
        tensor([[0.2500, 0.7500],
                [0.0000, 0.0000]])
    """
    s = x.sum(dim=-1, keepdim=True)
    return torch.where(s > 0, x / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(x))


def bind(x: Tensor, y: Tensor) -> Tensor:
    """Blockwise binding: per block circular convolution.

    ``z[b, l] = sum_j x[b, j] * y[b, (l - j) mod L]``

    For two SBCs this is index addition (:func:`bind_sbc`). Broadcasts over
    leading dimensions.

    Shapes:
        x, y: ``(..., B, L)`` (broadcastable)
        returns: ``(..., B, L)``

    Example:
        >>> x = sbc_to_dense(torch.tensor([1, 2]), 4)
        >>> y = sbc_to_dense(torch.tensor([3, 3]), 4)
        >>> dense_to_sbc(bind(x, y))
        tensor([0, 1])
    """
    L = x.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * torch.fft.rfft(y, dim=-1), n=L, dim=-1)


def unbind(x: Tensor, y: Tensor) -> Tensor:
    """Blockwise unbinding of ``y`` from ``x``: per block circular correlation.

    ``z[b, l] = sum_j x[b, (l + j) mod L] * y[b, j]``

    For SBCs this is index subtraction (:func:`unbind_sbc`). For GSBCs the block
    sums multiply, so two normalized inputs give a normalized output.

    Shapes:
        x, y: ``(..., B, L)`` (broadcastable)
        returns: ``(..., B, L)``

    Example:
        >>> x = sbc_to_dense(torch.tensor([0, 1]), 4)
        >>> y = sbc_to_dense(torch.tensor([3, 3]), 4)
        >>> dense_to_sbc(unbind(x, y))
        tensor([1, 2])
    """
    L = x.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * torch.fft.rfft(y, dim=-1).conj(), n=L, dim=-1)


def bind_sbc(x: Tensor, y: Tensor, L: int) -> Tensor:
    """Binding of SBCs in offset form: ``z_b = (x_b + y_b) mod L``.

    Shapes:
        x, y: ``(..., B)`` integer (broadcastable)
        returns: ``(..., B)`` int64

    Example:
        >>> bind_sbc(torch.tensor([1, 3]), torch.tensor([3, 3]), 4)
        tensor([0, 2])
    """
    return torch.remainder(x.long() + y.long(), L)


def unbind_sbc(x: Tensor, y: Tensor, L: int) -> Tensor:
    """Unbinding of SBCs in offset form: ``z_b = (x_b - y_b) mod L``.

    Shapes:
        x, y: ``(..., B)`` integer (broadcastable)
        returns: ``(..., B)`` int64

    Example:
        >>> unbind_sbc(torch.tensor([0, 2]), torch.tensor([3, 3]), 4)
        tensor([1, 3])
    """
    return torch.remainder(x.long() - y.long(), L)


def multibind(xs: Tensor) -> Tensor:
    """Bind a stack of dense block codes along dim ``-3``: ``x_0 ⊛ x_1 ⊛ ... ⊛ x_{K-1}``.

    Shapes:
        xs: ``(..., K, B, L)`` with ``K >= 1``
        returns: ``(..., B, L)``

    Example:
        >>> xs = sbc_to_dense(torch.tensor([[1, 0], [2, 3], [3, 3]]), 4)
        >>> dense_to_sbc(multibind(xs))
        tensor([2, 2])
    """
    if xs.shape[-3] == 1:  # nothing to bind: skip an FFT round trip
        return xs[..., 0, :, :]
    L = xs.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(xs, dim=-1).prod(dim=-3), n=L, dim=-1)


def bundle(vectors: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted bundling of dense block codes, then per-block l1 normalization.

    ``z = block_normalize(sum_m w_m * v_m)``

    Shapes:
        vectors: ``(M, B, L)``
        weights: ``(..., M)`` non-negative, or ``None`` for equal weights
        returns: ``(..., B, L)``

    Example:
        >>> v = sbc_to_dense(torch.tensor([[0], [1]]), 2)
        >>> bundle(v, torch.tensor([1.0, 3.0]))
        tensor([[0.2500, 0.7500]])
    """
    if weights is None:
        weights = torch.ones(vectors.shape[0], dtype=vectors.dtype, device=vectors.device)
    return block_normalize(torch.einsum("...m,mbl->...bl", weights.to(vectors.dtype), vectors))


def bundle_sbc(codebook: Tensor, weights: Tensor, L: int) -> Tensor:
    """Weighted bundling of an SBC codebook in offset form, then per-block l1 normalization.

    Same result as ``bundle(sbc_to_dense(codebook, L), weights)`` without
    materializing the dense codebook: per block, each weight is added to the
    position its codevector selects (a scatter-add of ``M * B`` terms). On CUDA
    it is that dense bundle: ``scatter_add_`` sums with float atomics there, in an
    order that changes from run to run, while a matrix product sums in a fixed one.

    Shapes:
        codebook: ``(M, B)`` integer in ``[0, L)``
        weights: ``(N, M)`` non-negative float
        returns: ``(N, B, L)``, dtype of ``weights``

    Example:
        >>> bundle_sbc(torch.tensor([[0], [1], [1]]), torch.tensor([[2.0, 1.0, 1.0]]), 2)
        tensor([[[0.5000, 0.5000]]])
    """
    if weights.is_cuda:
        # reached on CUDA only (tests/test_bcf.py::test_cuda_matches_cpu, run to run bit for bit):
        # kept out of mutation testing, which runs on the CPU (docs/testing.md)
        return bundle(sbc_to_dense(codebook.to(weights.device), L, weights.dtype), weights)  # pragma: no mutate
    N, M = weights.shape
    B = codebook.shape[1]
    out = torch.zeros(N, B, L, dtype=weights.dtype, device=weights.device)
    index = codebook.t().unsqueeze(0).expand(N, B, M)
    out.scatter_add_(2, index, weights.unsqueeze(1).expand(N, B, M))
    return block_normalize(out)


def similarity(u: Tensor, codebook: Tensor, mode: SimilarityMode = "linf") -> Tensor:
    """Similarity of GSBCs with every SBC of a codebook in offset form.

    * ``linf``: ``min_b u[b, c_b]`` — for a block-normalized non-negative ``u``
      this equals ``1 - max_{b,l} |u[b,l] - c[b,l]|`` (see
      :func:`linf_similarity_dense`); a gather of ``B`` entries and a minimum.
    * ``dot``: ``sum_b u[b, c_b]`` — what a crossbar computes as a matrix-vector
      product with the codebook.

    Shapes:
        u: ``(N, B, L)``
        codebook: ``(M, B)`` integer
        returns: ``(N, M)``, dtype of ``u``

    Example:
        >>> u = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]]])
        >>> similarity(u, torch.tensor([[0, 2], [1, 1]]))
        tensor([[0.5000, 0.2000]])
        >>> similarity(u, torch.tensor([[0, 2], [1, 1]]), "dot")
        tensor([[1.3000, 0.7000]])
    """
    N, B, _ = u.shape
    M = codebook.shape[0]
    if mode not in ("linf", "dot"):
        raise ValueError(f"similarity mode: expected 'linf' or 'dot', got {mode!r}")
    gathered = torch.gather(u, 2, codebook.t().unsqueeze(0).expand(N, B, M))  # (N, B, M)
    # Reduce over blocks with B elementwise ops rather than amin/sum(dim=1): the strided
    # reduction has no fast integer kernel on CPU (10x slower for the int64 fixed-point model).
    out = gathered[:, 0]
    combine = torch.minimum if mode == "linf" else torch.add
    for b in range(1, B):
        out = combine(out, gathered[:, b])
    return out


def linf_similarity_dense(u: Tensor, c: Tensor) -> Tensor:
    """Reference ``linf`` similarity in its defining form: ``1 - max_{b,l} |u[b,l] - c[b,l]|``.

    Used to check :func:`similarity` (min-gather form); it costs ``D`` per pair.

    Shapes:
        u: ``(N, B, L)``; c: ``(M, B, L)``
        returns: ``(N, M)``

    Example:
        >>> u = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]]])
        >>> linf_similarity_dense(u, sbc_to_dense(torch.tensor([[0, 2]]), 3))
        tensor([[0.5000]])
    """
    diff = (u.unsqueeze(1) - c.unsqueeze(0)).abs()  # (N, M, B, L)
    return 1 - diff.flatten(2).amax(dim=2)
