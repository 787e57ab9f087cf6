"""Optional dependencies: which pip extra brings each, and the one-line error when one is missing.

``pip install hdsim`` alone gives the command line and the torch-free modules; the extras add
the rest (``pyproject.toml``):

* ``core``: torch, matplotlib, optuna — the factorizers, the fixed-point model, IMC, sweeps, tuning;
* ``deploy``: numpy, onnxruntime, Pillow, numba — the edge runner (``hdsim run``), no torch;
* ``export``: ``core`` + ``deploy`` + brevitas, onnx, ... — training and export;
* ``rtl``: ``core`` + cocotb — co-simulation.

Example:
    >>> require("json", "core", "reading JSON").__name__
    'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hdsim.errors import HdsimError

__all__ = ["require", "EXTRA_OF"]

# the extra that installs each optional module (the pip name where it differs)
EXTRA_OF = {"torch": "core", "matplotlib": "core", "optuna": "core", "onnxruntime": "deploy", "PIL": "deploy",
            "numba": "deploy", "brevitas": "export", "onnx": "export", "cocotb": "rtl"}


def require(module: str, extra: str | None = None, purpose: str = "this command") -> ModuleType:
    """Import ``module``, or raise a one-line :class:`HdsimError` naming the extra that installs it.

    Only a missing module is turned into the message; any other import error propagates (it is a bug).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise
        extra = extra or EXTRA_OF.get(module.split(".")[0], "core")
        raise HdsimError(f"{purpose} needs {module.split('.')[0]}, which is not installed: "
                         f"pip install 'hdsim[{extra}]'") from None
