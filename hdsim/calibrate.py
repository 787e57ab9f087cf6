"""Decode settings calibrated on a network's own queries, and risk-coverage curves.

A factorizer head *abstains* on a query it does not decode with confidence: the
BCF when no iteration within ``max_iter`` lifts every factor's similarity above
``Tc`` (status ``not-converged``), the sparse resonator when its estimates still
change at ``max_iter``; either abstains when it lands on a null product. The
published ``(T, A)`` were tuned on synthetic exact queries; a network's queries
are noisier, and ``Tc = 0.9`` leaves most of them undecided (issue 12: 62% of
two-digit and 17.6% of three-digit test images decided). This module picks the
settings on held-out *validation* queries of the network instead.

Metrics of a decode against the true classes ``y`` (:func:`selective_metrics`):

* ``classified`` (coverage): fraction of queries decided (converged, not a null product);
* ``accuracy_classified``: fraction of the decided ones that are right;
* ``accuracy``: fraction of *all* queries decided and right, an abstention
  counting as wrong (``classified x accuracy_classified``).

Objective of the search (maximized; :func:`calibrate_decode`)::

    coverage >= floor:  objective = accuracy - iter_weight * mean_iterations / max_iter_cap
    coverage <  floor:  objective = coverage - 2     (below every feasible value)

that is, the accuracy of the decided queries over all of them (an abstention
counts as wrong) at a coverage floor (default 0.97, so that the test images,
which the search never sees, keep a margin over 95%). The iteration term (at
most ``iter_weight``, default 0.002: a fifth of one query in a hundred) breaks
ties in favour of fast decodes. Infeasible trials rank by their coverage, which
steers the search toward the floor.

The search is Optuna TPE through :func:`hdsim.tune.run_trials` (the loop of
``hdsim tune``) on an in-memory study seeded with ``seed``: the same queries and
seed give the same settings. Enqueued first: the settings the export would use
without calibration, so the result is never worse on the validation queries
than the uncalibrated default.

Search spaces (a parameter given in ``fixed`` is held, not searched):

* BCF (fixed-point decode, :class:`hdsim.fixed.FixedBCF`, the runner's default):
  ``T`` in ``[0, 0.03]``, ``A`` in ``[0, min(max M, 512)]``, ``Tc`` in
  ``[0.01, 0.95]`` (``linf``; a poorly trained network's queries are
  nearly uniform blocks whose similarities sit near ``1/L``), ``max_iter`` in ``[2, 128]`` (log scale).
* Sparse resonator (:func:`hdsim.sparse_resonator_numpy.sparse_resonator_decode`, restarts on,
  per-query content ids): ``a`` in ``[1, max M]``, ``max_iter`` in ``[2, 2000]`` (log scale),
  ``Tc`` in ``[0, 1]`` (fraction of agreeing segments a factor needs to stop; 0 is the seed's rule).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hdsim.errors import HdsimError
from hdsim.validation import check_int, check_seed

__all__ = ["CalibrationConfig", "Param", "selective_metrics", "calibrate_decode", "calibrate_bcf",
           "calibrate_sparse_resonator", "bcf_decoder", "sparse_resonator_decoder", "coverage_curve",
           "BCF_SPACE", "SPARSE_SPACE"]


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``kind`` ``"float"`` or ``"int"``, range ``[low, high]``."""

    name: str
    kind: str
    low: float
    high: float
    log: bool = False


BCF_SPACE = (Param("T", "float", 0.0, 0.03), Param("A", "int", 0, 512), Param("Tc", "float", 0.01, 0.95),
             Param("max_iter", "int", 2, 128, log=True))
SPARSE_SPACE = (Param("a", "int", 1, 512), Param("max_iter", "int", 2, 2000, log=True),
                Param("Tc", "float", 0.0, 1.0))


@dataclass(frozen=True)
class CalibrationConfig:
    """How the decode settings are searched (validated on construction).

    Attributes:
        trials: Optuna trials (enqueued starting points included).
        coverage_floor: least fraction of validation queries that must be decided.
        iter_weight: weight of ``mean_iterations / max_iter_cap`` (a tie-breaker).
        seed: TPE seed.
        progress: a progress bar on stderr.
    """

    trials: int = 40
    coverage_floor: float = 0.97
    iter_weight: float = 0.002
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_int("trials", self.trials)
        check_seed("seed", self.seed)
        if not 0.0 <= self.coverage_floor <= 1.0:
            raise HdsimError(f"coverage_floor: must be in [0, 1], got {self.coverage_floor}")
        if not 0.0 <= self.iter_weight < 1.0:
            raise HdsimError(f"iter_weight: must be in [0, 1), got {self.iter_weight}")


def selective_metrics(classes: np.ndarray, converged: np.ndarray, y: np.ndarray) -> dict:
    """Coverage and accuracies of decisions that may abstain.

    ``classes`` holds the decoded class per query (``-1``: a null product), ``converged``
    whether the decode met its stopping rule. A query is *classified* when it converged
    on a class (``>= 0``); an abstention counts as wrong in ``accuracy``.

    Shapes:
        classes, converged, y: ``(N,)``

    Example:
        >>> m = selective_metrics(np.array([3, 1, -1, 2]), np.array([True, False, True, True]),
        ...                       np.array([3, 1, 0, 0]))
        >>> m["classified"], m["accuracy_classified"], m["accuracy"]
        (0.5, 0.5, 0.25)
    """
    classes, converged, y = np.asarray(classes), np.asarray(converged, bool), np.asarray(y)
    if not (classes.shape == converged.shape == y.shape and classes.ndim == 1 and classes.size):
        raise HdsimError(f"metrics: classes, converged and y must be equal (N,) arrays with N >= 1, got "
                         f"{classes.shape}, {converged.shape}, {y.shape}")
    decided = converged & (classes >= 0)
    correct = decided & (classes == y)
    n_dec = int(decided.sum())
    return {"classified": float(decided.mean()), "accuracy": float(correct.mean()),
            "accuracy_classified": float(correct.sum() / n_dec) if n_dec else 0.0,
            "accuracy_last_estimate": float(((classes == y)).mean()), "queries": int(y.size)}


Decode = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]  # settings -> indices, iterations, converged


def calibrate_decode(decode: Decode, classes_of: Callable[[np.ndarray], np.ndarray], y: np.ndarray,
                     space: tuple[Param, ...], cfg: CalibrationConfig, *, fixed: dict | None = None,
                     start: list[dict] | None = None) -> dict:
    """Search ``space`` (less the ``fixed`` parameters) for the settings that maximize the objective
    of the module docstring; ``decode(settings)`` decodes the validation queries.

    Returns:
        ``{"settings": best (fixed included), "validation": selective metrics and mean iterations
        of the best, "objective", "trials", "search_space", "objective_formula", "coverage_floor",
        "feasible": whether the best meets the floor, "seconds"}``.
    """
    import optuna

    from hdsim.tune import run_trials

    fixed = dict(fixed or {})
    searched = [p for p in space if p.name not in fixed]
    cap = max((p.high for p in space if p.name == "max_iter"), default=1)
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for point in start or []:  # clipped into the space (the published A may exceed M)
        study.enqueue_trial({p.name: type(point[p.name])(min(max(point[p.name], p.low), p.high))
                             for p in searched if p.name in point}, skip_if_exists=True)

    def objective(trial: "optuna.Trial") -> float:
        settings = dict(fixed)
        for p in searched:
            if p.kind == "int":
                settings[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                settings[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        idx, iters, conv = decode(settings)
        m = selective_metrics(classes_of(idx), conv, y)
        m["mean_iterations"] = float(np.mean(iters))
        trial.set_user_attr("metrics", m)
        trial.set_user_attr("settings", settings)
        if m["classified"] < cfg.coverage_floor:
            return m["classified"] - 2.0
        return m["accuracy"] - cfg.iter_weight * m["mean_iterations"] / cap

    def postfix(b: "optuna.trial.FrozenTrial") -> str:
        m = b.user_attrs["metrics"]
        return f"best accuracy={m['accuracy']:.4f} classified={m['classified']:.3f}"

    t0 = time.perf_counter()
    # seed + enqueued starting points: the calibration's seeding since its first release, kept so
    # that published calibrations reproduce (a private in-memory study: no sessions to collide)
    run_trials(study, objective, cfg.trials, cfg.seed + len(study.trials), progress=cfg.progress,
               desc="calibrate decode",
               postfix=postfix)
    best = study.best_trial
    return {"settings": best.user_attrs["settings"], "validation": best.user_attrs["metrics"],
            "objective": float(best.value), "feasible": best.value > -1.0, "trials": len(study.trials),
            "coverage_floor": cfg.coverage_floor, "seed": cfg.seed,
            "search_space": {p.name: [p.low, p.high] + (["log"] if p.log else []) for p in searched},
            "fixed": fixed,
            "objective_formula": (f"accuracy (abstention = wrong) - {cfg.iter_weight} * mean_iterations / {cap:g} "
                                  f"if classified >= {cfg.coverage_floor}, else classified - 2"),
            "seconds": round(time.perf_counter() - t0, 2)}


# ---- the two decoders ---------------------------------------------------------------------------
def bcf_decoder(queries: np.ndarray, codebooks, widths, *, lfsr_seed: int = 1, similarity: str = "linf") -> Decode:
    """``settings {T, A, Tc, max_iter} -> (indices, iterations, converged)`` of the fixed-point BCF
    (:class:`hdsim.fixed.FixedBCF`; its compiled twin where that applies: the same integers)."""
    import warnings

    import torch

    from hdsim.factorizers import BCFConfig
    from hdsim.fixed import FixedBCF
    from hdsim.fixed.compiled import compiled_decoder

    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    qt = torch.from_numpy(q32)

    def decode(s: dict):
        cfg = BCFConfig(T=float(s["T"]), A=int(s["A"]), Tc=float(s["Tc"]), max_iter=int(s["max_iter"]),
                        similarity=similarity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = FixedBCF(codebooks, cfg, widths, seed=lfsr_seed)
            fast = compiled_decoder(model)
            if fast is not None:
                idx, iters, conv, _ = fast.decode_arrays(q32)
                return np.asarray(idx), np.asarray(iters), np.asarray(conv)
            res = model.factorize(qt, batch_size=256)
        return res.indices.numpy(), res.iterations.numpy(), res.converged.numpy()

    return decode


def sparse_resonator_decoder(offsets: np.ndarray, codebooks: list[np.ndarray], L: int, *, seed: int = 0) -> Decode:
    """``settings {a, max_iter, Tc} -> (indices, iterations, converged)`` of the NumPy sparse resonator
    (restarts on; each query's draws keyed by its content, as the runner decodes)."""
    from hdsim.sparse_resonator_numpy import content_ids, sparse_resonator_decode

    ids = content_ids(offsets)

    def decode(s: dict):
        idx, iters, conv, _ = sparse_resonator_decode(offsets, codebooks, L, a=int(s["a"]),
                                                      max_iter=int(s["max_iter"]), seed=seed, ids=ids,
                                                      Tc=float(s.get("Tc", 0.0)), restarts=True)
        return idx, iters, conv

    return decode


def calibrate_bcf(queries: np.ndarray, y: np.ndarray, classes_of, codebooks, widths, cfg: CalibrationConfig, *,
                  default: dict, fixed: dict | None = None, lfsr_seed: int = 1) -> dict:
    """Calibrate ``(T, A, Tc, max_iter)`` of the fixed-point BCF on validation ``queries`` ``(N, D)``
    with classes ``y``; ``default`` (the uncalibrated settings) is the first trial."""
    a_cap = min(max(codebooks.sizes), 512)
    space = tuple(Param(p.name, p.kind, p.low, a_cap) if p.name == "A" else p for p in BCF_SPACE)
    start = [dict(default), {**default, "T": 0.0, "A": 0, "Tc": 0.5}]
    return calibrate_decode(bcf_decoder(queries, codebooks, widths, lfsr_seed=lfsr_seed), classes_of, y, space,
                            cfg, fixed=fixed, start=start)


def calibrate_sparse_resonator(offsets: np.ndarray, y: np.ndarray, classes_of, codebooks: list[np.ndarray], L: int,
                               cfg: CalibrationConfig, *, default: dict, fixed: dict | None = None,
                               seed: int = 0) -> dict:
    """Calibrate ``(a, max_iter, Tc)`` of the sparse resonator on validation segment codes ``(N, B)``."""
    m_cap = max(int(x.shape[0]) for x in codebooks)
    space = tuple(Param(p.name, p.kind, p.low, m_cap) if p.name == "a" else p for p in SPARSE_SPACE)
    return calibrate_decode(sparse_resonator_decoder(offsets, codebooks, L, seed=seed), classes_of, y, space, cfg,
                            fixed=fixed, start=[dict(default)])


def coverage_curve(decode: Decode, settings: dict, classes_of, y: np.ndarray, Tc_values) -> list[dict]:
    """Risk-coverage curve of a BCF decode: for each ``Tc``, the decode with ``settings`` but that
    convergence threshold. Rows: ``Tc``, ``classified``, ``accuracy_classified``, ``accuracy``,
    ``mean_iterations``, ``selected`` (the row of ``settings["Tc"]``)."""
    rows = []
    for tc in Tc_values:
        idx, iters, conv = decode({**settings, "Tc": float(tc)})
        m = selective_metrics(classes_of(idx), conv, y)
        rows.append({"Tc": float(tc), "classified": m["classified"], "accuracy_classified": m["accuracy_classified"],
                     "accuracy": m["accuracy"], "mean_iterations": float(np.mean(iters)),
                     "selected": bool(abs(float(tc) - float(settings["Tc"])) < 1e-12)})
    return rows
