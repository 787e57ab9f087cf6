"""Sparse associative memory (Willshaw-type, binary) over winner-take-all codes — SPEC section 8.

A hetero-associative memory stores binary pairs ``(x_i, y_i)`` in one binary matrix

    ``W = max_i (y_i x_i^T)``   (entry-wise OR: ``W[j, k] = 1`` iff some stored pair has ``y_j = x_k = 1``)

and recalls ``y`` from ``x`` by counting, ``s = W x``, then keeping the largest count of each
*cluster* of ``l`` consecutive output units (hard WTA; equal counts: the lowest index wins, as
``np.argmax``). A *WTA code* of ``c`` clusters of ``l`` units has exactly one active unit per
cluster (the codes of the seed's Figure 1); ``x`` may be any binary vector, ``y`` is recalled as a
WTA code.

Storage. ``W`` is a ``(n_out, n_in)`` ``bool`` array (one byte per entry here); the memory it
models holds one bit per entry: :func:`memory_bits` is ``n_out * n_in`` (``np.packbits`` would
store it in that many bits).

Speed. Rows with the same number of active units (WTA codes always) are stored by scattering
their ``k_y * k_x`` ones and recalled by summing ``k_x`` rows of ``W^T``, so the work scales with
the activity, not with ``n_out * n_in``; rows of unequal activity go through a float32 matrix
product (exact: every count is an integer below ``2^24``). Both give the same ``W`` and scores.

Capacity: :func:`analytic_recall` (derivation in its docstring and in docs/assoc_memory.md).
Classifier head: :class:`LabelCode` and :class:`AssocMemoryClassifier`.

This module imports only numpy (no torch), so an edge runner can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hdsim.errors import HdsimError
from hdsim.validation import check_int, check_seed

__all__ = ["random_wta_codes", "codes_from_indices", "wta_indices", "store", "recall_scores", "wta", "recall",
           "memory_bits", "AnalyticRecall", "analytic_recall", "analytic_capacity", "LabelCode",
           "AssocMemoryClassifier"]

_EXACT_F32 = 2**24  # float32 holds every integer below this exactly
_SCATTER_CHUNK = 2**20  # ones scattered per step of store(): bounds the index arrays (16 MiB)
_GATHER_CHUNK = 2**22  # W^T entries gathered per step of recall_scores()


# --------------------------------------------------------------------------- checks

def _binary(name: str, a, *, ndim: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """``a`` as a ``uint8`` 0/1 array (a view where it already is one); one-line error otherwise."""
    a = np.asarray(a)
    if a.ndim not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise HdsimError(f"{name}: expected a {want} binary array, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if a.dtype.kind not in "uif":
        raise HdsimError(f"{name}: expected a binary (0/1) array, got dtype {a.dtype}")
    if a.size:
        if a.dtype.kind == "u" and a.max() <= 1:  # one pass: unsigned values cannot be negative
            return a.astype(np.uint8, copy=False)
        if not ((a == 0) | (a == 1)).all():
            bad = a[(a != 0) & (a != 1)].flat[0]
            raise HdsimError(f"{name}: expected a binary (0/1) array, found the value {bad!r}")
    return a.astype(np.uint8)


def _rows(name: str, a) -> tuple[np.ndarray, bool]:
    """A binary ``(N, n)`` view of ``a`` (a single ``(n,)`` vector becomes ``N = 1``) and whether it was 1-D."""
    a = _binary(name, a)
    single = a.ndim == 1
    a = a[None] if single else a
    if a.shape[0] == 0:
        raise HdsimError(f"{name}: expected at least 1 row, got 0")
    if a.shape[1] == 0:
        raise HdsimError(f"{name}: expected at least 1 unit per row, got 0")
    return a, single


def _cluster_count(name: str, n: int, l: int) -> int:
    check_int("l", l)
    if n % l:
        raise HdsimError(f"l: cluster size {l} does not divide the size {n} of {name}")
    return n // l


def _memory(W, n_out: int | None = None, n_in: int | None = None) -> np.ndarray:
    if not isinstance(W, np.ndarray) or W.dtype != np.bool_ or W.ndim != 2:
        what = f"{W.dtype} array of shape {W.shape}" if isinstance(W, np.ndarray) else type(W).__name__
        raise HdsimError(f"W: expected a 2-D bool array (from store), got a {what}")
    if n_out is not None and W.shape[0] != n_out:
        raise HdsimError(f"W: has {W.shape[0]} output units, the pairs have {n_out}")
    if n_in is not None and W.shape[1] != n_in:
        raise HdsimError(f"W: has {W.shape[1]} input units, the inputs have {n_in}")
    return W


def _active(a: np.ndarray) -> np.ndarray | None:
    """The active columns of each row, ``(N, k)`` sorted, when every row has the same ``k``; else ``None``."""
    N, n = a.shape
    flat = np.flatnonzero(a.view(np.bool_))  # row-major; on bool 4x faster than np.nonzero on uint8
    if flat.size % N:
        return None
    idx = flat.reshape(N, flat.size // N)
    rows = idx // n
    # chunk i of k indices lies in row i for every i  <=>  every row has exactly k active units
    if not (rows == np.arange(N)[:, None]).all():
        return None
    return idx - rows * n


# --------------------------------------------------------------------------- WTA codes

def codes_from_indices(indices, l: int) -> np.ndarray:
    """Dense WTA codes from the active unit of each cluster.

    ``code[n, b l + indices[n, b]] = 1``, every other entry 0.

    Shapes:
        indices: ``(N, c)`` int in ``[0, l)``
        returns: ``(N, c l)`` uint8

    Example:
        >>> codes_from_indices(np.array([[2, 0]]), l=3)
        array([[0, 0, 1, 1, 0, 0]], dtype=uint8)
    """
    check_int("l", l)
    idx = np.asarray(indices)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise HdsimError(f"indices: expected a 2-D integer array, got {idx.dtype} shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= l):
        raise HdsimError(f"indices: expected values in [0, {l}), got [{idx.min()}, {idx.max()}]")
    N, c = idx.shape
    out = np.zeros((N, c * l), dtype=np.uint8)
    out[np.arange(N)[:, None], np.arange(c) * l + idx] = 1
    return out


def random_wta_codes(n: int, c: int, l: int, seed: int) -> np.ndarray:
    """``n`` random WTA codes: in each of ``c`` clusters one of ``l`` units, uniform and independent.

    Shapes:
        returns: ``(n, c l)`` uint8, exactly one 1 per cluster

    Example:
        >>> codes = random_wta_codes(4, c=3, l=5, seed=0)
        >>> codes.shape, codes.reshape(4, 3, 5).sum(axis=2).tolist() == [[1, 1, 1]] * 4
        ((4, 15), True)
    """
    for name, v in (("n", n), ("c", c), ("l", l)):
        check_int(name, v)
    check_seed("seed", seed)
    return codes_from_indices(np.random.default_rng(seed).integers(0, l, size=(n, c)), l)


def wta_indices(codes, l: int, name: str = "codes") -> np.ndarray:
    """The active unit of each cluster of WTA codes; checks there is exactly one.

    Shapes:
        codes: ``(N, c l)`` or ``(c l,)`` binary
        returns: ``(N, c)`` (or ``(c,)``) int64 in ``[0, l)``

    Raises:
        HdsimError: not binary, ``l`` not dividing the code size, or a cluster with 0 or 2+ active units.

    Example:
        >>> wta_indices(np.array([0, 0, 1, 1, 0, 0]), l=3)
        array([2, 0])
    """
    a, single = _rows(name, codes)
    c = _cluster_count(name, a.shape[1], l)
    g = a.reshape(a.shape[0], c, l)
    k = g.sum(axis=2, dtype=np.int64)
    if not (k == 1).all():
        n, b = np.argwhere(k != 1)[0]
        raise HdsimError(f"{name}: row {n} cluster {b} has {k[n, b]} active units, a WTA code has exactly 1")
    idx = g.argmax(axis=2)
    return idx[0] if single else idx


# --------------------------------------------------------------------------- store / recall

def store(X, Y, W: np.ndarray | None = None) -> np.ndarray:
    """Store binary pairs: ``W = max(W, max_i y_i x_i^T)`` (entry-wise OR).

    ``W`` given: the pairs are ORed into it *in place* and it is returned, so storing pairs in
    several calls gives the same matrix as storing them all at once (a memory that keeps
    learning); ``W`` omitted: a fresh all-zero memory. Storing a pair twice changes nothing.

    Shapes:
        X: ``(P, n_in)`` or ``(n_in,)`` binary; Y: ``(P, n_out)`` or ``(n_out,)`` binary
        W: ``(n_out, n_in)`` bool (optional); returns: ``(n_out, n_in)`` bool

    Raises:
        HdsimError: non-binary ``X``/``Y``, different numbers of rows, a ``W`` of another shape or dtype.

    Example:
        >>> W = store(np.array([[1, 0, 1]]), np.array([[0, 1]]))
        >>> W.astype(int).tolist()
        [[0, 0, 0], [1, 0, 1]]
        >>> store(np.array([1, 1, 0]), np.array([0, 1]), W).astype(int).tolist()  # incremental
        [[0, 0, 0], [1, 1, 1]]
    """
    X, _ = _rows("X", X)
    Y, _ = _rows("Y", Y)
    if X.shape[0] != Y.shape[0]:
        raise HdsimError(f"Y: has {Y.shape[0]} rows, X has {X.shape[0]}: one output per input")
    P, n_in = X.shape
    n_out = Y.shape[1]
    if W is None:
        W = np.zeros((n_out, n_in), dtype=np.bool_)
    else:
        _memory(W, n_out, n_in)
    xi, yi = _active(X), _active(Y)
    if xi is not None and yi is not None:
        # equal activity: scatter each pair's k_y * k_x ones, a chunk of pairs at a time
        step = max(1, _SCATTER_CHUNK // max(1, xi.shape[1] * yi.shape[1]))
        for s in range(0, P, step):
            W[yi[s:s + step, :, None], xi[s:s + step, None, :]] = True
    else:
        # unequal activity: counts Y^T X in float32, exact below 2^24 pairs per chunk
        step = _EXACT_F32 - 1
        for s in range(0, P, step):
            W |= (Y[s:s + step].T.astype(np.float32) @ X[s:s + step].astype(np.float32)) > 0
    return W


def _scores(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``X W^T`` as an unsigned/int array just wide enough for the counts (no checks)."""
    N, n_in = X.shape
    xi = _active(X)
    if xi is None:  # counts <= n_in: exact in float32 (n_in < 2^24 is checked by recall_scores)
        return (X.astype(np.float32) @ W.T.astype(np.float32)).astype(np.int32)
    k = xi.shape[1]
    acc = np.uint8 if k < 2**8 else np.uint16 if k < 2**16 else np.int32
    Wt = np.ascontiguousarray(W.T).view(np.uint8)  # row i: the output units input i connects to
    s = np.zeros((N, W.shape[0]), dtype=acc)
    step = max(1, _GATHER_CHUNK // max(1, W.shape[0]))
    for a in range(0, N, step):
        for j in range(k):  # s += W[:, x_active]: k row gathers instead of an n_in-long product
            s[a:a + step] += Wt[xi[a:a + step, j]]
    return s


def recall_scores(W: np.ndarray, X) -> np.ndarray:
    """Counts of active connections: ``s = W x`` for each input row.

    Shapes:
        W: ``(n_out, n_in)`` bool; X: ``(N, n_in)`` or ``(n_in,)`` binary
        returns: ``(N, n_out)`` (or ``(n_out,)``) int32 in ``[0, n_in]``

    Example:
        >>> W = store(np.array([[1, 0, 1]]), np.array([[0, 1]]))
        >>> recall_scores(W, np.array([1, 1, 1]))
        array([0, 2], dtype=int32)
    """
    _memory(W)
    X, single = _rows("X", X)
    _memory(W, n_in=X.shape[1])
    if X.shape[1] >= _EXACT_F32:
        raise HdsimError(f"X: {X.shape[1]} input units, at most {_EXACT_F32 - 1} are supported")
    s = _scores(W, X).astype(np.int32, copy=False)
    return s[0] if single else s


def wta(scores, l: int) -> np.ndarray:
    """Hard winner-take-all per cluster: a 1 at the largest score of each group of ``l`` units.

    ``y[b l + j] = 1`` iff ``j = argmax_j' scores[b l + j']``; equal scores: the lowest ``j`` wins.

    Shapes:
        scores: ``(N, c l)`` or ``(c l,)`` numbers; returns: the same shape, uint8 WTA codes

    Example:
        >>> wta(np.array([3, 5, 5, 0, 0, 0]), l=3)  # tie in cluster 0, all equal in cluster 1
        array([0, 1, 0, 1, 0, 0], dtype=uint8)
    """
    s = np.asarray(scores)
    if s.ndim not in (1, 2) or s.dtype.kind not in "buif":
        raise HdsimError(f"scores: expected a 1-D or 2-D numeric array, got {s.dtype} shape {s.shape}")
    single = s.ndim == 1
    s = s[None] if single else s
    c = _cluster_count("scores", s.shape[1], l)
    win = s.reshape(s.shape[0], c, l).argmax(axis=2)  # argmax: first maximum, the lowest index
    y = codes_from_indices(win, l)
    return y[0] if single else y


def recall(W: np.ndarray, X, l: int) -> np.ndarray:
    """Recall the WTA codes stored with ``X``: ``y = WTA_l(W x)`` (:func:`recall_scores`, :func:`wta`).

    Shapes:
        W: ``(n_out, n_in)`` bool, ``l`` dividing ``n_out``; X: ``(N, n_in)`` or ``(n_in,)`` binary
        returns: ``(N, n_out)`` (or ``(n_out,)``) uint8 WTA codes

    Raises:
        HdsimError: non-binary ``X``, widths that do not match ``W``, ``l`` not dividing ``n_out``.

    Example:
        >>> X = np.array([[1, 0, 0, 1], [0, 1, 1, 0]])
        >>> Y = np.array([[1, 0, 0, 1], [0, 1, 1, 0]])     # two clusters of l = 2
        >>> recall(store(X, Y), X, l=2).tolist() == Y.tolist()
        True
    """
    _memory(W)
    _cluster_count("the output (rows of W)", W.shape[0], l)
    X, single = _rows("X", X)
    _memory(W, n_in=X.shape[1])
    if X.shape[1] >= _EXACT_F32:
        raise HdsimError(f"X: {X.shape[1]} input units, at most {_EXACT_F32 - 1} are supported")
    y = wta(_scores(W, X), l)
    return y[0] if single else y


def memory_bits(W: np.ndarray) -> int:
    """Size of the memory in bits: one bit per entry of the binary matrix, ``n_out * n_in``.

    (The ``bool`` array spends a byte per entry; a bit-packed memory holds exactly this many bits.)

    Example:
        >>> memory_bits(np.zeros((512, 256), dtype=bool))
        131072
    """
    _memory(W)
    return int(W.shape[0]) * int(W.shape[1])


# --------------------------------------------------------------------------- capacity

class AnalyticRecall(NamedTuple):
    """Predicted recall of a stored pair after ``P`` random pairs (arrays over ``P``).

    Attributes:
        density: expected fraction of ones in ``W``, ``1 - (1 - 1/(l_in l_out))^P``.
        unit_full: ``q``, probability that a given wrong output unit has all ``c_in`` connections.
        cluster_error: probability that one output cluster is recalled wrong.
        exact_recall: probability that the whole code is recalled right.
    """

    density: np.ndarray
    unit_full: np.ndarray
    cluster_error: np.ndarray
    exact_recall: np.ndarray


def _unit_full(P: int, c_in: int, l_in: int, l_out: int) -> float:
    n = P - 1  # the other pairs; the probe's own pair sets no entry of a wrong unit
    if n <= 0 or l_out == 1:
        return 0.0
    p = 1.0 / l_out
    m = np.arange(n + 1, dtype=np.float64)
    # log Binomial(m; n, p) by the ratio pmf(m+1)/pmf(m) = (n-m)/(m+1) p/(1-p), summed in logs
    steps = np.log(n - m[:-1]) - np.log(m[:-1] + 1) + math.log(p / (1 - p))
    log_pmf = n * math.log1p(-p) + np.concatenate(([0.0], np.cumsum(steps)))
    covered = -np.expm1(m * math.log1p(-1.0 / l_in)) if l_in > 1 else (m > 0).astype(np.float64)
    return float(np.sum(np.exp(log_pmf) * covered**c_in))


def _cluster_right(q: float, l_out: int) -> float:
    """``(1 - (1-q)^l_out) / (l_out q)``, accurate for tiny ``q`` (expm1/log1p), 1 at ``q = 0``."""
    if q <= 0.0:
        return 1.0
    if q >= 1.0:
        return 1.0 / l_out
    return -math.expm1(l_out * math.log1p(-q)) / (l_out * q)


def analytic_recall(P, c_in: int, l_in: int, c_out: int, l_out: int) -> AnalyticRecall:
    """Recall of a stored pair of random WTA codes after storing ``P`` pairs (the bench's analytic curve).

    Pairs are independent, each cluster uniform over its ``l`` units. Probe a stored ``(x, y)``:

    * the right unit of each output cluster counts ``s = c_in`` (its pair set all its connections),
      and no unit can count more, so a wrong unit ``j`` matters only if *full*: ``s_j = c_in``;
    * ``m ~ Binomial(P - 1, 1/l_out)`` other pairs have ``y_j = 1``; row ``j`` of ``W`` is the OR of
      their inputs, which hit the probe's unit of an input cluster with probability
      ``1 - (1 - 1/l_in)^m``, independently over the ``c_in`` clusters, so (exact, for one unit)

      ``q = sum_m Binomial(m; P - 1, 1/l_out) (1 - (1 - 1/l_in)^m)^c_in``

      (the textbook ``p1^c_in``, ``p1 = 1 - (1 - 1/(l_in l_out))^(P-1)``, puts ``m`` at its mean);
    * ties go to the lowest index: the right unit sits at a uniform position ``r`` of its cluster
      and loses iff one of the ``r`` units before it is full. Taking the ``l_out - 1`` wrong units
      as independent (they are fed by disjoint sets of pairs), a cluster is right with probability
      ``(1/l_out) sum_{r<l_out} (1-q)^r = (1 - (1-q)^l_out) / (l_out q)``;
    * ``exact_recall = (1 - cluster_error)^c_out``, taking the clusters as independent (they share
      pairs, so the true value is a little higher where errors are frequent).

    Exact for ``c_out = 1, l_out = 2`` (one wrong unit; the tests enumerate every configuration).

    Shapes:
        P: int or 1-D ints ``>= 1``; returns: :class:`AnalyticRecall` of float64 arrays shaped like ``P``

    Example:
        >>> r = analytic_recall([1, 2], c_in=1, l_in=1, c_out=1, l_out=2)
        >>> r.unit_full.tolist(), r.cluster_error.tolist()  # P=2: tie half the time, lost half of those
        ([0.0, 0.5], [0.0, 0.25])
    """
    for name, v in (("c_in", c_in), ("l_in", l_in), ("c_out", c_out), ("l_out", l_out)):
        check_int(name, v)
    Ps = np.asarray(P)
    if Ps.dtype.kind not in "iu" or Ps.ndim > 1 or (Ps.size and Ps.min() < 1):
        raise HdsimError(f"P: expected integers >= 1, got {P!r}")
    flat = Ps.reshape(-1)
    q = np.array([_unit_full(int(p), c_in, l_in, l_out) for p in flat])
    cluster_error = np.array([1.0 - _cluster_right(float(v), l_out) for v in q])
    density = -np.expm1(flat * math.log1p(-1.0 / (l_in * l_out))) if l_in * l_out > 1 else np.ones(flat.shape)
    shape = Ps.shape
    return AnalyticRecall(density.reshape(shape), q.reshape(shape), cluster_error.reshape(shape),
                          ((1.0 - cluster_error) ** c_out).reshape(shape))


def analytic_capacity(c_in: int, l_in: int, c_out: int, l_out: int, target: float = 0.99,
                      P_max: int = 2**24) -> int:
    """Largest ``P`` whose :func:`analytic_recall` exact recall is ``>= target`` (doubling, then bisection:
    it falls with ``P``).

    Returns ``P_max`` when even that many pairs stay above ``target``.

    Example:
        >>> analytic_capacity(c_in=1, l_in=1, c_out=1, l_out=2, target=0.7)  # 1 - q/2 = 1, 0.75, 0.625 at P = 1, 2, 3
        2
    """
    if not 0.0 < target <= 1.0:
        raise HdsimError(f"target: expected a fraction in (0, 1], got {target!r}")
    check_int("P_max", P_max)
    ok = lambda p: float(analytic_recall(p, c_in, l_in, c_out, l_out).exact_recall) >= target  # noqa: E731
    lo, hi = 1, 2  # ok(1): one pair is always recalled
    while ok(hi):  # doubling first: each evaluation costs O(P)
        if hi >= P_max:
            return P_max
        lo, hi = hi, min(2 * hi, P_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


# --------------------------------------------------------------------------- classifier head

@dataclass(frozen=True)
class LabelCode:
    """Class labels as WTA codes: digit ``b`` of ``c`` in base ``l`` (``b = 0`` least significant)
    is the active unit of cluster ``b``; a code whose digits spell a number ``>= n_classes`` is no
    class (the classifier abstains).

    ``clusters`` defaults to the fewest digits that reach every class, ``ceil(log_l n_classes)``;
    with ``l >= n_classes`` that is one cluster: a one-hot class code.

    Example:
        >>> code = LabelCode(n_classes=5, l=3)
        >>> code.clusters, code.encode(np.array([4])).tolist()   # 4 = 1 + 1*3
        (2, [[0, 1, 0, 0, 1, 0]])
        >>> code.decode(code.encode(np.arange(5))).tolist(), code.decode(np.array([0, 0, 1, 0, 1, 0])).tolist()
        ([0, 1, 2, 3, 4], -1)
    """

    n_classes: int
    l: int
    clusters: int | None = None

    def __post_init__(self) -> None:
        check_int("n_classes", self.n_classes)
        check_int("l", self.l, minimum=2)
        need = 1
        while self.l**need < self.n_classes:
            need += 1
        check_int("clusters", self.clusters, optional=True)
        if self.clusters is None:
            object.__setattr__(self, "clusters", need)
        elif self.clusters < need:
            raise HdsimError(f"clusters: {self.clusters} clusters of {self.l} units spell "
                             f"{self.l ** self.clusters} codes, fewer than n_classes={self.n_classes}")

    @property
    def n_out(self) -> int:
        """Output units: ``clusters * l``."""
        return self.clusters * self.l

    def encode(self, labels) -> np.ndarray:
        """Labels ``(N,)`` in ``[0, n_classes)`` to codes ``(N, clusters l)`` uint8."""
        y = np.asarray(labels)
        if y.ndim != 1 or y.dtype.kind not in "iu" or y.size == 0:
            raise HdsimError(f"labels: expected a non-empty 1-D integer array, got {y.dtype} shape {y.shape}")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise HdsimError(f"labels: expected classes in [0, {self.n_classes}), got [{y.min()}, {y.max()}]")
        digits = (y.astype(np.int64)[:, None] // self.l ** np.arange(self.clusters)) % self.l
        return codes_from_indices(digits, self.l)

    def decode(self, codes) -> np.ndarray:
        """WTA codes ``(N, clusters l)`` (or one ``(clusters l,)``) to labels; ``-1`` where no class."""
        idx = wta_indices(codes, self.l)
        value = (np.atleast_2d(idx).astype(np.int64) * self.l ** np.arange(self.clusters)).sum(axis=1)
        labels = np.where(value < self.n_classes, value, -1)
        return labels[0] if idx.ndim == 1 else labels


class AssocMemoryClassifier:
    """A classifier head: a Willshaw memory from binary features to :class:`LabelCode` codes.

    :meth:`fit` stores every ``(features_i, code(label_i))`` pair (incremental: calling it again
    adds pairs); :meth:`predict` recalls ``WTA_l(W x)`` and decodes it, ``-1`` (abstain) where the
    recalled code is no class. Features are any binary matrix ``(N, n_in)``, e.g. the hard-WTA
    activations of a network, binarized.

    Example (hand-derived: class 0 owns inputs 0-1, class 1 owns inputs 2-3; ties go to class 0):
        >>> head = AssocMemoryClassifier(n_in=4, code=LabelCode(n_classes=2, l=2))
        >>> head = head.fit(np.array([[1, 1, 0, 0], [0, 0, 1, 1]]), np.array([0, 1]))
        >>> head.predict(np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]])).tolist()
        [0, 1, 0]
        >>> head.evaluate(np.array([[0, 1, 0, 0], [0, 0, 1, 0]]), np.array([0, 1]))
        {'accuracy': 1.0, 'abstained': 0.0, 'samples': 2, 'memory_bits': 8}
    """

    def __init__(self, n_in: int, code: LabelCode) -> None:
        check_int("n_in", n_in)
        if not isinstance(code, LabelCode):
            raise HdsimError(f"code: expected a LabelCode, got {type(code).__name__}")
        self.code = code
        self.W = np.zeros((code.n_out, n_in), dtype=np.bool_)

    def fit(self, X, labels) -> "AssocMemoryClassifier":
        """Store ``(X[i], code(labels[i]))`` for every ``i``; returns ``self``."""
        Xr, _ = _rows("X", X)
        Y = self.code.encode(labels)
        if Y.shape[0] != Xr.shape[0]:
            raise HdsimError(f"labels: has {Y.shape[0]} entries, X has {Xr.shape[0]} rows")
        store(Xr, Y, self.W)
        return self

    def predict(self, X) -> np.ndarray:
        """Labels ``(N,)`` int64 for the rows of ``X``; ``-1`` where the recalled code is no class."""
        return self.code.decode(recall(self.W, X, self.code.l))

    def evaluate(self, X, labels) -> dict:
        """``accuracy`` (abstentions count as wrong), ``abstained`` fraction, ``samples``, ``memory_bits``."""
        y = np.asarray(labels)
        pred = np.atleast_1d(self.predict(X))
        if y.shape != pred.shape:
            raise HdsimError(f"labels: expected shape {pred.shape} (one per row of X), got {y.shape}")
        return {"accuracy": float((pred == y).mean()), "abstained": float((pred == -1).mean()),
                "samples": int(y.size), "memory_bits": memory_bits(self.W)}
