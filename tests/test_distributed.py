"""Scale-out: sweeps and tuning shared through a database by several worker processes.

A throwaway PostgreSQL server (Debian ``postgresql``: ``initdb`` in a temporary folder, a free port on
127.0.0.1, stopped at the end) serves the multi-process tests; each test gets its own empty database.
The oracle of a shared sweep is the single-process sweep (same rows in the same order; only the wall
time columns differ), and the bookkeeping of the points table (one row per point, claim counts).
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING_COLUMNS = {"seconds", "queries_per_s"}  # measured in whichever process ran the point
PG_MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
              "(scripts/test.sh installs it)")


def _pg_bindir() -> Path | None:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """``(host, port)`` of a PostgreSQL server run for this session (trust auth on loopback)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(PG_MISSING)
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed: pip install 'hdsim[postgres]'")
    # not under pytest's tmp folder: as root that is private to root, and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="hdsim-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as user postgres")
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode:
            pytest.fail(f"{Path(args[0]).name} failed: {proc.stderr[-1500:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
        yield "127.0.0.1", port
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """URL of a new, empty database on the session's server (the password is ignored: trust auth)."""
    import psycopg

    host, port = pg_server
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"postgresql://postgres@{host}:{port}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres:pw-not-shown@{host}:{port}/{name}"


def _hdsim(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hdsim.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]


def _points(url: str, study: str) -> list[dict]:
    from hdsim.work_queue import WorkQueue

    q = WorkQueue(url, study)
    try:
        return q.points()
    finally:
        q.close()


CAP_ARGS = ("--F", "2", "--M", "5,8,12,16,20,24", "--D", "128", "--queries", "16", "--seed", "3")


@pytest.fixture(scope="module")
def capacity_single(tmp_path_factory):
    """The oracle: the same capacity sweep in one process, without a database."""
    from hdsim.sweep.capacity import CapacitySweepConfig, run_capacity_sweep

    out = tmp_path_factory.mktemp("single")
    run_capacity_sweep(CapacitySweepConfig(F=(2,), M=(5, 8, 12, 16, 20, 24), D=128, queries=16, seed=3,
                                           out=str(out), plot=False, progress=False))
    return _csv(out / "capacity.csv")


# --- two workers started together on an empty database ----------------------------------------------
def test_two_sweep_workers_started_together_share_the_grid(pg_url, tmp_path, capacity_single):
    common = (*CAP_ARGS, "--storage", pg_url, "--study-name", "cap")
    procs = [_hdsim("sweep", "capacity", *common, "--out", str(tmp_path / f"w{i}")) for i in range(2)]
    res = [_finish(p) for p in procs]
    # both wrote the merged outputs, equal to the single-process sweep (same rows, same order)
    for i in range(2):
        assert _csv(tmp_path / f"w{i}" / "capacity.csv") == capacity_single
        assert (tmp_path / f"w{i}" / "capacity.png").stat().st_size > 0
    points = _points(pg_url, "cap")
    # claim order: the most expensive first (M^(F-1) at F=2: largest M first), the CSV keeps grid order
    assert [p["key"] for p in points] == [f"F2-M{m}" for m in (24, 20, 16, 12, 8, 5)]
    assert all(p["status"] == "done" and p["attempts"] == 1 for p in points)  # each computed once
    assert sum(r["shared"]["recorded_here"] for r in res) == 6
    assert all("pw-not-shown" not in json.dumps(r) for r in res)


def test_two_tune_workers_started_together_on_an_empty_database(pg_url, tmp_path):
    """The issue's failure: two workers creating Optuna's schema at once (UniqueViolation on
    pg_type_typname_nsp_index). Both must run, and the study holds both sessions' trials."""
    import optuna

    common = ("--F", "2", "--M", "8", "--D", "128", "--queries", "8", "--trials", "3",
              "--storage", pg_url, "--study-name", "bars")
    procs = [_hdsim("tune", *common, "--sampler-seed", str(i), "--out", str(tmp_path / f"t{i}.json"))
             for i in (1, 2)]
    res = [_finish(p) for p in procs]
    study = optuna.load_study(study_name="bars", storage=pg_url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(done) == 6
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert len({(t.params["T"], t.params["A"]) for t in done}) == 6  # distinct sampler seeds: no duplicate
    assert max(r["trials"] for r in res) == 6


# --- a worker killed mid-point ---------------------------------------------------------------------
def _wait_for(folder: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    t0 = time.time()
    while not any(folder.iterdir()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, "the worker never reached its stalled point"
        time.sleep(0.1)


def test_killed_sweep_worker_point_is_redone_once_and_finished_results_kept(pg_url, tmp_path, capacity_single):
    from hdsim.sweep.capacity import CapacitySweepConfig
    from hdsim.sweep.shared import ShareConfig, run_shared_sweep

    stall = tmp_path / "stall"
    stall.mkdir()
    # worker A computes its first point, claims the second and hangs there (test hook), then is killed
    a = _hdsim("sweep", "capacity", *CAP_ARGS, "--storage", pg_url, "--study-name", "cap", "--lease", "2",
               "--out", str(tmp_path / "a"),
               env={"HDSIM_TEST_STALL_S": "120", "HDSIM_TEST_STALL_AFTER": "1", "HDSIM_TEST_STALL_DIR": str(stall)})
    _wait_for(stall, a)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    before = _points(pg_url, "cap")
    assert [p["status"] for p in before[:2]] == ["done", "running"]
    assert {p["status"] for p in before[2:]} == {"queued"}
    killed_owner = before[1]["owner"]
    assert before[0]["finished_by"] == killed_owner

    # the next run takes the free points, then the killed one once its lease has expired
    cfg = CapacitySweepConfig(F=(2,), M=(5, 8, 12, 16, 20, 24), D=128, queries=16, seed=3,
                              out=str(tmp_path / "b"), plot=False, progress=False)
    share = ShareConfig(storage=pg_url, study_name="cap", lease_s=2, poll_s=0.2, progress=False)
    res = run_shared_sweep("capacity", cfg, share)
    after = _points(pg_url, "cap")
    assert [p["attempts"] for p in after] == [1, 2, 1, 1, 1, 1]  # the killed point redone once
    assert after[0]["finished_by"] == killed_owner  # the finished result kept, not recomputed
    assert all(p["status"] == "done" for p in after)
    assert res["shared"]["recorded_here"] == 5 and res["shared"]["redone"] == 1
    assert _csv(tmp_path / "b" / "capacity.csv") == capacity_single

    # a second run resumes: nothing left to compute, the same outputs
    res2 = run_shared_sweep("capacity", cfg, share)
    assert res2["shared"]["recorded_here"] == 0 and res2["shared"]["attempts"] == 7
    assert _csv(tmp_path / "b" / "capacity.csv") == capacity_single


def test_killed_tune_trial_is_failed_and_the_study_goes_on(pg_url, tmp_path):
    import optuna

    from hdsim.tune import TuneConfig, run_tune

    stall = tmp_path / "stall"
    stall.mkdir()
    common = dict(F=2, M=8, D=128, queries=8, storage=pg_url, study_name="bars", heartbeat_s=1)
    a = _hdsim("tune", "--F", "2", "--M", "8", "--D", "128", "--queries", "8", "--trials", "3",
               "--storage", pg_url, "--study-name", "bars", "--heartbeat", "1", "--out", str(tmp_path / "a.json"),
               env={"HDSIM_TEST_STALL_S": "120", "HDSIM_TEST_STALL_AFTER": "1", "HDSIM_TEST_STALL_DIR": str(stall)})
    _wait_for(stall, a)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    time.sleep(3.5)  # past the grace period (3 heartbeats) of the killed trial's last heartbeat
    res = run_tune(TuneConfig(**common, trials=2, sampler_seed=9, out=str(tmp_path / "b.json"), progress=False))
    trials = optuna.load_study(study_name="bars", storage=pg_url).trials
    killed = trials[1]
    assert killed.state == optuna.trial.TrialState.FAIL  # marked failed by the heartbeat check
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == killed.params  # the killed point is evaluated after all
    assert trials[0].state == optuna.trial.TrialState.COMPLETE  # finished before the kill: kept
    assert [t.state.name for t in trials].count("COMPLETE") == 3 and len(trials) == 4
    assert res["failed_trials"] == 1 and res["trials"] == 3


# --- database down ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ("sweep", "capacity", *CAP_ARGS, "--study-name", "s"),
    ("tune", "--F", "2", "--M", "8", "--D", "128", "--trials", "1"),
])
def test_database_down_is_a_one_line_error_without_the_password(command, monkeypatch, capsys, tmp_path):
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed: pip install 'hdsim[postgres]'")
    port = _free_port()  # nothing listens there
    url = f"postgresql+psycopg://hdsim:hunter2-secret@127.0.0.1:{port}/hdsim"
    out = ("--out", str(tmp_path / ("o.json" if command[0] == "tune" else "o")))
    code, stdout, err = run_cli(monkeypatch, capsys, *command, "--storage", url, *out)
    assert code == 2 and stdout == ""
    assert err.startswith("error: storage:") and err.count("\n") == 1, err
    assert f"127.0.0.1:{port}" in err and "hunter2-secret" not in err and "***" in err


# --- every point is independent of the others (SQLite, one machine) ---------------------------------
def test_widths_and_imc_points_do_not_depend_on_order_or_process(tmp_path):
    """Each point computed alone in a fresh cache, in reverse order, equals the single-process sweep;
    and the shared sweep through a SQLite file gives the same CSV."""
    from hdsim.bench.fixed import FixedBenchConfig
    from hdsim.sweep import imc, widths
    from hdsim.sweep.shared import ShareConfig, run_shared_sweep

    wcfg = widths.WidthSweepConfig(bits_min=5, bits_max=8, out=str(tmp_path / "w1"),
                                   base=FixedBenchConfig(M=12, F=2, D=128, queries=16, seed=1))
    icfg = imc.ImcSweepConfig(M=6, D=128, queries=4, t_points=2, scales=(0.5, 2.0), max_iter=30, seed=2,
                              out=str(tmp_path / "i1"), plot=False, progress=False)
    w_rows = widths.run_width_sweep(wcfg)["rows"]
    i_rows = imc.run_imc_sweep(icfg)["rows"]

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]

    alone = [widths.run_point(wcfg, b, {})["row"] for b in reversed(widths.grid(wcfg))]
    assert strip(alone[::-1]) == strip(w_rows)
    alone = [imc.run_point(icfg, p, {}) for p in reversed(imc.grid(icfg))]
    assert strip(alone[::-1]) == strip(i_rows)

    db = f"sqlite:///{tmp_path / 'work.db'}"
    from dataclasses import replace

    for kind, cfg, name in (("widths", replace(wcfg, out=str(tmp_path / "w2")), "widths.csv"),
                            ("imc", replace(icfg, out=str(tmp_path / "i2")), "imc.csv")):
        res = run_shared_sweep(kind, cfg, ShareConfig(storage=db, study_name=kind, progress=False))
        assert res["shared"]["recorded_here"] == res["shared"]["points"]
        assert _csv(Path(cfg.out) / name) == _csv(tmp_path / (kind[0] + "1") / name)


def test_study_with_other_options_is_refused(tmp_path):
    from hdsim.errors import HdsimError
    from hdsim.sweep.capacity import CapacitySweepConfig
    from hdsim.sweep.shared import ShareConfig, run_shared_sweep

    share = ShareConfig(storage=f"sqlite:///{tmp_path / 'w.db'}", study_name="cap", progress=False)
    run_shared_sweep("capacity", CapacitySweepConfig(F=(2,), M=(5,), D=128, queries=4, out=str(tmp_path / "a"),
                                                     plot=False, progress=False), share)
    with pytest.raises(HdsimError, match="study_name: .*created with config"):
        run_shared_sweep("capacity", CapacitySweepConfig(F=(2,), M=(5,), D=128, queries=8, out=str(tmp_path / "b"),
                                                         plot=False, progress=False), share)


def test_local_workers_through_sqlite(monkeypatch, capsys, tmp_path, capacity_single):
    """``--workers 2`` without ``--storage``: a spawned worker beside this one, a SQLite file in --out."""
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "capacity", *CAP_ARGS, "--workers", "2",
                             "--out", str(tmp_path))
    assert code == 0, err
    res = json.loads(out)
    assert res["shared"]["worker_exit_codes"][0] in (0, -signal.SIGTERM) and res["shared"]["recorded_here"] == 6
    assert _csv(tmp_path / "capacity.csv") == capacity_single


# --- DDP training: two processes reach the accuracy of one ------------------------------------------
@pytest.mark.slow  # one more TINY training (2 gloo processes): ~1 min on 2 idle cores, ~3 min on a loaded one
def test_torchrun_two_processes_reach_the_accuracy_of_one(tiny_trained, tmp_path):
    """``torchrun --nproc_per_node=2`` on the TINY configuration (same data, seed and global batch 64,
    32 images per process) against the session's one-process TINY run (``tiny_trained``).

    Tolerance. The two runs see the same images every epoch from the same initial weights, but group
    them into different batches (each process takes a contiguous half of the epoch) and normalize
    with per-process batch statistics, so they are two equally good trainings, not the same numbers.
    Both are scored on the same ``n`` = 400 test images. If both have accuracy ``p``, each measured
    accuracy is a binomial fraction with variance ``p (1 - p) / n``; their difference has variance at
    most ``2 p (1 - p) / n`` (errors of two models trained on the same data are positively
    correlated, which only shrinks it), so ``|a_1 - a_2| <= 3 sqrt(2 p (1 - p) / n)`` (about 0.10 at
    p = 0.69) holds with probability >= 99.7 % under the claim. Measured on this machine: 0.7075
    (1 process) vs 0.6625 (2 processes), a difference of 1.4 standard deviations.
    """
    import math

    from conftest import TINY
    from export.train import load_checkpoint

    _, single = tiny_trained
    flags = [f"--{k}" if k in ("D", "B") else f"--{k.replace('_', '-')}" for k in TINY]
    args = [a for k, flag in zip(TINY, flags) for a in (flag, str(TINY[k]))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hdsim.cli", "train", "--out", str(tmp_path), *args, "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0 prints the only JSON line
    assert ddp["world_size"] == 2 and ddp["finished"] and ddp["phase"] == "qat" and single["world_size"] == 1
    state = load_checkpoint(tmp_path / "last.pt")  # both phases ran under DDP: float epochs, then QAT
    assert state["world_size"] == 2 and state["epoch"] == TINY["epochs"] + TINY["qat_epochs"]
    n = ddp["eval_size"]
    assert n == single["eval_size"] == TINY["eval_size"]
    a1, a2 = single["test_accuracy"], ddp["test_accuracy"]
    p = (a1 + a2) / 2
    tolerance = 3 * math.sqrt(2 * p * (1 - p) / n)
    assert abs(a1 - a2) <= tolerance, (a1, a2, tolerance)
    assert min(a1, a2) > 0.10  # both well above chance (1 %): the comparison is not between two untrained nets


def test_lease_rule_and_results_written_once(tmp_path, monkeypatch):
    """The documented rule on two queues of one SQLite study: a live lease keeps a point, an expired
    one gives it to the next claimer, and of two results for one point the first is kept. The
    queues' clock (``time.time`` on SQLite) is a fake one moved by hand: a loaded machine's pauses
    between the claims cannot expire a lease early."""
    import types

    from hdsim import work_queue
    from hdsim.work_queue import WorkQueue

    clock = [1_000.0]
    monkeypatch.setattr(work_queue, "time", types.SimpleNamespace(time=lambda: clock[0], sleep=time.sleep))
    url = f"sqlite:///{tmp_path / 'q.db'}"
    a, b = WorkQueue(url, "s", lease_s=0.3, owner="a"), WorkQueue(url, "s", lease_s=0.3, owner="b")
    a.ensure_study("toy", {"n": 2}, [("p0", {"i": 0}), ("p1", {"i": 1})])
    b.ensure_study("toy", {"n": 2}, [("p0", {"i": 0}), ("p1", {"i": 1})])  # same study: accepted
    assert a.claim().key == "p0"
    assert b.claim().key == "p1"  # p0 is leased to a
    assert b.claim() is None  # nothing claimable while both leases live
    clock[0] += 0.4  # a's lease expires (a stopped without renewing, like a killed worker)
    assert b.renew("p1") and not a.renew("p1")  # only the owner renews
    again = b.claim()
    assert (again.key, again.attempts) == ("p0", 2)
    assert b.complete("p0", {"y": "b"}) and not a.complete("p0", {"y": "a"})  # the late result is dropped
    assert b.complete("p1", {"y": 1})
    assert b.results() == {"p0": {"y": "b"}, "p1": {"y": 1}}
    assert b.counts() == {"queued": 0, "running": 0, "done": 2, "total": 2}
    assert [(p["key"], p["attempts"], p["finished_by"]) for p in b.points()] == [("p0", 2, "b"), ("p1", 1, "b")]
    a.close(), b.close()
