"""Block code factorizer (BCF), float reference — SPEC section 3.

Batched over queries, on any torch device. Each iteration works only on the
queries still running: a query that converged is written out and dropped from
the working set, so it stops costing work.
"""

from __future__ import annotations


import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks, check_gsbc
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult, RandomSampler, Sampler, reset_sampler
from hdsim.functional import block_normalize, bundle_sbc, multibind, similarity, unbind
from hdsim.factorizers.config import BCFConfig, default_max_iter
from hdsim.validation import check_int

__all__ = ["BCFConfig", "BlockCodeFactorizer", "default_max_iter"]


class BlockCodeFactorizer:
    """Factorize GSBC product vectors into one codevector per codebook.

    Args:
        codebooks: the ``F`` SBC codebooks.
        config: hyper-parameters (validated here).
        sampler: draws the conditional-sampling indices; default
            :class:`RandomSampler` seeded with ``seed``. Inject an LFSR-driven
            sampler to reproduce the fixed-point model's draws.
        mvm: ``dot`` similarity only: run the similarity ``a = onehot(X_f) u`` and the
            bundling ``onehot(X_f)^T w`` through ``mvm.similarity(u (k,B,L), f) -> (k,M_f)``
            and ``mvm.bundle(w (k,M_f), f) -> (k,B,L)`` (e.g. :class:`hdsim.imc.BlockCrossbarMVMs`,
            a PCM crossbar); the bundle is clipped at 0 and then block-normalized.
            ``mvm.reset()`` is called at the start of every ``factorize``.
        seed: seed of the default sampler.
        device: torch device for the computation.
        dtype: ``torch.float32`` (default) or ``torch.float64``.

    Example:
        >>> from hdsim.codes import random_codebooks
        >>> from hdsim.queries import make_queries
        >>> cb = random_codebooks(F=2, M=20, D=256, B=4, seed=0)
        >>> qs = make_queries(cb, 8, seed=1)
        >>> res = BlockCodeFactorizer(cb).factorize(qs.queries)
        >>> bool((res.indices == qs.factors).all())
        True
    """

    def __init__(self, codebooks: BlockCodebooks, config: BCFConfig = BCFConfig(), *,
                 sampler: Sampler | None = None, seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, mvm=None) -> None:
        config.validate(codebooks.B)
        if mvm is not None and config.similarity != "dot":
            raise HdsimError(f"mvm: crossbar MVMs need similarity='dot', got {config.similarity!r}")
        if mvm is not None and not all(callable(getattr(mvm, m, None)) for m in ("similarity", "bundle", "reset")):
            raise HdsimError("mvm: expected an object with similarity(u, f), bundle(w, f) and reset() "
                             "(e.g. hdsim.imc.BlockCrossbarMVMs)")
        self.mvm = mvm
        if dtype not in (torch.float32, torch.float64):
            raise HdsimError(f"dtype: expected float32 or float64, got {dtype}")
        self.device = torch.device(device)
        self.codebooks = codebooks.to(self.device)
        self.config = config
        self.sampler: Sampler = sampler if sampler is not None else RandomSampler(seed)
        self.dtype = dtype
        self.Tc = config.resolved_Tc(codebooks.B)
        self.max_iter = config.resolved_max_iter(codebooks.sizes)

    def initial_estimates(self, n: int) -> Tensor:
        """``x_f = bundle(all codevectors of X_f, equal weights)``, shape ``(n, F, B, L)``."""
        cb = self.codebooks
        init = torch.stack([
            bundle_sbc(X, torch.ones(1, X.shape[0], dtype=self.dtype, device=self.device), cb.L)[0]
            for X in cb.indices])
        return init.unsqueeze(0).expand(n, -1, -1, -1).clone()

    def factorize(self, queries: Tensor, batch_size: int | None = None, *, first_id: int = 0) -> FactorizationResult:
        """Decode a batch of queries.

        Shapes:
            queries: ``(N, D)`` or ``(N, B, L)`` non-negative (blocks are l1-normalized here)
            returns: :class:`FactorizationResult` with ``(N, F)`` indices

        Args:
            batch_size: queries decoded together; ``None`` for all at once.
            first_id: the sampler's query id of ``queries[0]`` (ids are ``first_id + position``):
                decoding a long stream in calls of ``k`` with ``first_id = 0, k, 2k, ...`` draws
                what one call over the whole stream draws.
        """
        cb = self.codebooks
        q = check_gsbc(queries, cb.B, cb.L)
        N = q.shape[0]
        check_int("batch_size", batch_size, optional=True)
        check_int("first_id", first_id, minimum=0)
        step = N if batch_size is None else batch_size
        if self.mvm is not None:
            self.mvm.reset()
        reset_sampler(self.sampler)  # a call's draws depend on its queries only, not on earlier calls
        parts = [self._factorize_batch(q[s:s + step], offset=first_id + s) for s in range(0, N, step)]
        return FactorizationResult.concat(parts)

    def _factorize_batch(self, queries: Tensor, offset: int) -> FactorizationResult:
        cb, cfg = self.codebooks, self.config
        F, L = cb.F, cb.L
        q_all = block_normalize(queries.to(self.device, self.dtype))
        n = q_all.shape[0]
        res = FactorizationResult.zeros(n, F, self.dtype)  # filled in place below
        indices, iterations, converged, max_sim = res.indices, res.iterations, res.converged, res.max_similarity

        active = torch.arange(n, device=self.device)  # batch positions still decoding
        q = q_all
        x = self.initial_estimates(n)
        others = [[g for g in range(F) if g != f] for f in range(F)]
        for it in range(1, self.max_iter + 1):
            k = active.numel()
            all_conv = torch.ones(k, dtype=torch.bool, device=self.device)
            arg = torch.empty(k, F, dtype=torch.long, device=self.device)
            amax_all = torch.empty(k, F, dtype=self.dtype, device=self.device)
            for f in range(F):
                X = cb.indices[f]
                # Sequential decoding: x already holds this iteration's update of factors < f.
                u = unbind(q, multibind(x[:, others[f]])) if F > 1 else q
                u = u.clamp_min(0)  # exact value is >= 0; drop FFT round-off below 0
                a = similarity(u, X, cfg.similarity) if self.mvm is None else self.mvm.similarity(u, f)
                amax, aarg = a.max(dim=1)  # lowest index wins ties
                keep = a >= cfg.T
                none_kept = ~keep.any(dim=1, keepdim=True)
                w = torch.where(keep | none_kept, a, torch.zeros_like(a))
                if cfg.A > 0:
                    sampled = amax <= cfg.T
                    if bool(sampled.any()):
                        rows = sampled.nonzero().squeeze(1)
                        w[rows] = 0
                        M = X.shape[0]
                        if cfg.A >= M:
                            w[rows] = 1
                        else:
                            picks = self.sampler(active[rows].cpu() + offset, f, M, cfg.A).to(self.device)
                            w[rows.unsqueeze(1), picks] = 1
                else:
                    sampled = torch.zeros_like(amax, dtype=torch.bool)
                pull = ~sampled & (amax >= self.Tc)
                w = torch.where(pull.unsqueeze(1), torch.nn.functional.one_hot(aarg, X.shape[0]).to(w.dtype), w)
                if self.mvm is None:
                    x[:, f] = bundle_sbc(X, w, L)
                else:
                    x[:, f] = block_normalize(self.mvm.bundle(w, f).clamp_min(0))
                all_conv &= pull
                arg[:, f] = aarg
                amax_all[:, f] = amax
            rows = active.cpu()
            indices[rows] = arg.cpu()
            max_sim[rows] = amax_all.cpu()
            iterations[rows] = it
            if bool(all_conv.any()):
                converged[rows[all_conv.cpu()]] = True
                stay = ~all_conv
                active, q, x = active[stay], q[stay], x[stay]
                if active.numel() == 0:
                    break
        return res
