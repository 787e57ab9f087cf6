"""The sparse associative memory (seed 001) as a classifier head over a WTA network's codes.

A network trained with ``--activation wta --wta-layers all`` ends in a hard-WTA feature map: in each
group of ``l`` channels at each position at most one unit is active (with the default
``--wta-layers blocks`` the last 1x1 convolution keeps ReLU6: its map is then a ReLU code, dense, and
the memory saturates; ``wta_layers`` in the result says which). Binarized (active = 1) and flattened,
that map is a sparse binary code of the image. :class:`hdsim.assoc_memory.AssocMemoryClassifier`
stores ``(code(image), label code(class))`` for training images (``W = max_i y_i x_i^T``) and
classifies a test image by recall (WTA per cluster of the label code) and decoding; a recalled
code that is no class is an abstention (counted wrong). The label code writes class ``c`` as its
base-``l_out`` digits, one cluster each (``l_out = 10`` on the digit tasks: the clusters are the digits).

The codes come from the checkpoint of the export (the network in eval mode: hard WTA), on
``train_images`` composed training images and on the export's test set. Reported beside the
network's own decode: accuracy, abstentions, the memory's size in bits and the code's density.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from hdsim.validation import check_int

__all__ = ["wta_codes", "evaluate_assoc_head"]


@torch.no_grad()
def wta_codes(model, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Binary codes ``(N, features * h * w)`` bool: the last feature map of ``model`` (eval mode) > 0."""
    out = []
    for i in range(0, x.shape[0], batch):
        fm = model.feature_map(x[i:i + batch]) if hasattr(model, "feature_map") else model.features(x[i:i + batch])
        out.append((fm > 0).flatten(1).numpy())
    return np.concatenate(out)


def evaluate_assoc_head(folder: str | Path, *, train_images: int = 6400, l_out: int = 10,
                        limit: int | None = None) -> dict:
    """Fit the associative-memory head on training codes, score it on the test codes (module docstring)."""
    from hdsim.assoc_memory import AssocMemoryClassifier, LabelCode
    from hdsim.export_folder import ExportFolder
    from export.train import TrainConfig, build_data, load_export_checkpoint, restore_model

    check_int("train_images", train_images)
    check_int("l_out", l_out, minimum=2)
    export = ExportFolder(folder)
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
    ctrain, ctest = wta_codes(model, xs), wta_codes(model, xt)
    head = AssocMemoryClassifier(ctrain.shape[1], LabelCode(export.classes.num_classes, l_out)).fit(ctrain,
                                                                                                    ys.numpy())
    res = head.evaluate(ctest, yt.numpy())
    return {"export": str(folder), "activation": cfg.activation, "wta_group": cfg.wta_group,
            "wta_layers": getattr(cfg, "wta_layers", None),
            "train_images": int(xs.shape[0]), "test_images": int(xt.shape[0]), "code_bits": int(ctrain.shape[1]),
            "code_density": round(float(ctest.mean()), 4), "l_out": l_out,
            "memory_density": round(float(head.W.mean()), 4),
            **res, "seconds": round(time.perf_counter() - t0, 1)}
