import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings


from hdsim.threads import torch_threads

# pytest-xdist worker (scripts/test.sh runs the suite on two): the workers share the cores
XDIST = "PYTEST_XDIST_WORKER" in os.environ

# Tests run on 2-core CI machines: keep torch from oversubscribing (one thread per xdist worker).
torch.set_num_threads(1 if XDIST else min(2, os.cpu_count() or 1))

# Property tests draw the same examples on every run and machine (seeded by the test's hash, no
# example database): a CI result is reproducible, and a failure found once is found again.
settings.register_profile("hdsim", derandomize=True, database=None, print_blob=True)
settings.load_profile("hdsim")

@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a loaded 2-core machine two spinning OpenMP threads slow small ops and training ~10x."""
    with torch_threads(1):
        yield


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process; returns (exit code, stdout, stderr)."""
    from hdsim.cli import main

    monkeypatch.setattr(sys, "argv", ["hdsim", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def hdsim_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``hdsim ARGS...`` in a fresh interpreter (``python -m hdsim.cli``), output captured."""
    return subprocess.run([sys.executable, "-m", "hdsim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def bipolar_brute_force(cb, q: torch.Tensor) -> torch.Tensor:
    """Test oracle for bipolar codebooks: argmax over all products of ``<q, prod_f X_f[i_f]>``
    (first maximum in ``itertools.product`` order); ``(N, F)`` indices."""
    combos = torch.tensor(list(itertools.product(*(range(m) for m in cb.sizes))))
    products = cb.product(combos)  # (P, D)
    return combos[(q.to(products.dtype) @ products.t()).argmax(dim=1)]


# ``@pytest.mark.cuda`` (pyproject's markers): the test needs a CUDA device and is skipped without one
# (CI has none; run ``pytest -m cuda`` on a GPU machine).
requires_cuda = pytest.mark.cuda

try:  # the RTL benches (tests/test_rtl.py, tests/test_hw.py) skip without cocotb 2 (the rtl extra)
    import cocotb  # noqa: F401

    HAVE_COCOTB = True
except ImportError:
    HAVE_COCOTB = False


def tiny_rtl_config():
    """The smallest RTL configuration the tests build (B=2, L=4, M=4, F=2, two lanes, 4-bit words,
    sampling on): seconds to co-simulate and synthesize, for the RTL and hw-report smoke tests."""
    from hdsim.fixed.widths import FixedWidths
    from hdsim.rtl import RtlConfig

    return RtlConfig(name="tiny", B=2, L=4, M=4, F=2, lanes=2, widths=FixedWidths.uniform(4), T=0.1, A=2)


# ``slow`` (still run by CI; ``pytest -m "not slow"`` leaves them out for a quick run): what trains a
# network (the session's tiny models below) or co-simulates the RTL in Icarus Verilog, plus what is
# marked by hand (the ImageNet export).
_SLOW_FIXTURES = {"tiny_trained", "tiny_export", "tiny_sr_export"}


# Files over ~1 minute on 2 cores, longest first (python -m pytest --durations=40)
_HEAVY_FILES = ["test_rtl.py", "test_export.py", "test_deploy.py", "test_distributed.py", "test_bcf.py",
                "test_packaging.py", "test_fixed.py", "test_fixed_compiled.py", "test_calibrate.py", "test_hw.py",
                "test_wta.py", "test_cli.py"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        cosim = any("Icarus Verilog" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
        if cosim or _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if XDIST:
        # the longest files first: each xdist worker takes whole files (--dist loadfile) in this
        # order, so the last file to finish, while the other worker idles, is a short one
        items.sort(key=lambda it: _HEAVY_FILES.index(it.path.name) if it.path.name in _HEAVY_FILES
                   else len(_HEAVY_FILES))
    else:
        # one process: the tests of the trained tiny models run last (in their order), their models
        # train in the background meanwhile (see _BackgroundTraining)
        tiny = [it for it in items if _SLOW_FIXTURES & set(getattr(it, "fixturenames", ()))]
        items[:] = [it for it in items if not _SLOW_FIXTURES & set(getattr(it, "fixturenames", ()))] + tiny
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# The small two-digit configuration of the end-to-end tests: ~1.5 minutes of training on one core,
# enough for confident queries (~80% two-digit accuracy) so that decoders can be compared.
TINY = dict(dataset="mnist2", head="bcf", D=256, B=4, width=0.25, last_channel=128, epochs=5, qat_epochs=1,
            train_size=6400, qat_train_size=1600, test_size=400, eval_size=400, batch=64, lr=4e-3,
            calib_batches=2, seed=0)


class _BackgroundTraining:
    """The session's tiny models, each trained once in its own process from the moment the
    collection shows a selected test needs it (:func:`pytest_collection_finish`).

    Why: a training is single-threaded (one torch thread: two spinning OpenMP threads slow it ~10x
    on a loaded 2-core machine) and takes 1-2 minutes; the tests that need the models run last
    (:func:`pytest_collection_modifyitems`), so on CI's two cores the trainings overlap the rest of
    the suite instead of adding to it. The process runs exactly what the fixtures ran in-process
    before (``export.train.train`` of the same config, one thread, seed in the config), and the
    fixture reads its ``metrics.json``: the same model and metrics.
    """

    SCRIPT = ("import json, sys, torch\n"
              "from export.train import TrainConfig, train\n"
              "torch.set_num_threads(1)\n"
              "train(TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], progress=False)\n")

    def __init__(self) -> None:
        self.runs: dict[str, tuple[subprocess.Popen, object, str]] = {}  # name -> (process, log, root)

    def start(self, name: str, cfg: dict) -> None:
        import json
        import tempfile

        if name in self.runs:
            return
        root = tempfile.mkdtemp(prefix=f"hdsim-{name}-")
        log = open(os.path.join(root, "train.log"), "w+")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, json.dumps(cfg), os.path.join(root, "run")],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        self.runs[name] = (proc, log, root)

    def shared_result(self, name: str, cfg: dict, shared: Path):
        """Under pytest-xdist: ``(root, metrics)`` of the one training of ``name`` for all workers,
        in ``shared`` (the run's temporary root): the first worker to ask trains it under a file
        lock, the others wait for the lock and read the same run folder."""
        import fcntl
        import json

        root = shared / f"hdsim-{name}"
        with open(shared / f"hdsim-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (root / "run" / "metrics.json").exists():
                root.mkdir(exist_ok=True)
                with open(root / "train.log", "w+") as log:
                    code = subprocess.call([sys.executable, "-c", self.SCRIPT, json.dumps(cfg), str(root / "run")],
                                           stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
                    if code != 0:
                        log.seek(0)
                        raise RuntimeError(f"training of {name} failed (exit {code}):\n{log.read()[-3000:]}")
        return root, json.loads((root / "run" / "metrics.json").read_text())

    def result(self, name: str, cfg: dict, tmp_path_factory=None):
        """``(root, metrics)`` once the training of ``name`` has finished (started now if it was not)."""
        import json
        from pathlib import Path

        if XDIST:  # the workers' base folders share a parent: the run's temporary root
            shared, metrics = self.shared_result(name, cfg, tmp_path_factory.getbasetemp().parent)
            root = tmp_path_factory.mktemp(name)  # this worker's folder (exports), the run linked in
            (root / "run").symlink_to(shared / "run", target_is_directory=True)
            return root, metrics
        self.start(name, cfg)
        proc, log, root = self.runs[name]
        if proc.wait() != 0:
            log.seek(0)
            raise RuntimeError(f"background training of {name} failed (exit {proc.returncode}):\n{log.read()[-3000:]}")
        root = Path(root)
        return root, json.loads((root / "run" / "metrics.json").read_text())

    def close(self) -> None:
        import shutil

        for proc, log, root in self.runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            shutil.rmtree(root, ignore_errors=True)
        self.runs.clear()


_TRAININGS = _BackgroundTraining()


def _brevitas_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("brevitas") is not None


def pytest_collection_finish(session):
    if XDIST or not _brevitas_installed():  # every xdist worker collects everything: see shared_result
        return
    needed = set().union(*(set(getattr(it, "fixturenames", ())) for it in session.items)) if session.items else set()
    if needed & {"tiny_trained", "tiny_export"}:
        _TRAININGS.start("tiny", TINY)
    if "tiny_sr_export" in needed:
        _TRAININGS.start("tiny_sr", TINY_SR)


def pytest_sessionfinish(session, exitstatus):
    _TRAININGS.close()


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """``(root, metrics)``: the TINY model trained once per session (root/run/last.pt)."""
    pytest.importorskip("brevitas", reason="brevitas is not installed (pip install -e '.[export]')")
    return _TRAININGS.result("tiny", TINY, tmp_path_factory)


# The sparse-resonator head (seed 000) on the same task: no projection, D = the 128 features in
# B = 4 segments of 32; it learns more slowly than the BCF head (higher learning rate).
TINY_SR = dict(TINY, head="sparse-resonator", D=0, lr=1e-2)


@pytest.fixture(scope="session")
def tiny_sr_export(tmp_path_factory):
    """``(root, manifest)``: the TINY_SR model trained and exported (decode calibrated) once per session."""
    pytest.importorskip("brevitas", reason="brevitas is not installed (pip install -e '.[export]')")
    from hdsim.calibrate import CalibrationConfig
    from export.onnx_export import export_checkpoint

    root, _ = _TRAININGS.result("tiny_sr", TINY_SR, tmp_path_factory)
    with torch_threads(1):
        manifest = export_checkpoint(root / "run" / "last.pt", root / "int8", parity_images=64,
                                     calibration=CalibrationConfig(trials=12, progress=False))
    return root, manifest


@pytest.fixture(scope="session")
def tiny_export(tiny_trained):
    """``(folder, manifest)``: the TINY model's int8 export (model.onnx, codebooks.npz, manifest.json)."""
    from hdsim.calibrate import CalibrationConfig
    from export.onnx_export import export_checkpoint

    root, _ = tiny_trained
    out = root / "int8"
    with torch_threads(1):
        manifest = export_checkpoint(root / "run" / "last.pt", out, parity_images=64,
                                     calibration=CalibrationConfig(trials=16, progress=False))
    return out, manifest
