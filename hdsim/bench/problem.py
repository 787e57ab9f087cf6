"""The random factorization problem both factorizer benches decode, defined once."""

from __future__ import annotations

from dataclasses import dataclass

from hdsim.queries import QueryNoise
from hdsim.validation import check_blocks, check_ints, check_seed

__all__ = ["ProblemConfig"]


@dataclass(frozen=True)
class ProblemConfig:
    """Codebooks (``F`` factors of ``M`` codevectors, ``D`` dimensions in ``B`` blocks), ``queries``
    random products with ``noise``, and the BCF's hyper-parameters; ``None`` takes the default
    (``T``/``A``: the tuned table; ``Tc``/``max_iter``: SPEC's)."""

    D: int = 512
    B: int | None = 4
    F: int = 2
    M: int = 1155
    T: float | None = None
    A: int | None = None
    Tc: float | None = None
    max_iter: int | None = None
    similarity: str = "linf"
    queries: int = 1024
    batch: int = 256
    seed: int = 0
    noise: str = "none"
    noise_level: float = 0.0

    def validate_problem(self) -> None:
        """Check the problem fields (``B`` may be ``None`` where a subclass allows it)."""
        check_ints(self, ("D", "F", "M", "queries", "batch"))
        check_ints(self, ("B", "max_iter"), optional=True)
        if self.B is not None:
            check_blocks(self.D, self.B)
        check_seed("seed", self.seed)
        QueryNoise(self.noise, self.noise_level)  # validates
