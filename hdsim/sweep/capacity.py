"""``hdsim sweep capacity``: BCF accuracy and iterations versus problem size.

Reproduces the capacity curves of the BCF papers (SPEC section 3): for each
number of factors ``F`` and codebook size ``M``, decode ``queries`` random exact
product queries with the tuned ``(T, A)`` of that size and record accuracy and
iteration counts. Problem size is ``M^F``.

Engines (``engine``, :data:`hdsim.engine.ENGINES`; default :func:`hdsim.engine.default_engine`):
``numba`` (per-query loops in parallel over ``threads`` threads, no batch tail), ``torch``
(continuous batching, ``batch`` slots, on ``device``) or ``reference`` (``BlockCodeFactorizer`` in
batches of ``batch``); all float64 with :class:`hdsim.lfsr.LFSRSampler` ``(seed + 2)``, the same decisions.

Outputs (under ``out``):

* ``capacity.csv``: one row per ``(F, M)`` with the columns :data:`CSV_COLUMNS`;
* ``capacity.png``: accuracy vs problem size (log x) with the collision bound
  ``1 - collision_rate`` dashed beside it, and mean iterations vs problem size
  (log-log), one line per ``F``, a filled marker where accuracy >= 99 %;
* ``capacity.json``: the summary that :func:`run_capacity_sweep` returns.

Iteration cap. By default every point runs with the SPEC default
``max_iter = floor(M^(F-1) / F)`` (71765 at ``F=3, M=464``), as the published
curves do. Queries that never converge run to the cap, and all queries of a
batch decode together, so the slowest query sets the wall time; ``max_iter``
caps it at ``min(SPEC default, max_iter)`` for quick looks. A cap matters: at
F=3, M=464 about a third of the queries need more than 2000 iterations. The
cap used is the ``max_iter`` column of the CSV; a capped point can only lose
accuracy (``converged < 1`` shows queries that hit it).

Threads. The per-iteration tensors are small (the working set shrinks as
queries converge), so torch's intra-op threading costs more than it saves on a
small CPU, and far more on a shared one (measured 40x more CPU time with 2
threads than with 1 on a loaded 2-core machine). The sweep therefore runs
with ``threads=1`` unless told otherwise and restores torch's setting after.

Seeds: for every point the codebooks use ``seed``, the queries ``seed + 1``
and the sampler ``seed + 2``, so a point does not depend on which other points
are swept.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.sweep.output import new_figure, parse_list, save_figure, write_csv, write_text_atomic
from hdsim.engine import bcf_decoder
from hdsim.factorizers.bcf import BCFConfig, default_max_iter
from hdsim.bcf_numpy import colliding_products
from hdsim.queries import make_queries
from hdsim.threads import torch_threads
from hdsim.tuned import load_table, lookup
from hdsim.validation import check_blocks, check_device, check_ints, check_seed, check_threads, output_dir

__all__ = ["CSV_COLUMNS", "CapacitySweepConfig", "default_sizes", "grid", "parse_int_list",
           "run_capacity_sweep", "write_outputs"]

CSV_COLUMNS = ("F", "M", "problem_size", "T", "A", "max_iter", "accuracy", "factor_accuracy",
               "product_accuracy", "collision_rate", "accuracy_noncolliding", "mean_iterations",
               "p95_iterations", "converged", "queries", "seconds")
TARGET_ACCURACY = 0.99


def default_sizes(F: int, table: dict) -> tuple[int, ...]:
    """Codebook sizes swept for ``F`` when none are given: every tuned size of the table.

    Each row contributes ``M_min`` and ``M_max``; a range row spanning more
    than a factor 4 also contributes its geometric midpoint (for the published
    F=2 table: 32, 106, 348, 442, 562, ..., 10000).
    """
    rows = table["tables"].get(str(F))
    if not rows:
        raise HdsimError(f"F: no tuned (T, A) for F={F} in the table; tuned F values: {sorted(table['tables'])}")
    sizes: set[int] = set()
    for r in rows:
        lo, hi = int(r["M_min"]), int(r["M_max"])
        sizes.update((lo, hi))
        if hi > 4 * lo:
            sizes.add(round(math.sqrt(lo * hi)))
    return tuple(sorted(sizes))


@dataclass(frozen=True)
class CapacitySweepConfig:
    """What to sweep; validated on construction (:class:`HdsimError` naming the option).

    Attributes:
        F: numbers of factors, one curve each.
        M: codebook sizes for every ``F``; ``None`` = :func:`default_sizes` of the table.
        D, B: dimension and number of blocks (the published table is for 512 / 4).
        queries: random exact queries per point (99 % accuracy needs >= 100 to resolve).
        max_iter: iteration cap, ``min(SPEC default, max_iter)``; ``None`` = SPEC default (default).
        seed: seed of codebooks (``seed``), queries (``seed+1``) and sampling (``seed+2``).
        device: torch device (``cpu``, ``cuda``, ``cuda:1`` ...).
        batch: queries decoded together (the tail of a batch sets its wall time).
        threads: torch intra-op CPU threads for the sweep (``torch.set_num_threads``,
            restored after), and the numba engine's threads; default 1 (see the module
            docstring); ``None`` leaves torch's setting (numba: one thread per core).
        engine: decode engine, ``numba``, ``torch`` or ``reference``; ``None`` = the fastest available.
        table: tuned ``(T, A)`` JSON table (from ``hdsim tune``); ``None`` = published table.
        out: output folder for ``capacity.csv``, ``capacity.png``, ``capacity.json``.
        plot: write the PNG.
        progress: show a tqdm bar on stderr.
    """

    F: tuple[int, ...] = (2, 3)
    M: tuple[int, ...] | None = None
    D: int = 512
    B: int = 4
    queries: int = 128
    max_iter: int | None = None
    seed: int = 0
    device: str = "cpu"
    batch: int = 1024
    threads: int | None = 1
    engine: str | None = None
    table: str | None = None
    out: str = "out/sweep_capacity"
    plot: bool = True
    progress: bool = True
    _table: dict = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "F", _int_tuple(self.F, "F"))
        if self.M is not None:
            object.__setattr__(self, "M", _int_tuple(self.M, "M"))
        if not self.F:
            raise HdsimError("F: give at least one number of factors")
        for f in self.F:
            if f < 1:
                raise HdsimError(f"F: number of factors must be >= 1, got {f}")
        if self.M is not None:
            if not self.M:
                raise HdsimError("M: give at least one codebook size")
            for m in self.M:
                if m < 1:
                    raise HdsimError(f"M: codebook size must be >= 1, got {m}")
        check_ints(self, ("D", "B", "queries", "batch"))
        check_blocks(self.D, self.B)
        check_ints(self, ("max_iter",), optional=True)
        check_threads("threads", self.threads, optional=True)
        check_seed("seed", self.seed)
        check_device(self.device)
        from hdsim.engine import check_engine

        object.__setattr__(self, "engine", check_engine(self.engine, self.device))
        table = load_table(self.table)  # HdsimError for a missing / malformed file
        for f in self.F:
            if not table["tables"].get(str(f)):
                src = self.table or "the published table"
                raise HdsimError(f"F: no tuned (T, A) for F={f} in {src}; tuned F values: {sorted(table['tables'])}")
        object.__setattr__(self, "_table", table)

    def sizes(self, F: int) -> tuple[int, ...]:
        """Codebook sizes swept for ``F``."""
        return tuple(sorted(set(self.M))) if self.M is not None else default_sizes(F, self._table)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("_table")
        return d



def parse_int_list(values: list[str] | None, name: str) -> tuple | None:
    """CLI lists of ints: see :func:`hdsim.sweep.output.parse_list`."""
    return parse_list(values, name, int)


def _int_tuple(v, name: str) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,)
    try:
        out = tuple(v)
    except TypeError:
        raise HdsimError(f"{name}: expected an integer or a list of integers, got {v!r}") from None
    for x in out:
        if isinstance(x, bool) or not isinstance(x, int):
            raise HdsimError(f"{name}: expected integers, got {x!r}")
    return out


def _run_point(cfg: CapacitySweepConfig, F: int, M: int) -> dict:
    tuned = lookup(F, M, cfg._table)
    codebooks = random_codebooks(F, M, cfg.D, cfg.B, cfg.seed)
    qs = make_queries(codebooks, cfg.queries, cfg.seed + 1)
    spec_iter = default_max_iter(codebooks.sizes)
    max_iter = spec_iter if cfg.max_iter is None else min(spec_iter, cfg.max_iter)
    bcf = BCFConfig(T=tuned.T, A=tuned.A, max_iter=max_iter)
    decode = bcf_decoder(cfg.engine, codebooks, bcf, cfg.seed + 2, device=cfg.device, threads=cfg.threads,
                         batch=cfg.batch, load_kernel=True)  # timed below: the kernel loaded first
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = decode(qs.queries)
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    it = res.iterations.double().numpy()
    hit = res.indices == qs.factors
    # A wrong decode whose factors bind to the same SBC as the query is a valid
    # alternative factorization (an ambiguous query), not a decoder error.
    same_product = (codebooks.product(res.indices) == codebooks.product(qs.factors)).all(dim=1)
    # Queries whose product is also another product of the codebooks: no decoder can tell them apart
    collide = torch.from_numpy(colliding_products([x.numpy() for x in codebooks.indices], codebooks.L,
                                                  qs.factors.numpy()))
    right = hit.all(dim=1)
    return {
        "F": F, "M": M, "problem_size": codebooks.problem_size, "T": tuned.T, "A": tuned.A,
        "max_iter": max_iter,
        "accuracy": int(hit.all(dim=1).sum()) / cfg.queries,
        "factor_accuracy": int(hit.sum()) / hit.numel(),
        "product_accuracy": int(same_product.sum()) / cfg.queries,
        "collision_rate": float(collide.double().mean()),
        "accuracy_noncolliding": float(right[~collide].double().mean()) if bool((~collide).any()) else None,
        "mean_iterations": float(it.mean()),
        "p95_iterations": float(np.percentile(it, 95)),
        "converged": float(res.converged.double().mean()),
        "queries": cfg.queries,
        "seconds": seconds,
    }


def _summary_per_F(rows: list[dict], L: int, B: int) -> dict:
    out: dict = {}
    for F in sorted({r["F"] for r in rows}):
        mine = [r for r in rows if r["F"] == F]
        good = [r for r in mine if r["accuracy"] >= TARGET_ACCURACY]
        best = max(good, key=lambda r: r["M"]) if good else None
        first_bad = min((r for r in mine if r["accuracy"] < TARGET_ACCURACY), key=lambda r: r["M"], default=None)
        out[str(F)] = {
            "largest_M_99": None if best is None else best["M"],
            "problem_size": None if best is None else best["problem_size"],
            "T": None if best is None else best["T"],
            "A": None if best is None else best["A"],
            "accuracy": None if best is None else best["accuracy"],
            "mean_iterations": None if best is None else best["mean_iterations"],
            "smallest_M_below_99": None if first_bad is None else first_bad["M"],
            # Expected number of *other* factor combinations whose product equals a
            # query: (M^F - 1) / L^B. Near or above ~0.01 no decoder can reach 99 %.
            "expected_collisions_at_largest_M": None if best is None else (best["problem_size"] - 1) / L ** B,
        }
    return out



def _plot(path: Path, rows: list[dict], cfg: CapacitySweepConfig) -> None:
    fig, (ax_acc, ax_it) = new_figure(2, 11, 4.2)
    for i, F in enumerate(sorted({r["F"] for r in rows})):
        mine = sorted((r for r in rows if r["F"] == F), key=lambda r: r["problem_size"])
        x = np.array([r["problem_size"] for r in mine], dtype=float)
        acc = np.array([100 * r["accuracy"] for r in mine])
        its = np.array([r["mean_iterations"] for r in mine])
        good = acc >= 100 * TARGET_ACCURACY
        color = f"C{i}"
        for ax, y in ((ax_acc, acc), (ax_it, its)):
            ax.plot(x, y, "-", color=color, label=f"F={F}")
            ax.plot(x[good], y[good], "o", color=color, ms=6)
            ax.plot(x[~good], y[~good], "o", color=color, ms=6, mfc="none")
        if all(r.get("collision_rate") is not None for r in mine):
            # the collision bound: a colliding query is lost by any decoder, so accuracy <= 1 - collision_rate
            bound = np.array([100 * (1 - r["collision_rate"]) for r in mine])
            ax_acc.plot(x, bound, "--", color=color, lw=1, label=f"F={F}: bound 1 - collision rate")
    ax_acc.axhline(100 * TARGET_ACCURACY, color="grey", ls=":", lw=1)
    ax_acc.set_xscale("log")
    ax_acc.set_xlabel("problem size  $M^F$")
    ax_acc.set_ylabel("accuracy [%]")
    ax_acc.set_title("accuracy (filled: >= 99 %), collision bound (dashed)")
    ax_it.set_xscale("log")
    ax_it.set_yscale("log")
    ax_it.set_xlabel("problem size  $M^F$")
    ax_it.set_ylabel("mean iterations")
    ax_it.set_title("mean iterations")
    for ax in (ax_acc, ax_it):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    cap = "SPEC default" if cfg.max_iter is None else f"min(SPEC, {cfg.max_iter})"
    fig.suptitle(f"BCF capacity: D={cfg.D}, B={cfg.B}, {cfg.queries} exact queries/point, "
                 f"tuned (T, A), max_iter={cap}", fontsize=10)
    save_figure(fig, path)


def run_capacity_sweep(cfg: CapacitySweepConfig) -> dict:
    """Run the sweep, write CSV / PNG / JSON under ``cfg.out`` and return the summary.

    Returns:
        ``{"config", "csv", "png", "json", "rows", "per_F", "noise_model"}``;
        ``per_F[str(F)]`` holds ``largest_M_99`` (largest swept ``M`` with
        accuracy >= 99 %, ``None`` if none) with its ``T``, ``A``, accuracy and
        mean iterations, and ``smallest_M_below_99``.

    Example:
        >>> s = run_capacity_sweep(CapacitySweepConfig(F=(2,), M=(5,), D=128, queries=8,
        ...                                            out="/tmp/hdsim_doctest", plot=False, progress=False))
        >>> s["per_F"]["2"]["largest_M_99"]
        5
    """
    out = output_dir("out", cfg.out)
    tD, tB = cfg._table.get("D"), cfg._table.get("B")
    if cfg.progress and (tD, tB) not in ((None, None), (cfg.D, cfg.B)):
        tqdm.write(f"note: the tuned table is for D={tD}, B={tB}; sweeping D={cfg.D}, B={cfg.B}", file=sys.stderr)
    points = grid(cfg)
    rows: list[dict] = []
    csv_path = out / "capacity.csv"
    with torch_threads(cfg.threads):
        bar = tqdm(points, desc="sweep capacity", unit="point", disable=not cfg.progress)
        for F, M in bar:
            bar.set_postfix_str(f"F={F} M={M}")
            row = _run_point(cfg, F, M)
            rows.append(row)
            write_csv(csv_path, rows, CSV_COLUMNS)  # partial results survive an interrupted sweep
            if cfg.progress:
                tqdm.write(f"F={F} M={M}: acc={row['accuracy']:.4f} mean_it={row['mean_iterations']:.1f} "
                           f"conv={row['converged']:.3f} ({row['seconds']:.1f}s)", file=sys.stderr)
    return write_outputs(cfg, rows)


def grid(cfg: CapacitySweepConfig) -> list[tuple[int, int]]:
    """The sweep's ``(F, M)`` points in CSV order (also the work list of a shared sweep)."""
    return [(F, M) for F in cfg.F for M in cfg.sizes(F)]


def write_outputs(cfg: CapacitySweepConfig, rows: list[dict]) -> dict:
    """Write ``capacity.csv`` / ``.png`` / ``.json`` for the finished ``rows`` (in :func:`grid` order);
    returns the summary. Shared by the single-process sweep and :mod:`hdsim.sweep.shared`."""
    out = Path(cfg.out)
    csv_path, png_path, json_path = out / "capacity.csv", out / "capacity.png", out / "capacity.json"
    write_csv(csv_path, rows, CSV_COLUMNS)
    if cfg.plot:
        _plot(png_path, rows, cfg)
    summary = {
        "config": cfg.as_dict(),
        "table": cfg.table or "published",
        "noise_model": "exact products (no noise)",
        "csv": str(csv_path),
        "png": str(png_path) if cfg.plot else None,
        "json": str(json_path),
        "target_accuracy": TARGET_ACCURACY,
        "per_F": _summary_per_F(rows, cfg.D // cfg.B, cfg.B),
        "rows": rows,
    }
    write_text_atomic(json_path, json.dumps(summary, indent=1) + "\n")
    return summary
