"""Dependencies point one way (docs/architecture.md), checked on the import statements themselves
(every nesting depth: a lazy import inside a function counts) and by importing in a fresh process:

* the core (``hdsim/`` less its CLI, the one file that registers the other packages' commands)
  imports nothing of ``export``, ``deploy``, ``workflows`` or ``rtl_models``;
* ``export`` and ``deploy`` import nothing of each other or of ``workflows``;
* ``deploy`` imports no torch anywhere (a decode that needs torch asks for it through
  ``hdsim.extras.require``, which names the extra), and importing the runner, the CLI and the
  torch-free core modules loads no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {  # package -> top-level modules it must never import
    "hdsim": {"export", "deploy", "workflows", "rtl_models"},
    "export": {"deploy", "workflows"},
    "deploy": {"export", "workflows", "torch", "brevitas", "onnx"},
}
TORCH_FREE = ("hdsim.export_folder", "hdsim.extras", "hdsim.bcf_numpy", "hdsim.hashing",
              "hdsim.sparse_resonator_numpy", "hdsim.fixed.compiled", "hdsim.fixed.widths", "hdsim.factorizers.config",
              "hdsim.lfsr", "hdsim.validation", "hdsim.imc.fixed_crossbar", "hdsim.assoc_memory",
              "hdsim.partition_dropout", "hdsim.stochastic_products", "hdsim.lazy", "deploy.runner", "deploy.decoders", "deploy.inputs", "deploy.cli")


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` statement in the file names (any nesting depth)."""
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module)
    return mods


def test_each_package_imports_only_downward():
    bad = {}
    for package, forbidden in FORBIDDEN.items():
        files = [p for p in (ROOT / package).rglob("*.py") if p != ROOT / "hdsim" / "cli.py"]
        assert len(files) >= 5, package
        for p in files:
            hits = sorted(m for m in _imported_modules(p) if m.split(".")[0] in forbidden)
            if hits:
                bad[str(p.relative_to(ROOT))] = hits
    assert bad == {}


def test_the_checker_sees_nested_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from deploy.pipeline import run\n    import export.data as d\n")
    assert _imported_modules(f) == {"deploy.pipeline", "export.data"}


def _fresh(code: str) -> subprocess.CompletedProcess:
    # torch blocked outright: an import of it anywhere on the path fails the process
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import importlib; " + code],
                          capture_output=True, text=True, cwd=ROOT)


def test_torch_free_modules_import_no_torch_and_no_training_code():
    proc = _fresh(f"[importlib.import_module(m) for m in {TORCH_FREE!r}]; "
                  "bad = [m for m in sys.modules if m.split('.')[0] in ('export', 'workflows')]; assert not bad, bad")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_command_line_loads_without_torch():
    # hdsim.cli registers every command (export's and workflows' too) without importing torch
    proc = _fresh("import hdsim.cli; assert {'train', 'export', 'run'} <= "
                  "{c.name or c.callback.__name__ for c in hdsim.cli.app.registered_commands}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_project_check_finds_no_deploy_import_of_export_or_torch():
    proc = subprocess.run(["git", "grep", "-nE", r"^\s*(from|import) (export|torch)", "--", "deploy/*.py"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout  # git grep: 1 = no match
