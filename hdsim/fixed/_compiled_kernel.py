"""The numba kernel of :mod:`hdsim.fixed.compiled` (imports numba; loaded only when used).

Module-level so that numba caches the compiled code (``cache=True``: next to this file, or
under ``$NUMBA_CACHE_DIR``) and a new process skips the seconds of compilation. No torch, and
no constant of its own: the datapath's and the LFSR's constants come in through ``params``.
"""

import math

import numba
import numpy as np

# The crossbar's per-query perturbation (``decode_crossbar``). numba's cache of this module does
# not notice edits to that one: a change there needs ``NUMBA_CACHE_DIR`` cleared (or this file touched).
from hdsim.imc._fixed_crossbar_kernel import crossbar_perturbation

# params of decode (one int64 array: one argument to type per call instead of fourteen)
P_WQ, P_WX, P_WU, P_G, P_T, P_TC, P_MAX_ITER, P_DOT, P_TRACE, P_QUANTIZE, P_K, P_A, P_TAPS, P_ABITS = range(14)
N_PARAMS = 14


@numba.njit(cache=True, nogil=True, inline="always")
def _quantize_query(qf, n, bits, K, out, v):
    """:func:`hdsim.fixed.bcf.quantize_query` of query ``n`` of ``qf`` ``(N, B, L)`` (float32/64)
    into ``out[n]``; ``v`` ``(L,)`` int64 scratch.

    Returns ``-1``, or ``2 n`` for a non-finite entry, ``2 n + 1`` for a negative one
    (``out[n]`` is then incomplete). The division ``floor(num / den)`` is estimated in
    float64 (within one of the true quotient: ``num < 2^63``, relative error about
    ``2^-51``) and corrected with exact integer products.
    """
    B, L = qf.shape[1], qf.shape[2]
    hi = (1 << bits) - 1
    for b in range(B):
        mx = 0.0
        for l in range(L):
            x = np.float64(qf[n, b, l])
            if not math.isfinite(x):
                return 2 * n
            if x < 0.0:
                return 2 * n + 1
            mx = max(mx, x)
        s = K - math.frexp(mx)[1]  # 2^s in two exact steps, as the model does
        s1 = math.ldexp(1.0, s >> 1)
        s2 = math.ldexp(1.0, s - (s >> 1))
        S = 0
        for l in range(L):
            v[l] = np.int64(math.floor(np.float64(qf[n, b, l]) * s1 * s2))
            S += v[l]
        if S == 0:
            for l in range(L):
                out[n, b, l] = 0
            continue
        den = 2 * S
        inv = 1.0 / den
        for l in range(L):
            num = (v[l] << (bits + 1)) + S
            r = np.int64(num * inv)
            if r * den > num:
                r -= 1
            elif (r + 1) * den <= num:
                r += 1
            out[n, b, l] = min(r, hi)
    return -1


@numba.njit(cache=True, nogil=True)
def quantize(qf, bits, K, out):
    """Every query of ``qf`` through :func:`_quantize_query`; ``-1`` or the first failure's code."""
    v = np.empty(qf.shape[2], np.int64)
    for n in range(qf.shape[0]):
        bad = _quantize_query(qf, n, bits, K, out, v)
        if bad >= 0:
            return bad
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _draw_distinct(state, taps, Mf, A, w):
    """:func:`hdsim.lfsr.draw_distinct` from the register ``state`` (a Galois right shift by
    ``taps``), marking the ``A`` drawn indices of ``[0, Mf)`` with 1 in ``w`` (which must be 0
    there on entry; ``1 <= A < Mf``). Returns the register's new state.

    ``k = bit_length(Mf - 1)`` steps per word, output bits packed first bit first (MSB); a word
    is accepted when ``< Mf`` and not yet drawn, else discarded (the register has advanced).
    """
    k = 0
    while ((Mf - 1) >> k) > 0:
        k += 1
    count = 0
    while count < A:
        word = 0
        for _ in range(k):
            out = state & 1
            state >>= 1
            if out:
                state ^= taps
            word = (word << 1) | out
        if word < Mf and w[word] == 0:
            w[word] = 1
            count += 1
    return state


@numba.njit(cache=True, nogil=True)
def decode(q, qf, X, M, pos, npos, x0, seeds, params):
    """:func:`_decode` without a crossbar (the runner's hot path: the fewest arguments to type)."""
    none = np.zeros((0, 0, 0), np.int64)
    return _decode(q, qf, X, M, pos, npos, x0, seeds, params, none, none, np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, np.float64))


@numba.njit(cache=True, nogil=True)
def decode_crossbar(q, qf, X, M, pos, npos, x0, seeds, params, W, R2, MX, keys, alpha, ip, fp):
    """:func:`_decode` with every similarity read from a PCM crossbar: ``W .. fp`` are
    :meth:`hdsim.imc.fixed_crossbar.FixedPointCrossbar.kernel_args`; the perturbation of query
    ``n`` (its row, as ``FixedBCF`` numbers it) is added to ``a`` and saturated to the ``a`` word."""
    return _decode(q, qf, X, M, pos, npos, x0, seeds, params, W, R2, MX, keys, alpha, ip, fp)


@numba.njit(cache=True, nogil=True)
def _decode(q, qf, X, M, pos, npos, x0, seeds, params, W, R2, MX, keys, alpha, ip, fp):
    """Decode every query of ``q`` ``(N, B, L)`` (words), or with ``params[P_QUANTIZE]`` of
    ``qf`` (floats, quantized query by query).

    With ``A = params[P_A] > 0``, ``seeds`` ``(N,)`` holds each query's LFSR start state
    (:func:`hdsim.lfsr.query_seeds` of its position); its register serves all its draws, every
    factor, in order. With ``A = 0`` it is not read (may be empty).

    Outputs are allocated here (fewer arguments to type per call: the batch-1 latency):
    returns ``(status, indices (N, F), iterations (N,), converged (N,), amax (N, F),
    x_tr, a_tr, w_tr)``; ``status`` is ``-1`` or :func:`_quantize_query`'s failure code,
    the traces are empty unless ``params[P_TRACE]``.
    """
    Wq, Wx, Wu, G = params[P_WQ], params[P_WX], params[P_WU], params[P_G]
    T_int, Tc_int, max_iter = params[P_T], params[P_TC], params[P_MAX_ITER]
    dot, trace, quant = params[P_DOT] != 0, params[P_TRACE] != 0, params[P_QUANTIZE] != 0
    A, taps = params[P_A], params[P_TAPS]
    crossbar = W.shape[0] > 0
    amax_word = (1 << params[P_ABITS]) - 1
    if quant:
        q = np.empty(qf.shape, x0.dtype)
    N, B, L = q.shape
    F, Mmax = X.shape[0], X.shape[1]
    indices = np.empty((N, F), np.int64)
    iterations = np.empty(N, np.int64)
    converged = np.zeros(N, np.bool_)
    amax_out = np.empty((N, F), np.int64)
    Nt, It = (N, max_iter) if trace else (0, 0)
    x_tr = np.zeros((Nt, It, F, B, L), np.int64)
    a_tr = np.zeros((Nt, It, F, Mmax), np.int64)
    w_tr = np.zeros((Nt, It, F, Mmax), np.int64)
    status = -1
    vbuf = np.empty(L, np.int64)
    umax = (1 << Wu) - 1
    xmax = (1 << Wx) - 1
    # one thread: a second pool would spin against onnxruntime's on a small machine
    # words in q's integer type (int32 when every signal fits, see CompiledFixedBCF)
    x = np.empty((F, B, L), q.dtype)
    t = np.empty((B, L), q.dtype)
    acc = np.empty((B, L), q.dtype)
    a = np.empty(Mmax, q.dtype)
    w = np.empty(Mmax, q.dtype)
    s = np.empty((B, L), q.dtype)
    arg = np.empty(F, np.int64)
    amx = np.empty(F, np.int64)
    pert = np.zeros(Mmax, np.int64)
    for n in range(N):
        if quant:
            status = _quantize_query(qf, n, Wq, params[P_K], q, vbuf)
            if status >= 0:
                break
        x[:] = x0
        state = seeds[n] if A > 0 else 0  # this query's register (int64: a 32-bit state)
        for it in range(1, max_iter + 1):
            all_pulled = True
            for f in range(F):
                # u_f: unbind every other factor's estimate, requantizing after each (round half up)
                t[:] = q[n]
                w_in = Wq
                for g in range(F):
                    if g == f:
                        continue
                    # acc[l] = sum_j t[(l + j) mod L] x[j], over the estimate's non-zeros only
                    acc[:] = 0
                    for b in range(B):
                        accb, tb = acc[b], t[b]  # 1-D rows: contiguous loops the compiler vectorizes
                        for k in range(npos[g, b]):  # the positions g's codevectors can occupy
                            j = pos[g, b, k]
                            xv = x[g, b, j]
                            if xv != 0:
                                for l in range(L - j):
                                    accb[l] += tb[l + j] * xv
                                for l in range(L - j, L):
                                    accb[l] += tb[l + j - L] * xv
                    sh = w_in + Wx - Wu
                    for b in range(B):
                        accb, tb = acc[b], t[b]
                        if sh <= 0:
                            for l in range(L):
                                tb[l] = min(max(accb[l] << (-sh), 0), umax)
                        else:
                            half = 1 << (sh - 1)
                            for l in range(L):
                                tb[l] = min(max((accb[l] + half) >> sh, 0), umax)
                    w_in = Wu
                if w_in != Wu:  # F = 1: the query itself, in the u format (floor, saturate)
                    sh = w_in - Wu
                    for b in range(B):
                        tb = t[b]
                        for l in range(L):
                            tb[l] = min((tb[l] >> sh) if sh > 0 else (tb[l] << (-sh)), umax)
                # similarities (linf: min over blocks; dot: sum), first maximum
                Mf = M[f]
                best = -1
                barg = 0
                for m in range(Mf):
                    if dot:
                        v = 0
                        for b in range(B):
                            v += t[b, X[f, m, b]]
                    else:
                        v = t[0, X[f, m, 0]]
                        for b in range(1, B):
                            v = min(v, t[b, X[f, m, b]])
                    a[m] = v
                    if v > best:
                        best = v
                        barg = m
                if crossbar:  # the ADC's reading: a + p, saturated to the a word; then the first maximum again
                    crossbar_perturbation(t, a, f, n, it, W, R2, MX, keys, alpha, ip, fp, pert)
                    best = -1
                    for m in range(Mf):
                        v = min(max(a[m] + pert[m], 0), amax_word)
                        a[m] = v
                        if v > best:
                            best = v
                            barg = m
                # weights: similarities >= T (all of them when none is), or the pulled-up winner;
                # with A > 0 and no similarity above T: 1 at A LFSR-drawn indices (all when A >= M)
                if A > 0 and best <= T_int:
                    pulled = False
                    if A >= Mf:
                        for m in range(Mf):
                            w[m] = 1
                    else:
                        for m in range(Mf):
                            w[m] = 0
                        state = _draw_distinct(state, taps, Mf, A, w)
                else:
                    any_kept = False
                    for m in range(Mf):
                        if a[m] >= T_int:
                            any_kept = True
                    pulled = best >= Tc_int
                    for m in range(Mf):
                        if pulled:
                            w[m] = 1 if m == barg else 0
                        elif any_kept and a[m] < T_int:
                            w[m] = 0
                        else:
                            w[m] = a[m]
                # bundle and normalize with one reciprocal: x = sat((s R) >> (p + G - Wx)); s, and
                # so x, is zero outside the positions f's codevectors occupy: only those are touched
                for b in range(B):
                    for k in range(npos[f, b]):
                        s[b, pos[f, b, k]] = 0
                S = 0
                for m in range(Mf):
                    S += w[m]
                    for b in range(B):
                        s[b, X[f, m, b]] += w[m]
                x[f] = 0
                if S > 0:
                    p = 0
                    while (S >> p) > 0:
                        p += 1
                    R = (1 << (p + G)) // S
                    sh = p + G - Wx
                    for b in range(B):
                        for k in range(npos[f, b]):
                            j = pos[f, b, k]
                            x[f, b, j] = min((np.int64(s[b, j]) * R) >> sh, xmax)
                all_pulled = all_pulled and pulled
                arg[f] = barg
                amx[f] = best
                if trace:
                    x_tr[n, it - 1, f] = x[f]
                    for m in range(Mf):
                        a_tr[n, it - 1, f, m] = a[m]
                        w_tr[n, it - 1, f, m] = w[m]
            for f in range(F):
                indices[n, f] = arg[f]
                amax_out[n, f] = amx[f]
            iterations[n] = it
            if all_pulled:
                converged[n] = True
                break
    return status, indices, iterations, converged, amax_out, x_tr, a_tr, w_tr
