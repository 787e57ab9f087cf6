"""The wheel carries what the commands read at run time (RTL sources, tuned tables), so an installed
copy works without the checkout; ``pip install 'hdsim[deploy]'`` from it gives a working ``hdsim run``
in an environment without torch."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _wheel(tmp: Path) -> str:
    """The project's wheel, built without network (no build isolation) from a copy of the checkout
    (setuptools writes build/ and *.egg-info beside the sources)."""
    pytest.importorskip("setuptools", reason="setuptools builds the wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs",
                                                             "out", ".pytest_cache", ".hypothesis"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheels = glob.glob(str(tmp / "dist" / "hdsim-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project's wheel (built without network: no build isolation) unpacked into a fresh folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    target = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           _wheel(tmp)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    return target


def test_the_installed_copy_finds_its_rtl_sources_and_tables(installed, tmp_path):
    code = ("import hdsim, hdsim.rtl, hdsim.tuned; d = hdsim.rtl.rtl_dir(); "
            "print(hdsim.__file__); print(d); "
            "print(sorted(p.name for p in d.rglob('*.v')), (d / 'synth.ys').is_file()); "
            "print(len(hdsim.tuned.load_table()['tables']))")
    env = {k: v for k, v in os.environ.items() if k != "HDSIM_RTL_DIR"} | {"PYTHONPATH": str(installed)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    pkg, rtl, files, tables = proc.stdout.splitlines()
    assert pkg.startswith(str(installed)) and rtl.startswith(str(installed))  # not the checkout's copies
    assert files == "['hdsim_bcf.v', 'tb_hdsim_bcf.v'] True" and int(tables) >= 1


# ---- the edge runner from the wheel, in a virtual environment without torch --------------------
_NO_INDEX = ("No matching distribution", "Could not find a version", "NewConnectionError", "Temporary failure in name",
             "Network is unreachable", "ConnectionError", "ProxyError")


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with ``pip install 'hdsim-*.whl[deploy]'``: no torch in it."""
    tmp = tmp_path_factory.mktemp("deploy_venv")
    wheel = _wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    inst = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[deploy]"], capture_output=True,
                          text=True, timeout=900)
    if inst.returncode != 0 and any(s in inst.stderr for s in _NO_INDEX):
        pytest.skip(f"the package index is not reachable: {inst.stderr.strip().splitlines()[-1][:200]}")
    assert inst.returncode == 0, inst.stderr[-3000:]
    return venv


def test_hdsim_run_from_the_wheel_without_torch_decides_as_the_checkout(deploy_venv, tiny_export, tmp_path):
    from deploy.runner import Runner
    from workflows.agreement import write_test_images

    folder, _ = tiny_export
    files = [str(p) for p, _ in write_test_images(folder, tmp_path / "img", limit=24)]
    py, hdsim = deploy_venv / "bin" / "python", deploy_venv / "bin" / "hdsim"
    probe = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'torch'" in probe.stderr  # the venv really has no torch
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HDSIM_RTL_DIR")}
    proc = subprocess.run([str(hdsim), "run", str(folder), *files, str(tmp_path / "missing.png"), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr  # the missing file fails; the 24 images are classified
    import json

    got = [json.loads(line) for line in proc.stdout.splitlines()]
    want = Runner(folder).predict(files)  # this checkout, in this process (torch loaded)
    assert len(got) == 25 and got[-1]["status"] == "error" and "no such file" in got[-1]["error"]
    for g, w in zip(got, want):
        assert (g["status"], g["class"], g["factors"], g["iterations"], g["confidence"]) == \
            (w.status, w.cls, w.factors, w.iterations, w.confidence)
    # commands that need torch say so in one line, naming the extra
    for args, extra in ((["bench", "factorizer", "--method", "bcf"], "core"), (["export", "--help"], None),
                        (["run", str(folder), files[0], "--no-compiled"], "core")):
        proc = subprocess.run([str(hdsim), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        if extra is None:  # help works without the extra
            assert proc.returncode == 0, proc.stderr
            continue
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert f"needs torch, which is not installed: pip install 'hdsim[{extra}]'" in proc.stderr
