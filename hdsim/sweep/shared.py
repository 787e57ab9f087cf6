"""Sweeps shared by worker processes through a database: ``hdsim sweep ... --storage URL --study-name NAME``.

Every worker runs the same command (same sweep options, same ``--storage`` and
``--study-name``; ``--out`` may differ per machine). The first worker creates
the study: the sweep's grid points in CSV order, with a fingerprint of every
option the results depend on (a worker with other options is refused). Each
worker then claims points not yet done (:class:`hdsim.work_queue.WorkQueue`:
leases renewed by a heartbeat, an expired lease is claimable again, a result
is recorded once), computes them with the sweep's own per-point function and
records the row. A worker that finds nothing left to claim waits for the
points other workers hold; once the grid is complete it writes the merged
outputs (CSV, PNG, JSON) to its ``--out`` from the recorded rows, in grid
order. Every worker that finishes writes the same files (atomically), so it
does not matter which one is last.

Why the merged CSV equals a single-process run: every point seeds everything
it draws from the sweep's ``seed`` alone (capacity: codebooks ``seed``, queries
``seed + 1``, sampler ``seed + 2``; widths: the same queries and LFSR seed for
every width; IMC: one problem from ``seed``, crossbars from ``seed + 1``) and
nothing carries from one point to the next (the per-process caches hold the
float reference of the width sweep and the IMC problem, which are the same for
every point). Rows travel as JSON, which round-trips Python floats exactly. The
only columns that differ between runs are the wall times (``seconds``,
``queries_per_s``), measured in whichever process ran the point.

``workers = N`` starts ``N - 1`` local worker processes (``spawn``) beside this
one; all of them work the same study. A second run of a finished study
computes nothing and rewrites the outputs; a run after an interruption
computes only the missing points (a point whose worker was killed is free
again once its lease, ``lease_s`` seconds, expires).

Test-only hook: :func:`hdsim.work_queue.stall_for_tests` (a worker that holds a lease without working).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from hdsim.errors import HdsimError
from hdsim.validation import output_dir
from hdsim.work_queue import DEFAULT_LEASE_S, WorkQueue, check_url, redact_url, stall_for_tests

__all__ = ["ShareConfig", "run_shared_sweep", "SWEEP_KINDS"]

SWEEP_KINDS = ("capacity", "widths", "imc")


@dataclass(frozen=True)
class ShareConfig:
    """How a sweep is shared; validated on construction (:class:`HdsimError` naming the option).

    Attributes:
        storage: SQLAlchemy URL of the database (``postgresql+psycopg://user:pw@host/db``,
            ``sqlite:///sweeps.db`` for the workers of one machine).
        study_name: name of the shared sweep in that database.
        workers: worker processes this command runs (itself and ``workers - 1`` spawned).
        lease_s: seconds without a heartbeat after which a point is given to another worker.
        poll_s: seconds between looks while every open point is held by other workers.
        progress: one line per finished point on stderr.
    """

    storage: str
    study_name: str
    workers: int = 1
    lease_s: float = DEFAULT_LEASE_S
    poll_s: float = 0.25
    progress: bool = True

    def __post_init__(self) -> None:
        check_url("storage", self.storage)
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise HdsimError("study_name: give a name for the shared sweep (--study-name)")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= 256:
            raise HdsimError(f"workers: must be an integer in [1, 256], got {self.workers!r}")
        for name in ("lease_s", "poll_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6:
                raise HdsimError(f"{name.replace('_s', '')}: must be a number of seconds > 0, got {v!r}")


@dataclass(frozen=True)
class _Kind:
    grid: Callable[[Any], list]
    key: Callable[[Any], str]
    params: Callable[[Any], dict]
    run: Callable[[Any, Any, dict], Any]
    finish: Callable[[Any, list], dict]
    fingerprint: Callable[[Any], dict]
    threads: Callable[[Any], int | None]
    # a point's relative cost: points are claimed most expensive first (longest-processing-time
    # order), so the last point to finish, which runs while the other workers idle, is a cheap one
    cost: Callable[[Any], float] = lambda p: 0.0


def _kind(name: str) -> _Kind:
    if name == "capacity":
        from hdsim.sweep import capacity as m

        def fp(cfg) -> dict:
            d = {k: v for k, v in cfg.as_dict().items() if k not in ("out", "plot", "progress", "table")}
            # the table's content, not its path: the same table may live in different places
            d["table_sha256"] = hashlib.sha256(json.dumps(cfg._table, sort_keys=True).encode()).hexdigest()
            return d

        return _Kind(grid=m.grid, key=lambda p: f"F{p[0]}-M{p[1]}", params=lambda p: {"F": p[0], "M": p[1]},
                     run=lambda cfg, p, cache: m._run_point(cfg, *p), finish=m.write_outputs, fingerprint=fp,
                     threads=lambda cfg: cfg.threads,
                     # decoding and the exact collision count both grow with M^(F-1) per query
                     cost=lambda p: float(p[1]) ** (p[0] - 1))
    if name == "widths":
        from hdsim.sweep import widths as m

        return _Kind(grid=m.grid, key=lambda b: f"bits{b}", params=lambda b: {"bits": b}, run=m.run_point,
                     finish=m.write_outputs,
                     fingerprint=lambda cfg: {k: v for k, v in asdict(cfg).items() if k != "out"},
                     threads=lambda cfg: None)  # the CLI sets torch's threads for this sweep
    if name == "imc":
        from hdsim.sweep import imc as m

        return _Kind(grid=m.grid, key=lambda p: f"{p[0]}-t{p[1]!r}-s{p[2]!r}-c{int(p[3])}",
                     params=lambda p: {"panel": p[0], "t_seconds": p[1], "noise_scale": p[2],
                                       "drift_compensation": p[3]},
                     run=m.run_point, finish=m.write_outputs,
                     fingerprint=lambda cfg: {k: v for k, v in cfg.as_dict().items()
                                              if k not in ("out", "plot", "progress")},
                     threads=lambda cfg: cfg.threads)
    raise HdsimError(f"sweep: unknown kind {name!r}; expected one of {', '.join(SWEEP_KINDS)}")


def _say(share: ShareConfig, text: str) -> None:
    if share.progress:
        print(text, file=sys.stderr, flush=True)


def _work(kind: str, cfg, share: ShareConfig, queue: WorkQueue, label: str) -> int:
    """Claim and compute points until the study is complete; returns the points this worker recorded."""
    from hdsim.threads import torch_threads

    k = _kind(kind)
    points = {k.key(p): p for p in k.grid(cfg)}
    cache: dict = {}
    recorded = 0
    with torch_threads(k.threads(cfg)):
        while True:
            point = queue.claim()
            if point is None:
                c = queue.counts()
                if c["done"] == c["total"]:
                    return recorded
                time.sleep(share.poll_s)  # the rest is leased by other workers (alive or not, see lease_s)
                continue
            if point.key not in points:
                raise HdsimError(f"study_name: point {point.key!r} of the study is not in this sweep's grid")
            t0 = time.perf_counter()
            try:
                with queue.heartbeat(point.key):
                    stall_for_tests(point.key, recorded)  # a slow point, its lease kept alive (tests only)
                    result = k.run(cfg, points[point.key], cache)
            except BaseException:
                queue.release(point.key)  # free it now instead of after the lease
                raise
            if queue.complete(point.key, result):
                recorded += 1
            c = queue.counts()
            again = f", attempt {point.attempts}" if point.attempts > 1 else ""
            _say(share, f"{label}: {kind} point {point.key} done in {time.perf_counter() - t0:.1f}s{again} "
                        f"({c['done']}/{c['total']} done)")


def _child(kind: str, cfg, share: ShareConfig, label: str, owner: str, threads: int) -> None:
    """Entry point of a spawned local worker: work the study, no outputs (the parent writes them)."""
    import torch

    torch.set_num_threads(threads)
    try:
        queue = WorkQueue(share.storage, share.study_name, lease_s=share.lease_s, owner=owner)
        _work(kind, cfg, share, queue, label)
    except HdsimError as e:
        print(f"error: {label}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_shared_sweep(kind: str, cfg, share: ShareConfig) -> dict:
    """Work the shared sweep ``kind`` (``capacity``, ``widths``, ``imc``) of config ``cfg`` with
    ``share.workers`` local processes until every point is done, then write the merged outputs
    under ``cfg.out``.

    Returns:
        The sweep's summary (as the single-process ``run_*_sweep``) plus ``shared``:
        ``storage`` (password hidden), ``study_name``, ``points``, ``recorded_here`` (points
        this command's workers recorded), ``redone`` (points claimed more than once, e.g.
        after a killed worker), ``workers``, ``worker_exit_codes`` (spawned workers).

    Raises:
        HdsimError: bad options, unreachable database (one line, no password), a study of
            the same name with other options.
    """
    import torch

    k = _kind(kind)
    if kind == "widths":
        cfg.validate()
    output_dir("out", cfg.out)
    queue = WorkQueue(share.storage, share.study_name, lease_s=share.lease_s)
    try:
        grid = k.grid(cfg)
        order = sorted(grid, key=k.cost, reverse=True)  # stable: equal costs keep the grid order
        queue.ensure_study(kind, k.fingerprint(cfg), [(k.key(p), k.params(p)) for p in order])
        before = {p["key"]: p for p in queue.points()}
        ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and open connections
        children = [ctx.Process(target=_child, args=(kind, cfg, share, f"worker {i + 1}/{share.workers}",
                                                     f"{queue.owner}/w{i + 1}", torch.get_num_threads()),
                                daemon=True)
                    for i in range(1, share.workers)]
        for c in children:
            c.start()
        try:
            _work(kind, cfg, share, queue, f"worker 1/{share.workers}")
        except BaseException:
            for c in children:  # this command failed: its helpers stop too (their leases expire)
                c.terminate()
                c.join()
            raise
        for c in children:
            # the grid is complete: a worker still running is at most starting up or about to see
            # that (it holds no lease), so it is stopped instead of waited for
            c.join(timeout=2 * share.poll_s)
            if c.is_alive():
                c.terminate()
                c.join()
        after = queue.points()
        results = queue.results()
        rows = [results[k.key(p)] for p in grid]
    finally:
        queue.close()
    summary = k.finish(cfg, rows)
    summary["shared"] = {
        "storage": redact_url(share.storage), "study_name": share.study_name, "points": len(grid),
        # this command's workers are named "<owner>" and "<owner>/w<i>"
        "recorded_here": sum(1 for p in after if p["status"] == "done" and before[p["key"]]["status"] != "done"
                             and (p["finished_by"] or "").split("/")[0] == queue.owner),
        "redone": sum(1 for p in after if p["attempts"] > 1),
        "attempts": sum(p["attempts"] for p in after),
        "workers": share.workers, "lease_s": share.lease_s,
        "worker_exit_codes": [c.exitcode for c in children],
    }
    return summary
