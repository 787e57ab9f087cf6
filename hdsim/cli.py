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

app = typer.Typer(help="hdsim: block-code factorizers from float reference to fixed point and RTL.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
bench_app = typer.Typer(help="Benchmarks (one JSON object on stdout).", no_args_is_help=True)
sweep_app = typer.Typer(help="Sweeps (CSV + PNG).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(sweep_app, name="sweep")


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


def emit(obj: dict) -> None:
    """Print one JSON object on stdout."""
    typer.echo(json.dumps(obj, indent=None, default=str))


@bench_app.command("factorizer")
def bench_factorizer(
    method: Annotated[Method, typer.Option(help="Factorizer to run.")] = Method.bcf,
    D: Annotated[int, typer.Option("--D", help="Dimension.")] = 512,
    B: Annotated[int, typer.Option("--B", help="Blocks (BCF, sparse resonator).")] = 4,
    F: Annotated[int, typer.Option("--F", help="Factors.")] = 2,
    M: Annotated[int, typer.Option("--M", help="Codevectors per factor.")] = 1155,
    T: Annotated[Optional[float], typer.Option("--T", help="Threshold (default: tuned table).")] = None,
    A: Annotated[Optional[int], typer.Option("--A", help="Sampling width (default: tuned table).")] = None,
    Tc: Annotated[Optional[float], typer.Option("--Tc", help="Convergence threshold.")] = None,
    max_iter: Annotated[Optional[int], typer.Option(help="Iteration cap.")] = None,
    queries: Annotated[int, typer.Option(help="Number of queries.")] = 1024,
    batch: Annotated[int, typer.Option(help="Queries decoded together.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of codebooks, queries and sampling.")] = 0,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.cpu,
    dtype: Annotated[DType, typer.Option(help="Float precision.")] = DType.float32,
    noise: Annotated[Noise, typer.Option(help="Query noise model.")] = Noise.none,
    noise_level: Annotated[float, typer.Option(help="Gaussian sigma or bit-flip probability.")] = 0.0,
    baseline: Annotated[Optional[str], typer.Option(help="Also time a baseline: 'numpy'.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")] = True,
) -> None:
    """Accuracy, iterations and queries/s of one factorizer on random product queries."""
    from hdsim.bench.factorizer import FactorizerBenchConfig, run_factorizer_bench

    cfg = FactorizerBenchConfig(method=method.value, D=D, B=B, F=F, M=M, T=T, A=A, Tc=Tc,
                                max_iter=max_iter, queries=queries, batch=batch, seed=seed,
                                device=device.value, dtype=dtype.value, noise=noise.value,
                                noise_level=noise_level, baseline=baseline)
    emit(run_factorizer_bench(cfg))


@app.command("demo")
def demo(
    queries: Annotated[int, typer.Option(help="Queries per step.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of everything random.")] = 0,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.cpu,
) -> None:
    """The main job: factorization demo on the reference configuration (summary as JSON)."""
    from hdsim.demo import run_demo

    if queries < 1:
        raise HdsimError(f"queries: must be >= 1, got {queries}")
    result = run_demo(queries=queries, seed=seed, device=device.value)
    for name, r in result["steps"].items():
        typer.echo(f"{name:10s} problem size {r['problem_size']:>10,d}  accuracy {r['accuracy']:.4f}  "
                   f"mean iterations {r['mean_iterations']:6.2f}  {r['queries_per_s']:8.1f} queries/s  "
                   f"(T={r['T']}, A={r['A']}; {r['noise_model']})", err=True)
    emit(result)


def main() -> None:
    """Console entry point: runs the app, turning :class:`HdsimError` into a one-line error."""
    try:
        app()
    except HdsimError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
