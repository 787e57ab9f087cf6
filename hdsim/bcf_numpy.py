"""The float BCF and the exhaustive search in NumPy, torch-free: the edge runner's ``float`` and
``bruteforce`` decodes.

:func:`bcf_decode` follows :class:`hdsim.factorizers.BlockCodeFactorizer` step for step (SPEC
section 3; queries and estimates block-normalized, sequential factor updates, conditional
sampling when no similarity exceeds ``T``, pull-up at ``Tc``, converged queries dropped) in
float64, with the conditional sampling drawn by :class:`hdsim.lfsr.LFSRSampler` (the sampler of
the fixed-point model and the RTL; query ids are the rows of the call). Given the float reference
with ``dtype=torch.float64`` and the same sampler it takes the same decisions
(``tests/test_bcf_numpy.py``); the sums are not in the same order, so the similarities agree to
rounding, not bit for bit.

:func:`bruteforce_decode` is :func:`hdsim.factorizers.bruteforce.bruteforce_decode`: the best of
all ``prod(M)`` products by the similarity (lowest product index on ties), the decode's upper bound.

Example:
    >>> from hdsim.factorizers.config import BCFConfig
    >>> X = [np.array([[0, 1], [2, 3], [1, 1]]), np.array([[3, 0], [1, 3]])]
    >>> q = np.zeros((1, 2, 4)); q[0, 0, (2 + 1) % 4] = 1; q[0, 1, (3 + 3) % 4] = 1  # product (1, 1)
    >>> bcf_decode(q, X, 4, BCFConfig())[0].tolist(), bruteforce_decode(q, X, 4)[0].tolist()
    ([[1, 1]], [[1, 1]])
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.factorizers.config import BCFConfig
from hdsim.validation import check_offset_codebooks, gsbc_shape

__all__ = ["bcf_decode", "bruteforce_decode", "product_offsets", "colliding_products", "MAX_COLLISION_PRODUCTS"]


def _block_normalize(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=-1, keepdims=True)
    return np.divide(x, s, out=np.zeros_like(x), where=s > 0)


def _check_queries(queries, B: int, L: int) -> np.ndarray:
    q = np.asarray(gsbc_shape(np.asarray(queries), B, L), dtype=np.float64)
    if not np.isfinite(q).all():
        raise HdsimError("query: contains NaN or infinite values")
    if (q < 0).any():
        raise HdsimError(f"query: GSBC entries must be non-negative, found {float(q.min()):.4g}")
    return q


def _check_codebooks(X: Sequence[np.ndarray], L: int) -> tuple[list[np.ndarray], int]:
    """The codebooks checked (:func:`hdsim.validation.check_offset_codebooks`) and their ``B``."""
    X, _ = check_offset_codebooks(X, L, "codebooks")
    return X, int(X[0].shape[1])


def _similarity(u: np.ndarray, X: np.ndarray, mode: str) -> np.ndarray:
    """``(k, B, L)`` x ``(M, B)`` offsets -> ``(k, M)``: ``min_b`` (``linf``) or ``sum_b`` (``dot``) of ``u[b, X[m, b]]``."""
    g = u[:, np.arange(X.shape[1])[None, :], X]  # (k, M, B)
    return g.min(axis=2) if mode == "linf" else g.sum(axis=2)


def bcf_decode(queries, X: Sequence[np.ndarray], L: int, config: BCFConfig, seed: int = 1
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode float GSBC queries with the BCF (module docstring).

    Args:
        queries: ``(N, D)`` or ``(N, B, L)`` non-negative floats (blocks are l1-normalized here).
        X: the ``F`` codebooks, ``(M_f, B)`` integer offsets in ``[0, L)``.
        config: :class:`~hdsim.factorizers.config.BCFConfig` (validated here).
        seed: seed of the :class:`~hdsim.lfsr.LFSRSampler` (``A > 0``).

    Returns:
        ``indices (N, F)`` int64, ``iterations (N,)`` int64, ``converged (N,)`` bool,
        ``max_similarity (N, F)`` float64 (the last iteration's best similarity per factor).
    """
    from hdsim.lfsr import LFSRSampler

    X, B = _check_codebooks(X, L)
    config.validate(B)
    q = _block_normalize(_check_queries(queries, B, L))
    N, F = q.shape[0], len(X)
    sizes = tuple(x.shape[0] for x in X)
    Tc, max_iter = config.resolved_Tc(B), config.resolved_max_iter(sizes)
    onehot = [np.eye(L)[x].reshape(x.shape[0], B * L) for x in X]  # (M_f, B*L): bundling as one matrix product
    x = np.stack([_block_normalize(o.sum(axis=0).reshape(B, L)) for o in onehot])[None].repeat(N, axis=0)
    sampler = LFSRSampler(seed)
    indices = np.zeros((N, F), np.int64)
    iterations = np.zeros(N, np.int64)
    converged = np.zeros(N, bool)
    amax_out = np.zeros((N, F))
    active = np.arange(N)
    for it in range(1, max_iter + 1):
        k = active.size
        all_pulled = np.ones(k, bool)
        arg = np.empty((k, F), np.int64)
        amax_it = np.empty((k, F))
        for f in range(F):
            u = q
            if F > 1:  # unbind the bound other estimates: correlation with their circular convolution
                spec = np.prod(np.fft.rfft(x[:, [g for g in range(F) if g != f]], axis=-1), axis=1)
                u = np.fft.irfft(np.fft.rfft(q, axis=-1) * spec.conj(), n=L, axis=-1)
            u = np.clip(u, 0.0, None)  # the exact value is >= 0: drop FFT round-off below 0
            a = _similarity(u, X[f], config.similarity)
            M = X[f].shape[0]
            aarg = a.argmax(axis=1)  # first maximum
            amax = a[np.arange(k), aarg]
            keep = a >= config.T
            w = np.where(keep | ~keep.any(axis=1, keepdims=True), a, 0.0)
            sampled = (amax <= config.T) & (config.A > 0)
            if sampled.any():
                rows = np.flatnonzero(sampled)
                w[rows] = 0.0
                if config.A >= M:
                    w[rows] = 1.0
                else:
                    w[rows[:, None], sampler.draw(active[rows], M, config.A)] = 1.0
            pulled = ~sampled & (amax >= Tc)
            w[pulled] = 0.0
            w[pulled, aarg[pulled]] = 1.0
            x[:, f] = _block_normalize((w @ onehot[f]).reshape(k, B, L))
            all_pulled &= pulled
            arg[:, f], amax_it[:, f] = aarg, amax
        indices[active], amax_out[active], iterations[active] = arg, amax_it, it
        if all_pulled.any():
            converged[active[all_pulled]] = True
            active, q, x = active[~all_pulled], q[~all_pulled], x[~all_pulled]
            if active.size == 0:
                break
    return indices, iterations, converged, amax_out


def product_offsets(X: Sequence[np.ndarray], L: int) -> tuple[np.ndarray, np.ndarray]:
    """Every product of the codebooks in offset form, in mixed-radix order (first factor most significant).

    Returns ``offsets (prod M, B)`` (``sum_f X_f[d_f] mod L``) and ``digits (prod M, F)``.
    """
    X, _ = _check_codebooks(X, L)
    sizes = [x.shape[0] for x in X]
    digits = np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), axis=1).astype(np.int64)
    offsets = sum(x[digits[:, f]] for f, x in enumerate(X)) % L
    return offsets, digits


def bruteforce_decode(queries, X: Sequence[np.ndarray], L: int, mode: str = "linf", chunk: int = 4096
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The best product per query by exhaustive search (lowest product index on ties).

    Shapes:
        queries: ``(N, D)`` or ``(N, B, L)``; returns factor indices ``(N, F)`` int64, best similarity ``(N,)``.
    """
    if mode not in ("linf", "dot"):
        raise HdsimError(f"similarity: expected 'linf' or 'dot', got {mode!r}")
    offsets, digits = product_offsets(X, L)
    q = _block_normalize(_check_queries(queries, offsets.shape[1], L))
    best = np.full(q.shape[0], -np.inf)
    arg = np.zeros(q.shape[0], np.int64)
    for s in range(0, offsets.shape[0], chunk):
        sim = _similarity(q, offsets[s:s + chunk], mode)
        i = sim.argmax(axis=1)
        v = sim[np.arange(q.shape[0]), i]
        better = v > best  # strict: an earlier chunk keeps ties
        best = np.where(better, v, best)
        arg = np.where(better, i + s, arg)
    return digits[arg], best


MAX_COLLISION_PRODUCTS = 1 << 24  # all products tabulated at once up to this many (16.8M rows of B offsets)


def colliding_products(X: Sequence[np.ndarray], L: int, factors: np.ndarray) -> np.ndarray:
    """Which queries' products equal another product of the codebooks (exactly: the same offset in every block).

    A query whose product ``sum_f X_f[d_f] mod L`` is also the product of other digits is the same
    vector as those: no decoder (brute force included) can tell which digits made it, so it gets
    them right only by chance. Such queries bound the accuracy (``1 - collision_rate``, up to those
    chance hits), and a decoder is judged on the others (``accuracy_noncolliding``).

    Exact either way: every product is tabulated (``np.unique`` over the rows) when there are at most
    :data:`MAX_COLLISION_PRODUCTS` and fewer than the per-query path's candidates; otherwise, per query, every choice of the first ``F - 1``
    factors fixes the last factor's offsets, which are looked up among its codevectors.

    Shapes:
        factors: ``(N, F)`` digits; returns ``(N,)`` bool.
    """
    X, B = _check_codebooks(X, L)
    factors = np.asarray(factors, dtype=np.int64)
    if factors.ndim != 2 or factors.shape[1] != len(X):
        raise HdsimError(f"factors: expected shape (N, {len(X)}), got {factors.shape}")
    sizes = [x.shape[0] for x in X]
    if ((factors < 0) | (factors >= np.array(sizes))).any():
        raise HdsimError(f"factors: digits must be in [0, M_f) for M={sizes}")
    own = sum(x[factors[:, f]] for f, x in enumerate(X)) % L  # (N, B)
    if L ** B <= 1 << 62:  # a row of B offsets as one integer key (fast sort and search)
        key = lambda rows: (np.asarray(rows, np.int64) * L ** np.arange(B, dtype=np.int64)).sum(axis=-1)  # noqa: E731
    else:
        void = np.dtype((np.void, 8 * B))
        key = lambda rows: np.ascontiguousarray(rows, dtype=np.int64).view(void).reshape(np.shape(rows)[:-1])  # noqa: E731
    # the cheaper exact path: tabulating sorts all prod(M_f) products; the per-query path forms
    # N * prod(M_1..M_{F-1}) candidates (256 queries at F=2, M=2750: 0.7M candidates vs 7.6M products)
    if math.prod(sizes) <= min(MAX_COLLISION_PRODUCTS, factors.shape[0] * math.prod(sizes[:-1])):
        offsets, _ = product_offsets(X, L)
        keys, counts = np.unique(key(offsets), return_counts=True)
        return counts[np.searchsorted(keys, key(own))] > 1
    keys, counts = np.unique(key(X[-1]), return_counts=True)
    head_offsets, _ = product_offsets(X[:-1], L)
    # prefilter on the first two blocks: a (b0, b1) pair table of the last codebook (L^2 entries)
    # rules out almost every candidate before the full keys are formed
    first2 = np.zeros(L * L, bool)
    first2[X[-1][:, 0] * L + (X[-1][:, 1] if B > 1 else 0)] = True
    hits = np.zeros(factors.shape[0], np.int64)
    step = max(1, (1 << 22) // head_offsets.shape[0])  # queries per chunk: about 4M candidate rows
    for s in range(0, factors.shape[0], step):
        mine = own[s:s + step]
        d0 = (mine[:, None, 0] - head_offsets[None, :, 0]) % L
        d1 = (mine[:, None, 1] - head_offsets[None, :, 1]) % L if B > 1 else np.zeros_like(d0)
        qi, hi = np.nonzero(first2[d0 * L + d1])  # (query, head) pairs that may match
        need = key((mine[qi] - head_offsets[hi]) % L)  # the last factor's offsets they need
        where = np.minimum(np.searchsorted(keys, need), keys.size - 1)
        np.add.at(hits, s + qi, np.where(keys[where] == need, counts[where], 0))
    return hits > 1  # the query's own product counts once
