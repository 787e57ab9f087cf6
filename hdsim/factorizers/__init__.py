"""Float reference factorizers (batched, device-agnostic torch)."""

from hdsim.factorizers.base import FactorizationResult, RandomSampler, Sampler, accuracy
from hdsim.factorizers.bcf import BCFConfig, BlockCodeFactorizer, default_max_iter
from hdsim.factorizers.resonator import BipolarCodebooks, ResonatorConfig, ResonatorNetwork, random_bipolar_codebooks
from hdsim.factorizers.sparse_resonator import SparseResonatorConfig, SparseResonatorNetwork
from hdsim.factorizers.stochastic import GaussianSimilarityNoise, StochasticConfig, StochasticFactorizer

__all__ = ["FactorizationResult", "RandomSampler", "Sampler", "accuracy",
           "BCFConfig", "BlockCodeFactorizer", "default_max_iter",
           "BipolarCodebooks", "ResonatorConfig", "ResonatorNetwork", "random_bipolar_codebooks",
           "SparseResonatorConfig", "SparseResonatorNetwork",
           "GaussianSimilarityNoise", "StochasticConfig", "StochasticFactorizer"]
