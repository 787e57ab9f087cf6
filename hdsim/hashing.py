"""Counter-based random bits: MurmurHash3's finalizer and the per-query draw streams built on it.

Torch-free: every function here is pure integer arithmetic (``^``, ``>>``, ``&``,
``*``, ``+``, ``<<``) that works unchanged on Python ints, NumPy ``int64`` arrays
and torch ``int64`` tensors (on any device); no intermediate value reaches
``2^63``, so nothing overflows. The torch sparse resonator
(:mod:`hdsim.factorizers.sparse_resonator`), its NumPy twin
(:mod:`hdsim.sparse_resonator_numpy`) and the BCF's
:class:`~hdsim.factorizers.base.RandomSampler` draw through these functions, so
the same ``(seed, query id, event)`` gives the same bits on every backend.

A stream is addressed by a 32-bit key (from the seed, :func:`seed_key`), a query
id and an event counter; :func:`counter_bits` returns ``count`` words of it.
"""

from __future__ import annotations

__all__ = ["MASK32", "mix32", "seed_key", "counter_bits"]

MASK32 = 0xFFFF_FFFF
_SEED_SALT = 0x9E37_79B9  # 2^32 / golden ratio: keeps seed 0 away from the fixed point mix32(0) = 0


def _mul32(h, c: int):
    """``(h * c) mod 2^32`` for ``h`` in ``[0, 2^32)`` (int or int64 array/tensor), without int64 overflow."""
    # split c, not h: each partial product stays below 2^48, and c's halves are constants
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(h):
    """MurmurHash3's 32-bit finalizer ``fmix32``, a bijection of ``[0, 2^32)`` with full avalanche.

    ``h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16`` (products mod ``2^32``).

    Shapes:
        h: a Python int, or an int64 array / tensor of any shape, values in ``[0, 2^32)``
        returns: same type, shape and range

    Example:
        >>> mix32(0), mix32(1), hex(mix32(0xDEADBEEF))
        (0, 1364076727, '0xde5c6a9')
        >>> import numpy as np
        >>> mix32(np.array([1, 2], dtype=np.int64)).tolist()
        [1364076727, 821347078]
    """
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EB_CA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2_AE35)
    return h ^ (h >> 16)


def seed_key(seed: int) -> int:
    """The 32-bit stream key of a seed: ``mix32(mix32((s mod 2^32) XOR 0x9e3779b9) XOR (s >> 32))``.

    ``s`` is ``seed mod 2^64``, so every 64-bit seed has its own key (up to 32-bit collisions).

    Example:
        >>> seed_key(0) == seed_key(0), seed_key(0) == seed_key(1), 0 <= seed_key(2**64 - 1) < 2**32
        (True, False, True)
    """
    s = int(seed) & ((1 << 64) - 1)
    return mix32(mix32((s & MASK32) ^ _SEED_SALT) ^ (s >> 32))


def _arange_like(ids, count: int):
    """``[0, 1, ..., count - 1]`` as int64, of the type (and device) of ``ids``."""
    if hasattr(ids, "new_ones"):  # a torch tensor: the caller has torch, this module need not import it
        return ids.new_ones(count).cumsum(0) - 1
    import numpy as np

    return np.arange(count, dtype=np.int64)


def counter_bits(key: int, ids, event, count: int):
    """``count`` 32-bit hash words per query: word ``j`` of query ``i`` at event ``e``.

    ``bits[i, j] = mix32(mix32(mix32(key XOR id_i) XOR e) XOR j)``, with ``id_i`` and ``e``
    taken mod ``2^32``. A query's words depend only on ``(key, id, event, j)``: not on the
    other ids in the call, their order or the device, so a decode that gives every query a
    global id and counts its draw events is independent of how the queries are batched.
    The three rounds of :func:`mix32` (a bijection with full avalanche) make words of
    distinct ``(id, event, j)`` look independent; ``j < 2^32``.

    Shapes:
        key: an int in ``[0, 2^32)`` (from :func:`seed_key`)
        ids: ``(k,)`` non-negative int64, a NumPy array or a torch tensor
        event: an int, or ``(k,)`` int64 of the type of ``ids`` (a per-query counter)
        returns: ``(k, count)`` int64 in ``[0, 2^32)``, of the type (and device) of ``ids``

    Example:
        >>> import numpy as np
        >>> key = seed_key(7)
        >>> bits = counter_bits(key, np.array([0, 5, 9], dtype=np.int64), 3, 4)
        >>> bits.shape, bits.dtype.name, bool((bits >= 0).all() and (bits < 2**32).all())
        ((3, 4), 'int64', True)
        >>> bool((counter_bits(key, np.array([5], dtype=np.int64), 3, 4) == bits[1:2]).all())
        True
        >>> int(bits[0, 2]) == mix32(mix32(mix32(key ^ 0) ^ 3) ^ 2)
        True
    """
    h = mix32(mix32(key ^ (ids & MASK32)) ^ (event & MASK32))
    return mix32(h[:, None] ^ _arange_like(ids, count)[None, :])
