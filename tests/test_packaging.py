"""The wheel carries what the commands read at run time (RTL sources, tuned tables), so an installed
copy works without the checkout."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project's wheel (built without network: no build isolation) unpacked into a fresh folder."""
    pytest.importorskip("setuptools", reason="setuptools builds the wheel")
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs",
                                                             "out", ".pytest_cache", ".hypothesis"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = glob.glob(str(tmp / "dist" / "hdsim-*.whl"))
    assert len(wheel) == 1
    target = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           wheel[0]], capture_output=True, text=True, timeout=300)
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
