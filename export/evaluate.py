"""Evaluate an exported folder: onnxruntime output -> the head's decoders, against the FC baseline.

Every head kind reports the same keys (the decisions of the runner's decode on the
test images):

* ``accuracy``: fraction of test images classified *and* right; an abstention
  (not converged, null product) counts as wrong;
* ``classified``: fraction of test images given a class;
* ``accuracy_classified``: fraction of the classified images that are right
  (``classified * accuracy_classified == accuracy``);
* ``head_parameters``: what the head stores (trained weights plus codebook entries);
* ``decode_ms_per_image``: the runner's decode time per image (batch of all test images);
* factorizer heads: ``accuracy_bruteforce``, the best product by exhaustive search
  (the decode's upper bound), and the decode settings used.

The runner's decodes: BCF, :class:`hdsim.fixed.FixedBCF` with the manifest's widths,
``(T, A, Tc, max_iter)`` and LFSR seed (its compiled twin where that applies, the same
integers); sparse resonator, :func:`hdsim.sparse_resonator_numpy.sparse_resonator_decode`
with the manifest's ``(a, max_iter, seed)``; FC, argmax. The BCF also reports
``accuracy_bcf_fixed`` / ``accuracy_bcf_float`` (class of the last estimate whether or not
it converged) and ``converged_bcf_fixed``.

Every export also reports ``multiplications`` (mean per test image, zero activations
skipped, counted on the exported graph: :mod:`export.multiplications`) and
``multiplications_dense`` (the same layer shapes with every input counted), as the seed
``001_*`` compares WTA networks (``docs/export.md``).

``--baseline`` names an FC-head export: ``accuracy_fc_baseline`` and ``head_parameters_fc``.
``coverage_curve=OUT`` (BCF) writes the risk-coverage curve as ``Tc`` varies, with the
other settings the manifest's: ``OUT/coverage_curve.csv`` and ``.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from hdsim.codes import BlockCodebooks
from hdsim.errors import HdsimError
from hdsim.export_folder import ExportFolder
from export.onnx_export import run_onnx

__all__ = ["evaluate_export", "run_onnx", "dataset_from_manifest", "write_coverage_curve"]


def dataset_from_manifest(manifest: dict, data_dir: str | None = None):
    """Rebuild the test set the export was trained for (or a folder dataset at ``data_dir``)."""
    from export.train import TrainConfig, build_data

    training = manifest.get("training")
    if not isinstance(training, dict):
        raise HdsimError("manifest: no training section, so no test set to rebuild")
    if "pretrained" in training:
        raise HdsimError(f"export: made from pretrained weights ({training.get('dataset')}), not trained here: there "
                         "is no test set to evaluate on (its manifest's checks hold the photo checks)")
    cfg = TrainConfig.from_dict(training)
    if data_dir is not None:
        cfg.dataset = str(data_dir)
    return build_data(cfg)


def evaluate_export(folder: str | Path, *, baseline: str | Path | None = None, data_dir: str | None = None,
                    limit: int | None = None, optimize: bool = True, batch: int = 256,
                    decisions: bool = False, coverage_curve: str | Path | None = None,
                    multiplications: bool = True) -> dict:
    """Accuracies of an export folder (and of an FC baseline export) on the test set (module docstring).

    ``decisions=True`` (factorizer heads) adds ``decisions``: the decode's class per test image
    (``-1`` for a null product; BCF: also as ``decisions_bcf_fixed``), whether or not it
    converged, and ``converged_per_image``.

    ``multiplications`` (default): also the multiplications per test image of the exported
    graph, zeros skipped, and the dense count of the same shapes
    (:func:`export.multiplications.count_onnx_multiplications`; keys ``multiplications``,
    ``multiplications_dense``, ``multiplications_ratio``, ``input_zero_fraction``, ...),
    with the backbone's ``activation`` and ``wta_group``.
    """
    from hdsim.calibrate import selective_metrics
    from hdsim.validation import output_dir

    folder = Path(folder)
    export = ExportFolder(folder)  # the format's checks, the same the runner makes
    manifest = export.manifest
    kind = export.head
    if coverage_curve is not None:
        if kind != "bcf":
            raise HdsimError(f"coverage-curve: the {kind} head has no convergence threshold Tc to vary")
        coverage_curve = output_dir("coverage-curve", coverage_curve)
    data = dataset_from_manifest(manifest, data_dir)
    x, y = data.test_set()
    if limit is not None:
        if limit < 1:
            raise HdsimError(f"limit: must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    pp = manifest["model"]["input"]["shape"]
    if list(x.shape[1:]) != [int(v) for v in pp[1:]]:
        raise HdsimError(f"data: test images have shape {list(x.shape[1:])}, the model expects {pp[1:]}")
    result: dict = {"export": str(folder), "kind": manifest["model"]["kind"], "head": kind,
                    "test_images": int(x.shape[0]), "head_parameters": manifest["head"]["parameters"],
                    "onnxruntime": "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"}
    t0 = time.time()
    out = run_onnx(folder / manifest["model"]["file"], x, optimize, batch)
    result["onnx_seconds"] = round(time.time() - t0, 3)
    yn = y.numpy()
    if kind == "bcf":
        result.update(_evaluate_bcf(export, out, y, batch, decisions, coverage_curve))
    elif kind == "sparse-resonator":
        result.update(_evaluate_sparse(export, out, yn, decisions))
    else:
        t0 = time.perf_counter()
        pred = out.argmax(axis=1)
        result["decode_ms_per_image"] = (time.perf_counter() - t0) * 1e3 / len(yn)
        result.update(selective_metrics(pred, np.ones(len(yn), bool), yn))
        result["accuracy_fc"] = result["accuracy"]
        result["head_parameters_fc"] = manifest["head"]["parameters"]
    result.pop("accuracy_last_estimate", None)
    result.pop("queries", None)
    if multiplications:  # seed 001_* table 1: per input, zeros skipped vs every input counted
        from export.multiplications import count_onnx_multiplications

        counted = count_onnx_multiplications(folder / manifest["model"]["file"], x.numpy(), batch=batch)
        counted.pop("layers")
        result.update(counted)
        result["activation"] = manifest.get("backbone", {}).get("activation", "relu6")
        result["wta_group"] = manifest.get("backbone", {}).get("wta_group")
    if baseline is not None:
        bman = ExportFolder(baseline).manifest
        if bman["head"]["kind"] != "fc":
            raise HdsimError(f"baseline {baseline}: expected an FC-head export, got a {bman['head']['kind']} head")
        if bman["model"]["input"]["shape"] != manifest["model"]["input"]["shape"]:
            raise HdsimError(f"baseline {baseline}: input shape {bman['model']['input']['shape']} differs from "
                             f"{manifest['model']['input']['shape']}")
        bout = run_onnx(Path(baseline) / bman["model"]["file"], x, optimize, batch)
        result["accuracy_fc_baseline"] = float((bout.argmax(axis=1) == yn).mean())
        result["baseline_kind"] = bman["model"]["kind"]
        result["head_parameters_fc"] = bman["head"]["parameters"]
    else:
        result.setdefault("accuracy_fc_baseline", None)
    return result


def _evaluate_bcf(export: ExportFolder, out: np.ndarray, y: torch.Tensor, batch: int, decisions: bool,
                  coverage_curve: Path | None) -> dict:
    from hdsim.calibrate import bcf_decoder, coverage_curve as curve, selective_metrics
    from hdsim.factorizers import BlockCodeFactorizer
    from hdsim.factorizers.bruteforce import bruteforce_decode

    manifest, pm = export.manifest, export.classes
    cb = BlockCodebooks.from_arrays(export.codebooks)
    q = torch.from_numpy(out).float()
    cfg, widths, lfsr_seed = export.bcf_settings()
    settings = {"T": cfg.T, "A": cfg.A, "Tc": cfg.resolved_Tc(cb.B), "max_iter": cfg.resolved_max_iter(cb.sizes)}
    decode = bcf_decoder(out, cb, widths, lfsr_seed=lfsr_seed, similarity=cfg.similarity)
    bcf_decoder(out[:1], cb, widths, lfsr_seed=lfsr_seed, similarity=cfg.similarity)(settings)  # compile outside the timing
    t0 = time.perf_counter()
    idx, iters, conv = decode(settings)
    res: dict = {"decode_ms_per_image": (time.perf_counter() - t0) * 1e3 / len(y)}
    yn = y.numpy()
    res.update(selective_metrics(pm.classes(idx), conv, yn))
    flt = BlockCodeFactorizer(cb, cfg, seed=0).factorize(q, batch_size=batch)
    bf, _ = bruteforce_decode(q, cb, cfg.similarity)
    for name, digits in (("bcf_fixed", idx), ("bcf_float", flt.indices.numpy()), ("bruteforce", bf.numpy())):
        pred = pm.classes(np.asarray(digits))
        res[f"accuracy_{name}"] = float((pred == yn).mean())
        res[f"null_{name}"] = int((pred < 0).sum())
    if decisions:
        res["decisions_bcf_fixed"] = res["decisions"] = pm.classes(idx).tolist()
        res["converged_per_image_bcf_fixed"] = res["converged_per_image"] = np.asarray(conv).tolist()
    res["factor_accuracy_bcf_fixed"] = float((idx == pm.digits(y).numpy()).mean())
    res["mean_iterations_bcf_fixed"] = float(np.mean(iters))
    res["converged_bcf_fixed"] = float(np.mean(conv))
    res["decode"] = {k: manifest["decode"][k] for k in ("T", "A", "Tc", "max_iter", "fixed_widths")}
    res["decode"]["calibration"] = (manifest["decode"].get("calibration") or {}).get("method", "none")
    res["head_parameters_bcf"] = manifest["head"]["parameters"]
    res["head_parameters_fc_equivalent"] = manifest["head"]["fc_equivalent_parameters"]
    if coverage_curve is not None:
        grid = sorted(set(np.round(np.arange(0.05, 0.951, 0.05), 4).tolist()) | {float(settings["Tc"])})
        rows = curve(decode, settings, pm.classes, yn, grid)
        res["coverage_curve"] = {"csv": str(write_coverage_curve(rows, coverage_curve, manifest)),
                                 "png": str(coverage_curve / "coverage_curve.png"), "points": len(rows)}
    return res


def _evaluate_sparse(export: ExportFolder, out: np.ndarray, yn: np.ndarray, decisions: bool) -> dict:
    from hdsim.calibrate import selective_metrics
    from hdsim.sparse_resonator_numpy import bruteforce_offsets, content_ids, sparse_resonator_decode, thin_queries

    manifest, pm = export.manifest, export.classes
    cb = BlockCodebooks.from_arrays(export.codebooks)
    settings = export.sparse_settings()
    offsets = thin_queries(out, cb.B, "query")
    X = [x.numpy() for x in cb.indices]
    t0 = time.perf_counter()
    idx, iters, conv, _ = sparse_resonator_decode(offsets, X, cb.L, ids=content_ids(offsets), **settings)
    res: dict = {"decode_ms_per_image": (time.perf_counter() - t0) * 1e3 / len(yn)}
    res.update(selective_metrics(pm.classes(idx), conv, yn))
    bf, _ = bruteforce_offsets(offsets, X, cb.L)
    res["accuracy_bruteforce"] = float((pm.classes(bf) == yn).mean())
    res["accuracy_sparse_resonator_last_estimate"] = float((pm.classes(idx) == yn).mean())
    res["segment_accuracy"] = float((offsets == cb.product(pm.digits(torch.from_numpy(yn))).numpy()).mean())
    res["mean_iterations"] = float(np.mean(iters))
    if decisions:
        res["decisions"] = pm.classes(idx).tolist()
        res["converged_per_image"] = np.asarray(conv).tolist()
    res["decode"] = settings | {"calibration": (manifest["decode"].get("calibration") or {}).get("method", "none")}
    res["head_parameters_fc_equivalent"] = manifest["head"]["fc_equivalent_parameters"]
    return res


def write_coverage_curve(rows: list[dict], folder: Path, manifest: dict) -> Path:
    """``folder/coverage_curve.csv`` and ``.png``: accuracy of the classified images against the
    fraction classified as ``Tc`` varies (left), and both against ``Tc`` (right)."""
    from hdsim.sweep.output import new_figure, save_figure, write_csv

    path = write_csv(folder / "coverage_curve.csv", rows)
    fig, (ax1, ax2) = new_figure(2)
    cov = [r["classified"] for r in rows]
    ax1.plot(cov, [r["accuracy_classified"] for r in rows], "o-", ms=3)
    sel = [r for r in rows if r["selected"]]
    for r in sel:
        ax1.plot([r["classified"]], [r["accuracy_classified"]], "r*", ms=12, label=f"manifest Tc={r['Tc']:.3g}")
    ax1.set_xlabel("fraction classified (coverage)")
    ax1.set_ylabel("accuracy of the classified images")
    ax1.set_title("risk-coverage (Tc varies)")
    if sel:
        ax1.legend(loc="lower left")
    tcs = [r["Tc"] for r in rows]
    ax2.plot(tcs, cov, "o-", ms=3, label="classified")
    ax2.plot(tcs, [r["accuracy"] for r in rows], "s-", ms=3, label="accuracy (abstention = wrong)")
    ax2.plot(tcs, [r["accuracy_classified"] for r in rows], "^-", ms=3, label="accuracy of the classified")
    ax2.set_xlabel("Tc")
    ax2.legend(loc="lower left")
    ax2.set_title(f"{manifest['head']['kind']} head, {manifest['classes']['num_classes']} classes")
    save_figure(fig, folder / "coverage_curve.png")
    return path


def score_outputs(export: ExportFolder, out: np.ndarray, y: np.ndarray) -> dict:
    """``accuracy`` and ``classified`` of network outputs ``out`` (the export's ONNX output on its test images,
    or a variant's: :mod:`export.stochastic`) under the export's own decode, as the runner decides:
    BCF — the fixed-point decode with the manifest's settings; sparse resonator — its NumPy decode;
    FC — argmax. An abstention counts as wrong."""
    from hdsim.calibrate import bcf_decoder, selective_metrics
    from hdsim.sparse_resonator_numpy import content_ids, sparse_resonator_decode, thin_queries

    pm, cb = export.classes, export.codebooks
    if export.head == "bcf":
        cfg, widths, lfsr_seed = export.bcf_settings()
        settings = {"T": cfg.T, "A": cfg.A, "Tc": cfg.resolved_Tc(cb.B), "max_iter": cfg.resolved_max_iter(cb.sizes)}
        idx, _, conv = bcf_decoder(out, BlockCodebooks.from_arrays(cb), widths, lfsr_seed=lfsr_seed,
                                   similarity=cfg.similarity)(settings)
        res = selective_metrics(pm.classes(np.asarray(idx)), np.asarray(conv), y)
    elif export.head == "sparse-resonator":
        offsets = thin_queries(out, cb.B, "query")
        idx, _, conv, _ = sparse_resonator_decode(offsets, list(cb.indices), cb.L, ids=content_ids(offsets),
                                                  **export.sparse_settings())
        res = selective_metrics(pm.classes(idx), conv, y)
    else:
        res = selective_metrics(out.argmax(axis=1), np.ones(len(y), bool), y)
    return {"accuracy": float(res["accuracy"]), "classified": float(res["classified"])}
