"""The numba kernel of :mod:`hdsim.fixed.compiled` (imports numba; loaded only when used).

One loop nest per query, queries spread over threads with ``prange``; the float engine's
speedups (:mod:`hdsim.engine_kernel`: unbinding over the sparser operand's non-zeros, ``linf``
candidates pruned below ``T``, the LFSR a byte at a time), each exact on integers.

Module-level so that numba caches the compiled code (``cache=True``: next to this file, or
under ``$NUMBA_CACHE_DIR``) and a new process skips the seconds of compilation. No torch, and
no constant of its own: the datapath's and the LFSR's constants come in through ``params``.
"""

import math

import numba
import numpy as np

from numba import prange

# The crossbar's per-query perturbation (``decode_crossbar``). numba's cache of this module does
# not notice edits to that one: a change there needs ``NUMBA_CACHE_DIR`` cleared (or this file touched).
from hdsim.imc._fixed_crossbar_kernel import crossbar_perturbation
from hdsim.block_similarities import block_similarities
from hdsim.lfsr_tables import lfsr_byte_tables, lfsr_word, word_bits

# params of decode (one int64 array: one argument to type per call instead of fourteen)
P_WQ, P_WX, P_WU, P_G, P_T, P_TC, P_MAX_ITER, P_DOT, P_TRACE, P_QUANTIZE, P_K, P_A, P_TAPS, P_ABITS = range(14)
N_PARAMS = 14


@numba.njit(cache=True, nogil=True, inline="always")
def _quantize_query(qf, n, bits, K, out, v):
    """:func:`hdsim.fixed.bcf.quantize_query` of query ``n`` of ``qf`` ``(N, B, L)`` (float64)
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


# A sparse-by-sparse unbinding scatters nnz_t * nnz_x products when that is below
# L * min(nnz) / DENSE_GAIN: the dense forms' contiguous loops over l run several lanes per
# instruction, the scatter does not (the float engine's rule, hdsim.engine_kernel).
DENSE_GAIN = 4


@numba.njit(cache=True, nogil=True, inline="always")
def _draw_distinct(state, taps, Mf, A, w, drawn, outs, masks):
    """:func:`hdsim.lfsr.draw_distinct` from the register ``state`` (a Galois right shift by
    ``taps``), marking the ``A`` drawn indices of ``[0, Mf)`` with 1 in ``w`` (which must be 0
    there on entry; ``1 <= A < Mf``) and listing them, in draw order, in ``drawn[:A]``.
    Returns the register's new state.

    ``k = bit_length(Mf - 1)``-bit words (:func:`hdsim.lfsr_tables.lfsr_word`); a word is accepted
    when ``< Mf`` and not yet drawn, else discarded (the register has advanced).
    """
    k = word_bits(Mf)
    count = 0
    while count < A:
        word, state = lfsr_word(state, k, taps, outs, masks)
        # accept without a branch (a coin flip to the predictor): a rejected word adds 0 to w[0]
        ok = word < Mf
        i = word if ok else 0
        ok = ok & (w[i] == 0)
        w[i] += ok
        drawn[count] = i
        count += ok
    return state


@numba.njit(cache=True, nogil=True, inline="always")
def _list_nonzeros(t, B, L, tnz, tcnt):
    """Per block ``b``, the offsets of ``t[b]``'s non-zeros into ``tnz[b]``, their count into ``tcnt[b]``."""
    for b in range(B):
        tb, nzb = t[b], tnz[b]
        c = 0
        for l in range(L):  # branch-free: a branch on data-dependent zeros mispredicts
            nzb[c] = l
            c += tb[l] != 0
        tcnt[b] = c


@numba.njit(cache=True, nogil=True, inline="always")
def _unbind(t, tnz, tcnt, x, pos, npos, acc, xnz, B, L):
    """``acc[b, l] = sum_j t[b, (l + j) mod L] x[b, j]`` (one correlation), over the non-zeros of
    the sparser operand per block: by ``t``'s (listed in ``tnz``/``tcnt``, see
    :func:`_list_nonzeros`), ``acc[b, l] += t[b, i] x[b, i - l]``; by ``x``'s (at most its
    ``npos[b]`` positions ``pos[b]``), ``acc[b, l] += x[b, j] t[b, l + j]``; when both are sparse
    the ``nnz_t * nnz_x`` products go to ``acc[b, (i - j) mod L]``. Cost ``L min(nnz_t, nnz_x)``
    (or ``nnz_t nnz_x``) instead of ``L^2``; an exact query has one non-zero per block (then
    ``x`` is not even listed: ``L`` products).

    Bit-exact in any order: the same integer products are summed, every one ``>= 0`` (words are
    unsigned), so each partial sum lies between 0 and the final sum and fits ``acc``'s word
    whenever the final sum does (the datapath's accumulator width bounds it). ``xnz`` ``(L,)``
    int64 scratch.
    """
    for b in range(B):
        accb, tb, xb = acc[b], t[b], x[b]
        for l in range(L):
            accb[l] = 0
        nt = tcnt[b]
        tnzb = tnz[b]
        if nt <= 1:
            nx = L  # by t's non-zero (if any): L products, cheaper than listing x's
        else:
            nx = 0
            for k in range(npos[b]):
                j = pos[b, k]
                xnz[nx] = j
                nx += xb[j] != 0
        if nt * nx * DENSE_GAIN < L * min(nt, nx):
            for ii in range(nt):
                i = tnzb[ii]
                ti = tb[i]
                for jj in range(nx):
                    j = xnz[jj]
                    d = i - j
                    if d < 0:
                        d += L
                    accb[d] += ti * xb[j]
        elif nx < nt:
            for jj in range(nx):
                j = xnz[jj]
                xv = xb[j]
                for l in range(L - j):  # contiguous: the compiler vectorizes
                    accb[l] += tb[l + j] * xv
                for l in range(L - j, L):
                    accb[l] += tb[l + j - L] * xv
        else:
            for ii in range(nt):
                i = tnzb[ii]
                tv = tb[i]
                for l in range(i + 1):
                    accb[l] += tv * xb[i - l]
                for l in range(i + 1, L):
                    accb[l] += tv * xb[i - l + L]


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


@numba.njit(cache=True, nogil=True, parallel=True)
def _decode(q, qf, X, M, pos, npos, x0, seeds, params, W, R2, MX, keys, alpha, ip, fp):
    """Decode every query of ``q`` ``(N, B, L)`` (words), or with ``params[P_QUANTIZE]`` of
    ``qf`` (floats, quantized query by query), in parallel over queries (numba ``prange``, as
    many threads as ``numba.set_num_threads`` allows). Each query has its own scratch and
    register and writes only its own rows: the results do not depend on the thread count.

    With ``A = params[P_A] > 0``, ``seeds`` ``(N,)`` holds each query's LFSR start state
    (:func:`hdsim.lfsr.query_seeds` of its position); its register serves all its draws, every
    factor, in order. With ``A = 0`` it is not read (may be empty).

    Outputs are allocated here (fewer arguments to type per call: the batch-1 latency):
    returns ``(status, indices (N, F), iterations (N,), converged (N,), amax (N, F),
    x_tr, a_tr, w_tr)``; ``status`` is ``-1`` or :func:`_quantize_query`'s failure code of the
    first failing query, the traces are empty unless ``params[P_TRACE]``.
    """
    trace, quant = params[P_TRACE] != 0, params[P_QUANTIZE] != 0
    max_iter = params[P_MAX_ITER]
    if quant:
        q = np.empty(qf.shape, x0.dtype)
    N, B, L = q.shape
    F, Mmax = X.shape[0], X.shape[1]
    XT = np.empty((F, B, Mmax), np.int64)  # block-major offsets: the similarity reads a row per block
    for f in range(F):
        for b in range(B):
            for m in range(Mmax):
                XT[f, b, m] = X[f, m, b]
    # per factor and block, the codevectors by offset (a counting sort, ascending m in a bucket):
    # bucket l of block b holds bm[f, b, bstart[f, b, l]:bstart[f, b, l + 1]]
    bstart = np.zeros((F, B, L + 1), np.int64)
    bm = np.empty((F, B, Mmax), np.int64)
    for f in range(F):
        for b in range(B):
            for m in range(M[f]):
                bstart[f, b, X[f, m, b] + 1] += 1
            for l in range(L):
                bstart[f, b, l + 1] += bstart[f, b, l]
            fill = bstart[f, b, :L].copy()
            for m in range(M[f]):
                j = X[f, m, b]
                bm[f, b, fill[j]] = m
                fill[j] += 1
    indices = np.zeros((N, F), np.int64)
    iterations = np.zeros(N, np.int64)
    converged = np.zeros(N, np.bool_)
    amax_out = np.zeros((N, F), np.int64)
    Nt, It = (N, max_iter) if trace else (0, 0)
    x_tr = np.zeros((Nt, It, F, B, L), np.int64)
    a_tr = np.zeros((Nt, It, F, Mmax), np.int64)
    w_tr = np.zeros((Nt, It, F, Mmax), np.int64)
    bad = np.full(N, -1, np.int64)
    outs, masks = lfsr_byte_tables(params[P_TAPS])
    for n in prange(N):
        if quant:
            vbuf = np.empty(L, np.int64)
            bad[n] = _quantize_query(qf, n, params[P_WQ], params[P_K], q, vbuf)
        if bad[n] >= 0:  # not decoded: the caller raises on the first failing query
            continue
        # per-query scratch (a few KiB, negligible next to the decode), in q's word type
        # (int32 when every signal fits, see CompiledFixedBCF)
        x = np.empty((F, B, L), q.dtype)
        t = np.empty((B, L), q.dtype)
        acc = np.empty((B, L), q.dtype)
        a = np.empty(Mmax, q.dtype)
        w = np.empty(Mmax, q.dtype)
        s = np.empty((B, L), q.dtype)
        tnz = np.empty((B, L), np.int64)
        tcnt = np.empty(B, np.int64)
        qnz = np.empty((B, L), np.int64)
        qcnt = np.empty(B, np.int64)
        xnz = np.empty(L, np.int64)
        cand = np.empty(Mmax, np.int64)
        pert = np.zeros(Mmax, np.int64)
        _decode_one(n, q, X, XT, bstart, bm, M, pos, npos, x0, seeds, params, W, R2, MX, keys, alpha, ip, fp,
                    indices, iterations, converged, amax_out, x_tr, a_tr, w_tr, outs, masks,
                    x, t, acc, a, w, s, tnz, tcnt, qnz, qcnt, xnz, cand, pert)
    status = -1
    for n in range(N):
        if bad[n] >= 0:
            status = bad[n]
            break
    return status, indices, iterations, converged, amax_out, x_tr, a_tr, w_tr


@numba.njit(cache=True, nogil=True)
def _decode_one(n, q, X, XT, bstart, bm, M, pos, npos, x0, seeds, params, W, R2, MX, keys, alpha, ip, fp,
                indices, iterations, converged, amax_out, x_tr, a_tr, w_tr, outs, masks,
                x, t, acc, a, w, s, tnz, tcnt, qnz, qcnt, xnz, cand, pert):
    """Query ``n`` of :func:`_decode`: its rows of the outputs and traces; the rest is scratch."""
    Wq, Wx, Wu, G = params[P_WQ], params[P_WX], params[P_WU], params[P_G]
    T_int, Tc_int, max_iter = params[P_T], params[P_TC], params[P_MAX_ITER]
    dot, trace = params[P_DOT] != 0, params[P_TRACE] != 0
    A, taps = params[P_A], params[P_TAPS]
    crossbar = W.shape[0] > 0
    # linf with T > 0 and nothing reading every a_m (no trace, no crossbar): codevectors drop out
    # of the similarity once their partial min is below T (see below)
    pruned = not (dot or trace or crossbar) and T_int > 0
    amax_word = (1 << params[P_ABITS]) - 1
    B, L = q.shape[1], q.shape[2]
    F = X.shape[0]
    umax = (1 << Wu) - 1
    xmax = (1 << Wx) - 1
    qn = q[n]
    _list_nonzeros(qn, B, L, qnz, qcnt)  # the first unbinding's operand, every step
    x[:] = x0
    state = seeds[n] if A > 0 else 0  # this query's register (int64: a 32-bit state)
    for it in range(1, max_iter + 1):
        all_pulled = True
        for f in range(F):
            # u_f: unbind every other factor's estimate, requantizing after each (round half up)
            w_in = Wq
            first = True
            for g in range(F):
                if g == f:
                    continue
                if first:  # from the query
                    _unbind(qn, qnz, qcnt, x[g], pos[g], npos[g], acc, xnz, B, L)
                    first = False
                else:  # from the last unbinding's requantized result
                    _list_nonzeros(t, B, L, tnz, tcnt)
                    _unbind(t, tnz, tcnt, x[g], pos[g], npos[g], acc, xnz, B, L)
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
            if first:  # F = 1: the query itself, in the u format (floor, saturate)
                t[:] = qn
                sh = w_in - Wu
                for b in range(B):
                    tb = t[b]
                    for l in range(L):
                        tb[l] = min((tb[l] >> sh) if sh > 0 else (tb[l] << (-sh)), umax)
            # similarities (linf: min over blocks; dot: sum), block by block
            Mf = M[f]
            XTf = XT[f]
            if not pruned:
                block_similarities(t, XTf, Mf, B, dot, a)
                c = Mf  # every a_m is final
            else:
                # a min only falls: once a partial min is below T the codevector can be neither kept
                # nor the maximum of a kept set, so only the candidates (partial >= T) read their
                # next block. Exact: every candidate's a_m is its full min. The first block is read
                # by position: the codevectors at each offset l with t[0, l] >= T (a bucket, from
                # bstart/bm), so the ones below T there are never touched. The candidates are then
                # in bucket order, not index order: the sums below do not care (integers), the
                # first maximum breaks ties by index explicitly.
                c = 0
                row = t[0]
                st = bstart[f, 0]
                bl = bm[f, 0]
                for l in range(L):
                    v = row[l]
                    if v >= T_int:
                        for k in range(st[l], st[l + 1]):
                            m = bl[k]
                            a[m] = v
                            cand[c] = m
                            c += 1
                for b in range(1, B):
                    row = t[b]
                    idx = XTf[b]
                    c2 = 0
                    for k in range(c):
                        m = cand[k]
                        v = min(a[m], row[idx[m]])
                        a[m] = v
                        cand[c2] = m
                        c2 += v >= T_int
                    c = c2
                if c == 0 and (A == 0 or it == max_iter):
                    # nothing kept: the weights (A = 0) or the final readout need every a_m in full
                    block_similarities(t, XTf, Mf, B, False, a)
                    c = -1  # every a_m final, none >= T
            if crossbar:  # the ADC's reading: a + p, saturated to the a word
                crossbar_perturbation(t, a, f, n, it, W, R2, MX, keys, alpha, ip, fp, pert)
                for m in range(Mf):
                    a[m] = min(max(a[m] + pert[m], 0), amax_word)
            # the first maximum
            if c == Mf or c == -1:
                best = a[0]
                for m in range(1, Mf):
                    best = max(best, a[m])
                barg = 0
                while a[barg] != best:
                    barg += 1
            elif c > 0:  # the candidates hold every a_m >= T: the maximum, first in index order
                best = a[cand[0]]
                barg = cand[0]
                for k in range(1, c):
                    m = cand[k]
                    v = a[m]
                    if v > best or (v == best and m < barg):
                        best = v
                        barg = m
            else:  # none >= T and sampling follows: the maximum is below T, its value is not read
                best = -1
                barg = 0
            # weights: similarities >= T (all of them when none is), or the pulled-up winner;
            # with A > 0 and no similarity above T: 1 at A LFSR-drawn indices (all when A >= M)
            sampled = A > 0 and best <= T_int
            pulled = (not sampled) and best >= Tc_int
            # the weights the bundle reads: w (every m), the candidates' a (pruned, some kept), or
            # the winner alone (pulled, untraced)
            from_w = True
            if sampled:
                if A >= Mf:
                    for m in range(Mf):
                        w[m] = 1
                else:
                    for m in range(Mf):
                        w[m] = 0
                    state = _draw_distinct(state, taps, Mf, A, w, cand, outs, masks)
                    from_w = False  # the bundle reads the A drawn indices (cand), weight 1
            elif pulled and not trace:
                from_w = False
            elif c == Mf or c == -1:
                any_kept = best >= T_int  # some a_m >= T exactly when the largest is
                for m in range(Mf):
                    if pulled:
                        w[m] = 1 if m == barg else 0
                    elif any_kept and a[m] < T_int:
                        w[m] = 0
                    else:
                        w[m] = a[m]
            else:
                from_w = False
            # bundle and normalize with one reciprocal: x = sat((s R) >> (p + G - Wx)); s, and
            # so x, is zero outside the positions f's codevectors occupy: only those are touched.
            # S and s are integer sums: the same in any order.
            for b in range(B):
                for k in range(npos[f, b]):
                    s[b, pos[f, b, k]] = 0
            S = 0
            if from_w:
                for m in range(Mf):
                    wm = w[m]
                    if wm != 0:
                        S += wm
                        for b in range(B):
                            s[b, X[f, m, b]] += wm
            elif pulled:
                S = 1
                for b in range(B):
                    s[b, X[f, barg, b]] += 1
            elif sampled:
                S = A
                for k in range(A):
                    m = cand[k]
                    for b in range(B):
                        s[b, X[f, m, b]] += 1
            else:
                for k in range(c):
                    m = cand[k]
                    wm = a[m]
                    if wm != 0:
                        S += wm
                        for b in range(B):
                            s[b, X[f, m, b]] += wm
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
            indices[n, f] = barg
            amax_out[n, f] = best
            if trace:
                x_tr[n, it - 1, f] = x[f]
                for m in range(Mf):
                    a_tr[n, it - 1, f, m] = a[m]
                    w_tr[n, it - 1, f, m] = w[m]
        iterations[n] = it
        if all_pulled:
            converged[n] = True
            break
