"""Inputs of the edge runner: image files, folders, globs and ``.npy`` arrays -> pixels.

Every input becomes zero or more :class:`Loaded` items, each either pixels
``(C, H, W)`` uint8 at the model's input size (via the manifest's
:class:`hdsim.export_folder.Preprocessing`) or an error string. Nothing here raises for
a bad input: the runner reports the error on that input's line and goes on.

Rules (``docs/deploy.md``):

* a **folder** is searched recursively for image files (``IMAGE_SUFFIXES``)
  and ``.npy`` files, in sorted order; a folder with none is one error;
* a **glob** (``*``, ``?``, ``[``) expands to its sorted matches (recursive
  ``**`` allowed); no match is one error;
* an **image** is decoded fully (a truncated file is an error, not a gray
  patch), converted to L or RGB and resized per the manifest;
* a **``.npy``** array holds pixel values in ``[0, 255]`` (any real dtype;
  floats are rounded to 8 bits like an image file): ``(H, W)`` is one gray
  image, ``(H, W, C)`` with ``C`` in {1, 2, 3, 4} one image (2: gray + alpha,
  4: RGBA; the alpha channel is dropped as an image file's is), ``(3, H, W)`` one
  image when the model takes RGB, any other 3-D array ``(N, H, W)`` ``N`` gray
  images, ``(N, H, W, C)`` / ``(N, C, H, W)`` ``N`` images (named ``file.npy[i]``). NaN / inf / out-of-range
  values are an error for that image, and so is a float array whose values all lie in
  ``(0, 1]`` with some above 0: that is a ``[0, 1]``-scaled image, which read as pixel values would be
  a black one (scale it by 255 or save it as uint8). A ``.npz`` archive is not a ``.npy`` array.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdsim.errors import HdsimError
from hdsim.export_folder import IMAGE_SUFFIXES, Preprocessing

__all__ = ["Loaded", "expand_inputs", "load_inputs", "pixels_from_array", "pixels_from_image", "INPUT_SUFFIXES"]

INPUT_SUFFIXES = IMAGE_SUFFIXES + (".npy",)
_CHANNELS_LAST = (1, 2, 3, 4)  # gray, gray + alpha, RGB, RGBA
_GLOB_CHARS = set("*?[")


@dataclass
class Loaded:
    """One input after loading: ``pixels`` ``(C, H, W)`` uint8, or ``error`` (one line)."""

    name: str
    pixels: np.ndarray | None = None
    error: str | None = None
    seconds: float = 0.0


def expand_inputs(specs: list[str]) -> list[tuple[str, Path | None, str | None]]:
    """``(name, path, error)`` per input file, in the order given (folders and globs sorted)."""
    out: list[tuple[str, Path | None, str | None]] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in INPUT_SUFFIXES)
            if not files:
                out.append((spec, None, f"{spec}: no images ({', '.join(INPUT_SUFFIXES[:3])}, ..., .npy) in this folder"))
            out.extend((str(f), f, None) for f in files)
        elif p.is_file():
            out.append((spec, p, None))
        elif _GLOB_CHARS & set(spec):
            files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
            if not files:
                out.append((spec, None, f"{spec}: the pattern matches no file"))
            out.extend((str(f), f, None) for f in files)
        else:
            out.append((spec, None, f"{spec}: no such file or folder"))
    return out


def pixels_from_image(im, pp: Preprocessing, name: str) -> np.ndarray:
    """A PIL image -> ``(C, H, W)`` uint8 at the model's size (decoded fully first)."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data raise from load()
        raise HdsimError(f"{name}: not a readable image: corrupt data ({_reason(e)})") from None
    if im.size[0] < 1 or im.size[1] < 1:
        raise HdsimError(f"{name}: empty image (0 pixels)")
    return pp.pixels(im, name)


def _reason(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    return msg[:120]


def _split_array(a: np.ndarray, name: str, channels: int) -> list[tuple[str, np.ndarray]]:
    """An array -> ``(name, (H, W) or (H, W, C))`` images, per the module's shape rules."""
    if a.ndim in (3, 4) and a.shape[0] == 0 and not (a.ndim == 3 and a.shape[-1] in _CHANNELS_LAST):
        raise HdsimError(f"{name}: a stack of 0 images (shape {tuple(a.shape)})")
    if a.ndim == 2:
        return [(name, a)]
    if a.ndim == 3:
        if a.shape[-1] in _CHANNELS_LAST:
            return [(name, a)]
        if a.shape[0] == 3 and channels == 3:
            return [(name, a.transpose(1, 2, 0))]
        return [(f"{name}[{i}]", a[i]) for i in range(a.shape[0])]
    if a.ndim == 4:
        if a.shape[-1] in _CHANNELS_LAST:
            return [(f"{name}[{i}]", a[i]) for i in range(a.shape[0])]
        if a.shape[1] in (1, 3):
            return [(f"{name}[{i}]", a[i].transpose(1, 2, 0)) for i in range(a.shape[0])]
    raise HdsimError(f"{name}: array shape {tuple(a.shape)} is not an image or a stack of images "
                     "(expected (H,W), (H,W,C), (C,H,W), (N,H,W), (N,H,W,C) or (N,C,H,W))")


def pixels_from_array(a: np.ndarray, pp: Preprocessing, name: str) -> np.ndarray:
    """One ``(H, W)`` / ``(H, W, C)`` pixel array in ``[0, 255]`` -> ``(C, H, W)`` uint8 at the model's size."""
    from PIL import Image

    if a.size == 0:
        raise HdsimError(f"{name}: empty array (shape {tuple(a.shape)})")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == np.bool_):
        raise HdsimError(f"{name}: dtype {a.dtype} is not a pixel type (integers or floats in [0, 255])")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise HdsimError(f"{name}: contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise HdsimError(f"{name}: pixel values span [{lo:g}, {hi:g}], expected [0, 255]")
    if np.issubdtype(a.dtype, np.floating) and 0 < hi <= 1.0:
        raise HdsimError(f"{name}: float values all in [0, 1] (max {hi:g}) look like a [0, 1]-scaled image; "
                         "pixel arrays hold [0, 255] (multiply by 255 or save uint8)")
    a = np.rint(a).astype(np.uint8) if a.dtype != np.uint8 else a
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    mode = "L" if a.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[-1]]
    return pp.pixels(Image.fromarray(np.ascontiguousarray(a), mode), name)


def load_inputs(specs: list[str], pp: Preprocessing):
    """Yield :class:`Loaded` items for ``specs`` (files, folders, globs, ``.npy``), one per image."""
    from PIL import Image

    for name, path, error in expand_inputs(specs):
        if error is not None:
            yield Loaded(name, error=error)
            continue
        t0 = time.perf_counter()
        try:
            if path.stat().st_size == 0:
                raise HdsimError(f"{name}: empty file")
            if path.suffix.lower() == ".npy":
                try:
                    a = np.load(path, allow_pickle=False)
                except (ValueError, OSError, EOFError) as e:
                    raise HdsimError(f"{name}: not a readable .npy array ({_reason(e)})") from None
                if not isinstance(a, np.ndarray):  # np.load opens a .npz archive whatever the file's name
                    a.close()
                    raise HdsimError(f"{name}: a .npz archive, not a .npy array (save one array with np.save)")
                parts = _split_array(a, name, pp.channels)
                per = (time.perf_counter() - t0) / max(1, len(parts))
                for sub, arr in parts:
                    t1 = time.perf_counter()
                    try:
                        yield Loaded(sub, pixels_from_array(arr, pp, sub), seconds=per + time.perf_counter() - t1)
                    except HdsimError as e:
                        yield Loaded(sub, error=str(e))
                continue
            try:
                with Image.open(path) as im:
                    px = pixels_from_image(im, pp, name)
            except (OSError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
                raise HdsimError(f"{name}: not a readable image ({_reason(e)})") from None
            yield Loaded(name, px, seconds=time.perf_counter() - t0)
        except HdsimError as e:
            yield Loaded(name, error=str(e))
