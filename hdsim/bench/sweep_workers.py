"""``hdsim bench sweep-workers``: one capacity sweep on ``N`` local workers against one worker.

Both sides run the shared sweep (:func:`hdsim.sweep.shared.run_shared_sweep`, a fresh study each
time, one torch thread per worker) on the same grid, in alternating blocks (``1, N`` then ``N, 1``,
...) so a change of machine load hits both sides alike. The wall time is the whole command: the
``N - 1`` spawned workers' start-up (interpreter, torch import) is included. Every run's CSV rows are
compared with the first one's (all columns but the wall time ``seconds``): ``identical_rows``.

``ratio = median(seconds with 1 worker) / median(seconds with N workers)``; the ideal on ``N`` free
cores is ``N`` less the start-up and the tail (the last point runs alone). The load average before
and after is reported: on a shared machine other processes take cores from the workers.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hdsim.errors import HdsimError
from hdsim.validation import output_dir

__all__ = ["SweepWorkersBenchConfig", "run_sweep_workers_bench"]


@dataclass(frozen=True)
class SweepWorkersBenchConfig:
    """The grid (a ``hdsim sweep capacity`` configuration), the worker count and the repeats.

    Attributes:
        F, M, D, B, queries, max_iter, seed: the capacity sweep's options.
        workers: ``N``, compared with 1.
        repeats: blocks; each runs the sweep once with 1 and once with ``N`` workers.
        storage: database URL; ``None`` = a SQLite file in a temporary folder.
        out: output folder (one sub-folder per run).
    """

    F: tuple[int, ...] = (2,)
    # 32 points of 0.3-1.2 s each on one core (1,024 queries: decoding dominates), about 25 s in
    # all: the second worker's start-up (~2.5 s: interpreter, torch import, numba kernels loaded
    # from the cache) is a tenth of it; the points are claimed largest M first, so the point that
    # runs alone at the end is a short one. With 256 queries a point is 0.1-0.4 s and the start-up
    # is a third of the 2-worker run (measured 1.39x).
    M: tuple[int, ...] = tuple(range(1200, 2800, 50))
    D: int = 512
    B: int = 4
    queries: int = 1024
    max_iter: int | None = None
    seed: int = 0
    workers: int = 2
    repeats: int = 2
    storage: str | None = None
    out: str = "out/bench_sweep_workers"

    def __post_init__(self) -> None:
        for name in ("workers", "repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise HdsimError(f"{name}: must be an integer >= 1, got {v!r}")
        if self.workers < 2:
            raise HdsimError(f"workers: compare at least 2 workers with 1, got {self.workers}")


def _rows(path: Path) -> list[dict]:
    import csv

    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def run_sweep_workers_bench(cfg: SweepWorkersBenchConfig) -> dict:
    """Run the blocks; returns the JSON summary (``ratio``, per-run seconds, ``identical_rows``, load)."""
    from hdsim.sweep.capacity import CapacitySweepConfig
    from hdsim.sweep.shared import ShareConfig, run_shared_sweep

    out = output_dir("out", cfg.out)
    sweep = CapacitySweepConfig(F=cfg.F, M=cfg.M, D=cfg.D, B=cfg.B, queries=cfg.queries, max_iter=cfg.max_iter,
                                seed=cfg.seed, threads=1, out=str(out / "run"), plot=False, progress=False)
    tmp = tempfile.TemporaryDirectory(prefix="hdsim-bench-") if cfg.storage is None else None
    storage = cfg.storage or f"sqlite:///{Path(tmp.name) / 'work.db'}"
    tag = uuid.uuid4().hex[:8]
    seconds: dict[int, list[float]] = {1: [], cfg.workers: []}
    reference = None
    identical = True
    load_before = os.getloadavg()
    try:
        for r in range(cfg.repeats):
            for w in ((1, cfg.workers) if r % 2 == 0 else (cfg.workers, 1)):
                run_cfg = replace(sweep, out=str(out / f"r{r}-w{w}"))
                share = ShareConfig(storage=storage, study_name=f"bench-{tag}-r{r}-w{w}", workers=w, progress=False)
                t0 = time.perf_counter()
                run_shared_sweep("capacity", run_cfg, share)
                seconds[w].append(time.perf_counter() - t0)
                rows = _rows(Path(run_cfg.out) / "capacity.csv")
                reference = rows if reference is None else reference
                identical = identical and rows == reference
    finally:
        if tmp is not None:
            tmp.cleanup()
    load_after = os.getloadavg()
    one, many = statistics.median(seconds[1]), statistics.median(seconds[cfg.workers])
    return {
        "ratio": one / many,
        "ratio_per_block": [a / b for a, b in zip(seconds[1], seconds[cfg.workers])],
        "seconds_1_worker": seconds[1],
        f"seconds_{cfg.workers}_workers": seconds[cfg.workers],
        "identical_rows": identical,
        "points": len(reference or []),
        "workers": cfg.workers,
        "threads_per_worker": 1,
        "cpu_count": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "storage": "sqlite (temporary file)" if cfg.storage is None else "given",
        "config": asdict(cfg) | {"storage": None if cfg.storage is None else "given"},
    }
