"""Sparse block codes: seeded codebooks and GSBC checks — SPEC section 1.

A codebook is kept in offset form: an int64 tensor ``(M, B)`` of positions in
``[0, L)``; dense ``(M, B, L)`` one-hot blocks only where an op needs them
(:func:`hdsim.functional.sbc_to_dense`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hdsim.errors import HdsimError
from hdsim.export_folder import CodebookShape  # F, B, D, sizes: one definition
from hdsim.validation import check_seed, gsbc_shape  # gsbc_shape: re-exported (it lived here)

__all__ = ["BlockCodebooks", "random_sbc", "random_codebooks", "codebook_sizes", "check_gsbc", "gsbc_shape", "seeded_generator"]


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``.

    All randomness is drawn on the CPU and moved to the compute device, so the
    same seed gives the same numbers on every backend.
    """
    check_seed("seed", seed, bits=64)  # derived seeds (hdsim.imc) use torch's 64 bits
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def random_sbc(n: int, B: int, L: int, generator: torch.Generator) -> Tensor:
    """``n`` SBCs drawn i.i.d. uniform, in offset form.

    Shapes:
        returns: ``(n, B)`` int64 in ``[0, L)`` (on the CPU)

    Example:
        >>> random_sbc(2, 4, 128, seeded_generator(0)).shape
        torch.Size([2, 4])
    """
    return torch.randint(0, L, (n, B), generator=generator)


@dataclass(frozen=True)
class BlockCodebooks(CodebookShape):
    """``F`` SBC codebooks over ``B`` blocks of length ``L``.

    Attributes:
        indices: one ``(M_f, B)`` int64 tensor per factor (offset form).
        L: block length.
    """

    indices: tuple[Tensor, ...]
    L: int

    @property
    def problem_size(self) -> int:
        """Number of distinct products, ``prod_f M_f``."""
        size = 1
        for m in self.sizes:
            size *= m
        return size

    @classmethod
    def from_arrays(cls, arrays) -> "BlockCodebooks":
        """Wrap numpy offsets (:class:`hdsim.export_folder.CodebookArrays`: ``indices``, ``L``) as tensors."""
        return cls(tuple(torch.from_numpy(np.asarray(x, dtype=np.int64)) for x in arrays.indices), int(arrays.L))

    def to(self, device: torch.device | str) -> "BlockCodebooks":
        return BlockCodebooks(tuple(x.to(device) for x in self.indices), self.L)

    def product(self, factor_indices: Tensor) -> Tensor:
        """SBC (offset form) of the product of codevectors ``X_f[idx_f]``.

        Shapes:
            factor_indices: ``(N, F)`` int
            returns: ``(N, B)`` int64
        """
        from hdsim.functional import bind_sbc

        out = self.indices[0][factor_indices[:, 0]]
        for f in range(1, self.F):
            out = bind_sbc(out, self.indices[f][factor_indices[:, f]], self.L)
        return out

    def as_numpy(self) -> list:
        return [x.cpu().numpy() for x in self.indices]


def codebook_sizes(F: int, M: int | tuple[int, ...]) -> tuple[int, ...]:
    """Per-factor codebook sizes from one ``M`` for all or one per factor; checks ``F >= 1``, ``M_f >= 1``."""
    sizes = (M,) * F if isinstance(M, int) else tuple(M)
    if F < 1:
        raise HdsimError(f"F: expected at least 1 factor, got {F}")
    if len(sizes) != F:
        raise HdsimError(f"M: expected {F} codebook sizes (one per factor), got {len(sizes)}")
    for m in sizes:
        if m < 1:
            raise HdsimError(f"M: codebook size must be >= 1, got {m}")
    return sizes


def random_codebooks(F: int, M: int | tuple[int, ...], D: int, B: int, seed: int) -> BlockCodebooks:
    """Draw ``F`` codebooks of i.i.d. uniform SBCs with a seed.

    Args:
        F: number of factors (>= 1).
        M: codevectors per factor, one int for all or one per factor (each >= 1).
        D: dimension, divisible by ``B``.
        B: number of blocks.
        seed: seed of the draw; the same seed gives the same codebooks everywhere.

    Raises:
        HdsimError: for a parameter out of range.
    """
    sizes = codebook_sizes(F, M)
    if B < 1:
        raise HdsimError(f"B: number of blocks must be >= 1, got {B}")
    if D < 1 or D % B != 0:
        raise HdsimError(f"D: dimension {D} is not divisible by the number of blocks B={B}")
    L = D // B
    g = seeded_generator(seed)
    return BlockCodebooks(tuple(random_sbc(m, B, L, g) for m in sizes), L)


def check_gsbc(q: Tensor, B: int, L: int, name: str = "query") -> Tensor:
    """Validate a batch of GSBC queries and return it as ``(N, B, L)``.

    Accepts the shapes of :func:`gsbc_shape`. Entries must be finite and
    non-negative; blocks are not required to sum to 1 (the factorizer normalizes).

    Raises:
        HdsimError: wrong shape, no query, NaN/inf, or negative entries.
    """
    if not isinstance(q, Tensor):
        raise HdsimError(f"{name}: expected a torch.Tensor, got {type(q).__name__}")
    q = gsbc_shape(q, B, L, name)
    if not q.is_floating_point():
        q = q.float()
    if not torch.isfinite(q).all():
        raise HdsimError(f"{name}: contains NaN or infinite values")
    if (q < 0).any():
        raise HdsimError(f"{name}: GSBC entries must be non-negative, found {float(q.min()):.4g}")
    return q
