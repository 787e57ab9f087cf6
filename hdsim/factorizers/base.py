"""Shared pieces of the factorizers: the result type and the injectable sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from hdsim.codes import seeded_generator

__all__ = ["FactorizationResult", "Sampler", "RandomSampler", "accuracy"]


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

    Called once per factor and iteration with the queries that need sampling.

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


class RandomSampler:
    """Default sampler: ``A`` distinct indices uniform per query, from a seeded CPU generator.

    The draw is the first ``A`` entries of a random permutation per query
    (argsort of uniform numbers), on the CPU, so the result does not depend on
    the compute device.
    """

    def __init__(self, seed: int) -> None:
        self.generator = seeded_generator(seed)

    def __call__(self, query_ids: Tensor, factor: int, M: int, A: int) -> Tensor:
        keys = torch.rand(int(query_ids.numel()), M, generator=self.generator)
        return keys.argsort(dim=1)[:, :A]
