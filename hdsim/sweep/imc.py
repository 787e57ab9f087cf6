"""``hdsim sweep imc``: the stochastic factorizer on PCM crossbars versus device age and noise.

The stochastic in-memory factorizer (SPEC section 4) runs its similarity and
bundling products on PCM crossbars (:class:`hdsim.imc.CrossbarMVMs`, SPEC
section 6) and decodes ``queries`` random exact product queries at each point
of two panels, each with and without global drift compensation:

* **time**: ``t_points`` log-spaced times since programming from ``t_min`` to
  ``t_max`` (default 1 s .. 1 year = 31,557,600 s, 8 points), noise scale 1;
* **scale**: the preset's programming, read and output noise multiplied by each
  of ``scales`` (default 0, 0.5, 1, 2, 4) at ``scale_t`` seconds (default 1 hour).

Every point uses the same problem (codebooks and queries from ``seed``) and the
same programmed devices (crossbar seed ``seed + 1``): the time panel follows one
chip as it ages. Default problem: D=256, M=32 per factor, F=3 (32,768
products), 64 queries, ``max_iter`` 1000 — a few minutes on 2 CPU cores.
``--M 256 --queries 300`` is the published D=M=256 setting (hours on 2 cores:
about 3,000 mean iterations per query).

Outputs (under ``out``):

* ``imc.csv``: one row per point with the columns :data:`CSV_COLUMNS`
  (``panel`` is ``time`` or ``scale``);
* ``imc.png``: two panels (vs time, vs noise scale), accuracy (solid, left axis)
  and mean iterations (dashed, right axis), with / without drift compensation;
* ``imc.json``: the summary that :func:`run_imc_sweep` returns.

``output_scale`` is the crossbar's mean similarity of each codevector with itself
after the decode (ideal 1): the global gain left after drift (and compensation).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hdsim.errors import HdsimError
from hdsim.validation import check_device, check_seed, check_threads, output_dir
from hdsim.sweep.output import new_figure, parse_list, save_figure, write_csv, write_text_atomic
from hdsim.factorizers.stochastic import (
    StochasticConfig,
    StochasticFactorizer,
    make_problem,
)
from hdsim.imc.config import get_preset
from hdsim.threads import torch_threads
from hdsim.imc.factorizers import CrossbarMVMs

__all__ = ["CSV_COLUMNS", "ImcSweepConfig", "run_imc_sweep", "grid", "run_point", "write_outputs",
           "parse_float_list", "YEAR_S"]

YEAR_S = 31_557_600.0  # one Julian year in seconds
CSV_COLUMNS = ("panel", "t_seconds", "noise_scale", "drift_compensation", "accuracy", "factor_accuracy",
               "mean_iterations", "median_iterations", "converged", "output_scale", "queries", "max_iter",
               "seconds")



def parse_float_list(values: list[str] | None, name: str) -> tuple | None:
    """CLI lists of floats: see :func:`hdsim.sweep.output.parse_list`."""
    return parse_list(values, name, float)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class ImcSweepConfig:
    """What to sweep; validated on construction (:class:`HdsimError` naming the option).

    Attributes:
        preset: IMC noise preset (``pcm-chip``, ``pcm-default``, ``ideal``, ``ideal-periphery``).
        F, M, D: factors, codevectors per factor, dimension (bipolar codes).
        queries: random exact product queries per point.
        t_min, t_max, t_points: the time panel, ``t_points`` log-spaced times in seconds
            since programming (``t_min > 0``).
        scales: the noise-scale panel's multipliers (>= 0) of programming, read and output noise.
        scale_t: time since programming of the noise-scale panel, seconds (>= 0).
        T, detection, max_iter: the stochastic factorizer's threshold (``None``: per-M
            default), detection threshold and iteration cap (default 1000 here).
        sim_range: similarity ADC full scale in normalized similarity (see :class:`CrossbarMVMs`).
        seed: problem seed; the crossbars use ``seed + 1``.
        device: torch device.
        threads: torch CPU threads during the sweep (restored after); ``None`` leaves torch's setting.
        out: output folder for ``imc.csv``, ``imc.png``, ``imc.json``.
        plot: write the PNG. progress: tqdm bar on stderr.
    """

    preset: str = "pcm-chip"
    F: int = 3
    M: int = 32
    D: int = 256
    queries: int = 64
    t_min: float = 1.0
    t_max: float = YEAR_S
    t_points: int = 8
    scales: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    scale_t: float = 3600.0
    T: float | None = None
    detection: float = 0.625
    max_iter: int | None = 1000
    sim_range: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    out: str = "out/sweep_imc"
    plot: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str):
            raise HdsimError(f"preset: expected a preset name, got {self.preset!r}")
        get_preset(self.preset)  # HdsimError listing the valid names
        for name in ("F", "M", "D", "queries", "t_points"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise HdsimError(f"{name}: must be an integer >= 1, got {v!r}")
        if not _is_num(self.t_min) or self.t_min <= 0:
            raise HdsimError(f"t_min: must be a finite time > 0 s (log-spaced axis), got {self.t_min!r}")
        if not _is_num(self.t_max) or self.t_max < self.t_min:
            raise HdsimError(f"t_max: must be a finite time >= t_min = {self.t_min} s, got {self.t_max!r}")
        if not _is_num(self.scale_t) or self.scale_t < 0:
            raise HdsimError(f"scale_t: must be a finite time >= 0 s, got {self.scale_t!r}")
        try:
            scales = tuple(self.scales)
        except TypeError:
            raise HdsimError(f"scales: expected a list of numbers, got {self.scales!r}") from None
        if not scales:
            raise HdsimError("scales: give at least one noise scale")
        for s in scales:
            if not _is_num(s) or s < 0:
                raise HdsimError(f"scales: each noise scale must be a finite number >= 0, got {s!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))
        if not _is_num(self.sim_range) or self.sim_range <= 0:
            raise HdsimError(f"sim_range: must be a finite number > 0, got {self.sim_range!r}")
        check_seed("seed", self.seed)
        check_threads("threads", self.threads, optional=True)
        self.stochastic_config().validate()  # T, detection, max_iter
        check_device(self.device)

    def stochastic_config(self) -> StochasticConfig:
        return StochasticConfig(T=self.T, detection=self.detection, max_iter=self.max_iter)

    def times(self) -> tuple[float, ...]:
        """The time panel's points in seconds (log-spaced, ``t_min`` and ``t_max`` included)."""
        if self.t_points == 1:
            return (float(self.t_min),)
        return tuple(float(t) for t in np.geomspace(self.t_min, self.t_max, self.t_points))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d


def _run_point(cfg: ImcSweepConfig, problem, panel: str, t: float, scale: float, comp: bool) -> dict:
    cb, q, truth = problem
    mvm = CrossbarMVMs(cb, cfg.preset, t=t, seed=cfg.seed + 1, drift_compensation=comp, noise_scale=scale,
                       sim_range=cfg.sim_range, device=cfg.device)
    fac = StochasticFactorizer(cb, cfg.stochastic_config(), mvm=mvm, device=cfg.device)
    t0 = time.perf_counter()
    res = fac.factorize(q)
    seconds = time.perf_counter() - t0
    it = res.iterations.double()
    hit = res.indices == truth
    return {
        "panel": panel, "t_seconds": t, "noise_scale": scale, "drift_compensation": comp,
        "accuracy": int(hit.all(dim=1).sum()) / cfg.queries,
        "factor_accuracy": int(hit.sum()) / hit.numel(),
        "mean_iterations": float(it.mean()),
        "median_iterations": float(it.median()),
        "converged": float(res.converged.double().mean()),
        "output_scale": mvm.output_scale(),
        "queries": cfg.queries,
        "max_iter": fac.max_iter,
        "seconds": seconds,
    }



def _plot(path: Path, rows: list[dict], cfg: ImcSweepConfig) -> None:
    fig, axes = new_figure(2, 12, 4.4)
    for ax, panel, key, xlabel in ((axes[0], "time", "t_seconds", "time since programming [s]"),
                                   (axes[1], "scale", "noise_scale", "noise scale (x programming, read, output noise)")):
        ax_it = ax.twinx()
        for comp, color in ((False, "C3"), (True, "C0")):
            mine = sorted((r for r in rows if r["panel"] == panel and r["drift_compensation"] == comp),
                          key=lambda r: r[key])
            if not mine:
                continue
            x = np.array([r[key] for r in mine], dtype=float)
            label = "drift comp." if comp else "no drift comp."
            ax.plot(x, [100 * r["accuracy"] for r in mine], "o-", color=color, label=f"accuracy, {label}")
            ax_it.plot(x, [r["mean_iterations"] for r in mine], "s--", color=color, alpha=0.6, ms=4,
                       label=f"mean iterations, {label}")
        if panel == "time":
            ax.set_xscale("log")
            ax.set_title("vs time since programming (noise scale 1)")
        else:
            ax.set_title(f"vs noise scale (t = {cfg.scale_t:g} s)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy [%]")
        ax.set_ylim(-3, 103)
        ax_it.set_ylabel("mean iterations")
        ax_it.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax_it.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    fig.suptitle(f"stochastic factorizer on PCM crossbars ({cfg.preset}): D={cfg.D}, M={cfg.M}, F={cfg.F}, "
                 f"{cfg.queries} queries/point, max_iter={cfg.max_iter}", fontsize=10)
    save_figure(fig, path)


def _pick(rows: list[dict], panel: str, key: str, value: float, comp: bool) -> dict | None:
    for r in rows:
        if r["panel"] == panel and r["drift_compensation"] == comp and r[key] == value:
            return {k: r[k] for k in ("accuracy", "mean_iterations", "converged", "output_scale")}
    return None


def run_imc_sweep(cfg: ImcSweepConfig) -> dict:
    """Run the sweep, write CSV / PNG / JSON under ``cfg.out`` and return the summary.

    Returns:
        ``{"config", "csv", "png", "json", "noise_model", "at_t_max", "rows"}``;
        ``at_t_max`` holds accuracy, mean iterations, converged fraction and output
        scale at the last time point without (``"off"``) and with (``"on"``) drift compensation.

    Example:
        >>> s = run_imc_sweep(ImcSweepConfig(M=8, D=128, queries=4, t_points=2, scales=(1.0,),
        ...                                  max_iter=50, out="/tmp/hdsim_doctest_imc", plot=False, progress=False))
        >>> len(s["rows"])
        6
    """
    out = output_dir("out", cfg.out)
    csv_path = out / "imc.csv"
    rows: list[dict] = []
    cache: dict = {}
    with torch_threads(cfg.threads):
        bar = tqdm(grid(cfg), desc="sweep imc", unit="point", disable=not cfg.progress, file=sys.stderr)
        for point in bar:
            panel, t, scale, comp = point
            bar.set_postfix_str(f"{panel} t={t:.3g}s scale={scale:g} comp={int(comp)}")
            row = run_point(cfg, point, cache)
            rows.append(row)
            write_csv(csv_path, rows, CSV_COLUMNS)  # partial results survive an interrupted sweep
            if cfg.progress:
                tqdm.write(f"{panel} t={t:.3g}s scale={scale:g} comp={int(comp)}: acc={row['accuracy']:.3f} "
                           f"mean_it={row['mean_iterations']:.1f} conv={row['converged']:.3f} "
                           f"gain={row['output_scale']:.3f} ({row['seconds']:.1f}s)", file=sys.stderr)
    return write_outputs(cfg, rows)


def grid(cfg: ImcSweepConfig) -> list[tuple[str, float, float, bool]]:
    """The sweep's ``(panel, t, noise scale, drift compensation)`` points in CSV order."""
    return ([("time", t, 1.0, c) for c in (False, True) for t in cfg.times()]
            + [("scale", cfg.scale_t, s, c) for c in (False, True) for s in cfg.scales])


def run_point(cfg: ImcSweepConfig, point: tuple[str, float, float, bool], cache: dict) -> dict:
    """One point's CSV row. The problem (codebooks, queries) is built once per process and kept in
    ``cache``; every point programs its own crossbars from ``seed + 1``, so a row does not depend on
    which points ran before it (or in which process)."""
    if "problem" not in cache:
        cache["problem"] = make_problem(cfg.F, cfg.M, cfg.D, cfg.queries, cfg.seed)
    panel, t, scale, comp = point
    return _run_point(cfg, cache["problem"], panel, t, scale, comp)


def write_outputs(cfg: ImcSweepConfig, rows: list[dict]) -> dict:
    """Write ``imc.csv`` / ``.png`` / ``.json`` for the finished ``rows`` (in :func:`grid` order);
    returns the summary. Shared by the single-process sweep and :mod:`hdsim.sweep.shared`."""
    out = Path(cfg.out)
    csv_path, png_path, json_path = out / "imc.csv", out / "imc.png", out / "imc.json"
    write_csv(csv_path, rows, CSV_COLUMNS)
    if cfg.plot:
        _plot(png_path, rows, cfg)
    t_last = cfg.times()[-1]
    summary = {
        "config": cfg.as_dict(),
        "noise_model": (f"{cfg.preset} PCM crossbars (hdsim.imc.CrossbarMVMs): similarity and bundling MVMs "
                        "with programming noise, drift, read noise, DAC/ADC and output noise; exact queries"),
        "csv": str(csv_path),
        "png": str(png_path) if cfg.plot else None,
        "json": str(json_path),
        "at_t_max": {"t_seconds": t_last,
                     "off": _pick(rows, "time", "t_seconds", t_last, False),
                     "on": _pick(rows, "time", "t_seconds", t_last, True)},
        "rows": rows,
    }
    write_text_atomic(json_path, json.dumps(summary, indent=1) + "\n")
    return summary
