"""The BCF's hyper-parameters (SPEC section 3), torch-free: the edge runner reads them too."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hdsim.errors import HdsimError
from hdsim.validation import check_int

__all__ = ["BCFConfig", "default_max_iter"]


def default_max_iter(sizes: tuple[int, ...]) -> int:
    """SPEC default ``floor(M^(F-1) / F)`` (equal ``M``); for unequal sizes
    ``floor(prod(M) / max(M) / F)``; at least 1."""
    prod = math.prod(sizes)
    return max(1, prod // max(sizes) // len(sizes))


@dataclass(frozen=True)
class BCFConfig:
    """BCF hyper-parameters (SPEC section 3).

    Attributes:
        T: activation threshold; similarities below it are zeroed. Range
            ``[0, 1)`` for ``linf``, ``[0, B)`` for ``dot``.
        A: sampling width (distinct codevectors drawn when no similarity
            exceeds ``T``); 0 disables sampling.
        Tc: convergence / pull-up threshold; ``None`` means 0.9 for ``linf``
            and ``0.9 * B`` for ``dot``. Range ``(0, 1]`` (``linf``), ``(0, B]`` (``dot``).
        max_iter: iteration cap; ``None`` means :func:`default_max_iter`.
        similarity: ``"linf"`` (default) or ``"dot"``.
    """

    T: float = 0.0
    A: int = 0
    Tc: float | None = None
    max_iter: int | None = None
    similarity: str = "linf"  # hdsim.functional.SimilarityMode

    def resolved_Tc(self, B: int) -> float:
        if self.Tc is not None:
            return float(self.Tc)
        return 0.9 if self.similarity == "linf" else 0.9 * B

    def resolved_max_iter(self, sizes: tuple[int, ...]) -> int:
        return self.max_iter if self.max_iter is not None else default_max_iter(sizes)

    def validate(self, B: int) -> None:
        """Raise :class:`HdsimError` naming the first parameter out of range."""
        if self.similarity not in ("linf", "dot"):
            raise HdsimError(f"similarity: expected 'linf' or 'dot', got {self.similarity!r}")
        top = 1.0 if self.similarity == "linf" else float(B)
        if not (0.0 <= self.T < top):
            raise HdsimError(f"T: threshold must be in [0, {top:g}) for {self.similarity}, got {self.T}")
        if self.Tc is not None and not (0.0 < self.Tc <= top):
            raise HdsimError(f"Tc: convergence threshold must be in (0, {top:g}] for {self.similarity}, got {self.Tc}")
        if isinstance(self.A, bool) or not isinstance(self.A, int) or self.A < 0:
            raise HdsimError(f"A: sampling width must be an integer >= 0, got {self.A!r}")
        check_int("max_iter", self.max_iter, optional=True)

    def as_dict(self, B: int, sizes: tuple[int, ...]) -> dict:
        d = asdict(self)
        d["Tc"] = self.resolved_Tc(B)
        d["max_iter"] = self.resolved_max_iter(sizes)
        return d
