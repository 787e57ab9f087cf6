"""A straightforward batched NumPy BCF, written from SPEC section 3 as a user would.

This is the speed baseline of ``hdsim bench factorizer --baseline numpy``: the
formulas of SPEC 2-3 transcribed literally over a batch — circular correlation
by an explicit index table, bundling as a matrix product with the dense
one-hot codebook, the ``linf`` similarity in its min-gather form — and the
batch iterates until *every* query in it has converged (converged queries are
masked, not removed). It is deliberately not tuned; it is what the float
reference is measured against, and a second, independent transcription of the
algorithm that the tests compare decisions with.
"""

from __future__ import annotations

import numpy as np

__all__ = ["numpy_bcf"]


def _circ_index(L: int) -> np.ndarray:
    return (np.arange(L)[:, None] + np.arange(L)[None, :]) % L  # [l, j] -> (l + j) mod L


def _normalize(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=-1, keepdims=True)
    return np.divide(x, s, out=np.zeros_like(x), where=s > 0)


def numpy_bcf(queries: np.ndarray, codebooks: list[np.ndarray], T: float, A: int, Tc: float,
              max_iter: int, seed: int, similarity: str = "linf"
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a batch with the plain NumPy BCF.

    Shapes:
        queries: ``(N, B, L)`` float; codebooks: F arrays ``(M_f, B)`` int
        returns: indices ``(N, F)``, iterations ``(N,)``, converged ``(N,)``
    """
    rng = np.random.default_rng(seed)
    N, B, L = queries.shape
    F = len(codebooks)
    q = _normalize(queries.astype(np.float32))
    idx = _circ_index(L)
    dense = [np.eye(L, dtype=np.float32)[X].reshape(X.shape[0], B * L) for X in codebooks]
    x = [np.tile(_normalize(d.sum(axis=0).reshape(B, L)), (N, 1, 1)) for d in dense]
    indices = np.zeros((N, F), dtype=np.int64)
    iterations = np.zeros(N, dtype=np.int64)
    done = np.zeros(N, dtype=bool)
    for it in range(1, max_iter + 1):
        conv = np.ones(N, dtype=bool)
        for f in range(F):
            # u = q ⊘ (⊛_{g != f} x_g): correlate q with each other estimate in turn
            # (correlating by a bound pair equals correlating by each factor).
            u = q
            for g in range(F):
                if g != f:
                    u = np.einsum("nblj,nbj->nbl", u[:, :, idx], x[g])
            X = codebooks[f]
            gathered = u[:, np.arange(B)[None, :], X]  # (N, M, B)
            a = gathered.min(axis=2) if similarity == "linf" else gathered.sum(axis=2)
            amax = a.max(axis=1)
            arg = a.argmax(axis=1)
            w = np.where(a >= T, a, 0.0)
            none = ~(a >= T).any(axis=1)
            w[none] = a[none]
            sampled = (amax <= T) & (A > 0)
            for n in np.flatnonzero(sampled):
                w[n] = 0.0
                w[n, rng.choice(X.shape[0], size=min(A, X.shape[0]), replace=False)] = 1.0
            pull = ~sampled & (amax >= Tc)
            w[pull] = 0.0
            w[pull, arg[pull]] = 1.0
            new = _normalize((w.astype(np.float32) @ dense[f]).reshape(N, B, L))
            x[f] = np.where(done[:, None, None], x[f], new)
            conv &= pull
            indices[~done, f] = arg[~done]
        iterations[~done] = it
        done |= conv
        if done.all():
            break
    return indices, iterations, done
