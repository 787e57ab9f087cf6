"""``hdsim bench assoc-memory``: recall of a Willshaw memory versus the number of stored pairs.

One memory (:mod:`hdsim.assoc_memory`) fills up: ``max(grid)`` random pairs of WTA codes
(``c_in`` clusters of ``l_in`` units to ``c_out`` clusters of ``l_out``) are drawn once from
``seed`` (inputs first, then outputs, one ``numpy`` generator), and for each ``P`` of the grid,
in increasing order, the next pairs are stored incrementally and *every* stored pair is
recalled from its input. Per ``P``: the fraction of pairs recalled exactly, the fraction of
output clusters recalled wrong, the density of ones in ``W``, and the same three quantities
predicted by :func:`hdsim.assoc_memory.analytic_recall`.

Summary: the measured capacity (largest grid ``P`` with exact recall ``>= target``, 0.99), the
analytic one (:func:`~hdsim.assoc_memory.analytic_capacity`), the memory size in bits
(``n_out n_in``) and the bits stored per bit of memory at capacity, ``P c_out log2(l_out) /
(n_out n_in)`` (each recalled code carries ``c_out log2 l_out`` bits).

Timing (``timing=True``): storing the ``max(grid)`` pairs into an empty memory and recalling
them all, against a baseline written as a numpy user would from the formula: ``W`` as a float32
0/1 matrix ``min(Y^T X, 1)`` (BLAS product; kept in float32 so its recall pays no conversion),
recall ``X W^T`` then ``argmax`` per cluster. Both are run in the same process on the same
arrays, best of ``repeats``; their memories and recalled codes are checked equal. The ratio is
``baseline seconds / hdsim seconds``; the baseline's BLAS may use several threads, this module one.

Outputs (under ``out``): ``assoc_memory.csv`` (columns :data:`CSV_COLUMNS`), ``assoc_memory.png``
(exact recall and cluster error vs ``P``, measured points over the analytic curve) and
``assoc_memory.json`` (the summary printed on stdout).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hdsim.assoc_memory import analytic_capacity, analytic_recall, codes_from_indices, memory_bits, recall, store
from hdsim.errors import HdsimError
from hdsim.validation import check_int, check_seed, output_dir

__all__ = ["CSV_COLUMNS", "AssocMemoryBenchConfig", "default_grid", "dense_store", "dense_recall",
           "run_assoc_memory_bench"]

CSV_COLUMNS = ("P", "exact_recall", "cluster_error", "density", "analytic_exact_recall",
               "analytic_cluster_error", "analytic_density", "bits_per_memory_bit")


def default_grid(capacity: int, points: int = 13) -> tuple[int, ...]:
    """``points`` pair counts spaced geometrically from ``capacity / 8`` to ``6 capacity`` (rounded, distinct).

    Example:
        >>> default_grid(1000, points=5)
        (125, 329, 866, 2280, 6000)
    """
    check_int("capacity", capacity)
    check_int("points", points, minimum=2)
    g = np.geomspace(capacity / 8, 6 * capacity, points)
    return tuple(sorted({max(1, int(round(v))) for v in g}))


@dataclass(frozen=True)
class AssocMemoryBenchConfig:
    """What to run; validated on construction (:class:`HdsimError` naming the field).

    Attributes:
        c_in, l_in: input code: clusters and units per cluster (``n_in = c_in l_in``).
        c_out, l_out: output code (``n_out = c_out l_out``).
        grid: numbers of stored pairs; ``None``: :func:`default_grid` around the analytic capacity.
        seed: seed of the pairs.
        target: exact-recall fraction that defines the capacity.
        timing: time store and recall against the dense float32 baseline.
        repeats: timing runs (the best counts).
        out: output folder (CSV, PNG, JSON).
        plot: write the PNG.
        progress: report each point on stderr.
    """

    c_in: int = 8
    l_in: int = 64
    c_out: int = 8
    l_out: int = 64
    grid: tuple[int, ...] | None = None
    seed: int = 0
    target: float = 0.99
    timing: bool = True
    repeats: int = 5
    out: str = "out/bench_assoc_memory"
    plot: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("c_in", "l_in", "c_out", "l_out", "repeats"):
            check_int(name, getattr(self, name))
        check_seed("seed", self.seed)
        if not isinstance(self.target, (int, float)) or not 0.0 < self.target <= 1.0:
            raise HdsimError(f"target: expected a fraction in (0, 1], got {self.target!r}")
        if self.grid is not None:
            grid = tuple(self.grid)
            if not grid or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in grid):
                raise HdsimError(f"grid: expected integers >= 1, got {self.grid!r}")
            object.__setattr__(self, "grid", tuple(sorted(set(grid))))

    def pairs(self) -> tuple[int, ...]:
        """The grid, resolved."""
        if self.grid is not None:
            return self.grid
        return default_grid(analytic_capacity(self.c_in, self.l_in, self.c_out, self.l_out, self.target))


def dense_store(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Baseline store, the formula as a float32 BLAS product: ``W = min(Y^T X, 1)`` (float32 0/1).

    Example:
        >>> dense_store(np.array([[1, 0, 1]]), np.array([[0, 1]])).tolist()
        [[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    """
    return np.minimum(Y.T.astype(np.float32) @ X.astype(np.float32), 1.0)


def dense_recall(W: np.ndarray, X: np.ndarray, l: int) -> np.ndarray:
    """Baseline recall: ``s = X W^T`` (float32 BLAS), a one-hot ``argmax`` per cluster of ``l``.

    Example:
        >>> dense_recall(np.array([[0., 0., 0.], [1., 0., 1.]]), np.array([[1, 0, 1]]), l=2).tolist()
        [[0, 1]]
    """
    s = X.astype(np.float32) @ W.T
    N = s.shape[0]
    win = s.reshape(N, -1, l).argmax(axis=2)
    y = np.zeros((N, win.shape[1], l), dtype=np.uint8)
    np.put_along_axis(y, win[:, :, None], 1, axis=2)
    return y.reshape(N, -1)


def _best(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _timing(X: np.ndarray, Y: np.ndarray, l_out: int, repeats: int) -> dict:
    W, t_store = _best(lambda: store(X, Y), repeats)
    Wd, t_dstore = _best(lambda: dense_store(X, Y), repeats)
    R, t_recall = _best(lambda: recall(W, X, l_out), repeats)
    Rd, t_drecall = _best(lambda: dense_recall(Wd, X, l_out), repeats)
    if not (np.array_equal(W, Wd > 0) and np.array_equal(R, Rd)):  # the ratio means nothing otherwise
        raise HdsimError("timing: the baseline's memory or recall differs from hdsim's")
    return {"pairs": int(X.shape[0]), "repeats": repeats,
            "store_s": t_store, "baseline_store_s": t_dstore, "store_speedup": t_dstore / t_store,
            "recall_s": t_recall, "baseline_recall_s": t_drecall, "recall_speedup": t_drecall / t_recall,
            "baseline": "float32 W = min(Y^T X, 1) by BLAS; recall X W^T + argmax per cluster"}


def _plot(rows: list[dict], cfg: AssocMemoryBenchConfig, capacity: int, a_capacity: int, path: Path) -> None:
    from hdsim.sweep.output import new_figure, save_figure

    P = np.array([r["P"] for r in rows])
    fine = np.unique(np.geomspace(max(1, P.min() / 2), P.max() * 1.5, 80).round().astype(np.int64))
    an = analytic_recall(fine, cfg.c_in, cfg.l_in, cfg.c_out, cfg.l_out)
    fig, (ax1, ax2) = new_figure(2)
    ax1.plot(fine, an.exact_recall, "-", color="C0", label="analytic")
    ax1.plot(P, [r["exact_recall"] for r in rows], "o", color="C1", label="measured")
    ax1.axhline(cfg.target, color="grey", lw=0.8, ls=":")
    if capacity:
        ax1.axvline(capacity, color="C1", lw=0.8, ls="--", label=f"capacity {capacity} (measured)")
    ax1.axvline(a_capacity, color="C0", lw=0.8, ls="--", label=f"capacity {a_capacity} (analytic)")
    ax1.set(xscale="log", xlabel="stored pairs P", ylabel="exact recall (fraction of pairs)",
            title=f"Willshaw memory {cfg.c_out}x{cfg.l_out} <- {cfg.c_in}x{cfg.l_in}")
    ax1.legend(fontsize=8)
    err = np.array([r["cluster_error"] for r in rows])
    ax2.plot(fine, np.maximum(an.cluster_error, 1e-12), "-", color="C0", label="analytic cluster error")
    ax2.plot(P[err > 0], err[err > 0], "o", color="C1", label="measured cluster error")
    ax2.plot(fine, an.density, "-", color="C2", lw=0.8, label="analytic density of W")
    ax2.plot(P, [r["density"] for r in rows], "x", color="C2", label="measured density of W")
    ax2.set(xscale="log", yscale="log", ylim=(1e-6, 1.5), xlabel="stored pairs P", ylabel="fraction")
    ax2.legend(fontsize=8)
    save_figure(fig, path)


def run_assoc_memory_bench(cfg: AssocMemoryBenchConfig) -> dict:
    """Run the bench; returns the JSON summary (also written to ``out/assoc_memory.json``).

    Keys: ``capacity``, ``analytic_capacity``, ``memory_bits``, ``bits_per_pair``,
    ``bits_per_memory_bit_at_capacity``, ``rows`` (one per ``P``, :data:`CSV_COLUMNS`),
    ``timing`` (or ``None``), ``files``, ``config``.
    """
    from hdsim.sweep.output import write_csv

    out = output_dir("out", cfg.out)  # fail now, not after the run
    grid = cfg.pairs()
    n_in, n_out = cfg.c_in * cfg.l_in, cfg.c_out * cfg.l_out
    rng = np.random.default_rng(cfg.seed)
    X = codes_from_indices(rng.integers(0, cfg.l_in, size=(grid[-1], cfg.c_in)), cfg.l_in)
    Y = codes_from_indices(rng.integers(0, cfg.l_out, size=(grid[-1], cfg.c_out)), cfg.l_out)
    an = analytic_recall(np.array(grid), cfg.c_in, cfg.l_in, cfg.c_out, cfg.l_out)
    bits_per_pair = cfg.c_out * math.log2(cfg.l_out)
    W = np.zeros((n_out, n_in), dtype=np.bool_)
    rows, done = [], 0
    for i, P in enumerate(grid):
        store(X[done:P], Y[done:P], W)  # incremental: the memory keeps the pairs stored so far
        done = P
        ok = (recall(W, X[:P], cfg.l_out) == Y[:P]).reshape(P, cfg.c_out, cfg.l_out).all(axis=2)
        rows.append({"P": P, "exact_recall": float(ok.all(axis=1).mean()), "cluster_error": float(1 - ok.mean()),
                     "density": float(W.mean()), "analytic_exact_recall": float(an.exact_recall[i]),
                     "analytic_cluster_error": float(an.cluster_error[i]), "analytic_density": float(an.density[i]),
                     "bits_per_memory_bit": P * bits_per_pair / (n_out * n_in)})
        if cfg.progress:
            r = rows[-1]
            print(f"P={P:>8d}  exact recall {r['exact_recall']:.4f} (analytic {r['analytic_exact_recall']:.4f})  "
                  f"cluster error {r['cluster_error']:.2e}  density {r['density']:.3f}", file=sys.stderr)
    passing = [r["P"] for r in rows if r["exact_recall"] >= cfg.target]
    capacity = max(passing) if passing else 0
    a_capacity = analytic_capacity(cfg.c_in, cfg.l_in, cfg.c_out, cfg.l_out, cfg.target)
    timing = _timing(X, Y, cfg.l_out, cfg.repeats) if cfg.timing else None
    files = {"csv": str(write_csv(out / "assoc_memory.csv", rows, CSV_COLUMNS))}
    if cfg.plot:
        _plot(rows, cfg, capacity, a_capacity, out / "assoc_memory.png")
        files["png"] = str(out / "assoc_memory.png")
    files["json"] = str(out / "assoc_memory.json")
    summary = {"capacity": capacity, "analytic_capacity": a_capacity, "target": cfg.target,
               "memory_bits": memory_bits(W), "bits_per_pair": bits_per_pair,
               "bits_per_memory_bit_at_capacity": capacity * bits_per_pair / (n_out * n_in),
               "rows": rows, "timing": timing, "files": files, "config": asdict(cfg) | {"grid": list(grid)}}
    Path(files["json"]).write_text(json.dumps(summary, indent=1) + "\n")
    return summary
