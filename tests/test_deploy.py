"""The edge runner (deploy/): decisions vs the evaluation, bad inputs, integrity, formats, bench, pipeline.

Uses the session's tiny two-digit export (``tiny_export`` in conftest.py).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

for _mod in ("brevitas", "onnx", "onnxruntime", "mlxtend", "PIL"):
    pytest.importorskip(_mod, reason=f"{_mod} is not installed (pip install -e '.[export]')")

from conftest import hdsim_cli
from hdsim.errors import HdsimError
from export.data import Preprocessing
from workflows.agreement import evaluation_agreement, write_test_images
from deploy.inputs import expand_inputs, load_inputs
from deploy.runner import Runner, RunnerConfig

pytestmark = pytest.mark.filterwarnings("ignore")



@pytest.fixture(scope="module")
def images(tiny_export, tmp_path_factory):
    folder, _ = tiny_export
    out = tmp_path_factory.mktemp("deploy_images")
    files = write_test_images(folder, out, limit=400)
    return out, files


# ---- decisions ----------------------------------------------------------------------------------
def test_runner_decisions_equal_the_evaluation(tiny_export, images):
    folder, _ = tiny_export
    root, files = images
    res = evaluation_agreement(folder, root)
    assert res["images"] == len(files) == 400
    # fused int8 kernels (ORT_ENABLE_ALL) vs the bit-exact reference path (ORT_DISABLE_ALL)
    assert res["identical_decisions"] >= 0.995, res
    assert res["identical_convergence"] >= 0.995, res
    assert abs(res["runner_accuracy"] - res["evaluation_accuracy"]) <= 0.005
    assert res["runner_status"]["error"] == 0
    # written PNGs hold the exact pixels the test tensors came from
    from hdsim.export_folder import ExportFolder

    x, _ = __import__("export.evaluate", fromlist=["x"]).dataset_from_manifest(ExportFolder(folder).manifest).test_set()
    runner = Runner(folder)
    px = np.stack([it.pixels for it in load_inputs([str(files[0][0])], runner.preprocessing)])
    # the torch-free preprocessing gives the training pipeline's tensors bit for bit
    np.testing.assert_array_equal(runner.preprocessing.normalize(px), x[:1].numpy())


def test_python_api_matches_the_file_runner(tiny_export, images):
    from PIL import Image

    folder, _ = tiny_export
    _, files = images
    runner = Runner(folder, RunnerConfig(batch=7))
    paths = [str(p) for p, _ in files[:20]]
    from_files = list(runner.run(paths))
    pil = [Image.open(p) for p in paths[:10]]
    arrays = [np.asarray(Image.open(p)) for p in paths[10:]]
    from_api = runner.predict(pil + arrays)
    assert [p.cls for p in from_api] == [p.cls for p in from_files]
    assert [p.last_estimate for p in from_api] == [p.last_estimate for p in from_files]
    for p in from_files:
        assert p.latency_ms["total"] >= p.latency_ms["cnn"] > 0
        if p.status == "ok":
            # oracle: the two-digit class by hand, first factor the tens digit (M = [10, 10])
            assert p.cls == 10 * p.factors[0] + p.factors[1]
            assert p.label == str(p.cls) and p.converged and 0 < p.confidence <= 1


def test_fc_head_classifies_by_argmax_with_the_softmax_probability(tiny_export, images):
    """An FC export's output is logits: class = first argmax, confidence = its softmax probability.
    (Checked on the tiny export's output read as logits: the decision code is the same.)"""
    folder, _ = tiny_export
    _, files = images
    runner = Runner(folder)
    runner.head = "fc"
    x = runner.preprocessing.normalize(np.stack([it.pixels for it in load_inputs(
        [str(p) for p, _ in files[:12]], runner.preprocessing)]))
    logits = torch.from_numpy(runner.cnn(x)).double()
    logits[0, :] = 0.0
    logits[0, 3] = logits[0, 5] = 2.0  # a tie: the first maximum wins
    runner.cnn = lambda _x: logits.float().numpy()
    preds = runner.predict_batch(x)
    p = torch.softmax(logits.float().double(), dim=1)
    assert [q.cls for q in preds] == p.argmax(dim=1).tolist() and preds[0].cls == 3
    assert [q.confidence for q in preds] == pytest.approx(p.max(dim=1).values.tolist(), rel=1e-9)
    assert all(q.status == "ok" and q.label == str(q.cls) and q.factors is None for q in preds)


def test_every_decoder_and_the_crossbar(tiny_export, images):
    folder, _ = tiny_export
    _, files = images
    paths = [str(p) for p, _ in files[:64]]
    truth = [c for _, c in files[:64]]
    decided = {}
    for kw in ({"decode": "fixed"}, {"decode": "float"}, {"decode": "bruteforce"}, {"imc": "pcm-chip"}):
        runner = Runner(folder, RunnerConfig(**kw))
        preds = list(runner.run(paths))
        assert all(p.status != "error" for p in preds)
        # the decision: the final estimate's class, converged or not (the tiny model's queries are soft)
        decided[json.dumps(kw)] = runner.classes.classes(torch.tensor([p.factors or p.last_estimate
                                                                       for p in preds])).tolist()
    fixed = decided['{"decode": "fixed"}']
    agree = {k: sum(a == b for a, b in zip(fixed, v)) / len(fixed) for k, v in decided.items()}
    # measured on these 64 images: float 63/64, brute force 62/64, crossbar 57/64 of the fixed decisions
    assert agree['{"decode": "float"}'] >= 0.95 and agree['{"decode": "bruteforce"}'] >= 0.9, agree
    assert agree['{"imc": "pcm-chip"}'] >= 0.8, agree
    acc = {k: sum(a == t for a, t in zip(v, truth)) / len(truth) for k, v in decided.items()}
    # the crossbar decode (noisy similarities) stays close to the digital one (measured 39 vs 41 of 64)
    assert acc['{"imc": "pcm-chip"}'] >= acc['{"decode": "fixed"}'] - 0.05, acc


# ---- bad inputs and integrity -------------------------------------------------------------------
def test_bad_inputs_are_per_input_errors_and_the_rest_is_processed(tiny_export, images, tmp_path):
    folder, _ = tiny_export
    _, files = images
    good = shutil.copy(files[0][0], tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "nan.npy", np.full((32, 64), np.nan))
    np.save(tmp_path / "range.npy", np.full((32, 64), 300.0))
    np.save(tmp_path / "shape.npy", np.zeros((2, 2, 2, 2, 2)))
    with open(tmp_path / "archive.npy", "wb") as f:  # an .npz under a .npy name
        np.savez(f, a=np.zeros((32, 64)))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "unit.npy", rng.random((32, 64)))  # a [0, 1]-scaled float image
    (tmp_path / "emptydir").mkdir()
    runner = Runner(folder)
    preds = {p.input: p for p in runner.run([str(tmp_path / n) for n in (
        "good.png", "empty.png", "corrupt.png", "truncated.png", "nan.npy", "range.npy", "shape.npy", "archive.npy",
        "unit.npy")] + [str(tmp_path / "emptydir"), str(tmp_path / "missing.png"), str(tmp_path / "*.jpeg")])}
    assert preds[str(good)].status in ("ok", "not-converged")
    expected = {"empty.png": "empty file", "corrupt.png": "not a readable image", "truncated.png": "not a readable image",
                "nan.npy": "NaN", "range.npy": "expected [0, 255]", "shape.npy": "not an image",
                "archive.npy": "a .npz archive, not a .npy array", "unit.npy": "look like a [0, 1]-scaled image",
                "emptydir": "no images", "missing.png": "no such file", "*.jpeg": "matches no file"}
    for name, text in expected.items():
        p = preds[str(tmp_path / name)]
        assert p.status == "error" and text in p.error and "\n" not in p.error, (name, p.error)
        assert p.cls is None
    # the CLI: same lines, exit code 1, one 'error:' line per failed input on stderr
    proc = hdsim_cli("run", str(folder), str(tmp_path / "good.png"), str(tmp_path / "nan.npy"),
                     str(tmp_path / "missing.png"), "--no-progress")
    assert proc.returncode == 1
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [d["status"] for d in lines][1:] == ["error", "error"] and lines[0]["status"] != "error"
    assert sum(x.startswith("error: ") for x in proc.stderr.splitlines()) == 2
    assert "summary: 3 inputs" in proc.stderr


def test_sizes_channels_and_npy_stacks(tiny_export, images, tmp_path):
    from PIL import Image

    folder, manifest = tiny_export
    _, files = images
    im = Image.open(files[0][0])
    big = im.convert("RGB").resize((128, 64))  # RGB, twice the size: converted and resized (stretch)
    big.save(tmp_path / "big_rgb.png")
    runner = Runner(folder)
    p = runner.predict([str(tmp_path / "big_rgb.png")])[0]
    assert p.status != "error"
    stack = np.stack([np.asarray(Image.open(f)) for f, _ in files[:3]])  # (3, 32, 64): three gray images
    np.save(tmp_path / "stack.npy", stack)
    preds = runner.predict([str(tmp_path / "stack.npy")])
    assert [q.input for q in preds] == [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(3)]
    assert [q.cls for q in preds] == [q.cls for q in runner.predict([str(f) for f, _ in files[:3]])]
    # a manifest that forbids resizing: wrong sizes are per-input errors
    strict = tmp_path / "strict"
    shutil.copytree(folder, strict)
    m = json.loads((strict / "manifest.json").read_text())
    m["preprocessing"]["resize"] = "none"
    (strict / "manifest.json").write_text(json.dumps(m))
    preds = Runner(strict).predict([str(tmp_path / "big_rgb.png"), str(files[0][0])])
    assert preds[0].status == "error" and "size 64x128 (HxW), expected 32x64" in preds[0].error
    assert preds[1].status != "error"


def test_shorter_side_crop_is_the_imagenet_transform():
    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    pp = Preprocessing(3, 224, 224, (0.5,) * 3, (0.5,) * 3, resize="shorter-side-crop", resize_shorter=256)
    px = pp.pixels(im)
    ref = np.asarray(im.resize((341, 256), Image.BILINEAR))[16:240, 58:282].transpose(2, 0, 1)
    assert px.shape == (3, 224, 224) and np.array_equal(px, ref)
    assert Preprocessing.from_dict(pp.as_dict()) == pp


def test_integrity_errors_come_before_any_inference(tiny_export, tmp_path):
    folder, _ = tiny_export
    bad = tmp_path / "tampered"
    shutil.copytree(folder, bad)
    with open(bad / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(HdsimError, match="does not match the manifest"):
        Runner(bad)
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    m = json.loads((other / "manifest.json").read_text())
    m["format"] = "hdsim-export-manifest/0"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(HdsimError, match="not an hdsim export manifest"):
        Runner(other)
    nocb = tmp_path / "nocb"
    shutil.copytree(folder, nocb)
    (nocb / "codebooks.npz").unlink()
    with pytest.raises(HdsimError, match="codebooks"):
        Runner(nocb)
    with pytest.raises(HdsimError, match="imc: crossbar decoding needs --decode fixed"):
        Runner(folder, RunnerConfig(decode="float", imc="pcm-chip"))
    proc = hdsim_cli("run", str(bad), str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: model ")
    assert len(proc.stderr.strip().splitlines()) == 1


def _variant(folder, tmp_path, name, edit_manifest=None, edit_codebooks=None, model_bytes=None):
    """A copy of the export with its manifest, codebooks or model changed (hashes updated where said)."""
    from export.onnx_export import sha256_file

    out = tmp_path / name
    shutil.copytree(folder, out)
    m = json.loads((out / "manifest.json").read_text())
    if edit_codebooks is not None:
        with np.load(out / "codebooks.npz") as z:
            arrays = {k: z[k] for k in z.files}
        edit_codebooks(arrays)
        np.savez(out / "codebooks.npz", **arrays)
        m["checks"]["codebooks_sha256"] = sha256_file(out / "codebooks.npz")  # a consistent but wrong export
    if model_bytes is not None:
        (out / "model.onnx").write_bytes(model_bytes((out / "model.onnx").read_bytes()))
        m["model"]["sha256"] = sha256_file(out / "model.onnx")
    if edit_manifest is not None:
        edit_manifest(m)
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_damaged_exports_are_one_line_errors_naming_what_is_wrong(tiny_export, images, tmp_path):
    """Every consumer (runner, evaluation) loads through the same checks: no KeyError, no onnxruntime
    traceback, and no silently different answer from swapped codebook rows (the codebooks' sha256
    refuses them; with the hash recomputed, the decisions do change: the brute-force decode of the
    swapped export is the original's with the two swapped codevectors exchanged)."""
    from export.evaluate import evaluate_export

    folder, _ = tiny_export

    def swap_rows(a):
        a["X0"][[0, 1]] = a["X0"][[1, 0]]

    cases = {
        "nokey": (dict(edit_manifest=lambda m: m["decode"].pop("T")), "missing field decode.T"),
        "swapped": (dict(edit_manifest=lambda m: None), None),
        "range": (dict(edit_codebooks=lambda a: a["X0"].__setitem__((0, 0), 999)), r"values in \[0, "),
        "truncated": (dict(model_bytes=lambda b: b[: len(b) // 2]), "onnxruntime cannot load it"),
        "std0": (dict(edit_manifest=lambda m: m["preprocessing"].__setitem__("std", [0.0])), "std and scale"),
        "input": (dict(edit_manifest=lambda m: m["preprocessing"].update(height=40, width=40)),
                  "does not match the model's input"),
        "decode": (dict(edit_manifest=lambda m: m["decode"].__setitem__("A", "x")), "decode settings malformed"),
        "kind": (dict(edit_manifest=lambda m: m["head"].__setitem__("kind", "hopfield")),
                 "unknown head kind 'hopfield'"),
        "blocks": (dict(edit_manifest=lambda m: m["head"].update(B=8, L=32)), r"codebooks .*B=4, L=64.* disagree"),
        "radices": (dict(edit_manifest=lambda m: m["classes"].update(radices=[20, 5])),
                    r"M=\[10, 10\] do not fit the class radices \[20, 5\]"),
    }
    for name, (edit, match) in cases.items():
        out = _variant(folder, tmp_path, name, **edit)
        if name == "swapped":  # rows swapped, manifest hash left as exported
            with np.load(out / "codebooks.npz") as z:
                arrays = {k: z[k] for k in z.files}
            swap_rows(arrays)
            np.savez(out / "codebooks.npz", **arrays)
            match = "codebooks .*sha256 .* does not match the manifest"
        with pytest.raises(HdsimError, match=match):
            Runner(out)
        if name != "input":  # the evaluation rebuilds its inputs from the dataset, not the preprocessing
            with pytest.raises(HdsimError, match=match):
                evaluate_export(out, limit=8)
    proc = hdsim_cli("evaluate", str(tmp_path / "nokey"))
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: manifest {tmp_path / 'nokey' / 'manifest.json'}: " \
        "missing field decode.T"
    # rows 0 and 1 of factor 0 swapped and the hash recomputed: a consistent export that decides
    # otherwise. Oracle: exhaustive search over the same products, with codevectors 0 and 1 renamed.
    consistent = _variant(folder, tmp_path, "swapped_rehashed", edit_codebooks=swap_rows)
    runner = Runner(folder, RunnerConfig(decode="bruteforce"))
    swapped = Runner(consistent, RunnerConfig(decode="bruteforce"))
    x = runner.preprocessing.normalize(np.stack([it.pixels for it in load_inputs(
        [str(p) for p, _ in images[1][:64]], runner.preprocessing)]))
    out = runner.cnn(x)
    a, b = runner.decode(out)[0], swapped.decode(out)[0]
    rename = np.array([1, 0] + list(range(2, 10)))  # M = 10 codevectors in factor 0
    assert np.array_equal(b[:, 1], a[:, 1]) and np.array_equal(b[:, 0], rename[a[:, 0]])
    assert (np.isin(a[:, 0], [0, 1])).any()  # some decisions did move


def test_sixteen_bit_images_equal_their_eight_bit_originals(tiny_export, images, tmp_path):
    from PIL import Image

    folder, _ = tiny_export
    _, files = images
    a = np.asarray(Image.open(files[0][0]))
    Image.fromarray(a.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # the same picture, 16-bit
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    r = Runner(folder)
    p8, p16 = r.predict([str(files[0][0]), str(tmp_path / "sixteen.png")])
    assert (p8.status, p8.cls, p8.factors, p8.confidence) == (p16.status, p16.cls, p16.factors, p16.confidence)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    (bad,) = r.predict([str(tmp_path / "float.tif")])
    assert bad.status == "error" and "floating-point images" in bad.error


def test_an_extreme_aspect_ratio_is_refused_before_the_resize():
    from PIL import Image

    pp = Preprocessing(3, 224, 224, (0.5,) * 3, (0.5,) * 3, resize="shorter-side-crop", resize_shorter=256)
    with pytest.raises(HdsimError, match=r"^strip: aspect ratio 1x8000 \(HxW\) too extreme"):
        pp.pixels(Image.new("RGB", (8000, 1)), "strip")  # would be 256 x 2,048,000 pixels
    assert tuple(pp.pixels(Image.new("RGB", (600, 300))).shape) == (3, 224, 224)


def test_out_of_distribution_photos_never_give_a_confident_unconverged_class(tiny_export, tmp_path):
    """Photos, noise and a black image through the default (compiled) decode: each status follows
    from the torch model FixedBCF's decode of the same network outputs by the documented rule
    (not converged -> no class; a product >= 100 -> null product; else the two-digit class)."""
    from sklearn.datasets import load_sample_images
    from PIL import Image

    folder, _ = tiny_export
    for name, a in zip(("china", "flower"), load_sample_images().images):
        Image.fromarray(a).save(tmp_path / f"{name}.jpg")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "noise.npy", rng.integers(0, 256, (8, 32, 64)).astype(np.uint8))
    np.save(tmp_path / "zeros.npy", np.zeros((32, 64), np.uint8))
    runner = Runner(folder)
    paths = [str(tmp_path / n) for n in ("china.jpg", "flower.jpg", "noise.npy", "zeros.npy")]
    preds = runner.predict(paths)
    assert len(preds) == 11 and all(p.status != "error" for p in preds)
    x = runner.preprocessing.normalize(np.stack([it.pixels for it in load_inputs(paths, runner.preprocessing)]))
    model = Runner(folder, RunnerConfig(compiled=False))
    assert model.decoder_name == "FixedBCF"
    idx, _, conv, _ = model.decode(model.cnn(x))
    for p, f, c in zip(preds, idx.tolist(), conv.tolist()):
        cls = 10 * f[0] + f[1]
        want = "not-converged" if not c else "ok"  # 100 classes fill the 10 x 10 products: no null product
        assert (p.status, p.cls) == (want, cls if c else None), (p, f, c)
        if not c:
            assert p.label is None and p.factors is None and p.last_estimate == f


def test_output_formats(tiny_export, images):
    folder, _ = tiny_export
    _, files = images
    paths = [str(p) for p, _ in files[:12]]
    rows = {}
    for fmt in ("jsonl", "csv", "table"):
        proc = hdsim_cli("run", str(folder), *paths, "--format", fmt, "--batch", "5", "--threads", "1")
        assert proc.returncode == 0, proc.stderr
        rows[fmt] = proc.stdout
        assert "summary: 12 inputs" in proc.stderr
    js = [json.loads(x) for x in rows["jsonl"].splitlines()]
    cs = list(csv.DictReader(io.StringIO(rows["csv"])))
    assert [d["input"] for d in js] == paths == [r["input"] for r in cs]
    assert [str(d["class"]) if d["class"] is not None else "" for d in js] == [r["class"] for r in cs]
    table = rows["table"].splitlines()
    assert len(table) == 13 and table[0].split()[:2] == ["input", "status"]


def test_execution_providers_per_device(monkeypatch, tiny_export, images):
    """CUDA first when onnxruntime has it (``auto``, ``cuda``), never asked for by ``cpu``; ``cuda``
    without it is a one-line error before any inference."""
    import onnxruntime as ort

    from deploy.runner import _providers

    folder, _ = tiny_export
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _providers("auto") == _providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert _providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(HdsimError, match="device: cuda requested but onnxruntime has no CUDA provider"):
        Runner(folder, RunnerConfig(device="cuda"))
    with pytest.raises(HdsimError, match="device: expected auto, cpu or cuda"):
        RunnerConfig(device="tpu").validate()
    monkeypatch.undo()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        proc = hdsim_cli("run", str(folder), str(images[1][0]), "--device", "cuda")
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: device: cuda")


def test_expand_inputs_sorts_folders_and_globs(tmp_path):
    for n in ("b.png", "a.png", "sub/c.npy", "x.txt"):
        (tmp_path / n).parent.mkdir(exist_ok=True)
        (tmp_path / n).write_bytes(b"1")
    names = [n for n, _, e in expand_inputs([str(tmp_path)]) if e is None]
    assert names == [str(tmp_path / n) for n in ("a.png", "b.png", "sub/c.npy")]
    names = [n for n, _, e in expand_inputs([str(tmp_path / "*.png")])]
    assert names == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


# ---- benchmark ----------------------------------------------------------------------------------
def test_bench_deploy_reports_ratios_measured_in_one_run(tiny_export):
    """The bench's report holds every measurement; what is checked is what an independent look gives
    (the timings and their ratios are the benchmark's findings, not a test's)."""
    import onnx

    folder, _ = tiny_export
    proc = hdsim_cli("bench", "deploy", str(folder), "--runs", "10", "--warmup", "2", "--decode-queries", "256",
                     "--images", "64", "--threads", "1", "--no-progress", "--profile")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    lat = r["latency"]
    for k in ("int8_onnx", "float_onnx", "torch_float"):
        assert lat[k]["calls"] == 10  # --runs
    for key in ("int8_over_float_onnx", "int8_over_torch", "decode_over_cnn", "call_by_call_diagnostic"):
        assert key in r, key
    assert r["threads"] == 1
    # oracle: the exported graph read with onnx. Every convolution of the QCDQ model runs as one
    # fused int8 kernel (QLinearConv) in onnxruntime's optimized graph, none as a float Conv.
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(folder / "model.onnx")).graph.node)
    assert convs > 0 and r["int8_graph_ops"].get("QLinearConv") == convs and not r["int8_graph_ops"].get("Conv")
    prof = r["profile_ms_per_call"]
    assert "QLinearConv" in prof["int8_onnx"]["by_op"] and "QLinearConv" not in prof["float_onnx"]["by_op"]
    # the footprint: the deploy extra's closure pulls no torch (requirement_closure's own test below)
    fp = r["footprint"]
    tf, wt = fp["variants"]["torch_free"], fp["variants"]["with_torch"]
    assert not tf["has_torch"] and wt["has_torch"] and tf["installed_mb"] < wt["installed_mb"]
    assert tf["decoder"] == "CompiledFixedBCF" and fp["identical_decisions"] is True and fp["images"] == 64


def test_requirement_closure_follows_extras_and_markers():
    from importlib import metadata

    from workflows.footprint import requirement_closure

    deploy, full = requirement_closure(["hdsim[deploy]"]), requirement_closure(["hdsim[core,export]"])
    # oracle: the extras' own lists in the installed metadata, one level down
    direct = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
              for r in metadata.requires("hdsim") if 'extra == "deploy"' in r}
    assert direct and direct <= deploy and "torch" not in deploy
    assert {"torch", "brevitas", "onnxruntime"} <= full and deploy < full


def test_bench_deploy_needs_the_float_reference(tiny_export, tmp_path):
    folder, _ = tiny_export
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    m = json.loads((moved / "manifest.json").read_text())
    m["source"]["checkpoint"] = str(tmp_path / "gone.pt")
    (moved / "manifest.json").write_text(json.dumps(m))
    proc = hdsim_cli("bench", "deploy", str(moved), "--runs", "2")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "bench deploy (the float reference; or pass --float-dir for the float ONNX): needs the export's " \
        "checkpoint" in proc.stderr


def test_bench_deploy_refuses_a_float_export_of_another_network(tiny_export, tmp_path):
    from workflows.deploy_bench import DeployBenchConfig, run_deploy_bench

    folder, _ = tiny_export
    other = _variant(folder, tmp_path, "other_float", edit_manifest=lambda m: (
        m["model"].__setitem__("kind", "float32"), m["source"].__setitem__("checkpoint", "/elsewhere/last.pt")))
    with pytest.raises(HdsimError, match="not the float export of the same network"):
        run_deploy_bench(DeployBenchConfig(folder=str(folder), float_dir=str(other), runs=2))


# ---- the pipeline of hdsim demo -----------------------------------------------------------------
def test_demo_pipeline_on_a_given_checkpoint(tiny_trained, tmp_path):
    from hdsim.rtl import simulator_status

    root, _ = tiny_trained
    proc = hdsim_cli("demo", "--queries", "16", "--checkpoint", str(root / "run" / "last.pt"), "--workdir",
                     str(tmp_path / "demo"), "--images", "60", "--cosim-queries", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    p = out["pipeline"]
    assert p["runner"]["images"] == 60 and p["runner"]["identical_decisions"] >= 0.98
    assert p["export"]["ort_vs_brevitas_max_abs"] <= 1e-5
    assert (tmp_path / "demo" / "export" / "model.onnx").is_file()
    assert len(list((tmp_path / "demo" / "images").glob("*.png"))) == 60
    st = simulator_status()
    if st["iverilog"] and st["cocotb"]:
        assert p["rtl"]["queries"] == 3 and p["rtl"]["passed"] == 3 and p["rtl"]["mismatches"] == 0
    else:
        assert "skipped" in p["rtl"]
    assert "edge runner on 60 held-out images" in proc.stderr


def test_an_empty_npy_stack_is_an_error_not_zero_inputs():
    from deploy.inputs import _split_array

    for shape in ((0, 28, 28), (0, 28, 28, 1), (0, 1, 28, 28)):
        with pytest.raises(HdsimError, match=r"^e\.npy: a stack of 0 images"):
            _split_array(np.zeros(shape, np.uint8), "e.npy", 1)
    assert len(_split_array(np.zeros((2, 28, 28), np.uint8), "e.npy", 1)) == 2


def test_sparse_resonator_head_runs_like_its_evaluation(tiny_sr_export, tmp_path):
    """The sparse-resonator export through the runner: the same decisions as the evaluation's decode,
    a brute-force decoder, and BCF-only decodes refused."""
    from export.evaluate import evaluate_export

    root, manifest = tiny_sr_export
    folder = root / "int8"
    files = write_test_images(folder, tmp_path / "img", limit=64)
    runner = Runner(folder)
    assert runner.decoder_name == "SparseResonator"
    preds = list(runner.run([str(tmp_path / "img")]))
    ev = evaluate_export(folder, limit=64, optimize=True, decisions=True)
    truth = [c for _, c in files]
    assert len(preds) == 64 and [p.input for p in preds] == [str(f) for f, _ in files]
    got = [p.cls if p.status == "ok" else None for p in preds]
    want = [c if conv and c >= 0 else None for c, conv in zip(ev["decisions"], ev["converged_per_image"])]
    assert got == want
    assert sum(g == t for g, t in zip(got, truth)) / 64 == pytest.approx(ev["accuracy"])
    brute = Runner(folder, RunnerConfig(decode="bruteforce"))
    assert brute.decoder_name == "bruteforce"
    bp = brute.predict_batch(runner.preprocessing.normalize(np.stack(
        [it.pixels for it in load_inputs([str(tmp_path / "img")], runner.preprocessing)])))
    assert sum(p.cls == t for p, t in zip(bp, truth)) / 64 == pytest.approx(ev["accuracy_bruteforce"])
    for bad in (RunnerConfig(decode="float"), RunnerConfig(imc="pcm-chip")):
        with pytest.raises(HdsimError, match="^decode: the sparse-resonator head decodes with its sparse resonator"):
            Runner(folder, bad)
    # hdsim bench deploy times the sparse decode too
    proc = hdsim_cli("bench", "deploy", str(folder), "--runs", "4", "--warmup", "1", "--decode-queries", "64",
                     "--images", "32", "--threads", "1", "--no-progress", "--no-footprint")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["decoders"] == {"fixed": "SparseResonator", "bruteforce": "bruteforce"}
    for k in ("decode_fixed_ms_per_image", "decode_bruteforce_ms_per_image", "decode_over_cnn"):
        assert k in r, k  # timings: the benchmark's findings, not compared here
    # the runner on this export with torch blocked: the same predictions as here (sparse resonator, brute force)
    paths = [str(p) for p, _ in files[:12]]
    code = ("import sys, json; sys.modules['torch'] = None; from deploy.runner import Runner, RunnerConfig; "
            "print(json.dumps({d: [(p.status, p.cls, p.factors, p.iterations, p.confidence) for p in "
            "Runner(sys.argv[1], RunnerConfig(decode=d)).predict(sys.argv[2:])] for d in ('fixed', 'bruteforce')}))")
    proc = subprocess.run([sys.executable, "-c", code, str(folder), *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    for d in ("fixed", "bruteforce"):
        assert got[d] == [[p.status, p.cls, p.factors, p.iterations, p.confidence]
                          for p in Runner(folder, RunnerConfig(decode=d)).predict(paths)]


def test_gray_alpha_arrays_are_one_image_and_black_floats_pass(tiny_export, images, tmp_path):
    from PIL import Image

    folder, _ = tiny_export
    _, files = images
    gray = np.asarray(Image.open(files[0][0]))
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "gray_alpha.npy", np.stack([gray, np.full_like(gray, 255)], axis=-1))  # (32, 64, 2)
    np.save(tmp_path / "black.npy", np.zeros((32, 64), np.float32))
    preds = list(Runner(folder).run([str(tmp_path / n) for n in ("gray.npy", "gray_alpha.npy", "black.npy")]))
    assert len(preds) == 3 and all(p.status != "error" for p in preds)  # not 32 one-row images
    assert (preds[1].factors or preds[1].last_estimate) == (preds[0].factors or preds[0].last_estimate)
    assert preds[1].confidence == preds[0].confidence


def test_non_finite_network_outputs_are_per_image_errors(tiny_export, images):
    """A NaN / inf row of the network's output is that image's error; the other images get the
    decisions they get without it (BCF and FC decisions alike)."""
    folder, _ = tiny_export
    _, files = images
    for head in ("bcf", "fc"):
        runner = Runner(folder)
        runner.head = head
        x = runner.preprocessing.normalize(np.stack([it.pixels for it in load_inputs(
            [str(p) for p, _ in files[:6]], runner.preprocessing)]))
        clean = runner.predict_batch(x)
        out = runner.cnn(x)
        out[1, 3], out[4, 0] = np.nan, np.inf
        runner.cnn = lambda _x, out=out: out
        preds = runner.predict_batch(x, [f"img{i}" for i in range(6)])
        assert [p.status for p in preds][1] == "error" and preds[4].status == "error"
        assert preds[1].error == "img1: the network's output holds NaN or infinite values (no decision)"
        for i in (0, 2, 3, 5):
            assert (preds[i].status, preds[i].cls, preds[i].confidence) == \
                (clean[i].status, clean[i].cls, clean[i].confidence)
            json.dumps(preds[i].as_dict(), allow_nan=False)  # valid JSON: no NaN confidence


def test_an_output_width_that_differs_from_the_manifest_is_refused(tiny_export, tmp_path):
    folder, _ = tiny_export
    out = _variant(folder, tmp_path, "width", edit_manifest=lambda m: m["model"]["output"].update(shape=["N", 100]))
    # the format's own check (manifest vs codebooks) fires first; the runner then checks the real ONNX output
    with pytest.raises(HdsimError, match="the model output's width 100 differs from the codebooks' D=256"):
        Runner(out)


def test_every_default_decode_runs_with_torch_blocked(tiny_export, images):
    """The runner, its inputs and the fixed (compiled, sampling included), crossbar, float and brute-force decodes
    in a process where importing torch fails; the decisions equal this process's, and the compiled ones equal
    the torch model FixedBCF's (--no-compiled; on the crossbar with FixedPointPerturbation) to the last bit."""
    folder, manifest = tiny_export
    _, files = images
    paths = [str(p) for p, _ in files[:16]]
    configs = {"fixed": {}, "crossbar": {"imc": "pcm-chip"}, "float": {"decode": "float"},
               "bruteforce": {"decode": "bruteforce"}}
    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from deploy.runner import Runner, RunnerConfig\n"
            f"configs = {configs!r}\n"
            "out = {k: [(p.status, p.cls, p.factors, p.last_estimate, p.iterations, p.confidence) for p in "
            "Runner(sys.argv[1], RunnerConfig(**kw)).predict(sys.argv[2:])] for k, kw in configs.items()}\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code, str(folder), *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    for k, kw in configs.items():
        ref = kw | ({"compiled": False} if k in ("fixed", "crossbar") else {})  # the torch model for the fixed decodes
        runner = Runner(folder, RunnerConfig(**ref))
        assert runner.decoder_name in ("FixedBCF", "FixedBCF+crossbar", "bcf_numpy", "bruteforce")
        want = [[p.status, p.cls, p.factors, p.last_estimate, p.iterations, p.confidence]
                for p in runner.predict(paths)]
        assert got[k] == want, k
    assert Runner(folder).decoder_name == "CompiledFixedBCF"  # whatever A the calibration chose
    assert Runner(folder, RunnerConfig(imc="pcm-chip")).decoder_name == "CompiledFixedBCF+crossbar"
    assert got["crossbar"] != got["fixed"]  # the crossbar's readings changed some decodes
