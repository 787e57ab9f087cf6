"""In-memory-computing noise model: PCM crossbar with programming noise, drift,
read noise and DAC/ADC periphery — SPEC section 6. See ``docs/imc.md``."""

from hdsim.imc.config import PRESETS, PCMNoiseConfig, get_preset, preset_names
from hdsim.imc.crossbar import PCMCrossbar, adc_format, derive_seed, quantize, save_adc_perturbations
from hdsim.imc.factorizers import (
    BlockCrossbarMVMs,
    CrossbarMVMs,
    FixedPointPerturbation,
    ReplayPerturbation,
    imc_config,
    pow2_prescale,
)

__all__ = [
    "PCMNoiseConfig",
    "PRESETS",
    "get_preset",
    "preset_names",
    "PCMCrossbar",
    "quantize",
    "adc_format",
    "derive_seed",
    "save_adc_perturbations",
    "CrossbarMVMs",
    "BlockCrossbarMVMs",
    "FixedPointPerturbation",
    "ReplayPerturbation",
    "imc_config",
    "pow2_prescale",
]
