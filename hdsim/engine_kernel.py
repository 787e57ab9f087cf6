"""The numba kernel of :mod:`hdsim.engine` (imports numba; loaded only when used).

Module-level so that numba caches the compiled code (``cache=True``) and a new process skips the
seconds of compilation. Float64, one loop nest per query, queries spread over threads with
``prange`` (each query runs to its own convergence: no batch tail). No torch.
"""

import numba
import numpy as np

from numba import prange

from hdsim.block_similarities import block_similarities
from hdsim.lfsr_tables import lfsr_byte_tables, lfsr_word, word_bits

# params (one float64 array): the scalars of a decode
P_T, P_TC, P_A, P_MAX_ITER, P_DOT, P_TAPS = range(6)
N_PARAMS = 6

# operation counters per query (columns of ``ops``), summed over the iterations it ran
OP_UNBIND, OP_SIM, OP_ACT, OP_SAMPLE, OP_BUNDLE, OP_NORM = range(6)
N_OPS = 6

# a sparse-by-sparse unbinding scatters nnz_t * nnz_x products when that is below L * min(nnz) / DENSE_GAIN
# (the dense form's contiguous loop over l runs several lanes per instruction; the scatter does not)
DENSE_GAIN = 4


@numba.njit(cache=True, nogil=True, inline="always")
def _draw_distinct(state, taps, Mf, A, w, outs, masks):
    """:func:`hdsim.lfsr.draw_distinct` from the register ``state`` (a Galois right shift by ``taps``),
    setting ``w`` to 1 at the ``A`` drawn indices of ``[0, Mf)`` (``w`` is 0 there on entry;
    ``1 <= A < Mf``). Returns the register's new state and the words drawn.

    ``k = bit_length(Mf - 1)``-bit words (:func:`hdsim.lfsr_tables.lfsr_word`); a word is accepted
    when ``< Mf`` and not yet drawn, else discarded (the register has advanced).
    """
    k = word_bits(Mf)
    count = 0
    words = 0
    while count < A:
        word, state = lfsr_word(state, k, taps, outs, masks)
        words += 1
        if word < Mf and w[word] == 0.0:
            w[word] = 1.0
            count += 1
    return state, words


@numba.njit(cache=True, nogil=True, inline="always")
def _nonzeros(v, L, nz):
    """Positions of the non-zero entries of ``v`` ``(L,)`` into ``nz``; returns their count."""
    c = 0
    for l in range(L):  # branch-free: a branch on random zeros mispredicts
        nz[c] = l
        c += v[l] != 0.0
    return c


@numba.njit(cache=True, nogil=True)
def _correlate(t, tnz, tcnt, x, xnz, xcnt, u, L, B):
    """``u[b, l] = sum_j t[b, (l + j) mod L] x[b, j]`` (SPEC unbind), sparse-aware per block.

    Loops over the non-zeros of the sparser operand: by ``x``'s, ``u[b, l] += x[b, j] t[b, l + j]``
    (contiguous over ``l``); by ``t``'s, ``u[b, l] += t[b, i] x[b, i - l]`` (``i - l`` runs
    backwards, so ``x`` is read reversed); when both are sparse, the ``nnz_t * nnz_x`` products
    are scattered to ``u[b, (i - j) mod L]``. ``tnz``/``tcnt`` (``xnz``/``xcnt``) list each block's
    non-zeros. Returns the multiply-adds done.
    """
    madds = 0
    for b in range(B):
        ub = u[b]
        tb = t[b]
        xb = x[b]
        nt, nx = tcnt[b], xcnt[b]
        for l in range(L):
            ub[l] = 0.0
        if nt * nx * DENSE_GAIN < L * min(nt, nx):
            for ii in range(nt):
                i = tnz[b, ii]
                ti = tb[i]
                for jj in range(nx):
                    j = xnz[b, jj]
                    d = i - j
                    if d < 0:
                        d += L
                    ub[d] += ti * xb[j]
            madds += nt * nx
        elif nx <= nt:
            for jj in range(nx):
                j = xnz[b, jj]
                xv = xb[j]
                for l in range(L - j):
                    ub[l] += tb[l + j] * xv
                for l in range(L - j, L):
                    ub[l] += tb[l + j - L] * xv
            madds += nx * L
        else:
            for ii in range(nt):
                i = tnz[b, ii]
                tv = tb[i]
                for l in range(i + 1):
                    ub[l] += tv * xb[i - l]
                for l in range(i + 1, L):
                    ub[l] += tv * xb[i - l + L]
            madds += nt * L
    return madds


@numba.njit(cache=True, nogil=True)
def _decode_one(n, q, XT, X, M, x0, seed, params, indices, iterations, converged, amax_out, ops,
                x, xnz, xcnt, t, tnz, tcnt, u, a, w, s, cand, outs, masks):
    T, Tc = params[P_T], params[P_TC]
    A, max_iter = np.int64(params[P_A]), np.int64(params[P_MAX_ITER])
    dot = params[P_DOT] != 0.0
    taps = np.int64(params[P_TAPS])
    B, L = q.shape[1], q.shape[2]
    F = XT.shape[0]
    qn = q[n]
    qnz = np.empty((B, L), np.int64)
    qcnt = np.empty(B, np.int64)
    for b in range(B):
        qcnt[b] = _nonzeros(qn[b], L, qnz[b])
    x[:] = x0
    for f in range(F):
        for b in range(B):
            xcnt[f, b] = _nonzeros(x[f, b], L, xnz[f, b])
    dense_cnt = np.full(B, L, np.int64)  # "every position": the count a dense operand is treated with
    state = seed
    for it in range(1, max_iter + 1):
        all_pulled = True
        for f in range(F):
            # u_f = q ⊘ x_g for each g != f in turn (correlating by a binding = by each factor)
            src, snz, scnt = qn, qnz, qcnt
            first = True
            for g in range(F):
                if g == f:
                    continue
                if not first:  # the next correlation reads the last one's result
                    t[:] = u
                    for b in range(B):
                        tcnt[b] = _nonzeros(t[b], L, tnz[b])
                    src, snz, scnt = t, tnz, tcnt
                sparse_src = True
                for b in range(B):
                    sparse_src = sparse_src and scnt[b] <= 1
                if sparse_src:  # one non-zero per block (an exact query): loop over it, x read densely
                    ops[n, OP_UNBIND] += _correlate(src, snz, scnt, x[g], xnz[g], dense_cnt, u, L, B)
                else:
                    if xcnt[g, 0] < 0:  # list the estimate's non-zeros (left unlisted after its bundle)
                        for b in range(B):
                            xcnt[g, b] = _nonzeros(x[g, b], L, xnz[g, b])
                    ops[n, OP_UNBIND] += _correlate(src, snz, scnt, x[g], xnz[g], xcnt[g], u, L, B)
                first = False
            if first:  # F = 1: the query itself
                u[:] = qn
            # similarities: linf min_b u[b, X[m, b]], dot sum_b; first maximum
            Mf = M[f]
            XTf = XT[f]
            if dot or T <= 0.0:
                block_similarities(u, XTf, Mf, B, dot, a)
                ops[n, OP_SIM] += Mf * B
                c = Mf  # every a_m is final
            else:
                # linf with T > 0: a min only falls, so once a partial min is below T the codevector can
                # be neither kept nor the maximum of a kept set; only the candidates (partial >= T, in
                # index order) read their next block. Exact: every candidate's a_m is its full min.
                row = u[0]
                idx = XTf[0]
                for m in range(Mf):
                    a[m] = row[idx[m]]
                c = 0
                for m in range(Mf):
                    cand[c] = m
                    c += a[m] >= T
                gathers = Mf
                for b in range(1, B):
                    row = u[b]
                    idx = XTf[b]
                    gathers += c
                    c2 = 0
                    for k in range(c):
                        m = cand[k]
                        v = min(a[m], row[idx[m]])
                        a[m] = v
                        cand[c2] = m
                        c2 += v >= T
                    c = c2
                if c == 0 and (A == 0 or it == max_iter):
                    # nothing kept: the weights (A = 0) or the final readout need every a_m in full
                    for b in range(1, B):
                        row = u[b]
                        idx = XTf[b]
                        for m in range(Mf):
                            a[m] = min(a[m], row[idx[m]])
                    gathers += Mf * (B - 1)
                    c = -1  # every a_m final, none >= T
                ops[n, OP_SIM] += gathers
            # first maximum: a max reduction (vectorized), then the first index holding it
            if c == Mf or c == -1:
                best = a[0]
                for m in range(1, Mf):
                    best = max(best, a[m])
                barg = 0
                while a[barg] != best:
                    barg += 1
                ops[n, OP_ACT] += Mf
            elif c > 0:  # the candidates hold every a_m >= T, so the maximum, first in index order
                best = a[cand[0]]
                barg = cand[0]
                for k in range(1, c):
                    v = a[cand[k]]
                    if v > best:
                        best = v
                        barg = cand[k]
                ops[n, OP_ACT] += c
            else:  # none >= T and sampling follows: the maximum is below T, its value is not read
                best = -1.0
                barg = 0
            any_kept = best >= T  # some a_m >= T exactly when the largest is
            # weights (SPEC 3, steps 2.3-2.5)
            sampled = A > 0 and best <= T
            pulled = (not sampled) and best >= Tc
            if sampled:
                if A >= Mf:
                    for m in range(Mf):
                        w[m] = 1.0
                else:
                    for m in range(Mf):
                        w[m] = 0.0
                    state, words = _draw_distinct(state, taps, Mf, A, w, outs, masks)
                    ops[n, OP_SAMPLE] += words
            elif not pulled:
                if c == Mf or c == -1:
                    for m in range(Mf):  # keep a_m >= T, or every a_m when none is
                        v = a[m]
                        w[m] = v if (v >= T or not any_kept) else 0.0
                # else: the candidates are the a_m >= T; the bundle reads them directly
            xf = x[f]
            if pulled:  # one-hot at the winner: bundled and normalized, it is that codevector
                for b in range(B):
                    for l in range(L):
                        xf[b, l] = 0.0
                    j = X[f, barg, b]
                    xf[b, j] = 1.0
                    xnz[f, b, 0] = j
                    xcnt[f, b] = 1
                ops[n, OP_BUNDLE] += B
            else:
                # bundle: s[b, X[m, b]] += w[m] over the non-zero weights, in index order
                for b in range(B):
                    for l in range(L):
                        s[b, l] = 0.0
                nw = 0
                if not sampled and c > 0 and c < Mf:  # the kept weights are the candidates' a_m
                    for k in range(c):
                        m = cand[k]
                        wm = a[m]
                        if wm != 0.0:
                            nw += 1
                            for b in range(B):
                                s[b, X[f, m, b]] += wm
                else:
                    for m in range(Mf):
                        wm = w[m]
                        if wm != 0.0:
                            nw += 1
                            for b in range(B):
                                s[b, X[f, m, b]] += wm
                ops[n, OP_BUNDLE] += nw * B
                # per-block l1 normalization (a block summing to 0 stays 0)
                for b in range(B):
                    sb = s[b]
                    tot = 0.0
                    for l in range(L):
                        tot += sb[l]
                    xb = xf[b]
                    if tot > 0.0:
                        for l in range(L):
                            xb[l] = sb[l] / tot
                    else:
                        for l in range(L):
                            xb[l] = 0.0
                    xcnt[f, b] = -1  # listed when an unbinding needs it
                ops[n, OP_NORM] += 2 * B * L
            all_pulled = all_pulled and pulled
            indices[n, f] = barg
            amax_out[n, f] = best
        iterations[n] = it
        if all_pulled:
            converged[n] = True
            break


@numba.njit(cache=True, nogil=True, parallel=True)
def decode(q, XT, X, M, x0, seeds, params):
    """Decode every query of ``q`` ``(N, B, L)`` (block-normalized float64), in parallel over queries.

    ``XT`` ``(F, B, Mmax)`` and ``X`` ``(F, Mmax, B)`` are the codebooks' offsets (int64), ``M``
    ``(F,)`` their sizes, ``x0`` ``(F, B, L)`` the initial estimates, ``seeds`` ``(N,)`` each
    query's LFSR start state (read only when ``A > 0``).

    Returns ``indices (N, F)``, ``iterations (N,)``, ``converged (N,)``, ``amax (N, F)`` and
    ``ops (N, N_OPS)`` (the operations counted per step, summed over the query's iterations).
    """
    N, B, L = q.shape
    F, Mmax = XT.shape[0], XT.shape[2]
    indices = np.zeros((N, F), np.int64)
    iterations = np.zeros(N, np.int64)
    converged = np.zeros(N, np.bool_)
    amax_out = np.zeros((N, F), np.float64)
    ops = np.zeros((N, N_OPS), np.int64)
    outs, masks = lfsr_byte_tables(np.int64(params[P_TAPS]))
    for n in prange(N):
        # per-query scratch (allocated per query: a few KiB, negligible next to the decode)
        x = np.empty((F, B, L), np.float64)
        xnz = np.empty((F, B, L), np.int64)
        xcnt = np.empty((F, B), np.int64)
        t = np.empty((B, L), np.float64)
        tnz = np.empty((B, L), np.int64)
        tcnt = np.empty(B, np.int64)
        u = np.empty((B, L), np.float64)
        a = np.empty(Mmax, np.float64)
        w = np.empty(Mmax, np.float64)
        s = np.empty((B, L), np.float64)
        cand = np.empty(Mmax, np.int64)
        _decode_one(n, q, XT, X, M, x0, seeds[n] if seeds.shape[0] > 0 else 0, params, indices, iterations,
                    converged, amax_out, ops, x, xnz, xcnt, t, tnz, tcnt, u, a, w, s, cand, outs, masks)
    return indices, iterations, converged, amax_out, ops
