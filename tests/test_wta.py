"""Blockwise winner-take-all activations (seed 001_*, SPEC section 8): the functions against
brute-force loops and hand derivations, the WTA MobileNetV2, its int8 ONNX export, and the
multiplication count against explicit loops over every output and input element."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from hdsim.errors import HdsimError
from hdsim.wta import hard_wta, soft_wta, wta_temperature

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_torch_thread")]


# ---- oracles --------------------------------------------------------------------------------------
def brute_hard_wta(z: np.ndarray, l: int) -> np.ndarray:
    """Loop over every (n, group, h, w): the first channel holding the group's largest relu value wins."""
    r = np.maximum(z, 0.0)
    out = np.zeros_like(r)
    n_, c, h_, w_ = r.shape
    for n, g, h, w in itertools.product(range(n_), range(c // l), range(h_), range(w_)):
        best = g * l
        for ch in range(g * l, (g + 1) * l):
            if r[n, ch, h, w] > r[n, best, h, w]:  # strict: an equal later channel does not take over
                best = ch
        out[n, best, h, w] = r[n, best, h, w]
    return out


def brute_conv_multiplications(nonzero: np.ndarray, cout: int, k: tuple[int, int], stride: tuple[int, int],
                               pads: tuple[int, int, int, int], groups: int, dil: tuple[int, int]) -> np.ndarray:
    """Loop over every output element and every weight tap; count the taps landing on a nonzero input."""
    n_, cin, h, w = nonzero.shape
    hout = (h + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wout = (w + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    per_group_in, per_group_out = cin // groups, cout // groups
    counts = np.zeros(n_, np.int64)
    for n, co, oy, ox in itertools.product(range(n_), range(cout), range(hout), range(wout)):
        g = co // per_group_out
        for ci, ky, kx in itertools.product(range(per_group_in), range(k[0]), range(k[1])):
            y, x = oy * stride[0] - pads[0] + ky * dil[0], ox * stride[1] - pads[1] + kx * dil[1]
            if 0 <= y < h and 0 <= x < w and nonzero[n, g * per_group_in + ci, y, x]:
                counts[n] += 1
    return counts


# ---- the functions --------------------------------------------------------------------------------
@pytest.mark.parametrize("l", [1, 2, 3, 4, 6, 12])
def test_hard_wta_keeps_one_winner_per_group_lowest_index_on_ties(l):
    gen = torch.Generator().manual_seed(l)
    z = torch.randint(-2, 3, (3, 12, 4, 5), generator=gen).float()  # few values: many ties, many all-zero groups
    got = hard_wta(z, l)
    np.testing.assert_array_equal(got.numpy(), brute_hard_wta(z.numpy(), l))
    groups = got.reshape(3, 12 // l, l, 4, 5)
    assert ((groups != 0).sum(dim=2) <= 1).all()
    r = torch.relu(z).reshape(3, 12 // l, l, 4, 5)
    ties = ((r == r.amax(dim=2, keepdim=True)) & (r > 0)).sum(dim=2) > 1
    assert l == 1 or ties.any()  # the tie rule was exercised


def brute_signed_wta(z: np.ndarray, l: int) -> np.ndarray:
    """Loop over every (n, group, h, w): the first channel of largest |z| wins and keeps its signed value."""
    out = np.zeros_like(z)
    n_, c, h_, w_ = z.shape
    for n, g, h, w in itertools.product(range(n_), range(c // l), range(h_), range(w_)):
        best = g * l
        for ch in range(g * l, (g + 1) * l):
            if abs(z[n, ch, h, w]) > abs(z[n, best, h, w]):
                best = ch
        out[n, best, h, w] = z[n, best, h, w]
    return out


@pytest.mark.parametrize("l", [1, 2, 4])
def test_signed_wta_keeps_the_largest_magnitude_with_its_sign(l):
    gen = torch.Generator().manual_seed(10 + l)
    z = torch.randint(-3, 4, (2, 8, 3, 4), generator=gen).float()  # +-v ties: the lower index wins
    got = hard_wta(z, l, signed=True)
    np.testing.assert_array_equal(got.numpy(), brute_signed_wta(z.numpy(), l))
    assert (got < 0).any() and ((got.reshape(2, 8 // l, l, 3, 4) != 0).sum(dim=2) <= 1).all()
    # the soft form: exp(t (|z| - max |z|)) z per group, by hand; it tends to the hard one
    a = z.abs().reshape(2, 8 // l, l, 3, 4)
    hand = (torch.exp(0.7 * (a - a.amax(dim=2, keepdim=True))) * z.reshape(a.shape)).reshape(z.shape)
    torch.testing.assert_close(soft_wta(z, l, 0.7, signed=True), hand)
    zc = z + 0.01 * torch.arange(8.0).view(1, 8, 1, 1)  # no ties
    torch.testing.assert_close(soft_wta(zc, l, 1e4, signed=True), hard_wta(zc, l, signed=True))


def test_hard_wta_on_another_axis_and_by_hand():
    z = torch.tensor([[1.0, 3.0, 3.0, -1.0], [-2.0, -1.0, 0.5, 0.5]])
    assert hard_wta(z, 2, dim=-1).tolist() == [[0.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.5, 0.0]]
    assert hard_wta(z, 4, dim=-1).tolist() == [[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0]]
    assert hard_wta(z.t(), 2, dim=0).tolist() == hard_wta(z, 2, dim=1).t().tolist()


def test_a_group_of_one_is_relu():
    z = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    assert torch.equal(hard_wta(z, 1), torch.relu(z))
    for t in (1e-3, 1.0, 1e3):
        assert torch.equal(soft_wta(z, 1, t), torch.relu(z))


def test_soft_wta_is_the_spec_formula_and_tends_to_hard():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, 3, 3, generator=gen, dtype=torch.float64)
    r = torch.relu(z).reshape(4, 4, 2, 3, 3)
    for t in (0.5, 3.0):  # the SPEC's softmax form, computed directly
        sm = torch.softmax(t * r, dim=2)
        spec = (sm / sm.amax(dim=2, keepdim=True) * r).reshape(4, 8, 3, 3)
        torch.testing.assert_close(soft_wta(z, 2, t), spec, rtol=1e-12, atol=1e-12)
    # away from ties a loser keeps r_i exp(-t (max r - r_i)) <= max r * exp(-t g_min)
    gaps = r.amax(dim=2, keepdim=True) - r
    g_min = float(gaps[(gaps > 0) & (r > 0)].min())
    errors = []
    for t in (1.0, 10.0, 100.0, 1000.0):
        err = float((soft_wta(z, 2, t) - hard_wta(z, 2)).abs().max())
        assert err <= float(r.max()) * math.exp(-t * g_min) + 1e-15
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] * 1e-3
    assert soft_wta(torch.tensor([[1.0, 3.0]]), 2, 2.0)[0].tolist() == pytest.approx([math.exp(-4.0), 3.0])


def test_soft_wta_passes_no_gradient_through_the_softmax_by_default():
    z = torch.tensor([[1.0, 3.0]], requires_grad=True)
    soft_wta(z, 2, 1.0).sum().backward()
    assert z.grad[0].tolist() == pytest.approx([math.exp(-2.0), 1.0])  # d(r_i * const)/dr_i
    z.grad = None
    soft_wta(z, 2, 1.0, detach_softmax=False).sum().backward()
    # d/dr1 of r1 exp(t (r1 - r2)) = exp(-2) (1 + r1) with t = 1; d/dr2 = 1 - r1 exp(-2)
    assert z.grad[0].tolist() == pytest.approx([2 * math.exp(-2.0), 1 - math.exp(-2.0)])


def test_temperature_schedule_endpoints_and_exponential_middle():
    assert wta_temperature(0, 5, 1.0, 1000.0) == pytest.approx(1.0)
    assert wta_temperature(4, 5, 1.0, 1000.0) == pytest.approx(1000.0)
    assert wta_temperature(2, 5, 1.0, 1000.0) == pytest.approx(math.sqrt(1000.0))  # geometric midpoint
    assert wta_temperature(9, 5, 1.0, 1000.0) == pytest.approx(1000.0)  # past the end: stays
    assert wta_temperature(0, 1, 2.0, 50.0) == 50.0
    ts = [wta_temperature(s, 11, 0.1, 10.0) for s in range(11)]
    ratios = [b / a for a, b in zip(ts, ts[1:])]
    assert ratios == pytest.approx([100 ** 0.1] * 10)
    # the training loop: one schedule over float then QAT steps
    from export.train import TrainConfig, wta_step_temperature

    cfg = TrainConfig(epochs=2, qat_epochs=1, activation="wta", wta_t_init=1.0, wta_t_final=100.0)
    steps = {"float": 3, "qat": 2}
    seq = [wta_step_temperature(cfg, e, i, steps) for e in range(3) for i in range(steps["float" if e < 2 else "qat"])]
    assert seq[0] == pytest.approx(1.0) and seq[-1] == pytest.approx(100.0) and len(seq) == 8
    assert seq == pytest.approx([100 ** (s / 7) for s in range(8)])


@pytest.mark.parametrize("call, match", [
    (lambda: hard_wta(torch.zeros(1, 6), 0), "l: WTA group size must be an integer >= 1"),
    (lambda: hard_wta(torch.zeros(1, 6), 4), "l: WTA groups of 4 do not divide 6 channels"),
    (lambda: soft_wta(torch.zeros(1, 6), 2.5, 1.0), "l: WTA group size"),
    (lambda: soft_wta(torch.zeros(1, 6), 2, 0.0), "t: temperature must be a finite number > 0"),
    (lambda: soft_wta(torch.zeros(1, 6), 2, float("inf")), "t: temperature"),
    (lambda: wta_temperature(0, 0, 1.0, 2.0), "total_steps: must be an integer >= 1"),
    (lambda: wta_temperature(-1, 3, 1.0, 2.0), "step: must be an integer >= 0"),
    (lambda: wta_temperature(0, 3, -1.0, 2.0), "t_init: temperature"),
])
def test_bad_parameters_are_one_line_errors(call, match):
    with pytest.raises(HdsimError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw, match", [
    (dict(activation="wta", wta_group=3), "wta_group: groups of 3 do not divide the 8 channels of features.1.conv.0.2"),
    (dict(activation="wta", wta_group=3, wta_layers="all"), "wta_group: groups of 3 do not divide the 8 channels of "
                                                            "features.0.2"),
    (dict(activation="wta", wta_layers="stem"), "wta_layers: expected one of"),
    (dict(activation="wta", wta_group=16), "wta_group: groups of 16 do not divide the 8 channels"),
    (dict(activation="wta", wta_group=0), "wta_group: WTA group size must be an integer >= 1"),
    (dict(activation="wta", wta_t_final=0.0), "wta_t_final: temperature must be"),
    (dict(activation="gelu"), "activation: expected one of"),
])
def test_bad_train_configs_are_one_line_errors_at_validation(kw, match):
    from export.train import TrainConfig

    with pytest.raises(HdsimError, match=match) as e:
        TrainConfig(**kw).validate()
    assert "\n" not in str(e.value)
    for l in (1, 2, 4, 8):  # the sweep's groups divide every channel count of the width-0.25 net
        TrainConfig(activation="wta", wta_group=l, wta_layers="all").validate()


def test_sweep_config_checks_every_group_before_training(tmp_path):
    from workflows.wta_sweep import WTASweepConfig

    with pytest.raises(HdsimError, match="groups: wta_group: groups of 3 do not divide") as e:
        WTASweepConfig(out=str(tmp_path), groups=(1, 2, 3)).validate()
    assert "\n" not in str(e.value)
    with pytest.raises(HdsimError, match="train: wta_group is set per run"):
        WTASweepConfig(out=str(tmp_path), train=dict(wta_group=2)).validate()
    assert WTASweepConfig(out=str(tmp_path)).run_config(1).activation == "relu6"  # l = 1 is the ReLU6 net


def test_cli_rejects_a_group_that_does_not_divide_the_channels(monkeypatch, capsys, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "train", "--out", str(tmp_path / "r"), "--activation", "wta",
                             "--wta-group", "3", "--no-progress")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "error: wta_group: groups of 3" in err


# ---- the network ----------------------------------------------------------------------------------
def test_wta_net_with_groups_of_one_is_the_relu6_net():
    from export.mobilenet import WTA, BackboneConfig, MobileNetV2, set_wta_temperature

    base = dict(width=0.25, in_channels=1, last_channel=32)
    torch.manual_seed(0)
    relu6 = MobileNetV2(10, BackboneConfig(**base), 0.0)
    wta = MobileNetV2(10, BackboneConfig(**base, activation="wta", wta_group=1, wta_layers="all"), 0.0)
    wta.load_state_dict(relu6.state_dict())  # same keys: a WTA has no parameters
    assert sum(isinstance(m, WTA) for m in wta.modules()) == 35 == set_wta_temperature(wta, 7.0)
    # the default: after every expansion and depthwise conv (33), the stem and the last 1x1 stay ReLU6
    blocks = MobileNetV2(10, BackboneConfig(**base, activation="wta", wta_group=2), 0.0)
    names = [n for n, m in blocks.named_modules() if isinstance(m, WTA)]
    assert len(names) == 33 and "features.0.2" not in names and "features.18.2" not in names
    assert isinstance(blocks.features[0][2], torch.nn.ReLU6) and isinstance(blocks.features[18][2], torch.nn.ReLU6)
    x = torch.randn(3, 1, 32, 64) * 3
    for train in (True, False):
        relu6.train(train), wta.train(train)
        assert torch.equal(relu6(x), wta(x))


def test_wta_net_is_sparse_with_one_winner_per_group_in_eval():
    from export.mobilenet import BackboneConfig, MobileNetV2

    net = MobileNetV2(10, BackboneConfig(width=0.25, in_channels=1, last_channel=32, activation="wta",
                                         wta_group=4), 0.0).eval()
    seen = []
    net.features[3].conv[0][2].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        net(torch.randn(2, 1, 32, 64))
    y = seen[0]
    assert ((y.reshape(2, y.shape[1] // 4, 4, *y.shape[2:]) != 0).sum(dim=2) <= 1).all()


# ---- multiplications -------------------------------------------------------------------------------
@pytest.mark.parametrize("cin, cout, k, stride, pads, groups, dil", [
    (3, 4, (3, 3), (1, 1), (1, 1, 1, 1), 1, (1, 1)),
    (4, 4, (3, 3), (2, 2), (1, 1, 1, 1), 4, (1, 1)),   # depthwise, stride 2
    (4, 6, (1, 1), (1, 1), (0, 0, 0, 0), 1, (1, 1)),   # pointwise
    (4, 4, (3, 2), (2, 1), (1, 0, 2, 1), 2, (2, 1)),   # grouped, asymmetric padding, dilation
])
def test_conv_multiplications_equal_a_brute_force_count(cin, cout, k, stride, pads, groups, dil):
    from export.multiplications import conv_multiplications

    rng = np.random.default_rng(cin * 7 + cout)
    nonzero = rng.random((3, cin, 5, 6)) < 0.4
    nonzero[0] = True  # one dense input
    nonzero[1] = False  # one all-zero input
    got = conv_multiplications(nonzero, cout, k, stride, pads, groups, dil)
    np.testing.assert_array_equal(got, brute_conv_multiplications(nonzero, cout, k, stride, pads, groups, dil))
    assert got[1] == 0


class _TinyNet(torch.nn.Module):
    """Stem conv (stride 2), ReLU, depthwise 3x3, hard WTA, pointwise 1x1, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(2, 4, 3, 2, 1)
        self.dw = torch.nn.Conv2d(4, 4, 3, 1, 1, groups=4)
        self.pw = torch.nn.Conv2d(4, 6, 1)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = hard_wta(self.dw(a), 2)
        c = torch.relu(self.pw(b))
        return self.fc(c.mean(dim=(2, 3)))


def test_counted_multiplications_of_a_network_equal_loops_over_its_layers(tmp_path):
    from export.multiplications import count_onnx_multiplications

    torch.manual_seed(0)
    net = _TinyNet().eval()
    x = torch.randn(5, 2, 7, 6)
    x[0] = 0.0  # an all-zero image
    x[1, :, :3] = 0.0  # zero rows
    torch.onnx.export(net, (x[:1],), str(tmp_path / "tiny.onnx"), dynamo=False, opset_version=13,
                      input_names=["image"], dynamic_axes={"image": {0: "N"}})
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, i[0].detach().numpy()))
             for name, m in net.named_children()]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    per_image = np.zeros(5, np.int64)
    dense = 0
    for name in ("stem", "dw", "pw"):
        m = getattr(net, name)
        nz = inputs[name] != 0
        args = (m.out_channels, m.kernel_size, m.stride, (m.padding[0], m.padding[1]) * 2, m.groups, m.dilation)
        per_image += brute_conv_multiplications(nz, *args)
        dense += int(brute_conv_multiplications(np.ones_like(nz[:1]), *args)[0])
    fc_in = inputs["fc"] != 0
    for n, j, i in itertools.product(range(5), range(3), range(6)):  # every output, every input
        per_image[n] += int(fc_in[n, i])
    dense += 6 * 3
    got = count_onnx_multiplications(tmp_path / "tiny.onnx", x.numpy(), batch=2)
    assert got["multiplications"] == pytest.approx(per_image.mean(), rel=1e-12)
    assert got["multiplications_dense"] == dense
    assert [r["kind"] for r in got["layers"]] == ["conv", "depthwise", "pointwise", "linear"]
    assert got["multiplications_dense_with_padding"] == 4 * 2 * 9 * 4 * 3 + 4 * 9 * 4 * 3 + 6 * 4 * 12 + 18
    # the WTA halves the pointwise layer's nonzero inputs at least
    assert got["layers"][2]["zero_fraction"] >= 0.5


# ---- training and export ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_wta(tmp_path_factory):
    """A WTA (l = 2) network with an FC head trained for one float and one QAT step and exported."""
    pytest.importorskip("brevitas", reason="brevitas is not installed (pip install -e '.[export]')")
    pytest.importorskip("mlxtend", reason="mlxtend is not installed (pip install -e '.[export]')")
    from export.onnx_export import export_checkpoint
    from export.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_wta")
    cfg = TrainConfig(dataset="mnist2", head="fc", epochs=1, qat_epochs=1, train_size=32, qat_train_size=32, batch=32,
                      test_size=100, eval_size=100, val_size=100, calib_batches=1, activation="wta", wta_group=2,
                      wta_t_init=1.0, wta_t_final=100.0)
    metrics = train(cfg, root / "run", progress=False)
    manifest = export_checkpoint(root / "run" / "last.pt", root / "int8", parity_images=32, calibration=None)
    return root, metrics, manifest


def test_tiny_wta_network_trains_and_its_onnx_export_matches_pytorch(tiny_wta):
    import onnx
    import onnxruntime as ort

    from export.onnx_export import ExportNet, ort_session
    from export.quant import merge_batchnorm
    from export.train import load_checkpoint, restore_model

    root, metrics, manifest = tiny_wta
    assert [h["wta_t"] for h in metrics["history"]] == pytest.approx([1.0, 100.0])  # one step each: first, last
    assert manifest["backbone"]["activation"] == "wta" and manifest["backbone"]["wta_group"] == 2
    parity = manifest["checks"]["parity"]
    assert parity["max_abs_diff_ort_disable_all"] <= 1e-5 and parity["same_classes_ort_disable_all"]
    _, data, head, model = restore_model(load_checkpoint(root / "run" / "last.pt"))
    merge_batchnorm(model)
    net = ExportNet(model.eval(), head).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([data.test_set()[0][:16], 2 * torch.randn(16, 1, 32, 64, generator=gen)])
    with torch.no_grad():
        ref = net(x).numpy()
    for optimize in (False, True):
        got = ort_session(root / "int8" / "model.onnx", optimize=optimize).run(None, {"image": x.numpy()})[0]
        assert np.abs(got - ref).max() <= 1e-5
        assert np.array_equal(got.argmax(1), ref.argmax(1))
    # inside the graph: every ArgMax group keeps exactly the brute-force winner (ties included)
    path = root / "int8" / "model.onnx"
    m = onnx.load(path)
    argmax = [n for n in m.graph.node if n.op_type == "ArgMax"]
    assert len(argmax) == 33 and all(a.i == 0 for n in argmax for a in n.attribute if a.name == "select_last_index")
    consumers = {i: n for n in m.graph.node for i in n.input}
    cast = [consumers[n.output[0]] for n in argmax]  # ArgMax -> Equal -> Cast -> Mul
    muls = [consumers[consumers[c.output[0]].output[0]] for c in cast]
    names = [n.input[0] for n in argmax] + [n.output[0] for n in muls]
    for name in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outs = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        names, {"image": x.numpy()})
    ties = 0
    for grouped, kept in zip(outs[:33], outs[33:]):
        n, g, l, h, w = grouped.shape
        flat = grouped.transpose(0, 1, 3, 4, 2).reshape(-1, l)
        expect = np.zeros_like(flat)
        first = flat.argmax(axis=1)  # numpy: first maximal index
        expect[np.arange(len(flat)), first] = flat[np.arange(len(flat)), first]
        np.testing.assert_array_equal(kept.transpose(0, 1, 3, 4, 2).reshape(-1, l), expect)
        ties += int(((flat == flat.max(axis=1, keepdims=True)) & (flat > 0)).sum(axis=1).__gt__(1).sum())
    assert ties > 0  # quantized activations tie: the lowest-index rule was exercised


def test_wta_export_runs_in_the_edge_runner_and_reports_multiplications(tiny_wta, tmp_path):
    from conftest import hdsim_cli
    from workflows.agreement import write_test_images

    root, _, _ = tiny_wta
    folder = root / "int8"
    files = write_test_images(folder, tmp_path, limit=8)
    proc = hdsim_cli("run", str(folder), *[str(f[0]) for f in files[:4]], "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(s) for s in proc.stdout.splitlines()]
    assert len(lines) == 4 and all(d["status"] == "ok" for d in lines)
    from export.evaluate import evaluate_export

    res = evaluate_export(folder, limit=40)
    assert res["activation"] == "wta" and res["wta_group"] == 2
    assert 0 < res["multiplications"] < res["multiplications_dense"] < res["multiplications_dense_with_padding"]
    # l = 2: at least half of every WTA output is zero, so the depthwise and the pointwise layers fed by a
    # WTA need at most half their dense multiplications (the bottleneck-fed expansions are dense)
    assert res["multiplications_by_kind"]["depthwise"]["mean"] <= 0.5 * res["multiplications_by_kind"]["depthwise"]["dense"]


@pytest.mark.parametrize("layers, signed", [("stream", 17), ("inputs", 16)])
def test_signed_wtas_on_the_stream_export_bit_exact(tmp_path, layers, signed):
    """``--wta-layers stream`` (a signed WTA on each of the 17 block outputs) and ``inputs`` (on the input of
    each of the 16 expansions) beside the blocks' 33: after one float and one QAT step the int8 export
    equals Brevitas, and the graph holds one ArgMax per WTA, over ``Abs`` for the signed ones."""
    pytest.importorskip("brevitas", reason="brevitas is not installed (pip install -e '.[export]')")
    pytest.importorskip("mlxtend", reason="mlxtend is not installed (pip install -e '.[export]')")
    import onnx

    from export.onnx_export import export_checkpoint
    from export.train import TrainConfig, load_checkpoint, restore_model, train

    cfg = TrainConfig(dataset="mnist2", head="fc", epochs=1, qat_epochs=1, train_size=32, qat_train_size=32, batch=32,
                      test_size=100, eval_size=100, val_size=100, calib_batches=1, activation="wta", wta_group=2,
                      wta_layers=layers, wta_t_final=100.0)
    train(cfg, tmp_path / "run", progress=False)
    manifest = export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "int8", parity_images=32, calibration=None)
    parity = manifest["checks"]["parity"]
    assert parity["max_abs_diff_ort_disable_all"] <= 1e-5 and parity["same_classes_ort_disable_all"]
    _, _, _, model = restore_model(load_checkpoint(tmp_path / "run" / "last.pt"))
    assert sum(getattr(m, "is_wta", False) for m in model.modules()) == 33
    from export.mobilenet import WTA

    assert sum(isinstance(m, WTA) and m.signed for m in model.modules()) == signed
    m = onnx.load(tmp_path / "int8" / "model.onnx")
    argmax = [n for n in m.graph.node if n.op_type == "ArgMax"]
    producers = {o: n for n in m.graph.node for o in n.output}
    assert len(argmax) == 33 + signed and sum(producers[n.input[0]].op_type == "Abs" for n in argmax) == signed


def test_checkpoints_without_the_activation_field_load_as_relu6(tiny_wta):
    from export.train import load_checkpoint, restore_model

    root, _, _ = tiny_wta
    state = load_checkpoint(root / "run" / "last.pt")
    del state["config"]["wta_layers"]  # the first WTA checkpoints: every ReLU6 a WTA
    cfg, _, _, model = restore_model(state)
    assert cfg.wta_layers == "all" and sum(getattr(m, "is_wta", False) for m in model.modules()) == 35
    for key in ("activation", "wta_group", "wta_t_init", "wta_t_final"):
        del state["config"][key]
    cfg, _, _, model = restore_model(state)
    assert cfg.activation == "relu6"
    assert type(model.features[0][2]).__name__ == "QuantReLU6"
    assert not any(getattr(m, "is_wta", False) for m in model.modules())
