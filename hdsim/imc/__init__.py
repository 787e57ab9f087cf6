"""In-memory-computing noise model: PCM crossbar with programming noise, drift,
read noise and DAC/ADC periphery — SPEC section 6. See ``docs/imc.md``.

The names load lazily (PEP 562): the configuration (:mod:`hdsim.imc.config`), the
device model (:mod:`hdsim.imc.pcm`) and the fixed-point crossbar
(:mod:`hdsim.imc.fixed_crossbar`) import no torch, so the torch-free edge runner can
use them; :class:`PCMCrossbar` and the factorizer adapters import torch when first touched.
"""

from __future__ import annotations

from hdsim.lazy import lazy_exports

__all__ = [
    "PCMNoiseConfig",
    "PRESETS",
    "get_preset",
    "preset_names",
    "imc_config",
    "PCMCrossbar",
    "quantize",
    "adc_format",
    "derive_seed",
    "save_adc_perturbations",
    "FixedPointCrossbar",
    "PerturbationLog",
    "CrossbarMVMs",
    "BlockCrossbarMVMs",
    "FixedPointPerturbation",
    "ReplayPerturbation",
    "pow2_prescale",
]

_HOME = {
    "PCMNoiseConfig": "config", "PRESETS": "config", "get_preset": "config", "preset_names": "config",
    "imc_config": "config",
    "adc_format": "pcm", "derive_seed": "pcm", "save_adc_perturbations": "pcm",
    "FixedPointCrossbar": "fixed_crossbar", "PerturbationLog": "fixed_crossbar",
    "PCMCrossbar": "crossbar", "quantize": "crossbar",
    "CrossbarMVMs": "factorizers", "BlockCrossbarMVMs": "factorizers", "FixedPointPerturbation": "factorizers",
    "ReplayPerturbation": "factorizers", "pow2_prescale": "factorizers",
}


__getattr__, __dir__ = lazy_exports("hdsim.imc", {name: "hdsim.imc." + module for name, module in _HOME.items()})
