"""The fixed-point rounding and overflow helpers — the one definition of each.

Every op of the fixed-point BCF names one rounding and one overflow rule from
this module. All tensor functions take and return int64 tensors holding integers
and use integer operations only (shifts, comparisons, adds); the configuration
constant of :func:`quantize_unsigned` is computed on exact rationals. Python pitfalls avoided here: ``np.round``/``torch.round``
round half to even (we never use them), ``>>`` on negative integers floors
(documented below), and argmax returns the first maximum (relied upon).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the helpers take tensors; importing this module needs no torch (widths.py uses it)
    from torch import Tensor

__all__ = ["shift_floor", "shift_round_half_up", "saturate_unsigned", "saturate_signed", "wrap_unsigned",
           "unsigned_max", "bit_length", "quantize_unsigned"]


def unsigned_max(bits: int) -> int:
    """Largest value of an unsigned ``bits``-bit word: ``2^bits - 1``."""
    return (1 << bits) - 1


def shift_floor(x: Tensor, shift: int) -> Tensor:
    """``floor(x / 2^shift)`` (arithmetic right shift; floors negative values too).

    Example:
        >>> import torch
        >>> shift_floor(torch.tensor([7, -7]), 1)
        tensor([ 3, -4])
    """
    return x >> shift if shift > 0 else x << (-shift)


def shift_round_half_up(x: Tensor, shift: int) -> Tensor:
    """``floor(x / 2^shift + 1/2)``: round to nearest, ties toward +infinity.

    Example:
        >>> import torch
        >>> shift_round_half_up(torch.tensor([5, 6, -5, -6]), 2)
        tensor([ 1,  2, -1, -1])
    """
    if shift <= 0:
        return x << (-shift)
    return (x + (1 << (shift - 1))) >> shift


def saturate_unsigned(x: Tensor, bits: int) -> Tensor:
    """Clip to ``[0, 2^bits - 1]``.

    Example:
        >>> import torch
        >>> saturate_unsigned(torch.tensor([-3, 5, 300]), 8)
        tensor([  0,   5, 255])
    """
    return x.clamp(0, unsigned_max(bits))


def saturate_signed(x: Tensor, bits: int) -> Tensor:
    """Clip to ``[-2^(bits-1), 2^(bits-1) - 1]``.

    Example:
        >>> import torch
        >>> saturate_signed(torch.tensor([-300, 5, 300]), 8)
        tensor([-128,    5,  127])
    """
    return x.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def wrap_unsigned(x: Tensor, bits: int) -> Tensor:
    """Keep the low ``bits`` bits (modulo ``2^bits``), as a hardware register would.

    Example:
        >>> import torch
        >>> wrap_unsigned(torch.tensor([257, -1]), 8)
        tensor([  1, 255])
    """
    return x & unsigned_max(bits)


def bit_length(x: Tensor) -> Tensor:
    """Number of bits of each non-negative integer (0 for 0): a priority encoder.

    Integer-only, for every int64 value ``0 <= x < 2^63``: a binary search over the
    shift, ``n += s`` and ``x >>= s`` wherever ``x >= 2^s``, for ``s = 32, 16, 8, 4, 2, 1``
    (afterwards ``x`` is 0 or 1, which is the last bit). Negative values are an error.

    Example:
        >>> import torch
        >>> bit_length(torch.tensor([0, 1, 2, 3, 4, 255, 256, 2**62]))
        tensor([ 0,  1,  2,  2,  3,  8,  9, 63])
    """
    if x.numel() and int(x.min()) < 0:
        raise ValueError("bit_length: values must be non-negative")
    import torch

    y = x.long()
    n = torch.zeros_like(y)
    for s in (32, 16, 8, 4, 2, 1):
        hi = (y >> s) != 0  # y >= 2^s
        n += hi.long() * s
        y = torch.where(hi, y >> s, y)
    return n + y  # y is now 0 or 1


def quantize_unsigned(value: float, frac_bits: int, bits: int) -> int:
    """A configuration constant: ``round_half_up(value * 2^frac_bits)`` saturated to ``[0, 2^bits - 1]``.

    Used once, at configuration time (thresholds), never on the decode path. Exact for every
    finite float: ``value`` is read as the rational it holds (``Fraction``), so no float addition of
    ``1/2`` can round (``0.49999999999999994 * 2^0`` gives 0, a float ``+ 0.5`` would give 1).

    Example:
        >>> quantize_unsigned(0.9, 8, 8), quantize_unsigned(0.0076, 8, 8)  # 230.4 and 1.9456 LSB
        (230, 2)
        >>> quantize_unsigned(0.49999999999999994, 0, 8), quantize_unsigned(0.5, 0, 8)
        (0, 1)
    """
    import math
    from fractions import Fraction

    if not math.isfinite(value):
        raise ValueError(f"quantize_unsigned: value must be finite, got {value}")
    scaled = math.floor(Fraction(value) * (1 << frac_bits) + Fraction(1, 2))
    return max(0, min(scaled, unsigned_max(bits)))
