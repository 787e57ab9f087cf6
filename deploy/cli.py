"""``hdsim run``: the typer command registered on the hdsim app (torch-free, like the runner).

``run`` streams one result per input (jsonl, csv or an aligned table) on stdout;
per-input errors also go to stderr as one line each, a progress bar and a
summary go to stderr, and the exit code is 1 when any input failed (2 for an
error that stops the whole run, such as a manifest whose hash does not match).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from deploy.runner import DEFAULT_BATCH

__all__ = ["register"]


class Decode(str, Enum):
    fixed = "fixed"
    float = "float"
    bruteforce = "bruteforce"


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    table = "table"


class RunDevice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


CSV_FIELDS = ("input", "status", "class", "label", "factors", "iterations", "converged", "confidence",
              "preprocess_ms", "cnn_ms", "decode_ms", "total_ms", "error")
TABLE = "{input:<32.32} {status:<13} {label:>16.16} {factors:<9} {iterations:>4} {confidence:>7} {total_ms:>9} {error}"


def _row(d: dict) -> dict:
    lat = d.get("latency_ms") or {}
    return {"input": d["input"], "status": d["status"], "class": "" if d["class"] is None else d["class"],
            "label": d["label"] or "", "factors": " ".join(map(str, d["factors"] or [])),
            "iterations": "" if d["iterations"] is None else d["iterations"],
            "converged": "" if d["converged"] is None else d["converged"],
            "confidence": "" if d["confidence"] is None else f"{d['confidence']:.4f}",
            **{f"{k}_ms": (f"{lat[k]:.3f}" if k in lat else "") for k in ("preprocess", "cnn", "decode", "total")},
            "error": d["error"] or ""}


def run_cmd(
    folder: Annotated[Path, typer.Argument(help="Export folder (model.onnx, manifest.json, codebooks.npz).")],
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs or .npy pixel arrays.")],
    decode: Annotated[Decode, typer.Option(help="BCF decoder: fixed (integer model of the RTL), float, "
                                           "bruteforce.")] = Decode.fixed,
    imc: Annotated[Optional[str], typer.Option(help="Decode on a PCM crossbar preset (fixed decode; "
                                               "pcm-default, pcm-chip, ideal, ideal-periphery).")] = None,
    imc_t: Annotated[float, typer.Option(help="--imc: seconds since the crossbar was programmed.")] = 20.0,
    imc_tc: Annotated[float, typer.Option(help="--imc: convergence threshold, a fraction of B.")] = 0.75,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (0: its default).")] = 2,
    batch: Annotated[int, typer.Option(help="Images per inference and decode call.")] = DEFAULT_BATCH,
    fmt: Annotated[Format, typer.Option("--format", help="Output on stdout.")] = Format.jsonl,
    device: Annotated[RunDevice, typer.Option(help="auto: CUDA when onnxruntime has it.")] = RunDevice.auto,
    ort_optimize: Annotated[bool, typer.Option(help="onnxruntime default graph optimizations; "
                                               "--no-ort-optimize = ORT_DISABLE_ALL.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr (more than 8 inputs).")] = True,
    compiled: Annotated[bool, typer.Option(help="Fixed decode with the compiled (numba) kernel; "
                                           "--no-compiled runs the torch model (needs the core extra).")] = True,
) -> None:
    """Classify images with an export: onnxruntime, then the (fixed-point) BCF decode; one line per input."""
    from deploy.inputs import expand_inputs
    from deploy.runner import Runner, RunnerConfig, summarize

    runner = Runner(folder, RunnerConfig(decode=decode.value, imc=imc, imc_t=imc_t, imc_tc=imc_tc, threads=threads, batch=batch,
                                         optimize=ort_optimize, device=device.value,
                                         compiled=compiled))
    total = len(expand_inputs(inputs))
    it = runner.run(inputs)
    bar = None
    if progress and total > 8:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="hdsim run", unit="input", file=sys.stderr, leave=False)
    writer = None
    if fmt is Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
    elif fmt is Format.table:
        typer.echo(TABLE.format(input="input", status="status", label="class", factors="factors",
                                iterations="it", confidence="conf", total_ms="ms", error="error"))
    preds = []
    t0 = time.perf_counter()
    for p in it:
        preds.append(p)
        d = p.as_dict()
        if p.error:
            if bar is not None:
                bar.write(f"error: {p.error}", file=sys.stderr)
            else:
                typer.echo(f"error: {p.error}", err=True)
        if fmt is Format.jsonl:
            typer.echo(json.dumps(d))
        elif writer is not None:
            writer.writerow(_row(d))
        else:
            typer.echo(TABLE.format(**_row(d)))
        if bar is not None and not p.input.endswith("]"):
            bar.update(1)
    if bar is not None:
        bar.close()
    s = summarize(preds, time.perf_counter() - t0)
    lat = s["total_ms"]
    typer.echo(f"summary: {s['inputs']} inputs: {s['ok']} classified, {s['not_converged']} not converged, "
               f"{s['null_product']} null product, {s['error']} failed"
               + (f"; latency per image p50 {lat['p50']:.3f} ms (preprocess {s['preprocess_ms']['p50']:.3f}, "
                  f"cnn {s['cnn_ms']['p50']:.3f}, decode {s['decode_ms']['p50']:.3f}); "
                  f"{s['images_per_s']} images/s" if lat else ""), err=True)
    if s["error"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``hdsim`` app."""
    app.command("run")(run_cmd)
