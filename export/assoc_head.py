"""The sparse associative memory (seed 001) as a classifier head over WTA codes of a network's features.

The seed turns a trained network into a deep hetero-associative memory: activations become binary
winner-take-all codes (``c`` groups of ``l`` units, one winner each) and a Willshaw memory
``W = max_i y_i x_i^T`` maps them to label codes. Here the head reads the network's pooled
features ``f`` (the ``features``-wide vector its FC/BCF/sparse-resonator head reads) and codes them
with the binary WTA of the seed's DHAMs: in each group of ``l`` consecutive channels the largest
feature is 1, the others 0 (lowest index on ties). ``groupings > 1`` concatenates that many codes,
each over a seeded random permutation of the channels (more bits, the same features grouped
differently: an ensemble inside one memory). :class:`hdsim.assoc_memory.AssocMemoryClassifier`
stores ``(code(image), label code(class))`` for ``train_images`` composed training images and
classifies a test image by recall (WTA per cluster of the label code) and decoding; a recalled code
that is no class is an abstention (counted wrong).

Why the pooled features and not a feature map: a map's code is indexed by position, and the same
digit lands on different positions, so each class's memory row (the OR of its codes) fills up:
on the CI-size ``--wta-layers all`` exports the last map's 256-bit codes left ``W`` 84-100% set and
the head at chance. Pooled, the code depends on what is in the image, not where, and with the
default label code (one cluster of ``n_classes`` units: a row per class) each row stays sparse.

The codes come from the checkpoint of the export (the network in eval mode: hard WTA activations
for a WTA network, int8 activations of the QAT net), on ``train_images`` training images composed
for this head and on the export's test set. Reported beside the network's own decode: accuracy,
abstentions, the memory's size in bits, code and memory densities.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from hdsim.errors import HdsimError
from hdsim.validation import check_int

__all__ = ["wta_code", "pooled_features", "evaluate_assoc_head"]


def wta_code(features: np.ndarray, l: int, groupings: int = 1, seed: int = 0) -> np.ndarray:
    """Binary WTA codes of real feature vectors: per group of ``l`` channels, the largest is 1.

    ``code[n, g l + j] = 1`` iff ``j = argmax_k f[n, perm(g l + k)]`` (lowest ``k`` on ties), for each
    of ``groupings`` channel orders ``perm`` (the identity first, then seeded random permutations
    from ``numpy.random.default_rng([seed, r])``), concatenated.

    Shapes:
        features: ``(N, C)`` real, ``C`` a multiple of ``l``; returns ``(N, groupings * C)`` bool with
        exactly ``groupings * C / l`` ones per row

    Example:
        >>> wta_code(np.array([[0.1, 0.7, 0.3, 0.3]]), 2).astype(int).tolist()
        [[0, 1, 1, 0]]
    """
    f = np.asarray(features)
    if f.ndim != 2 or f.dtype.kind not in "fiu":
        raise HdsimError(f"features: expected a real (N, C) array, got {f.dtype} shape {f.shape}")
    check_int("l", l, minimum=2)
    check_int("groupings", groupings)
    n, c = f.shape
    if c % l:
        raise HdsimError(f"l: groups of {l} do not divide the {c} features")
    out = []
    for r in range(groupings):
        perm = np.arange(c) if r == 0 else np.random.default_rng([int(seed), r]).permutation(c)
        g = f[:, perm].reshape(n, c // l, l)
        code = np.zeros(g.shape, dtype=np.bool_)
        np.put_along_axis(code, g.argmax(axis=2)[..., None], True, axis=2)
        out.append(code.reshape(n, c))
    return np.concatenate(out, axis=1)


@torch.no_grad()
def pooled_features(model, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    """The pooled backbone features ``(N, features)`` of ``model`` (eval mode), float64."""
    if getattr(model, "pool_size", 0):
        # the sparse-resonator head's weighted pooling: its output is the pooled features
        return np.concatenate([model(x[i:i + batch]).double().numpy() for i in range(0, x.shape[0], batch)])
    return np.concatenate([model.embed(x[i:i + batch]).double().numpy() for i in range(0, x.shape[0], batch)])


def evaluate_assoc_head(folder: str | Path, *, train_images: int = 6400, l: int = 4, groupings: int = 1,
                        l_out: int | None = None, seed: int = 0, limit: int | None = None) -> dict:
    """Fit the associative-memory head on training codes, score it on the test codes (module docstring).

    ``l_out``: units per cluster of the label code; ``None``: the number of classes (one cluster,
    a memory row per class); smaller values spell a class in base ``l_out`` over several clusters.
    """
    from hdsim.assoc_memory import AssocMemoryClassifier, LabelCode
    from hdsim.export_folder import ExportFolder
    from export.train import TrainConfig, build_data, load_export_checkpoint, restore_model

    check_int("train_images", train_images)
    check_int("groupings", groupings)
    export = ExportFolder(folder)
    n_classes = export.classes.num_classes
    l_out = n_classes if l_out is None else l_out
    check_int("l_out", l_out, minimum=2)
    state = load_export_checkpoint(export.manifest, "assoc-memory (the codes come from its network)")
    cfg = TrainConfig.from_dict(state["config"])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, data, _, model = restore_model(state)
        model.eval()
        xs, ys = build_data(cfg).train_epoch(10_000, train_images)  # an epoch index no training run reaches
        xt, yt = data.test_set()
        if limit is not None:
            xt, yt = xt[:limit], yt[:limit]
        fs, ft = pooled_features(model, xs), pooled_features(model, xt)
    ctrain, ctest = wta_code(fs, l, groupings, seed), wta_code(ft, l, groupings, seed)
    head = AssocMemoryClassifier(ctrain.shape[1], LabelCode(n_classes, l_out)).fit(ctrain, ys.numpy())
    res = head.evaluate(ctest, yt.numpy())
    return {"export": str(folder), "activation": cfg.activation,
            "wta_group": cfg.wta_group if cfg.activation == "wta" else None,
            "wta_layers": cfg.wta_layers if cfg.activation == "wta" else None,
            "features": int(fs.shape[1]), "code_group": l, "groupings": groupings, "seed": seed,
            "train_images": int(xs.shape[0]), "test_images": int(xt.shape[0]), "code_bits": int(ctrain.shape[1]),
            "code_density": round(float(ctest.mean()), 4), "l_out": l_out,
            "label_clusters": head.code.clusters, "memory_density": round(float(head.W.mean()), 4),
            **res, "seconds": round(time.perf_counter() - t0, 1)}
