"""``hdsim bench deploy``: latency of the deployed pieces, as ratios measured in one run.

On the same inputs (the export's test images, or the sample-photo views for
the ImageNet export), in alternating blocks of calls (see ``BLOCK``) so that
machine load hits every backend alike:

* ``int8_onnx``: the export's ``model.onnx`` in onnxruntime, default
  optimizations (``ORT_ENABLE_ALL``: fused ``QLinearConv`` chains);
* ``float_onnx``: the float ONNX of the same network (``--float-dir`` or,
  by default, exported here from the float reference);
* ``torch_float``: the float network in PyTorch eager mode.

Latency p50 / p95 / mean (ms per call of ``batch`` images) and throughput
(images/s). Then the decode time per image (BCF exports) of the fixed-point
(the runner's: compiled, and the torch model ``FixedBCF`` it is checked against)
and the float decoder on the int8 queries, against the int8 CNN time per image,
both timed as the runner runs them: the CNN of a batch, then its decode,
alternating, so that each stage meets the caches the other leaves it. At batch
1 (p50 per call) and at ``decode_batch`` (mean per call / batch). Ratios:
``int8_over_float_onnx`` and ``int8_over_torch`` (p50 latency),
``decode_over_cnn`` (fixed decode / int8 CNN per image at ``decode_batch``)
and ``decode_over_cnn_batch1``. ``footprint``: the runner's installed size, cold start and
throughput, torch-free vs with torch (:mod:`workflows.footprint`).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hdsim.errors import HdsimError
from hdsim.threads import torch_threads
from hdsim.validation import check_int, check_ints, check_threads
from deploy.runner import DEFAULT_BATCH

__all__ = ["DeployBenchConfig", "run_deploy_bench", "float_reference"]


BLOCK, SETTLE = 20, 2  # calls per backend per round, of which the first SETTLE are not timed
STREAM_PASSES = 3  # passes over the batch-1 stream per decoder; the first is a warm-up
CALL_BY_CALL = 50  # alternating int8 / float ONNX calls of the diagnostic


@dataclass(frozen=True)
class DeployBenchConfig:
    """Options of :func:`run_deploy_bench` (validated by :meth:`validate`)."""

    folder: str
    float_dir: str | None = None
    batch: int = 1
    runs: int = 200
    warmup: int = 20
    threads: int = 2
    decode_batch: int = DEFAULT_BATCH  # the runner's
    decode_queries: int = 1024
    stream_queries: int = 64
    images: int = 256
    profile: bool = False
    footprint: bool = True  # installed size, cold start, throughput: torch-free runner vs with torch

    def validate(self) -> "DeployBenchConfig":
        check_ints(self, ("batch", "runs", "decode_batch", "decode_queries", "stream_queries", "images"))
        check_threads("threads", self.threads)
        check_int("warmup", self.warmup, minimum=0)
        return self


def _stats(times: list[float], batch: int) -> dict:
    t = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(t, 50)), 4), "p95_ms": round(float(np.percentile(t, 95)), 4),
            "mean_ms": round(float(t.mean()), 4), "images_per_s": round(batch * 1e3 / float(t.mean()), 1),
            "calls": len(times)}


def float_reference(manifest: dict):
    """The float PyTorch network of an export: ``(module, description)``.

    ImageNet exports: torchvision's weights; checkpoint exports: the float
    weights of ``manifest['source']['checkpoint']`` (a QAT checkpoint's float
    twin), which must still exist.
    """
    from export.onnx_export import ExportNet

    src = manifest.get("source") or {}
    if src.get("pretrained") == "imagenet":
        from export.imagenet import imagenet_head, load_imagenet_float

        return ExportNet(load_imagenet_float(), imagenet_head()).eval(), "torchvision ImageNet MobileNetV2 weights"
    from export.train import load_export_checkpoint, restore_model

    state = load_export_checkpoint(manifest, "bench deploy (the float reference; or pass --float-dir for the "
                                             "float ONNX)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, head, model = restore_model(state, quant=False)
    return ExportNet(model, head).eval(), f"float weights of {src.get('checkpoint')}"


def _inputs(manifest: dict, n: int) -> tuple[torch.Tensor, str]:
    """Network inputs for the bench: the export's test images, or the sample-photo views (ImageNet)."""
    if (manifest.get("source") or {}).get("pretrained") == "imagenet":
        from export.imagenet import checked_views

        return checked_views()[1], "scikit-learn sample photos: 14 views"
    from export.evaluate import dataset_from_manifest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, _ = dataset_from_manifest(manifest).test_set()
    return x[:n], f"first {min(n, x.shape[0])} test images of the export's dataset"


def run_deploy_bench(cfg: DeployBenchConfig, progress: bool = False) -> dict:
    """Run the deployment benchmark (see the module docstring); returns a JSON-ready dict."""
    from hdsim.export_folder import ExportFolder
    from export.onnx_export import export_onnx, ort_optimized_ops, ort_session

    cfg = cfg.validate()
    folder = Path(cfg.folder)
    manifest = ExportFolder(folder).manifest
    if manifest["model"]["kind"] != "int8-qcdq":
        raise HdsimError(f"bench deploy: {folder} holds a {manifest['model']['kind']} model; give the int8 export")
    x, inputs_desc = _inputs(manifest, cfg.images)
    net, float_desc = float_reference(manifest)
    result: dict = {"export": str(folder), "threads": cfg.threads, "batch": cfg.batch, "inputs": inputs_desc,
                    "input_shape": list(x.shape[1:]), "float_reference": float_desc,
                    "onnxruntime": "ORT_ENABLE_ALL (default optimizations), CPUExecutionProvider"}
    with contextlib.ExitStack() as stack:
        if cfg.float_dir is not None:
            fman = ExportFolder(cfg.float_dir).manifest
            if fman["model"]["kind"] != "float32" or fman["model"]["input"] != manifest["model"]["input"]:
                raise HdsimError(f"float-dir {cfg.float_dir}: not a float export of the same input "
                                 f"({fman['model']['kind']}, {fman['model']['input']['shape']})")
            src, fsrc = manifest.get("source") or {}, fman.get("source") or {}
            same = (src.get("pretrained"), src.get("checkpoint")) == (fsrc.get("pretrained"), fsrc.get("checkpoint"))
            if not same or fman.get("backbone") != manifest.get("backbone") or fman.get("head") != manifest.get("head"):
                raise HdsimError(f"float-dir {cfg.float_dir}: not the float export of the same network (source "
                                 f"{fsrc.get('pretrained') or fsrc.get('checkpoint')} vs "
                                 f"{src.get('pretrained') or src.get('checkpoint')}, or another backbone/head)")
            result["float_onnx_reference"] = f"float export {cfg.float_dir}"
            float_path = Path(cfg.float_dir) / fman["model"]["file"]
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            float_path = tmp / "float.onnx"
            export_onnx(net, x[:1], float_path, quantized=False)
        sessions = {"int8_onnx": ort_session(folder / manifest["model"]["file"], optimize=True, threads=cfg.threads),
                    "float_onnx": ort_session(float_path, optimize=True, threads=cfg.threads)}
        stack.enter_context(torch_threads(cfg.threads))
        stack.enter_context(torch.inference_mode())
        xb = [x[i % x.shape[0]: i % x.shape[0] + cfg.batch] for i in range(0, x.shape[0], cfg.batch)]
        xb = [b for b in xb if b.shape[0] == cfg.batch] or [x[:cfg.batch].repeat(
            (cfg.batch + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:cfg.batch]]
        xn = [b.numpy() for b in xb]
        calls = {
            "int8_onnx": lambda i: sessions["int8_onnx"].run(None, {"image": xn[i % len(xn)]}),
            "float_onnx": lambda i: sessions["float_onnx"].run(None, {"image": xn[i % len(xn)]}),
            "torch_float": lambda i: net(xb[i % len(xb)]),
        }
        times: dict[str, list[float]] = {k: [] for k in calls}
        for name, fn in calls.items():
            for i in range(cfg.warmup):
                fn(i)
        # Blocks of BLOCK calls per backend, alternating: a slow phase of the machine hits every
        # backend alike, while a backend's idle thread pool (onnxruntime's and OpenMP's threads
        # spin for a while after a call) does not slow the next backend's timed calls: the
        # first SETTLE calls of each block are not timed. Call-by-call interleaving would
        # measure that spinning instead (it inflated the float ONNX time 2.3x here).
        rounds = range((cfg.runs + BLOCK - SETTLE - 1) // (BLOCK - SETTLE))
        if progress:
            from tqdm import tqdm

            rounds = tqdm(rounds, desc="bench deploy", unit="round", leave=False)
        for r in rounds:
            for name, fn in calls.items():
                for i in range(BLOCK):
                    t0 = time.perf_counter()
                    fn(r * BLOCK + i)
                    if i >= SETTLE and len(times[name]) < cfg.runs:
                        times[name].append(time.perf_counter() - t0)
        # Diagnostic: the two ONNX sessions called alternately, call by call. Each call then
        # starts while the other session's pool still spins, so both slow down, unevenly;
        # reported to show why the ratio above is taken from blocks, not to be quoted.
        by_call: dict[str, list[float]] = {"int8_onnx": [], "float_onnx": []}
        for i in range(CALL_BY_CALL):
            for name in by_call:
                t0 = time.perf_counter()
                calls[name](i)
                by_call[name].append(time.perf_counter() - t0)
        if cfg.profile:
            from export.onnx_export import ort_profile

            result["profile_ms_per_call"] = {
                "int8_onnx": ort_profile(folder / manifest["model"]["file"], xn[0], threads=cfg.threads),
                "float_onnx": ort_profile(float_path, xn[0], threads=cfg.threads)}
    lat = {k: _stats(v, cfg.batch) for k, v in times.items()}
    result["latency"] = lat
    p50 = {k: float(np.median(v)) * 1e3 for k, v in by_call.items()}
    result["call_by_call_diagnostic"] = {"int8_onnx_p50_ms": round(p50["int8_onnx"], 4),
                                         "float_onnx_p50_ms": round(p50["float_onnx"], 4),
                                         "int8_over_float_onnx": round(p50["int8_onnx"] / p50["float_onnx"], 4)}
    if cfg.profile:
        prof = result["profile_ms_per_call"]
        convs = prof["int8_onnx"]["depthwise_conv"] + prof["int8_onnx"]["other_conv"]
        # what int8 / float could reach if every non-convolution op of the int8 graph were free
        result["profile_ms_per_call"]["int8_convs_over_float_total"] = round(convs / prof["float_onnx"]["total"], 4)
    result["int8_over_float_onnx"] = round(lat["int8_onnx"]["p50_ms"] / lat["float_onnx"]["p50_ms"], 4)
    result["int8_over_torch"] = round(lat["int8_onnx"]["p50_ms"] / lat["torch_float"]["p50_ms"], 4)
    ops = ort_optimized_ops(folder / manifest["model"]["file"])
    result["int8_graph_ops"] = {k: ops[k] for k in ("QLinearConv", "QLinearAdd", "QGemm", "Conv", "FusedConv", "Add",
                                                    "QuantizeLinear", "DequantizeLinear") if k in ops}
    if manifest["head"]["kind"] != "fc":
        result.update(_decode_bench(folder, manifest, x, cfg))
    if cfg.footprint:
        result["footprint"] = _footprint(folder, x, cfg, progress)
    return result


def _footprint(folder: Path, x: torch.Tensor, cfg: DeployBenchConfig, progress: bool) -> dict:
    """:func:`workflows.footprint.footprint` on the bench's inputs written as PNG files (the runner reads files)."""
    from PIL import Image

    from hdsim.export_folder import ExportFolder
    from workflows.footprint import footprint

    px = ExportFolder(folder).preprocessing.denormalize(x.numpy())  # the exact 8-bit pixels of the inputs
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, a in enumerate(px):
            a = a.transpose(1, 2, 0)
            files.append(str(Path(tmp) / f"{i:05d}.png"))
            Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(files[-1])
        if progress:
            print(f"bench deploy: footprint (cold starts, throughput on {len(files)} images)", file=sys.stderr)
        return footprint(folder, files, threads=cfg.threads, batch=DEFAULT_BATCH)


def _decode_bench(folder: Path, manifest: dict, x: torch.Tensor, cfg: DeployBenchConfig) -> dict:
    """Decode time per image at batch 1 and at ``decode_batch``, and the int8 CNN's at both: BCF ``fixed``
    (the runner's default), ``fixed_torch`` and ``float``; sparse resonator ``fixed`` (its NumPy sparse
    resonator, the runner's default) and ``bruteforce``."""
    from deploy.runner import Runner, RunnerConfig

    out: dict = {"decode_batch": cfg.decode_batch}
    n = min(cfg.decode_queries, x.shape[0])
    decoders = ((("fixed", "fixed", True), ("fixed_torch", "fixed", False), ("float", "float", True))
                if manifest["head"]["kind"] == "bcf" else (("fixed", "fixed", True), ("bruteforce", "bruteforce", True)))
    runners = {name: Runner(folder, RunnerConfig(decode=d, threads=cfg.threads, batch=cfg.decode_batch,
                                                 compiled=compiled))
               for name, d, compiled in decoders}
    out["decoders"] = {name: r.decoder_name for name, r in runners.items()}
    r = runners["fixed"]
    with torch_threads(1):  # tiny integer tensors: one thread, no OpenMP spin against onnxruntime
        xn = x[:n].numpy()
        q = r.cnn(xn)  # the ONNX output, as the runner hands it to the decoder

        def stream(run, b: int, count: int, passes: int) -> tuple[list[float], list[float]]:
            """The runner's loop: the CNN of ``b`` images, then their decode, alternating, so that each
            stage meets the caches the other leaves; seconds per call (first pass: warm-up)."""
            cnn_t, dec_t = [], []
            for rep in range(passes):
                for i in range(0, count - b + 1, b):
                    t0 = time.perf_counter()
                    r.cnn(xn[i:i + b])
                    t1 = time.perf_counter()
                    run.decode(q[i:i + b])
                    t2 = time.perf_counter()
                    if rep > 0:
                        cnn_t.append(t1 - t0)
                        dec_t.append(t2 - t1)
            return cnn_t, dec_t

        k = min(cfg.stream_queries, n)
        b = min(cfg.decode_batch, n)
        passes_b = 1 + max(1, cfg.decode_queries // max(n - n % b, 1))
        cnn_1: list[float] = []
        cnn_b: list[float] = []
        for name, run in runners.items():
            c1, d1 = stream(run, 1, k, STREAM_PASSES)
            cb, db = stream(run, b, n, passes_b)
            cnn_1 += c1
            cnn_b += cb
            out[f"decode_{name}_ms_per_image"] = {"batch1": round(float(np.median(d1)) * 1e3, 4),
                                                  "batched": round(float(np.mean(db)) / b * 1e3, 4)}
        out["cnn_int8_ms_per_image"] = {"batch1": round(float(np.median(cnn_1)) * 1e3, 4),
                                        "batched": round(float(np.mean(cnn_b)) / b * 1e3, 4)}
        out["decode_queries"] = (passes_b - 1) * (n - n % b)
    fixed = out["decode_fixed_ms_per_image"]
    out["decode_over_cnn"] = round(fixed["batched"] / out["cnn_int8_ms_per_image"]["batched"], 4)
    out["decode_over_cnn_batch1"] = round(fixed["batch1"] / out["cnn_int8_ms_per_image"]["batch1"], 4)
    return out
