"""Shared pieces of the factorizers: the result type and the injectable sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from hdsim.hashing import counter_bits, mix32, seed_key  # mix32: re-exported (it lived here)

__all__ = ["FactorizationResult", "Sampler", "RandomSampler", "accuracy", "mix32", "reset_sampler"]


@dataclass
class FactorizationResult:
    """Decoded factors for a batch of queries (all tensors on the CPU).

    Attributes:
        indices: ``(N, F)`` int64, decoded codevector index per factor.
        iterations: ``(N,)`` int64, iterations each query ran (>= 1).
        converged: ``(N,)`` bool, whether the query met the stopping rule before ``max_iter``.
        max_similarity: ``(N, F)`` float, the largest similarity of the last
            iteration per factor (the decode confidence).
    """

    indices: Tensor
    iterations: Tensor
    converged: Tensor
    max_similarity: Tensor

    @classmethod
    def zeros(cls, n: int, F: int, similarity_dtype: torch.dtype = torch.float32) -> "FactorizationResult":
        """Output buffers for ``n`` queries, filled in place as a batched decode proceeds (CPU)."""
        return cls(torch.zeros(n, F, dtype=torch.long), torch.zeros(n, dtype=torch.long),
                   torch.zeros(n, dtype=torch.bool), torch.zeros(n, F, dtype=similarity_dtype))

    @classmethod
    def concat(cls, parts: "list[FactorizationResult]") -> "FactorizationResult":
        """Join the results of consecutive batches, in order."""
        return cls(*(torch.cat(t) for t in zip(*(
            (p.indices, p.iterations, p.converged, p.max_similarity) for p in parts))))

    def accuracy(self, truth: Tensor) -> float:
        return accuracy(self.indices, truth)

    def factor_accuracy(self, truth: Tensor) -> float:
        return float((self.indices == truth.to(self.indices.device)).float().mean())


def accuracy(indices: Tensor, truth: Tensor) -> float:
    """Fraction of queries whose F indices are all correct."""
    return float((indices == truth.to(indices.device)).all(dim=1).float().mean())


class Sampler(Protocol):
    """Draws the conditional-sampling indices of the BCF (SPEC 3, step 2.4).

    Called once per factor and iteration with the queries that need sampling. A sampler
    with a ``reset()`` method is reset at the start of every ``factorize`` call, so that a
    call's draws depend only on the sampler's seed and the call's queries.

    Args:
        query_ids: ``(k,)`` int64, positions of the queries in the batch given to
            ``factorize`` (stable across iterations, so a sampler may keep per-query state).
        factor: factor index ``f`` (0-based).
        M: codebook size of factor ``f``.
        A: number of distinct indices to draw, ``1 <= A < M``.

    Returns:
        ``(k, A)`` int64 distinct indices in ``[0, M)`` per row (any device).
    """

    def __call__(self, query_ids: Tensor, factor: int, M: int, A: int) -> Tensor: ...


def reset_sampler(sampler: Sampler) -> None:
    """Call ``sampler.reset()`` where the sampler has one (start of a ``factorize`` call)."""
    reset = getattr(sampler, "reset", None)
    if callable(reset):
        reset()


class RandomSampler:
    """Default sampler: ``A`` distinct indices uniform per query, counter-based and seeded.

    Query ``i``'s ``n``-th draw is the ``A`` indices ``m`` in ``[0, M)`` with the
    smallest keys ``mix32(h(seed, i, n) XOR m)`` (top 31 bits; ties to the lower ``m``),
    in key order, with ``h`` a chain of :func:`mix32` (the keys are
    :func:`hdsim.hashing.counter_bits` with the query's draw count as the event).
    A query's indices therefore depend only on the seed, its id and how many draws it has
    taken — not on which other queries share the call, the batch size, or the compute device.
    :meth:`reset` (called by every ``factorize``) restarts every query at its first draw.

    Example:
        >>> s = RandomSampler(seed=0)
        >>> a = s(torch.tensor([0, 1]), factor=0, M=10, A=3)
        >>> s.reset(); torch.equal(s(torch.tensor([1]), 0, 10, 3), a[1:])
        True
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._key = seed_key(self.seed)
        self._draws = torch.zeros(0, dtype=torch.long)  # per query id: draws taken since reset()

    def reset(self) -> None:
        """Every query's next draw is its first."""
        self._draws = torch.zeros(0, dtype=torch.long)

    def __call__(self, query_ids: Tensor, factor: int, M: int, A: int) -> Tensor:
        """Shapes: ``query_ids`` ``(k,)`` distinct non-negative integers; returns ``(k, A)`` int64 on the CPU."""
        ids = query_ids.detach().cpu().long()
        if ids.numel() and int(ids.max()) >= self._draws.numel():
            grown = torch.zeros(int(ids.max()) + 1, dtype=torch.long)
            grown[:self._draws.numel()] = self._draws
            self._draws = grown
        n = self._draws[ids]
        self._draws[ids] = n + 1
        m = torch.arange(M, dtype=torch.long)
        # 31 key bits above the index: distinct keys, so the A smallest are one well-defined set and order
        keys = ((counter_bits(self._key, ids, n, M) >> 1) << 32) | m
        return keys.topk(A, dim=1, largest=False, sorted=True).indices
