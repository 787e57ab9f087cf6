"""A plain vectorized NumPy BCF, written from SPEC section 3 as a competent user would.

This is the speed baseline of ``hdsim bench factorizer --baseline numpy``: one batch of all the
queries, array operations over ``(N, B, L)`` and no Python loop over queries:

* unbinding by FFT (``rfft`` of the query once, of the other estimates per step);
* the similarity as a gather over the codebook offsets and a min (``linf``) or sum (``dot``);
* activation, sampling and pull-up as masks over ``(N, M)``;
* bundling as one scatter-add (``np.bincount`` over the flat ``(row, b, X[m, b])`` positions;
  3-4x faster than a matrix product with the dense one-hot codebook at M=1155);
* converged queries leave the working set (one boolean index per iteration), so late iterations
  cost what the queries still running cost.

Float64 (NumPy's default). Conditional sampling draws ``A`` distinct indices per sampled query
from ``sampler(query_ids, M, A)``: by default a seeded NumPy generator (``A`` smallest of ``M``
uniform keys, one array op for all sampled queries); pass :meth:`hdsim.lfsr.LFSRSampler.draw` to
take the float reference's decisions with the same sampler (``tests/test_engine.py``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numpy_bcf"]


def _normalize(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=-1, keepdims=True)
    return np.divide(x, s, out=np.zeros_like(x), where=s > 0)


def numpy_bcf(queries: np.ndarray, codebooks: list[np.ndarray], T: float, A: int, Tc: float,
              max_iter: int, seed: int, similarity: str = "linf",
              sampler: Callable[[np.ndarray, int, int], np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a batch with the plain NumPy BCF.

    Shapes:
        queries: ``(N, B, L)`` float; codebooks: F arrays ``(M_f, B)`` int
        returns: indices ``(N, F)``, iterations ``(N,)``, converged ``(N,)``

    Args:
        sampler: ``(query_ids (k,), M, A) -> (k, A)`` distinct indices; default a
            ``numpy.random.default_rng(seed)`` draw.
    """
    rng = np.random.default_rng(seed)
    if sampler is None:
        def sampler(ids: np.ndarray, M: int, A: int) -> np.ndarray:
            return np.argpartition(rng.random((ids.size, M)), A - 1, axis=1)[:, :A]
    N, B, L = queries.shape
    F = len(codebooks)
    q = _normalize(queries.astype(np.float64))
    Q = np.fft.rfft(q, axis=-1)
    flat = [np.arange(B) * L + X for X in codebooks]  # (M, B): codevector m's position in a flat (B*L) row
    x = np.stack([_normalize(np.bincount(p.ravel(), minlength=B * L).reshape(B, L).astype(np.float64))
                  for p in flat])[None].repeat(N, axis=0)
    blocks = np.arange(B)
    indices = np.zeros((N, F), np.int64)
    iterations = np.zeros(N, np.int64)
    converged = np.zeros(N, bool)
    live = np.arange(N)
    for it in range(1, max_iter + 1):
        pulled_all = np.ones(live.size, bool)
        for f in range(F):
            X = codebooks[f]
            M = X.shape[0]
            # u = q ⊘ (⊛_{g != f} x_g): correlation = product with the conjugate spectrum
            spec = Q
            for g in range(F):
                if g != f:
                    spec = spec * np.fft.rfft(x[:, g], axis=-1).conj()
            u = np.clip(np.fft.irfft(spec, n=L, axis=-1), 0.0, None)
            gathered = u[:, blocks[None, :], X]  # (n, M, B)
            a = gathered.min(axis=2) if similarity == "linf" else gathered.sum(axis=2)
            arg = a.argmax(axis=1)
            amax = a[np.arange(a.shape[0]), arg]
            keep = a >= T
            w = np.where(keep | ~keep.any(axis=1, keepdims=True), a, 0.0)
            sampled = (amax <= T) & (A > 0)
            if sampled.any():
                rows = np.flatnonzero(sampled)
                w[rows] = 0.0 if A < M else 1.0
                if A < M:
                    w[rows[:, None], sampler(live[rows], M, A)] = 1.0
            pulled = ~sampled & (amax >= Tc)
            w[pulled] = 0.0
            w[pulled, arg[pulled]] = 1.0
            k = w.shape[0]
            pos = (np.arange(k)[:, None, None] * (B * L) + flat[f][None]).ravel()  # (k, M, B) flat
            s = np.bincount(pos, weights=np.repeat(w[:, :, None], B, axis=2).ravel(), minlength=k * B * L)
            x[:, f] = _normalize(s.reshape(k, B, L))
            pulled_all &= pulled
            indices[live, f] = arg
        iterations[live] = it
        converged[live[pulled_all]] = True
        stay = ~pulled_all
        live, Q, x = live[stay], Q[stay], x[stay]
        if live.size == 0:
            break
    return indices, iterations, converged
