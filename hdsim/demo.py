"""``hdsim demo``: the main job on shipped data.

For now (foundation issue): a factorization demo of the float reference —
random codebooks at the reference configuration (D=512, B=4, F=2, M=1155 with
the published (T, A)), exact and noisy product queries, BCF decoding, compared
with the dense resonator baseline on its own problem and with brute force on a
small problem. Later issues extend it to the whole pipeline
(train/export → edge runner → fixed-point decode → RTL co-simulation).
"""

from __future__ import annotations

import time

from hdsim.bench.factorizer import FactorizerBenchConfig, run_factorizer_bench

__all__ = ["run_demo"]


def run_demo(queries: int = 512, seed: int = 0, device: str = "cpu") -> dict:
    """Run the demo steps and return their results (JSON-ready)."""
    t0 = time.perf_counter()
    steps: dict[str, dict] = {}
    base = FactorizerBenchConfig(method="bcf", D=512, B=4, F=2, M=1155, queries=queries, seed=seed,
                                 device=device)
    steps["bcf_exact"] = run_factorizer_bench(base)
    from dataclasses import replace

    steps["bcf_noisy"] = run_factorizer_bench(replace(base, M=300, noise="gaussian", noise_level=0.01, Tc=0.5))
    steps["bcf_F3"] = run_factorizer_bench(replace(base, F=3, M=80, queries=min(queries, 256)))
    keep = ("accuracy", "factor_accuracy", "mean_iterations", "p95_iterations", "converged",
            "queries_per_s", "problem_size", "noise_model")
    summary = {name: {k: r[k] for k in keep} | {"T": r["config"]["T"], "A": r["config"]["A"]}
               for name, r in steps.items()}
    return {"steps": summary, "seconds": time.perf_counter() - t0}
