"""The similarity of every codevector to an unbound estimate, by one gather per block, for the
compiled decoders (numba).

One definition for :mod:`hdsim.engine_kernel` (float engine) and :mod:`hdsim.fixed._compiled_kernel`
(fixed-point twin): SPEC section 3's ``linf`` similarity ``a_m = min_b t[b, X[m, b]]`` and ``dot``
``a_m = sum_b t[b, X[m, b]]``, where ``X[m, b]`` is the position of codevector ``m``'s one active
element in block ``b`` (a sparse block code has one per block, so the scalar product with the
estimate is a gather, not an L-long sum). Both kernels use it when every ``a_m`` is needed (``dot``,
or ``linf`` without a threshold to prune by); their pruned ``linf`` paths differ (the fixed twin
reads the first block by position buckets) and stay in them. Note: numba's cache of a kernel module
does not notice edits to this callee; clear ``__pycache__/*.nbi``/``*.nbc`` after changing it.
"""

from __future__ import annotations

import numba

__all__ = ["block_similarities"]


# inlined at numba IR level into both kernels: a call per factor step is measurable in the hot loop
@numba.njit(cache=True, nogil=True, inline="always")
def block_similarities(t, XTf, Mf, B, dot, a):
    """Every ``a[m]``, ``m < Mf``: ``min_b t[b, XTf[b, m]]`` (linf) or ``sum_b`` (dot), block by block.

    Shapes: ``t`` (B, L) estimate after unbinding (float or integer), ``XTf`` (B, >= Mf) integer
    positions (the codebook transposed: block-major, so each block's gather is one pass over a
    contiguous row), ``a`` (>= Mf,) written in place, of ``t``'s kind.

    >>> import numpy as np
    >>> t = np.array([[5, 1, 7], [2, 9, 4]])            # B=2 blocks of L=3
    >>> XT = np.array([[0, 2, 1], [1, 2, 0]])           # codevector m: positions XT[0, m], XT[1, m]
    >>> a = np.zeros(3, np.int64)
    >>> block_similarities(t, XT, 3, 2, False, a); a.tolist()   # min(5,9) min(7,4) min(1,2)
    [5, 4, 1]
    >>> block_similarities(t, XT, 3, 2, True, a); a.tolist()    # 5+9 7+4 1+2
    [14, 11, 3]
    """
    row = t[0]
    idx = XTf[0]
    for m in range(Mf):
        a[m] = row[idx[m]]
    for b in range(1, B):
        row = t[b]
        idx = XTf[b]
        if dot:
            for m in range(Mf):
                a[m] += row[idx[m]]
        else:
            for m in range(Mf):
                a[m] = min(a[m], row[idx[m]])
