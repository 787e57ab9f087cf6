"""The `hdsim` command as a user runs it: JSON on stdout, one-line errors, exit codes."""

import csv
import json
import subprocess

import pytest

from conftest import hdsim_cli


def hdsim(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = hdsim_cli(*args, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_bench_factorizer_prints_the_promised_keys():
    out = json.loads(hdsim("bench", "factorizer", "--D", "256", "--M", "60", "--queries", "32",
                           "--batch", "16", "--json", "--threads", "1").stdout)
    for key in ("accuracy", "factor_accuracy", "mean_iterations", "p95_iterations", "converged",
                "queries_per_s", "problem_size", "config"):
        assert key in out
    assert out["accuracy"] == 1.0 and out["problem_size"] == 3600
    assert out["config"]["T"] == 0.0 and out["config"]["max_iter"] == 30  # tuned table, SPEC default


def test_bench_with_numpy_baseline_reports_speedup():
    out = json.loads(hdsim("bench", "factorizer", "--D", "256", "--M", "60", "--queries", "16",
                           "--baseline", "numpy").stdout)
    # the speedup is the benchmark's finding (a timing), not a test's: reported, not compared
    assert "speedup_vs_numpy" in out and out["numpy_accuracy"] == out["accuracy"] == 1.0


@pytest.mark.parametrize("method,D,least", [("resonator", 512, 0.9), ("stochastic", 512, 0.9),
                                             # stops when nothing changes, sometimes in a wrong state
                                             ("sparse-resonator", 1024, 0.75)])
def test_bench_other_methods(method, D, least):
    out = json.loads(hdsim("bench", "factorizer", "--method", method, "--D", str(D), "--F", "3",
                           "--M", "8", "--queries", "32", "--threads", "1").stdout)
    assert out["accuracy"] >= least and out["problem_size"] == 512


def test_bench_fixed_agrees_with_float_at_wide_words():
    out = json.loads(hdsim("bench", "fixed", "--bits", "14", "--D", "256", "--M", "80", "--queries", "24").stdout)
    assert out["agreement_with_float"] == 1.0 and out["accuracy"] == out["float_accuracy"]
    assert out["widths"]["query"] == 14 and out["datapath"]["acc_bits"] == 28


def test_sweep_widths_writes_csv_and_png(tmp_path):
    out = json.loads(hdsim("sweep", "widths", "--bits-min", "7", "--bits-max", "9", "--M", "40",
                           "--queries", "16", "--out", str(tmp_path)).stdout)
    rows = list(csv.DictReader((tmp_path / "widths.csv").open()))
    assert [int(r["bits"]) for r in rows] == [7, 8, 9]
    assert (tmp_path / "widths.png").stat().st_size > 1000
    # the documented rule applied to the CSV: the narrowest width within 0.5 point of float's accuracy
    ok = [int(r["bits"]) for r in rows if float(r["accuracy"]) >= float(r["float_accuracy"]) - 0.005]
    assert out["smallest_bits_within_tolerance"] == (min(ok) if ok else None)


@pytest.mark.parametrize("args,needle", [
    (["bench", "factorizer", "--D", "510"], "D: dimension 510 is not divisible"),
    (["bench", "factorizer", "--M", "0"], "M: must be an integer >= 1"),
    (["bench", "factorizer", "--A", "-3", "--M", "10", "--D", "64"], "A: sampling width"),
    (["bench", "factorizer", "--T", "1.5", "--M", "10", "--D", "64"], "T: threshold"),
    (["bench", "factorizer", "--Tc", "0", "--M", "10", "--D", "64"], "Tc: convergence"),
    (["bench", "factorizer", "--device", "cuda"] if not __import__("torch").cuda.is_available() else
     ["bench", "factorizer", "--D", "510"], "not"),
    (["bench", "fixed", "--bits", "40"], "widths.query"),
    (["bench", "fixed", "--widths", "/nonexistent.json"], "not found"),
    (["bench", "factorizer", "--seed", "99999999999999999999"], "seed: must be an integer in [0, 2^32 - 1]"),
    (["bench", "factorizer", "--baseline", "numpy", "--seed", "-1"], "seed: must be an integer in [0, 2^32 - 1]"),
    (["tune", "--sampler-seed", "4294967296", "--trials", "1"], "sampler_seed: must be an integer in"),
    (["sweep", "imc", "--seed", "-5"], "seed: must be an integer in"),
    (["bench", "factorizer", "--threads", "100000"], "threads: must be an integer in [1, 256]"),
    (["sweep", "widths", "--tolerance-pt", "nan"], "tolerance_pt: must be a finite number >= 0"),
    (["cosim", "--noise-sigma", "nan"], "noise_sigma: must be a finite number >= 0"),
    (["cosim", "--seed", "-1"], "seed: must be an integer in"),
    (["bench", "fixed", "--widths", "/"], "widths: is a folder, not a JSON file"),
    (["sweep", "capacity", "--M", "8,,16"], "M: empty entry in '8,,16'"),
    (["train", "--lr", "inf"], "lr: learning rate must be finite and > 0"),
    (["train", "--calib-batches", "0"], "calib_batches: must be >= 1 with QAT epochs"),
    (["run", "/etc/hostname", "x.png"], "export dir: is a file, not a folder"),
])
def test_bad_input_is_one_line_error(args, needle):
    proc = hdsim(*args, ok=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,line", [
    (["bench", "factorizer", "--bogus"], "error: No such option: --bogus"),
    (["bench", "factorizer", "--D", "abc"], "error: Invalid value for '--D': "),
    (["bench", "factorizer", "--device", "gpu"], "error: Invalid value for '--device': "),
    (["run"], "error: Missing argument 'folder'."),
    (["nosuchcommand"], "error: No such command 'nosuchcommand'."),
])
def test_command_line_usage_errors_are_one_line(args, line):
    """Click's usage errors (bad values, unknown options, missing arguments) read like every other
    error: one line on stderr, exit code 2, pointing at the command's --help."""
    proc = hdsim(*args, ok=False)
    assert proc.returncode == 2 and proc.stdout == ""
    (err,) = proc.stderr.strip().splitlines()
    assert err.startswith(line) and err.endswith("--help')"), err


def test_tune_out_must_be_a_file_and_tables_are_checked_row_by_row(tmp_path):
    proc = hdsim("tune", "--trials", "1", "--out", str(tmp_path), ok=False)
    assert proc.returncode == 2 and "is a folder" in proc.stderr
    table = {"tables": {"2": [{"M_min": 5, "M_max": 50, "T": "x", "A": 3}]}}
    (tmp_path / "t.json").write_text(json.dumps(table))
    proc = hdsim("sweep", "capacity", "--table", str(tmp_path / "t.json"), "--out", str(tmp_path / "o"), ok=False)
    assert proc.returncode == 2 and "F=2 row 0: expected M_min <= M_max" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_runs_every_step_and_reports_json():
    # the factorizer steps; the pipeline (train/export/runner/RTL) is tested in test_deploy.py
    out = json.loads(hdsim("demo", "--queries", "32", "--no-pipeline").stdout)
    assert "pipeline" not in out
    assert set(out["steps"]) == {"bcf_exact", "bcf_noisy", "bcf_F3", "fixed_8bit"}
    assert out["steps"]["bcf_exact"]["accuracy"] >= 0.9
    assert out["steps"]["bcf_noisy"]["accuracy"] >= 0.9  # threshold + sampling on noisy queries
    assert out["steps"]["fixed_8bit"]["agreement_with_float"] >= 0.9


def test_threads_option_one_rule_everywhere():
    """``--threads``: n torch threads; 0 (or absent) keeps torch's setting; negative is a one-line error."""
    import torch

    from hdsim.errors import HdsimError
    from hdsim.threads import set_torch_threads, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        set_torch_threads(0)
        set_torch_threads(None)
        assert torch.get_num_threads() == 1  # 0 and None leave the count alone
    assert torch.get_num_threads() == before
    for bad in (-1, 1.5, True, 100_000):  # 100000: libgomp cannot create them and the process dies
        with pytest.raises(HdsimError, match=r"threads: must be an integer in \[1, 256\]"):
            set_torch_threads(bad)
    proc = hdsim("bench", "fixed", "--M", "8", "--queries", "8", "--threads", "-1", ok=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: threads: must be")


def test_bench_factorizer_batch_changes_timing_not_results():
    """The BCF bench decodes batch by batch with stream-position query ids (first_id): in float64
    the sampling draws, hence every decode, do not depend on --batch."""
    runs = [json.loads(hdsim("bench", "factorizer", "--D", "256", "--M", "300", "--T", "0.01", "--A", "40",
                             "--queries", "48", "--batch", b, "--dtype", "float64", "--seed", "3").stdout)
            for b in ("4", "48")]
    keys = ("accuracy", "mean_iterations", "p95_iterations", "converged")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]
    assert runs[0]["mean_iterations"] > 2  # sampling did happen
