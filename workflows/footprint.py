"""The edge runner's footprint, measured in one run: installed size, cold start, throughput.

Two variants of the same runner on the same export and images:

* ``torch_free``: what ``pip install 'hdsim[deploy]'`` gives — the runner as it is (NumPy /
  numba decoders, no torch import);
* ``with_torch`` (the runner before it was made torch-free): the same process first imports what
  that runner imported at load (``torch``, ``export.data``, ``export.evaluate``,
  ``export.onnx_export``), and decodes an export with conditional sampling (``A > 0``) with the
  torch model ``FixedBCF``, as that runner did (its compiled kernel had no sampling).

Measured:

* ``installed_mb``: the sum of the installed files of every distribution the variant's
  requirements pull in (the closure over ``importlib.metadata`` of this machine: ``hdsim[deploy]``
  vs ``hdsim[core,export]``, the extras the old runner needed), hdsim itself excluded (the same in both);
* ``cold_start_s``: a new Python process, from its start to the first image's prediction
  (import, export checks, onnxruntime session, kernel load, one image), median of
  ``COLD_STARTS`` alternating runs;
* ``images_per_s``: ``Runner.run`` over the image files at batch 32 (reading, preprocessing, CNN,
  decode), median of alternating rounds in this process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["requirement_closure", "installed_bytes", "cold_start", "footprint", "VARIANTS"]

COLD_STARTS = 3  # per variant, alternating
ROUNDS = 3  # throughput rounds per variant, alternating
VARIANTS = {"torch_free": ["hdsim[deploy]"], "with_torch": ["hdsim[core,export]"]}
OLD_IMPORTS = "import torch, export.data, export.evaluate, export.onnx_export"


def _name(req: str) -> tuple[str, set[str]]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(\[([^\]]*)\])?", req)
    return m.group(1).lower().replace("_", "-"), {e.strip() for e in (m.group(3) or "").split(",") if e.strip()}


def requirement_closure(roots: list[str]) -> set[str]:
    """Installed distribution names (normalized) that ``roots`` (``name[extras]`` strings) require, transitively.

    Markers are evaluated for this interpreter with the requested extras; a requirement that is not
    installed here is skipped (it cannot be measured).
    """
    from packaging.requirements import Requirement

    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    todo = [_name(r) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        names.add(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name.lower().replace("_", "-"), set(req.extras)))
    return names


def installed_bytes(names: set[str], exclude: tuple[str, ...] = ("hdsim",)) -> int:
    """Bytes of the installed files of the named distributions (their RECORDs), ``exclude`` left out."""
    total = 0
    for name in sorted(names - set(exclude)):
        dist = metadata.distribution(name)
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                total += p.stat().st_size
    return total


def cold_start(folder: str | Path, image: str | Path, variant: str) -> float:
    """Seconds from a new process's start to its first prediction (see the module docstring)."""
    pre = OLD_IMPORTS + "; " if variant == "with_torch" else ""
    # plain statements (readable in a process listing): build, classify one image, check it ran
    code = "\n".join([
        pre.rstrip("; "),
        "import sys, json",
        "from deploy.runner import Runner, RunnerConfig",
        "A = json.load(open(sys.argv[1] + '/manifest.json')).get('decode', {}).get('A') or 0",
        f"compiled = {variant == 'torch_free'} or A == 0",
        "p = Runner(sys.argv[1], RunnerConfig(compiled=compiled, threads=1)).predict([sys.argv[2]])",
        "assert p[0].status != 'error', p[0].error",
    ])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(image)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cold start ({variant}) failed: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds


def footprint(folder: str | Path, files: list[str], threads: int = 2, batch: int = 32, progress: bool = False
              ) -> dict:
    """Both variants' installed size, cold start and throughput on ``files`` (module docstring)."""
    from deploy.runner import Runner, RunnerConfig

    out: dict = {"variants": {k: {"requirements": v} for k, v in VARIANTS.items()}, "images": len(files),
                 "batch": batch, "threads": threads}
    for k, roots in VARIANTS.items():
        names = requirement_closure(roots)
        out["variants"][k]["distributions"] = len(names - {"hdsim"})
        out["variants"][k]["installed_mb"] = round(installed_bytes(names) / 2**20, 1)
        out["variants"][k]["has_torch"] = "torch" in names
    starts: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(COLD_STARTS):
        for k in VARIANTS:
            starts[k].append(cold_start(folder, files[0], k))
    from hdsim.export_folder import ExportFolder

    manifest_A = int((ExportFolder(folder).manifest.get("decode") or {}).get("A") or 0)
    runners = {"torch_free": Runner(folder, RunnerConfig(threads=threads, batch=batch)),
               "with_torch": Runner(folder, RunnerConfig(threads=threads, batch=batch, compiled=manifest_A == 0))}
    rates: dict[str, list[float]] = {k: [] for k in runners}
    decisions = {}
    for _ in range(ROUNDS):
        for k, r in runners.items():
            t0 = time.perf_counter()
            preds = list(r.run(files))
            rates[k].append(len(files) / (time.perf_counter() - t0))
            decisions[k] = [(p.status, p.cls, p.factors, p.last_estimate, p.iterations) for p in preds]
    for k in VARIANTS:
        v = out["variants"][k]
        v["decoder"] = runners[k].decoder_name
        v["cold_start_s"] = round(float(np.median(starts[k])), 3)
        v["images_per_s"] = round(float(np.median(rates[k])), 1)
    tf, wt = out["variants"]["torch_free"], out["variants"]["with_torch"]
    out["installed_ratio"] = round(tf["installed_mb"] / wt["installed_mb"], 4)
    out["cold_start_ratio"] = round(tf["cold_start_s"] / wt["cold_start_s"], 4)
    out["throughput_ratio"] = round(tf["images_per_s"] / wt["images_per_s"], 4)
    out["identical_decisions"] = decisions["torch_free"] == decisions["with_torch"]
    return out
