"""The ``hdsim`` command: a thin typer shell over the library.

Every command parses and validates its options once, calls one library
function, and prints JSON on stdout (progress goes to stderr). An
:class:`~hdsim.errors.HdsimError` becomes a one-line ``error: ...`` on stderr
and exit code 2.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from hdsim.errors import HdsimError
from hdsim.threads import set_torch_threads

app = typer.Typer(help="hdsim: block-code factorizers from float reference to fixed point and RTL.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
bench_app = typer.Typer(help="Benchmarks (one JSON object on stdout).", no_args_is_help=True)
sweep_app = typer.Typer(help="Sweeps (CSV + PNG).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(sweep_app, name="sweep")
hw_app = typer.Typer(help="FPGA figures of the BCF RTL (the hw extra: pip-installed ECP5 flow).", no_args_is_help=True)
app.add_typer(hw_app, name="hw")


class Method(str, Enum):
    bcf = "bcf"
    resonator = "resonator"
    stochastic = "stochastic"
    sparse_resonator = "sparse-resonator"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Noise(str, Enum):
    none = "none"
    gaussian = "gaussian"
    bitflip = "bitflip"


# Options shared by several commands (one definition each; defaults stay with the command).
DOpt = Annotated[int, typer.Option("--D", help="Dimension.")]
FOpt = Annotated[int, typer.Option("--F", help="Factors.")]
MOpt = Annotated[int, typer.Option("--M", help="Codevectors per factor.")]
TOpt = Annotated[Optional[float], typer.Option("--T", help="Threshold (default: tuned table).")]
AOpt = Annotated[Optional[int], typer.Option("--A", help="Sampling width (default: tuned table).")]
TcOpt = Annotated[Optional[float], typer.Option("--Tc", help="Convergence threshold.")]
MaxIterOpt = Annotated[Optional[int], typer.Option(help="Iteration cap.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="torch CPU threads (default or 0: torch's).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")]
# Sharing a sweep among worker processes through a database (docs/sweeps.md, hdsim.sweep.shared).
StorageOpt = Annotated[Optional[str], typer.Option(
    help="Share the sweep through this database (SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db): "
         "every worker running the same command takes points not yet done.")]
StudyOpt = Annotated[Optional[str], typer.Option(help="Name of the shared sweep in --storage (default: the "
                                                 "sweep's kind).")]
WorkersOpt = Annotated[int, typer.Option(help="Local worker processes (without --storage: shared through "
                                         "a SQLite file in --out).")]
LeaseOpt = Annotated[float, typer.Option(help="Seconds a shared point stays with a worker that stopped "
                                         "renewing its lease (killed) before another worker takes it.")]


def emit(obj: dict) -> None:
    """Print one JSON object on stdout."""
    typer.echo(json.dumps(obj, indent=None, default=str))


def run_sweep(kind: str, cfg, run, storage: Optional[str], study_name: Optional[str], workers: int,
              lease: float) -> dict:
    """``run(cfg)`` in this process, or the shared sweep (hdsim.sweep.shared) when a database,
    a study name or several workers are asked for."""
    if storage is None and study_name is None and workers == 1:
        return run(cfg)
    from hdsim.sweep.shared import ShareConfig, run_shared_sweep

    if storage is None:  # local workers only: a SQLite file beside the outputs
        folder = Path(cfg.out)
        folder.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(folder / f'.{kind}-work.db').resolve()}"
    share = ShareConfig(storage=storage, study_name=study_name or kind, workers=workers, lease_s=lease)
    return run_shared_sweep(kind, cfg, share)


@bench_app.command("factorizer")
def bench_factorizer(
    method: Annotated[Method, typer.Option(help="Factorizer to run.")] = Method.bcf,
    D: DOpt = 512,
    B: Annotated[Optional[int], typer.Option("--B", help="Blocks (default 4 for the BCF, D/16 for the sparse resonator).")] = None,
    F: FOpt = 2,
    M: MOpt = 1155,
    T: TOpt = None,
    A: AOpt = None,
    Tc: TcOpt = None,
    max_iter: MaxIterOpt = None,
    queries: Annotated[int, typer.Option(help="Number of queries.")] = 1024,
    batch: Annotated[int, typer.Option(help="Queries decoded together.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of codebooks, queries and sampling.")] = 0,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.cpu,
    dtype: Annotated[Optional[DType], typer.Option(help="Float precision (default: float64 for the BCF, "
                                               "float32 otherwise).")] = None,
    noise: Annotated[Noise, typer.Option(help="Query noise model.")] = Noise.none,
    noise_level: Annotated[float, typer.Option(help="Gaussian sigma or bit-flip probability.")] = 0.0,
    baseline: Annotated[Optional[str], typer.Option(help="Also time a baseline: 'numpy'.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="BCF decode engine: numba, torch or reference "
                                                  "(default: the fastest available).")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = True,
) -> None:
    """Accuracy, iterations and queries/s of one factorizer on random product queries."""
    from hdsim.bench.factorizer import FactorizerBenchConfig, run_factorizer_bench

    set_torch_threads(threads)
    cfg = FactorizerBenchConfig(method=method.value, D=D, B=B, F=F, M=M, T=T, A=A, Tc=Tc,
                                max_iter=max_iter, queries=queries, batch=batch, seed=seed,
                                device=device.value, dtype=None if dtype is None else dtype.value,
                                noise=noise.value, noise_level=noise_level, baseline=baseline,
                                engine=engine, threads=threads or None)
    emit(run_factorizer_bench(cfg))


@bench_app.command("fixed")
def bench_fixed(
    bits: Annotated[int, typer.Option(help="Width of every GSBC word (query, estimate, unbinding).")] = 8,
    widths: Annotated[Optional[Path], typer.Option(help="JSON file of widths (overrides --bits).")] = None,
    D: DOpt = 512,
    B: Annotated[int, typer.Option("--B", help="Blocks.")] = 4,
    F: FOpt = 2,
    M: MOpt = 1155,
    T: TOpt = None,
    A: AOpt = None,
    Tc: TcOpt = None,
    max_iter: MaxIterOpt = None,
    queries: Annotated[int, typer.Option(help="Number of queries.")] = 1024,
    batch: Annotated[int, typer.Option(help="Queries decoded together.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of codebooks, queries and the LFSR.")] = 0,
    compiled: Annotated[bool, typer.Option(help="Fixed-point decode on the compiled twin (numba, the same "
                                           "integers); --no-compiled runs the torch model.")] = True,
    threads: Annotated[int, typer.Option(help="Threads of both decoders (numba over queries; torch's too).")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed runs of each decoder, alternating; medians compared.")] = 3,
    json_out: JsonOpt = True,
) -> None:
    """Fixed-point BCF vs the float reference on the same queries and LFSR draws."""
    from hdsim.bench.fixed import FixedBenchConfig, run_fixed_bench

    set_torch_threads(threads)
    cfg = FixedBenchConfig(bits=bits, widths_file=None if widths is None else str(widths), D=D, B=B, F=F,
                           M=M, T=T, A=A, Tc=Tc, max_iter=max_iter, queries=queries, batch=batch, seed=seed,
                           compiled=compiled, threads=threads, repeats=repeats)
    emit(run_fixed_bench(cfg))


@bench_app.command("assoc-memory")
def bench_assoc_memory(
    c_in: Annotated[int, typer.Option(help="Input code: clusters.")] = 8,
    l_in: Annotated[int, typer.Option(help="Input code: units per cluster.")] = 64,
    c_out: Annotated[int, typer.Option(help="Output code: clusters.")] = 8,
    l_out: Annotated[int, typer.Option(help="Output code: units per cluster (the recall's WTA size).")] = 64,
    grid: Annotated[Optional[list[str]], typer.Option(help="Stored pair counts, repeatable or comma list "
                                                      "(default: 13 around the analytic capacity).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stored pairs.")] = 0,
    timing: Annotated[bool, typer.Option(help="Time store and recall against the dense float32 baseline.")] = True,
    repeats: Annotated[int, typer.Option(help="Timing runs (the best counts).")] = 5,
    out: Annotated[Path, typer.Option(help="Output folder (assoc_memory.csv, .png, .json).")]
    = Path("out/bench_assoc_memory"),
) -> None:
    """Willshaw memory: exact recall vs stored pairs, measured and analytic (CSV + PNG; JSON on stdout)."""
    from hdsim.bench.assoc_memory import AssocMemoryBenchConfig, run_assoc_memory_bench
    from hdsim.sweep.output import parse_list

    cfg = AssocMemoryBenchConfig(c_in=c_in, l_in=l_in, c_out=c_out, l_out=l_out, grid=parse_list(grid, "grid"),
                                 seed=seed, timing=timing, repeats=repeats, out=str(out))
    emit(run_assoc_memory_bench(cfg))


@bench_app.command("sweep-workers")
def bench_sweep_workers(
    F: Annotated[Optional[list[str]], typer.Option("--F", help="Factors (default 2).")] = None,
    M: Annotated[Optional[list[str]], typer.Option("--M", help="Codebook sizes (default 1200,1250,...,2750).")]
    = None,
    D: DOpt = 512,
    B: Annotated[int, typer.Option("--B", help="Blocks.")] = 4,
    queries: Annotated[int, typer.Option(help="Exact queries per point.")] = 1024,
    max_iter: Annotated[Optional[int], typer.Option(help="Iteration cap: min(SPEC default, this).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of codebooks, queries and sampling.")] = 0,
    workers: Annotated[int, typer.Option(help="Workers compared with one.")] = 2,
    repeats: Annotated[int, typer.Option(help="Blocks (each: one run with 1 worker, one with N).")] = 2,
    storage: Annotated[Optional[str], typer.Option(help="Database URL (default: a temporary SQLite file).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per run).")]
    = Path("out/bench_sweep_workers"),
) -> None:
    """Wall time of 'hdsim sweep capacity' on N local workers vs 1 (same grid, same CSV rows)."""
    from hdsim.bench.sweep_workers import SweepWorkersBenchConfig, run_sweep_workers_bench
    from hdsim.sweep.capacity import parse_int_list

    defaults = SweepWorkersBenchConfig()
    cfg = SweepWorkersBenchConfig(F=parse_int_list(F, "F") or defaults.F, M=parse_int_list(M, "M") or defaults.M,
                                  D=D, B=B, queries=queries, max_iter=max_iter, seed=seed, workers=workers,
                                  repeats=repeats, storage=storage, out=str(out))
    emit(run_sweep_workers_bench(cfg))


@sweep_app.command("widths")
def sweep_widths(
    bits_min: Annotated[int, typer.Option(help="Smallest word width.")] = 4,
    bits_max: Annotated[int, typer.Option(help="Largest word width.")] = 16,
    M: MOpt = 1155,
    F: FOpt = 2,
    queries: Annotated[int, typer.Option(help="Queries per width.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    tolerance_pt: Annotated[float, typer.Option(help="Accuracy points from float that count as equal.")] = 0.5,
    out: Annotated[Path, typer.Option(help="Output folder (CSV + PNG).")] = Path("out/sweep_widths"),
    threads: ThreadsOpt = None,
    storage: StorageOpt = None,
    study_name: StudyOpt = None,
    workers: WorkersOpt = 1,
    lease: LeaseOpt = 60.0,
) -> None:
    """Fixed-point accuracy vs word width (CSV + PNG); prints the smallest width within tolerance."""
    from hdsim.bench.fixed import FixedBenchConfig
    from hdsim.sweep.widths import WidthSweepConfig, run_width_sweep

    set_torch_threads(threads)
    cfg = WidthSweepConfig(bits_min=bits_min, bits_max=bits_max, tolerance_pt=tolerance_pt, out=str(out),
                           base=FixedBenchConfig(M=M, F=F, queries=queries, seed=seed, repeats=1))
    emit(run_sweep("widths", cfg, run_width_sweep, storage, study_name, workers, lease))


@app.command("demo")
def demo(
    queries: Annotated[int, typer.Option(help="Queries per factorizer step.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of everything random.")] = 0,
    device: Annotated[Device, typer.Option(help="Compute device of the factorizer steps.")] = Device.cpu,
    pipeline: Annotated[bool, typer.Option(help="Train/load, export, run the edge runner, co-simulate "
                                           "(needs the export extra).")] = True,
    workdir: Annotated[Path, typer.Option(help="Pipeline folder: export, test images, RTL build.")]
    = Path("out/demo"),
    checkpoint: Annotated[Optional[Path], typer.Option(help="Use this training checkpoint instead of "
                                                       "training (or the cached demo model).")] = None,
    images: Annotated[int, typer.Option(help="Held-out test images run through the edge runner.")] = 500,
    cosim_queries: Annotated[int, typer.Option(help="Runner queries co-simulated in RTL (0: skip).")] = 6,
    threads: Annotated[int, typer.Option(help="torch / onnxruntime threads of the pipeline.")] = 1,
) -> None:
    """The main job: factorizers, then the whole pipeline on shipped data (summary as JSON)."""
    from hdsim.demo import run_demo

    if queries < 1:
        raise HdsimError(f"queries: must be >= 1, got {queries}")
    step = None
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    if pipeline:
        import importlib.util

        missing = [m for m in ("brevitas", "onnx", "onnxruntime", "mlxtend") if importlib.util.find_spec(m) is None]
        if missing:  # checked by name: an import error inside the packages is not hidden
            raise HdsimError(f"demo: the pipeline needs the export extra (missing {', '.join(missing)}): "
                             "pip install -e '.[export,rtl]'; --no-pipeline runs the factorizer steps only")
        from workflows.pipeline import PipelineConfig, run_pipeline

        cfg = PipelineConfig(workdir=str(workdir), checkpoint=None if checkpoint is None else str(checkpoint),
                             images=images, cosim_queries=cosim_queries, threads=threads).validate()
        step = lambda: run_pipeline(cfg, log=log)  # noqa: E731
    result = run_demo(queries=queries, seed=seed, device=device.value, pipeline=step, log=log)
    for name, r in result["steps"].items():
        typer.echo(f"{name:10s} problem size {r['problem_size']:>10,d}  accuracy {r['accuracy']:.4f}  "
                   f"mean iterations {r['mean_iterations']:6.2f}  {r['queries_per_s']:8.1f} queries/s  "
                   f"(T={r['T']}, A={r['A']}; {r['noise_model']})", err=True)
    p = result.get("pipeline")
    if p:
        r = p["runner"]
        lat = r["latency"]["total_ms"]
        typer.echo(f"pipeline   model test accuracy {p['train']['test_accuracy']:.4f} ({p['train']['source']}); "
                   f"edge runner on {r['images']} held-out images: accuracy {r['runner_accuracy']:.4f}, "
                   f"{r['runner_status']['ok']} classified, {r['runner_status']['not-converged']} not converged; "
                   f"decisions identical to the evaluation: {r['identical_decisions']:.4f}; "
                   f"{lat['p50']:.2f} ms per image (p50)", err=True)
        rtl = p.get("rtl")
        if rtl:
            typer.echo("rtl        " + (rtl["skipped"] if "skipped" in rtl else
                                        f"{rtl['passed']}/{rtl['queries']} queries bit-exact with the fixed-point "
                                        f"model every iteration, {rtl['mismatches']} mismatches, "
                                        f"{rtl['cycles_per_iteration']:.1f} cycles/iteration"), err=True)
    emit(result)
    if p and (p["runner"]["runner_status"]["error"] or (p.get("rtl") or {}).get("mismatches")):
        raise typer.Exit(1)


@sweep_app.command("capacity")
def sweep_capacity(
    F: Annotated[Optional[list[str]], typer.Option("--F", help="Factors, repeatable or comma list "
                                                   "(default 2,3).")] = None,
    M: Annotated[Optional[list[str]], typer.Option("--M", help="Codebook sizes for every F, repeatable or comma "
                                                   "list (default: the tuned sizes of the table).")] = None,
    D: DOpt = 512,
    B: Annotated[int, typer.Option("--B", help="Blocks.")] = 4,
    queries: Annotated[int, typer.Option(help="Exact queries per (F, M).")] = 128,
    max_iter: Annotated[Optional[int], typer.Option(help="Iteration cap: min(SPEC default, this) "
                                                    "(default: the SPEC default).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of codebooks, queries and sampling.")] = 0,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.cpu,
    batch: Annotated[int, typer.Option(help="Queries decoded together.")] = 1024,
    threads: Annotated[int, typer.Option(help="CPU threads (torch intra-op; numba engine: over queries); "
                                         "0 = the library's default.")] = 1,
    engine: Annotated[Optional[str], typer.Option(help="Decode engine: numba, torch or reference "
                                                  "(default: the fastest available).")] = None,
    table: Annotated[Optional[Path], typer.Option(help="Tuned (T, A) table from 'hdsim tune' "
                                                  "(default: the published table).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (capacity.csv, .png, .json).")] = Path("out/sweep_capacity"),
    storage: StorageOpt = None,
    study_name: StudyOpt = None,
    workers: WorkersOpt = 1,
    lease: LeaseOpt = 60.0,
) -> None:
    """BCF accuracy and mean iterations vs problem size (CSV + PNG; JSON summary on stdout)."""
    from hdsim.sweep.capacity import CapacitySweepConfig, parse_int_list, run_capacity_sweep

    cfg = CapacitySweepConfig(F=parse_int_list(F, "F") or (2, 3), M=parse_int_list(M, "M"), D=D, B=B,
                              queries=queries, max_iter=max_iter, seed=seed, device=device.value, batch=batch,
                              threads=threads or None, engine=engine,
                              table=None if table is None else str(table), out=str(out))
    emit(run_sweep("capacity", cfg, run_capacity_sweep, storage, study_name, workers, lease))


@app.command("tune")
def tune(
    F: FOpt = 2,
    M: MOpt = 1155,
    D: DOpt = 512,
    B: Annotated[int, typer.Option("--B", help="Blocks.")] = 4,
    trials: Annotated[int, typer.Option(help="Trials to add to the study.")] = 50,
    queries: Annotated[int, typer.Option(help="Exact queries per trial.")] = 256,
    storage: Annotated[str, typer.Option(help="Optuna storage URL (sqlite:///file.db, "
                                         "postgresql+psycopg://user:pw@host/db).")]
    = "sqlite:///hdsim_tune.db",
    study_name: Annotated[Optional[str], typer.Option(help="Study name (default bcf-D{D}-B{B}-F{F}-M{M}).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation problem (and of TPE by default).")] = 0,
    sampler_seed: Annotated[Optional[int], typer.Option(help="TPE seed; give each worker of a shared study "
                                                        "its own.")] = None,
    max_iter: Annotated[Optional[int], typer.Option(help="Iteration cap per decode (default: SPEC).")] = None,
    iter_weight: Annotated[float, typer.Option(help="Weight of mean_iterations/max_iter in the objective.")] = 0.01,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.cpu,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0 = torch's setting.")] = 1,
    out: Annotated[Path, typer.Option(help="JSON table the best (T, A) is merged into.")] = Path("bcf_tuned.json"),
    workers: Annotated[int, typer.Option(help="Local worker processes on the study (--trials split among "
                                         "them).")] = 1,
    heartbeat: Annotated[int, typer.Option(help="Seconds between a running trial's heartbeats; a trial "
                                           "silent for 3x this (killed worker) is failed and retried.")] = 10,
    engine: Annotated[Optional[str], typer.Option(help="Decode engine of the trials: numba, torch or reference "
                                                  "(default: the fastest available; the same decisions).")]
    = None,
) -> None:
    """Search the BCF's (T, A) for one (F, M) with Optuna; merge the best into a tuned table."""
    from hdsim.tune import TuneConfig, run_tune

    cfg = TuneConfig(F=F, M=M, D=D, B=B, trials=trials, queries=queries, storage=storage, study_name=study_name,
                     seed=seed, sampler_seed=sampler_seed, out=str(out), max_iter=max_iter,
                     iter_weight=iter_weight, device=device.value, threads=threads or None, workers=workers,
                     heartbeat_s=heartbeat, engine=engine)
    emit(run_tune(cfg))


@sweep_app.command("imc")
def sweep_imc(
    preset: Annotated[str, typer.Option(help="IMC noise preset: pcm-chip, pcm-default, ideal, ideal-periphery.")]
    = "pcm-chip",
    F: FOpt = 3,
    M: MOpt = 32,
    D: Annotated[int, typer.Option("--D", help="Dimension (bipolar codes).")] = 256,
    queries: Annotated[int, typer.Option(help="Exact product queries per point.")] = 64,
    t_min: Annotated[float, typer.Option(help="First time since programming, s (> 0).")] = 1.0,
    t_max: Annotated[float, typer.Option(help="Last time since programming, s (default 1 year).")] = 31_557_600.0,
    t_points: Annotated[int, typer.Option(help="Log-spaced time points.")] = 8,
    scales: Annotated[Optional[list[str]], typer.Option(help="Noise scales (x programming, read, output noise), "
                                                        "repeatable or comma list (default 0,0.5,1,2,4).")] = None,
    scale_t: Annotated[float, typer.Option(help="Time since programming of the noise-scale panel, s.")] = 3600.0,
    T: Annotated[Optional[float], typer.Option("--T", help="Threshold (default: per-M rule).")] = None,
    detection: Annotated[float, typer.Option(help="Detection threshold.")] = 0.625,
    max_iter: Annotated[int, typer.Option(help="Iteration cap per query.")] = 1000,
    seed: Annotated[int, typer.Option(help="Problem seed (crossbars: seed + 1).")] = 0,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.cpu,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0 = torch's setting.")] = 1,
    out: Annotated[Path, typer.Option(help="Output folder (imc.csv, .png, .json).")] = Path("out/sweep_imc"),
    storage: StorageOpt = None,
    study_name: StudyOpt = None,
    workers: WorkersOpt = 1,
    lease: LeaseOpt = 60.0,
) -> None:
    """Stochastic factorizer on PCM crossbars: accuracy and iterations vs time and noise scale (CSV + PNG)."""
    from hdsim.sweep.imc import ImcSweepConfig, parse_float_list, run_imc_sweep

    cfg = ImcSweepConfig(preset=preset, F=F, M=M, D=D, queries=queries, t_min=t_min, t_max=t_max,
                         t_points=t_points, scales=parse_float_list(scales, "scales") or (0.0, 0.5, 1.0, 2.0, 4.0),
                         scale_t=scale_t, T=T, detection=detection, max_iter=max_iter, seed=seed,
                         device=device.value, threads=threads or None, out=str(out))
    emit(run_sweep("imc", cfg, run_imc_sweep, storage, study_name, workers, lease))


@app.command("cosim")
def cosim(
    queries: Annotated[int, typer.Option(help="Random queries run through the RTL.")] = 200,
    config: Annotated[str, typer.Option(help="RTL configuration: a name from hdsim.rtl.CI_CONFIGS "
                                        "(f2-l16-m16-p4, f3-l8-m8-p4, f2-dot-b3-l12-m20-p3, f3-l16-m10-p8) "
                                        "or a JSON file of RtlConfig fields.")] = "f2-l16-m16-p4",
    lanes: Annotated[Optional[int], typer.Option(help="Override the number of parallel lanes P.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of queries, perturbations, gaps and back-pressure.")] = 0,
    resets: Annotated[int, typer.Option(help="Synchronous resets injected (mid-decode and mid-load); "
                                        "the aborted queries are re-sent.")] = 2,
    gaps: Annotated[bool, typer.Option(help="Random idle cycles between query beats.")] = True,
    backpressure: Annotated[bool, typer.Option(help="Random result ready back-pressure.")] = True,
    perturb_fraction: Annotated[float, typer.Option(help="Fraction of queries with IMC similarity "
                                                    "perturbations.")] = 0.3,
    noise_sigma: Annotated[float, typer.Option(help="Gaussian sigma of the noisy queries.")] = 0.02,
    perturbations: Annotated[Optional[Path], typer.Option(help="Perturbation table .npy (queries, max_iter, F, M), "
                                                          "e.g. from hdsim.imc.FixedPointPerturbation.table; "
                                                          "default: synthetic.")] = None,
    imc_preset: Annotated[Optional[str], typer.Option(help="PCM crossbar noise (hdsim.imc preset, e.g. pcm-chip) "
                                                      "as the perturbations; dot configurations only.")] = None,
    imc_time: Annotated[float, typer.Option(help="Seconds since programming for --imc-preset.")] = 20.0,
    synth: Annotated[bool, typer.Option(help="Also run yosys synth; stat (cells, flip-flops).")] = False,
    workdir: Annotated[Path, typer.Option(help="Build and log folder.")] = Path("out/cosim"),
    timeout: Annotated[Optional[float], typer.Option(help="Wall-clock limit of the simulation in seconds "
                                                     "(default 300 + 5 per query); the simulator is killed "
                                                     "past it.")] = None,
    json_out: JsonOpt = True,
) -> None:
    """Co-simulate the BCF RTL (Icarus via cocotb) against the fixed-point model, bit for bit."""
    from dataclasses import replace

    from hdsim.rtl import CI_CONFIGS, RtlConfig, imc_perturbation_table, lower_bound, run_cosim, run_synth

    if config in CI_CONFIGS:
        cfg = CI_CONFIGS[config]
    else:
        path = Path(config)
        if not path.is_file():
            raise HdsimError(f"config: not a known configuration ({', '.join(CI_CONFIGS)}) nor a JSON file: {config}")
        try:
            cfg = RtlConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise HdsimError(f"config file {path}: {e}") from None
    if lanes is not None:
        cfg = replace(cfg, lanes=lanes, name=f"{cfg.name}-p{lanes}")
    if not 0.0 <= perturb_fraction <= 1.0:
        raise HdsimError(f"perturb_fraction: must be in [0, 1], got {perturb_fraction}")
    if resets < 0:
        raise HdsimError(f"resets: must be >= 0, got {resets}")
    table = None
    if perturbations is not None:
        import numpy as np

        try:
            table = np.load(perturbations)
        except (OSError, ValueError) as e:
            raise HdsimError(f"perturbations: cannot read {perturbations}: {e}") from None
    if imc_preset is not None:
        if table is not None:
            raise HdsimError("imc_preset: give either --perturbations or --imc-preset, not both")
        table = imc_perturbation_table(cfg, queries, seed=seed, preset=imc_preset, t=imc_time,
                                       noise_sigma=noise_sigma)
    report = run_cosim(cfg, queries, seed=seed, workdir=workdir, gaps=gaps, backpressure=backpressure,
                       resets=resets, perturb_fraction=perturb_fraction, noise_sigma=noise_sigma,
                       perturbations=table, timeout_s=timeout)
    report["rtl_config"] = cfg.as_dict()
    report["lower_bound_no_sampling"] = lower_bound(cfg)
    if synth:
        report["synth"] = run_synth(cfg, Path(workdir) / f"synth-{cfg.name}-{cfg.key()}")
    typer.echo(f"cosim {cfg.name}: {report['passed']} passed, {report['failed']} failed, "
               f"{len(report['mismatches'])} mismatches, coverage unmet {report['coverage_unmet'] or 'none'}; "
               f"{report['cycles_per_iteration']:.1f} cycles/iteration "
               f"vs lower bound {report['lower_bound_per_iteration_mean']:.1f}", err=True)
    emit(report)
    if report["failed"] or report["mismatches"] or report["passed"] != queries or report["coverage_unmet"]:
        raise typer.Exit(1)


class EcpDevice(str, Enum):
    k25 = "25k"
    k45 = "45k"
    k85 = "85k"


@hw_app.command("report")
def hw_report_cmd(
    config: Annotated[str, typer.Option(help="RTL configuration: a name from hdsim.rtl.CI_CONFIGS or a JSON file "
                                        "of RtlConfig fields.")] = "f2-l16-m16-p4",
    device: Annotated[EcpDevice, typer.Option(help="ECP5 device (LFE5U-25F/45F/85F) for place and route.")]
    = EcpDevice.k85,
    pnr: Annotated[bool, typer.Option(help="Place and route (nextpnr-ecp5, out of context) for fmax; "
                                      "--no-pnr: synthesis only.")] = True,
    queries: Annotated[int, typer.Option(help="Queries co-simulated and decoded by the CPU model.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the queries.")] = 0,
    freq: Annotated[float, typer.Option(help="nextpnr timing target in MHz (the achieved fmax is "
                                        "reported).")] = 100.0,
    workdir: Annotated[Path, typer.Option(help="Build folder.")] = Path("out/hw"),
    json_out: JsonOpt = True,
) -> None:
    """LUTs, flip-flops, block RAMs, DSPs, fmax and queries/s of the BCF core on an ECP5, beside the CPU model."""
    from hdsim.hw import HwReportConfig, hw_report

    emit(hw_report(HwReportConfig(config=config, device=device.value, pnr=pnr, queries=queries, seed=seed,
                                  freq_mhz=freq, workdir=str(workdir))))


def _register_export_commands() -> None:
    """``hdsim train`` / ``export`` / ``evaluate`` live in the ``export`` package (``docs/export.md``),
    ``hdsim run`` in ``deploy`` (``docs/deploy.md``), ``hdsim bench deploy`` in ``workflows``. All
    ship with hdsim, and their command modules import their extras lazily, so an ImportError here
    is a real bug: it is not caught (it used to be, which made the commands vanish silently)."""
    from export.cli import register
    from deploy.cli import register as register_deploy
    from workflows.cli import register as register_workflows

    register(app)
    register_deploy(app)
    register_workflows(bench_app, sweep_app)


# The extra each command needs beyond the torch-free base (``hdsim.extras``): named in the
# one-line error when one of its modules is missing.
COMMAND_EXTRA = {"train": "export", "export": "export", "evaluate": "export", "demo": "export", "deploy": "export",
                 "wta": "export", "stochastic": "export", "dropout": "export", "cosim": "rtl", "hw": "hw",
                 "run": "deploy"}


def _missing_extra(e: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing optional module, or ``None`` (then it is a bug: re-raised)."""
    from hdsim.extras import EXTRA_OF

    root = (e.name or "").split(".")[0]
    if root not in EXTRA_OF:
        return None
    # the app and its groups take no options of their own: the command's name comes first
    words = sys.argv[1:3] if sys.argv[1:2] in (["bench"], ["sweep"]) else sys.argv[1:2]
    command = " ".join(words)
    extra = COMMAND_EXTRA.get(words[-1] if words else "", EXTRA_OF[root])
    return f"hdsim {command} needs {root}, which is not installed: pip install 'hdsim[{extra}]'"


_register_export_commands()


def main() -> None:
    """Console entry point: runs the app, turning :class:`HdsimError` and command-line usage
    errors (bad option values, unknown options, missing arguments) into a one-line error, exit 2."""
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as cx
    except ImportError:
        from click import exceptions as cx

    try:
        code = app(standalone_mode=False)
    except HdsimError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as e:  # an optional dependency of this command: name the extra
        message = _missing_extra(e)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except cx.NoArgsIsHelpError:
        sys.exit(2)  # the help is printed already
    except cx.UsageError as e:  # bad option value, unknown option, missing argument: not a usage box
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        typer.echo(f"error: {e.format_message()}{where}", err=True)
        sys.exit(2)
    except cx.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
