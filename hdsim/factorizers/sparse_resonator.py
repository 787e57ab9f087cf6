"""Sparse resonator network, float reference — seed ``000_*`` section 3, SPEC section 4.

Codes are maximally sparse segment codes: binary SBCs with ``B`` blocks
("segments", ``k`` in the seed) of length ``L``, kept in offset form (``B``
indices in ``[0, L)``). Estimates are single SBCs, so unbinding is index
subtraction. Per factor ``f`` (sequentially, ``f = 0..F-1``):

1. ``u = q ⊘ (⊛_{g != f} x_g)``      — offsets ``u_b = (q_b - sum_{g != f} x_{g,b}) mod L``
2. ``w = X_f^T u + r``                — ``w_m`` = number of blocks where ``X_f[m]`` and ``u``
   agree (the overlap, an integer in ``[0, B]``), ``r ~ U[0, 1)`` i.i.d. per entry
3. keep the ``a`` largest entries of ``w`` (the others become 0)
4. ``x_f = thin(bundle(X_f, w))``     — per block, add each kept weight at the position its
   codevector selects, then take the argmax of each block (ties broken uniformly at random)

Init: ``x_f = thin(bundle(X_f, equal weights))`` (random ties, drawn per query).
A query converges in the first iteration in which no estimate changes and every
factor's readout ``max_similarity`` (overlap / ``B``) is ``>= Tc``; otherwise it
stops at ``max_iter`` (default ``max(2000, prod_f M_f / 1000)``, seed eq. 3.7)
with ``converged=False``, ``iterations=max_iter`` and its last iteration's readout.
``Tc = 0`` (the default) is the seed's rule: an iteration without change stops.

Extensions (off by default; they keep the seed's behaviour and draws exactly):

* ``Tc > 0``: with few segments (e.g. ``B = 4``) the "no change" rule often stops
  at a wrong fixed point (about 35% of exact queries at F=2, M=10, B=4); ``Tc``
  refuses to call such a state converged. Without restarts the query keeps
  iterating from it (fresh noise each iteration).
* ``restarts=True``: a query whose estimates did not change in iteration
  ``t < max_iter`` but that fails ``Tc`` starts iteration ``t + 1`` from
  ``x_f = thin(bundle(X_f, v), keys)`` for every factor, with ``v_m`` a 16-bit
  uniform per codevector (like ``r``, no top-``a``) and fresh thin keys. These
  come from a separate stream, key ``seed_key(seed) XOR 0x5BD1E995``
  (:data:`hdsim.sparse_resonator_numpy.RESTART_SALT`), events ``2 (F (t - 1) + f)``
  (``M_f`` weight words) and ``+ 1`` (``B L`` key words), so the main stream's
  events are unchanged. With ``Tc = 0`` a no-change iteration converges, so
  restarts never trigger.

Choices (SPEC is silent on these; also in ``docs/factorizers.md``):

* The kept weights are the noisy values ``w + r`` (seed eq. 3.4 sparsifies
  ``w' + r``), so early on, when every overlap is ~0, the bundle is a random
  mixture — the network explores instead of stalling.
* Top-``a``: a stable descending sort of ``w``; equal weights go to the lowest
  codevector index (``topk``'s order among equal values is unspecified).
* Thinning ties are broken exactly: among the positions equal to the block
  maximum, the one with the largest 32-bit random key wins (equal keys: the
  lowest position). Integer keys are compared, and no additive noise is used
  that could reorder near-equal sums.
* Readout: ``idx_f = argmax_m`` of the overlap counts ``X_f^T u`` (without
  ``r``) of the last iteration, lowest index wins ties; ``max_similarity`` is
  that count divided by ``B`` (fraction of agreeing blocks, in ``[0, 1]``).
* Queries: SBC offsets ``(N, B)`` (integer dtype) or dense ``(N, D)`` /
  ``(N, B, L)`` GSBCs (float dtype), which are thinned to their per-block
  argmax first (lowest index on ties), as the seed does at inference.
* Randomness is counter-based per query (:func:`hdsim.hashing.counter_bits`):
  query ``i`` of a call has the global id ``first_id + i`` (or ``ids[i]``, e.g.
  :func:`hdsim.sparse_resonator_numpy.content_ids` of the queries, so identical
  queries get identical draws wherever they sit), and every draw is a
  block of hash words of ``(seed_key(seed), id, event)``. All queries of a call
  start together and take the same sequence of events: init, one per factor
  ``f`` (``B*L`` thin keys); then each iteration, per factor, one event for the
  attention noise (``M_f`` words, ``r = (word >> 16) / 2^16``, a 16-bit uniform
  in ``[0, 1)``) and one for the thin keys (``B*L`` words). Event ``e`` of a
  query is therefore init ``e = f`` and ``e = F + 2 (F (t - 1) + f)`` (noise),
  ``+ 1`` (thin keys) in iteration ``t``. A query's draws depend only on
  ``(seed, id, event)``: not on ``batch_size``, on the other queries of the call
  or on the device (the words are integer arithmetic on the compute device).

Exactness: the overlaps are integers in ``[0, B]`` and ``r`` lies on the
``2^-16`` grid, so every weight ``o + r`` and every bundle sum (at most
``a' = min(a, M_f)`` weights below ``B + 1``, on the same grid) is exact in
float64 (while ``a' (B + 1) < 2^37``), and in float32 while
``a' (B + 1) 2^16 < 2^24`` (e.g. ``B = 4, a = 6``; not ``B = 64, a = 6``).
A restart bundle sums ``M_f`` weights below 1 on the grid: exact in float32
while ``M_f <= 256``. ``Tc`` is compared with overlap / ``B`` computed in float64.
Exact sums make the summation order irrelevant (CPU scatter-add, CUDA matrix
product, the NumPy twin's matrix product), and the block normalization divides
a block by one exact positive sum, which keeps its maxima and their ties (a
correctly rounded division is monotone, and sums ``2^-16`` apart stay apart).
Within those bounds the decode is bit-for-bit equal to the float64 NumPy twin
:func:`hdsim.sparse_resonator_numpy.sparse_resonator_decode`, on any device and
for any ``batch_size``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks, check_gsbc, random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult
from hdsim.functional import bundle_sbc, dense_to_sbc, sbc_to_dense, similarity, unbind_sbc
from hdsim.hashing import counter_bits, seed_key
from hdsim.queries import QueryNoise, make_queries
from hdsim.sparse_resonator_numpy import RESTART_SALT, check_convergence_rule, check_ids
from hdsim.validation import check_int, check_seed

__all__ = [
    "SparseResonatorConfig",
    "SparseResonatorNetwork",
    "default_sparse_max_iter",
    "check_sbc_queries",
    "make_problem",
]


def default_sparse_max_iter(sizes: tuple[int, ...]) -> int:
    """Seed eq. 3.7: ``max(2000, prod_f M_f / 1000)`` (rounded up).

    Example:
        >>> default_sparse_max_iter((10, 10, 10)), default_sparse_max_iter((1000, 1000, 10))
        (2000, 10000)
    """
    return max(2000, -(-math.prod(sizes) // 1000))


def make_problem(F: int, M: int | tuple[int, ...], D: int, n: int, seed: int, *,
                 noise: float | QueryNoise = 0.0, B: int | None = None) -> tuple[BlockCodebooks, Tensor, Tensor]:
    """A factorization problem for the sparse resonator: SBC codebooks, SBC queries, truth.

    Codebooks come from :func:`hdsim.codes.random_codebooks` (``seed``), queries
    from :func:`hdsim.queries.make_queries` (``seed + 1``).

    Args:
        noise: a bit-flip probability (float: each block's 1 moves to another
            position with probability ``p``) or any :class:`QueryNoise`; a
            Gaussian-noisy GSBC is thinned to its per-block argmax.
        B: number of blocks; ``None`` means ``D // 16`` (``L = 16``), at least 1.

    Shapes:
        returns: ``(BlockCodebooks with (M_f, B) offsets, queries (n, B) int64 offsets, truth (n, F))``

    Example:
        >>> cb, q, truth = make_problem(F=3, M=10, D=1024, n=20, seed=0)
        >>> q.shape, cb.B, cb.L
        (torch.Size([20, 64]), 64, 16)
    """
    if B is None:
        B = max(1, D // 16)
    if not isinstance(noise, QueryNoise):
        noise = QueryNoise("bitflip", float(noise)) if noise else QueryNoise()
    cb = random_codebooks(F, M, D, B, seed)
    qs = make_queries(cb, n, seed + 1, noise)
    return cb, dense_to_sbc(qs.queries), qs.factors


def check_sbc_queries(q: Tensor, B: int, L: int, name: str = "queries") -> Tensor:
    """Validate queries and return them as SBC offsets ``(N, B)`` int64.

    Integer tensors are offsets ``(N, B)`` (or one ``(B,)``) in ``[0, L)``;
    float tensors are dense GSBCs ``(N, D)`` / ``(N, B, L)`` checked by
    :func:`hdsim.codes.check_gsbc` and thinned to their per-block argmax.

    Raises:
        HdsimError: wrong type or shape, offsets out of range, NaN/inf or negative entries.
    """
    if not isinstance(q, Tensor):
        raise HdsimError(f"{name}: expected a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point():
        return dense_to_sbc(check_gsbc(q, B, L, name)).long()
    if q.dtype == torch.bool or q.is_complex():
        raise HdsimError(f"{name}: expected integer offsets or float GSBCs, got dtype {q.dtype}")
    if q.dim() == 1:
        q = q.unsqueeze(0)
    if q.dim() != 2 or q.shape[1] != B:
        raise HdsimError(f"{name}: expected integer offsets of shape (N, {B}), got {tuple(q.shape)}")
    if q.shape[0] == 0:
        raise HdsimError(f"{name}: expected at least 1 query, got 0")
    if bool(((q < 0) | (q >= L)).any()):
        raise HdsimError(f"{name}: offsets must be in [0, {L}), found {int(q.min())}..{int(q.max())}")
    return q.long()


@dataclass(frozen=True)
class SparseResonatorConfig:
    """Sparse resonator hyper-parameters.

    Attributes:
        a: attention sparsity, the number of largest attention entries kept per
            factor (>= 1; values >= M keep all). Default 6: best of the values
            tried at D=1024, B=64 (see ``docs/factorizers.md``).
        max_iter: iteration cap; ``None`` means :func:`default_sparse_max_iter`.
        Tc: convergence threshold in ``[0, 1]``: a query converges in an iteration in which
            no estimate changes and every factor's ``max_similarity`` is ``>= Tc``. ``0``
            (default) is the seed's rule (no change only).
        restarts: re-initialize a query that stopped changing below ``Tc`` from a random
            bundle (separate draw stream, module docstring). Never triggers with ``Tc = 0``.
            Default ``False``.
    """

    a: int = 6
    max_iter: int | None = None
    Tc: float = 0.0
    restarts: bool = False

    def resolved_max_iter(self, sizes: tuple[int, ...]) -> int:
        return self.max_iter if self.max_iter is not None else default_sparse_max_iter(sizes)

    def validate(self) -> None:
        """Raise :class:`HdsimError` naming the first parameter out of range."""
        if isinstance(self.a, bool) or not isinstance(self.a, int) or self.a < 1:
            raise HdsimError(f"a: attention sparsity must be an integer >= 1, got {self.a!r}")
        if self.max_iter is not None and (isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int)
                                          or self.max_iter < 1):
            raise HdsimError(f"max_iter: must be an integer >= 1, got {self.max_iter!r}")
        check_convergence_rule(self.Tc, self.restarts)

    def as_dict(self, sizes: tuple[int, ...]) -> dict:
        d = asdict(self)
        d["max_iter"] = self.resolved_max_iter(sizes)
        return d


class SparseResonatorNetwork:
    """Sparse resonator network on maximally sparse segment codes (SBC offsets).

    Per factor: ``u = q ⊘ ⊛_{g != f} x_g`` (index subtraction); ``w = X_f^T u + r``;
    keep the top ``a``; ``x_f = thin(bundle(X_f, w))``; stop when no estimate changes.
    The draws (``r``, thin keys) are counter-based per query id (module docstring), so
    a query's result does not depend on ``batch_size`` or on the other queries.

    Shapes:
        codebooks: ``F`` offset tensors ``(M_f, B)``
        queries: offsets ``(N, B)`` int, or dense ``(N, D)`` / ``(N, B, L)`` float
        result: indices ``(N, F)``, iterations ``(N,)``, converged ``(N,)``,
        max_similarity ``(N, F)`` (overlap / ``B``)

    Args:
        codebooks: the ``F`` SBC codebooks.
        config: hyper-parameters (validated here).
        seed: seed of the random draws, an integer in ``[0, 2^64)``.
        device: torch device for the computation.
        dtype: ``torch.float32`` (default) or ``torch.float64`` for the weights.

    Example:
        >>> cb, q, truth = make_problem(F=3, M=10, D=1024, n=16, seed=0)
        >>> net = SparseResonatorNetwork(cb, seed=1)
        >>> res = net.factorize(q)
        >>> res.accuracy(truth), bool(res.converged.all())
        (1.0, True)
        >>> torch.equal(net.factorize(q[5:], first_id=5).iterations, res.iterations[5:])
        True
        >>> cb, q, truth = make_problem(F=2, M=10, D=128, n=50, seed=0, B=4)  # few segments
        >>> strict = SparseResonatorConfig(Tc=1.0, restarts=True, max_iter=200)
        >>> SparseResonatorNetwork(cb, strict, seed=1).factorize(q).accuracy(truth)
        1.0
    """

    def __init__(self, codebooks: BlockCodebooks, config: SparseResonatorConfig = SparseResonatorConfig(), *,
                 seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        config.validate()
        if not isinstance(codebooks, BlockCodebooks) or codebooks.F < 1:
            raise HdsimError("codebooks: expected BlockCodebooks with at least 1 factor")
        if dtype not in (torch.float32, torch.float64):
            raise HdsimError(f"dtype: expected float32 or float64, got {dtype}")
        check_seed("seed", seed, bits=64)
        self.device = torch.device(device)
        self.codebooks = codebooks.to(self.device)
        self.config = config
        self.seed = int(seed)
        self._key = seed_key(self.seed)
        self.dtype = dtype
        self.max_iter = config.resolved_max_iter(codebooks.sizes)
        self.Tc = float(config.Tc)
        self._restart_key = self._key ^ RESTART_SALT

    def thin(self, bundled: Tensor, keys: Tensor) -> Tensor:
        """Per-block argmax; among the positions equal to the block maximum the largest key wins.

        ``x_b = argmax_l { keys[b, l] if bundled[b, l] == max_l' bundled[b, l'] else -1 }``
        (equal keys: the lowest position).

        Shapes:
            bundled: ``(k, B, L)`` float
            keys: ``(k, B, L)`` int64 in ``[0, 2^32)`` (from :func:`hdsim.hashing.counter_bits`)
            returns: ``(k, B)`` int64 offsets

        Example:
            >>> cb = BlockCodebooks((torch.tensor([[0]]),), L=3)
            >>> net = SparseResonatorNetwork(cb)
            >>> bundled = torch.tensor([[[0.5, 0.0, 0.5]]])
            >>> net.thin(bundled, torch.tensor([[[7, 9, 3]]])), net.thin(bundled, torch.tensor([[[3, 9, 7]]]))
            (tensor([[0]]), tensor([[2]]))
        """
        top = bundled.amax(dim=-1, keepdim=True)
        return torch.where(bundled == top, keys, torch.full_like(keys, -1)).argmax(dim=-1)

    def _words(self, ids: Tensor, event: int, count: int, key: int | None = None) -> Tensor:
        """``(k, count)`` hash words of event ``event`` for the queries ``ids``, on the device
        (stream ``key``; ``None``: the main stream ``seed_key(seed)``)."""
        return counter_bits(self._key if key is None else key, ids, event, count)

    def _thin_drawn(self, bundled: Tensor, ids: Tensor, event: int, key: int | None = None) -> Tensor:
        """:meth:`thin` with the keys of event ``event``, hashed only for the queries that need them.

        A query whose blocks each have a single maximum ignores its keys, and a query's keys do not
        depend on the others', so skipping it changes nothing (usual after init: the weights
        ``o + r`` rarely sum to equal values)."""
        k, B, L = bundled.shape
        top = bundled.amax(dim=-1, keepdim=True)
        at_max = bundled == top
        out = at_max.to(torch.uint8).argmax(dim=-1)  # the only maximum where there is one
        rows = (at_max.sum(dim=-1) > 1).any(dim=-1).nonzero().squeeze(1)
        if rows.numel():
            keys = self._words(ids[rows], event, B * L, key).view(-1, B, L)
            out[rows] = self.thin(bundled[rows], keys)
        return out

    def initial_estimates(self, ids: Tensor) -> Tensor:
        """``x_f = thin(bundle(all codevectors of X_f))`` per query, with factor ``f``'s keys from event ``f``.

        Shapes:
            ids: ``(n,)`` int64 global query ids (on the device)
            returns: offsets ``(n, F, B)`` int64
        """
        cb = self.codebooks
        n = ids.shape[0]
        est = []
        for f, X in enumerate(cb.indices):
            ones = torch.ones(1, X.shape[0], dtype=self.dtype, device=self.device)
            bundled = bundle_sbc(X, ones, cb.L).expand(n, -1, -1)
            est.append(self._thin_drawn(bundled, ids, f))
        return torch.stack(est, dim=1)

    def restart_estimates(self, ids: Tensor, t: int) -> Tensor:
        """The restart after iteration ``t``: ``x_f = thin(bundle(X_f, v), keys)`` for every factor.

        Drawn from the restart stream (key ``seed_key(seed) XOR 0x5BD1E995``): event
        ``2 (F (t - 1) + f)`` gives ``v_m = (word >> 16) / 2^16`` (``M_f`` words), the next
        event the thin keys (``B L`` words).

        Shapes:
            ids: ``(k,)`` int64 global query ids (on the device)
            returns: offsets ``(k, F, B)`` int64
        """
        cb = self.codebooks
        est = []
        for f, X in enumerate(cb.indices):
            event = 2 * (cb.F * (t - 1) + f)
            v = (self._words(ids, event, X.shape[0], self._restart_key) >> 16).to(self.dtype) * 2.0 ** -16
            est.append(self._thin_drawn(bundle_sbc(X, v, cb.L), ids, event + 1, self._restart_key))
        return torch.stack(est, dim=1)

    def factorize(self, queries: Tensor, batch_size: int | None = None, first_id: int = 0,
                  ids: Tensor | None = None) -> FactorizationResult:
        """Decode a batch of queries.

        Shapes:
            queries: offsets ``(N, B)`` int, or dense ``(N, D)`` / ``(N, B, L)`` float
            ids: ``(N,)`` non-negative integers (int64 tensor or NumPy array), or ``None``
            returns: :class:`FactorizationResult` (on the CPU)

        Args:
            batch_size: queries decoded together (memory and speed only; the results do
                not depend on it); ``None`` for all at once.
            first_id: the global id of ``queries[0]`` (query ``i`` has id ``first_id + i``;
                ids are taken mod ``2^32``): decoding a stream in calls of ``k`` with
                ``first_id = 0, k, 2k, ...`` gives what one call over the whole stream gives.
            ids: the global id of each query (mod ``2^32``), overriding ``first_id`` (then
                ignored); :func:`hdsim.sparse_resonator_numpy.content_ids` of the offsets makes
                a query's result independent of its position.
        """
        cb = self.codebooks
        q = check_sbc_queries(queries, cb.B, cb.L)
        N = q.shape[0]
        check_int("batch_size", batch_size, optional=True)
        check_int("first_id", first_id, minimum=0)
        if ids is None:
            all_ids = torch.arange(N) + first_id
        else:
            all_ids = torch.from_numpy(check_ids(ids, N))
        step = N if batch_size is None else batch_size
        parts = [self._factorize_batch(q[s:s + step], all_ids[s:s + step]) for s in range(0, N, step)]
        return FactorizationResult.concat(parts)

    def _factorize_batch(self, queries: Tensor, batch_ids: Tensor) -> FactorizationResult:
        cb, a = self.codebooks, self.config.a
        F, B, L = cb.F, cb.B, cb.L
        restarts = self.config.restarts
        q = queries.to(self.device)
        batch_ids = batch_ids.to(self.device)
        n = q.shape[0]
        res = FactorizationResult.zeros(n, F, self.dtype)  # filled in place below
        indices, iterations, converged, max_sim = res.indices, res.iterations, res.converged, res.max_similarity

        active = torch.arange(n, device=self.device)  # batch positions still decoding
        x = self.initial_estimates(batch_ids)
        event = F  # init took events 0..F-1; the same count for every query of the call
        for it in range(1, self.max_iter + 1):
            k = active.numel()
            ids = batch_ids[active]
            changed = torch.zeros(k, dtype=torch.bool, device=self.device)
            arg = torch.empty(k, F, dtype=torch.long, device=self.device)
            best = torch.empty(k, F, dtype=self.dtype, device=self.device)
            for f, X in enumerate(cb.indices):
                M = X.shape[0]
                # Sequential: x already holds this iteration's update of factors < f.
                u = q
                for h in range(F):
                    if h != f:
                        u = unbind_sbc(u, x[:, h], L)
                # Overlap count = 'dot' similarity of the one-hot u with each codevector.
                overlap = similarity(sbc_to_dense(u, L, self.dtype), X, "dot")  # (k, M), exact integers
                best[:, f], arg[:, f] = overlap.max(dim=1)  # lowest index wins ties
                r = (self._words(ids, event, M) >> 16).to(self.dtype) * 2.0 ** -16  # 16-bit uniform in [0, 1)
                w = overlap + r
                if a < M:  # keep the a largest; a stable sort puts equal weights in index order
                    top = torch.sort(w, dim=1, descending=True, stable=True).indices[:, :a]
                    w = torch.zeros_like(w).scatter_(1, top, w.gather(1, top))
                new = self._thin_drawn(bundle_sbc(X, w, L), ids, event + 1)
                event += 2
                changed |= (new != x[:, f]).any(dim=1)
                x[:, f] = new
            rows = active.cpu()
            indices[rows] = arg.cpu()
            max_sim[rows] = (best / B).cpu()
            iterations[rows] = it
            done = ~changed
            if self.Tc > 0:
                reached = ((best.to(torch.float64) / B) >= self.Tc).all(dim=1)  # overlap / B in float64
                stuck = done & ~reached
                done &= reached
                if restarts and it < self.max_iter and bool(stuck.any()):  # a last restart would change nothing
                    x[stuck] = self.restart_estimates(ids[stuck], it)
            if bool(done.any()):
                keep = ~done
                converged[rows[done.cpu()]] = True
                active, q, x = active[keep], q[keep], x[keep]
                if active.numel() == 0:
                    break
        return res
