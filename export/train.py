"""Training: float pre-training, then quantization-aware fine-tuning (Brevitas), with checkpoints.

One script for one process or many: under ``torchrun`` (``WORLD_SIZE > 1``)
it joins a gloo process group, wraps the net in ``DistributedDataParallel``
and gives each rank its shard of every epoch (the global batch stays
``batch``); rank 0 evaluates and writes checkpoints.

Phases (one epoch counter across both): epochs ``[0, epochs)`` train the float
net; at ``epochs`` the quantized twin loads the float weights, its activation
quantizers are calibrated on training batches, and epochs
``[epochs, epochs + qat_epochs)`` fine-tune it. ``out/last.pt`` is written
after every epoch (atomically); ``--resume`` continues from it with the
configuration stored in it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from hdsim.errors import HdsimError
from hdsim.validation import output_dir
from export.data import ImageFolder, MultiDigitMNIST
from export.heads import HeadConfig, make_head
from export.mobilenet import BackboneConfig, MobileNetV2, set_wta_temperature

__all__ = ["TrainConfig", "train", "load_checkpoint", "load_export_checkpoint", "build_data", "build_model", "evaluate_model",
           "CHECKPOINT_FORMAT", "wta_step_temperature"]

CHECKPOINT_FORMAT = "hdsim-export-checkpoint/1"


@dataclass
class TrainConfig:
    """Everything a run depends on (stored in every checkpoint).

    Attributes:
        dataset: ``mnist2`` / ``mnist3`` (multi-digit MNIST) or a folder ``root/<class>/<image>``.
        head: ``bcf`` or ``fc``.
        D, B, beta, codebook_seed: BCF head (ignored for ``fc``). The sparse-resonator head has no
            projection: its ``D`` is the backbone's features (``D`` 0 means that; another value
            that differs is an error) and ``B`` its segments.
        cosine_scale: ``s`` of the sparse-resonator head's segment-wise cosine loss.
        F: factors for a folder dataset (MNIST: the number of digits).
        width, last_channel, dropout: MobileNetV2 shape (``last_channel`` 0 = torchvision's 1280 rule).
        partition_dropout: ``P`` >= 2: partition dropout before the classifier instead of Bernoulli
            dropout (seed ``004_*``: LFSR partitions, every feature dropped once per ``P`` steps, rate
            ``1 / P``; :class:`export.partition_dropout.PartitionDropout`); 0: off.
        input_size: ``(H, W)``; empty = the dataset's natural size (MNIST) or 224x224 (folder).
        channels, resize: folder datasets: 1 or 3 channels; resize images of another size.
        epochs, qat_epochs: float and QAT epochs.
        train_size: training images per epoch (MNIST: composed afresh each epoch).
        qat_train_size: training images per QAT epoch (0 = ``train_size``).
        test_size, test_fraction: MNIST composed test images; fraction of digit images held out.
        val_fraction, val_size: fraction of digit images (folder: files) held out for validation, and
            MNIST composed validation images; the validation set calibrates the decode at export.
            Checkpoints written before the split existed load with ``val_fraction`` 0 (their
            training digits include what would be validation digits).
        batch, lr, qat_lr, weight_decay: optimization (AdamW, one-cycle then cosine).
        calib_batches: batches of training images that initialize the activation quantizers.
        eval_size: test images evaluated after every epoch (0 = all).
        scales: quantizer scales, ``po2`` (power of two: bit-exact PyTorch/onnxruntime parity) or ``float``.
        seed: seed of data, init and codebooks.
        activation: ``relu6`` or ``wta`` (blockwise winner-take-all, seed ``001_*``:
            :class:`export.mobilenet.WTA`). Checkpoints written before the option load as ``relu6``.
        wta_group: ``l``, channels per WTA group; must divide every WTA activation's channel count.
        wta_layers: which ReLU6 become WTAs: ``blocks`` (after every expansion and depthwise
            convolution; default), ``depthwise``, ``all`` (stem and last 1x1 too).
        wta_t_init, wta_t_final: the soft WTA's temperature, exponential from ``wta_t_init`` at the
            first training step to ``wta_t_final`` at the last (float and QAT steps on one
            schedule, :func:`wta_step_temperature`); defaults from the seed's table 3 (1 -> 1000
            is among its best for ``l`` = 2 and 4, a final 100 was worse).
        stochastic_fraction: ``f`` in ``(0, 1]``: train through stochastic scalar products (seed
            ``004_*``): every step samples every conv/linear weight of fan-in >= ``stochastic_min_fan_in``
            at ``f`` (:class:`export.stochastic.StochasticTraining`, straight-through), so that
            ``hdsim evaluate --stochastic-fraction f`` meets the noise it was trained with; 0: off.
            Float epochs only, from ``stochastic_start_epoch`` on (0-based): trained through the
            samples from the first step, the two-digit network does not learn at ``f = 0.25`` (loss
            flat at its initial value for 8 epochs: the sampling noise of a random row exceeds its
            signal), so it is pre-trained exactly first. The QAT epochs train the exact weights.
    """

    dataset: str = "mnist2"
    head: str = "bcf"
    D: int = 256
    B: int = 4
    beta: float = 1.0
    codebook_seed: int = 0
    cosine_scale: float = 16.0
    F: int = 2
    width: float = 0.25
    last_channel: int = 128
    dropout: float = 0.0
    partition_dropout: int = 0
    input_size: tuple[int, ...] = ()
    channels: int = 3
    resize: bool = False
    epochs: int = 6
    qat_epochs: int = 1
    train_size: int = 6400
    qat_train_size: int = 0
    test_size: int = 2000
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    val_size: int = 1000
    batch: int = 64
    lr: float = 3e-3
    qat_lr: float = 3e-4
    weight_decay: float = 1e-4
    calib_batches: int = 4
    eval_size: int = 1000
    scales: str = "po2"
    seed: int = 0
    # ---- blockwise winner-take-all (seed 001_*, SPEC section 8) ----
    activation: str = "relu6"
    wta_group: int = 2
    wta_layers: str = "blocks"
    wta_t_init: float = 1.0
    wta_t_final: float = 1000.0
    # ---- stochastic scalar products during training (seed 004_*, SPEC section 8) ----
    stochastic_fraction: float = 0.0
    stochastic_min_fan_in: int = 1
    stochastic_start_epoch: int = 0

    @property
    def backbone(self) -> BackboneConfig:
        """The backbone's shape and activation (input channels 1: they change no channel count checked here)."""
        return BackboneConfig(self.width, 1, self.last_channel or None, activation=self.activation,
                              wta_group=self.wta_group if self.activation == "wta" else 1,
                              wta_layers=self.wta_layers)

    def validate(self) -> None:
        self.backbone.validate()
        if self.activation == "wta":
            for name in ("wta_t_init", "wta_t_final"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                    raise HdsimError(f"{name}: temperature must be a finite number > 0, got {v!r}")
        if self.head == "sparse-resonator" and self.D not in (0, self.features):
            raise HdsimError(f"D: the sparse-resonator head has no projection, so D is the backbone's "
                             f"{self.features} features (last_channel); got D={self.D}")
        if self.input_size and (len(self.input_size) != 2 or min(self.input_size) < 8):
            raise HdsimError(f"input_size: expected H and W >= 8, got {list(self.input_size)}")
        self.head_config.validate()
        for name in ("epochs", "qat_epochs", "calib_batches", "eval_size"):
            if getattr(self, name) < 0:
                raise HdsimError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.qat_epochs > 0 and self.calib_batches < 1:  # QAT starts from calibrated activation ranges
            raise HdsimError(f"calib_batches: must be >= 1 with QAT epochs, got {self.calib_batches}")
        if self.epochs + self.qat_epochs < 1:
            raise HdsimError("epochs: need at least one float or QAT epoch")
        if not 0.0 <= self.val_fraction < 1.0 or (self.val_fraction > 0 and self.val_size < 1):
            raise HdsimError(f"val_fraction: must be in [0, 1) (val_size >= 1), got {self.val_fraction} "
                             f"(val_size {self.val_size})")
        for name in ("batch", "train_size", "test_size"):
            if getattr(self, name) < 1:
                raise HdsimError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.qat_train_size < 0:
            raise HdsimError(f"qat_train_size: must be >= 0, got {self.qat_train_size}")
        for name in ("train_size", "qat_train_size"):
            if 0 < getattr(self, name) < self.batch:
                raise HdsimError(f"{name}: {getattr(self, name)} is smaller than one batch ({self.batch})")
        for name in ("lr", "qat_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise HdsimError(f"{name}: learning rate must be finite and > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise HdsimError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.stochastic_fraction:
            from hdsim.stochastic_products import check_fraction
            from hdsim.validation import check_int

            check_fraction(self.stochastic_fraction)
            check_int("stochastic_min_fan_in", self.stochastic_min_fan_in)
            check_int("stochastic_start_epoch", self.stochastic_start_epoch, minimum=0)
            if self.stochastic_start_epoch >= self.epochs:
                raise HdsimError(f"stochastic_start_epoch: {self.stochastic_start_epoch} leaves none of the "
                                 f"{self.epochs} float epochs to train through the samples")
        if self.partition_dropout:
            from hdsim.partition_dropout import check_partitions

            check_partitions(self.partition_dropout)
            if self.dropout > 0:
                raise HdsimError(f"partition_dropout: replaces Bernoulli dropout; give one of dropout "
                                 f"({self.dropout}) and partition_dropout ({self.partition_dropout})")
            if self.head == "sparse-resonator":
                raise HdsimError("partition_dropout: the sparse-resonator head has no classifier layer to drop "
                                 "features before")
        if self.scales not in ("po2", "float"):
            raise HdsimError(f"scales: expected 'po2' or 'float', got {self.scales!r}")

    def epoch_size(self, phase: str) -> int:
        """Training images in one epoch of ``phase``."""
        return self.qat_train_size if phase == "qat" and self.qat_train_size else self.train_size

    @property
    def features(self) -> int:
        return BackboneConfig(self.width, 1, self.last_channel or None).features

    @property
    def resolved_input_size(self) -> tuple[int, int]:
        """``input_size``, or the dataset's natural size (MNIST ``32 x 32F``; folders 224x224)."""
        if self.input_size:
            return (int(self.input_size[0]), int(self.input_size[1]))
        if self.dataset in ("mnist1", "mnist2", "mnist3", "mnist4"):
            return (32, 32 * int(self.dataset[-1]))
        return (224, 224)

    @property
    def head_config(self) -> HeadConfig:
        if self.head == "sparse-resonator":
            from export.mobilenet import feature_map_size

            h, w = feature_map_size(*self.resolved_input_size)
            return HeadConfig(self.head, self.features, self.B, self.codebook_seed, self.beta, self.cosine_scale,
                              h * w)
        return HeadConfig(self.head, self.D, self.B, self.codebook_seed, self.beta, self.cosine_scale)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise HdsimError(f"config: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        d["input_size"] = tuple(d.get("input_size") or ())
        d.setdefault("val_fraction", 0.0)  # written before the validation split: no digit was held out
        if d.get("activation") == "wta":
            d.setdefault("wta_layers", "all")  # the first WTA checkpoints made every ReLU6 a WTA
        return cls(**d)


def build_data(cfg: TrainConfig):
    """The dataset object of a config (:class:`MultiDigitMNIST` or :class:`ImageFolder`)."""
    size = tuple(cfg.input_size) if cfg.input_size else None
    if cfg.dataset in ("mnist1", "mnist2", "mnist3", "mnist4"):
        return MultiDigitMNIST(int(cfg.dataset[-1]), seed=cfg.seed, test_fraction=cfg.test_fraction,
                               test_size=cfg.test_size, input_size=size, val_fraction=cfg.val_fraction,
                               val_size=cfg.val_size)
    if cfg.dataset.startswith("mnist"):
        raise HdsimError(f"dataset: expected mnist1..mnist4 or a folder, got {cfg.dataset!r}")
    return ImageFolder(cfg.dataset, cfg.F, channels=cfg.channels, input_size=size or (224, 224),
                       resize=cfg.resize, test_fraction=cfg.test_fraction, seed=cfg.seed,
                       val_fraction=cfg.val_fraction)


def backbone_config(cfg: TrainConfig, data) -> BackboneConfig:
    from dataclasses import replace

    return replace(cfg.backbone, in_channels=data.preprocessing.channels)


def build_model(cfg: TrainConfig, data, head, quant: bool) -> nn.Module:
    bb = backbone_config(cfg, data)
    pool = head.cfg.pool_size if head.kind == "sparse-resonator" else 0
    dropout = cfg.dropout
    if cfg.partition_dropout:
        from export.partition_dropout import PartitionDropout

        # the LFSR's start state from the run's seed (nonzero); the QAT twin starts a fresh schedule
        dropout = PartitionDropout(bb.features, cfg.partition_dropout, seed=cfg.seed + 1)
    if quant:
        from export.quant import QuantMobileNetV2

        return QuantMobileNetV2(head.outputs, bb, dropout, scales=cfg.scales, pool_size=pool)
    return MobileNetV2(head.outputs, bb, dropout, pool_size=pool)


# ---- distributed -----------------------------------------------------------------------------
def dist_setup() -> tuple[int, int]:
    """``(rank, world)``; joins a gloo process group only when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read and check a training checkpoint.

    Raises:
        HdsimError: missing, unreadable/corrupt, or not a checkpoint of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise HdsimError(f"checkpoint: not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError, KeyError, IndexError, TypeError) as e:
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else e.__class__.__name__
        raise HdsimError(f"checkpoint {path}: corrupt or unreadable ({msg})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HdsimError(f"checkpoint {path}: not an hdsim export checkpoint (format {CHECKPOINT_FORMAT})")
    for key in ("config", "phase", "epoch", "model"):
        if key not in state:
            raise HdsimError(f"checkpoint {path}: corrupt (no '{key}' entry)")
    if state["phase"] not in ("float", "qat"):
        raise HdsimError(f"checkpoint {path}: corrupt (unknown phase {state['phase']!r})")
    return state


def load_export_checkpoint(manifest: dict, purpose: str) -> dict:
    """The training checkpoint an export was made from (``manifest["source"]["checkpoint"]``), loaded.

    Raises:
        HdsimError: the manifest names none, or the file is gone (one line naming ``purpose``).
    """
    src = (manifest.get("source") or {}).get("checkpoint")
    if not src or not Path(src).is_file():
        raise HdsimError(f"{purpose}: needs the export's checkpoint {src!r} (manifest source.checkpoint), which is "
                         "not there")
    return load_checkpoint(src)


def restore_model(state: dict, *, quant: bool | None = None):
    """``(cfg, data, head, model)`` from a checkpoint; the model is in eval mode.

    ``quant=None`` builds the checkpoint's own phase; ``quant=True`` on a float
    checkpoint gives the quant twin with float weights (uncalibrated);
    ``quant=False`` on a QAT checkpoint gives the float net with the QAT weights.
    """
    cfg = TrainConfig.from_dict(state["config"])
    data = build_data(cfg)
    head = make_head(cfg.head_config, data.product_map)
    is_qat = state["phase"] == "qat"
    want_quant = is_qat if quant is None else quant
    model = build_model(cfg, data, head, quant=want_quant)
    try:
        _load_weights(model, state, want_quant, is_qat)
    except (RuntimeError, KeyError, ValueError) as e:  # size mismatch, missing keys, Brevitas' tensor checks
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        reason = (lines[1] if len(lines) > 1 else lines[0]) if lines else e.__class__.__name__  # torch: header, then cause
        raise HdsimError(f"checkpoint: its weights do not fit the network its config describes ({reason[:240]})"
                         ) from None
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise HdsimError(f"checkpoint: NaN or infinite values in {len(bad)} tensors (first: {bad[0]})")
    model.eval()
    return cfg, data, head, model


def _load_weights(model, state: dict, want_quant: bool, is_qat: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if want_quant and is_qat:
            model.load_state_dict(state["model"])
        elif want_quant:
            from export.quant import load_float_weights

            load_float_weights(model, state["model"])
        elif is_qat:
            from export.quant import quant_only_key

            model.load_state_dict({k: v for k, v in state["model"].items() if not quant_only_key(k)})
        else:
            model.load_state_dict(state["model"])


# ---- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_model(model: nn.Module, head, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Accuracy of ``model`` on ``(x, y)`` with the head's brute-force / argmax prediction."""
    was = model.training
    model.eval()
    preds = torch.cat([head.predict(model(x[i:i + batch])) for i in range(0, x.shape[0], batch)])
    model.train(was)
    return float((preds == y).float().mean())


# ---- training --------------------------------------------------------------------------------
def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True)


def _make_optimizer(params, lr: float, wd: float):
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


# ---- blockwise winner-take-all: the temperature follows the training step -------------------------
def wta_step_temperature(cfg: TrainConfig, epoch: int, step: int, steps: dict[str, int]) -> float:
    """The soft WTA's temperature at batch ``step`` of ``epoch``: one exponential schedule over
    every training step, float epochs then QAT epochs (``steps``: steps per epoch of each phase).

    The QAT phase continues the schedule rather than restarting it: the quantized twin
    fine-tunes the nearly hard activation that inference uses.
    """
    from hdsim.wta import wta_temperature

    n_float = cfg.epochs * steps.get("float", 0)
    total = n_float + cfg.qat_epochs * steps.get("qat", 0)
    if epoch < cfg.epochs:
        done = epoch * steps["float"] + step
    else:
        done = n_float + (epoch - cfg.epochs) * steps["qat"] + step
    return wta_temperature(done, max(total, 1), cfg.wta_t_init, cfg.wta_t_final)


def _make_scheduler(opt, phase: str, cfg: TrainConfig, steps_per_epoch: int):
    if phase == "float":
        total = max(1, cfg.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=total, pct_start=0.15)
    total = max(1, cfg.qat_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
          threads: int | None = None, stop_after: int | None = None, log=None) -> dict:
    """Run (or resume) training; returns the metrics (also ``out/metrics.json``).

    Args:
        resume: continue from ``out/last.pt`` with the configuration stored there.
        stop_after: run at most this many epochs in this call (resume later for the rest).
    """
    if stop_after is not None and stop_after < 1:
        raise HdsimError(f"stop_after: must be >= 1, got {stop_after}")
    out = output_dir("out", out)  # before the first epoch, not at its checkpoint
    rank, world = dist_setup()
    if threads:
        torch.set_num_threads(threads)
    say = (log or (lambda s: print(s, file=sys.stderr))) if rank == 0 else (lambda s: None)
    ckpt_path = out / "last.pt"
    state = None
    if resume:
        if not ckpt_path.is_file():
            raise HdsimError(f"resume: no checkpoint at {ckpt_path}")
        state = load_checkpoint(ckpt_path)
        cfg = TrainConfig.from_dict(state["config"])
    cfg.validate()
    if cfg.batch % world:
        raise HdsimError(f"batch: {cfg.batch} is not divisible by the {world} processes")
    torch.manual_seed(cfg.seed)
    data = build_data(cfg)
    head = make_head(cfg.head_config, data.product_map)
    xt, yt = data.test_set()
    if cfg.eval_size and cfg.eval_size < xt.shape[0]:
        xt, yt = xt[:cfg.eval_size], yt[:cfg.eval_size]
    local_batch = cfg.batch // world
    sampler = None
    if cfg.stochastic_fraction:
        if world > 1:
            raise HdsimError("stochastic_fraction: training through sampled weights runs in one process "
                             "(DistributedDataParallel would reduce the gradients of the sampled copies)")
        from export.stochastic import StochasticTraining

        sampler = StochasticTraining(cfg.stochastic_fraction, cfg.seed, cfg.stochastic_min_fan_in)

    def plan(phase_: str) -> tuple[int, int]:
        """``(shard, steps)``: images and steps per process in one epoch of ``phase_``."""
        shard_ = cfg.epoch_size(phase_) // world
        if shard_ // local_batch < 1:
            raise HdsimError(f"train_size: {cfg.epoch_size(phase_)} images give no full batch per process")
        return shard_, shard_ // local_batch

    epoch, phase, history = 0, "float" if cfg.epochs > 0 else "qat", []
    model = opt = sched = None
    if state is not None:
        epoch, phase, history = int(state["epoch"]), state["phase"], list(state.get("history", []))
        _, _, _, model = restore_model(state)
        opt = _make_optimizer(model.parameters(), cfg.lr if phase == "float" else cfg.qat_lr, cfg.weight_decay)
        sched = _make_scheduler(opt, phase, cfg, plan(phase)[1])
        try:
            if "optimizer" in state:
                opt.load_state_dict(state["optimizer"])
            if "scheduler" in state:
                sched.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise HdsimError(f"checkpoint {ckpt_path}: optimizer state does not fit ({e})") from None
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        say(f"resumed {ckpt_path} at epoch {epoch} ({phase})")
    total_epochs = cfg.epochs + cfg.qat_epochs
    if model is None and phase == "float":
        model = build_model(cfg, data, head, quant=False)
        opt = _make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
        sched = _make_scheduler(opt, "float", cfg, plan("float")[1])
    t_start = time.time()
    ddp = None
    ran = 0
    while epoch < total_epochs and (stop_after is None or ran < stop_after):
        ran += 1
        if epoch >= cfg.epochs and phase == "float" or model is None:
            model = _start_qat(cfg, data, head, model, say)
            phase = "qat"
            opt = _make_optimizer(model.parameters(), cfg.qat_lr, cfg.weight_decay)
            sched = _make_scheduler(opt, "qat", cfg, plan("qat")[1])
            ddp = None
        if world > 1 and ddp is None:
            ddp = nn.parallel.DistributedDataParallel(model)
        net = ddp if ddp is not None else model
        shard, steps = plan(phase)
        wta_steps = ({p: plan(p)[1] for p, n in (("float", cfg.epochs), ("qat", cfg.qat_epochs)) if n}
                     if cfg.activation == "wta" else None)
        x, y = data.train_epoch(epoch, cfg.epoch_size(phase))
        x, y = x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]
        model.train()
        t0 = time.time()
        running = 0.0
        with warnings.catch_warnings(), _progress(steps, f"epoch {epoch + 1}/{total_epochs} {phase}",
                                                  progress and rank == 0) as bar:
            warnings.simplefilter("ignore")
            for i in range(steps):
                xb, yb = x[i * local_batch:(i + 1) * local_batch], y[i * local_batch:(i + 1) * local_batch]
                if wta_steps is not None:
                    wta_t = wta_step_temperature(cfg, epoch, i, wta_steps)
                    set_wta_temperature(model, wta_t)
                sampled = sampler is not None and phase == "float" and epoch >= cfg.stochastic_start_epoch
                loss = head.loss(sampler(net, xb, epoch, i) if sampled else net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += float(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}")
        epoch += 1
        record = {"epoch": epoch, "phase": phase, "loss": running / steps, "seconds": time.time() - t0}
        if wta_steps is not None:
            record["wta_t"] = wta_t  # the temperature of the epoch's last step
        if rank == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                record["test_accuracy"] = evaluate_model(model, head, xt, yt)
            history.append(record)
            say(json.dumps(record))
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "config": _config_dict(cfg), "phase": phase, "epoch": epoch,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "history": history, "torch_rng": torch.get_rng_state(), "world_size": world,
                "data": data.describe(), "versions": versions()})
        _barrier(world)
    metrics = {"checkpoint": str(ckpt_path), "epochs": epoch, "total_epochs": total_epochs,
               "finished": epoch >= total_epochs, "phase": phase, "history": history,
               "test_accuracy": history[-1]["test_accuracy"] if history else None,
               "eval_size": int(xt.shape[0]), "world_size": world, "seconds": time.time() - t_start}
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["input_size"] = list(cfg.input_size)
    return d


def calibration_batches(data, cfg: TrainConfig, n: int | None = None) -> list[torch.Tensor]:
    """The first ``calib_batches`` batches of a dedicated composition (same on every rank)."""
    n = cfg.calib_batches if n is None else n
    x, _ = data.train_epoch(10_000_019, max(cfg.batch, 1) * max(n, 1))
    return [x[i * cfg.batch:(i + 1) * cfg.batch] for i in range(max(n, 1))]


def _start_qat(cfg: TrainConfig, data, head, float_model, say) -> nn.Module:
    from export.quant import calibrate, load_float_weights

    q = build_model(cfg, data, head, quant=True)
    if float_model is not None:
        load_float_weights(q, float_model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrate(q, calibration_batches(data, cfg))
    say(f"QAT: quantized twin calibrated on {cfg.calib_batches} batches")
    return q


def versions() -> dict:
    import platform

    import numpy

    import hdsim

    out = {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": numpy.__version__,
           "hdsim": getattr(hdsim, "__version__", "0.1.0")}
    for mod in ("brevitas", "onnx", "onnxruntime"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except ImportError:
            out[mod] = None
    return out
