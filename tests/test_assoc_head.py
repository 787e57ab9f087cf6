"""The associative-memory head over WTA codes of a network's pooled features (export.assoc_head)."""

from __future__ import annotations

import numpy as np
import pytest

from hdsim.errors import HdsimError


def test_wta_code_marks_the_largest_feature_of_each_group_under_each_grouping():
    from export.assoc_head import wta_code

    rng = np.random.default_rng(0)
    f = rng.normal(size=(9, 12))
    f[0, :4] = 1.0  # a tie: the lowest index wins
    codes = wta_code(f, 4, groupings=3, seed=5)
    assert codes.shape == (9, 36) and (codes.sum(axis=1) == 9).all()
    # oracle: loops over rows and groups, with the permutations the docstring states
    perms = [np.arange(12)] + [np.random.default_rng([5, r]).permutation(12) for r in (1, 2)]
    for n in range(9):
        for r, perm in enumerate(perms):
            for g in range(3):
                vals = [f[n, perm[g * 4 + k]] for k in range(4)]
                win = vals.index(max(vals))
                block = codes[n, r * 12 + g * 4: r * 12 + g * 4 + 4]
                assert block.tolist() == [k == win for k in range(4)]
    with pytest.raises(HdsimError, match="^l: groups of 5 do not divide the 12 features$"):
        wta_code(f, 5)
    with pytest.raises(HdsimError, match="^features: expected a real"):
        wta_code(f[0], 4)


def test_the_head_on_a_trained_network_recalls_as_a_hand_built_memory_does(tiny_export):
    """On the suite's shared TINY export (BCF head, ReLU6): the memory stores one row per class
    (l_out = classes), so its size is classes x code bits, and its accuracy equals the recall computed by
    hand from the same codes."""
    from hdsim.threads import torch_threads
    from export.assoc_head import evaluate_assoc_head, pooled_features, wta_code
    from export.train import TrainConfig, build_data, load_checkpoint, restore_model

    folder, manifest = tiny_export
    state = load_checkpoint(manifest["source"]["checkpoint"])
    cfg = TrainConfig.from_dict(state["config"])
    with torch_threads(1):
        r = evaluate_assoc_head(folder, train_images=1024, l=4, limit=128)
        _, data, _, model = restore_model(state)
        model.eval()
        xs, ys = build_data(cfg).train_epoch(10_000, 1024)
        xt, yt = data.test_set()
        cs, ct = wta_code(pooled_features(model, xs), 4), wta_code(pooled_features(model, xt[:128]), 4)
    assert r["code_bits"] == 128 and r["code_density"] == 0.25 and r["l_out"] == 100 and r["label_clusters"] == 1
    assert r["memory_bits"] == 100 * 128 and r["samples"] == 128 and r["activation"] == "relu6"
    # oracle: W[c] = OR of the training codes of class c; predict argmax_c |W[c] & x| (lowest c on ties)
    W = np.zeros((100, 128), bool)
    for c, y in zip(cs, ys.numpy()):
        W[y] |= c
    pred = (W.astype(int) @ ct.T.astype(int)).argmax(axis=0)
    assert r["accuracy"] == pytest.approx(float((pred == yt[:128].numpy()).mean()))
    assert r["memory_density"] == pytest.approx(W.mean(), abs=1e-4)
