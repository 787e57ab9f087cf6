"""Decode calibration (hdsim.calibrate): metrics, determinism, and the search's result checked by
re-decoding with an independent path (the torch FixedBCF model, hand-computed metrics)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from hdsim.calibrate import CalibrationConfig, calibrate_bcf, coverage_curve, bcf_decoder, selective_metrics
from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers import BCFConfig
from hdsim.fixed import FixedBCF, FixedWidths
from hdsim.queries import QueryNoise, make_queries

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F, M, D, B = 2, 10, 256, 4


def _classes(idx: np.ndarray) -> np.ndarray:
    return np.asarray(idx)[:, 0] * M + np.asarray(idx)[:, 1]  # mixed radix, no null product


@pytest.fixture(scope="module")
def problem():
    cb = random_codebooks(F, M, D, B, seed=3)
    qs = make_queries(cb, 300, seed=4, noise=QueryNoise("gaussian", 0.04))
    y = _classes(qs.factors.numpy())
    return cb, qs.queries.float().numpy(), y


def _hand_metrics(idx, conv, y):
    cls = _classes(idx)
    decided = [bool(c) for c in conv]
    right = [d and int(a) == int(b) for d, a, b in zip(decided, cls, y)]
    n_dec = sum(decided)
    return sum(decided) / len(y), sum(right) / len(y), (sum(right) / n_dec if n_dec else 0.0)


def test_selective_metrics_by_hand():
    m = selective_metrics(np.array([4, 4, -1, 7, 9]), np.array([1, 1, 1, 0, 1], bool), np.array([4, 5, 0, 7, 9]))
    # decided: rows 0, 1, 4 (row 2 a null product, row 3 not converged); right among them: 0 and 4
    assert m["classified"] == 3 / 5 and m["accuracy"] == 2 / 5 and m["accuracy_classified"] == 2 / 3
    assert m["accuracy_last_estimate"] == 3 / 5  # rows 0, 3, 4 name the right class
    with pytest.raises(HdsimError, match="^metrics:"):
        selective_metrics(np.zeros(3), np.zeros(2, bool), np.zeros(3))


def test_calibration_is_deterministic_and_its_report_is_what_the_settings_decode(problem):
    cb, q, y = problem
    cfg = CalibrationConfig(trials=10, coverage_floor=0.9, seed=5, progress=False)
    default = {"T": 0.0, "A": 0, "Tc": 0.9, "max_iter": 5}
    a = calibrate_bcf(q, y, _classes, cb, FixedWidths(), cfg, default=default)
    b = calibrate_bcf(q, y, _classes, cb, FixedWidths(), cfg, default=default)
    assert a["settings"] == b["settings"] and a["validation"] == b["validation"]
    s = a["settings"]
    assert 0.0 <= s["T"] <= 0.03 and 0 <= s["A"] <= M and 0.01 <= s["Tc"] <= 0.95 and 2 <= s["max_iter"] <= 128
    # oracle: the torch FixedBCF model with the chosen settings, metrics counted by hand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = FixedBCF(cb, BCFConfig(T=s["T"], A=s["A"], Tc=s["Tc"], max_iter=s["max_iter"]), FixedWidths(),
                       seed=1).factorize(torch.from_numpy(q))
    cov, acc, acc_cls = _hand_metrics(res.indices.numpy(), res.converged.numpy(), y)
    v = a["validation"]
    assert (v["classified"], v["accuracy"]) == (cov, acc) and v["accuracy_classified"] == pytest.approx(acc_cls)
    assert v["mean_iterations"] == pytest.approx(float(res.iterations.double().mean()))
    # the default settings were the first trial, so the result is never worse than them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = FixedBCF(cb, BCFConfig(T=0.0, A=0, Tc=0.9, max_iter=5), FixedWidths(), seed=1).factorize(
            torch.from_numpy(q))
    d_cov, d_acc, _ = _hand_metrics(d.indices.numpy(), d.converged.numpy(), y)
    d_obj = (d_acc - cfg.iter_weight * float(d.iterations.double().mean()) / 128) if d_cov >= 0.9 else d_cov - 2
    assert a["objective"] >= d_obj
    assert a["feasible"] and v["classified"] >= 0.9
    # a parameter given is held
    held = calibrate_bcf(q, y, _classes, cb, FixedWidths(), CalibrationConfig(trials=4, seed=5, progress=False),
                         default=default, fixed={"Tc": 0.8, "A": 0})
    assert held["settings"]["Tc"] == 0.8 and held["settings"]["A"] == 0 and "Tc" not in held["search_space"]


def test_an_unreachable_floor_is_reported_infeasible(problem):
    cb, q, y = problem
    # nearly uniform queries: no setting decides 100% of them correctly or at all
    flat = np.full_like(q, 1.0 / (D // B))
    res = calibrate_bcf(flat, y, _classes, cb, FixedWidths(), CalibrationConfig(trials=3, coverage_floor=1.0,
                        progress=False), default={"T": 0.0, "A": 0, "Tc": 0.9, "max_iter": 5})
    assert res["validation"]["classified"] < 1.0 and not res["feasible"] and res["objective"] < -1.0


def test_coverage_curve_rows_match_independent_decodes(problem):
    cb, q, y = problem
    settings = {"T": 0.0, "A": 0, "Tc": 0.6, "max_iter": 8}
    rows = coverage_curve(bcf_decoder(q, cb, FixedWidths()), settings, _classes, y, [0.3, 0.6, 0.9])
    assert [r["Tc"] for r in rows] == [0.3, 0.6, 0.9] and [r["selected"] for r in rows] == [False, True, False]
    for r in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = FixedBCF(cb, BCFConfig(T=0.0, A=0, Tc=r["Tc"], max_iter=8), FixedWidths()).factorize(
                torch.from_numpy(q))
        cov, acc, acc_cls = _hand_metrics(res.indices.numpy(), res.converged.numpy(), y)
        assert (r["classified"], r["accuracy"]) == (cov, acc) and r["accuracy_classified"] == pytest.approx(acc_cls)
    # a higher threshold never decides more queries (convergence needs every factor above Tc)
    assert rows[0]["classified"] >= rows[1]["classified"] >= rows[2]["classified"]


@pytest.mark.parametrize("kw, match", [(dict(trials=0), "^trials:"), (dict(coverage_floor=1.5), "^coverage_floor:"),
                                       (dict(seed=-1), "^seed:"), (dict(iter_weight=-0.1), "^iter_weight:")])
def test_bad_calibration_config_is_a_one_line_error(kw, match):
    with pytest.raises(HdsimError, match=match):
        CalibrationConfig(**kw)
