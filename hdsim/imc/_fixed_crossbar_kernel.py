"""The numba kernel of :class:`hdsim.imc.fixed_crossbar.FixedPointCrossbar` (imports numba; loaded only when used).

:func:`crossbar_perturbation` computes one query's perturbation for one (iteration, factor)
from plain arrays and ints, so that a compiled decoder's per-query loop can call it (four
small scratch arrays per call; the column sums skip the rows whose DAC code is 0). It follows
the module docstring of :mod:`hdsim.imc.fixed_crossbar` step by step, with the same float
operations in the same order, so it returns the NumPy batch method's integers bit for bit
(``tests/test_imc_fixed_crossbar.py``). :func:`perturbation_batch` applies it to a batch.

Module-level with ``cache=True``: numba caches the compiled code next to this file. Numba
invalidates that cache when *this* file changes, not when a caller's or callee's file does:
the parameter layout is therefore repeated here as literals and checked against
:mod:`hdsim.imc.fixed_crossbar` at import (a mismatch fails loudly instead of running a
stale kernel).
"""

import math

import numba
import numpy as np

from hdsim.imc import fixed_crossbar as _fx

# the parameter layout and constants of hdsim.imc.fixed_crossbar, as literals (see the docstring)
I_WU, I_DAC, I_CMAX, I_ADC, I_ADC_CMAX, I_LSB_NUM, I_LSB_DEN, I_READ, I_NOISE = 0, 1, 2, 3, 4, 5, 6, 7, 8
F_INV_2WU, F_DAC_SCALE, F_S_SCALE, F_R_SCALE, F_OUT_SIGMA, F_TWO_P, F_Q, F_TWO_Q, F_UNIT, F_ADC_BOUND = range(10)
GAUSS_WORDS, WORDS_PER_OUTPUT, GAUSS_SHIFT = 12, 24, 8
GAUSS_OFFSET = 12 - 12 * (1 << 24)
GAUSS_SCALE = 2.0 ** -25
MASK32 = 0xFFFF_FFFF

_LAYOUT = ((I_WU, I_DAC, I_CMAX, I_ADC, I_ADC_CMAX, I_LSB_NUM, I_LSB_DEN, I_READ, I_NOISE),
           (F_INV_2WU, F_DAC_SCALE, F_S_SCALE, F_R_SCALE, F_OUT_SIGMA, F_TWO_P, F_Q, F_TWO_Q, F_UNIT, F_ADC_BOUND),
           (GAUSS_WORDS, WORDS_PER_OUTPUT, 32 - GAUSS_SHIFT, GAUSS_OFFSET, GAUSS_SCALE))
_EXPECTED = ((_fx.I_WU, _fx.I_DAC, _fx.I_CMAX, _fx.I_ADC, _fx.I_ADC_CMAX, _fx.I_LSB_NUM, _fx.I_LSB_DEN, _fx.I_READ,
              _fx.I_NOISE),
             (_fx.F_INV_2WU, _fx.F_DAC_SCALE, _fx.F_S_SCALE, _fx.F_R_SCALE, _fx.F_OUT_SIGMA, _fx.F_TWO_P, _fx.F_Q,
              _fx.F_TWO_Q, _fx.F_UNIT, _fx.F_ADC_BOUND),
             (_fx.GAUSS_WORDS, _fx.WORDS_PER_OUTPUT, _fx.GAUSS_BITS, _fx.GAUSS_OFFSET, _fx.GAUSS_SCALE))
if _LAYOUT != _EXPECTED or (_fx.N_IPARAMS, _fx.N_FPARAMS) != (9, 10):
    raise ImportError("hdsim.imc._fixed_crossbar_kernel: parameter layout differs from hdsim.imc.fixed_crossbar")


@numba.njit(cache=True, nogil=True, inline="always")
def _mul32(h, c):
    # (h * c) mod 2^32 without int64 overflow: hdsim.hashing's split of c
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & MASK32


@numba.njit(cache=True, nogil=True, inline="always")
def mix32(h):
    """:func:`hdsim.hashing.mix32` (MurmurHash3's fmix32) on an int64 in ``[0, 2^32)``."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EB_CA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2_AE35)
    return h ^ (h >> 16)


@numba.njit(cache=True, nogil=True)
def _input_codes(u, ip, fp, c, nz):
    """Steps 1-2: DAC codes ``c`` of ``u`` ``(B, L)`` (row ``b L + l``) and the rows whose code is not 0
    (``nz[:nnz]``, ascending). Returns ``(e, nnz)``."""
    B, L = u.shape
    Wu = ip[I_WU]
    top = 0
    for b in range(B):
        for l in range(L):
            if u[b, l] > top:
                top = u[b, l]
    e = 0
    if top > 0:
        nb = 0
        while (top >> nb) > 0:
            nb += 1
        e = Wu - nb
    cmax = ip[I_CMAX]
    dac = ip[I_DAC] != 0
    inv2wu, dscale = fp[F_INV_2WU], fp[F_DAC_SCALE]
    nnz = 0
    for b in range(B):
        for l in range(L):
            v = np.int64(u[b, l]) << e
            if dac:
                cv = np.int64(math.floor(v * inv2wu * dscale + 0.5))
            else:
                cv = v
            cv = min(cv, cmax)
            c[b * L + l] = cv
            if cv != 0:
                nz[nnz] = b * L + l
                nnz += 1
    return e, nnz


@numba.njit(cache=True, nogil=True)
def _column_sums(c, nz, nnz, f, W, R2, Mf, read, s, r):
    """Step 3: ``s[m] = sum_i c_i W[f, i, m]``, ``r[m] = sum_i c_i^2 R2[f, i, m]`` for ``m < Mf``
    (exact int64; rows with ``c_i = 0`` add nothing and are skipped: most are, after the 7-bit DAC)."""
    for m in range(Mf):
        s[m] = 0
        r[m] = 0
    for j in range(nnz):
        i = nz[j]
        ci = c[i]
        wrow = W[f, i]
        for m in range(Mf):
            s[m] += ci * wrow[m]
        if read:
            ci2 = ci * ci
            rrow = R2[f, i]
            for m in range(Mf):
                r[m] += ci2 * rrow[m]


@numba.njit(cache=True, nogil=True)
def _noise_key(f, query_id, iteration, keys):
    """The query's hash state: ``hdsim.hashing.counter_bits(keys[f], [query_id], iteration, .)`` before ``j``."""
    return mix32(mix32(keys[f] ^ (query_id & MASK32)) ^ (iteration & MASK32))


@numba.njit(cache=True, nogil=True)
def _pre_adc(s, r, m, h, ip, fp):
    """Steps 4-5 for column ``m`` with column sums ``s``, ``r``: the pre-ADC value ``S`` (float64)."""
    # 4. two Irwin-Hall normals from 24 hash words
    z_read = 0.0
    z_out = 0.0
    if ip[I_NOISE] != 0:
        base = WORDS_PER_OUTPUT * m
        sr = np.int64(0)
        so = np.int64(0)
        for j in range(GAUSS_WORDS):
            sr += mix32(h ^ (base + j)) >> GAUSS_SHIFT
        for j in range(GAUSS_WORDS, WORDS_PER_OUTPUT):
            so += mix32(h ^ (base + j)) >> GAUSS_SHIFT
        z_read = (2 * sr + GAUSS_OFFSET) * GAUSS_SCALE
        z_out = (2 * so + GAUSS_OFFSET) * GAUSS_SCALE
    # 5. in this order
    return s * fp[F_S_SCALE] + math.sqrt(r * fp[F_R_SCALE]) * z_read + fp[F_OUT_SIGMA] * z_out


@numba.njit(cache=True, nogil=True)
def _to_a(S, e, al, ip, fp):
    """Step 6: the reading of pre-ADC value ``S`` in ``a`` LSBs (int64)."""
    Wu = ip[I_WU]
    if ip[I_ADC] != 0:
        C = ip[I_ADC_CMAX]
        k = np.int64(math.floor((fp[F_TWO_P] * S + fp[F_Q]) / fp[F_TWO_Q]))
        k = min(max(k, -C), C)
        kc = np.int64(math.floor(al * k + 0.5))
        d = ip[I_LSB_DEN]
        return (kc * ((2 * ip[I_LSB_NUM]) << Wu) + (d << e)) // ((2 * d) << e)
    bound = fp[F_ADC_BOUND]
    y = min(max(S * fp[F_UNIT], -bound), bound) * al
    return np.int64(math.floor(y * np.float64(np.int64(1) << (Wu - e)) + 0.5))


@numba.njit(cache=True, nogil=True)
def crossbar_perturbation(u, a, f, query_id, iteration, W, R2, M, keys, alpha, ip, fp, p):
    """One query's crossbar perturbation ``p[m] = a_imc[m] - a[m]`` for ``m < M[f]``.

    Args:
        u: ``(B, L)`` integer (int32 or int64) ``Q0.Wu`` unbinding result of the query.
        a: ``(>= M[f],)`` integer, its exact ``dot`` similarity ``sum_b u[b, X_f[m, b]]``.
        f, query_id, iteration: ints (the query's global id and the 1-based iteration).
        W, R2, M, keys, alpha, ip, fp: :meth:`FixedPointCrossbar.kernel_args`.
        p: ``(>= M[f],)`` int64 output.
    """
    D = u.shape[0] * u.shape[1]
    Mf = M[f]
    c = np.empty(D, np.int64)
    nz = np.empty(D, np.int64)
    s = np.empty(Mf, np.int64)
    r = np.empty(Mf, np.int64)
    e, nnz = _input_codes(u, ip, fp, c, nz)
    _column_sums(c, nz, nnz, f, W, R2, Mf, ip[I_READ] != 0, s, r)
    h = _noise_key(f, query_id, iteration, keys)
    for m in range(Mf):
        p[m] = _to_a(_pre_adc(s[m], r[m], m, h, ip, fp), e, alpha[f], ip, fp) - a[m]


@numba.njit(cache=True, nogil=True)
def perturbation_batch(u, a, f, query_ids, iteration, W, R2, M, keys, alpha, ip, fp):
    """:func:`crossbar_perturbation` for every query of ``u`` ``(k, B, L)``, ``a`` ``(k, >= M_f)``,
    ``query_ids`` ``(k,)``: returns int64 ``(k, M[f])``."""
    k = u.shape[0]
    p = np.zeros((k, M[f]), np.int64)
    for n in range(k):
        crossbar_perturbation(u[n], a[n], f, query_ids[n], iteration, W, R2, M, keys, alpha, ip, fp, p[n])
    return p


@numba.njit(cache=True, nogil=True)
def pre_adc_batch(u, f, query_ids, iteration, W, R2, M, keys, alpha, ip, fp):
    """Steps 1-5 for every query: the pre-ADC values ``(k, M[f])`` float64 and the shifts ``(k,)``
    (:meth:`FixedPointCrossbar.pre_adc`'s, bit for bit: what the tests compare)."""
    k, B, L = u.shape
    Mf = M[f]
    S = np.zeros((k, Mf), np.float64)
    es = np.zeros(k, np.int64)
    c = np.empty(B * L, np.int64)
    nz = np.empty(B * L, np.int64)
    s = np.empty(Mf, np.int64)
    r = np.empty(Mf, np.int64)
    for n in range(k):
        e, nnz = _input_codes(u[n], ip, fp, c, nz)
        es[n] = e
        _column_sums(c, nz, nnz, f, W, R2, Mf, ip[I_READ] != 0, s, r)
        h = _noise_key(f, query_ids[n], iteration, keys)
        for m in range(Mf):
            S[n, m] = _pre_adc(s[m], r[m], m, h, ip, fp)
    return S, es
