"""``PartitionDropout``: seed 004's partition dropout as a torch module (the schedule is
:class:`hdsim.partition_dropout.PartitionSchedule`: LFSR partitions, every unit dropped once per
cycle of ``P`` steps, kept units scaled by ``P / (P - 1)``)."""

from __future__ import annotations

import torch
from torch import nn

from hdsim.lfsr import LFSR_DEFAULT_SEED
from hdsim.partition_dropout import PartitionSchedule, check_partitions

__all__ = ["PartitionDropout"]


class PartitionDropout(nn.Module):
    """Drop one LFSR partition of the last dimension's units per training step; identity in eval mode.

    Args:
        units: size of the last dimension (the features before the classifier).
        P: partitions (>= 2): the drop rate is ``1 / P``, matched by ``nn.Dropout(1 / P)``.
        seed: the LFSR's start state.

    Example:
        >>> m = PartitionDropout(4, 2, seed=3).train()
        >>> a, b = m(torch.ones(1, 4)), m(torch.ones(1, 4))
        >>> ((a == 0) ^ (b == 0)).all().item(), a.max().item()  # each unit dropped in exactly one step; kept x2
        (True, 2.0)
    """

    def __init__(self, units: int, P: int, seed: int = LFSR_DEFAULT_SEED) -> None:
        super().__init__()
        self.P = check_partitions(P)
        self.schedule = PartitionSchedule(units, self.P, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = torch.from_numpy(self.schedule.next_mask()).to(x.device, x.dtype)
        return x * keep * self.schedule.scale

    def extra_repr(self) -> str:
        return f"units={self.schedule.units}, P={self.P}"
