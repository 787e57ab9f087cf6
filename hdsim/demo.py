"""``hdsim demo``: the main job on shipped data.

1. Factorizers: the float BCF at the reference configuration (D=512, B=4, F=2,
   M=1155, published (T, A)) on exact queries, on noisy queries (M=300), at F=3
   (M=80), and the 8-bit fixed-point model against the float reference.
2. The pipeline (``deploy.pipeline``, needs the ``export`` extra): train or load
   a small MobileNetV2 with a BCF head on two-digit MNIST, export it (int8 ONNX),
   run the edge runner on held-out images with the fixed-point decode, compare
   with the evaluation, and co-simulate a few queries in RTL when Icarus is there.
   The core does not import it (dependencies point one way): the caller passes
   the step in (``hdsim demo`` passes ``deploy.pipeline.run_pipeline``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from hdsim.bench.factorizer import FactorizerBenchConfig, run_factorizer_bench
from hdsim.bench.fixed import FixedBenchConfig, run_fixed_bench

__all__ = ["run_demo"]

SUMMARY_KEYS = ("accuracy", "factor_accuracy", "mean_iterations", "converged", "queries_per_s",
                "problem_size", "noise_model")


def run_demo(queries: int = 512, seed: int = 0, device: str = "cpu", pipeline: Callable[[], dict] | None = None,
             log=print) -> dict:
    """Run the demo steps and return their results (JSON-ready).

    ``pipeline``: a callable that runs the pipeline step and returns its results (``hdsim demo``:
    ``lambda: deploy.pipeline.run_pipeline(cfg, log)``); ``None`` skips it.
    """
    t0 = time.perf_counter()
    base = FactorizerBenchConfig(method="bcf", D=512, B=4, F=2, M=1155, queries=queries, seed=seed,
                                 device=device)
    log("factorizers: float BCF (exact, noisy, F=3) and the 8-bit fixed-point model")
    steps = {
        "bcf_exact": run_factorizer_bench(base),
        # The published (T, A) = (0, 0) for M <= 348 is tuned on exact queries; on noisy ones
        # it stalls (9% here), while a threshold with sampling decodes 99%.
        "bcf_noisy": run_factorizer_bench(replace(base, M=300, noise="gaussian", noise_level=0.01,
                                                  T=0.003, A=20, Tc=0.3)),
        "bcf_F3": run_factorizer_bench(replace(base, F=3, M=80, queries=min(queries, 256))),
        "fixed_8bit": run_fixed_bench(FixedBenchConfig(bits=8, queries=min(queries, 256), seed=seed)),
    }
    summary = {name: {k: r[k] for k in SUMMARY_KEYS} | {"T": r["config"]["T"], "A": r["config"]["A"]}
               for name, r in steps.items()}
    summary["fixed_8bit"]["agreement_with_float"] = steps["fixed_8bit"]["agreement_with_float"]
    out = {"steps": summary}
    if pipeline is not None:
        out["pipeline"] = pipeline()
    out["seconds"] = time.perf_counter() - t0
    return out
