"""Evaluate an exported folder: onnxruntime query -> hdsim decoders, against the FC baseline.

For a BCF export the ONNX model's query of every test image is decoded by

* ``accuracy_bcf_fixed``: :class:`hdsim.fixed.FixedBCF` (bit-accurate integer BCF, the
  RTL's reference) with the manifest's widths and ``(T, A)``;
* ``accuracy_bcf_float``: :class:`hdsim.factorizers.BlockCodeFactorizer` (float BCF);
* ``accuracy_bruteforce``: ``linf`` similarity with every product (the upper bound).

A decode that lands on a null product counts as wrong. ``--baseline`` names an
FC-head export whose plain argmax accuracy is ``accuracy_fc_baseline``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from hdsim.codes import BlockCodebooks
from hdsim.errors import HdsimError
from export.onnx_export import MANIFEST_FORMAT, ort_session, sha256_file

__all__ = ["load_manifest", "load_codebooks", "decode_settings", "evaluate_export", "run_onnx",
           "dataset_from_manifest"]


def load_manifest(folder: str | Path, verify: bool = True) -> dict:
    """Read ``folder/manifest.json`` and check the model file's sha256.

    Raises:
        HdsimError: missing folder or files, unreadable manifest, or a hash mismatch.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HdsimError(f"export dir: {'is a file, not a folder' if folder.exists() else 'not found'}: {folder}")
    mpath = folder / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise HdsimError(f"export dir {folder}: no manifest.json") from None
    except json.JSONDecodeError as e:
        raise HdsimError(f"manifest {mpath}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise HdsimError(f"manifest {mpath}: not an hdsim export manifest (format {MANIFEST_FORMAT})")
    _check_fields(manifest, mpath)
    model = folder / manifest["model"]["file"]
    if not model.is_file():
        raise HdsimError(f"export dir {folder}: model file {manifest['model']['file']} is missing")
    if verify:
        digest = sha256_file(model)
        if digest != manifest["model"]["sha256"]:
            raise HdsimError(f"model {model}: sha256 {digest[:12]}... does not match the manifest's "
                             f"{manifest['model']['sha256'][:12]}...")
    return manifest


# Fields every consumer reads (runner, evaluation, bench, co-simulation), checked once at load:
# a hand-edited or truncated manifest is a one-line error, not a KeyError deep inside.
_FIELDS = ("model.file", "model.sha256", "model.output.name", "preprocessing", "head.kind", "classes.radices",
           "classes.num_classes")
_BCF_FIELDS = ("head.F", "head.B", "head.L", "head.D", "head.M", "head.codebooks.file", "decode.T", "decode.A",
               "decode.Tc", "decode.max_iter", "decode.similarity", "decode.fixed_widths", "checks.codebooks_sha256")


def _check_fields(manifest: dict, mpath: Path) -> None:
    from export.data import Preprocessing

    for field in _FIELDS + (_BCF_FIELDS if (manifest.get("head") or {}).get("kind") == "bcf" else ()):
        node = manifest
        for key in field.split("."):
            if not isinstance(node, dict) or key not in node:
                raise HdsimError(f"manifest {mpath}: missing field {field}")
            node = node[key]
    try:
        Preprocessing.from_dict(manifest["preprocessing"])
    except HdsimError as e:
        raise HdsimError(f"manifest {mpath}: {e}") from None


def load_codebooks(folder: str | Path, manifest: dict) -> BlockCodebooks:
    """The export's codebooks, checked against the manifest (sha256, shapes, offsets in ``[0, L)``)."""
    path = Path(folder) / manifest["head"]["codebooks"]["file"]
    if not path.is_file():
        raise HdsimError(f"codebooks {path}: missing")
    digest = sha256_file(path)
    if digest != manifest["checks"]["codebooks_sha256"]:
        raise HdsimError(f"codebooks {path}: sha256 {digest[:12]}... does not match the manifest's "
                         f"{str(manifest['checks']['codebooks_sha256'])[:12]}...")
    try:
        with np.load(path) as z:
            F = int(manifest["head"]["F"])
            X = tuple(torch.from_numpy(z[f"X{f}"]).long() for f in range(F))
            L = int(z["L"])
    except Exception as e:  # zip, pickle and key errors of a damaged file alike
        raise HdsimError(f"codebooks {path}: unreadable ({e.__class__.__name__})") from None
    if any(x.dim() != 2 or x.shape[1] != X[0].shape[1] or bool(((x < 0) | (x >= L)).any()) for x in X):
        raise HdsimError(f"codebooks {path}: offsets must be (M, B) arrays with values in [0, {L})")
    cb = BlockCodebooks(X, L)
    if cb.D != manifest["head"]["D"] or list(cb.sizes) != list(manifest["head"]["M"]):
        raise HdsimError(f"codebooks {path}: shape D={cb.D}, M={list(cb.sizes)} disagrees with the manifest")
    return cb


def decode_settings(manifest: dict):
    """The manifest's BCF decode: ``(BCFConfig, FixedWidths, LFSR seed)``, as every decoder of an export uses it."""
    from hdsim.factorizers import BCFConfig
    from hdsim.fixed import FixedWidths

    dec = manifest["decode"]
    try:
        cfg = BCFConfig(T=float(dec["T"]), A=int(dec["A"]), Tc=float(dec["Tc"]), max_iter=int(dec["max_iter"]),
                        similarity=dec["similarity"])
        widths = FixedWidths(**dec["fixed_widths"])
        cfg.validate(int(manifest["head"]["B"]))
        widths.validate()
        return cfg, widths, int(dec.get("lfsr_seed", 1))
    except (KeyError, TypeError, ValueError) as e:
        raise HdsimError(f"manifest: decode settings malformed ({e.__class__.__name__}: {e})") from None
    except HdsimError as e:
        raise HdsimError(f"manifest: decode settings: {e}") from None


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


def run_onnx(path: Path, x: torch.Tensor, optimize: bool, batch: int = 256) -> np.ndarray:
    sess = ort_session(path, optimize=optimize)
    return np.concatenate([sess.run(None, {"image": x[i:i + batch].numpy()})[0] for i in range(0, x.shape[0], batch)])


def _classes(product_map, digits: torch.Tensor) -> torch.Tensor:
    return product_map.classes(digits)


def evaluate_export(folder: str | Path, *, baseline: str | Path | None = None, data_dir: str | None = None,
                    limit: int | None = None, optimize: bool = True, batch: int = 256,
                    decisions: bool = False) -> dict:
    """Accuracies of an export folder (and of an FC baseline export) on the test set.

    ``decisions=True`` adds ``decisions_bcf_fixed``: the fixed-point decode's class per test
    image (``-1`` for a null product), whether or not it converged.
    """
    from hdsim.factorizers import BlockCodeFactorizer
    from hdsim.factorizers.bruteforce import bruteforce_decode
    from hdsim.fixed import FixedBCF

    folder = Path(folder)
    manifest = load_manifest(folder)
    data = dataset_from_manifest(manifest, data_dir)
    x, y = data.test_set()
    if limit is not None:
        if limit < 1:
            raise HdsimError(f"limit: must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    pp = manifest["model"]["input"]["shape"]
    if list(x.shape[1:]) != [int(v) for v in pp[1:]]:
        raise HdsimError(f"data: test images have shape {list(x.shape[1:])}, the model expects {pp[1:]}")
    result: dict = {"export": str(folder), "kind": manifest["model"]["kind"], "head": manifest["head"]["kind"],
                    "test_images": int(x.shape[0]),
                    "onnxruntime": "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"}
    t0 = time.time()
    out = run_onnx(folder / manifest["model"]["file"], x, optimize, batch)
    result["onnx_seconds"] = round(time.time() - t0, 3)
    if manifest["head"]["kind"] == "bcf":
        from export.data import ProductMap

        pm = ProductMap(tuple(manifest["classes"]["radices"]), int(manifest["classes"]["num_classes"]))
        cb = load_codebooks(folder, manifest)
        dec = manifest["decode"]
        q = torch.from_numpy(out).float()
        cfg, widths, lfsr_seed = decode_settings(manifest)
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed = FixedBCF(cb, cfg, widths, seed=lfsr_seed
                             ).factorize(q, batch_size=batch)
        result["bcf_fixed_seconds"] = round(time.time() - t0, 3)
        flt = BlockCodeFactorizer(cb, cfg, seed=0).factorize(q, batch_size=batch)
        bf, _ = bruteforce_decode(q, cb, cfg.similarity)
        for name, digits in (("bcf_fixed", fixed.indices), ("bcf_float", flt.indices), ("bruteforce", bf)):
            pred = _classes(pm, digits)
            result[f"accuracy_{name}"] = float((pred == y).float().mean())
            result[f"null_{name}"] = int((pred < 0).sum())
        if decisions:
            result["decisions_bcf_fixed"] = _classes(pm, fixed.indices).tolist()
            result["converged_per_image_bcf_fixed"] = fixed.converged.tolist()
        result["factor_accuracy_bcf_fixed"] = float((fixed.indices == pm.digits(y)).float().mean())
        result["mean_iterations_bcf_fixed"] = float(fixed.iterations.float().mean())
        result["converged_bcf_fixed"] = float(fixed.converged.float().mean())
        result["decode"] = {k: dec[k] for k in ("T", "A", "Tc", "max_iter", "fixed_widths")}
        result["head_parameters_bcf"] = manifest["head"]["parameters"]
        result["head_parameters_fc_equivalent"] = manifest["head"]["fc_equivalent_parameters"]
    else:
        pred = torch.from_numpy(out).argmax(dim=1)
        result["accuracy_fc"] = float((pred == y).float().mean())
        result["head_parameters_fc"] = manifest["head"]["parameters"]
    if baseline is not None:
        bman = load_manifest(baseline)
        if bman["head"]["kind"] != "fc":
            raise HdsimError(f"baseline {baseline}: expected an FC-head export, got a {bman['head']['kind']} head")
        if bman["model"]["input"]["shape"] != manifest["model"]["input"]["shape"]:
            raise HdsimError(f"baseline {baseline}: input shape {bman['model']['input']['shape']} differs from "
                             f"{manifest['model']['input']['shape']}")
        bout = run_onnx(Path(baseline) / bman["model"]["file"], x, optimize, batch)
        result["accuracy_fc_baseline"] = float((torch.from_numpy(bout).argmax(dim=1) == y).float().mean())
        result["baseline_kind"] = bman["model"]["kind"]
        result["head_parameters_fc"] = bman["head"]["parameters"]
    else:
        result.setdefault("accuracy_fc_baseline", None)
    return result
