"""The fixed-point rounding and overflow helpers — the one definition of each.

Every op of the fixed-point BCF names one rounding and one overflow rule from
this module. All functions take and return int64 tensors holding integers;
none uses floats. Python pitfalls avoided here: ``np.round``/``torch.round``
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

    Exact for ``x < 2^53`` (every datapath word is far narrower): the binary
    exponent ``e`` of ``frexp(x) = m 2^e``, ``m`` in ``[1/2, 1)``, is the bit length,
    and a float64 holds such integers exactly. Larger values are an error.

    Example:
        >>> import torch
        >>> bit_length(torch.tensor([0, 1, 2, 3, 4, 255, 256]))
        tensor([0, 1, 2, 2, 3, 8, 9])
    """
    if x.numel() and int(x.max()) >= (1 << 53):
        raise ValueError("bit_length: values must be < 2^53")
    import torch

    return torch.frexp(x.double()).exponent.long()


def quantize_unsigned(value: float, frac_bits: int, bits: int) -> int:
    """A configuration constant: ``round_half_up(value * 2^frac_bits)`` saturated to ``bits`` bits.

    Used once, at configuration time (thresholds), never on the decode path.
    Exact: ``value * 2^frac_bits`` is a float times a power of two.

    Example:
        >>> quantize_unsigned(0.9, 8, 8), quantize_unsigned(0.0076, 8, 8)
        (230, 2)
    """
    import math

    scaled = math.floor(value * (1 << frac_bits) + 0.5)
    return max(0, min(scaled, unsigned_max(bits)))
