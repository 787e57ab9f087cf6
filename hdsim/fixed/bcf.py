"""Bit-accurate integer model of the BCF datapath — SPEC sections 3 and 5.

The golden reference of the RTL. Each iteration runs SPEC 3's steps on
integers of the widths in :class:`~hdsim.fixed.widths.Datapath` (see
``docs/fixed_point.md`` for the table), every op naming its rounding and
overflow from :mod:`hdsim.fixed.rounding`:

1. unbind (per other factor, ascending ``g``): ``acc[l] = sum_j t[(l+j) mod L] * x_g[j]``
   (exact), ``t <- saturate(round_half_up(acc / 2^(Win + Wx - Wu)), Wu)``;
   ``u_f`` is the last ``t`` (``t`` starts as the query, ``Win = Wq``).
2. similarity: ``a_m = min_b u[b, X[m,b]]`` (``linf``) or ``sum_b`` (``dot``), exact;
   optional integer IMC perturbation added here, saturated to the ``a`` word.
3. threshold: ``w_m = a_m if a_m >= T_int else 0``; all-zero keeps ``w = a``.
4. sampling: if ``max a <= T_int`` and ``A > 0``: ``w`` = 1 at ``A`` LFSR-drawn indices, else 0.
5. pull-up: not sampled and ``max a >= Tc_int``: ``w`` one-hot (value 1) at the argmax.
6. bundle: ``s[b,l] = sum_{m: X[m,b]=l} w_m`` (exact); ``S = sum_m w_m`` (every block
   of an SBC codebook receives every weight once, so ``S`` is the block sum of all blocks).
7. normalize with one reciprocal per factor: ``p = bitlen(S)``,
   ``R = floor(2^(p+G) / S)``, ``x[b,l] = saturate((s[b,l] * R) >> (p + G - Wx), Wx)``
   (floor); ``S = 0`` gives ``x = 0``. Since ``R <= 2^(p+G)/S`` the block sum of
   ``x`` never exceeds ``2^Wx``; the value is low by less than ``2^-G`` relative
   plus one LSB of floor per entry (``docs/fixed_point.md``).

Randomness: the conditional sampling draws from an injected sampler; the
default is :class:`hdsim.lfsr.LFSRSampler`, the generator the RTL implements,
so the float reference given the same sampler draws the same indices.

All arithmetic of the decode is on integer tensors (int64), the correlation of
step 1 included: on the CPU a grouped integer ``conv1d`` (on int32 where
``acc_bits <= 31``, as at 8-bit words), on other devices (CUDA has no integer
convolution or matmul) an int64 gather, multiply and sum. No float
(nor TF32) op touches a datapath word; the only floats are the float queries'
quantization (:func:`quantize_query`, exact by construction) and the reported
``max_similarity``. Every sum fits int64 with room to spare: ``acc < 2^acc_bits``
with ``acc_bits = max(Wq, Wu) + Wx <= 60`` (:class:`Datapath`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks, check_gsbc, gsbc_shape
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult, Sampler, reset_sampler
from hdsim.factorizers.bcf import BCFConfig
from hdsim.fixed.rounding import bit_length, saturate_unsigned, shift_floor, shift_round_half_up
from hdsim.fixed.widths import QUERY_PRESCALE_BITS, Datapath, FixedWidths
from hdsim.functional import similarity
from hdsim.validation import check_int

__all__ = ["FixedBCF", "FactorStep", "IterationState", "SimilarityPerturbation", "quantize_query",
           "QUERY_PRESCALE_BITS"]

# (iteration, factor, query_ids (k,), u (k, B, L) int64, a (k, M_f) int64) -> (k, M_f) int64
# perturbations added to the similarities at the ADC output (IMC noise; see hdsim.imc).
SimilarityPerturbation = Callable[[int, int, Tensor, Tensor, Tensor], Tensor]




def _pow2(n: Tensor) -> Tensor:
    """``2^n`` as float64, built from its bits (exact; ``-1022 <= n <= 1023``)."""
    return ((n + 1023) << 52).view(torch.float64)


def quantize_query(q: Tensor, bits: int) -> Tensor:
    """Float GSBC blocks to ``Q0.bits`` words, normalized per block — the model's float-to-integer boundary.

    For each block ``b``: ``e`` = binary exponent of the block's largest entry
    (``max = f 2^e``, ``f`` in ``[1/2, 1)``), ``v_l = floor(q_l 2^(K - e))`` with
    ``K = QUERY_PRESCALE_BITS`` (exact: a float times a power of two), ``S = sum_l v_l``
    (an exact integer), and

        ``word_l = saturate(round_half_up(v_l 2^bits / S), bits)``, ``0`` where ``S = 0``

    computed as ``floor((2 v_l 2^bits + S) / (2 S))`` on integers. It equals the
    real ``q_l / sum(q) * 2^bits`` rounded half up when every entry is a multiple of
    ``2^(e - K)`` and is within one LSB of it otherwise (for ``bits <= 24``), for any
    float block (subnormals included: only an all-zero block is empty), and does not depend on the
    order of any sum. Blocks need not sum to 1 (any positive scale gives the same words).

    Shapes:
        q: ``(N, B, L)`` float, finite and non-negative (see :func:`hdsim.codes.check_gsbc`);
        returns the same shape, int64.

    Example:
        >>> quantize_query(torch.tensor([[[1.0, 3.0, 4.0]]]), 2)  # 0.5, 1.5, 2 LSB: ties round up
        tensor([[[1, 2, 2]]])
    """
    qd = q.double()
    s = QUERY_PRESCALE_BITS - torch.frexp(qd.amax(dim=-1, keepdim=True)).exponent.long()
    # 2^s can exceed float64's range (s up to 1104 for a subnormal maximum): scale in two exact
    # power-of-two steps. Upward steps are exact; a downward step that rounds lands below 1 and floors to 0.
    h = s >> 1
    v = torch.floor(qd * _pow2(h) * _pow2(s - h)).long()
    S = v.sum(dim=-1, keepdim=True)
    words = ((v << (bits + 1)) + S) // torch.where(S > 0, 2 * S, torch.ones_like(S))
    return saturate_unsigned(words, bits)


def codevector_positions(codebooks: BlockCodebooks) -> list[tuple[Tensor, Tensor]]:
    """Per factor, the distinct positions its codevectors occupy in each block, as tensors
    (:func:`hdsim.fixed.compiled.codevector_positions`, the one definition, on the codebooks' offsets).

    Returns ``(pos, count)`` per factor: ``pos`` ``(B, P)`` int64, block ``b``'s distinct
    ``X[m, b]`` in ascending order in its first ``count[b]`` entries (zero-padded to the
    largest count ``P``), ``count`` ``(B,)`` int64. Any bundle of the factor's codevectors
    (hence any estimate) is zero outside them.
    """
    from hdsim.fixed.compiled import codevector_positions as positions

    return [(torch.from_numpy(p), torch.from_numpy(c))
            for p, c in positions([X.cpu().numpy() for X in codebooks.indices])]


@dataclass
class FactorStep:
    """One factor's update in one iteration, for the ``k`` queries still running (int64 numpy)."""

    u: np.ndarray  # (k, B, L) unbinding result
    a: np.ndarray  # (k, M) similarities (after any injected perturbation)
    w: np.ndarray  # (k, M) bundling weights
    S: np.ndarray  # (k,) weight sum
    R: np.ndarray  # (k,) reciprocal
    x: np.ndarray  # (k, B, L) new estimate
    amax: np.ndarray  # (k,)
    argmax: np.ndarray  # (k,)
    sampled: np.ndarray  # (k,) bool
    pulled: np.ndarray  # (k,) bool


@dataclass
class IterationState:
    """Full state after one iteration, as the RTL scoreboard compares it."""

    iteration: int
    query_ids: np.ndarray  # (k,) positions in the decoded batch
    factors: list[FactorStep] = field(default_factory=list)
    converged: np.ndarray | None = None  # (k,) all factors pulled up this iteration


class FixedBCF:
    """Integer-only BCF (see the module docstring for the datapath).

    Args:
        codebooks: the ``F`` SBC codebooks.
        config: the float BCF's hyper-parameters; ``T`` and ``Tc`` are quantized once here.
        widths: word widths (validated here, with the config).
        sampler: conditional-sampling indices; default ``LFSRSampler(seed)``.
        seed: seed of the default sampler.
        device: torch device of the computation.

    Example:
        >>> from hdsim.codes import random_codebooks
        >>> from hdsim.queries import make_queries
        >>> cb = random_codebooks(F=2, M=20, D=256, B=4, seed=0)
        >>> qs = make_queries(cb, 8, seed=1)
        >>> res = FixedBCF(cb, BCFConfig(), FixedWidths.uniform(8)).factorize(qs.queries)
        >>> bool((res.indices == qs.factors).all())
        True
    """

    def __init__(self, codebooks: BlockCodebooks, config: BCFConfig = BCFConfig(),
                 widths: FixedWidths = FixedWidths(), *, sampler: Sampler | None = None, seed: int = 1,
                 device: torch.device | str = "cpu") -> None:
        config.validate(codebooks.B)
        self.device = torch.device(device)
        self.codebooks = codebooks.to(self.device)
        self.config = config
        self.dp = Datapath.build(widths, codebooks.B, codebooks.L, codebooks.sizes, config.similarity,
                                 config.T, config.resolved_Tc(codebooks.B), config.A)
        self.widths = widths
        self.max_iter = config.resolved_max_iter(codebooks.sizes)
        if sampler is None:
            from hdsim.lfsr import LFSRSampler

            sampler = LFSRSampler(seed)
        self.sampler = sampler
        # Every partial sum of the correlation is a non-negative integer below 2^acc_bits (Datapath):
        # int32 holds it exactly up to 31 bits (8-bit words need 16), int64 beyond. Beyond 31 bits the
        # CPU splits the operand t (< 2^Wt, Wt = max(Wq, Wu)) at bit h = 31 - Wx: conv(t_lo, x) <
        # 2^h sum(x) <= 2^(h + Wx) = 2^31 and conv(t_hi, x) < 2^(Wt - h + Wx) <= 2^31 while
        # Wt + 2 Wx <= 62 (16-bit words: 48), so two int32 convolutions replace one int64 convolution.
        Wt, Wx = max(widths.query, widths.unbound), widths.estimate
        self._int = torch.int32 if self.dp.acc_bits <= 31 else torch.int64
        self._split = 31 - Wx if self.dp.acc_bits > 31 and Wt + 2 * Wx <= 62 else None
        self._x0: Tensor | None = None
        self._supports = self._build_supports()

    # ---- datapath ops -------------------------------------------------------------------------
    def correlate(self, t: Tensor, x: Tensor) -> Tensor:
        """Exact integer circular correlation per block: ``acc[l] = sum_j t[(l+j) mod L] * x[j]``.

        Integers throughout: a grouped integer ``conv1d`` on the CPU (int32 when the datapath's bound
        ``acc < 2^acc_bits`` fits 31 bits; beyond, two int32 convolutions of the high and low bits of
        ``t`` where each stays below 2^31, else int64), :meth:`correlate_gather` elsewhere.

        Shapes: ``t, x: (k, B, L)`` int64 -> ``(k, B, L)`` int64.

        Example:
            >>> from hdsim.codes import random_codebooks
            >>> m = FixedBCF(random_codebooks(F=2, M=4, D=8, B=2, seed=0))
            >>> t = torch.tensor([[[1, 2, 3, 4], [0, 0, 0, 1]]])
            >>> x = torch.tensor([[[0, 1, 0, 0], [2, 0, 0, 0]]])
            >>> m.correlate(t, x)  # block 0: t shifted left by one; block 1: 2 t
            tensor([[[2, 3, 4, 1],
                     [0, 0, 0, 2]]])
        """
        k, B, L = t.shape
        if k == 0:
            return t.clone()
        if t.device.type != "cpu":
            return self.correlate_gather(t, x)
        tt = torch.cat([t, t[..., : L - 1]], dim=-1).reshape(1, k * B, 2 * L - 1)
        w = x.reshape(k * B, 1, L)

        def conv(a: Tensor, dtype: torch.dtype) -> Tensor:
            return torch.nn.functional.conv1d(a.to(dtype), w.to(dtype), groups=k * B).reshape(k, B, L).long()

        if self._split is None:  # one convolution: int32 where every partial sum < 2^31, else int64
            return conv(tt, self._int)
        # t = t_hi 2^h + t_lo: two int32 convolutions (each partial sum < 2^31, see __init__), combined
        # in int64; int32 convolutions are ~7x faster than int64 ones
        h = self._split
        return (conv(tt >> h, torch.int32) << h) + conv(tt & ((1 << h) - 1), torch.int32)

    def correlate_gather(self, t: Tensor, x: Tensor, chunk: int = 1 << 24) -> Tensor:
        """:meth:`correlate` as an int64 gather, multiply and sum (no convolution or matmul), for
        devices without integer ones; at most about ``chunk`` gathered entries at a time.

        Shapes: ``t, x: (k, B, L)`` int64 -> ``(k, B, L)`` int64.
        """
        k, B, L = t.shape
        if k == 0:
            return t.clone()
        j = torch.arange(L, device=t.device)
        shifted = ((j.view(L, 1) + j.view(1, L)) % L).reshape(1, 1, L * L)  # [l, j] -> (l + j) mod L
        step = max(1, chunk // (B * L * L))
        out = []
        for s in range(0, k, step):
            ts, xs = t[s:s + step], x[s:s + step]
            tg = ts.gather(2, shifted.expand(ts.shape[0], B, L * L)).view(-1, B, L, L)
            out.append((tg * xs.unsqueeze(2)).sum(dim=3))
        return torch.cat(out)

    def _build_supports(self) -> list:
        """Per factor, the positions its estimates can be non-zero at, where that is a small set.

        An estimate of factor ``g`` is a normalized bundle of ``g``'s codevectors, so in
        block ``b`` it is zero outside ``{X_g[m, b]}`` (:func:`codevector_positions`).
        Correlating with it then needs those positions only. Returns, per factor, ``None``
        (use the dense correlation) or ``(pos (B, P), valid (B, P), shifted (B, L*P))`` with
        ``shifted[b, l*P + p] = (l + pos[b, p]) mod L``.
        """
        cb = self.codebooks
        out = []
        for pos, count in codevector_positions(cb):
            P = pos.shape[1]
            if 4 * P > cb.L:  # dense enough: the convolution is cheaper and smaller
                out.append(None)
                continue
            pos = pos.to(self.device)
            valid = (torch.arange(P, device=self.device).view(1, P) < count.to(self.device).view(-1, 1)).long()
            l = torch.arange(cb.L, device=self.device).view(1, cb.L, 1)
            shifted = ((l + pos.unsqueeze(1)) % cb.L).reshape(cb.B, cb.L * P)
            out.append((pos, valid, shifted))
        return out

    def correlate_estimate(self, t: Tensor, x: Tensor, g: int) -> Tensor:
        """:meth:`correlate` of ``t`` with an estimate of factor ``g`` (same integers, faster when sparse).

        Shapes: ``t, x: (k, B, L)`` int64 -> ``(k, B, L)`` int64.
        """
        sup = self._supports[g]
        k, B, L = t.shape
        # The gathered (k, B, L, P) operand is memory-bound: from ~32 queries on, the dense
        # grouped convolution is faster (measured on CPU, M=10, L=64; docs/deploy.md).
        if sup is None or k >= 32:
            return self.correlate(t, x)
        pos, valid, shifted = sup
        P = pos.shape[1]
        xv = x.gather(2, pos.unsqueeze(0).expand(k, B, P)) * valid  # x at its possible non-zeros
        tg = t.gather(2, shifted.unsqueeze(0).expand(k, B, L * P)).view(k, B, L, P)
        return (tg * xv.unsqueeze(2)).sum(dim=3)  # int64 multiply-adds, any device

    def unbind(self, q: Tensor, x: Tensor, f: int) -> Tensor:
        """``u_f``: unbind every other factor's estimate from the query, requantizing after each."""
        w = self.widths
        t, w_in = q, w.query
        for g in range(self.codebooks.F):
            if g == f:
                continue
            acc = self.correlate_estimate(t, x[:, g], g)
            # Round half up, not floor: flooring biases every small unbinding result
            # downward and at 8 bits pushes similarities under T (measured: 92% vs 100%
            # accuracy at the reference config, docs/fixed_point.md).
            t = saturate_unsigned(shift_round_half_up(acc, w_in + w.estimate - w.unbound), w.unbound)
            w_in = w.unbound
        if w_in != w.unbound:  # F == 1: the query itself, in the u format
            t = saturate_unsigned(shift_floor(t, w_in - w.unbound), w.unbound)
        return t

    def normalize(self, s: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
        """``x = saturate((s * R) >> (p + G - Wx), Wx)`` with ``R = floor(2^(p+G) / S)``.

        Shapes: ``s: (k, B, L)``, ``S: (k,)`` -> ``x: (k, B, L)``, ``R: (k,)``.
        """
        G, Wx = self.widths.recip_guard, self.widths.estimate
        p = bit_length(S)
        num = torch.ones_like(S) << (p + G)
        R = torch.where(S > 0, torch.div(num, S.clamp_min(1), rounding_mode="floor"), torch.zeros_like(S))
        shift = (p + G - Wx).view(-1, 1, 1)
        x = saturate_unsigned((s * R.view(-1, 1, 1)) >> shift, Wx)
        return x, R

    def bundle(self, w: Tensor, f: int) -> tuple[Tensor, Tensor, Tensor]:
        """Weighted bundle of codebook ``f`` then normalization; returns ``x, S, R``."""
        X = self.codebooks.indices[f]
        k, M = w.shape
        B, L = self.codebooks.B, self.codebooks.L
        s = torch.zeros(k, B, L, dtype=torch.long, device=self.device)
        s.scatter_add_(2, X.t().unsqueeze(0).expand(k, B, M), w.unsqueeze(1).expand(k, B, M))
        S = w.sum(dim=1)
        x, R = self.normalize(s, S)
        return x, S, R

    def initial_estimates(self, n: int) -> Tensor:
        """Every codevector with weight 1, normalized: ``(n, F, B, L)`` int64 (computed once, then copied)."""
        if self._x0 is None:
            xs = []
            for f, X in enumerate(self.codebooks.indices):
                x, _, _ = self.bundle(torch.ones(1, X.shape[0], dtype=torch.long, device=self.device), f)
                xs.append(x[0])
            self._x0 = torch.stack(xs).unsqueeze(0)
        return self._x0.expand(n, -1, -1, -1).clone()

    # ---- decode ---------------------------------------------------------------------------------
    def prepare_queries(self, queries: Tensor) -> Tensor:
        """Integer queries pass through (checked against the query width); float ones are quantized."""
        cb = self.codebooks
        if not queries.is_floating_point():
            q = gsbc_shape(queries, cb.B, cb.L).long()
            hi = (1 << self.widths.query) - 1
            if (q < 0).any() or (q > hi).any():
                raise HdsimError(f"query: integer entries must be in [0, {hi}] for {self.widths.query}-bit words")
            return q.to(self.device)
        return quantize_query(check_gsbc(queries, cb.B, cb.L), self.widths.query).to(self.device)

    def factorize(self, queries: Tensor, batch_size: int | None = None,
                  observe: Callable[[IterationState], None] | None = None,
                  perturb: SimilarityPerturbation | None = None) -> FactorizationResult:
        """Decode queries (float GSBCs, quantized here, or ``Q0.Wq`` integers).

        Args:
            observe: called after every iteration with the full :class:`IterationState`.
            perturb: integer IMC perturbations added to the similarities (ADC output).

        Returns:
            :class:`FactorizationResult`; ``max_similarity`` is the last ``max a`` in units of 1
            (``a / 2^Wu``, a report, not part of the datapath).
        """
        check_int("batch_size", batch_size, optional=True)
        q = self.prepare_queries(queries)
        N = q.shape[0]
        step = N if batch_size is None else batch_size
        reset_sampler(self.sampler)  # every call replays from the seeds (query ids are batch positions)
        parts = [self._decode(q[s:s + step], s, observe, perturb) for s in range(0, N, step)]
        return FactorizationResult.concat(parts)

    def _decode(self, q: Tensor, offset: int, observe, perturb) -> FactorizationResult:
        cb, dp, cfg = self.codebooks, self.dp, self.config
        F = cb.F
        n = q.shape[0]
        res = FactorizationResult.zeros(n, F, torch.long)  # filled in place below
        indices, iterations, converged, amax_out = res.indices, res.iterations, res.converged, res.max_similarity
        active = torch.arange(n, device=self.device)
        x = self.initial_estimates(n)
        for it in range(1, self.max_iter + 1):
            k = active.numel()
            ids = active.cpu() + offset
            state = IterationState(it, ids.numpy()) if observe else None
            all_pulled = torch.ones(k, dtype=torch.bool, device=self.device)
            arg = torch.empty(k, F, dtype=torch.long, device=self.device)
            amax_it = torch.empty(k, F, dtype=torch.long, device=self.device)
            for f in range(F):
                X = cb.indices[f]
                M = X.shape[0]
                u = self.unbind(q, x, f)
                a = similarity(u, X, cfg.similarity)
                if perturb is not None:
                    a = saturate_unsigned(a + perturb(it, f, ids, u, a).to(self.device, torch.long), dp.a_bits)
                amax, aarg = a.max(dim=1)  # first maximum: lowest index wins ties
                keep = a >= dp.T_int
                none_kept = ~keep.any(dim=1, keepdim=True)
                w = torch.where(keep | none_kept, a, torch.zeros_like(a))
                sampled = (amax <= dp.T_int) & (cfg.A > 0)
                if bool(sampled.any()):
                    rows = sampled.nonzero().squeeze(1)
                    w[rows] = 0
                    if cfg.A >= M:
                        w[rows] = 1
                    else:
                        picks = self.sampler(ids[rows.cpu()], f, M, cfg.A).to(self.device)
                        w[rows.unsqueeze(1), picks] = 1
                pulled = ~sampled & (amax >= dp.Tc_int)
                w = torch.where(pulled.unsqueeze(1), torch.nn.functional.one_hot(aarg, M), w)
                xf, S, R = self.bundle(w, f)
                x[:, f] = xf
                all_pulled &= pulled
                arg[:, f] = aarg
                amax_it[:, f] = amax
                if state is not None:
                    state.factors.append(FactorStep(*(t.cpu().numpy() for t in (
                        u, a, w, S, R, xf, amax, aarg, sampled, pulled))))
            if state is not None:
                state.converged = all_pulled.cpu().numpy()
                observe(state)
            rows = active.cpu()
            indices[rows] = arg.cpu()
            amax_out[rows] = amax_it.cpu()
            iterations[rows] = it
            if bool(all_pulled.any()):
                converged[rows[all_pulled.cpu()]] = True
                stay = ~all_pulled
                active, q, x = active[stay], q[stay], x[stay]
                if active.numel() == 0:
                    break
        scale = float(1 << self.widths.unbound)
        return FactorizationResult(indices, iterations, converged, amax_out.double() / scale)
