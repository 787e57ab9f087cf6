"""Query generation: exact products and noisy ones — SPEC section 3 ("Exact queries...").

Noise models (the one used is reported by :meth:`QueryNoise.describe`):

* ``none``: the product SBC itself (dense one-hot blocks).
* ``gaussian``: ``q = block_normalize(max(0, s + n))`` with ``n ~ N(0, sigma^2)``
  i.i.d. per entry, ``s`` the product SBC — additive noise on the GSBC,
  clipped at 0 (GSBCs are non-negative), then per-block l1 renormalized. A block
  whose entries all clip to 0 falls back to the clean block.
* ``bitflip``: each block's 1 moves to a uniformly drawn *other* position with
  probability ``p`` (an SBC stays an SBC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks, seeded_generator
from hdsim.errors import HdsimError
from hdsim.functional import block_normalize, sbc_to_dense

__all__ = ["QueryNoise", "QuerySet", "make_queries"]


@dataclass(frozen=True)
class QueryNoise:
    """How queries are corrupted. ``level`` is ``sigma`` (gaussian) or ``p`` (bitflip)."""

    kind: Literal["none", "gaussian", "bitflip"] = "none"
    level: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "gaussian", "bitflip"):
            raise HdsimError(f"noise: expected 'none', 'gaussian' or 'bitflip', got {self.kind!r}")
        if not (self.level >= 0):  # also rejects NaN
            raise HdsimError(f"noise level: must be >= 0, got {self.level}")
        if self.kind == "bitflip" and self.level > 1:
            raise HdsimError(f"noise level: bit-flip probability must be in [0, 1], got {self.level}")

    def describe(self) -> str:
        if self.kind == "none":
            return "exact products (no noise)"
        if self.kind == "gaussian":
            return (f"additive Gaussian N(0, {self.level}^2) per entry, clipped at 0, "
                    "per-block l1 renormalized")
        return f"bit flips: each block's 1 moves to another position with probability {self.level}"


@dataclass(frozen=True)
class QuerySet:
    """Queries with their ground truth.

    Attributes:
        queries: ``(N, B, L)`` float, block-normalized GSBCs.
        factors: ``(N, F)`` int64, the true codevector index per factor.
        noise: the noise model used.
    """

    queries: Tensor
    factors: Tensor
    noise: QueryNoise


def make_queries(codebooks: BlockCodebooks, n: int, seed: int, noise: QueryNoise = QueryNoise(),
                 dtype: torch.dtype = torch.float32) -> QuerySet:
    """Draw ``n`` random products of codevectors (uniform per factor), optionally noisy.

    Everything is drawn on the CPU from ``seed`` (same seed, same queries on every backend).

    Shapes:
        returns ``QuerySet`` with queries ``(n, B, L)`` and factors ``(n, F)``.

    Example:
        >>> from hdsim.codes import random_codebooks
        >>> cb = random_codebooks(2, 10, 64, 4, seed=0)
        >>> qs = make_queries(cb, 5, seed=1)
        >>> qs.queries.shape, qs.factors.shape
        (torch.Size([5, 4, 16]), torch.Size([5, 2]))
    """
    if n < 1:
        raise HdsimError(f"queries: expected at least 1 query, got {n}")
    g = seeded_generator(seed)
    cb = codebooks.to("cpu")
    factors = torch.stack([torch.randint(0, m, (n,), generator=g) for m in cb.sizes], dim=1)
    idx = cb.product(factors)
    L = cb.L
    if noise.kind == "bitflip" and noise.level > 0:
        flip = torch.rand(idx.shape, generator=g) < noise.level
        shift = torch.randint(1, L, idx.shape, generator=g) if L > 1 else torch.zeros_like(idx)
        idx = torch.where(flip, (idx + shift) % L, idx)
    q = sbc_to_dense(idx, L, dtype)
    if noise.kind == "gaussian" and noise.level > 0:
        noisy = (q + noise.level * torch.randn(q.shape, generator=g, dtype=dtype)).clamp_min(0)
        dead = noisy.sum(dim=-1, keepdim=True) <= 0
        q = block_normalize(torch.where(dead, q, noisy))
    return QuerySet(q, factors, noise)
