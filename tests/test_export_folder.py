"""The export folder format (hdsim.export_folder): every reader check on damaged copies of a small,
hand-built export (no training; the model file's bytes are only hashed here), and the writers'
round trip."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hdsim.errors import HdsimError
from hdsim.export_folder import (MANIFEST_FORMAT, CodebookArrays, ExportFolder, Preprocessing, ProductMap,
                                 sha256_file, write_codebooks, write_manifest)


def _export(folder, head: str = "bcf", F: int = 2, M: int = 3, B: int = 2, L: int = 4):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not really a model")
    rng = np.random.default_rng(0)
    X = [rng.integers(0, L, (M, B)) for _ in range(F)]
    pm = ProductMap((M,) * F, M ** F)
    m = {"format": MANIFEST_FORMAT,
         "model": {"file": "model.onnx", "sha256": sha256_file(folder / "model.onnx"),
                   "output": {"name": "query" if head != "fc" else "logits",
                              "shape": ["N", B * L if head != "fc" else pm.num_classes]}},
         "preprocessing": Preprocessing(1, 8, 8, (0.5,), (0.25,)).as_dict(),
         "head": {"kind": head}, "classes": pm.as_dict(), "checks": {}}
    if head != "fc":
        m["checks"]["codebooks_sha256"] = write_codebooks(folder / "codebooks.npz", X, L, pm.digits(np.arange(
            pm.num_classes)), np.zeros(pm.num_classes))
        m["head"].update({"F": F, "B": B, "L": L, "D": B * L, "M": [M] * F, "codebooks": {"file": "codebooks.npz"}})
        m["decode"] = ({"T": 0.0, "A": 0, "Tc": 0.9, "max_iter": 10, "similarity": "linf",
                        "fixed_widths": {"query": 8, "estimate": 8, "unbound": 8, "recip_guard": 10}, "lfsr_seed": 3}
                       if head == "bcf" else {"a": 2, "max_iter": 10, "seed": 0, "Tc": 0.5, "restarts": False})
    write_manifest(folder, m)
    return m, X


@pytest.mark.parametrize("head", ["fc", "bcf", "sparse-resonator"])
def test_a_written_export_reads_back(tmp_path, head):
    m, X = _export(tmp_path / "e", head)
    ex = ExportFolder(tmp_path / "e")
    assert ex.head == head and ex.classes == ProductMap((3, 3), 9) and ex.output_width == m["model"]["output"]["shape"][1]
    if head == "fc":
        assert ex.codebooks is None
        return
    assert isinstance(ex.codebooks, CodebookArrays) and ex.codebooks.L == 4 and ex.codebooks.D == 8
    assert all(np.array_equal(a, b) for a, b in zip(ex.codebooks.indices, X))
    if head == "bcf":
        cfg, widths, seed = ex.bcf_settings()
        assert (cfg.T, cfg.A, cfg.Tc, cfg.max_iter, widths.query, seed) == (0.0, 0, 0.9, 10, 8, 3)
    else:
        assert ex.sparse_settings() == {"a": 2, "max_iter": 10, "seed": 0, "Tc": 0.5, "restarts": False}


def _damaged(tmp_path, edit):
    _export(tmp_path / "e")
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    edit(m, tmp_path / "e")
    (tmp_path / "e" / "manifest.json").write_text(json.dumps(m))
    return tmp_path / "e"


def _set(path, value):
    def edit(m, _folder):
        node = m
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set("format", "hdsim-export-manifest/2"), "not an hdsim export manifest of format hdsim-export-manifest/1 "
                                                "\\(found format 'hdsim-export-manifest/2'\\)"),
    (_set("head.kind", "svm"), "unknown head kind 'svm'"),
    (_set("decode.T", KeyError), "missing field decode.T"),
    (_set("head.codebooks", KeyError), "missing field head.codebooks.file"),
    (_set("model.sha256", "0" * 64), "model .*sha256 .* does not match"),
    (_set("checks.codebooks_sha256", "0" * 64), "codebooks .*sha256 .* does not match"),
    (_set("head.M", [3, 4]), "disagree with the manifest's head"),
    (_set("head.B", 4), "disagree with the manifest's head"),
    (_set("classes.radices", [9, 1]), "do not fit the class radices"),
    (_set("model.output.shape", ["N", 9]), "the model output's width 9 differs from the codebooks' D=8"),
    (_set("decode.T", 1.5), "decode settings: T: threshold must be in"),
    (_set("decode.lfsr_seed", 0), "lfsr_seed must be in"),
    (_set("decode.fixed_widths", {"query": 99}), "decode settings: widths.query"),
    (_set("classes.num_classes", 10), "10 classes do not fit 9 products"),
    (_set("classes.names", ["a", "b"]), "classes.names must list one name per class"),
    (_set("preprocessing.channels", 2), "channels must be 1 or 3"),
])
def test_every_damage_is_one_error_line_naming_the_file(tmp_path, edit, message):
    folder = _damaged(tmp_path, edit)
    with pytest.raises(HdsimError, match=message) as e:
        ExportFolder(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(HdsimError, match="export dir: not found"):
        ExportFolder(tmp_path / "nope")
    _export(tmp_path / "e")
    (tmp_path / "e" / "manifest.json").write_text("{not json")
    with pytest.raises(HdsimError, match="not valid JSON"):
        ExportFolder(tmp_path / "e")
    shutil.rmtree(tmp_path / "e")
    _export(tmp_path / "e")
    (tmp_path / "e" / "model.onnx").unlink()
    with pytest.raises(HdsimError, match="model file model.onnx is missing"):
        ExportFolder(tmp_path / "e")
    # codebooks replaced by a consistent-hash file holding out-of-range offsets
    shutil.rmtree(tmp_path / "e")
    _export(tmp_path / "e")
    cb = tmp_path / "e" / "codebooks.npz"
    write_codebooks(cb, [np.full((3, 2), 7), np.zeros((3, 2))], 4, np.zeros((9, 2)), np.zeros(9))
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    m["checks"]["codebooks_sha256"] = sha256_file(cb)
    (tmp_path / "e" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(HdsimError, match=r"offsets must be .* values in \[0, 4\)"):
        ExportFolder(tmp_path / "e")


def test_the_writer_refuses_what_the_reader_would(tmp_path):
    m, _ = _export(tmp_path / "e")
    m["decode"]["A"] = -1
    with pytest.raises(HdsimError, match="A: sampling width"):
        write_manifest(tmp_path / "e", m)


def test_product_map_and_preprocessing_take_arrays_and_tensors_alike():
    import torch

    pm = ProductMap((3, 4, 5), 50)
    digits = np.array([[0, 0, 0], [2, 1, 3], [2, 3, 4]])
    # hand derivation: class = d0 * 20 + d1 * 5 + d2; products >= 50 are null
    assert pm.classes(digits).tolist() == [0, 48, -1]
    assert pm.classes(torch.from_numpy(digits)).tolist() == [0, 48, -1]
    assert pm.digits(np.array([48])).tolist() == [[2, 1, 3]]
    pp = Preprocessing(3, 2, 2, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    px = np.random.default_rng(0).integers(0, 256, (4, 3, 2, 2)).astype(np.uint8)
    # the training pipeline's torch formula, in float32
    ref = (torch.from_numpy(px).float() * (1.0 / 255.0) - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) \
        / torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    np.testing.assert_array_equal(pp.normalize(px), ref.numpy())
    assert torch.equal(pp.normalize(torch.from_numpy(px)), ref)
    np.testing.assert_array_equal(pp.denormalize(pp.normalize(px)), px)


def test_reading_an_export_imports_no_torch(tmp_path):
    _export(tmp_path / "e")
    code = ("import sys; sys.modules['torch'] = None; from hdsim.export_folder import ExportFolder; "
            "ex = ExportFolder(sys.argv[1]); ex.bcf_settings(); print(ex.codebooks.D)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "e")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "8", proc.stderr
