"""Byte-at-a-time tables of the Galois LFSR (:mod:`hdsim.lfsr`) for the compiled decoders (numba).

One definition for :mod:`hdsim.engine_kernel` (float engine) and :mod:`hdsim.fixed._compiled_kernel`
(fixed-point twin). Note: numba's cache of a kernel module does not notice edits to this callee;
clear ``__pycache__/*.nbi``/``*.nbc`` after changing it.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["lfsr_byte_tables"]


@numba.njit(cache=True, nogil=True)
def lfsr_byte_tables(taps):
    """Eight register steps at once: for the low byte ``v`` of a state ``s``, the eight output bits
    (first one in the most significant bit) in ``outs[v]``, and ``masks[v]`` with ``s`` after eight
    steps ``= (s >> 8) ^ masks[v]``. A Galois step ``s -> (s >> 1) ^ (taps * (s & 1))`` is linear
    over GF(2) and its next eight outputs depend only on the low byte (the table-driven CRC argument)."""
    outs = np.zeros(256, np.int64)
    masks = np.zeros(256, np.int64)
    for v in range(256):
        st = np.int64(v)
        o = 0
        for _ in range(8):
            out = st & 1
            st = (st >> 1) ^ (taps & -out)
            o = (o << 1) | out
        outs[v] = o
        masks[v] = st
    return outs, masks
