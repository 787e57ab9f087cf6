"""The numba kernel of :mod:`hdsim.fixed.compiled` (imports numba; loaded only when used).

Module-level so that numba caches the compiled code (``cache=True``: next to this file, or
under ``$NUMBA_CACHE_DIR``) and a new process skips the seconds of compilation.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def decode(q, X, M, pos, npos, x0, Wq, Wx, Wu, G, T_int, Tc_int, max_iter, dot, trace,
           indices, iterations, converged, amax_out, x_tr, a_tr, w_tr):
    N, B, L = q.shape
    F = X.shape[0]
    Mmax = X.shape[1]
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
    for n in range(N):
        x[:] = x0
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
                        for k in range(npos[g, b]):  # the positions g's codevectors can occupy
                            j = pos[g, b, k]
                            xv = x[g, b, j]
                            if xv != 0:
                                for l in range(L - j):
                                    acc[b, l] += t[b, l + j] * xv
                                for l in range(L - j, L):
                                    acc[b, l] += t[b, l + j - L] * xv
                    sh = w_in + Wx - Wu
                    for b in range(B):
                        for l in range(L):
                            v = acc[b, l]
                            if sh <= 0:
                                v = v << (-sh)
                            else:
                                v = (v + (1 << (sh - 1))) >> sh
                            t[b, l] = min(max(v, 0), umax)
                    w_in = Wu
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
                # weights: similarities >= T (all of them when none is), or the pulled-up winner
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
                # bundle and normalize with one reciprocal: x = sat((s R) >> (p + G - Wx))
                s[:] = 0
                S = 0
                for m in range(Mf):
                    S += w[m]
                    for b in range(B):
                        s[b, X[f, m, b]] += w[m]
                if S > 0:
                    p = 0
                    while (S >> p) > 0:
                        p += 1
                    R = (1 << (p + G)) // S
                    sh = p + G - Wx
                    for b in range(B):
                        for l in range(L):
                            x[f, b, l] = min((np.int64(s[b, l]) * R) >> sh, xmax)
                else:
                    x[f] = 0
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
