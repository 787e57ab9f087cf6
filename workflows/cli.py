"""``hdsim bench deploy``: the typer command registered on ``hdsim bench`` (needs export and deploy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from deploy.runner import DEFAULT_BATCH

__all__ = ["register"]


def bench_deploy_cmd(
    folder: Annotated[Path, typer.Argument(help="int8 export folder.")],
    float_dir: Annotated[Optional[Path], typer.Option(help="Float export of the same network (default: "
                                                     "exported here from the float reference).")] = None,
    batch: Annotated[int, typer.Option(help="Images per CNN call in the latency runs.")] = 1,
    runs: Annotated[int, typer.Option(help="Timed calls per backend.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed calls per backend first.")] = 20,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op and torch threads.")] = 2,
    decode_batch: Annotated[int, typer.Option(help="Queries per decode call (batched figures; default: "
                                                   "the runner's batch).")] = DEFAULT_BATCH,
    decode_queries: Annotated[int, typer.Option(help="Queries decoded for the batched figures.")] = 1024,
    images: Annotated[int, typer.Option(help="Test images used as inputs.")] = 256,
    profile: Annotated[bool, typer.Option(help="Add onnxruntime's per-op profile of both ONNX models "
                                                "(profile_ms_per_call).")] = False,
    footprint: Annotated[bool, typer.Option(help="Add the runner's footprint: installed size, cold start and "
                                                  "throughput, torch-free vs with torch.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Latency of int8 ONNX vs float ONNX vs PyTorch, and decode vs CNN time (JSON)."""
    from workflows.deploy_bench import DeployBenchConfig, run_deploy_bench

    cfg = DeployBenchConfig(folder=str(folder), float_dir=None if float_dir is None else str(float_dir),
                            batch=batch, runs=runs, warmup=warmup, threads=threads, decode_batch=decode_batch,
                            decode_queries=decode_queries, images=images, profile=profile,
                            footprint=footprint)
    typer.echo(json.dumps(run_deploy_bench(cfg, progress=progress)))


def register(bench_app: typer.Typer) -> None:
    """Add ``deploy`` to ``hdsim bench``."""
    bench_app.command("deploy")(bench_deploy_cmd)
