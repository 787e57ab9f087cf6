"""Bit-accurate fixed-point BCF model (SPEC section 5): the RTL's golden reference.

The names load lazily (PEP 562): ``hdsim.fixed.widths`` (word widths, the datapath table) and
``hdsim.fixed.compiled`` (the numba decoder) import no torch, so the torch-free edge runner
can use them; :class:`FixedBCF` (the torch model) imports torch when first touched.
"""

from __future__ import annotations

from hdsim.lazy import lazy_exports

__all__ = ["FixedBCF", "FactorStep", "IterationState", "quantize_query", "Datapath", "FixedWidths"]

_HOME = {"FixedBCF": "bcf", "FactorStep": "bcf", "IterationState": "bcf", "quantize_query": "bcf",
         "Datapath": "widths", "FixedWidths": "widths"}


__getattr__, __dir__ = lazy_exports("hdsim.fixed", {name: "hdsim.fixed." + module for name, module in _HOME.items()})
