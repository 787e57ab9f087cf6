"""Sweeps: many benchmark points written as CSV + PNG (+ a JSON summary)."""

from hdsim.sweep.capacity import CapacitySweepConfig, default_sizes, run_capacity_sweep

__all__ = ["CapacitySweepConfig", "default_sizes", "run_capacity_sweep"]
