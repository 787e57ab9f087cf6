"""ONNX export: int8 QCDQ (Brevitas) or float, plus codebooks and a manifest.

``export_checkpoint`` writes, into one folder:

* ``model.onnx``: opset 13, checked with ``onnx.checker``. Int8: QuantizeLinear /
  Clip / DequantizeLinear around float ops (QCDQ), BN merged into the convolutions.
  Input ``image`` ``(N, C, H, W)``; output ``query`` ``(N, D)`` (BCF head: the
  per-block softmax, a GSBC) or ``logits`` ``(N, classes)`` (FC head).
* ``codebooks.npz`` (BCF and sparse-resonator heads): ``X0..X{F-1}`` ``(M_f, B)`` int64
  offset-form codebooks, ``L``, ``class_digits`` ``(K, F)``, ``class_targets`` ``(K, B)``.
  The sparse-resonator head's output ``query`` is its pooled features ``(N, D)``; the
  decoder thins each of the ``B`` segments to its argmax.
* ``manifest.json``: written through :mod:`hdsim.export_folder` (:func:`build_manifest`; ``docs/export_format.md``).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hdsim.calibrate import CalibrationConfig
from hdsim import export_folder as export_format
from hdsim.errors import HdsimError
from hdsim.export_folder import (CODEBOOKS_FILE, MANIFEST_FORMAT, MODEL_FILE, ort_session, session_options as
                                 _session_options, sha256_file, write_manifest)
from hdsim.validation import output_dir
from export.heads import BCFHead, SparseResonatorHead, blockwise_softmax

__all__ = ["ExportNet", "export_checkpoint", "export_onnx", "sha256_file", "ort_session", "ort_optimized_ops",
           "decode_config", "sparse_decode_config", "calibrate_export_decode", "run_onnx",
           "OPSET"]

ACTIVATION_SCHEMES = {
    "po2": "8 bits per tensor, power-of-two scales, all uint8: zero point 0 and range [0, 255/64] after ReLU6, "
           "zero point 128 (the int8 grid) for signed ranges (input, bottlenecks, residual stream, logits); "
           "one shared quantizer per stage around residual adds; calibrated: MSE (signed ranges), "
           "99.999th percentile (after ReLU6, logits), then bias correction",
    "float": "int8 per tensor, float scales: uint8 asymmetric (learned zero point) after ReLU6, signed int8 "
             "elsewhere; one shared quantizer per stage around residual adds",
}
OPSET = 13


class ExportNet(nn.Module):
    """The deployed function: image -> query (BCF: per-block softmax of the projection; sparse
    resonator: the pooled features) or logits (FC)."""

    def __init__(self, model: nn.Module, head) -> None:
        super().__init__()
        self.model = model
        self.bcf = isinstance(head, BCFHead)
        self.coded = isinstance(head, (BCFHead, SparseResonatorHead))
        self.B = head.cfg.B
        self.beta = float(head.cfg.beta)

    @property
    def output_name(self) -> str:
        return "query" if self.coded else "logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return blockwise_softmax(z, self.B, self.beta) if self.bcf else z


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise HdsimError(f"{module}: not installed ({e}); install the 'export' extra") from None


def ort_optimized_ops(path: str | Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime runs with default optimizations (``ORT_ENABLE_ALL``, CPU).

    ``QLinearConv`` counts the convolutions fused into int8 kernels; a ``Conv`` or
    ``FusedConv`` left in an int8 model runs in float between DequantizeLinear and
    QuantizeLinear.
    """
    import collections
    import tempfile

    ort = _need("onnxruntime")
    onnx = _need("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort.InferenceSession(str(path), _session_options(True, optimized_path=optimized),
                             providers=["CPUExecutionProvider"])
        graph = onnx.load(optimized).graph
    return dict(sorted(collections.Counter(n.op_type for n in graph.node).items()))


CONV_OPS = ("Conv", "FusedConv", "NhwcFusedConv", "QLinearConv")


def ort_profile(path: str | Path, x: np.ndarray, *, threads: int, runs: int = 50, warmup: int = 10) -> dict:
    """onnxruntime's own kernel times of one model (``ORT_ENABLE_ALL``, CPU), in ms per call
    (mean over ``runs`` calls after ``warmup`` untimed ones).

    Splits the graph onnxruntime runs into depthwise convolutions (``group > 1``),
    the other convolutions, and every other op (by op type): where a model's time
    goes, from the runtime's profiler rather than from outside timers. The profiler
    adds a little per node, so the totals run above the bench's latencies.

    Shapes:
        x: one input batch for the model's ``image`` input.
    """
    import collections
    import tempfile

    ort = _need("onnxruntime")
    onnx = _need("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        so = _session_options(True, threads, optimized_path=optimized)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            sess.run(None, {"image": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
        groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1)
                  for n in onnx.load(optimized).graph.node}
    # the profile covers every run since the session started: keep the kernels of the last `runs`
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    since, calls = starts[warmup], runs
    by_op: collections.Counter = collections.Counter()
    split = {"depthwise_conv": 0.0, "other_conv": 0.0, "other_ops": 0.0}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < since:
            continue
        op, us = e["args"]["op_name"], float(e["dur"])
        by_op[op] += us
        if op in CONV_OPS:
            split["depthwise_conv" if groups.get(e["name"][:-len("_kernel_time")], 1) > 1 else "other_conv"] += us
        else:
            split["other_ops"] += us
    out = {k: round(v / calls / 1e3, 4) for k, v in split.items()}
    out["total"] = round(sum(split.values()) / calls / 1e3, 4)
    out["by_op"] = {k: round(v / calls / 1e3, 4) for k, v in by_op.most_common()}
    return out


def export_onnx(net: ExportNet, example: torch.Tensor, path: Path, *, quantized: bool,
                constant_folding: bool = True) -> None:
    """Export ``net`` (eval mode) to ``path`` at opset 13 and run ``onnx.checker`` on the file.

    A quantized net is exported from a copy whose stem convolution takes a multiple of 4
    input channels (:meth:`export.quant.QuantMobileNetV2.pad_input_channels`: the graph
    pads the input with zero channels; same function), so that onnxruntime runs it with
    its int8 direct-convolution kernel. ``constant_folding=False`` keeps computed weights as their
    inputs (:mod:`export.stochastic`: integer initializers times scales, not a folded float tensor).
    """
    onnx = _need("onnx")
    if quantized and hasattr(net.model, "pad_input_channels"):
        net = copy.deepcopy(net)
        net.model.pad_input_channels(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(input_names=["image"], output_names=[net.output_name], opset_version=OPSET,
                  dynamic_axes={"image": {0: "N"}, net.output_name: {0: "N"}})
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if quantized:
            from brevitas.export import export_onnx_qcdq

            export_onnx_qcdq(net, args=example, export_path=str(path), dynamo=False, **kwargs)
        else:
            torch.onnx.export(net, (example,), str(path), dynamo=False, do_constant_folding=constant_folding,
                              **kwargs)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise HdsimError(f"onnx export {path}: the checker rejects the model ({str(e).splitlines()[0]})") from None


def decode_config(head: BCFHead, T: float | None = None, A: int | None = None, widths=None,
                  Tc: float | None = None, max_iter: int | None = None) -> dict:
    """BCF decode parameters for the manifest: tuned ``(T, A)`` (published table, nearest ``M``) unless
    given; ``Tc`` the convergence threshold (``None``: the BCF default, 0.9 for ``linf``); ``max_iter``
    (``None``: the SPEC default)."""
    from hdsim.factorizers.bcf import BCFConfig
    from hdsim.fixed import FixedWidths
    from hdsim.tuned import resolve_TA

    sizes = head.product_map.sizes
    T, A, entry = resolve_TA(len(sizes), max(sizes), T, A)
    source = "given" if entry is None else (
        f"published tuned table, nearest M (rows {entry.M_min}-{entry.M_max}); tuned at D=512, B=4")
    widths = widths or FixedWidths()
    cfg = BCFConfig(T=float(T), A=int(A), Tc=None if Tc is None else float(Tc),
                    max_iter=None if max_iter is None else int(max_iter))
    cfg.validate(head.cfg.B)
    return {"factorizer": "bcf", "similarity": cfg.similarity, "T": cfg.T, "A": cfg.A,
            "Tc": cfg.resolved_Tc(head.cfg.B), "max_iter": cfg.resolved_max_iter(sizes), "T_A_source": source,
            "fixed_widths": widths.as_dict(), "sampler": "hdsim.lfsr.LFSRSampler", "lfsr_seed": 1,
            "query_format": f"Q0.{widths.query}: per block, round_half_up(v * 2^{widths.query} / sum(v)), "
                            "v = floor(q * 2^(31 - e)), e = binary exponent of the block maximum "
                            "(hdsim.fixed.quantize_query)"}


def sparse_decode_config(head: SparseResonatorHead, a: int | None = None, max_iter: int | None = None,
                         seed: int = 0, Tc: float | None = None) -> dict:
    """Sparse-resonator decode parameters for the manifest (SPEC section 4; defaults: ``a`` 6 or
    ``M`` if smaller, ``max_iter`` the seed's ``max(2000, prod M / 1000)``, ``Tc`` 0: the seed's
    stopping rule; restarts on, which act only with ``Tc > 0``)."""
    from hdsim.factorizers.sparse_resonator import SparseResonatorConfig

    sizes = head.product_map.sizes
    cfg = SparseResonatorConfig(a=int(a) if a is not None else min(6, max(sizes)), max_iter=max_iter,
                                Tc=0.0 if Tc is None else float(Tc), restarts=True)
    cfg.validate()
    return {"factorizer": "sparse-resonator", "a": cfg.a, "max_iter": cfg.resolved_max_iter(sizes), "Tc": cfg.Tc,
            "restarts": cfg.restarts, "seed": int(seed), "ids": "hdsim.sparse_resonator_numpy.content_ids (per query)",
            "query_format": f"offsets (N, B): per segment of L={head.codebooks.L}, the argmax of the pooled "
                            "features (lowest index on ties)",
            "draws": "counter-based: hdsim.hashing (seed, query id, event); hdsim.sparse_resonator_numpy"}


def _check_decode_options(head, **given) -> None:
    """Decode options that the head does not have are refused, not ignored."""
    own = {"bcf": ("T", "A", "Tc", "max_iter", "widths"), "sparse-resonator": ("a", "max_iter", "Tc"),
           "fc": ()}[head.kind]
    for name, value in given.items():
        if value is not None and name not in own:
            raise HdsimError(f"{name}: the {head.kind} head has no such decode setting"
                             f"{' (it decodes by argmax)' if head.kind == 'fc' else ''}")


def calibrate_export_decode(model_path: Path, data, head, decode: dict, given: dict, calibration, widths) -> dict:
    """Search the decode settings on the exported model's validation queries and write them into
    ``decode`` (in place); returns the record for ``decode.calibration``."""
    if calibration is None:
        return {"method": "none", "reason": "calibration disabled (--no-calibrate)"}
    if not getattr(data, "has_validation", False):
        return {"method": "none", "reason": "the checkpoint's data has no validation split (trained before "
                                             "val_fraction existed, or with val_fraction 0)"}
    from hdsim.calibrate import calibrate_bcf, calibrate_sparse_resonator

    xv, yv = data.val_set()
    q = run_onnx(model_path, xv)
    classes_of = head.product_map.classes
    cb = head.codebooks
    if isinstance(head, BCFHead):
        from hdsim.fixed import FixedWidths

        default = {k: decode[k] for k in ("T", "A", "Tc", "max_iter")}
        res = calibrate_bcf(q, yv.numpy(), classes_of, cb, widths or FixedWidths(), calibration, default=default,
                            fixed=given, lfsr_seed=int(decode["lfsr_seed"]))
        decode["T_A_source"] = "calibrated on the validation queries (hdsim.calibrate)"
    else:
        from hdsim.sparse_resonator_numpy import thin_queries

        default = {k: decode[k] for k in ("a", "max_iter", "Tc")}
        res = calibrate_sparse_resonator(thin_queries(q, cb.B), yv.numpy(), classes_of,
                                         [x.numpy() for x in cb.indices], cb.L, calibration, default=default,
                                         fixed=given, seed=int(decode["seed"]))
    decode.update(res["settings"])
    return {"method": "optuna-tpe", "validation_images": int(xv.shape[0]),
            "validation": "composed from digit images held out of training and test (val_fraction)",
            "default": default} | {k: v for k, v in res.items() if k != "settings"}


def run_onnx(path: Path, x: torch.Tensor, optimize: bool = True, batch: int = 256) -> np.ndarray:
    """A model's output on ``x``, ``batch`` images per onnxruntime call (``optimize``: default graph
    optimizations, as the runner runs it; ``False``: ``ORT_DISABLE_ALL``, the parity setting)."""
    sess = ort_session(path, optimize=optimize)
    return np.concatenate([sess.run(None, {"image": x[i:i + batch].numpy()})[0] for i in range(0, x.shape[0], batch)])


def write_codebooks(head: BCFHead | SparseResonatorHead, path: Path) -> str:
    """The head's codebooks through the format's writer (:func:`hdsim.export_folder.write_codebooks`); its sha256."""
    pm = head.product_map
    return export_format.write_codebooks(path, [x.cpu().numpy() for x in head.codebooks.indices], head.codebooks.L,
                                         pm.digits(np.arange(pm.num_classes)), head.class_targets.cpu().numpy())


@torch.no_grad()
def parity_check(net: ExportNet, path: Path, x: torch.Tensor, head) -> dict:
    """onnxruntime (``ORT_DISABLE_ALL`` and default optimizations) vs the PyTorch/Brevitas net on ``x``."""
    ref = net(x).numpy()
    out = {"images": int(x.shape[0])}
    for name, opt in (("ort_disable_all", False), ("ort_enable_all", True)):
        got = ort_session(path, optimize=opt).run(None, {"image": x.numpy()})[0]
        out[f"max_abs_diff_{name}"] = float(np.abs(got - ref).max())
        out[f"same_classes_{name}"] = bool((head.predict(torch.from_numpy(_logits_like(got, net)))
                                            == head.predict(torch.from_numpy(_logits_like(ref, net)))).all())
    return out


def _logits_like(output: np.ndarray, net: ExportNet) -> np.ndarray:
    """Head ``predict`` takes logits; a BCF query is log-softmax-equivalent (argmax and softmax invariant)."""
    if net.bcf:
        return np.log(np.clip(output, 1e-30, None)) / net.beta
    return output


def _activation_fields(cfg_dict: dict) -> dict:
    """The manifest's description of the backbone activation (descriptive; a checkpoint from before
    the option is ``relu6``). WTA (seed ``001_*``): the graph's hard WTA ops, ``docs/export.md``."""
    if cfg_dict.get("activation", "relu6") != "wta":
        return {"activation": "relu6", "wta_group": None}
    layers = cfg_dict.get("wta_layers", "all")
    return {"activation": "wta", "wta_group": int(cfg_dict["wta_group"]), "wta_layers": layers,
            "wta": f"hard blockwise winner-take-all in place of the ReLU6 of {layers} (export.mobilenet.WTA_LAYERS), "
                   "lowest channel wins ties: Relu, Reshape (N, C/l, l, H, W), ArgMax(axis=2, select_last_index=0), "
                   "Equal(range(l)), Cast, Mul, Reshape"}


def build_manifest(*, model_path: Path, quantized: bool, scales: str | None, data, head, cfg_dict: dict,
                   features: int, net: ExportNet, decode: dict | None, checks: dict, source: dict,
                   class_names: list[str] | None, extra: dict | None = None) -> dict:
    from export.train import versions

    pp = data.preprocessing if hasattr(data, "preprocessing") else data
    bcf = isinstance(head, BCFHead)
    coded = isinstance(head, (BCFHead, SparseResonatorHead))
    m = {
        "format": MANIFEST_FORMAT,
        "model": {"file": model_path.name, "sha256": sha256_file(model_path), "bytes": model_path.stat().st_size,
                  "kind": "int8-qcdq" if quantized else "float32", "opset": OPSET,
                  "quantization": ({"weights": "int8 symmetric per output channel (narrow range)",
                                    "activations": ACTIVATION_SCHEMES.get(scales, ""),
                                    "bias": "int32 at input scale x weight scale",
                                    "scales": scales, "batchnorm": "merged into the convolutions"}
                                   if quantized else None),
                  "input": {"name": "image", "shape": ["N", pp.channels, pp.height, pp.width], "dtype": "float32"},
                  "output": {"name": net.output_name, "shape": ["N", head.cfg.D if coded else head.outputs],
                             "dtype": "float32",
                             "meaning": (f"GSBC query: softmax(beta * z) over each of B={head.cfg.B} blocks"
                                         if bcf else
                                         f"pooled features; the query is each of B={head.cfg.B} segments' argmax"
                                         if coded else "class logits (dequantized int8)" if quantized
                                         else "class logits")}},
        "preprocessing": pp.as_dict(),
        "backbone": {"arch": "mobilenet_v2", "width": cfg_dict.get("width"), "features": features,
                     "last_channel": cfg_dict.get("last_channel") or None,
                     "in_channels": pp.channels, **_activation_fields(cfg_dict)},
        "head": {"kind": head.kind, "parameters": head.parameters_count(features),
                 "fc_equivalent_parameters": features * head.product_map.num_classes + head.product_map.num_classes},
        "classes": head.product_map.as_dict(),
        "dataset": data.describe() if hasattr(data, "describe") else None,
        "training": cfg_dict,
        "decode": decode,
        "checks": checks,
        "source": source,
        "versions": versions(),
    }
    if class_names is not None:
        m["classes"]["names"] = class_names
    if coded:
        cb = head.codebooks
        m["head"].update({"D": cb.D, "B": cb.B, "L": cb.L, "F": cb.F, "M": list(cb.sizes),
                          "codebook_seed": head.cfg.codebook_seed,
                          "codebooks": {"file": CODEBOOKS_FILE, "generator": "hdsim.codes.random_codebooks"
                                        f"(F={cb.F}, M={list(cb.sizes)}, D={cb.D}, B={cb.B}, "
                                        f"seed={head.cfg.codebook_seed})"}})
        if bcf:
            m["head"]["beta"] = head.cfg.beta
        else:
            m["head"].update({"pool_weights": head.cfg.pool_size, "cosine_scale": head.cfg.cosine_scale,
                              "parameters_breakdown": {"pool_weights": head.cfg.pool_size,
                                                       "codebook_entries": sum(cb.sizes) * cb.B}})
    if extra:
        m.update(extra)
    return m


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, float_model: bool = False, T: float | None = None,
                      A: int | None = None, widths=None, parity_images: int = 32, Tc: float | None = None,
                      max_iter: int | None = None, a: int | None = None,
                      calibration: CalibrationConfig | None = CalibrationConfig()) -> dict:
    """Export a training checkpoint (float or QAT) to ``out``; returns the manifest.

    A float-phase checkpoint exported as int8 is quantized post-training
    (calibration on training batches). ``float_model=True`` exports the float
    net with the checkpoint's weights (a QAT checkpoint's float weights).

    Decode settings: with ``calibration`` (a :class:`hdsim.calibrate.CalibrationConfig`, the default)
    and a checkpoint whose data has a validation split, the BCF's ``(T, A, Tc, max_iter)``
    or the sparse resonator's ``(a, max_iter, Tc)`` are searched on the exported model's
    validation queries (:mod:`hdsim.calibrate`); a value given here is held fixed. Without
    calibration (``None``, or no validation split) they are the given values or the
    defaults (published ``(T, A)`` table, ``Tc`` 0.9, SPEC ``max_iter``), and the
    manifest's ``decode.calibration`` says why.
    """
    from export.quant import calibrate, merge_batchnorm
    from export.train import calibration_batches, load_checkpoint, restore_model

    state = load_checkpoint(checkpoint)
    quantized = not float_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg, data, head, model = restore_model(state, quant=quantized)
        _check_decode_options(head, T=T, A=A, Tc=Tc, a=a, max_iter=max_iter, widths=widths)
        out = output_dir("out", out)  # after the checkpoint proved usable: a failed export leaves no folder
        ptq = quantized and state["phase"] == "float"
        if quantized:
            merge_batchnorm(model)
            if ptq:
                calibrate(model, calibration_batches(data, cfg), bias_correction=True)
            model.eval()
    net = ExportNet(model, head).eval()
    xt, yt = data.test_set()
    example = xt[:1]
    model_path = out / MODEL_FILE
    export_onnx(net, example, model_path, quantized=quantized)
    checks = {"onnx_checker": "passed"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks["parity"] = parity_check(net, model_path, xt[:parity_images], head)
    decode = None
    if isinstance(head, (BCFHead, SparseResonatorHead)):
        checks["codebooks_sha256"] = write_codebooks(head, out / CODEBOOKS_FILE)
        if isinstance(head, BCFHead):
            decode = decode_config(head, T, A, widths, Tc, max_iter)
            given = {k: v for k, v in (("T", T), ("A", A), ("Tc", Tc), ("max_iter", max_iter)) if v is not None}
        else:
            decode = sparse_decode_config(head, a, max_iter, Tc=Tc)
            given = {k: v for k, v in (("a", a), ("max_iter", max_iter), ("Tc", Tc)) if v is not None}
        decode["calibration"] = calibrate_export_decode(model_path, data, head, decode, given, calibration, widths)
    features = model.backbone_config.features
    manifest = build_manifest(
        model_path=model_path, quantized=quantized, scales=getattr(model, "scales", None) if quantized else None,
        data=data, head=head, cfg_dict=state["config"], features=features, net=net, decode=decode, checks=checks,
        # absolute: the manifest is read from other folders (hdsim bench deploy's float reference)
        source={"checkpoint": str(Path(checkpoint).resolve()), "phase": state["phase"], "epoch": state["epoch"],
                "post_training_quantization": ptq},
        class_names=getattr(data, "classes", None))
    write_manifest(out, manifest)  # checked by the reader's own rules before it is written
    return manifest
