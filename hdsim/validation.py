"""Checks shared by the configuration dataclasses: one definition of each message."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hdsim.errors import HdsimError

__all__ = ["check_int", "check_ints", "check_blocks", "check_device", "check_seed", "check_threads", "output_dir",
           "gsbc_shape", "is_tensor", "check_offset_codebooks",
           "SEED_MAX", "THREADS_MAX"]

SEED_MAX = 2**32 - 1  # numpy's RandomState and Optuna's samplers take 32-bit seeds; torch takes these too
THREADS_MAX = 256  # far above any core count here; beyond it OpenMP fails to create threads and crashes


def check_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """Raise ``HdsimError("name: must be an integer >= minimum, got ...")`` unless ``value`` is one.

    ``optional`` lets ``None`` through (a default to be resolved later). Booleans are rejected.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HdsimError(f"{name}: must be an integer >= {minimum}, got {value!r}")


def check_ints(obj: Any, names: tuple[str, ...], *, minimum: int = 1, optional: bool = False) -> None:
    """:func:`check_int` on each named attribute of ``obj``."""
    for name in names:
        check_int(name, getattr(obj, name), minimum=minimum, optional=optional)


def check_blocks(D: int, B: int) -> None:
    """The dimension must split into ``B`` blocks of equal length."""
    if D % B:
        raise HdsimError(f"D: dimension {D} is not divisible by the number of blocks B={B}")


def check_device(device: str) -> None:
    """A torch device string that exists here (``cuda`` only where CUDA is available)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HdsimError(f"device: not a torch device: {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HdsimError(f"device: {device!r} requested but CUDA is not available")


def output_dir(name: str, path: str | Path) -> Path:
    """Create the output folder ``path`` (parents too) and check that files can be written in it.

    Called before long work starts, so that a bad ``--out`` fails in a second with
    ``HdsimError("name: cannot write to path: reason")`` instead of after the run.
    Returns ``Path(path)``.
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass  # mkdir succeeds on an existing read-only folder; a file shows it is writable
    except OSError as e:
        raise HdsimError(f"{name}: cannot write to {out}: {e.strerror or e}") from None
    return out


def check_seed(name: str, value: Any, *, optional: bool = False, bits: int = 32) -> None:
    """A seed: an integer in ``[0, 2^bits - 1]`` (``None`` allowed with ``optional``). User-facing
    seeds are 32-bit (``SEED_MAX``); seeds derived inside (:func:`hdsim.codes.seeded_generator`) use 64."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise HdsimError(f"{name}: must be an integer in [0, 2^{bits} - 1], got {value!r}")


def check_threads(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """A thread count in ``[minimum, THREADS_MAX]`` (``None`` allowed with ``optional``);
    ``minimum=0`` admits 0 as "the library's default"."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= THREADS_MAX:
        default = " (or 0 for the default)" if minimum == 0 else ""
        raise HdsimError(f"{name}: must be an integer in [1, {THREADS_MAX}]{default}, got {value!r}")


def gsbc_shape(q, B: int, L: int, name: str = "query"):
    """Check the shape of a batch of GSBC queries and view it as ``(N, B, L)`` (no data is read).

    Accepts a torch tensor or a numpy array (returned as the same kind), ``(N, D)`` or
    ``(N, B, L)`` (or a single ``(D,)`` / ``(B, L)`` query).

    Raises:
        HdsimError: neither a tensor nor an array, a wrong shape, or no query (``N = 0``).
    """
    if not (isinstance(q, np.ndarray) or is_tensor(q)):
        raise HdsimError(f"{name}: expected a torch.Tensor or numpy array, got {type(q).__name__}")
    D = B * L
    shape = tuple(q.shape)
    if q.ndim == 1 or shape == (B, L):
        q = q[None]
        shape = (1,) + shape
    if len(shape) == 2:
        if shape[1] != D:
            raise HdsimError(f"{name}: expected shape (N, {D}) or (N, {B}, {L}), got {shape}")
        q = q.reshape(shape[0], B, L)
    elif len(shape) != 3 or shape[1:] != (B, L):
        raise HdsimError(f"{name}: expected shape (N, {D}) or (N, {B}, {L}), got {shape}")
    if shape[0] == 0:  # as every factorizer's check: an empty batch is a caller's mistake, not a result
        raise HdsimError(f"{name}: expected at least 1 query, got 0")
    return q


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (a tensor exists only once torch is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def check_offset_codebooks(indices, L, name: str = "indices") -> tuple[list[np.ndarray], int]:
    """SBC codebooks in offset form, checked: a non-empty sequence of non-empty ``(M_f, B)`` integer
    arrays (or tensors) with one ``B`` and offsets in ``[0, L)``. Returns them as int64 arrays and
    ``L`` as an int; a bad one is a one-line error naming ``name[f]``."""
    if isinstance(L, np.integer):
        L = int(L)
    check_int("L", L)
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__len__"):
        raise HdsimError(f"{name}: expected a sequence of (M, B) integer arrays, got {type(indices).__name__}")
    if len(indices) == 0:
        raise HdsimError(f"{name}: expected at least one codebook, got 0")
    out = []
    for f, X in enumerate(indices):
        X = X.detach().cpu().numpy() if is_tensor(X) else np.asarray(X)
        if X.ndim != 2 or X.dtype.kind not in "iu" or 0 in X.shape:
            raise HdsimError(f"{name}[{f}]: expected a non-empty (M, B) integer array, "
                             f"got shape {X.shape} dtype {X.dtype}")
        if out and X.shape[1] != out[0].shape[1]:
            raise HdsimError(f"{name}[{f}]: expected B={out[0].shape[1]} blocks as {name}[0], got shape {X.shape}")
        lo, hi = X.min(), X.max()
        if lo < 0 or hi >= L:
            bad = lo if lo < 0 else hi
            raise HdsimError(f"{name}[{f}]: offsets must be in [0, {L}) (L={L}), found {int(bad)}")
        out.append(np.ascontiguousarray(X, dtype=np.int64))
    return out, L
