"""The associative-memory head over a WTA network's codes (export.assoc_head), end to end on a tiny run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("brevitas")


def test_wta_codes_have_at_most_one_active_unit_per_group_and_the_head_runs(tmp_path):
    from hdsim.threads import torch_threads
    from export.assoc_head import evaluate_assoc_head, wta_codes
    from export.onnx_export import export_checkpoint
    from export.train import TrainConfig, load_checkpoint, restore_model, train

    l = 4
    cfg = TrainConfig(dataset="mnist2", head="bcf", width=0.25, last_channel=128, epochs=1, qat_epochs=0,
                      train_size=256, test_size=64, eval_size=64, val_fraction=0.0, batch=64, activation="wta",
                      wta_group=l, wta_layers="all", seed=1)  # "all": the last 1x1 conv's map is a WTA code too
    with torch_threads(1):
        train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
        export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "exp", parity_images=8, calibration=None)
        _, data, _, model = restore_model(load_checkpoint(tmp_path / "run" / "last.pt"))
        x, _ = data.test_set()
        codes = wta_codes(model.eval(), x[:16])
        fm = model.features(x[:16])
    C, h, w = fm.shape[1:]
    # oracle: the feature map itself, group by group at every position
    grouped = (fm > 0).reshape(16, C // l, l, h, w).sum(dim=2)
    assert int(grouped.max()) <= 1 and codes.shape == (16, C * h * w)
    assert np.array_equal(codes, (fm > 0).flatten(1).numpy())
    with torch_threads(1):
        r = evaluate_assoc_head(tmp_path / "exp", train_images=128, limit=32)
    assert r["activation"] == "wta" and r["wta_group"] == l and r["code_bits"] == C * h * w
    assert r["wta_layers"] == "all"
    assert r["code_density"] <= 1 / l + 1e-9  # at most one active unit per group
    assert r["memory_bits"] == 2 * 10 * C * h * w  # two digit clusters of 10 units x code bits
    assert 0.0 <= r["accuracy"] <= 1.0 and r["samples"] == 32
