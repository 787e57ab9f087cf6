"""``hdsim bench deploy``, ``hdsim sweep wta|stochastic|dropout``: typer commands registered on ``hdsim
bench`` and ``hdsim sweep`` (they need export, and deploy or training)."""

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


# ---- hdsim sweep wta (seed 001_*) ----------------------------------------------------------------
def sweep_wta_cmd(
    groups: Annotated[Optional[list[str]], typer.Option(help="Group sizes l, repeatable or comma list (default "
                                                         "1,2,4,8; l = 1 is the ReLU6 network).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: wta_sweep.csv, .png, runs/, exports/.")]
    = Path("out/sweep_wta"),
    head: Annotated[str, typer.Option(help="Head of every network: fc (default), bcf or sparse-resonator.")] = "fc",
    dataset: Annotated[str, typer.Option(help="mnist2 / mnist3 or a folder dataset.")] = "mnist2",
    epochs: Annotated[int, typer.Option(help="Float epochs per network.")] = 8,
    qat_epochs: Annotated[int, typer.Option(help="QAT epochs per network.")] = 1,
    train_size: Annotated[int, typer.Option(help="Training images per float epoch.")] = 6400,
    qat_train_size: Annotated[int, typer.Option(help="Training images per QAT epoch (0 = --train-size).")] = 3200,
    test_size: Annotated[int, typer.Option(help="Composed test images (accuracy and multiplications).")] = 1000,
    width: Annotated[float, typer.Option(help="MobileNetV2 width multiplier.")] = 0.25,
    last_channel: Annotated[int, typer.Option(help="Backbone features.")] = 128,
    lr: Annotated[float, typer.Option(help="Float peak learning rate.")] = 4e-3,
    wta_layers: Annotated[str, typer.Option(help="Which ReLU6 become WTAs: blocks (expansion and depthwise), "
                                            "depthwise, all, stream (blocks and every block's output), inputs (blocks and every expansion's input).")] = "blocks",
    wta_t_init: Annotated[float, typer.Option(help="WTA temperature of the first training step.")] = 1.0,
    wta_t_final: Annotated[float, typer.Option(help="WTA temperature of the last training step.")] = 1000.0,
    seed: Annotated[int, typer.Option(help="Seed of data and init (the same for every network).")] = 0,
    calibration_trials: Annotated[int, typer.Option(help="Decode calibration trials of a factorizer head "
                                                    "(0: none).")] = 16,
    threads: Annotated[int, typer.Option(help="torch threads of the trainings.")] = 1,
    progress: Annotated[bool, typer.Option(help="Progress on stderr.")] = True,
) -> None:
    """Blockwise winner-take-all vs ReLU6: accuracy and multiplications per input by group size (CSV + PNG + JSON)."""
    from hdsim.sweep.output import parse_list
    from workflows.wta_sweep import WTASweepConfig, run_wta_sweep

    train = dict(dataset=dataset, head=head, width=width, last_channel=last_channel, epochs=epochs,
                 qat_epochs=qat_epochs, train_size=train_size, qat_train_size=qat_train_size, test_size=test_size,
                 eval_size=min(test_size, 500), batch=64, lr=lr, seed=seed, wta_layers=wta_layers,
                 wta_t_init=wta_t_init, wta_t_final=wta_t_final)
    if head == "sparse-resonator":
        train["D"] = 0
    cfg = WTASweepConfig(out=str(out), groups=parse_list(groups, "groups") or (1, 2, 4, 8), train=train,
                         calibration_trials=calibration_trials, threads=threads)
    typer.echo(json.dumps(run_wta_sweep(cfg, progress=progress)))


def sweep_stochastic_cmd(
    folder: Annotated[Path, typer.Argument(help="Export folder (its checkpoint gives the float weights).")],
    fractions: Annotated[Optional[list[str]], typer.Option(help="Sampled fractions f in (0, 1] (samples per row / "
                                                           "fan-in), comma-separated.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for stochastic_sweep.csv and .png.")] = Path("out/stochastic_sweep"),
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    min_fan_in: Annotated[int, typer.Option(help="Sample only layers with at least this fan-in (1: all).")] = 1,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N test images.")] = None,
    progress: Annotated[bool, typer.Option(help="Progress on stderr.")] = True,
) -> None:
    """Stochastic scalar products (seed 004): accuracy vs sampled fraction of an export's network (CSV + PNG + JSON)."""
    from hdsim.sweep.output import parse_list
    from export.stochastic import stochastic_sweep

    fr = parse_list(fractions, "fractions", float) or (0.05, 0.1, 0.25, 0.5, 1.0)
    typer.echo(json.dumps(stochastic_sweep(folder, fr, out, seed=seed, limit=limit, progress=progress,
                                           min_fan_in=min_fan_in)))


def sweep_dropout_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the runs, dropout_sweep.csv and .png.")]
    = Path("out/dropout_sweep"),
    partitions: Annotated[Optional[list[str]], typer.Option(help="P values (>= 2), comma-separated; Bernoulli "
                                                            "dropout runs at rate 1/P.")] = None,
    seeds: Annotated[Optional[list[str]], typer.Option(help="Seeds (at least two), comma-separated.")] = None,
    dataset: Annotated[str, typer.Option(help="mnist2 (default), mnist3, or a folder dataset.")] = "mnist2",
    head: Annotated[str, typer.Option(help="bcf or fc.")] = "bcf",
    epochs: Annotated[int, typer.Option(help="Float epochs per network.")] = 8,
    qat_epochs: Annotated[int, typer.Option(help="QAT epochs per network.")] = 0,
    train_size: Annotated[int, typer.Option(help="Training images per epoch.")] = 6400,
    threads: Annotated[int, typer.Option(help="torch threads of the trainings.")] = 1,
    progress: Annotated[bool, typer.Option(help="Progress on stderr.")] = True,
) -> None:
    """Partition vs Bernoulli dropout at the matched rate (seed 004): accuracy mean and std over seeds."""
    from hdsim.sweep.output import parse_list
    from workflows.dropout_sweep import DropoutSweepConfig, run_dropout_sweep

    cfg = DropoutSweepConfig(out=str(out), partitions=parse_list(partitions, "partitions") or (2,),
                             seeds=parse_list(seeds, "seeds") or (0, 1, 2, 3, 4), dataset=dataset, head=head,
                             epochs=epochs, qat_epochs=qat_epochs, train_size=train_size, threads=threads)
    typer.echo(json.dumps(run_dropout_sweep(cfg, progress=progress)))


def register(bench_app: typer.Typer, sweep_app: typer.Typer | None = None) -> None:
    """Add ``deploy`` to ``hdsim bench``; ``wta``, ``stochastic`` and ``dropout`` to ``hdsim sweep``."""
    bench_app.command("deploy")(bench_deploy_cmd)
    if sweep_app is not None:
        sweep_app.command("wta")(sweep_wta_cmd)
        sweep_app.command("stochastic")(sweep_stochastic_cmd)
        sweep_app.command("dropout")(sweep_dropout_cmd)
