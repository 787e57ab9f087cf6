"""The export folder: the one format the exporter writes and the edge runner and the evaluation read.

Torch-free (numpy, and Pillow when images are read): the runner on a device without torch
reads an export through this module only. ``docs/export_format.md`` is the reference of every
field; in short, an export folder holds

* ``manifest.json``: ``format`` (:data:`MANIFEST_FORMAT`, the version), ``model`` (file, sha256,
  input/output names and shapes), ``preprocessing`` (:class:`Preprocessing`), ``head`` (kind
  ``fc`` | ``bcf`` | ``sparse-resonator``; for the factorizer heads ``D, B, L, F, M`` and the
  codebooks file), ``classes`` (:class:`ProductMap`: radices, class count, optional names),
  ``decode`` (the decode settings, :func:`bcf_settings` / :func:`sparse_settings`), ``checks``
  (codebooks sha256, export parity), and descriptive sections (dataset, training, source, versions);
* ``model.onnx``: the network (input ``image``, NCHW float32);
* ``codebooks.npz`` (factorizer heads): ``X0 .. X{F-1}`` (``(M_f, B)`` int64 offsets in
  ``[0, L)``), ``L``, ``class_digits``, ``class_targets``.

:class:`ExportFolder` checks a folder once (format, required fields, model and codebook
hashes, shapes against each other) and hands out its parts; every check failing is one
:class:`~hdsim.errors.HdsimError` line naming the file and the problem.

Example:
    >>> pm = ProductMap((10, 10), 100)
    >>> pm.classes(np.array([[5, 7], [0, 3]])).tolist(), pm.digits(np.array([57])).tolist()
    ([57, 3], [[5, 7]])
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hdsim.errors import HdsimError
from hdsim.extras import require
from hdsim.validation import is_tensor

__all__ = ["MANIFEST_FORMAT", "MANIFEST_FILE", "MODEL_FILE", "CODEBOOKS_FILE", "HEAD_KINDS", "IMAGE_SUFFIXES",
           "RESIZE_MODES", "Preprocessing", "ProductMap", "CodebookShape", "CodebookArrays", "ExportFolder", "sha256_file",
           "check_manifest", "write_manifest", "write_codebooks", "read_codebooks", "bcf_settings",
           "sparse_settings", "session_options", "ort_session"]

MANIFEST_FORMAT = "hdsim-export-manifest/1"  # the version: a reader refuses any other
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
CODEBOOKS_FILE = "codebooks.npz"
HEAD_KINDS = ("fc", "bcf", "sparse-resonator")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
RESIZE_MODES = ("stretch", "shorter-side-crop", "none")
MAX_RESIZED_PIXELS = 50_000_000  # an intermediate resize larger than this is refused (extreme aspect ratios)

# Fields every reader uses (runner, evaluation, bench, co-simulation), checked once at load:
# a hand-edited or truncated manifest is a one-line error, not a KeyError deep inside.
_FIELDS = ("model.file", "model.sha256", "model.output.name", "preprocessing", "head.kind", "classes.radices",
           "classes.num_classes")
_CODE_FIELDS = ("head.F", "head.B", "head.L", "head.D", "head.M", "head.codebooks.file", "checks.codebooks_sha256",
                "decode.max_iter")
_HEAD_FIELDS = {"fc": (),
                "bcf": _CODE_FIELDS + ("decode.T", "decode.A", "decode.Tc", "decode.similarity", "decode.fixed_widths"),
                "sparse-resonator": _CODE_FIELDS + ("decode.a",)}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- classes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductMap:
    """Classes <-> factor digits, mixed radix with the first factor most significant.

    ``class = sum_f d_f * prod_{g > f} M_g`` (the order of
    :func:`hdsim.factorizers.bruteforce.all_products`). Products at or above
    ``num_classes`` are null labels: never a training target, and a decode that
    lands on one is a wrong answer (class ``-1``).

    :meth:`digits` and :meth:`classes` take numpy arrays or torch tensors and return the
    same kind (tensors through numpy, so the mapping is defined once).
    """

    sizes: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        if not self.sizes or any(m < 1 for m in self.sizes):
            raise HdsimError(f"M: codebook sizes must be >= 1, got {self.sizes}")
        if not 1 <= self.num_classes <= self.products:
            raise HdsimError(f"classes: {self.num_classes} classes do not fit {self.products} products "
                             f"(M={list(self.sizes)})")

    @classmethod
    def for_classes(cls, num_classes: int, F: int) -> ProductMap:
        """Smallest equal radix ``M`` with ``M^F >= num_classes``."""
        if F < 1:
            raise HdsimError(f"F: expected at least 1 factor, got {F}")
        if num_classes < 1:
            raise HdsimError(f"classes: need at least 1 class, got {num_classes}")
        M = max(1, math.ceil(num_classes ** (1.0 / F) - 1e-9))
        while M ** F < num_classes:
            M += 1
        while M > 1 and (M - 1) ** F >= num_classes:
            M -= 1
        return cls((M,) * F, num_classes)

    @property
    def F(self) -> int:
        return len(self.sizes)

    @property
    def products(self) -> int:
        return math.prod(self.sizes)

    @property
    def null_products(self) -> int:
        return self.products - self.num_classes

    def place_values(self) -> tuple[int, ...]:
        """``prod_{g > f} M_g`` per factor ``f``: ``class = sum_f d_f * place_values()[f]``."""
        return tuple(math.prod(self.sizes[f + 1:]) for f in range(self.F))

    def digits(self, classes):
        """``(N,)`` class indices -> ``(N, F)`` int64 digits (array or tensor, as given)."""
        if is_tensor(classes):
            import torch

            return torch.from_numpy(self.digits(classes.detach().cpu().numpy()))
        c = np.asarray(classes).astype(np.int64)
        out = np.empty((c.shape[0], self.F), dtype=np.int64)
        for f in range(self.F - 1, -1, -1):
            out[:, f] = c % self.sizes[f]
            c = c // self.sizes[f]
        return out

    def classes(self, digits):
        """``(N, F)`` digits -> ``(N,)`` int64 class (array or tensor, as given), ``-1`` for a null product."""
        if is_tensor(digits):
            import torch

            return torch.from_numpy(self.classes(digits.detach().cpu().numpy()))
        c = np.asarray(digits).astype(np.int64) @ np.array(self.place_values(), dtype=np.int64)
        return np.where(c < self.num_classes, c, -1)

    def as_dict(self) -> dict:
        return {"radices": list(self.sizes), "num_classes": self.num_classes, "products": self.products,
                "null_products": self.null_products,
                "order": "mixed radix, first factor most significant: class = sum_f d_f * prod_{g>f} M_g; "
                         "products >= num_classes are null labels"}


# ---- preprocessing ------------------------------------------------------------------------------
def _to_8bit(im, name: str):
    """8-bit PIL modes pass; 16-bit integer images (``I;16*``, and ``I`` within ``[0, 65535]``) are
    scaled to 8 bits (``round(v / 257)``) instead of being clipped at 255 by ``convert``."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise HdsimError(f"{name}: 32-bit integer pixels outside the 16-bit range are not supported")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if im.mode == "F":
        raise HdsimError(f"{name}: floating-point images (PIL mode F) are not supported; save 8- or 16-bit")
    return im


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become the network input (recorded in the manifest).

    ``x = (pixel * scale - mean[c]) / std[c]``, NCHW float32, every step in float32.

    ``resize`` says what happens to an image whose size is not ``height x width``:
    ``"stretch"`` resizes it to exactly that size (bilinear); ``"shorter-side-crop"``
    resizes its shorter side to ``resize_shorter`` pixels (bilinear, aspect kept) and
    takes the center ``height x width`` crop (torchvision's ImageNet evaluation
    transform); ``"none"`` forbids other sizes (an error names the image).
    ``"shorter-side-crop"`` is applied to every image, whatever its size.

    Example:
        >>> pp = Preprocessing(1, 2, 2, (0.5,), (0.5,))
        >>> pp.normalize(np.array([[[[0, 255], [51, 102]]]], np.uint8)).tolist()
        [[[[-1.0, 1.0], [-0.5999999642372131, -0.19999992847442627]]]]
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0
    resize: str = "stretch"
    resize_shorter: int = 0

    def normalize(self, pixels):
        """``(N, C, H, W)`` pixels in [0, 255] (array or tensor) -> network input, float32, of the same kind."""
        if is_tensor(pixels):
            import torch

            return torch.from_numpy(self.normalize(pixels.detach().cpu().numpy()))
        m = np.array(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.array(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (np.asarray(pixels).astype(np.float32) * np.float32(self.scale) - m) / s

    def denormalize(self, x):
        """Inverse of :meth:`normalize` for inputs made from 8-bit pixels: ``(N, C, H, W)`` uint8 (same kind)."""
        if is_tensor(x):
            import torch

            return torch.from_numpy(self.denormalize(x.detach().cpu().numpy()))
        m = np.array(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.array(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        v = (np.asarray(x, dtype=np.float32) * s + m) / np.float32(self.scale)
        return np.clip(np.round(v), 0, 255).astype(np.uint8)

    def pixels(self, im, name: str = "image") -> np.ndarray:
        """A PIL image -> ``(C, H, W)`` uint8 pixels: mode converted (L / RGB), resized per :attr:`resize`.

        Raises:
            HdsimError: the image's size differs and ``resize`` is ``"none"``, or an extreme aspect ratio.
        """
        from PIL import Image

        im = _to_8bit(im, name).convert("L" if self.channels == 1 else "RGB")
        H, W = self.height, self.width
        if self.resize == "shorter-side-crop":
            w, h = im.size
            s = self.resize_shorter / min(w, h)
            size = (max(W, round(w * s)), max(H, round(h * s)))
            if size[0] * size[1] > MAX_RESIZED_PIXELS:
                raise HdsimError(f"{name}: aspect ratio {h}x{w} (HxW) too extreme: the shorter-side resize would make "
                                 f"{size[1]}x{size[0]} pixels (limit {MAX_RESIZED_PIXELS:,})")
            im = im.resize(size, Image.BILINEAR)
            w, h = im.size
            left, top = (w - W) // 2, (h - H) // 2
            im = im.crop((left, top, left + W, top + H))
        elif im.size != (W, H):
            if self.resize == "none":
                raise HdsimError(f"{name}: size {im.size[1]}x{im.size[0]} (HxW), expected {H}x{W}")
            im = im.resize((W, H), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["layout"] = "NCHW float32"
        d["formula"] = "x = (pixel * scale - mean[c]) / std[c]"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """Inverse of :meth:`as_dict`, checked (manifests written before ``resize`` existed stretch)."""
        try:
            p = cls(int(d["channels"]), int(d["height"]), int(d["width"]), tuple(float(v) for v in d["mean"]),
                    tuple(float(v) for v in d["std"]), float(d.get("scale", 1.0 / 255.0)),
                    str(d.get("resize", "stretch")), int(d.get("resize_shorter", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise HdsimError(f"preprocessing: incomplete or malformed ({e.__class__.__name__}: {e})") from None
        if p.channels not in (1, 3) or p.height < 1 or p.width < 1:
            raise HdsimError(f"preprocessing: channels must be 1 or 3 and sizes >= 1, got {p.channels}x{p.height}x"
                             f"{p.width}")
        if len(p.mean) != p.channels or len(p.std) != p.channels:
            raise HdsimError(f"preprocessing: mean and std need {p.channels} values each")
        if not all(math.isfinite(v) for v in p.mean) or not all(math.isfinite(s) and s > 0 for s in p.std) \
                or not (math.isfinite(p.scale) and p.scale > 0):
            raise HdsimError(f"preprocessing: std and scale must be finite and > 0, mean finite "
                             f"(mean {p.mean}, std {p.std}, scale {p.scale})")
        if p.resize not in RESIZE_MODES or \
                (p.resize == "shorter-side-crop" and p.resize_shorter < max(p.height, p.width)):
            raise HdsimError(f"preprocessing: resize {p.resize!r} (shorter side {p.resize_shorter}) is not valid")
        return p


# ---- codebooks ----------------------------------------------------------------------------------
class CodebookShape:
    """``F``, ``B``, ``D``, ``sizes`` of codebooks held as ``indices`` (``F`` arrays or tensors ``(M_f, B)``) and
    ``L``: shared by :class:`CodebookArrays` and the torch :class:`hdsim.codes.BlockCodebooks`."""

    indices: tuple
    L: int

    @property
    def F(self) -> int:
        return len(self.indices)

    @property
    def B(self) -> int:
        return int(self.indices[0].shape[1])

    @property
    def D(self) -> int:
        return self.B * self.L

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(x.shape[0]) for x in self.indices)


@dataclass(frozen=True)
class CodebookArrays(CodebookShape):
    """The ``F`` SBC codebooks of a factorizer head as numpy offsets (what ``codebooks.npz`` holds).

    ``indices[f]``: ``(M_f, B)`` int64, codevector ``m`` of factor ``f`` has its one in block ``b``
    at offset ``indices[f][m, b]`` (in ``[0, L)``). Torch code wraps them as
    :class:`hdsim.codes.BlockCodebooks` (``BlockCodebooks.from_arrays``).
    """

    indices: tuple[np.ndarray, ...]
    L: int


def write_codebooks(path: str | Path, indices, L: int, class_digits: np.ndarray, class_targets: np.ndarray) -> str:
    """Write ``codebooks.npz`` (see the module docstring); returns its sha256 (the manifest's check)."""
    arrays = {f"X{f}": np.asarray(x, dtype=np.int64) for f, x in enumerate(indices)}
    arrays["L"] = np.array(int(L), dtype=np.int64)
    arrays["class_digits"] = np.asarray(class_digits, dtype=np.int64)
    arrays["class_targets"] = np.asarray(class_targets, dtype=np.int64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return sha256_file(path)


def read_codebooks(path: str | Path, F: int, sha256: str | None = None) -> CodebookArrays:
    """Read and check ``codebooks.npz``: sha256 (when given), ``F`` arrays ``(M_f, B)`` of integer offsets in ``[0, L)``."""
    path = Path(path)
    if not path.is_file():
        raise HdsimError(f"codebooks {path}: missing")
    if sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256:
            raise HdsimError(f"codebooks {path}: sha256 {digest[:12]}... does not match the manifest's "
                             f"{str(sha256)[:12]}...")
    try:
        with np.load(path, allow_pickle=False) as z:
            X = tuple(np.asarray(z[f"X{f}"]) for f in range(F))
            L = int(z["L"])
    except Exception as e:  # zip, pickle and key errors of a damaged file alike
        raise HdsimError(f"codebooks {path}: unreadable ({e.__class__.__name__})") from None
    if L < 1 or any(x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != X[0].shape[1] or x.shape[1] < 1
                    or not np.issubdtype(x.dtype, np.integer) or bool(((x < 0) | (x >= L)).any()) for x in X):
        raise HdsimError(f"codebooks {path}: offsets must be non-empty integer (M, B) arrays with values in [0, {L})")
    return CodebookArrays(tuple(np.ascontiguousarray(x, dtype=np.int64) for x in X), L)


# ---- manifest -----------------------------------------------------------------------------------
def check_manifest(manifest: Any, where: str = "manifest") -> None:
    """The format string, the required fields of the head kind, and a valid preprocessing, or one error line."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise HdsimError(f"{where}: not an hdsim export manifest of format {MANIFEST_FORMAT}"
                         + (f" (found format {found!r})" if found else ""))
    head = manifest.get("head")
    kind = head.get("kind") if isinstance(head, dict) else None
    if kind not in _HEAD_FIELDS:
        raise HdsimError(f"{where}: unknown head kind {kind!r} (expected one of {sorted(_HEAD_FIELDS)})")
    for name in _FIELDS + _HEAD_FIELDS[kind]:
        node = manifest
        for key in name.split("."):
            if not isinstance(node, dict) or key not in node:
                raise HdsimError(f"{where}: missing field {name}")
            node = node[key]
    try:
        Preprocessing.from_dict(manifest["preprocessing"])
        ProductMap(tuple(int(m) for m in manifest["classes"]["radices"]), int(manifest["classes"]["num_classes"]))
    except HdsimError as e:
        raise HdsimError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise HdsimError(f"{where}: classes malformed ({e.__class__.__name__}: {e})") from None
    names = manifest["classes"].get("names")
    if names is not None and (not isinstance(names, list) or len(names) != int(manifest["classes"]["num_classes"])):
        raise HdsimError(f"{where}: classes.names must list one name per class "
                         f"({manifest['classes']['num_classes']})")
    if kind == "bcf":
        bcf_settings(manifest, where)
    elif kind == "sparse-resonator":
        sparse_settings(manifest, where)


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Check ``manifest`` (:func:`check_manifest`) and write ``folder/manifest.json``."""
    path = Path(folder) / MANIFEST_FILE
    check_manifest(manifest, f"manifest {path}")
    path.write_text(json.dumps(manifest, indent=1))
    return path


def bcf_settings(manifest: dict, where: str = "manifest"):
    """The BCF decode of a manifest: ``(BCFConfig, FixedWidths, LFSR seed)``, checked."""
    from hdsim.factorizers.config import BCFConfig
    from hdsim.fixed.widths import FixedWidths

    dec = manifest["decode"]
    try:
        cfg = BCFConfig(T=float(dec["T"]), A=int(dec["A"]), Tc=float(dec["Tc"]), max_iter=int(dec["max_iter"]),
                        similarity=dec["similarity"])
        widths = FixedWidths(**dec["fixed_widths"])
        cfg.validate(int(manifest["head"]["B"]))
        widths.validate()
        seed = int(dec.get("lfsr_seed", 1))
    except HdsimError as e:  # before ValueError: HdsimError is one
        raise HdsimError(f"{where}: decode settings: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise HdsimError(f"{where}: decode settings malformed ({e.__class__.__name__}: {e})") from None
    if not 1 <= seed <= 2**32 - 1:
        raise HdsimError(f"{where}: decode settings: lfsr_seed must be in [1, 2^32 - 1], got {seed}")
    return cfg, widths, seed


def sparse_settings(manifest: dict, where: str = "manifest") -> dict:
    """The sparse-resonator decode of a manifest, checked: keyword arguments ``a``, ``max_iter``, ``seed``,
    ``Tc``, ``restarts`` of :func:`hdsim.sparse_resonator_numpy.sparse_resonator_decode`."""
    dec = manifest["decode"]
    try:
        out = {"a": int(dec["a"]), "max_iter": int(dec["max_iter"]), "seed": int(dec.get("seed", 0)),
               "Tc": float(dec.get("Tc", 0.0)), "restarts": dec.get("restarts", False)}
    except (KeyError, TypeError, ValueError) as e:
        raise HdsimError(f"{where}: decode settings malformed ({e.__class__.__name__}: {e})") from None
    if out["a"] < 1 or out["max_iter"] < 1 or out["seed"] < 0 or not 0.0 <= out["Tc"] <= 1.0 \
            or not isinstance(out["restarts"], bool):
        raise HdsimError(f"{where}: decode settings: need a, max_iter >= 1, seed >= 0, Tc in [0, 1] and a bool "
                         f"restarts, got {out}")
    return out


class ExportFolder:
    """An export folder, checked once (see the module docstring); its parts as attributes.

    Args:
        folder: the folder ``hdsim export`` wrote.
        verify: check the model's sha256 against the manifest (the codebooks' always are).

    Attributes:
        folder, manifest (the parsed JSON), head (kind), preprocessing, classes (:class:`ProductMap`),
        names (class names or ``None``), model_path, output_name, output_width (``None`` if symbolic),
        codebooks (:class:`CodebookArrays`, ``None`` for an FC head).

    Raises:
        HdsimError: a missing folder or file, another format, a missing field, a hash mismatch, codebooks
            whose ``D, B, L, M`` disagree with the manifest or whose ``M`` do not fit the class radices.
    """

    def __init__(self, folder: str | Path, verify: bool = True) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise HdsimError(f"export dir: {'is a file, not a folder' if folder.exists() else 'not found'}: {folder}")
        mpath = folder / MANIFEST_FILE
        try:
            manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise HdsimError(f"export dir {folder}: no {MANIFEST_FILE}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HdsimError(f"manifest {mpath}: not valid JSON ({getattr(e, 'msg', e.__class__.__name__)})") from None
        check_manifest(manifest, f"manifest {mpath}")
        self.folder, self.manifest, self.where = folder, manifest, f"manifest {mpath}"
        self.model_path = folder / manifest["model"]["file"]
        if not self.model_path.is_file():
            raise HdsimError(f"export dir {folder}: model file {manifest['model']['file']} is missing")
        if verify:
            digest = sha256_file(self.model_path)
            if digest != manifest["model"]["sha256"]:
                raise HdsimError(f"model {self.model_path}: sha256 {digest[:12]}... does not match the manifest's "
                                 f"{str(manifest['model']['sha256'])[:12]}...")
        self.head: str = manifest["head"]["kind"]
        self.preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        cls = manifest["classes"]
        self.classes = ProductMap(tuple(int(m) for m in cls["radices"]), int(cls["num_classes"]))
        self.names: list[str] | None = cls.get("names")
        self.output_name: str = manifest["model"]["output"]["name"]
        width = (manifest["model"]["output"].get("shape") or [None, None])[-1]
        self.output_width: int | None = width if isinstance(width, int) else None
        self.codebooks = self._codebooks() if self.head != "fc" else None

    def _codebooks(self) -> CodebookArrays:
        m, head = self.manifest, self.manifest["head"]
        path = self.folder / head["codebooks"]["file"]
        cb = read_codebooks(path, int(head["F"]), m["checks"]["codebooks_sha256"])
        if (cb.D, cb.B, cb.L) != (head["D"], head["B"], head["L"]) or list(cb.sizes) != list(head["M"]):
            raise HdsimError(f"codebooks {path}: D={cb.D}, B={cb.B}, L={cb.L}, M={list(cb.sizes)} disagree with the "
                             f"manifest's head (D={head['D']}, B={head['B']}, L={head['L']}, M={list(head['M'])})")
        if cb.sizes != self.classes.sizes:
            raise HdsimError(f"codebooks {path}: M={list(cb.sizes)} do not fit the class radices "
                             f"{list(self.classes.sizes)}")
        if self.output_width is not None and self.output_width != cb.D:
            raise HdsimError(f"{self.where}: the model output's width {self.output_width} differs from the "
                             f"codebooks' D={cb.D}")
        return cb

    def bcf_settings(self):
        """:func:`bcf_settings` of this export's manifest."""
        return bcf_settings(self.manifest, self.where)

    def sparse_settings(self) -> dict:
        """:func:`sparse_settings` of this export's manifest."""
        return sparse_settings(self.manifest, self.where)

    def label(self, c: int) -> str:
        """The name of class ``c`` (the manifest's names, else the index)."""
        return str(self.names[c]) if self.names else str(c)


# ---- the model -----------------------------------------------------------------------------------
def session_options(optimize: bool, threads: int = 1, optimized_path: Path | None = None):
    """onnxruntime session options of every session here (quiet log, one inter-op thread);
    ``optimized_path``: where onnxruntime writes the graph it runs."""
    ort = require("onnxruntime", purpose="running the exported model")
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


def ort_session(path: str | Path, optimize: bool = False, threads: int = 1, providers: list[str] | None = None):
    """An onnxruntime session; ``optimize=False`` is ``ORT_DISABLE_ALL`` (the reference-parity setting).

    ``providers`` defaults to the CPU; the edge runner passes CUDA first when onnxruntime has it.
    """
    ort = require("onnxruntime", purpose="running the exported model")
    try:
        return ort.InferenceSession(str(path), session_options(optimize, threads),
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) live in its C binding
        reason = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise HdsimError(f"model {path}: onnxruntime cannot load it ({reason[:200]})") from None
