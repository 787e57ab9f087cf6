"""Seed 004: partition dropout (LFSR partitions, coverage) and stochastic scalar products (unbiased,
error shrinking with the sample count), against hand derivations and brute force."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdsim.errors import HdsimError
from hdsim.lfsr import LFSR
from hdsim.partition_dropout import PartitionSchedule, check_partitions, partition_cycle
from hdsim.stochastic_products import check_fraction, sample_weights, samples_for_fraction


# ---- partition dropout --------------------------------------------------------------------------
@pytest.mark.parametrize("P", [2, 3, 5, 9])
def test_every_unit_is_dropped_exactly_once_per_cycle_of_P_steps(P):
    s = PartitionSchedule(37, P, seed=11)
    for cycle in range(3):
        dropped = np.array([~s.next_mask() for _ in range(P)])  # (P, units)
        assert (dropped.sum(axis=0) == 1).all()  # covered: each unit dropped once, kept P - 1 times
    assert s.scale == pytest.approx(P / (P - 1))


def test_partitions_are_floor_of_the_lfsr_word_times_P():
    ref = LFSR(5)  # an independent register, the same seed
    P, words = 7, [ref.next_word() for _ in range(50)]
    r = LFSR(5)
    assert partition_cycle(r, 50, P).tolist() == [int(Fraction(w, 2**32) * P) for w in words]  # floor(xi * P)


def test_partitions_change_between_cycles_and_spread_over_P():
    s = PartitionSchedule(4000, 4, seed=3)
    s.next_mask()
    first = s.partitions.copy()
    for _ in range(4):
        s.next_mask()
    assert not np.array_equal(first, s.partitions)  # a fresh draw each cycle
    counts = np.bincount(first, minlength=4) / 4000
    assert np.abs(counts - 0.25).max() < 0.03  # xi uniform: partitions of about units / P


@pytest.mark.parametrize("P", [1, 0, -3, 2.5, True])
def test_fewer_than_two_partitions_is_a_one_line_error(P):
    with pytest.raises(HdsimError, match=r"^partition_dropout: the number of partitions P must be an integer >= 2"):
        check_partitions(P)


# ---- stochastic scalar products ------------------------------------------------------------------
def test_counts_sum_to_n_and_keep_signs_and_zeros():
    w = np.array([[0.3, -0.2, 0.0, 0.5, -0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    q, scale = sample_weights(w, 13, np.random.default_rng(1))
    assert np.abs(q[0]).sum() == 13 and q[0, 2] == 0 and q[0, 4] == 0
    assert (np.sign(q[0]) * np.sign(w[0]) >= 0).all() and (q[1] == 0).all() and scale[1] == 0
    assert scale[0] == pytest.approx(1.0 / 13)
    # stratified: each count is within 1 of its mean n |w_i| / ||w||_1
    assert np.all(np.abs(np.abs(q[0]) - 13 * np.abs(w[0]) / 1.0) < 2)


def test_below_the_fan_in_the_weights_are_mostly_ternary():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, (20, 64)) * rng.choice([-1, 1], (20, 64))  # every |w_i| below ||w||_1 / n
    q, _ = sample_weights(w, samples_for_fraction(64, 0.25), rng)
    # an interval shorter than a stratum meets at most two strata: at most 2 draws, mostly 1
    assert np.abs(q).max() <= 2 and (np.abs(q).sum(axis=1) == 16).all()
    assert (np.abs(q[q != 0]) == 1).mean() > 0.8


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=2, max_size=12), st.integers(1, 20))
def test_the_estimate_is_unbiased(weights, n):
    w = np.array([weights])
    if not np.abs(w).sum() > 0:
        return
    x = np.linspace(-1, 2, w.shape[1])
    rng = np.random.default_rng(12)
    est = []
    for _ in range(3000):
        q, scale = sample_weights(w, n, rng)
        est.append(float((q[0] * scale[0]) @ x))
    exact = float(w[0] @ x)
    spread = np.abs(w).sum() * np.abs(x).max()  # |estimate - exact| is at most 2 ||w||_1 max|x|
    assert abs(np.mean(est) - exact) <= 0.06 * spread + 1e-12  # 3000 draws: well inside sampling error


def test_the_error_shrinks_as_n_grows():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(200, 256))
    x = rng.normal(size=256)
    exact = w @ x
    errs = []
    for n in (16, 64, 256, 1024):
        q, scale = sample_weights(w, n, rng)
        errs.append(float(np.sqrt(np.mean(((q * scale[:, None]) @ x - exact) ** 2))))
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[-1] < 0.25 * errs[0]


def test_the_sample_count_of_a_fraction_and_bad_fractions():
    assert samples_for_fraction(9, 0.25) == 3 and samples_for_fraction(64, 0.25) == 16
    assert samples_for_fraction(64, 1.0) == 64 and samples_for_fraction(3, 0.01) == 1
    for bad in (0, -0.5, 1.5, "x", float("nan")):
        with pytest.raises(HdsimError, match=r"^stochastic_fraction: "):
            check_fraction(bad)
    with pytest.raises(HdsimError, match="^weights: contain NaN"):
        sample_weights(np.array([[np.nan, 1.0]]), 2, np.random.default_rng(0))
    with pytest.raises(HdsimError, match="^n: samples per row"):
        sample_weights(np.ones((1, 3)), 0, np.random.default_rng(0))


# ---- the network evaluation modes (export side) ---------------------------------------------------
def _tiny_net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
                        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding matters
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_the_sampled_network_is_integer_weights_times_a_row_scale_and_exports_them(tmp_path):
    import torch

    pytest.importorskip("onnxruntime")
    from export.stochastic import SampledConv2d, SampledLinear, _export, _onnx_integer_weights, stochastic_network

    net = _tiny_net()
    x = torch.randn(4, 3, 6, 6)
    sampled, stats = stochastic_network(net, 0.5, seed=1)
    layers = [m for m in sampled.modules() if isinstance(m, (SampledConv2d, SampledLinear))]
    assert len(layers) == stats["layers"] == 3 and stats["weights"] == 8 * 27 + 8 * 9 + 5 * 8
    # n = ceil(0.5 * fan_in) draws per row: 14 (fan-in 27), 5 (9), 4 (8)
    assert stats["samples"] == 8 * 14 + 8 * 5 + 5 * 4
    for m, n in zip(layers, (14, 5, 4)):
        q = m.q.reshape(m.q.shape[0], -1)
        assert q.dtype == torch.int8 and (q.abs().sum(dim=1) == n).all()
    # BN folded: the exact network equals the original; each sampled layer is conv(x, q * scale)
    conv = layers[0]
    ref = torch.nn.functional.conv2d(x, conv.q.float() * conv.scale.view(-1, 1, 1, 1), conv.bias, padding=1)
    assert torch.allclose(conv(x), ref)
    sampled.output_name = "logits"  # what export_onnx names the output (an ExportNet's attribute)
    _export(sampled, x[:1], tmp_path / "s.onnx")
    assert _onnx_integer_weights(tmp_path / "s.onnx") == 3  # the file holds the integers
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "s.onnx")).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - sampled(x).numpy()).max() < 1e-5


def test_min_fan_in_keeps_small_layers_exact_and_folding_keeps_the_function():
    import torch

    from export.stochastic import SampledConv2d, fold_batchnorm, stochastic_network

    net = _tiny_net()
    x = torch.randn(2, 3, 6, 6)
    folded = __import__("copy").deepcopy(net)
    assert fold_batchnorm(folded) == 2
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5)
    sampled, stats = stochastic_network(net, 0.25, seed=0, min_fan_in=10)
    assert stats["layers"] == 1 and isinstance(sampled[0][0], SampledConv2d)  # only the fan-in 27 layer
    with pytest.raises(HdsimError, match=r"^stochastic_fraction: must be in \(0, 1\]"):
        stochastic_network(net, 1.5)


def test_training_with_partition_dropout_drops_one_partition_per_step(tmp_path):
    """One tiny float epoch: the classifier's first layer is the partition dropout, it took one step per
    batch (every feature covered within P steps, checked on its schedule), and the run evaluates."""
    import torch

    pytest.importorskip("brevitas")
    from export.partition_dropout import PartitionDropout
    from export.train import TrainConfig, build_data, build_model, train
    from export.heads import make_head

    cfg = TrainConfig(dataset="mnist2", head="bcf", width=0.25, last_channel=128, epochs=1, qat_epochs=0,
                      train_size=256, test_size=64, eval_size=64, val_fraction=0.0, batch=64, partition_dropout=3,
                      seed=2)
    data = build_data(cfg)
    model = build_model(cfg, data, make_head(cfg.head_config, data.product_map), quant=False)
    drop = model.classifier[0]
    assert isinstance(drop, PartitionDropout) and drop.P == 3 and drop.schedule.units == 128
    model.train()
    feats = torch.ones(5, 128)
    outs = [drop(feats) for _ in range(3)]
    assert all(((o == 0).all(dim=0) | (o == 1.5).all(dim=0)).all() for o in outs)  # whole batch, scaled P/(P-1)
    assert (sum((o[0] == 0).long() for o in outs) == 1).all()  # each feature dropped once in 3 steps
    metrics = train(cfg, tmp_path / "run", progress=False, threads=1, log=lambda s: None)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.parametrize("kw,message", [
    ({"partition_dropout": 1}, "P must be an integer >= 2"),
    ({"partition_dropout": 2, "dropout": 0.5}, "replaces Bernoulli dropout"),
    ({"partition_dropout": 2, "head": "sparse-resonator", "D": 0}, "no classifier layer"),
])
def test_bad_partition_dropout_settings_are_one_line_errors(kw, message):
    from export.train import TrainConfig

    with pytest.raises(HdsimError, match=message):
        TrainConfig(**kw).validate()


@pytest.mark.parametrize("n", [1, 3, 8, 20, 45])
def test_the_torch_sampler_draws_the_same_counts_as_the_numpy_one(n):
    """Given NumPy's uniforms, the training sampler lands every point on the same weight
    (counts equal), zero rows and trailing zeros included."""
    import torch

    from export.stochastic import sample_dense

    rng = np.random.default_rng(3)
    w = rng.normal(size=(7, 20))
    w[2] = 0.0
    w[3, 5:] = 0.0
    w[4, :3] = 0.0
    q, scale = sample_weights(w, n, np.random.default_rng(11))
    u = torch.from_numpy(np.random.default_rng(11).random((7, n)))  # sample_weights' one draw
    s = sample_dense(torch.from_numpy(w), n, u).numpy()
    norm = np.abs(w).sum(axis=1)
    counts = np.divide(s * n, norm[:, None], out=np.zeros_like(s), where=norm[:, None] > 0)
    assert np.array_equal(np.rint(counts).astype(np.int64), q)
    assert np.allclose(s, q * scale[:, None], rtol=1e-12, atol=0)


def test_training_through_sampled_weights_is_straight_through_and_seeded():
    """The forward sees integer-count weights (each row: |q| sums to n, times ||w||_1 / n); the gradient
    w.r.t. w is that of the sampled forward (straight-through), and step (epoch, i) repeats its draws."""
    import torch
    from torch import nn

    from export.stochastic import StochasticTraining, sampled_layers

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    trainer = StochasticTraining(0.25, seed=4)
    assert [n for n, _ in sampled_layers(net)] == ["0.weight", "2.weight"]
    p = trainer.sampled_parameters(net, 0, 0)
    w = net[0].weight.detach()
    n = 3  # ceil(0.25 * 12)
    counts = p["0.weight"].detach() * n / w.abs().sum(dim=1, keepdim=True)
    assert torch.allclose(counts, counts.round(), atol=1e-4) and (counts.round().abs().sum(dim=1) == n).all()
    assert torch.equal(torch.sign(counts.round()) * torch.sign(w) >= 0, torch.ones_like(w, dtype=torch.bool))
    assert torch.equal(trainer.sampled_parameters(net, 0, 0)["0.weight"], p["0.weight"])
    assert not torch.equal(trainer.sampled_parameters(net, 0, 1)["0.weight"], p["0.weight"])
    x = torch.randn(5, 12)
    trainer(net, x, 0, 0).sum().backward()
    # oracle: the same forward written by hand with the sampled weights as constants
    s0, s2 = (p[k].detach().requires_grad_() for k in ("0.weight", "2.weight"))
    h = torch.relu(x @ s0.T + net[0].bias.detach())
    (h @ s2.T + net[2].bias.detach()).sum().backward()
    assert torch.allclose(net[0].weight.grad, s0.grad) and torch.allclose(net[2].weight.grad, s2.grad)


def test_stochastic_training_runs_and_bad_settings_are_one_line_errors(tmp_path):
    pytest.importorskip("brevitas")
    from export.train import TrainConfig, train

    for kw, message in (({"stochastic_fraction": 1.5}, r"stochastic_fraction: must be in \(0, 1\]"),
                        ({"stochastic_fraction": 0.5, "stochastic_min_fan_in": 0}, "stochastic_min_fan_in"),
                        ({"stochastic_fraction": 0.5, "epochs": 3, "stochastic_start_epoch": 3},
                         "stochastic_start_epoch: 3 leaves none of the 3 float epochs")):
        with pytest.raises(HdsimError, match=message):
            TrainConfig(**kw).validate()
    cfg = TrainConfig(dataset="mnist2", head="fc", width=0.25, last_channel=128, epochs=1, qat_epochs=0,
                      train_size=128, test_size=64, eval_size=64, val_fraction=0.0, batch=64, seed=2,
                      stochastic_fraction=0.25)
    metrics = train(cfg, tmp_path / "run", progress=False, threads=1, log=lambda s: None)
    assert metrics["finished"] and 0.0 <= metrics["test_accuracy"] <= 1.0
