"""``hdsim sweep wta``: accuracy and multiplications of blockwise winner-take-all networks against ReLU6.

The seed ``001_*`` (DecisiveNets) table 1 in kind: the same MobileNetV2 is trained on the
digit task once with ReLU6 and once per group size ``l`` with every ReLU6 a blockwise
winner-take-all (:class:`export.mobilenet.WTA`, temperature annealed over training), each
exported to int8 QCDQ ONNX and evaluated on its test set by :func:`export.evaluate.evaluate_export`:
``accuracy`` (the export's own decode; FC head by default, so the backbone is what differs)
and ``multiplications`` per test image counted on the exported graph with zero activations
skipped (:mod:`export.multiplications`).

``l = 1`` *is* the ReLU6 network (a group of one keeps itself), so its row is the ReLU6
training, not a second one. The comparison the seed makes is against the ReLU6 network's
multiplications, which skip ReLU6's own zeros too (``multiplications_vs_relu6``); the
dense count of the same shapes (every input counted) is ``multiplications_dense`` and
``multiplications_vs_dense``. Writes ``wta_sweep.csv`` and ``wta_sweep.png``, the runs under
``runs/`` and the exports under ``exports/``; prints one JSON object (progress on stderr).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hdsim.errors import HdsimError
from hdsim.validation import check_int, check_threads, output_dir

__all__ = ["WTASweepConfig", "run_wta_sweep", "CSV_COLUMNS", "TARGET"]

CSV_COLUMNS = ("l", "activation", "accuracy", "accuracy_gap_pt", "multiplications", "multiplications_dense",
               "multiplications_vs_relu6", "multiplications_vs_dense", "input_zero_fraction", "test_images",
               "train_seconds")

# The target for l = 2: accuracy within 1.5 points of ReLU6 with at most 0.8x its multiplications.
TARGET = {"l": 2, "max_accuracy_gap_pt": 1.5, "max_multiplications_vs_relu6": 0.8}


@dataclass(frozen=True)
class WTASweepConfig:
    """Options of :func:`run_wta_sweep`; training sizes default to the CI size (``hdsim demo``'s recipe).

    Attributes:
        groups: the group sizes ``l``; ``1`` is the ReLU6 network, trained once either way.
        train: :class:`export.train.TrainConfig` fields shared by every run (``activation`` and
            ``wta_group`` are set per run).
        calibration_trials: decode calibration at export for a factorizer head (0: none).
        threads: torch threads of the trainings.
    """

    out: str = "out/sweep_wta"
    groups: tuple[int, ...] = (1, 2, 4, 8)
    train: dict = field(default_factory=lambda: dict(
        dataset="mnist2", head="fc", width=0.25, last_channel=128, epochs=8, qat_epochs=1, train_size=6400,
        qat_train_size=3200, test_size=1000, eval_size=500, batch=64, lr=4e-3, seed=0))
    calibration_trials: int = 16
    threads: int = 1

    def validate(self) -> WTASweepConfig:
        from export.train import TrainConfig

        if not self.groups or len(set(self.groups)) != len(self.groups):
            raise HdsimError(f"groups: need distinct group sizes, got {list(self.groups)}")
        for key in ("activation", "wta_group"):
            if key in self.train:
                raise HdsimError(f"train: {key} is set per run by the sweep")
        for l in self.groups:
            try:
                self.run_config(l).validate()
            except HdsimError as e:
                raise HdsimError(f"groups: {e}") from None
        TrainConfig(**self.train).validate()
        check_int("calibration_trials", self.calibration_trials, minimum=0)
        check_threads("threads", self.threads)
        return self

    def run_config(self, l: int):
        """The :class:`export.train.TrainConfig` of group size ``l`` (``1``: the ReLU6 network)."""
        from export.train import TrainConfig

        if isinstance(l, bool) or not isinstance(l, int) or l < 1:
            raise HdsimError(f"wta_group: WTA group size must be an integer >= 1, got {l!r}")
        if l == 1:
            return TrainConfig(**self.train, activation="relu6")
        return TrainConfig(**self.train, activation="wta", wta_group=l)


def run_wta_sweep(cfg: WTASweepConfig, progress: bool = True) -> dict:
    """Train, export and evaluate the ReLU6 network and every ``l``; write the CSV and PNG; return the summary."""
    import warnings

    from hdsim.calibrate import CalibrationConfig
    from hdsim.sweep.output import write_csv
    from hdsim.threads import torch_threads
    from export.evaluate import evaluate_export
    from export.onnx_export import export_checkpoint
    from export.train import train

    cfg = cfg.validate()
    out = output_dir("out", cfg.out)
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    ls = [1] + sorted(l for l in cfg.groups if l != 1)
    rows, t_start = [], time.perf_counter()
    for i, l in enumerate(ls):
        tc = cfg.run_config(l)
        name = "relu6" if l == 1 else f"wta_l{l}"
        say(f"wta sweep {i + 1}/{len(ls)}: {name}: train")
        t0 = time.perf_counter()
        with torch_threads(cfg.threads):
            metrics = train(tc, out / "runs" / name, progress=progress, threads=cfg.threads, log=lambda s: None)
            train_s = time.perf_counter() - t0
            say(f"wta sweep {i + 1}/{len(ls)}: {name}: export and evaluate")
            cal = (CalibrationConfig(trials=cfg.calibration_trials, progress=False)
                   if cfg.calibration_trials and tc.head != "fc" else None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                manifest = export_checkpoint(metrics["checkpoint"], out / "exports" / name, calibration=cal)
                res = evaluate_export(out / "exports" / name)
        rows.append({"l": l, "activation": tc.activation, "accuracy": res["accuracy"],
                     "multiplications": res["multiplications"], "multiplications_dense": res["multiplications_dense"],
                     "input_zero_fraction": res["input_zero_fraction"], "test_images": res["test_images"],
                     "train_seconds": round(train_s, 1),
                     "parity_max_abs_diff": manifest["checks"]["parity"]["max_abs_diff_ort_disable_all"],
                     "multiplications_by_kind": res["multiplications_by_kind"]})
    base = rows[0]
    for r in rows:
        r["accuracy_gap_pt"] = round(100 * (base["accuracy"] - r["accuracy"]), 3)
        r["multiplications_vs_relu6"] = r["multiplications"] / base["multiplications"]
        r["multiplications_vs_dense"] = r["multiplications"] / r["multiplications_dense"]
    csv_path = write_csv(out / "wta_sweep.csv", rows, CSV_COLUMNS)
    png_path = _plot(out / "wta_sweep.png", rows, cfg.train.get("head", "fc"))
    target = None
    hit = [r for r in rows if r["l"] == TARGET["l"]]
    if hit:
        r = hit[0]
        target = dict(TARGET, accuracy_gap_pt=r["accuracy_gap_pt"], multiplications_vs_relu6=r["multiplications_vs_relu6"],
                      met=bool(r["accuracy_gap_pt"] <= TARGET["max_accuracy_gap_pt"]
                               and r["multiplications_vs_relu6"] <= TARGET["max_multiplications_vs_relu6"]))
    return {"rows": rows, "target": target, "csv": str(csv_path), "png": str(png_path),
            "note": "l = 1 is the ReLU6 network (trained once); multiplications: mean per test image of the int8 "
                    "export with zero activations skipped; multiplications_dense: every input counted",
            "config": {"groups": ls, "train": cfg.train, "calibration_trials": cfg.calibration_trials,
                       "wta_layers": cfg.run_config(ls[-1]).wta_layers,
                       "t_init": base_t(cfg, "wta_t_init"), "t_final": base_t(cfg, "wta_t_final")},
            "seconds": round(time.perf_counter() - t_start, 1)}


def base_t(cfg: WTASweepConfig, name: str) -> float:
    from export.train import TrainConfig

    return float(cfg.train.get(name, getattr(TrainConfig, name)))


def _plot(path: Path, rows: list[dict], head: str) -> Path:
    from hdsim.sweep.output import new_figure, save_figure

    fig, (ax1, ax2) = new_figure()
    ls = [r["l"] for r in rows]
    ax1.plot(ls, [100 * r["accuracy"] for r in rows], "o-", label="WTA (l = 1: ReLU6)")
    ax1.axhline(100 * rows[0]["accuracy"], color="k", ls="--", label="ReLU6")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ls, [str(l) for l in ls])
        ax.minorticks_off()
        ax.set_xlabel("group size l (1 = ReLU6)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title(f"two-digit task, {head} head, int8 export")
    ax1.legend(loc="lower left")
    ax2.plot(ls, [r["multiplications"] / 1e6 for r in rows], "o-", label="zeros skipped (measured)")
    ax2.plot(ls, [r["multiplications_dense"] / 1e6 for r in rows], "s:", label="dense (every input)")
    ax2.axhline(rows[0]["multiplications"] / 1e6, color="k", ls="--", label="ReLU6, zeros skipped")
    ax2.set_ylabel("multiplications per input (millions)")
    ax2.set_ylim(0, 1.25 * max(r["multiplications_dense"] for r in rows) / 1e6)
    ax2.legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)
