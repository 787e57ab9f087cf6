"""Float reference factorizers (batched, device-agnostic torch).

The names load lazily (PEP 562): :class:`BCFConfig` and :func:`default_max_iter`
(``hdsim.factorizers.config``) import no torch, so the torch-free edge runner reads a
decode configuration without it; the factorizers import torch when first touched.
"""

from __future__ import annotations

from hdsim.lazy import lazy_exports

__all__ = ["FactorizationResult", "RandomSampler", "Sampler", "accuracy",
           "BCFConfig", "BlockCodeFactorizer", "default_max_iter",
           "BipolarCodebooks", "ResonatorConfig", "ResonatorNetwork", "random_bipolar_codebooks",
           "SparseResonatorConfig", "SparseResonatorNetwork",
           "GaussianSimilarityNoise", "StochasticConfig", "StochasticFactorizer"]

_HOME = {"FactorizationResult": "base", "RandomSampler": "base", "Sampler": "base", "accuracy": "base",
         "BCFConfig": "config", "default_max_iter": "config", "BlockCodeFactorizer": "bcf",
         "BipolarCodebooks": "resonator", "ResonatorConfig": "resonator", "ResonatorNetwork": "resonator",
         "random_bipolar_codebooks": "resonator", "SparseResonatorConfig": "sparse_resonator",
         "SparseResonatorNetwork": "sparse_resonator", "GaussianSimilarityNoise": "stochastic",
         "StochasticConfig": "stochastic", "StochasticFactorizer": "stochastic"}


__getattr__, __dir__ = lazy_exports("hdsim.factorizers", {name: "hdsim.factorizers." + module for name, module in _HOME.items()})
