"""Float reference factorizers (batched, device-agnostic torch)."""

from hdsim.factorizers.base import FactorizationResult, RandomSampler, Sampler, accuracy
from hdsim.factorizers.bcf import BCFConfig, BlockCodeFactorizer, default_max_iter

__all__ = ["FactorizationResult", "RandomSampler", "Sampler", "accuracy",
           "BCFConfig", "BlockCodeFactorizer", "default_max_iter"]
