"""Shared output of the sweeps: one CSV writer, one figure saver (headless).

Every file is written to a temporary name beside it and renamed into place
(``os.replace`` is atomic on POSIX): the workers of a shared sweep
(:mod:`hdsim.sweep.shared`) may finish together and all write the same
merged outputs, and a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from hdsim.errors import HdsimError

__all__ = ["write_csv", "write_text_atomic", "new_figure", "save_figure", "parse_list"]


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] | None = None) -> Path:
    """Write ``rows`` as a CSV with a header line: ``columns`` in order (default: the first row's keys)."""
    fields = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file renamed into place (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: writers never share it
    with tmp.open("w", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def parse_list(values: list[str] | None, name: str, cast: type = int) -> tuple | None:
    """CLI lists: repeated options and/or comma-separated values (``--M 5,20 --M 40``).

    ``None``/empty gives ``None`` (use the default); a part that ``cast`` rejects is a one-line error.
    """
    if not values:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                raise HdsimError(f"{name}: empty entry in {str(v)!r}")
            try:
                out.append(cast(part))
            except ValueError:
                kind = "integers" if cast is int else "numbers"
                raise HdsimError(f"{name}: expected {kind}, got {part!r}") from None
    if not out:
        raise HdsimError(f"{name}: expected at least one value")
    return tuple(out)


def new_figure(ncols: int = 2, width: float = 11.0, height: float = 4.2):  # -> (Figure, axes)
    """A matplotlib figure with ``ncols`` panels, on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height))
    return fig, axes


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
