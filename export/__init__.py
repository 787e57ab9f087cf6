"""MobileNetV2 with a block-code-factorizer (BCF) head: QAT training and ONNX export (SPEC section 7).

Modules:

* :mod:`export.mobilenet` — float MobileNetV2 with torchvision's names (ImageNet weights load unchanged).
* :mod:`export.quant` — its Brevitas int8 twin (QAT, calibration, BN merge).
* :mod:`export.heads` — BCF head (codebooks, blockwise loss) and the FC baseline.
* :mod:`export.data` — multi-digit MNIST and image-folder datasets; class <-> product mapping.
* :mod:`export.train` — float + QAT training, checkpoints, DDP (torchrun, gloo).
* :mod:`export.onnx_export` — QCDQ / float ONNX, codebooks.npz, manifest.json.
* :mod:`export.evaluate` — ONNX query -> hdsim FixedBCF / BCF / brute force accuracies.
* :mod:`export.imagenet` — the pretrained ImageNet classifier: int8 export with calibration, photo checks.

Heavy dependencies (brevitas, onnx, onnxruntime, mlxtend) are imported where used;
install the ``export`` extra. See ``docs/export.md``.
"""

from __future__ import annotations

from hdsim.lazy import lazy_exports

__all__ = ["ProductMap", "HeadConfig", "blockwise_cross_entropy", "blockwise_softmax", "BackboneConfig",
           "MobileNetV2"]

# loaded when first touched (PEP 562): registering the commands on the hdsim app imports no torch
_HOME = {"ProductMap": "hdsim.export_folder", "HeadConfig": "export.heads",
         "blockwise_cross_entropy": "export.heads", "blockwise_softmax": "export.heads",
         "BackboneConfig": "export.mobilenet", "MobileNetV2": "export.mobilenet"}


__getattr__, __dir__ = lazy_exports("export", {name: module for name, module in _HOME.items()})
