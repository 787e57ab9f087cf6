"""Continuous batching BCF in torch (CPU or CUDA): a converged query's slot is refilled at once.

:class:`~hdsim.factorizers.BlockCodeFactorizer` decodes a batch until its slowest query stops, so
the end of every batch runs a handful of queries per tensor op (the batch tail). Here the working
set is a pool of ``slots`` queries drawn from the whole stream: after every iteration the
queries that stopped (converged, or at ``max_iter``) leave and the next queries of the stream take
their places, so every iteration runs on a full pool until the stream runs dry. On a GPU this keeps
the device busy with one large batch; on the CPU it spreads the per-op overhead over ``slots``
queries.

Each iteration is SPEC section 3's, with the float reference's tensor ops (FFT unbinding, gather
similarity, scatter bundle) and its sampler protocol: query ``first_id + n`` is sampler id
``first_id + n`` whichever slot it occupies, so with the same sampler (e.g.
:class:`hdsim.lfsr.LFSRSampler`) and dtype it takes the reference's decisions
(``tests/test_engine.py``), and those of :class:`hdsim.engine.NumbaBCF` in float64.

Example:
    >>> from hdsim.codes import random_codebooks
    >>> from hdsim.queries import make_queries
    >>> cb = random_codebooks(F=2, M=20, D=256, B=4, seed=0)
    >>> qs = make_queries(cb, 8, seed=1)
    >>> res = ContinuousBCF(cb, slots=4).factorize(qs.queries)
    >>> bool((res.indices == qs.factors).all())
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks, check_gsbc
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult, Sampler, reset_sampler
from hdsim.factorizers.config import BCFConfig
from hdsim.functional import block_normalize, bundle_sbc, multibind, similarity, unbind
from hdsim.lfsr import LFSRSampler
from hdsim.validation import check_int

__all__ = ["ContinuousBCF"]


class ContinuousBCF:
    """The BCF over a stream of queries with a refilled pool of ``slots`` (module docstring).

    Args:
        codebooks: the ``F`` SBC codebooks.
        config: hyper-parameters (validated here).
        sampler: draws the conditional samples; default :class:`~hdsim.lfsr.LFSRSampler` ``(seed)``.
        seed: seed of the default sampler (non-zero, 32-bit).
        slots: queries decoded together.
        device: torch device.
        dtype: ``torch.float64`` (default: the decisions of the numba engine) or ``torch.float32``.
    """

    def __init__(self, codebooks: BlockCodebooks, config: BCFConfig = BCFConfig(), *,
                 sampler: Sampler | None = None, seed: int = 1, slots: int = 256,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> None:
        config.validate(codebooks.B)
        check_int("slots", slots)
        if dtype not in (torch.float32, torch.float64):
            raise HdsimError(f"dtype: expected float32 or float64, got {dtype}")
        self.device = torch.device(device)
        self.codebooks = codebooks.to(self.device)
        self.config, self.dtype, self.slots = config, dtype, slots
        self.sampler: Sampler = sampler if sampler is not None else LFSRSampler(seed)
        self.Tc = config.resolved_Tc(codebooks.B)
        self.max_iter = config.resolved_max_iter(codebooks.sizes)
        cb = self.codebooks
        self._x0 = torch.stack([bundle_sbc(X, torch.ones(1, X.shape[0], dtype=dtype, device=self.device), cb.L)[0]
                                for X in cb.indices])  # (F, B, L): every codevector, weight 1

    def _iteration(self, q: Tensor, x: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One BCF iteration of the pool in place on ``x``; returns ``(arg, amax, all_pulled)``."""
        cb, cfg = self.codebooks, self.config
        F, L, k = cb.F, cb.L, q.shape[0]
        all_pulled = torch.ones(k, dtype=torch.bool, device=self.device)
        arg = torch.empty(k, F, dtype=torch.long, device=self.device)
        amax_all = torch.empty(k, F, dtype=self.dtype, device=self.device)
        for f in range(F):
            X = cb.indices[f]
            M = X.shape[0]
            others = [g for g in range(F) if g != f]
            u = unbind(q, multibind(x[:, others])).clamp_min(0) if F > 1 else q
            a = similarity(u, X, cfg.similarity)
            amax, aarg = a.max(dim=1)  # first maximum
            keep = a >= cfg.T
            w = torch.where(keep | ~keep.any(dim=1, keepdim=True), a, torch.zeros_like(a))
            sampled = (amax <= cfg.T) & (cfg.A > 0)
            if cfg.A > 0 and bool(sampled.any()):
                rows = sampled.nonzero().squeeze(1)
                w[rows] = 0 if cfg.A < M else 1
                if cfg.A < M:
                    picks = self.sampler(ids[rows].cpu(), f, M, cfg.A).to(self.device)
                    w[rows.unsqueeze(1), picks] = 1
            pulled = ~sampled & (amax >= self.Tc)
            w = torch.where(pulled.unsqueeze(1), torch.nn.functional.one_hot(aarg, M).to(w.dtype), w)
            x[:, f] = bundle_sbc(X, w, L)
            all_pulled &= pulled
            arg[:, f], amax_all[:, f] = aarg, amax
        return arg, amax_all, all_pulled

    def factorize(self, queries: Tensor, *, first_id: int = 0) -> FactorizationResult:
        """Decode a stream of queries.

        Shapes:
            queries: ``(N, D)`` or ``(N, B, L)`` non-negative (blocks l1-normalized here)
            returns: :class:`FactorizationResult` with ``(N, F)`` indices (on the CPU)

        Args:
            first_id: the sampler id of ``queries[0]`` (as ``BlockCodeFactorizer.factorize``'s).
        """
        cb = self.codebooks
        check_int("first_id", first_id, minimum=0)
        q_all = block_normalize(check_gsbc(queries, cb.B, cb.L).to(self.device, self.dtype))
        N = q_all.shape[0]
        reset_sampler(self.sampler)
        res = FactorizationResult.zeros(N, cb.F, self.dtype)
        dev = self.device
        ids = torch.zeros(0, dtype=torch.long, device=dev)  # stream positions in the pool
        its = torch.zeros(0, dtype=torch.long, device=dev)
        q = q_all[:0]
        x = self._x0.unsqueeze(0)[:0].clone()
        nxt = 0
        while nxt < N or ids.numel():
            take = min(self.slots - ids.numel(), N - nxt)
            if take > 0:  # refill the free slots from the stream
                new = torch.arange(nxt, nxt + take, device=dev)
                ids = torch.cat([ids, new])
                its = torch.cat([its, torch.zeros(take, dtype=torch.long, device=dev)])
                q = torch.cat([q, q_all[nxt:nxt + take]])
                x = torch.cat([x, self._x0.unsqueeze(0).expand(take, -1, -1, -1)])
                nxt += take
            arg, amax, pulled = self._iteration(q, x, ids + first_id)
            its += 1
            done = pulled | (its >= self.max_iter)
            if bool(done.any()):
                rows = ids[done].cpu()
                res.indices[rows] = arg[done].cpu()
                res.max_similarity[rows] = amax[done].cpu()
                res.iterations[rows] = its[done].cpu()
                res.converged[rows] = pulled[done].cpu()
                stay = ~done
                ids, its, q, x = ids[stay], its[stay], q[stay], x[stay]
        return res
