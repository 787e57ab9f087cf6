"""Dependencies point one way (docs/architecture.md), checked on the import statements themselves:
the core (``hdsim/`` less its CLI, the one file that reaches outward, lazily, per command) imports
nothing of ``export``, ``deploy`` or ``rtl_models``, and the sparse-resonator decode path of the
edge runner imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTER = ("export", "deploy", "rtl_models")


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` statement in the file names (any nesting depth)."""
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module)
    return mods


def test_the_core_imports_nothing_outward():
    files = [p for p in (ROOT / "hdsim").rglob("*.py") if p != ROOT / "hdsim" / "cli.py"]
    assert len(files) > 30
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] in OUTER)
           for p in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checker_sees_nested_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from deploy.pipeline import run\n    import export.data as d\n")
    assert _imported_modules(f) == {"deploy.pipeline", "export.data"}


def test_torch_free_modules_import_no_torch():
    code = ("import sys; import hdsim.hashing, hdsim.sparse_resonator_numpy, deploy.sparse_decode; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
