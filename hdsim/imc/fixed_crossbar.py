"""The integer BCF's ``dot`` similarity on a PCM crossbar, torch-free and bit-reproducible — SPEC section 6.

:class:`FixedPointCrossbar` is the crossbar behind the fixed-point model's IMC
perturbation (:class:`hdsim.imc.FixedPointPerturbation`, the ``perturb`` hook of
:meth:`hdsim.fixed.FixedBCF.factorize`) and behind the edge runner's compiled
decoder. Factor ``f``'s crossbar holds ``onehot(X_f)^T`` (``D = B L`` rows,
``M_f`` columns, one device per ``{0, 1}`` weight), programmed and aged with
the device model of :mod:`hdsim.imc.pcm` (the same functions and draws as
:class:`~hdsim.imc.crossbar.PCMCrossbar`), once, at construction.

Per call the crossbar's reading depends only on ``(seed, query id, iteration,
factor, u)``: not on the other queries of the batch, their order, or earlier
calls. Three callers compute the same integers bit for bit: the NumPy batch
method :meth:`FixedPointCrossbar.perturbation`, the torch adapter
:class:`~hdsim.imc.factorizers.FixedPointPerturbation`, and the numba kernel
:func:`hdsim.imc._fixed_crossbar_kernel.crossbar_perturbation` (one query, for
a compiled decoder's loop; :meth:`FixedPointCrossbar.kernel_args` gives it its
arrays).

**Per-query math** (the definition; ``u`` is ``Q0.Wu`` ``(B, L)``, row ``i = b L + l``):

1. Shift: ``e = Wu - bitlen(max u)`` (``0`` for ``u = 0``), ``v = u 2^e`` (largest entry in
   ``[2^(Wu-1), 2^Wu)``), driven as ``x = v 2^-Wu``.
2. DAC code (``C_in = 2^(dac_bits-1) - 1``): ``c_i = min(floor(x_i * (C_in / dac_bound) + 1/2), C_in)``,
   the :func:`~hdsim.imc.crossbar.quantize` rule in float64 (``x_i`` exact). Without a DAC
   ``c_i = min(v_i, floor(min(dac_bound, 1) 2^Wu))``, in units of ``2^-Wu``.
3. Column sums on the integer grid (exact int64, order-free):
   ``S_m = sum_i c_i w_int[i, m]``, ``R_m = sum_i c_i^2 r2_int[i, m]``, with
   ``w_int = floor(w(t) 2^Kw + 1/2)``, ``r2_int = floor(r(t)^2 2^Kr + 1/2)``.
4. Two Gaussians per output (below): ``z_read``, ``z_out``.
5. Pre-ADC value (float64, this order; ``sS = 2^-Kw``, ``sR = 2^-Kr``, or ``2^-(Kw+Wu)``, ``2^-(Kr+2Wu)``
   without a DAC; ``sigma_out = out_noise / d_in``)::

       S = S_m * sS + sqrt(R_m * sR) * z_read + sigma_out * z_out

6. ADC (``P/Q = d_in / d_out`` exact): ``k = clip(floor((2P * S + Q) / 2Q), -C_out, C_out)``;
   drift compensation ``k' = floor(alpha_f * k + 1/2)`` (``alpha_f = 1`` when off);
   in ``a`` LSBs (``d_out = n/d``): ``a_imc = floor((2 k' n 2^Wu + d 2^e) / (2 d 2^e))`` (integers).
   Without an ADC: ``a_imc = floor(clip(S d_in, ±adc_bound) * alpha_f * 2^(Wu-e) + 1/2)``.
7. ``p = a_imc - a`` (``a`` the exact ``dot`` similarity ``sum_b u[b, X_f[m, b]]``).

Only IEEE basic operations (``+ - * /``, ``sqrt``, ``floor``) in a written order act on
floats after construction, and every sum is over integers: NumPy, numba (and torch)
give the same bits. Transcendentals (``log``, ``pow``) appear only in the device model
evaluated once here.

**Counter-based noise.** Output ``m`` of factor ``f`` for query ``id`` at ``iteration``
uses 24 hash words ``counter_bits(key_f, [id], iteration, 24 M_f)[0, 24 m + j]``
(:mod:`hdsim.hashing`), ``key_f = seed_key(derive_seed(seed, "factor<f>:read"))``;
words ``j < 12`` make ``z_read``, words ``12..23`` make ``z_out``.

**Gaussian** (Irwin-Hall, a model choice): the top 24 bits ``U_j`` of 12 words give
``z = (sum_j (U_j + 1/2) - 6 2^24) / 2^24 = (2 sum_j U_j + 12 - 12 2^24) 2^-25``, exact in
float64: mean exactly 0, symmetric, variance ``1 - 2^-48``, support ``[-6, 6]``
(tails truncated at 6 sigma: kurtosis 2.9 instead of 3).

**Grid** (a model choice): effective weights on ``2^-Kw`` and read variances (weight units
squared) on ``2^-Kr``, the finest grids with ``Kw <= 32``, ``Kr <= 48`` on which every column
sum times the largest input code (``C_in``, or ``C_in^2``) stays below ``2^53``: so every
product and partial sum is an exact integer in int64 and in float64, in any order.
``Kw = 32`` with a DAC (any ``B L`` below ~10^5); ``Kr`` is 43-47 for the presets; without a DAC
(inputs up to ``2^Wu``) the grids get coarser as ``Wu`` grows, and a configuration that would
leave fewer than 16 bits is refused (:class:`~hdsim.errors.HdsimError`). The rounding error,
at most half a step per device (``2^-33`` of a full weight), is ~10^-8 of the programming
noise (std ~0.04 of a full weight) and ~10^-6 of a read variance.

**Drift compensation.** ``alpha_f = ref(t0) / ref(t)``, ``ref`` the mean ``|S d_in|`` of an
all-ones read of the grid crossbar (before the ADC), its noise keyed by
``derive_seed(seed, "factor<f>:drift-ref:<t.hex()>")``: one number per factor, fixed at
construction (``alpha = 1`` at ``t = t0``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.hashing import counter_bits, seed_key
from hdsim.imc import pcm
from hdsim.imc.config import PCMNoiseConfig, imc_config
from hdsim.validation import check_int

__all__ = ["FixedPointCrossbar", "PerturbationLog", "PERTURBATION_HEADER", "onehot_weights", "gaussian",
           "WEIGHT_GRID_BITS", "VARIANCE_GRID_BITS", "MIN_GRID_BITS", "MAX_UNBOUND"]

WEIGHT_GRID_BITS = 32  # w_int = round(w 2^32)
VARIANCE_GRID_BITS = 48  # r2_int = round(r^2 2^48)
MIN_GRID_BITS = 16  # a configuration that leaves fewer bits is refused
MAX_UNBOUND = 30  # widths.unbound's largest value (hdsim.fixed.widths.MAX_WORD)
EXACT = 1 << 53  # every column sum (and so every partial sum) stays below: exact in float64 too
GAUSS_WORDS = 12  # Irwin-Hall: 12 uniforms per normal
WORDS_PER_OUTPUT = 2 * GAUSS_WORDS  # z_read, then z_out
GAUSS_BITS = 24  # bits kept of each 32-bit hash word (the top ones)
GAUSS_OFFSET = GAUSS_WORDS - GAUSS_WORDS * (1 << GAUSS_BITS)  # 12 - 12 2^24
GAUSS_SCALE = 2.0 ** -(GAUSS_BITS + 1)

# Layout of the kernel's parameter arrays (hdsim.imc._fixed_crossbar_kernel repeats and checks it).
I_WU, I_DAC, I_CMAX, I_ADC, I_ADC_CMAX, I_LSB_NUM, I_LSB_DEN, I_READ, I_NOISE, N_IPARAMS = range(10)
F_INV_2WU, F_DAC_SCALE, F_S_SCALE, F_R_SCALE, F_OUT_SIGMA, F_TWO_P, F_Q, F_TWO_Q, F_UNIT, F_ADC_BOUND, \
    N_FPARAMS = range(11)

PERTURBATION_HEADER = ("iteration", "factor", "query_id")
"""The first three columns of an exported perturbation array; the rest are ``p_0 .. p_{M-1}``."""


def gaussian(word_sums):
    """Irwin-Hall normal from the sum of 12 uniform 24-bit integers: ``(2 s + 12 - 12 2^24) 2^-25``.

    Exact in float64 (an integer below ``2^29`` times a power of two); mean 0, variance
    ``1 - 2^-48``, support ``[-6, 6]``.

    Example:
        >>> gaussian(6 * 2**24 - 6), gaussian(0), gaussian(12 * (2**24 - 1))
        (0.0, -5.999999642372131, 5.999999642372131)
    """
    return (2 * word_sums + GAUSS_OFFSET) * GAUSS_SCALE


def onehot_weights(X: np.ndarray, L: int) -> np.ndarray:
    """``onehot(X)^T``: ``(B L, M)`` float64 with ``W[b L + X[m, b], m] = 1``.

    Example:
        >>> onehot_weights(np.array([[0, 1], [1, 1]]), 2).astype(int).tolist()
        [[1, 0], [0, 1], [0, 0], [1, 1]]
    """
    X = np.asarray(X, dtype=np.int64)
    M, B = X.shape
    W = np.zeros((B * L, M))
    W[np.arange(B)[None, :] * L + X, np.arange(M)[:, None]] = 1.0
    return W


def _bitlen(top: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 below ``2^53`` (``0`` for ``0``): frexp's exponent."""
    return np.frexp(top.astype(np.float64))[1].astype(np.int64)


def _grid(values: list[np.ndarray], mult: int, kmax: int, what: str, field: str) -> tuple[int, list[np.ndarray]]:
    """The finest grid ``2^-K`` (``K <= kmax``) with ``mult * max column sum < 2^53``, and the values on it."""
    top = max(float(v.sum(axis=0).max()) if v.size else 0.0 for v in values)  # column sums of (D, M)
    if top == 0.0 or mult == 0:
        return kmax, [np.zeros(v.shape, np.int64) for v in values]
    # start from the float estimate, then step down until the exact integer bound holds
    K = min(kmax, 52 - math.ceil(math.log2(mult * top)))
    while K >= MIN_GRID_BITS:
        ints = [np.floor(v * 2.0 ** K + 0.5).astype(np.int64) for v in values]
        if max(mult * int(i.sum(axis=0).max()) for i in ints) < EXACT:
            return K, ints
        K -= 1
    raise HdsimError(f"{field}: the crossbar's integer {what} grid would keep fewer than {MIN_GRID_BITS} "
                     f"bits (column sums times input codes up to {mult} must stay below 2^53)")


class FixedPointCrossbar:
    """PCM crossbars of a BCF's codebooks computing the integer ``dot`` similarity (module docstring).

    Args:
        indices: per factor the codebook in offset form, ``(M_f, B)`` integers in ``[0, L)``
            (NumPy arrays, or anything ``np.asarray`` reads).
        L: block length.
        Wu: ``widths.unbound`` (``u`` is ``Q0.Wu``), in ``[2, 30]``.
        preset: preset name or :class:`~hdsim.imc.config.PCMNoiseConfig` (``input_scaling="none"``).
        t: time since programming, seconds (>= 0); default 20 s (``t0``: no drift yet).
        seed: seed of the devices and the noise (factor ``f``'s devices:
            ``derive_seed(seed, "factor<f>")``, as :class:`~hdsim.imc.factorizers.BlockCrossbarMVMs`).
        drift_compensation, noise_scale: as :func:`~hdsim.imc.config.imc_config`.

    Attributes:
        config: the effective configuration; ``Kw``, ``Kr``: the grid bits; ``alpha``: ``(F,)``
        drift-compensation factors; ``sizes``: ``(M_f)``.

    Raises:
        HdsimError: malformed codebooks, bad option, or a configuration whose integer
            arithmetic could leave int64 / the 53-bit exact range.

    Example:
        >>> X = [np.array([[0, 1], [2, 3]]), np.array([[1, 1], [3, 0]])]
        >>> xb = FixedPointCrossbar(X, 4, 8, "pcm-chip", seed=3)
        >>> u = np.zeros((1, 2, 4), np.int64); u[0, 0, 0] = u[0, 1, 1] = 200
        >>> a = xb.exact_similarity(0, u)
        >>> p = xb.perturbation(1, 0, np.array([0]), u, a)  # noisy reading - exact a, in a LSBs
        >>> a.tolist(), p.shape, bool((p == xb.perturbation(1, 0, np.array([0]), u)).all())
        ([[400, 0]], (1, 2), True)
    """

    def __init__(self, indices: Sequence[np.ndarray], L: int, Wu: int = 8,
                 preset: str | PCMNoiseConfig = "pcm-default", *, t: float = 20.0, seed: int = 0,
                 drift_compensation: bool = False, noise_scale: float = 1.0) -> None:
        check_int("L", L)
        if isinstance(Wu, bool) or not isinstance(Wu, int) or not 2 <= Wu <= MAX_UNBOUND:
            raise HdsimError(f"widths.unbound: must be an integer in [2, {MAX_UNBOUND}], got {Wu!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise HdsimError(f"seed: expected an integer, got {seed!r}")
        self.t = pcm.check_time(t, "t")
        cfg = imc_config(preset, noise_scale=noise_scale, drift_compensation=drift_compensation)
        if cfg.input_scaling != "none":
            raise HdsimError("input_scaling: the fixed-point crossbar prescales u by powers of two itself; "
                             f"expected 'none', got {cfg.input_scaling!r}")
        self.config, self.L, self.Wu, self.seed = cfg, int(L), Wu, seed
        self.X = self._check_indices(indices)
        self.F, self.B = len(self.X), self.X[0].shape[1]
        self.D = self.B * self.L
        self.sizes = tuple(int(X.shape[0]) for X in self.X)
        self._setup_periphery()
        self._program()

    # ---- construction ---------------------------------------------------------------------------
    def _check_indices(self, indices) -> list[np.ndarray]:
        if isinstance(indices, np.ndarray) or not isinstance(indices, Sequence) or len(indices) == 0:
            raise HdsimError("codebooks: expected a non-empty sequence of (M_f, B) offset arrays")
        out = []
        for f, X in enumerate(indices):
            X = np.asarray(X)
            if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1 or not np.issubdtype(X.dtype, np.integer):
                raise HdsimError(f"codebooks: factor {f}: expected a non-empty (M_f, B) integer array, "
                                 f"got {X.dtype} {X.shape}")
            if X.shape[1] != np.asarray(indices[0]).shape[1]:
                raise HdsimError(f"codebooks: factor {f} has {X.shape[1]} blocks, factor 0 has "
                                 f"{np.asarray(indices[0]).shape[1]}")
            if X.min() < 0 or X.max() >= self.L:
                raise HdsimError(f"codebooks: factor {f}: offsets must lie in [0, {self.L})")
            out.append(np.ascontiguousarray(X, dtype=np.int64))
        return out

    def _setup_periphery(self) -> None:
        cfg, Wu = self.config, self.Wu
        ip = np.zeros(N_IPARAMS, np.int64)
        fp = np.zeros(N_FPARAMS, np.float64)
        ip[I_WU] = Wu
        fp[F_INV_2WU] = 2.0 ** -Wu
        if cfg.dac_bits is not None:
            C_in = pcm.code_max(cfg.dac_bits)
            ip[I_DAC], ip[I_CMAX] = 1, C_in
            fp[F_DAC_SCALE] = C_in / cfg.dac_bound  # quantize()'s x * (C / bound)
            fp[F_UNIT] = cfg.dac_bound / C_in  # d_in, as PCMCrossbar
        else:
            ip[I_DAC], ip[I_CMAX] = 0, math.floor(min(cfg.dac_bound, 1.0) * 2.0 ** Wu)
            fp[F_UNIT] = 1.0
        fp[F_OUT_SIGMA] = cfg.out_noise / fp[F_UNIT]
        if cfg.adc_bits is not None:
            r = pcm.adc_ratio(cfg)
            lsb = pcm.output_lsb(cfg)
            if 2 * max(r.numerator, r.denominator) >= EXACT:
                raise HdsimError(f"adc_bound: the ADC ratio {r} is not exact in float64")
            ip[I_ADC], ip[I_ADC_CMAX] = 1, pcm.code_max(cfg.adc_bits)
            ip[I_LSB_NUM], ip[I_LSB_DEN] = lsb.numerator, lsb.denominator
            fp[F_TWO_P], fp[F_Q], fp[F_TWO_Q] = 2.0 * r.numerator, float(r.denominator), 2.0 * r.denominator
        fp[F_ADC_BOUND] = cfg.adc_bound
        self._ip, self._fp = ip, fp

    def _program(self) -> None:
        """Program every factor's crossbar, age it to ``t`` (and ``t0``), put it on the grid, find alpha."""
        cfg = self.config
        w_t, r2_t, w_0, r2_0 = [], [], [], []
        for f, X in enumerate(self.X):
            g_t = pcm.target_conductances(onehot_weights(X, self.L), cfg.g_max, False)
            g_prog, nu, q = pcm.program(cfg, g_t, pcm.derive_seed(self.seed, f"factor{f}"))
            w, r2 = pcm.effective_state(cfg, g_prog, nu, q, self.t)
            w_t.append(w)  # (D, M_f)
            r2_t.append(r2)
            if cfg.drift_compensation:
                w, r2 = pcm.effective_state(cfg, g_prog, nu, q, cfg.t0)
                w_0.append(w)
                r2_0.append(r2)
        cmax = int(self._ip[I_CMAX])
        field = "widths.unbound" if cfg.dac_bits is None else "preset"
        self.Kw, w_ints = _grid(w_t + w_0, cmax, WEIGHT_GRID_BITS, "weight", field)
        self.Kr, r2_ints = _grid(r2_t + r2_0, cmax * cmax, VARIANCE_GRID_BITS, "read-variance", field)
        ip, fp = self._ip, self._fp
        no_dac = cfg.dac_bits is None
        fp[F_S_SCALE] = 2.0 ** -(self.Kw + (self.Wu if no_dac else 0))
        fp[F_R_SCALE] = 2.0 ** -(self.Kr + (2 * self.Wu if no_dac else 0))
        ip[I_READ] = int(any(r.any() for r in r2_ints))
        ip[I_NOISE] = int(bool(ip[I_READ]) or fp[F_OUT_SIGMA] > 0)
        F, Mmax = self.F, max(self.sizes)
        self._W = np.zeros((F, self.D, Mmax), np.int64)  # row i of factor f: W[f, i, :M_f]
        self._R2 = np.zeros((F, self.D, Mmax), np.int64)
        for f, M in enumerate(self.sizes):
            self._W[f, :, :M], self._R2[f, :, :M] = w_ints[f], r2_ints[f]
        self._M = np.array(self.sizes, np.int64)
        self._keys = np.array([seed_key(pcm.derive_seed(self.seed, f"factor{f}:read")) for f in range(F)],
                              np.int64)
        alpha = np.ones(F, np.float64)
        if cfg.drift_compensation:
            for f in range(F):
                ref_t = self._reference_read(f, w_ints[f], r2_ints[f], self.t)
                ref_0 = self._reference_read(f, w_ints[F + f], r2_ints[F + f], cfg.t0)
                alpha[f] = ref_0 / ref_t if ref_t > 0 else 1.0
        self.alpha = alpha
        self._check_ranges()
        for arr in (self._W, self._R2, self._M, self._keys, self.alpha, self._ip, self._fp):
            arr.flags.writeable = False  # shared with the kernel (kernel_args), never copied

    def _reference_read(self, f: int, w_int: np.ndarray, r2_int: np.ndarray, t: float) -> float:
        """Mean ``|S d_in|`` of an all-ones forward read (pre-ADC), noise keyed by ``(seed, f, t)``."""
        c1 = int(self._input_codes(np.array([1 << self.Wu], np.int64))[0])  # x = 1
        S_int = c1 * w_int.sum(axis=0)  # exact: below 2^53 by the grid's bound
        R_int = c1 * c1 * r2_int.sum(axis=0)
        key = seed_key(pcm.derive_seed(self.seed, f"factor{f}:drift-ref:{float(t).hex()}"))
        M = w_int.shape[1]
        z_read, z_out = self._normals(key, np.zeros(1, np.int64), 0, M)
        S = self._pre_adc(S_int[None, :], R_int[None, :], z_read, z_out)
        return math.fsum(np.abs(S * self._fp[F_UNIT])[0].tolist()) / M

    def _check_ranges(self) -> None:
        """Refuse a configuration whose ``a``-word arithmetic could leave int64."""
        ip, fp, Wu = self._ip, self._fp, self.Wu
        amax = float(self.alpha.max())
        if ip[I_ADC]:
            kmax = math.floor(amax * int(ip[I_ADC_CMAX]) + 0.5)
            n, d = int(ip[I_LSB_NUM]), int(ip[I_LSB_DEN])
            if 2 * kmax * n * (1 << Wu) + d * (1 << Wu) >= 1 << 63:
                raise HdsimError(f"widths.unbound: the crossbar reading's arithmetic would overflow int64 at "
                                 f"Wu={Wu} (ADC codes up to {kmax}, LSB {n}/{d}); narrow unbound")
        else:
            # |S| <= largest column sum + 6 sigma of each noise term (the Gaussian's support is [-6, 6])
            cmax = int(ip[I_CMAX])
            s_max = int(self._W.sum(axis=1).max()) * cmax * fp[F_S_SCALE]
            r_max = int(self._R2.sum(axis=1).max()) * cmax * cmax * fp[F_R_SCALE]
            y = min((s_max + 6 * math.sqrt(r_max) + 6 * fp[F_OUT_SIGMA]) * fp[F_UNIT], fp[F_ADC_BOUND])
            if y * amax * 2.0 ** Wu >= 2.0 ** 62:
                raise HdsimError(f"widths.unbound: the analog crossbar reading would overflow int64 at Wu={Wu}")

    # ---- the per-query math, vectorized over a batch ------------------------------------------------
    def _input_codes(self, v: np.ndarray) -> np.ndarray:
        """Step 2: DAC codes (int64) of ``x = v 2^-Wu``."""
        ip, fp = self._ip, self._fp
        if ip[I_DAC]:
            return np.minimum(np.floor(v * fp[F_INV_2WU] * fp[F_DAC_SCALE] + 0.5), ip[I_CMAX]).astype(np.int64)
        return np.minimum(v, ip[I_CMAX])

    def _normals(self, key: int, ids: np.ndarray, event: int, M: int) -> tuple[np.ndarray, np.ndarray]:
        """Step 4: ``z_read``, ``z_out`` ``(k, M)`` from the hash words (zeros when the crossbar is noise-free)."""
        k = ids.shape[0]
        if not self._ip[I_NOISE]:
            return np.zeros((k, M)), np.zeros((k, M))
        words = counter_bits(key, ids, event, WORDS_PER_OUTPUT * M) >> (32 - GAUSS_BITS)
        words = words.reshape(k, M, WORDS_PER_OUTPUT)
        return gaussian(words[..., :GAUSS_WORDS].sum(axis=-1)), gaussian(words[..., GAUSS_WORDS:].sum(axis=-1))

    def _pre_adc(self, S_int: np.ndarray, R_int: np.ndarray, z_read: np.ndarray, z_out: np.ndarray) -> np.ndarray:
        """Step 5, in this order."""
        fp = self._fp
        return S_int * fp[F_S_SCALE] + np.sqrt(R_int * fp[F_R_SCALE]) * z_read + fp[F_OUT_SIGMA] * z_out

    def _to_a(self, S: np.ndarray, e: np.ndarray, alpha: float) -> np.ndarray:
        """Step 6: the reading in ``a`` LSBs, int64; ``e`` ``(k, 1)``."""
        ip, fp = self._ip, self._fp
        if ip[I_ADC]:
            C = ip[I_ADC_CMAX]
            k = np.clip(np.floor((fp[F_TWO_P] * S + fp[F_Q]) / fp[F_TWO_Q]), -C, C)
            kc = np.floor(alpha * k + 0.5).astype(np.int64)
            n, d = int(ip[I_LSB_NUM]), int(ip[I_LSB_DEN])
            return (kc * (2 * n << self.Wu) + (d << e)) // ((2 * d) << e)
        y = np.clip(S * fp[F_UNIT], -fp[F_ADC_BOUND], fp[F_ADC_BOUND]) * alpha
        return np.floor(y * np.ldexp(1.0, self.Wu - e) + 0.5).astype(np.int64)

    def _check_call(self, iteration, factor, query_ids, u) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or iteration < 0:
            raise HdsimError(f"iteration: expected an integer >= 0, got {iteration!r}")
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 0 <= factor < self.F:
            raise HdsimError(f"factor: expected an integer in [0, {self.F}), got {factor!r}")
        u = np.asarray(u)
        if u.ndim != 3 or u.shape[1:] != (self.B, self.L) or not np.issubdtype(u.dtype, np.integer):
            raise HdsimError(f"u: expected an integer (k, {self.B}, {self.L}) array, got {u.dtype} {u.shape}")
        u = u.astype(np.int64, copy=False)
        if u.size and (u.min() < 0 or u.max() >= 1 << self.Wu):
            raise HdsimError(f"u: entries must be Q0.{self.Wu} words in [0, {(1 << self.Wu) - 1}]")
        ids = np.asarray(query_ids)
        if ids.shape != (u.shape[0],) or not np.issubdtype(ids.dtype, np.integer) or (ids.size and ids.min() < 0):
            raise HdsimError(f"query_ids: expected ({u.shape[0]},) non-negative integers, got {ids.dtype} {ids.shape}")
        return ids.astype(np.int64, copy=False), u

    def exact_similarity(self, factor: int, u: np.ndarray) -> np.ndarray:
        """The exact ``dot`` similarity ``a[k, m] = sum_b u[k, b, X_f[m, b]]``, int64 ``(k, M_f)``."""
        X = self.X[factor]
        u = np.asarray(u, dtype=np.int64)
        return u[:, np.arange(self.B)[None, :], X].sum(axis=-1)

    def pre_adc(self, iteration: int, factor: int, query_ids, u) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1-5: the pre-ADC values ``S`` float64 ``(k, M_f)`` (in DAC LSBs; units of 1 without
        a DAC) and the input shifts ``e`` int64 ``(k,)``. The kernel's
        :func:`~hdsim.imc._fixed_crossbar_kernel.pre_adc_batch` returns the same bits."""
        ids, u = self._check_call(iteration, factor, query_ids, u)
        k, M = u.shape[0], self.sizes[factor]
        flat = u.reshape(k, self.D)
        top = flat.max(axis=1, initial=0)
        e = np.where(top > 0, self.Wu - _bitlen(top), 0)
        c = self._input_codes(flat << e[:, None])
        S_int = c @ self._W[factor, :, :M]  # int64 matmul: exact, no BLAS (sums < 2^53 by the grid)
        R_int = (c * c) @ self._R2[factor, :, :M] if self._ip[I_READ] else np.zeros((k, M), np.int64)
        z_read, z_out = self._normals(int(self._keys[factor]), ids, int(iteration), M)
        return self._pre_adc(S_int, R_int, z_read, z_out), e

    def reading(self, iteration: int, factor: int, query_ids, u) -> np.ndarray:
        """The crossbar's ``dot`` similarity of ``u`` in ``a`` LSBs (steps 1-6), int64 ``(k, M_f)``.

        Shapes:
            query_ids: ``(k,)`` non-negative integers (the queries' global ids); u: ``(k, B, L)``
        """
        S, e = self.pre_adc(iteration, factor, query_ids, u)
        return self._to_a(S, e[:, None], float(self.alpha[factor]))

    def perturbation(self, iteration: int, factor: int, query_ids, u, a=None) -> np.ndarray:
        """``p = reading - a`` (step 7), int64 ``(k, M_f)``: the ``perturb`` hook's value.

        ``a``, if given, must be the exact ``dot`` similarity of ``u``.

        Raises:
            HdsimError: ``a`` is not ``sum_b u[b, X_f[m, b]]`` (e.g. the model runs ``linf``), bad arguments.
        """
        ids, u = self._check_call(iteration, factor, query_ids, u)
        exact = self.exact_similarity(factor, u)
        if a is not None and not np.array_equal(np.asarray(a), exact):
            raise HdsimError("perturb: the fixed-point crossbar models the dot similarity; "
                             "a is not sum_b u[b, X[m, b]] (is the model running similarity='linf'?)")
        return self.reading(iteration, factor, ids, u) - exact

    def lsb_per_code(self, e: int = 0) -> float:
        """``a`` LSBs per ADC code for an input shifted by ``e`` bits: ``d_out 2^(Wu - e)``."""
        if not self._ip[I_ADC]:
            raise HdsimError("adc_bits: the configuration has no ADC (adc_bits is None)")
        return int(self._ip[I_LSB_NUM]) / int(self._ip[I_LSB_DEN]) * 2.0 ** (self.Wu - e)

    def kernel_args(self) -> tuple:
        """The arrays of :func:`hdsim.imc._fixed_crossbar_kernel.crossbar_perturbation`, after its
        first five arguments: ``(W, R2, M, keys, alpha, iparams, fparams)``.

        ``W``, ``R2``: int64 ``(F, B L, Mmax)`` grid weights and read variances (device of row
        ``i``, column ``m`` of factor ``f`` at ``[f, i, m]``, zero-padded beyond ``M_f``); ``M`` int64 ``(F,)``; ``keys`` int64 ``(F,)``
        hash keys; ``alpha`` float64 ``(F,)``; ``iparams`` int64 and ``fparams`` float64 (layout:
        the ``I_*`` / ``F_*`` constants of this module). Read-only: shared, not copies.
        """
        return self._W, self._R2, self._M, self._keys, self.alpha, self._ip, self._fp

    def describe(self) -> dict:
        return {"t": self.t, "seed": self.seed, "Wu": self.Wu, "weight_grid_bits": self.Kw,
                "variance_grid_bits": self.Kr, "alpha": self.alpha.tolist(),
                "drift_compensation": self.config.drift_compensation}


class PerturbationLog:
    """Perturbations returned by a ``perturb`` hook, for export and replay (torch-free).

    Args:
        sizes: ``M_f`` per factor.
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = tuple(int(m) for m in sizes)
        self._log: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    def add(self, iteration: int, factor: int, query_ids, p) -> None:
        self._log.append((int(iteration), int(factor), np.array(query_ids, dtype=np.int64),
                          np.array(p, dtype=np.int64)))

    def clear(self) -> None:
        self._log.clear()

    def records(self) -> np.ndarray:
        """Every logged perturbation, one row per (call, query), int64.

        Columns: ``iteration, factor, query_id, p_0, ..., p_{Mmax-1}`` (rows of a factor
        with ``M_f < Mmax`` are padded with 0), in call order.

        Shapes:
            returns: ``(rows, 3 + max_f M_f)``
        """
        width = max(self.sizes)
        rows = []
        for it, f, ids, p in self._log:
            block = np.zeros((len(ids), 3 + width), dtype=np.int64)
            block[:, 0], block[:, 1], block[:, 2] = it, f, ids
            block[:, 3:3 + p.shape[1]] = p
            rows.append(block)
        return np.concatenate(rows) if rows else np.zeros((0, 3 + width), dtype=np.int64)

    def table(self, n_queries: int, max_iter: int) -> np.ndarray:
        """The records as a dense ``(n_queries, max_iter, F, Mmax)`` int64 table.

        Entry ``[q, it - 1, f, m]`` is the value returned for query ``q``, iteration ``it``,
        factor ``f``; never-requested entries (queries that stopped earlier) are 0. This is
        the layout of the RTL bench's perturbation table (``hdsim.rtl.write_perturbation_hex``).

        Raises:
            HdsimError: a recorded query id or iteration does not fit the table.
        """
        rec = self.records()
        out = np.zeros((n_queries, max_iter, len(self.sizes), rec.shape[1] - 3), dtype=np.int64)
        if len(rec):
            if rec[:, 2].max() >= n_queries or rec[:, 0].max() > max_iter:
                raise HdsimError(f"table: records reach query {int(rec[:, 2].max())} and iteration "
                                 f"{int(rec[:, 0].max())}; table is ({n_queries}, {max_iter})")
            out[rec[:, 2], rec[:, 0] - 1, rec[:, 1]] = rec[:, 3:]
        return out

    def save(self, path: str | Path) -> Path:
        """:meth:`records` as an ``int32`` ``.npy`` file (``np.load`` reads it back)."""
        return pcm.save_adc_perturbations(path, self.records())
