"""Stochastic scalar products (seed 004) as an evaluation mode of a trained network.

Every convolution and linear layer of the float network (batch norm folded into the
convolutions first) has each output's weight row replaced by ``n = ceil(f * fan_in)`` samples
(:func:`hdsim.stochastic_products.sample_weights`: jittered equidistant points through the CDF
of ``|w|``): integer weights ``q = sign(w) * counts`` and one scale ``||w_row||_1 / n`` per
output. The sampled network is exported to ONNX holding those integers (int8 initializers, int16
where a count exceeds 127) and the per-output scales (``Cast`` + ``Mul`` in the graph, which
onnxruntime folds once at load), and the export's test images are classified through it with
the export's own decode (:func:`export.evaluate.score_outputs`). The full network is the same
float network with its exact weights, exported and scored the same way in the same run.

``min_fan_in`` keeps the layers of a smaller fan-in exact (the depthwise 3x3 convolutions have 9
weights per row: ``f = 0.25`` leaves them 3 samples). ``f = 1`` still samples (``n`` = the fan-in: a row's counts vary around ``n |w_i| / ||w||_1``), it
is not the full network. Every layer's draws come from ``numpy.random.default_rng([seed, layer])``.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hdsim.stochastic_products import check_fraction, sample_weights, samples_for_fraction

__all__ = ["SampledConv2d", "SampledLinear", "fold_batchnorm", "stochastic_network", "evaluate_stochastic",
           "stochastic_sweep", "sample_dense", "sampled_layers", "StochasticTraining"]


def sample_dense(w: torch.Tensor, n: int, u: torch.Tensor) -> torch.Tensor:
    """The sampled estimate ``q * ||w_row||_1 / n`` of every row of ``w``, in torch, from given uniforms ``u``.

    The same draws as :func:`hdsim.stochastic_products.sample_weights` (jittered equidistant
    points ``xi_j = (j + u_j) / n`` through the CDF of ``|w|``; the last nonzero weight takes a
    point that rounds up to 1): given that function's uniforms (``rng.random((rows, n))``, its
    first and only draw) it returns the same counts, in float64 the same estimate (tested).
    Used by :class:`StochasticTraining` on every training step.

    Shapes:
        w: ``(rows, m)``; u: ``(rows, n)`` in ``[0, 1)``; returns ``(rows, m)``, dtype of ``w``
    """
    a = w.abs()
    norm = a.sum(dim=1)
    cdf = torch.cumsum(a, dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm))[:, None]
    cdf[:, -1] = 1.0
    xi = (torch.arange(n, dtype=w.dtype, device=w.device)[None, :] + u.to(w.dtype)) / n
    idx = torch.searchsorted(cdf.contiguous(), xi.contiguous(), right=True)
    positions = torch.arange(w.shape[1], device=w.device)
    last = torch.where(a > 0, positions, torch.zeros_like(positions)).amax(dim=1)  # a zero row: never read
    idx = torch.minimum(idx, last[:, None])
    counts = torch.zeros_like(w).scatter_add_(1, idx, torch.ones_like(xi))
    return torch.sign(w) * counts * (norm / n)[:, None]


def sampled_layers(model: nn.Module, min_fan_in: int = 1) -> list[tuple[str, nn.Module]]:
    """``(parameter name of the weight, module)`` of every ``Conv2d`` / ``Linear`` (Brevitas' quantized twins
    included: they subclass them) whose fan-in is at least ``min_fan_in``, in module order — the layers
    :func:`stochastic_network` samples."""
    return [(f"{name}.weight" if name else "weight", m) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight[0].numel() >= min_fan_in]


class StochasticTraining:
    """Train through stochastic scalar products: every step runs the network with freshly sampled weights.

    On each call the weight ``w`` of every sampled layer (:func:`sampled_layers`) is replaced, for
    that forward pass only, by ``w + (s(w) - w).detach()`` with ``s(w)`` its sampled estimate at
    ``fraction`` (``n = ceil(f * fan_in)`` draws per output row, :func:`sample_dense`): the forward
    sees the integer-count weights the evaluation will use, the gradient reaches ``w`` unchanged
    (straight-through). Sampling a row before its batch norm is sampling the folded row: a row
    scaled by ``c`` samples to ``c`` times the same counts-times-scale, so the network learns the
    noise it meets after :func:`fold_batchnorm`. The draws of step ``(epoch, i)`` come from a
    ``torch.Generator`` seeded with ``(seed, epoch, i)``: a run, resumed or not, repeats them.
    """

    def __init__(self, fraction: float, seed: int = 0, min_fan_in: int = 1) -> None:
        self.fraction = check_fraction(fraction)
        self.seed = int(seed)
        self.min_fan_in = int(min_fan_in)

    def sampled_parameters(self, model: nn.Module, epoch: int, step: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_003 + step)
        out = {}
        for name, m in sampled_layers(model, self.min_fan_in):
            w = m.weight
            w2 = w.detach().reshape(w.shape[0], -1)
            n = samples_for_fraction(w2.shape[1], self.fraction)
            u = torch.rand((w2.shape[0], n), generator=gen, dtype=torch.float64)
            s = sample_dense(w2.double(), n, u).to(w.dtype).reshape(w.shape)
            out[name] = w + (s - w.detach())
        return out

    def __call__(self, model: nn.Module, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """``model(x)`` with the sampled weights of step ``(epoch, step)``."""
        from torch.func import functional_call

        return functional_call(model, self.sampled_parameters(model, epoch, step), (x,))


class SampledConv2d(nn.Module):
    """``Conv2d`` whose weight is ``q * scale`` (``q`` integer ``(out, in/groups, k, k)``, ``scale`` ``(out,)``)."""

    def __init__(self, conv: nn.Conv2d, q: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.register_buffer("q", torch.from_numpy(_int_type(q)).reshape(conv.weight.shape))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.q.to(x.dtype) * self.scale.view(-1, 1, 1, 1)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SampledLinear(nn.Module):
    """``Linear`` whose weight is ``q * scale`` (``q`` integer ``(out, in)``, ``scale`` ``(out,)``)."""

    def __init__(self, lin: nn.Linear, q: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("q", torch.from_numpy(_int_type(q)))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.q.to(x.dtype) * self.scale.view(-1, 1), self.bias)


def _int_type(q: np.ndarray) -> np.ndarray:
    """The narrowest of int8 / int16 / int32 that holds ``q`` (the integers the ONNX file stores)."""
    top = int(np.abs(q).max()) if q.size else 0
    return q.astype(np.int8 if top <= 127 else np.int16 if top <= 32767 else np.int32)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair of ``Sequential`` blocks into the convolution (eval
    statistics; BN becomes ``Identity``). Returns the number folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for seq in list(model.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded


def stochastic_network(net: nn.Module, fraction: float, seed: int = 0, min_fan_in: int = 1) -> tuple[nn.Module, dict]:
    """A copy of the float ``net`` (eval mode, BN folded) with every ``Conv2d`` / ``Linear`` whose fan-in is at
    least ``min_fan_in`` sampled (1: every layer; the others keep their exact weights).

    Returns the network and its statistics: layers, weights, samples (``sum n * rows``), the
    fraction of nonzero sampled weights that are ``+-1`` (ternary) and the largest ``|q|``.
    """
    f = check_fraction(fraction)
    out = copy.deepcopy(net).eval()
    fold_batchnorm(out)
    stats = {"fraction": f, "seed": int(seed), "min_fan_in": int(min_fan_in), "layers": 0, "weights": 0, "samples": 0, "nonzero": 0, "ternary": 0,
             "max_abs_q": 0}
    layer = 0
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, (nn.Conv2d, nn.Linear)) or child.weight[0].numel() < min_fan_in:
                continue
            w = child.weight.detach().double().reshape(child.weight.shape[0], -1).numpy()
            n = samples_for_fraction(w.shape[1], f)
            q, scale = sample_weights(w, n, np.random.default_rng([int(seed), layer]))
            layer += 1
            new = SampledConv2d(child, q, scale) if isinstance(child, nn.Conv2d) else SampledLinear(child, q, scale)
            setattr(parent, name, new)
            nz = q[q != 0]
            stats["layers"] += 1
            stats["weights"] += int(q.size)
            stats["samples"] += int(n * q.shape[0])
            stats["nonzero"] += int(nz.size)
            stats["ternary"] += int((np.abs(nz) == 1).sum())
            stats["max_abs_q"] = max(stats["max_abs_q"], int(np.abs(q).max()) if q.size else 0)
    stats["samples_per_weight"] = round(stats["samples"] / max(stats["weights"], 1), 4)
    stats["ternary_fraction"] = round(stats["ternary"] / max(stats["nonzero"], 1), 4)
    return out, stats


def _export(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    # no constant folding: the file keeps the integer weights and the scales as initializers
    from export.onnx_export import export_onnx

    export_onnx(net, example, path, quantized=False, constant_folding=False)


def _onnx_integer_weights(path: Path) -> int:
    """How many integer (int8/16/32) initializers the ONNX file holds (the sampled weights)."""
    import onnx

    ints = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32}
    return sum(t.data_type in ints and len(t.dims) >= 2 for t in onnx.load(str(path)).graph.initializer)


def evaluate_stochastic(folder: str | Path, fractions, seed: int = 0, limit: int | None = None,
                        batch: int = 256, progress: bool = False, min_fan_in: int = 1) -> dict:
    """Accuracy of the export's float network with sampled weights at each fraction, and of the full
    network, on the export's test set (module docstring); JSON-ready."""
    from hdsim.export_folder import ExportFolder
    from export.evaluate import dataset_from_manifest, run_onnx, score_outputs
    from export.onnx_export import ExportNet
    from export.train import load_export_checkpoint, restore_model

    from hdsim.validation import check_int

    fractions = [check_fraction(f) for f in fractions]
    check_int("min_fan_in", min_fan_in)
    export = ExportFolder(folder)
    state = load_export_checkpoint(export.manifest, "stochastic (the sampled network is built from its float weights)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, head, model = restore_model(state, quant=False)
        x, y = dataset_from_manifest(export.manifest).test_set()
    if limit is not None:
        x, y = x[:limit], y[:limit]
    net = ExportNet(model.eval(), head).eval()
    out: dict = {"export": str(folder), "test_images": int(x.shape[0]), "seed": int(seed), "rows": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        full = copy.deepcopy(net)
        fold_batchnorm(full)
        _export(full, x[:1], Path(tmp) / "full.onnx")
        ref = score_outputs(export, run_onnx(Path(tmp) / "full.onnx", x, True, batch), y.numpy())
        out["full"] = {"accuracy": ref["accuracy"], "classified": ref["classified"]}
        for f in fractions:
            sampled, stats = stochastic_network(net, f, seed, min_fan_in)
            path = Path(tmp) / f"sampled_{f}.onnx"
            _export(sampled, x[:1], path)
            res = score_outputs(export, run_onnx(path, x, True, batch), y.numpy())
            row = {"fraction": f, "accuracy": res["accuracy"], "classified": res["classified"],
                   "relative_accuracy": round(res["accuracy"] / ref["accuracy"], 4) if ref["accuracy"] else None,
                   "onnx_integer_weight_tensors": _onnx_integer_weights(path)} | stats
            out["rows"].append(row)
            if progress:
                import sys

                print(f"stochastic: f={f}: accuracy {res['accuracy']:.4f} (full {ref['accuracy']:.4f})",
                      file=sys.stderr)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def stochastic_sweep(folder: str | Path, fractions, out_dir: str | Path, seed: int = 0, limit: int | None = None,
                     progress: bool = False, min_fan_in: int = 1) -> dict:
    """:func:`evaluate_stochastic` over ``fractions``, written as ``stochastic_sweep.csv`` and ``.png``
    (accuracy and accuracy relative to the full network vs the sampled fraction)."""
    from hdsim.sweep.output import new_figure, save_figure, write_csv
    from hdsim.validation import check_int, output_dir

    check_int("min_fan_in", min_fan_in)
    out_dir = output_dir("out", out_dir)
    res = evaluate_stochastic(folder, fractions, seed=seed, limit=limit, progress=progress, min_fan_in=min_fan_in)
    keys = ("fraction", "accuracy", "relative_accuracy", "classified", "samples_per_weight", "ternary_fraction",
            "max_abs_q")
    csv = write_csv(out_dir / "stochastic_sweep.csv", [{k: r[k] for k in keys} for r in res["rows"]])
    fig, ax = new_figure(1, width=6.5)
    fr = [r["fraction"] for r in res["rows"]]
    ax.plot(fr, [r["accuracy"] for r in res["rows"]], "o-", label="sampled weights")
    ax.axhline(res["full"]["accuracy"], color="k", ls="--", label="full network")
    ax.axhline(0.9 * res["full"]["accuracy"], color="r", ls=":", label="90% of full")
    ax.set_xscale("log")
    ax.set_xlabel("sampled fraction f (samples per row / fan-in)")
    ax.set_ylabel("test accuracy (abstention = wrong)")
    ax.set_title("stochastic scalar products (seed 004)")
    ax.legend(loc="center right")
    save_figure(fig, out_dir / "stochastic_sweep.png")
    res["csv"], res["png"] = str(csv), str(out_dir / "stochastic_sweep.png")
    return res
