"""Torch-free NumPy twin of the sparse resonator network (:mod:`hdsim.factorizers.sparse_resonator`).

For deployments without torch (an edge runner next to onnxruntime): the same
algorithm, the same counter-based draws (:func:`hdsim.hashing.counter_bits`)
and the same tie rules as :class:`~hdsim.factorizers.sparse_resonator.SparseResonatorNetwork`,
computed in float64. Its results equal the reference's bit for bit (float64 on
any device; float32 while ``min(a, M_f) (B + 1) 2^16 < 2^24``): overlaps are
integers and the attention noise lies on a ``2^-16`` grid, so every weight and
bundle sum is exact and the summation order cannot matter.

Per query (global id ``first_id + i``; all queries start together and share one
event counter, so a query's draws depend only on ``(seed, id, event)``):

* init, event ``f`` per factor: ``x_f = thin(column counts of X_f, keys)``;
* iteration ``t``, factor ``f`` in order: ``u = (q - sum_{g != f} x_g) mod L``;
  overlap ``o_m = #{b: X_f[m, b] == u_b}``; ``w = o + r`` with
  ``r = (word >> 16) / 2^16`` (event ``F + 2 (F (t - 1) + f)``, ``M_f`` words);
  keep the ``a`` largest of ``w`` (stable: equal weights to the lowest index);
  ``x_f = thin(bundle(X_f, w), keys)`` (event ``+ 1``, ``B L`` words);
* thinning: per block, among the positions equal to the block maximum, the
  largest key wins (equal keys: the lowest position);
* a query stops (converged) in the first iteration in which no estimate changes,
  or at ``max_iter``; readout ``argmax_m o_m`` of the last iteration (lowest
  index on ties) and ``max_similarity = max_m o_m / B``.

This module imports neither torch nor any module that does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.hashing import counter_bits, seed_key
from hdsim.validation import check_int, check_seed

__all__ = ["thin_queries", "sparse_resonator_decode"]


def thin_queries(x: np.ndarray, B: int, name: str = "queries") -> np.ndarray:
    """Dense float queries to SBC offsets: the argmax of each of the ``B`` blocks.

    ``offsets[n, b] = argmax_l x[n, b L + l]`` with ``L = D / B``, lowest ``l`` on ties.

    Shapes:
        x: ``(N, D)`` float, ``D`` a multiple of ``B``, ``N >= 1``
        returns: ``(N, B)`` int64 in ``[0, D / B)``

    Raises:
        HdsimError: (one line starting with ``name``) not a 2-D float array, ``D`` not a
            multiple of ``B``, no query, NaN or inf entries.

    Example:
        >>> thin_queries(np.array([[0.1, 0.7, 0.2, 0.0, 0.5, 0.0, 0.5, 0.0]]), B=2)
        array([[1, 0]])
    """
    check_int("B", B)
    x = np.asarray(x)
    if x.ndim != 2:
        raise HdsimError(f"{name}: expected dense queries of shape (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise HdsimError(f"{name}: expected a float array of dense queries, got dtype {x.dtype}")
    N, D = x.shape
    if D % B:
        raise HdsimError(f"{name}: dimension {D} is not a multiple of the number of blocks B={B}")
    if N == 0:
        raise HdsimError(f"{name}: expected at least 1 query, got 0")
    if not np.isfinite(x).all():
        raise HdsimError(f"{name}: NaN or inf entries are not allowed")
    return x.reshape(N, B, D // B).argmax(axis=-1).astype(np.int64)


def _check_codebooks(codebooks: Sequence[np.ndarray], L: int) -> list[np.ndarray]:
    if isinstance(codebooks, np.ndarray) or not isinstance(codebooks, (list, tuple)) or not codebooks:
        raise HdsimError("codebooks: expected a non-empty list of (M_f, B) integer offset arrays")
    out = []
    for f, X in enumerate(codebooks):
        X = np.asarray(X)
        name = f"codebooks[{f}]"
        if not np.issubdtype(X.dtype, np.integer):
            raise HdsimError(f"{name}: expected integer offsets, got dtype {X.dtype}")
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise HdsimError(f"{name}: expected offsets of shape (M_f, B) with M_f, B >= 1, got {X.shape}")
        if X.shape[1] != np.shape(codebooks[0])[1]:
            raise HdsimError(f"{name}: has {X.shape[1]} blocks, codebooks[0] has {np.shape(codebooks[0])[1]}")
        if ((X < 0) | (X >= L)).any():
            raise HdsimError(f"{name}: offsets must be in [0, {L}), found {int(X.min())}..{int(X.max())}")
        out.append(X.astype(np.int64))
    return out


def _check_queries(queries: np.ndarray, B: int, L: int) -> np.ndarray:
    q = np.asarray(queries)
    if not np.issubdtype(q.dtype, np.integer):
        raise HdsimError(f"queries: expected integer offsets (thin dense queries with thin_queries), "
                         f"got dtype {q.dtype}")
    if q.ndim != 2 or q.shape[1] != B:
        raise HdsimError(f"queries: expected integer offsets of shape (N, {B}), got {q.shape}")
    if q.shape[0] == 0:
        raise HdsimError("queries: expected at least 1 query, got 0")
    if ((q < 0) | (q >= L)).any():
        raise HdsimError(f"queries: offsets must be in [0, {L}), found {int(q.min())}..{int(q.max())}")
    return q.astype(np.int64)


def _thin(bundled: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``(k, B, L)`` sums and int64 keys -> ``(k, B)``: among each block's maxima the largest key
    (then the lowest position; ``argmax`` returns the first maximum)."""
    top = bundled.max(axis=-1, keepdims=True)
    return np.where(bundled == top, keys, -1).argmax(axis=-1)


def sparse_resonator_decode(queries: np.ndarray, codebooks: Sequence[np.ndarray], L: int, *, a: int,
                            max_iter: int, seed: int, first_id: int = 0,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode SBC product queries with the sparse resonator network (float64, NumPy only).

    Per factor ``f``: ``u = q ⊘ ⊛_{g != f} x_g``; ``w = X_f^T u + r``; keep the top ``a``;
    ``x_f = thin(bundle(X_f, w))``; stop when no estimate changes (module docstring).
    Equal, array for array, to ``SparseResonatorNetwork(cb, SparseResonatorConfig(a, max_iter),
    seed=seed, dtype=torch.float64).factorize(queries, first_id=first_id)``.

    Shapes:
        queries: ``(N, B)`` integer offsets in ``[0, L)`` (dense queries: :func:`thin_queries`)
        codebooks: ``F`` integer arrays ``(M_f, B)`` in ``[0, L)``
        returns: indices ``(N, F)`` int64, iterations ``(N,)`` int64, converged ``(N,)`` bool,
        max_similarity ``(N, F)`` float64 (agreeing blocks / ``B``)

    Args:
        L: block length.
        a: attention sparsity (>= 1; ``a >= M_f`` keeps every weight).
        max_iter: iteration cap (>= 1).
        seed: seed of the draws, in ``[0, 2^64)``.
        first_id: global id of ``queries[0]``; query ``i`` has id ``first_id + i`` (mod ``2^32``).

    Raises:
        HdsimError: a one-line message naming the first bad argument.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> cb = [rng.integers(0, 16, size=(10, 64)) for _ in range(3)]
        >>> truth = rng.integers(0, 10, size=(5, 3))
        >>> q = sum(X[truth[:, f]] for f, X in enumerate(cb)) % 16  # binding = offset addition
        >>> idx, its, conv, sim = sparse_resonator_decode(q, cb, 16, a=6, max_iter=2000, seed=1)
        >>> bool((idx == truth).all()), bool(conv.all()), float(sim.min())
        (True, True, 1.0)
        >>> rest = sparse_resonator_decode(q[2:], cb, 16, a=6, max_iter=2000, seed=1, first_id=2)
        >>> bool((rest[1] == its[2:]).all())
        True
    """
    check_int("L", L)
    check_int("a", a)
    check_int("max_iter", max_iter)
    check_seed("seed", seed, bits=64)
    check_int("first_id", first_id, minimum=0)
    cbs = _check_codebooks(codebooks, L)
    F, B = len(cbs), cbs[0].shape[1]
    q = _check_queries(queries, B, L)
    N = q.shape[0]
    key = seed_key(seed)
    sizes = [X.shape[0] for X in cbs]
    # one-hot codebooks (M_f, B*L): a bundle is w @ E_f, a sum of exact terms
    flat = [X + np.arange(B, dtype=np.int64) * L for X in cbs]
    E = []
    for X, fl in zip(cbs, flat):
        e = np.zeros((X.shape[0], B * L))
        np.put_along_axis(e, fl, 1.0, axis=1)
        E.append(e)

    indices = np.zeros((N, F), dtype=np.int64)
    iterations = np.zeros(N, dtype=np.int64)
    converged = np.zeros(N, dtype=bool)
    max_sim = np.zeros((N, F), dtype=np.float64)

    active = np.arange(N, dtype=np.int64)  # positions still decoding
    ids = active + first_id
    x = np.stack([_thin(np.broadcast_to(e.sum(axis=0).reshape(1, B, L), (N, B, L)),
                        counter_bits(key, ids, f, B * L).reshape(N, B, L))
                  for f, e in enumerate(E)], axis=1)  # (N, F, B)
    event = F
    for it in range(1, max_iter + 1):
        k = active.size
        ids = active + first_id
        changed = np.zeros(k, dtype=bool)
        arg = np.empty((k, F), dtype=np.int64)
        best = np.empty((k, F), dtype=np.int64)
        for f in range(F):
            X, M = cbs[f], sizes[f]
            u = (q - x.sum(axis=1) + x[:, f]) % L  # (k, B): unbind every other factor
            overlap = (X[None, :, :] == u[:, None, :]).sum(axis=2)  # (k, M) int
            arg[:, f] = overlap.argmax(axis=1)  # lowest index wins ties
            best[:, f] = overlap.max(axis=1)
            w = overlap + (counter_bits(key, ids, event, M) >> 16) / 65536.0
            if a < M:
                top = np.argsort(-w, axis=1, kind="stable")[:, :a]
                kept = np.zeros_like(w)
                np.put_along_axis(kept, top, np.take_along_axis(w, top, axis=1), axis=1)
                w = kept
            keys = counter_bits(key, ids, event + 1, B * L).reshape(k, B, L)
            event += 2
            new = _thin((w @ E[f]).reshape(k, B, L), keys)
            changed |= (new != x[:, f]).any(axis=1)
            x[:, f] = new
        indices[active] = arg
        max_sim[active] = best / B
        iterations[active] = it
        if not changed.all():
            converged[active[~changed]] = True
            active, q, x = active[changed], q[changed], x[changed]
            if active.size == 0:
                break
    return indices, iterations, converged, max_sim
