"""Lazy package attributes (PEP 562): a package's names load from their modules when first touched.

The torch-free edge runner imports single torch-free modules of packages whose other modules
import torch (``hdsim.fixed.widths``, ``hdsim.factorizers.config``, ``hdsim.imc.config``); a
package ``__init__`` that imported every module eagerly would import torch with them.

Example:
    >>> getattr_, dir_ = lazy_exports("pkg", {"sqrt": "math", "dumps": "json"})
    >>> getattr_("sqrt")(4.0), dir_()
    (2.0, ['dumps', 'sqrt'])
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, home: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose name ``n`` lives in module ``home[n]`` (absolute)."""

    def getattr_(name: str):
        if name in home:
            return getattr(importlib.import_module(home[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(home)

    return getattr_, dir_
