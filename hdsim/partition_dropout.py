"""Partition dropout (seed 004, SPEC section 8): every unit is dropped exactly once in every ``P`` steps.

Bernoulli dropout draws one random number per unit per step, and a unit may go unchosen (or be
dropped) for many steps in a row. Partition dropout draws one number per unit per *cycle* of
``P`` steps: the shared LFSR (:class:`hdsim.lfsr.LFSR`, the generator of the BCF's sampling and
of the RTL) gives each unit a word ``xi`` in ``[0, 2^32)``, its partition is

    ``p(u) = floor(xi_u * P / 2^32)``  (exact integer arithmetic: ``(xi_u * P) >> 32``)

and step ``k`` of the cycle drops partition ``k``. Over a cycle every unit is dropped exactly
once and kept ``P - 1`` times, so the expected drop rate is ``1 / P`` (the matched Bernoulli
rate); the next cycle draws new partitions from the same register (the stream continues).
Kept units are scaled by ``P / (P - 1)`` (inverted dropout, as ``torch.nn.Dropout`` scales by
``1 / (1 - p)``), so the expected output equals the input. The whole batch of a step drops the
same partition (one draw per unit per cycle: the seed's point of fewer generator calls).

Example:
    >>> parts = partition_cycle(LFSR(1), 6, 3)
    >>> parts.tolist(), [keep_mask(parts, k).tolist() for k in range(3)]
    ([2, 2, 1, 2, 0, 0], [[True, True, True, True, False, False], [True, True, False, True, True, True], [False, False, True, False, True, True]])
"""

from __future__ import annotations

import numpy as np

from hdsim.errors import HdsimError
from hdsim.lfsr import LFSR, LFSR_DEFAULT_SEED, LFSR_WIDTH

__all__ = ["partition_cycle", "keep_mask", "PartitionSchedule", "check_partitions"]


def check_partitions(P) -> int:
    """``P`` must be an integer >= 2 (one partition would drop every unit)."""
    if isinstance(P, bool) or not isinstance(P, (int, np.integer)) or int(P) < 2:
        raise HdsimError(f"partition_dropout: the number of partitions P must be an integer >= 2, got {P!r}")
    return int(P)


def partition_cycle(lfsr: LFSR, units: int, P: int) -> np.ndarray:
    """One cycle's partitions: ``(xi_u * P) >> 32`` for the register's next ``units`` words.

    Shapes:
        returns ``(units,)`` int64 in ``[0, P)``.
    """
    P = check_partitions(P)
    words = np.array([lfsr.next_word() for _ in range(units)], dtype=np.uint64)
    return ((words * np.uint64(P)) >> np.uint64(LFSR_WIDTH)).astype(np.int64)  # < 2^32 * P: no overflow


def keep_mask(partitions: np.ndarray, step: int) -> np.ndarray:
    """The units kept at step ``step`` of a cycle: those not in partition ``step``."""
    return np.asarray(partitions) != int(step)


class PartitionSchedule:
    """The keep masks of successive steps for ``units`` units and ``P`` partitions.

    Args:
        units: how many units (e.g. features before the classifier).
        P: partitions (>= 2); the drop rate is ``1 / P``.
        seed: the LFSR's start state (nonzero, 32-bit).

    Example:
        >>> s = PartitionSchedule(5, 2, seed=7)
        >>> dropped = [~s.next_mask() for _ in range(2)]
        >>> (dropped[0] ^ dropped[1]).all()  # each unit dropped exactly once per cycle
        np.True_
    """

    def __init__(self, units: int, P: int, seed: int = LFSR_DEFAULT_SEED) -> None:
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise HdsimError(f"units: expected an integer >= 1, got {units!r}")
        self.units, self.P = int(units), check_partitions(P)
        self.lfsr = LFSR(seed)
        self.step = 0
        self.partitions = np.zeros(self.units, np.int64)

    @property
    def scale(self) -> float:
        """``P / (P - 1)``: the kept units' scale (expected output = input)."""
        return self.P / (self.P - 1)

    def next_mask(self) -> np.ndarray:
        """The keep mask ``(units,)`` bool of the next step (new partitions at the start of each cycle)."""
        k = self.step % self.P
        if k == 0:
            self.partitions = partition_cycle(self.lfsr, self.units, self.P)
        self.step += 1
        return keep_mask(self.partitions, k)
