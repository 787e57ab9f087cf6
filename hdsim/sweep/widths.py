"""``hdsim sweep widths``: fixed-point accuracy vs word width, with the float accuracy as a line.

Every width decodes the same queries as one float-reference run (same LFSR
seed), so the curve isolates the effect of the word width. Writes
``widths.csv`` and ``widths.png`` under ``out``; the JSON summary names the
smallest width whose accuracy is within ``tolerance_pt`` points of float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from hdsim.bench.fixed import FixedBenchConfig, compare_fixed_float
from hdsim.errors import HdsimError
from hdsim.sweep.output import new_figure, save_figure, write_csv
from hdsim.validation import output_dir

__all__ = ["WidthSweepConfig", "run_width_sweep", "grid", "run_point", "write_outputs", "CSV_COLUMNS"]

CSV_COLUMNS = ("bits", "accuracy", "float_accuracy", "agreement_with_float", "iteration_agreement",
               "mean_iterations", "float_mean_iterations", "converged", "queries_per_s")


@dataclass(frozen=True)
class WidthSweepConfig:
    """Widths ``bits_min..bits_max`` (uniform words) on one BCF configuration."""

    bits_min: int = 4
    bits_max: int = 16
    base: FixedBenchConfig = FixedBenchConfig(queries=512, repeats=1)  # one timed run per width
    tolerance_pt: float = 0.5
    out: str = "out/sweep_widths"

    def validate(self) -> None:
        if not 2 <= self.bits_min <= self.bits_max <= 30:
            raise HdsimError(f"bits: need 2 <= bits_min <= bits_max <= 30, got {self.bits_min}..{self.bits_max}")
        if not (self.tolerance_pt >= 0 and math.isfinite(self.tolerance_pt)):
            raise HdsimError(f"tolerance_pt: must be a finite number >= 0, got {self.tolerance_pt}")
        self.base.validate()


def run_width_sweep(cfg: WidthSweepConfig) -> dict:
    """Run the sweep; returns the JSON summary (rows included)."""
    cfg.validate()
    output_dir("out", cfg.out)  # before the sweep, not after it
    cache: dict = {}
    results = [run_point(cfg, bits, cache) for bits in tqdm(grid(cfg), desc="widths", unit="width")]
    return write_outputs(cfg, results)


def grid(cfg: WidthSweepConfig) -> list[int]:
    """The widths swept, in CSV order (also the work list of a shared sweep)."""
    return list(range(cfg.bits_min, cfg.bits_max + 1))


def run_point(cfg: WidthSweepConfig, bits: int, cache: dict) -> dict:
    """One width: ``{"row": CSV row, "config": resolved bench config}``.

    The float reference run is the same for every width (same queries, same LFSR
    seed): it is computed once per process and kept in ``cache``; a point's
    result does not depend on which widths ran before it.
    """
    r = compare_fixed_float(replace(cfg.base, bits=bits, widths_file=None), float_result=cache.get("float"))
    cache["float"] = r.pop("_float")
    return {"row": {"bits": bits, **{k: r[k] for k in CSV_COLUMNS if k != "bits"}}, "config": r["config"]}


def write_outputs(cfg: WidthSweepConfig, results: list[dict]) -> dict:
    """Write ``widths.csv`` / ``widths.png`` for the finished points (in :func:`grid` order); returns
    the summary. Shared by the single-process sweep and :mod:`hdsim.sweep.shared`."""
    out = Path(cfg.out)
    rows = [r["row"] for r in results]
    float_acc = rows[0]["float_accuracy"]
    ok = [r["bits"] for r in rows if r["accuracy"] >= float_acc - cfg.tolerance_pt / 100]
    csv_path = write_csv(out / "widths.csv", rows)
    png_path = _plot(out / "widths.png", rows, float_acc)
    return {
        "smallest_bits_within_tolerance": min(ok) if ok else None,
        "tolerance_pt": cfg.tolerance_pt,
        "float_accuracy": float_acc,
        "rows": rows,
        "csv": str(csv_path),
        "png": str(png_path),
        "config": {**results[-1]["config"], "bits_min": cfg.bits_min, "bits_max": cfg.bits_max},
    }


def _plot(path: Path, rows: list[dict], float_acc: float) -> Path:
    fig, (ax1, ax2) = new_figure()
    bits = [r["bits"] for r in rows]
    ax1.plot(bits, [100 * r["accuracy"] for r in rows], "o-", label="fixed point")
    ax1.axhline(100 * float_acc, color="k", ls="--", label="float reference")
    ax1.plot(bits, [100 * r["agreement_with_float"] for r in rows], "s:", label="decisions equal to float")
    ax1.set_xlabel("word width (bits)")
    ax1.set_ylabel("%")
    ax1.set_title("accuracy vs word width")
    ax1.legend()
    ax2.plot(bits, [r["mean_iterations"] for r in rows], "o-", label="fixed point")
    ax2.axhline(rows[0]["float_mean_iterations"], color="k", ls="--", label="float reference")
    ax2.set_xlabel("word width (bits)")
    ax2.set_ylabel("mean iterations")
    ax2.set_yscale("log")
    ax2.legend()
    return save_figure(fig, path)
