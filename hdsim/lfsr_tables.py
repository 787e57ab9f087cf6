"""The Galois LFSR (:mod:`hdsim.lfsr`) a byte at a time, for the compiled decoders (numba): its
tables and the draw of one word.

One definition for :mod:`hdsim.engine_kernel` (float engine) and :mod:`hdsim.fixed._compiled_kernel`
(fixed-point twin). Note: numba's cache of a kernel module does not notice edits to this callee;
clear ``__pycache__/*.nbi``/``*.nbc`` after changing it.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["lfsr_byte_tables", "word_bits", "lfsr_word"]


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


@numba.njit(cache=True, nogil=True, inline="always")
def word_bits(Mf):
    """``k = bit_length(Mf - 1)``: the register steps per drawn word of an index in ``[0, Mf)``
    (SPEC section 3's sampler; ``Mf >= 2``)."""
    k = 0
    while ((Mf - 1) >> k) > 0:
        k += 1
    return k


# inlined into both decoders' sampling loops (a call per word is measurable there)
@numba.njit(cache=True, nogil=True, inline="always")
def lfsr_word(state, k, taps, outs, masks):
    """The next ``k``-bit word of the register ``state`` (a Galois right shift by ``taps``) and the
    register after it: ``k`` output bits packed first bit first (MSB), as :func:`hdsim.lfsr.draw_distinct`
    packs them. The first ``8 * (k // 8)`` steps go a byte at a time (``outs``, ``masks`` from
    :func:`lfsr_byte_tables`), the rest bit by bit, so the register never runs ahead of the word.

    >>> from hdsim.lfsr import LFSR, LFSR_TAPS
    >>> outs, masks = lfsr_byte_tables(LFSR_TAPS)
    >>> word, state = lfsr_word(12345, 19, LFSR_TAPS, outs, masks)   # two bytes and three bits
    >>> reg = LFSR(12345)
    >>> (word, state) == (reg.next_bits(19), reg.state)
    True
    """
    nbytes = k >> 3
    word = 0
    for _ in range(nbytes):
        v = state & 255
        state = (state >> 8) ^ masks[v]
        word = (word << 8) | outs[v]
    for _ in range(k - 8 * nbytes):
        out = state & 1
        state = (state >> 1) ^ (taps & -out)  # branch-free: out is a coin flip
        word = (word << 1) | out
    return word, state
