"""``hdsim bench fixed``: the fixed-point BCF against the float reference on the same queries.

Both decoders draw their conditional samples from the same LFSR (a fresh
:class:`hdsim.lfsr.LFSRSampler` with the same seed each), so where their
arithmetic agrees their trajectories agree; ``agreement_with_float`` and
``iteration_agreement`` measure how often that holds. The float side is the float engine
(:class:`hdsim.engine.NumbaBCF`, float64, on the same ``threads`` numba threads as the compiled
fixed-point twin; the reference's decisions) when numba is installed and ``compiled``, else the torch reference
(``float_decoder`` says which); ``fixed_over_float_throughput`` compares the two. The fixed-point decode runs on the
compiled twin (:mod:`hdsim.fixed.compiled`, the model's integers bit for bit) when numba is
installed (``compiled=False``: the torch model); ``fixed_decoder`` says which ran.

Timing: ``repeats`` runs of each, alternating (float, fixed, float, ...); ``queries_per_s`` and
``float_queries_per_s`` come from the medians, every run's seconds are reported (``seconds``,
``float_seconds``); the decisions reported are the first run's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from hdsim.codes import random_codebooks
from hdsim.engine import NumbaBCF, numba_available
from hdsim.errors import HdsimError
from hdsim.factorizers.bcf import BCFConfig, BlockCodeFactorizer
from hdsim.fixed import FixedBCF, FixedWidths
from hdsim.fixed.compiled import compiled_decoder
from hdsim.lfsr import LFSRSampler
from hdsim.queries import QueryNoise, make_queries
from hdsim.bench.problem import ProblemConfig
from hdsim.validation import check_ints

__all__ = ["FixedBenchConfig", "run_fixed_bench", "compare_fixed_float"]


@dataclass(frozen=True)
class FixedBenchConfig(ProblemConfig):
    """What to run: the :class:`ProblemConfig` and the word widths. ``bits`` sets every GSBC
    word (:meth:`FixedWidths.uniform`) unless ``widths_file`` is given."""

    B: int = 4
    bits: int = 8
    widths_file: str | None = None
    compiled: bool = True  # decode with the compiled twin (numba; the model's integers bit for bit)
    # numba threads of both compiled decoders (over queries); 1: the per-query work of each alone
    threads: int = 1
    # timed runs of each decoder, alternating float, fixed, float, ... (the medians are compared, so
    # a burst of load on a shared machine hits both sides alike); the first run of each also decides
    repeats: int = 3

    def widths(self) -> FixedWidths:
        if self.widths_file is not None:
            if not Path(self.widths_file).is_file():
                what = "is a folder, not a JSON file" if Path(self.widths_file).is_dir() else "file not found"
                raise HdsimError(f"widths: {what}: {self.widths_file}")
            return FixedWidths.from_file(self.widths_file)
        w = FixedWidths.uniform(self.bits)
        w.validate()
        return w

    def validate(self) -> None:
        check_ints(self, ("B",))
        for name in ("threads", "repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise HdsimError(f"{name}: must be an integer >= 1, got {v!r}")
        self.validate_problem()
        self.widths()


def compare_fixed_float(cfg: FixedBenchConfig, *, float_result=None) -> dict:
    """Decode the same queries with the float reference and the fixed-point model.

    Returns the JSON-ready dict of :func:`run_fixed_bench`. ``float_result``
    (``(result, seconds)``) lets a sweep reuse one float run for many widths.
    """
    from hdsim.tuned import resolve_TA

    cfg.validate()
    T, A, _ = resolve_TA(cfg.F, cfg.M, cfg.T, cfg.A)
    cfg = replace(cfg, T=T, A=A)
    widths = cfg.widths()
    codebooks = random_codebooks(cfg.F, cfg.M, cfg.D, cfg.B, cfg.seed)
    qs = make_queries(codebooks, cfg.queries, cfg.seed + 1, QueryNoise(cfg.noise, cfg.noise_level))
    bcf = BCFConfig(T=cfg.T, A=cfg.A, Tc=cfg.Tc, max_iter=cfg.max_iter, similarity=cfg.similarity)
    lfsr_seed = cfg.seed + 1  # LFSR seeds must be non-zero
    fixed = FixedBCF(codebooks, bcf, widths, sampler=LFSRSampler(lfsr_seed))
    float_engine = "numba" if cfg.compiled and numba_available() else "reference"
    if float_result is None:
        if float_engine == "numba":
            # the float engine (hdsim.engine) on the same numba threads as the compiled twin
            eng = NumbaBCF.from_codebooks(codebooks, bcf, seed=lfsr_seed)
            eng.decode_arrays(qs.queries[:1], threads=1)  # load (or compile) outside the timing
            run_float = lambda: eng.factorize(qs.queries, threads=cfg.threads)  # noqa: E731
        else:
            ref = BlockCodeFactorizer(codebooks, bcf, sampler=LFSRSampler(lfsr_seed))
            run_float = lambda: ref.factorize(qs.queries, batch_size=cfg.batch)  # noqa: E731
    fast = compiled_decoder(fixed) if cfg.compiled else None
    if fast is not None:
        fast.decode_arrays(qs.queries[:1].numpy())  # load (or compile) the kernel outside the timing
        # the compiled twin numbers queries by their row, as the model does over its batches
        run_fixed = lambda: fast.factorize(qs.queries, threads=cfg.threads)  # noqa: E731
    else:
        run_fixed = lambda: fixed.factorize(qs.queries, batch_size=cfg.batch)  # noqa: E731
    fsecs: list[float] = []
    xsecs: list[float] = []
    fres = xres = None
    for _ in range(cfg.repeats):
        if float_result is None:
            t0 = time.perf_counter()
            r = run_float()
            fsecs.append(time.perf_counter() - t0)
            fres = r if fres is None else fres
        t0 = time.perf_counter()
        r = run_fixed()
        xsecs.append(time.perf_counter() - t0)
        xres = r if xres is None else xres
    if float_result is None:
        fsec = statistics.median(fsecs)
    else:
        fres, fsec = float_result
        fsecs = [fsec]
    xsec = statistics.median(xsecs)
    n = cfg.queries
    return {
        "accuracy": xres.accuracy(qs.factors),
        "factor_accuracy": xres.factor_accuracy(qs.factors),
        "float_accuracy": fres.accuracy(qs.factors),
        "agreement_with_float": float((xres.indices == fres.indices).all(dim=1).double().mean()),
        "iteration_agreement": float((xres.iterations == fres.iterations).double().mean()),
        "mean_iterations": float(xres.iterations.double().mean()),
        "float_mean_iterations": float(fres.iterations.double().mean()),
        "converged": float(xres.converged.double().mean()),
        "queries_per_s": n / xsec,
        "float_queries_per_s": n / fsec,
        "fixed_over_float_throughput": fsec / xsec,
        "seconds": xsecs,
        "float_seconds": fsecs,
        "threads": cfg.threads,
        "torch_threads": torch.get_num_threads(),
        "fixed_decoder": type(fast).__name__ if fast is not None else "FixedBCF",
        "float_decoder": float_engine if float_result is None else "given",
        "widths": widths.as_dict(),
        "datapath": fixed.dp.as_dict(),
        "problem_size": codebooks.problem_size,
        "noise_model": qs.noise.describe(),
        "config": {**asdict(cfg), **bcf.as_dict(codebooks.B, codebooks.sizes), "lfsr_seed": lfsr_seed},
        "_float": (fres, fsec),
    }


def run_fixed_bench(cfg: FixedBenchConfig) -> dict:
    """Run the comparison; keys: ``accuracy``, ``agreement_with_float``,
    ``iteration_agreement``, ``queries_per_s`` (fixed), ``float_queries_per_s``,
    ``fixed_over_float_throughput``, ``widths``, ``datapath`` (every derived width)."""
    out = compare_fixed_float(cfg)
    out.pop("_float")
    return out
