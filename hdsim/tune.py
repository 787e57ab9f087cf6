"""``hdsim tune``: search the BCF's ``(T, A)`` for one ``(F, M)`` with Optuna.

The papers tuned the threshold ``T`` and the sampling width ``A`` per codebook
size with Bayesian optimization; this uses Optuna's TPE sampler (seeded).

Objective (minimized), on ``queries`` random exact product queries that are the
same in every trial (codebooks from ``seed``, queries from ``seed + 1``, the
:class:`hdsim.lfsr.LFSRSampler` of the decode from ``seed + 2``; float64 on ``engine``,
by default the fastest available, :func:`hdsim.engine.bcf_decoder`)::

    objective = error_rate + iter_weight * mean_iterations / max_iter

``error_rate = 1 - accuracy`` (all ``F`` factors right). The iteration term is
at most ``iter_weight`` (default 0.01, i.e. below one error in 100 queries): it
breaks ties between settings with the same error in favour of fast
convergence, which the papers pushed for by lowering ``max_iter``; pass
``max_iter`` to do the same here (default: the SPEC default
``floor(M^(F-1)/F)``). Set ``iter_weight=0`` for the pure error rate.

Search space:

* ``T`` uniform in ``[0, T_max]``, ``T_max = 0.03`` (``linf`` similarity; the
  published values lie in ``[0, 0.0172]``);
* ``A`` integer in ``[0, A_max]``, ``A_max = min(M, 512)`` (``A = 0`` disables
  sampling, ``A >= M`` samples every codevector).

If the published table has an entry for exactly this ``(F, M)`` and D=512, B=4,
a fresh study evaluates it first (an enqueued trial), so the search starts from
the papers' point.

Storage and sharing. The study lives in an Optuna RDB storage given as a
SQLAlchemy URL, ``sqlite:///hdsim_tune.db`` by default (a file in the current
folder), and is opened with ``load_if_exists=True``: running ``hdsim tune``
again with the same ``--storage`` and ``--study-name`` adds trials to the same
study. To spread one study over several machines, point them all at one
database server, e.g.::

    hdsim tune --F 2 --M 1155 --trials 50 \\
        --storage postgresql+psycopg://user:password@dbhost:5432/hdsim --study-name bcf-F2-M1155 --sampler-seed 1
    # on a second machine, with a different --sampler-seed:
    hdsim tune --F 2 --M 1155 --trials 50 \\
        --storage postgresql+psycopg://user:password@dbhost:5432/hdsim --study-name bcf-F2-M1155 --sampler-seed 2

(PostgreSQL needs the ``postgres`` extra, ``psycopg`` 3; SQLite files are fine
for the workers of one machine.) ``workers = N`` runs ``N`` local worker
processes on the study (sampler seeds ``sampler_seed + 7919 i``), splitting
``trials`` among them. All workers of a study must evaluate the same problem
(same ``--seed``, ``--queries``, ``--max-iter``, ``--iter-weight``; a mismatch
is refused) but should use different ``--sampler-seed`` values: TPE is seeded
with a hash of ``(sampler_seed, number of trials in the study)`` when a session
starts (:func:`session_seed`), so sessions that start together with the same
sampler seed would propose the same points.

Concurrent starts and killed workers. Opening the storage creates Optuna's
tables on an empty database; workers started at the same instant would race in
``CREATE TABLE`` (PostgreSQL: ``UniqueViolation`` on
``pg_type_typname_nsp_index``), so the storage, the study and its first
(enqueued) trial are created under :func:`hdsim.work_queue.creation_lock` (a
PostgreSQL advisory lock; an ``flock`` beside a SQLite file). Every running
trial records an Optuna heartbeat every ``heartbeat_s`` seconds; a trial whose
heartbeat is older than ``3 * heartbeat_s`` (its worker was killed) is marked
``FAIL`` by the next trial start of any worker of the study, and
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues its
parameters once more, so the study goes on and the point is still evaluated.

Output: the best ``(T, A)`` of the study is merged into a JSON table with the
schema of ``hdsim/data/bcf_tuned_published.json`` (``out``; an existing table
keeps its other rows), readable by :func:`hdsim.tuned.load_table`,
:func:`hdsim.tuned.lookup` and ``hdsim sweep capacity --table``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.engine import bcf_decoder, check_engine
from hdsim.factorizers.bcf import BCFConfig, default_max_iter
from hdsim.validation import check_blocks, check_device, check_ints, check_seed, check_threads
from hdsim.queries import make_queries
from hdsim.threads import torch_threads
from hdsim.tuned import load_table
from hdsim.work_queue import (PG_CONNECT_TIMEOUT_S, check_url, creation_lock, redact_url, stall_for_tests,
                               storage_error)

if TYPE_CHECKING:
    import optuna

__all__ = ["TuneConfig", "run_tune", "run_trials", "merge_into_table", "DEFAULT_STORAGE", "T_MAX", "A_CAP"]

DEFAULT_STORAGE = "sqlite:///hdsim_tune.db"
T_MAX = 0.03
A_CAP = 512
TC = 0.9


@dataclass(frozen=True)
class TuneConfig:
    """One tuning session; validated on construction (:class:`HdsimError` naming the option).

    Attributes:
        F, M: number of factors and codebook size being tuned.
        D, B: dimension and number of blocks.
        trials: trials to run in this session (added to the study).
        queries: exact queries per trial evaluation.
        storage: Optuna storage URL (SQLAlchemy), e.g. ``sqlite:///hdsim_tune.db``.
        study_name: ``None`` = ``bcf-D{D}-B{B}-F{F}-M{M}``.
        seed: seed of the evaluation problem (codebooks, queries, BCF sampler).
        sampler_seed: TPE seed; ``None`` = ``seed``. Workers sharing one study
            use the same ``seed`` and different ``sampler_seed``.
        out: JSON table the best ``(T, A)`` is merged into.
        max_iter: iteration cap per decode; ``None`` = SPEC default.
        iter_weight: weight of ``mean_iterations / max_iter`` in the objective.
        device: torch device.
        threads: torch intra-op CPU threads during the session (restored after) and the
            numba engine's threads; default 1, which is much faster on small or shared CPUs
            (the per-iteration tensors are small); ``None`` = torch's setting.
        progress: tqdm bar on stderr.
        workers: local worker processes sharing the study (``trials`` split among them).
        engine: decode engine of the trials (:func:`hdsim.engine.bcf_decoder`: ``numba``, ``torch``
            or ``reference``, float64 with the LFSR sampler, the same decisions on each); ``None`` =
            the fastest available (:func:`hdsim.engine.default_engine`).
        heartbeat_s: seconds between a running trial's heartbeats; a trial silent for
            ``3 * heartbeat_s`` is failed and retried once (module docstring).
    """

    F: int = 2
    M: int = 1155
    D: int = 512
    B: int = 4
    trials: int = 50
    queries: int = 256
    storage: str = DEFAULT_STORAGE
    study_name: str | None = None
    seed: int = 0
    sampler_seed: int | None = None
    out: str = "bcf_tuned.json"
    max_iter: int | None = None
    iter_weight: float = 0.01
    device: str = "cpu"
    threads: int | None = 1
    progress: bool = True
    workers: int = 1
    heartbeat_s: int = 10
    engine: str | None = None

    def __post_init__(self) -> None:
        check_ints(self, ("F", "M", "D", "B", "trials", "queries", "workers", "heartbeat_s"))
        if self.workers > self.trials:
            raise HdsimError(f"workers: {self.workers} workers for {self.trials} trials; give at most one per trial")
        check_blocks(self.D, self.B)
        check_ints(self, ("max_iter",), optional=True)
        check_threads("threads", self.threads, optional=True)
        check_seed("seed", self.seed)
        check_seed("sampler_seed", self.sampler_seed, optional=True)
        if not (self.iter_weight >= 0):
            raise HdsimError(f"iter_weight: must be >= 0, got {self.iter_weight}")
        if self.study_name is not None and not self.study_name.strip():
            raise HdsimError("study_name: must not be empty")
        check_device(self.device)
        object.__setattr__(self, "engine", check_engine(self.engine, self.device))
        _check_storage(self.storage)
        out = Path(self.out)
        if out.is_dir():
            raise HdsimError(f"out: {out} is a folder; give the JSON table file to merge into")
        if out.exists():
            _check_table_matches(load_table(out), self, out)  # HdsimError for a malformed table
        elif not out.parent.exists():
            raise HdsimError(f"out: folder {out.parent} does not exist")

    @property
    def name(self) -> str:
        return self.study_name or f"bcf-D{self.D}-B{self.B}-F{self.F}-M{self.M}"

    @property
    def A_max(self) -> int:
        return min(self.M, A_CAP)

    @property
    def resolved_max_iter(self) -> int:
        return self.max_iter if self.max_iter is not None else default_max_iter((self.M,) * self.F)


def _check_storage(url: str) -> None:
    """A SQLAlchemy URL whose driver is installed; a SQLite file's folder must exist."""
    check_url("storage", url)


def _check_table_matches(table: dict, cfg: TuneConfig, path: Path) -> None:
    for key, want in (("D", cfg.D), ("B", cfg.B), ("similarity", "linf"), ("Tc", TC)):
        have = table.get(key)
        if have is not None and have != want:
            raise HdsimError(f"out: table {path} is for {key}={have}, this tuning uses {key}={want}")


def merge_into_table(table: dict, F: int, M: int, T: float, A: int) -> dict:
    """Return ``table`` with ``(T, A)`` as the entry of exactly ``M`` for ``F``.

    A row ``M_min == M_max == M`` is replaced; a range row that contains ``M`` is
    split around it; rows stay sorted by ``M_min``.
    """
    rows = []
    for r in table["tables"].get(str(F), []):
        lo, hi = int(r["M_min"]), int(r["M_max"])
        if lo <= M <= hi:
            if lo < M:
                rows.append({**r, "M_min": lo, "M_max": M - 1})
            if M < hi:
                rows.append({**r, "M_min": M + 1, "M_max": hi})
        else:
            rows.append(dict(r))
    rows.append({"M_min": M, "M_max": M, "T": float(T), "A": int(A)})
    rows.sort(key=lambda r: r["M_min"])
    return {**table, "tables": {**table["tables"], str(F): rows}}


def _published_start(cfg: TuneConfig) -> dict | None:
    if (cfg.D, cfg.B) != (512, 4):
        return None
    for r in load_table()["tables"].get(str(cfg.F), []):
        if r["M_min"] <= cfg.M <= r["M_max"] and r["T"] <= T_MAX and r["A"] <= cfg.A_max:
            return {"T": float(r["T"]), "A": int(r["A"])}
    return None


def run_tune(cfg: TuneConfig) -> dict:
    """Run ``cfg.trials`` trials on the study, merge the best ``(T, A)`` into ``cfg.out``.

    Returns:
        JSON-ready dict: ``T``, ``A`` (best of the whole study), ``error``,
        ``accuracy``, ``mean_iterations``, ``objective``, ``trials`` (finished
        trials in the study), ``new_trials``, ``storage``, ``study_name``,
        ``table``, ``search_space``, ``objective_formula``.
    """
    import optuna

    study = open_study(cfg)
    done_before = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    sampler_seed = cfg.seed if cfg.sampler_seed is None else cfg.sampler_seed
    children = _start_workers(cfg, sampler_seed)
    try:
        _session(cfg, study, _trial_share(cfg.trials, cfg.workers, 0), sampler_seed, cfg.progress)
    except BaseException:
        for c in children:  # this command failed: its helpers stop too (their trials fail by heartbeat)
            c.terminate()
            c.join()
        raise
    for c in children:
        c.join()
    failed = [c.exitcode for c in children if c.exitcode != 0]
    if failed:
        raise HdsimError(f"workers: {len(failed)} of the {cfg.workers - 1} worker processes failed "
                         f"(exit codes {failed}); the study keeps their finished trials")
    max_iter = cfg.resolved_max_iter
    study = optuna.load_study(study_name=cfg.name, storage=study._storage)  # the other workers' trials too
    return _finish(cfg, study, done_before, max_iter)


def _problem(cfg: TuneConfig) -> dict:
    return {"F": cfg.F, "M": cfg.M, "D": cfg.D, "B": cfg.B, "queries": cfg.queries, "seed": cfg.seed,
            "max_iter": cfg.resolved_max_iter, "iter_weight": cfg.iter_weight}


def open_study(cfg: TuneConfig) -> "optuna.Study":
    """Open (or create) the study on ``cfg.storage`` with heartbeats, safely when many workers
    start at once: storage tables, study, problem record and the enqueued published point are
    created under :func:`hdsim.work_queue.creation_lock`.

    Raises:
        HdsimError: unreachable database (one line, password hidden), or a study of that
            name made for another problem.
    """
    import warnings

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    meta = _problem(cfg)
    try:
        with warnings.catch_warnings(), creation_lock(cfg.storage):
            warnings.simplefilter("ignore")  # heartbeat_interval is "experimental"
            engine_kwargs: dict = {"pool_pre_ping": True}
            if cfg.storage.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
                engine_kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
            storage = optuna.storages.RDBStorage(
                cfg.storage, engine_kwargs=engine_kwargs,
                heartbeat_interval=cfg.heartbeat_s, grace_period=3 * cfg.heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            study = optuna.create_study(storage=storage, study_name=cfg.name, direction="minimize",
                                        load_if_exists=True)
            if not study.trials and study.user_attrs.get("problem") is None:
                study.set_user_attr("problem", meta)
                start = _published_start(cfg)
                if start is not None:
                    study.enqueue_trial(start)
    except HdsimError:
        raise
    except Exception as e:  # noqa: BLE001 - storage/driver errors come in many types
        raise storage_error(f"cannot open study {cfg.name!r} in", cfg.storage, e) from None
    if study.user_attrs.get("problem") not in (None, meta):
        raise HdsimError(f"study_name: study {cfg.name!r} in {_redact(cfg.storage)!r} was run with "
                         f"{study.user_attrs['problem']}, not {meta}; use another --study-name")
    return study


def _trial_share(trials: int, workers: int, i: int) -> int:
    """Trials of worker ``i`` when ``trials`` are split among ``workers`` (the first ones take the rest)."""
    return trials // workers + (i < trials % workers)


def _worker_seed(sampler_seed: int, i: int) -> int:
    # worker 0 keeps the user's seed (a one-worker run is the plain session)
    return (sampler_seed + 7919 * i) % 2**32


def session_seed(sampler_seed: int, trials_in_study: int) -> int:
    """The TPE seed of a session that starts on a study holding ``trials_in_study`` trials.

    A hash of the pair (NumPy's ``SeedSequence``), not a sum: with ``sampler_seed + n`` two
    workers started together with seeds 1 and 2 met at seed 3 as soon as one of them saw one
    more trial in the study than the other, and proposed the same points.

    >>> session_seed(1, 2) != session_seed(2, 1)
    True
    >>> session_seed(5, 0) == session_seed(5, 0)
    True
    """
    return int(np.random.SeedSequence([int(sampler_seed), int(trials_in_study)]).generate_state(1)[0])


def _start_workers(cfg: TuneConfig, sampler_seed: int) -> list:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and the open connections
    children = [ctx.Process(target=_worker, args=(cfg, i), daemon=True) for i in range(1, cfg.workers)]
    for c in children:
        c.start()
    return children


def _worker(cfg: TuneConfig, i: int) -> None:
    """A spawned local worker: its share of the trials, no table (the parent merges it)."""
    import sys

    try:
        sampler_seed = cfg.seed if cfg.sampler_seed is None else cfg.sampler_seed
        _session(cfg, open_study(cfg), _trial_share(cfg.trials, cfg.workers, i), _worker_seed(sampler_seed, i),
                 progress=False)
    except HdsimError as e:
        print(f"error: tune worker {i + 1}/{cfg.workers}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def _session(cfg: TuneConfig, study: "optuna.Study", trials: int, sampler_seed: int, progress: bool) -> None:
    """Run ``trials`` trials of the tuning objective on ``study`` in this process."""
    if trials < 1:
        return
    codebooks = random_codebooks(cfg.F, cfg.M, cfg.D, cfg.B, cfg.seed)
    qs = make_queries(codebooks, cfg.queries, cfg.seed + 1)
    max_iter = cfg.resolved_max_iter
    ran = [0]

    def objective(trial: "optuna.Trial") -> float:
        T = trial.suggest_float("T", 0.0, T_MAX)
        A = trial.suggest_int("A", 0, cfg.A_max)
        stall_for_tests(f"trial{trial.number}", ran[0])  # after the suggestions: a killed trial has its point
        ran[0] += 1
        res = bcf_decoder(cfg.engine, codebooks, BCFConfig(T=T, A=A, max_iter=max_iter), cfg.seed + 2,
                          device=cfg.device, threads=cfg.threads)(qs.queries)
        acc = int((res.indices == qs.factors).all(dim=1).sum()) / cfg.queries  # exact fraction
        mean_it = float(res.iterations.double().mean())
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr("mean_iterations", mean_it)
        trial.set_user_attr("converged", float(res.converged.double().mean()))
        return (1.0 - acc) + cfg.iter_weight * mean_it / max_iter

    def postfix(b: "optuna.trial.FrozenTrial") -> str:
        return f"best T={b.params['T']:.4f} A={b.params['A']} err={1 - b.user_attrs['accuracy']:.4f}"

    with torch_threads(cfg.threads):
        run_trials(study, objective, trials, session_seed(sampler_seed, len(study.trials)), progress=progress,
                   desc=f"tune F={cfg.F} M={cfg.M}", postfix=postfix)


def _finish(cfg: TuneConfig, study: "optuna.Study", done_before: list, max_iter: int) -> dict:
    """Merge the study's best ``(T, A)`` into ``cfg.out`` and build the JSON summary."""
    import optuna

    best = study.best_trial
    T, A = float(best.params["T"]), int(best.params["A"])
    out = Path(cfg.out)
    if out.exists():
        table = load_table(out)
    else:
        table = {"source": "hdsim tune (Optuna TPE); linf similarity, Tc=0.9",
                 "D": cfg.D, "B": cfg.B, "similarity": "linf", "Tc": TC, "tables": {}}
    table = merge_into_table(table, cfg.F, cfg.M, T, A)
    n_done = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    table.setdefault("tuning", {}).setdefault(str(cfg.F), {})[str(cfg.M)] = {
        "error": 1.0 - best.user_attrs["accuracy"], "mean_iterations": best.user_attrs["mean_iterations"],
        "objective": best.value, "trials": n_done, "storage": _redact(cfg.storage), "study_name": cfg.name,
        "queries": cfg.queries, "seed": cfg.seed, "max_iter": max_iter, "iter_weight": cfg.iter_weight,
    }
    out.write_text(json.dumps(table, indent=1) + "\n")
    return {
        "F": cfg.F, "M": cfg.M, "D": cfg.D, "B": cfg.B,
        "T": T, "A": A,
        "error": 1.0 - best.user_attrs["accuracy"],
        "accuracy": best.user_attrs["accuracy"],
        "mean_iterations": best.user_attrs["mean_iterations"],
        "objective": best.value,
        "best_trial": best.number,
        "trials": n_done,
        "new_trials": n_done - len(done_before),
        "failed_trials": len([t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]),
        "workers": cfg.workers,
        "storage": _redact(cfg.storage),
        "study_name": cfg.name,
        "table": str(out),
        "max_iter": max_iter,
        "search_space": {"T": [0.0, T_MAX], "A": [0, cfg.A_max]},
        "objective_formula": f"(1 - accuracy) + {cfg.iter_weight} * mean_iterations / {max_iter}",
        "config": {**asdict(cfg), "storage": _redact(cfg.storage)},
    }


def run_trials(study: "optuna.Study", objective, trials: int, tpe_seed: int, *, progress: bool = True,
               desc: str = "trials", postfix=None) -> None:
    """Run ``trials`` trials of ``objective`` on ``study`` with a seeded TPE sampler and a progress
    bar on stderr: the search loop of ``hdsim tune`` and of the export's decode calibration
    (:mod:`hdsim.calibrate`).

    TPE is seeded with ``tpe_seed`` as given: a fresh in-memory study with one seed is
    deterministic (given a deterministic objective). Sessions sharing one stored study pass
    :func:`session_seed` of their sampler seed and the trials already in the study.
    ``postfix(best_trial) -> str`` labels the bar.
    """
    import optuna

    study.sampler = optuna.samplers.TPESampler(seed=tpe_seed)
    bar = tqdm(total=trials, desc=desc, unit="trial", disable=not progress)

    def callback(study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
        bar.update(1)
        if postfix is not None and any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            bar.set_postfix_str(postfix(study.best_trial))

    try:
        study.optimize(objective, n_trials=trials, callbacks=[callback], catch=())
    finally:
        bar.close()


def _redact(url: str) -> str:
    """The storage URL without its password."""
    return redact_url(url)
