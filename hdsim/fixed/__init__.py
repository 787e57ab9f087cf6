"""Bit-accurate fixed-point BCF model (SPEC section 5): the RTL's golden reference."""

from hdsim.fixed.bcf import FactorStep, FixedBCF, IterationState, quantize_query
from hdsim.fixed.widths import Datapath, FixedWidths

__all__ = ["FixedBCF", "FactorStep", "IterationState", "quantize_query", "Datapath", "FixedWidths"]
