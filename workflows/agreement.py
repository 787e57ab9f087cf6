"""Checks of a deployment against the evaluation: held-out images as files, and decision agreement.

* :func:`write_test_images` writes an export's held-out test images as PNG files
  (the pixels they were made from: normalization is inverted exactly), so the
  runner is exercised on files, as on a device.
* :func:`evaluation_agreement` runs the runner (default onnxruntime optimizations,
  fused int8 kernels) on those files and compares its decisions with
  :func:`export.evaluate.evaluate_export`'s fixed-point decode of the same test images
  through ``ORT_DISABLE_ALL`` (bit parity with the Brevitas model): the reference.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from hdsim.errors import HdsimError

__all__ = ["write_test_images", "evaluation_agreement"]


def write_test_images(folder: str | Path, out: str | Path, limit: int | None = None) -> list[tuple[Path, int]]:
    """Write the export's test images to ``out/<index>_<class>.png``; returns ``(path, class)`` pairs."""
    from PIL import Image

    from hdsim.export_folder import ExportFolder
    from export.evaluate import dataset_from_manifest

    export = ExportFolder(folder)
    manifest, pp = export.manifest, export.preprocessing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = dataset_from_manifest(manifest).test_set()
    if limit is not None:
        x, y = x[:limit], y[:limit]
    px = pp.denormalize(x)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(px.shape[0]):
        a = px[i].permute(1, 2, 0).numpy()
        path = out / f"{i:05d}_{int(y[i])}.png"
        Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path)
        files.append((path, int(y[i])))
    return files


def evaluation_agreement(folder: str | Path, images: str | Path, limit: int | None = None, config=None,
                         runner=None) -> dict:
    """The runner on ``images`` (written by :func:`write_test_images`) vs the evaluation's decisions.

    ``runner``: a :class:`deploy.runner.Runner` of ``folder`` to use (else one is built with
    ``config``, default :class:`deploy.runner.RunnerConfig`).

    A runner decision is the class of its final estimate (``factors``, or ``last_estimate`` when
    the decode did not converge); the evaluation counts a decode's class whether or not it
    converged, so both are compared the same way, and convergence flags separately.
    """
    from export.data import ProductMap
    from export.evaluate import evaluate_export
    from deploy.runner import Runner, RunnerConfig, summarize

    files = sorted(Path(images).glob("*.png"))
    if limit is not None:
        files = files[:limit]
    if not files:
        raise HdsimError(f"images {images}: no PNG files (write them with write_test_images)")
    ev = evaluate_export(folder, limit=len(files), optimize=False, decisions=True)
    if ev["head"] == "fc":
        raise HdsimError(f"{folder}: evaluation agreement needs a factorizer-head export (BCF or sparse resonator)")
    runner = runner or Runner(folder, config or RunnerConfig())
    t0 = time.perf_counter()
    preds = list(runner.run([str(f) for f in files]))
    seconds = time.perf_counter() - t0
    pm: ProductMap = runner.classes
    est = torch.tensor([p.factors or p.last_estimate or [-1] * pm.F for p in preds])
    ours = pm.classes(est.clamp_min(0)).tolist()
    truth = [int(f.stem.split("_")[1]) for f in files]
    ref, ref_conv = ev["decisions"], ev["converged_per_image"]
    n = len(files)
    same = sum(a == b for a, b in zip(ours, ref))
    return {"images": n, "identical_decisions": same / n, "differing": n - same,
            "identical_convergence": sum(bool(p.converged) == c for p, c in zip(preds, ref_conv)) / n,
            "runner_accuracy": sum(a == t for a, t in zip(ours, truth)) / n,
            "runner_accuracy_converged_only": sum(p.status == "ok" and p.cls == t for p, t in zip(preds, truth)) / n,
            "evaluation_accuracy": sum(a == t for a, t in zip(ref, truth)) / n,
            "runner_status": {s: sum(p.status == s for p in preds) for s in ("ok", "not-converged", "null-product",
                                                                              "error")},
            "runner": {"onnxruntime": "ORT_ENABLE_ALL" if runner.config.optimize else "ORT_DISABLE_ALL",
                       "decode": runner.config.decode, "batch": runner.config.batch},
            "evaluation": {"onnxruntime": "ORT_DISABLE_ALL", "decode": "fixed" if ev["head"] == "bcf" else ev["head"]},
            "latency": summarize(preds, seconds)}
