"""``hdsim sweep capacity`` and ``hdsim tune`` on tiny configurations."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import run_cli
from hdsim.errors import HdsimError
from hdsim.sweep.capacity import CSV_COLUMNS, CapacitySweepConfig, default_sizes, run_capacity_sweep
from hdsim.tune import TuneConfig, merge_into_table, run_tune
from hdsim.tuned import load_table, lookup


# --- sweep -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = CapacitySweepConfig(F=(2,), M=(5, 20), D=128, B=4, queries=32, seed=0, out=str(out), progress=False)
    return out, run_capacity_sweep(cfg)


def test_sweep_writes_csv_rows_and_columns(tiny_sweep):
    out, summary = tiny_sweep
    with open(out / "capacity.csv") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [(int(r["F"]), int(r["M"])) for r in rows] == [(2, 5), (2, 20)]
    assert [int(r["problem_size"]) for r in rows] == [25, 400]
    assert all(int(r["queries"]) == 32 for r in rows)
    # default: the SPEC max_iter floor(M^(F-1)/F)
    assert [int(r["max_iter"]) for r in rows] == [2, 10]


def test_sweep_accuracy_png_and_summary(tiny_sweep):
    out, summary = tiny_sweep
    assert all(r["accuracy"] == 1.0 and r["product_accuracy"] == 1.0 for r in summary["rows"])
    assert all(r["converged"] == 1.0 for r in summary["rows"])
    png = out / "capacity.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per = summary["per_F"]["2"]
    assert per["largest_M_99"] == 20
    assert (per["T"], per["A"]) == (lookup(2, 20).T, lookup(2, 20).A)
    assert per["smallest_M_below_99"] is None
    assert json.loads((out / "capacity.json").read_text())["per_F"] == summary["per_F"]


def test_sweep_is_seeded(tiny_sweep, tmp_path):
    _, first = tiny_sweep
    again = run_capacity_sweep(CapacitySweepConfig(F=(2,), M=(20,), D=128, queries=32, seed=0, out=str(tmp_path),
                                                   plot=False, progress=False))
    keys = ("accuracy", "mean_iterations", "p95_iterations")
    assert [again["rows"][0][k] for k in keys] == [first["rows"][1][k] for k in keys]


def test_sweep_cap_and_threads_restored(tmp_path):
    import torch

    before = torch.get_num_threads()
    s = run_capacity_sweep(CapacitySweepConfig(F=(2,), M=(5, 20), D=128, queries=8, max_iter=3, threads=1,
                                               out=str(tmp_path), plot=False, progress=False))
    assert [r["max_iter"] for r in s["rows"]] == [2, 3]  # min(SPEC default, cap)
    assert all(r["mean_iterations"] <= r["max_iter"] for r in s["rows"])
    assert torch.get_num_threads() == before
    assert not (tmp_path / "capacity.png").exists()


def test_default_sizes_cover_published_table():
    table = load_table()
    # Snapshot backed by SPEC section 3's published table (the F=3 sizes listed there, one row each);
    # F=2: 32-348 is one range row (> 4x wide: its geometric midpoint round(sqrt(32 * 348)) = 106 too).
    f3 = default_sizes(3, table)
    assert f3 == (10, 16, 22, 31, 42, 58, 80, 110, 152, 209, 245, 287, 337, 396, 464)
    f2 = default_sizes(2, table)
    assert f2 == (32, 106, 348, 442, 562, 715, 909, 1155, 1468, 1866, 2371, 3014, 3831, 4870, 6190, 7867, 10000)


@pytest.mark.parametrize("kw, option", [
    ({"M": (0,)}, "M:"), ({"M": (5, -1)}, "M:"), ({"F": (4,)}, "F:"), ({"queries": 0}, "queries:"),
    ({"max_iter": 0}, "max_iter:"), ({"threads": 0}, "threads:"), ({"D": 130}, "D:"),
    ({"table": "/nonexistent/table.json"}, "tuned table"),
])
def test_sweep_bad_options(kw, option):
    with pytest.raises(HdsimError, match=option):
        CapacitySweepConfig(**kw)


def test_sweep_cli_errors_are_one_line(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "capacity", "--M", "0", "--out", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("error: M:") and err.count("\n") == 1
    code, _, err = run_cli(monkeypatch, capsys, "sweep", "capacity", "--table", str(tmp_path / "missing.json"))
    assert code == 2 and "not found" in err and err.count("\n") == 1
    code, _, err = run_cli(monkeypatch, capsys, "sweep", "capacity", "--F", "2,x")
    assert code == 2 and err.startswith("error: F:")


@pytest.mark.parametrize("command", [("sweep", "capacity"), ("sweep", "widths"), ("sweep", "imc"), ("train",)])
def test_an_unwritable_output_folder_fails_before_the_work(monkeypatch, capsys, tmp_path, command):
    """A bad --out is an error in a second, before any sweep point or epoch runs (no progress bar)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out, err = run_cli(monkeypatch, capsys, *command, "--out", str(blocker / "sub"))
    assert code == 2 and out == ""
    assert err == f"error: out: cannot write to {blocker / 'sub'}: Not a directory\n"


def test_output_dir_creates_parents_and_checks_writes(tmp_path):
    from hdsim.validation import output_dir

    assert output_dir("out", tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the write probe leaves nothing behind
    (tmp_path / "f").write_text("")
    with pytest.raises(HdsimError, match=r"^workdir: cannot write to .*/f: "):
        output_dir("workdir", tmp_path / "f")  # a file, not a folder


def test_sweep_cli_prints_json(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "sweep", "capacity", "--F", "2", "--M", "5", "--D", "128",
                           "--queries", "8", "--out", str(tmp_path))
    assert code == 0
    summary = json.loads(out)
    assert summary["per_F"]["2"]["largest_M_99"] == 5
    assert (tmp_path / "capacity.csv").exists()


# --- tune ------------------------------------------------------------------------------


def tiny_tune(tmp_path, **kw) -> TuneConfig:
    base = dict(F=2, M=12, D=128, B=4, trials=3, queries=16, seed=0, progress=False,
                storage=f"sqlite:///{tmp_path / 'study.db'}", out=str(tmp_path / "table.json"))
    return TuneConfig(**{**base, **kw})


def test_tune_writes_table_that_lookup_reads(tmp_path):
    res = run_tune(tiny_tune(tmp_path))
    assert res["trials"] == 3 and res["new_trials"] == 3
    table = load_table(tmp_path / "table.json")
    entry = lookup(2, 12, table=table)
    assert (entry.M_min, entry.M_max) == (12, 12)
    assert (entry.T, entry.A) == (res["T"], res["A"])
    # the best (T, A) re-run by hand on the study's problem gives the accuracy the tune reports
    # (the reference factorizer, float64 with the LFSR sampler: the tune decodes on the numba engine)
    from hdsim.factorizers import BCFConfig, BlockCodeFactorizer
    from hdsim.codes import random_codebooks
    from hdsim.lfsr import LFSRSampler
    from hdsim.queries import make_queries

    cfg = tiny_tune(tmp_path)
    assert cfg.engine == "numba"
    cb = random_codebooks(2, 12, 128, 4, seed=cfg.seed)
    qs = make_queries(cb, cfg.queries, seed=cfg.seed + 1)
    got = BlockCodeFactorizer(cb, BCFConfig(T=res["T"], A=res["A"]), sampler=LFSRSampler(cfg.seed + 2),
                              dtype=torch.float64).factorize(qs.queries)
    assert got.accuracy(qs.factors) == pytest.approx(res["accuracy"])
    # the sweep accepts the same file
    cfg = CapacitySweepConfig(F=(2,), table=str(tmp_path / "table.json"), D=128, progress=False)
    assert cfg.sizes(2) == (12,)


def test_tune_resumes_study_and_merges(tmp_path):
    first = run_tune(tiny_tune(tmp_path))
    second = run_tune(tiny_tune(tmp_path, trials=2))
    assert second["trials"] == first["trials"] + 2 == 5
    assert second["new_trials"] == 2
    # a second worker: same problem, own sampler seed -> joins the study
    third = run_tune(tiny_tune(tmp_path, trials=1, sampler_seed=7))
    assert third["trials"] == 6
    # a different problem under the same study name is refused
    with pytest.raises(HdsimError, match="study_name:"):
        run_tune(tiny_tune(tmp_path, trials=1, queries=8))
    # another M goes into the same table next to the first
    run_tune(tiny_tune(tmp_path, M=6, storage=f"sqlite:///{tmp_path / 'other.db'}"))
    rows = load_table(tmp_path / "table.json")["tables"]["2"]
    assert [(r["M_min"], r["M_max"]) for r in rows] == [(6, 6), (12, 12)]
    assert load_table(tmp_path / "table.json")["tuning"]["2"]["12"]["trials"] == 6


def test_tune_same_seed_same_best(tmp_path):
    runs = {}
    for name, seed, engine in (("a", 0, None), ("b", 0, None), ("c", 1, None), ("d", 0, "reference")):
        (tmp_path / name).mkdir()
        runs[name] = run_tune(tiny_tune(tmp_path / name, M=30, max_iter=8, seed=seed, engine=engine))
    a, b, c, d = runs["a"], runs["b"], runs["c"], runs["d"]
    assert (a["T"], a["A"], a["objective"]) == (b["T"], b["A"], b["objective"])
    # the reference factorizer decides as the numba engine: the same trials, the same best
    assert (a["T"], a["A"], a["objective"]) == (d["T"], d["A"], d["objective"])
    assert a["T"] != c["T"]  # the seed does reach the sampler


def test_sessions_of_one_study_never_share_a_tpe_seed():
    """CI's failure (two PostgreSQL workers, sampler seeds 1 and 2, the same three points): the
    TPE seed was sampler_seed + trials in the study, so seed 1 seeing one more trial than seed 2
    met it at 3. Every (sampler seed, trials in study) pair in a 64 x 64 grid must get its own seed."""
    from hdsim.tune import session_seed

    seeds = {session_seed(s, n) for s in range(64) for n in range(64)}
    assert len(seeds) == 64 * 64
    assert all(0 <= x < 2**32 for x in seeds)  # what optuna's TPESampler (numpy RandomState) takes


def test_merge_splits_a_range_row():
    table = {"tables": {"2": [{"M_min": 32, "M_max": 348, "T": 0.0, "A": 0}]}}
    merged = merge_into_table(table, 2, 100, 0.005, 40)
    rows = merged["tables"]["2"]
    assert [(r["M_min"], r["M_max"], r["A"]) for r in rows] == [(32, 99, 0), (100, 100, 40), (101, 348, 0)]
    assert lookup(2, 100, table=merged).A == 40 and lookup(2, 200, table=merged).A == 0


@pytest.mark.parametrize("kw, option", [
    ({"trials": 0}, "trials:"), ({"M": 0}, "M:"), ({"queries": 0}, "queries:"),
    ({"storage": "not a url"}, "storage:"), ({"storage": "nosuchdb://host/x"}, "storage:"),
    ({"storage": "sqlite:////nonexistent_dir_hdsim/x.db"}, "storage:"), ({"iter_weight": -1.0}, "iter_weight:"),
    ({"engine": "gpu"}, "engine: expected one of"), ({"engine": "numba", "device": "cuda"}, "engine|device"),
])
def test_tune_bad_options(tmp_path, kw, option):
    with pytest.raises(HdsimError, match=option):
        tiny_tune(tmp_path, **kw)


def test_tune_rejects_table_for_other_dimension(tmp_path):
    (tmp_path / "table.json").write_text(json.dumps({"D": 512, "B": 4, "tables": {}}))
    with pytest.raises(HdsimError, match="out: .*D=512"):
        tiny_tune(tmp_path)


def test_tune_cli(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--trials", "0")
    assert code == 2 and err.startswith("error: trials:") and err.count("\n") == 1
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--storage", "bogus://x")
    assert code == 2 and err.startswith("error: storage:") and err.count("\n") == 1
    code, out, _ = run_cli(monkeypatch, capsys, "tune", "--F", "2", "--M", "8", "--D", "128", "--trials", "2",
                           "--queries", "8", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                           "--out", str(tmp_path / "t.json"))
    assert code == 0
    res = json.loads(out)
    assert res["trials"] == 2 and res["storage"].startswith("sqlite:///")
    assert lookup(2, 8, table=load_table(tmp_path / "t.json")).A == res["A"]
