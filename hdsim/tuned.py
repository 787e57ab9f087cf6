"""Tuned BCF hyper-parameters ``(T, A)`` per codebook size.

Two sources, in this order of precedence:

1. a user table written by ``hdsim tune`` (JSON, same schema as the shipped one),
   passed explicitly;
2. the published table shipped with the package
   (``hdsim/data/bcf_tuned_published.json``, SPEC section 3), for D=512, B=4,
   ``linf``, ``Tc=0.9``.

A codebook size between two tuned sizes takes the entry of the nearest tuned
size on a log scale (the papers tune on a geometric grid of ``M``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hdsim.errors import HdsimError

__all__ = ["TunedEntry", "load_table", "lookup", "resolve_TA", "PUBLISHED"]

PUBLISHED = "bcf_tuned_published.json"


@dataclass(frozen=True)
class TunedEntry:
    """One row: codebook sizes ``[M_min, M_max]`` use threshold ``T`` and sampling width ``A``."""

    M_min: int
    M_max: int
    T: float
    A: int


def load_table(path: str | Path | None = None) -> dict:
    """The table as a dict (``{"tables": {"F": [rows...]}, ...}``); ``None`` loads the published one."""
    try:
        if path is None:
            text = resources.files("hdsim.data").joinpath(PUBLISHED).read_text()
        else:
            text = Path(path).read_text()
        table = json.loads(text)
        table["tables"]  # noqa: B018 - schema check
    except FileNotFoundError:
        raise HdsimError(f"tuned table: file not found: {path}") from None
    except KeyError:
        raise HdsimError(f"tuned table {path}: not a tuned-(T, A) table (no 'tables' field)") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise HdsimError(f"tuned table {path}: not a tuned-(T, A) table ({e})") from None
    _check_rows(table, path)
    return table


def _check_rows(table: dict, path) -> None:
    """Every row a valid :class:`TunedEntry`: a malformed table is one error here, not a TypeError in a sweep."""
    if not isinstance(table.get("tables"), dict):
        raise HdsimError(f"tuned table {path}: 'tables' must map F to a list of rows")
    for F, rows in table["tables"].items():
        if not str(F).isdigit() or not isinstance(rows, list):
            raise HdsimError(f"tuned table {path}: F={F!r}: expected an integer F and a list of rows")
        for i, r in enumerate(rows):
            ok = isinstance(r, dict) and set(r) >= {"M_min", "M_max", "T", "A"}
            if ok:
                ints = [r[k] for k in ("M_min", "M_max", "A")]
                ok = all(isinstance(v, int) and not isinstance(v, bool) for v in ints) \
                    and isinstance(r["T"], (int, float)) and not isinstance(r["T"], bool) \
                    and 1 <= r["M_min"] <= r["M_max"] and r["A"] >= 0 and math.isfinite(r["T"]) and r["T"] >= 0
            if not ok:
                raise HdsimError(f"tuned table {path}: F={F} row {i}: expected M_min <= M_max (integers >= 1), "
                                 f"T >= 0 and A >= 0 (integer), got {r!r}")


def lookup(F: int, M: int, table: dict | None = None) -> TunedEntry:
    """Tuned ``(T, A)`` for ``F`` factors of ``M`` codevectors (nearest tuned size, log scale).

    Example:
        >>> lookup(2, 1155)
        TunedEntry(M_min=1155, M_max=1155, T=0.0076, A=238)
    """
    table = load_table() if table is None else table
    rows = table["tables"].get(str(F))
    if not rows:
        raise HdsimError(f"F: no tuned (T, A) for F={F}; tuned F values: {sorted(table['tables'])}")
    entries = [TunedEntry(**r) for r in rows]

    def distance(e: TunedEntry) -> float:
        if e.M_min <= M <= e.M_max:
            return 0.0
        return min(abs(math.log(M / e.M_min)), abs(math.log(M / e.M_max)))

    return min(entries, key=distance)


def resolve_TA(F: int, M: int, T: float | None, A: int | None) -> tuple[float, int, TunedEntry | None]:
    """``(T, A)`` with each ``None`` taken from the tuned table (:func:`lookup`); also the table
    row used (``None`` when both were given).

    Example:
        >>> resolve_TA(2, 1155, None, 10)[:2]
        (0.0076, 10)
    """
    if T is not None and A is not None:
        return T, A, None
    entry = lookup(F, M)
    return (entry.T if T is None else T), (entry.A if A is None else A), entry
