"""Torch-free NumPy twin of the sparse resonator network (:mod:`hdsim.factorizers.sparse_resonator`).

For deployments without torch (an edge runner next to onnxruntime): the same
algorithm, the same counter-based draws (:func:`hdsim.hashing.counter_bits`)
and the same tie rules as :class:`~hdsim.factorizers.sparse_resonator.SparseResonatorNetwork`,
computed in float64. Its results equal the reference's bit for bit (float64 on
any device; float32 while ``min(a, M_f) (B + 1) 2^16 < 2^24``, and with restarts
also ``M_f <= 256``): overlaps are integers and the attention noise lies on a
``2^-16`` grid, so every weight and bundle sum is exact and the summation order
cannot matter.

Per query (global id ``first_id + i``, or ``ids[i]``; all queries start together
and share one event counter, so a query's draws depend only on ``(seed, id, event)``):

* init, event ``f`` per factor: ``x_f = thin(column counts of X_f, keys)``;
* iteration ``t``, factor ``f`` in order: ``u = (q - sum_{g != f} x_g) mod L``;
  overlap ``o_m = #{b: X_f[m, b] == u_b}``; ``w = o + r`` with
  ``r = (word >> 16) / 2^16`` (event ``F + 2 (F (t - 1) + f)``, ``M_f`` words);
  keep the ``a`` largest of ``w`` (stable: equal weights to the lowest index);
  ``x_f = thin(bundle(X_f, w), keys)`` (event ``+ 1``, ``B L`` words);
* thinning: per block, among the positions equal to the block maximum, the
  largest key wins (equal keys: the lowest position);
* a query stops (converged) in the first iteration in which no estimate changes
  and every factor's ``max_similarity`` (``max_m o_m / B``, in float64) is
  ``>= Tc``, or at ``max_iter``; readout ``argmax_m o_m`` of the last iteration
  (lowest index on ties) and ``max_similarity = max_m o_m / B``. ``Tc = 0``
  (the default) is the seed's rule: no change stops the query;
* restarts (``restarts=True``, only matters with ``Tc > 0``): a query whose
  estimates did not change in iteration ``t < max_iter`` but that fails ``Tc``
  starts iteration ``t + 1`` from ``x_f = thin(bundle(X_f, v), keys)`` for every
  ``f``, with ``v_m = (word >> 16) / 2^16`` (``M_f`` words, no top-``a``) and fresh
  keys (``B L`` words), drawn from a separate stream, key
  ``seed_key(seed) XOR 0x5BD1E995`` (:data:`RESTART_SALT`), events
  ``2 (F (t - 1) + f)`` (weights) and ``+ 1`` (keys); the main stream's events
  are untouched, so the draws of queries that never restart do not change.

:func:`content_ids` gives each query an id computed from its offsets only, so that
identical queries get identical draws wherever they sit in a batch.

This module imports neither torch nor any module that does.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.hashing import MASK32, counter_bits, mix32, seed_key
from hdsim.validation import check_int, check_seed

__all__ = ["thin_queries", "sparse_resonator_decode", "bruteforce_offsets", "content_ids", "RESTART_SALT",
           "CONTENT_SALT"]

RESTART_SALT = 0x5BD1_E995  # MurmurHash2's multiplier: the restart stream's key is seed_key(seed) ^ RESTART_SALT
CONTENT_SALT = 0x27D4_EB2F  # xxHash's PRIME32_3: start of the content_ids chain (XOR B)


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


def bruteforce_offsets(offsets: np.ndarray, codebooks: Sequence[np.ndarray], L: int) -> tuple[np.ndarray, np.ndarray]:
    """The product sharing the most segments with each query, by exhaustive search (the NumPy twin of
    :func:`hdsim.factorizers.bruteforce.bruteforce_decode` with ``dot`` similarity on one-hot blocks).

    Products are enumerated in mixed-radix order (last factor fastest); the lowest product wins ties.

    Shapes:
        offsets: ``(N, B)`` int in ``[0, L)``; codebooks: ``F`` arrays ``(M_f, B)``
        returns: factor indices ``(N, F)`` int64 and the best product's overlap fraction ``(N,)`` in ``[0, 1]``

    Example:
        >>> X = [np.array([[0, 1], [2, 3]]), np.array([[1, 1], [0, 2]])]
        >>> bruteforce_offsets(np.array([[2, 1], [1, 2]]), X, L=4)   # (X0[1] + X1[1]) mod 4 = [2, 1]
        (array([[1, 1],
               [0, 0]]), array([1., 1.]))
    """
    X = _check_codebooks(codebooks, L)
    q = _check_queries(offsets, X[0].shape[1], L)
    grids = np.meshgrid(*(np.arange(x.shape[0]) for x in X), indexing="ij")
    digits = np.stack([g.reshape(-1) for g in grids], axis=1)  # (P, F), last factor fastest
    products = sum(x[digits[:, f]] for f, x in enumerate(X)) % L  # (P, B): bound offsets
    overlap = (q[:, None, :] == products[None]).sum(axis=2)  # (N, P)
    best = overlap.argmax(axis=1)  # the first maximum: the lowest product
    return digits[best].astype(np.int64), overlap[np.arange(q.shape[0]), best] / q.shape[1]


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


def check_convergence_rule(Tc, restarts) -> float:
    """Validate the convergence threshold and the restart switch; return ``Tc`` as a float.

    Raises:
        HdsimError: ``Tc`` not a real number in ``[0, 1]`` or ``restarts`` not a bool (one line,
            starting with the field's name).
    """
    if isinstance(Tc, (bool, np.bool_)) or not isinstance(Tc, numbers.Real) or not 0.0 <= float(Tc) <= 1.0:
        raise HdsimError(f"Tc: convergence threshold must be a number in [0, 1], got {Tc!r}")
    if not isinstance(restarts, (bool, np.bool_)):
        raise HdsimError(f"restarts: must be a bool (True or False), got {restarts!r}")
    return float(Tc)


def check_ids(ids, N: int, name: str = "ids") -> np.ndarray:
    """Validate ``N`` global query ids and return them as ``(N,)`` int64 (taken mod ``2^32`` by the draws).

    Accepts a NumPy array, a sequence or anything with ``.numpy()`` after ``.cpu()`` (a torch tensor)
    of non-negative integers.

    Raises:
        HdsimError: not 1-D of length ``N``, not integers, or negative entries (one line).
    """
    if hasattr(ids, "detach") and hasattr(ids, "cpu"):  # a torch tensor, without importing torch
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise HdsimError(f"{name}: expected integer query ids, got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise HdsimError(f"{name}: expected one id per query, shape ({N},), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return (arr & np.uint64(MASK32) if arr.dtype == np.uint64 else arr).astype(np.int64)
    if N and int(arr.min()) < 0:
        raise HdsimError(f"{name}: ids must be non-negative, found {int(arr.min())}")
    return arr.astype(np.int64)


def content_ids(offsets: np.ndarray) -> np.ndarray:
    """A global query id per row, computed from the row's offsets only.

    ``id_n = h_B`` with ``h_0 = 0x27D4EB2F XOR B`` (:data:`CONTENT_SALT`) and
    ``h_{b+1} = mix32(h_b XOR (offsets[n, b] mod 2^32))`` (:func:`hdsim.hashing.mix32`),
    a value in ``[0, 2^32)``. Passed as ``ids`` to :func:`sparse_resonator_decode` (or to
    ``SparseResonatorNetwork.factorize``), identical queries get identical draws, hence
    identical results, wherever they sit in a batch, and permuting the queries permutes the
    results. Distinct rows get distinct ids up to 32-bit collisions (which only share draws).

    Shapes:
        offsets: ``(N, B)`` non-negative integers (SBC offsets)
        returns: ``(N,)`` int64 in ``[0, 2^32)``

    Raises:
        HdsimError: not a 2-D integer array with ``B >= 1``, or negative entries (one line).

    Example:
        >>> q = np.array([[3, 1, 4], [1, 5, 9], [3, 1, 4]])
        >>> ids = content_ids(q)
        >>> ids.shape, ids.dtype.name, bool(ids[0] == ids[2]), bool(ids[0] != ids[1])
        ((3,), 'int64', True, True)
        >>> int(ids[1]) == mix32(mix32(mix32(0x27D4EB2F ^ 3 ^ 1) ^ 5) ^ 9)
        True
        >>> content_ids(q[[2, 0, 1]]).tolist() == ids[[2, 0, 1]].tolist()
        True
    """
    q = np.asarray(offsets)
    if q.dtype == bool or not np.issubdtype(q.dtype, np.integer):
        raise HdsimError(f"offsets: expected integer SBC offsets, got dtype {q.dtype}")
    if q.ndim != 2 or q.shape[1] < 1:
        raise HdsimError(f"offsets: expected integer offsets of shape (N, B) with B >= 1, got {q.shape}")
    if q.size and int(q.min()) < 0:
        raise HdsimError(f"offsets: must be non-negative, found {int(q.min())}")
    q = q.astype(np.uint64) & np.uint64(MASK32)  # mod 2^32, also for uint64 input
    q = q.astype(np.int64)
    h = np.full(q.shape[0], CONTENT_SALT ^ q.shape[1], dtype=np.int64)
    for b in range(q.shape[1]):
        h = mix32(h ^ q[:, b])
    return h


def _restart_estimates(key: int, ids: np.ndarray, t: int, E: list[np.ndarray], B: int, L: int) -> np.ndarray:
    """``(k, F, B)``: per factor ``thin(bundle(X_f, v), keys)`` from the restart stream ``key``, after
    iteration ``t``: event ``2 (F (t - 1) + f)`` gives ``v`` (``M_f`` 16-bit uniforms), the next the keys."""
    k, F = ids.size, len(E)
    out = np.empty((k, F, B), dtype=np.int64)
    for f, e in enumerate(E):
        event = 2 * (F * (t - 1) + f)
        v = (counter_bits(key, ids, event, e.shape[0]) >> 16) / 65536.0  # exact sums: M_f terms on 2^-16
        keys = counter_bits(key, ids, event + 1, B * L).reshape(k, B, L)
        out[:, f] = _thin((v @ e).reshape(k, B, L), keys)
    return out


def sparse_resonator_decode(queries: np.ndarray, codebooks: Sequence[np.ndarray], L: int, *, a: int,
                            max_iter: int, seed: int, first_id: int = 0, ids: np.ndarray | None = None,
                            Tc: float = 0.0, restarts: bool = False,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode SBC product queries with the sparse resonator network (float64, NumPy only).

    Per factor ``f``: ``u = q ⊘ ⊛_{g != f} x_g``; ``w = X_f^T u + r``; keep the top ``a``;
    ``x_f = thin(bundle(X_f, w))``; stop when no estimate changes and every factor's
    ``max_similarity >= Tc``; with ``restarts``, a query stuck below ``Tc`` starts again from a
    random bundle (module docstring). Equal, array for array, to
    ``SparseResonatorNetwork(cb, SparseResonatorConfig(a, max_iter, Tc, restarts), seed=seed,
    dtype=torch.float64).factorize(queries, first_id=first_id, ids=ids)``.

    Shapes:
        queries: ``(N, B)`` integer offsets in ``[0, L)`` (dense queries: :func:`thin_queries`)
        codebooks: ``F`` integer arrays ``(M_f, B)`` in ``[0, L)``
        ids: ``(N,)`` non-negative integers, or ``None``
        returns: indices ``(N, F)`` int64, iterations ``(N,)`` int64, converged ``(N,)`` bool,
        max_similarity ``(N, F)`` float64 (agreeing blocks / ``B``)

    Args:
        L: block length.
        a: attention sparsity (>= 1; ``a >= M_f`` keeps every weight).
        max_iter: iteration cap (>= 1). A query still running at the cap reports
            ``converged=False``, ``iterations=max_iter`` and the readout of its last iteration.
        seed: seed of the draws, in ``[0, 2^64)``.
        first_id: global id of ``queries[0]``; query ``i`` has id ``first_id + i`` (mod ``2^32``).
        ids: global id of each query (mod ``2^32``), overriding ``first_id`` (which is then
            ignored); e.g. :func:`content_ids` of the queries for position-independent draws.
        Tc: convergence threshold in ``[0, 1]``: a query converges only in an iteration with no
            change in which every factor's ``max_similarity`` is ``>= Tc``. ``0`` (the default)
            is the seed's rule.
        restarts: re-initialize a query whose estimates stopped changing below ``Tc`` (from a
            separate draw stream); without ``Tc > 0`` it never triggers. ``False`` by default.

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
        >>> strict = sparse_resonator_decode(q, cb, 16, a=6, max_iter=2000, seed=1, Tc=1.0, restarts=True,
        ...                                  ids=content_ids(q))
        >>> bool((strict[0] == truth).all()), bool(strict[2].all())
        (True, True)
    """
    check_int("L", L)
    check_int("a", a)
    check_int("max_iter", max_iter)
    check_seed("seed", seed, bits=64)
    check_int("first_id", first_id, minimum=0)
    Tc = check_convergence_rule(Tc, restarts)
    cbs = _check_codebooks(codebooks, L)
    F, B = len(cbs), cbs[0].shape[1]
    q = _check_queries(queries, B, L)
    N = q.shape[0]
    all_ids = np.arange(N, dtype=np.int64) + first_id if ids is None else check_ids(ids, N)
    key = seed_key(seed)
    restart_key = key ^ RESTART_SALT
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
    ids = all_ids
    x = np.stack([_thin(np.broadcast_to(e.sum(axis=0).reshape(1, B, L), (N, B, L)),
                        counter_bits(key, ids, f, B * L).reshape(N, B, L))
                  for f, e in enumerate(E)], axis=1)  # (N, F, B)
    event = F
    for it in range(1, max_iter + 1):
        k = active.size
        ids = all_ids[active]
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
        done = ~changed
        if Tc > 0:
            reached = (best / B >= Tc).all(axis=1)  # float64 overlap / B, as reported
            stuck = done & ~reached
            done &= reached
            if restarts and it < max_iter and stuck.any():  # after the last iteration it would change nothing
                x[stuck] = _restart_estimates(restart_key, ids[stuck], it, E, B, L)
        if done.any():
            converged[active[done]] = True
            active, q, x = active[~done], q[~done], x[~done]
            if active.size == 0:
                break
    return indices, iterations, converged, max_sim
