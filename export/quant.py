"""Brevitas-quantized twin of :class:`export.mobilenet.MobileNetV2` (QAT and post-training calibration).

Quantization scheme (SPEC section 7):

* weights: int8, symmetric, per output channel (``Int8WeightPerChannelFixedPoint`` / ``...Float``);
  biases int32 at the accumulator's scale (input scale x weight scale, ``Int32Bias``);
* activations: 8 bits per tensor. Post-ReLU6 activations are unsigned, the
  network input, the linear bottleneck outputs and the logits have a signed
  range. Scales are powers of two by default (``scales="po2"``: PyTorch and
  onnxruntime then agree bit for bit, see :func:`quantizers`); every activation
  is then uint8 (zero point 128 for a signed range, 0 after ReLU6, whose range
  is capped at [0, 3.98]) so that onnxruntime fuses every convolution, add and
  the classifier into integer kernels. ``scales="float"``: free float scales,
  signed int8 and, after ReLU6, asymmetric ``ShiftedUint8ActPerTensorFloat``;
* residual adds: every block of a stage (a run of blocks with the same width)
  quantizes its bottleneck output *and* the sum with one shared quantizer, so
  both add operands and the result have the same scale;
* BatchNorm is kept during QAT and merged into the convolutions
  (:func:`merge_batchnorm`) before export. Per-channel weight scales follow the
  merged weights (max statistics), so the merge does not move the integer grid.

With ``BackboneConfig(activation="wta")`` (seed ``001_*``) each ``QuantReLU6`` that the
float net makes a WTA (``wta_layers``) is a
:class:`QuantWTA` (the twin of :class:`export.mobilenet.WTA`): ``Q(wta(Q(relu6(x))))`` with
one unsigned quantizer used twice (module docstring of :func:`QuantWTA`).

Every quant layer has the name of its ``torch.nn`` twin (``features.3.conv.1.0``
is a ``QuantConv2d`` where the float net has a ``Conv2d``), so a float state
dict loads unchanged; the quantizers' own parameters are the only extra keys.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from hdsim.errors import HdsimError
from export.mobilenet import (WTA, BackboneConfig, MobileNetV2, block_plan, check_pool_input, check_pool_size,
                              is_wta_position)

__all__ = ["SCALES", "quantizers", "ClampReLU6", "QuantReLU6", "QuantWTA", "QuantInvertedResidual", "QuantMobileNetV2",
           "merge_batchnorm", "has_batchnorm", "calibrate", "load_float_weights", "quant_only_key"]


SCALES = ("po2", "float")


def _brevitas():
    try:
        import brevitas.nn as qnn
        from brevitas.nn.quant_layer import QuantNonLinearActLayer
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise HdsimError(f"brevitas: not installed ({e}); install the 'export' extra") from None
    return qnn, QuantNonLinearActLayer


# Post-ReLU6 quantizer of the po2 scheme: its scale is at most 2^-6, so its range
# [0, 255 * 2^-6] = [0, 3.98] lies inside ReLU6's [0, 6] and onnxruntime drops the Clip
# in front of it (a Clip the QuantizeLinear makes redundant), fusing Conv + Clip + Q.
RELU6_SCALE_CAP = 2.0 ** -6

_PO2 = None


def _po2_quantizers() -> dict:
    """The Brevitas quantizer classes of the ``po2`` scheme (built once, on first use)."""
    global _PO2
    if _PO2 is not None:
        return _PO2
    from brevitas.quant import Int32Bias
    from brevitas.quant.fixed_point import (
        Int8ActPerTensorFixedPoint,
        Int8ActPerTensorFixedPointMSE,
        Int8WeightPerChannelFixedPoint,
        Uint8ActPerTensorFixedPoint,
    )

    class MidRangeZeroPoint(nn.Module):
        """Zero point ``2^(bits-1)`` (128 at 8 bits): uint8 codes for a signed range."""

        def __init__(self) -> None:  # explicit: Brevitas' injector rejects nn.Module's (*args, **kwargs)
            super().__init__()

        def forward(self, x: Tensor, scale: Tensor, bit_width: Tensor) -> Tensor:
            return torch.pow(2.0, bit_width - 1).to(scale.dtype)

    class MidRangeIntScaling(nn.Module):
        """Integer threshold ``2^(bits-1)``: the scale covers ``[-128 s, 127 s]``, as signed int8 would."""

        def __init__(self) -> None:
            super().__init__()

        def forward(self, bit_width: Tensor, signed=None) -> Tensor:
            return torch.pow(2.0, bit_width - 1)

    class ScaleCap(nn.Module):
        """``min(scale, scale_cap)``: bounds a quantizer's range (no gradient above the cap)."""

        def __init__(self, scale_cap: float) -> None:
            super().__init__()
            self.scale_cap = float(scale_cap)

        def forward(self, x: Tensor) -> Tensor:
            return torch.clamp(x, max=self.scale_cap)

    def mid_uint8(base, name: str):
        # uint8, zero point 128: the same grid as signed int8 (code = int8 code + 128), but
        # every activation of the net has one type, which onnxruntime needs to fuse
        # DequantizeLinear -> Conv/Add/Gemm -> QuantizeLinear into QLinearConv/QLinearAdd/QGemm.
        # 128 is even, so Brevitas' round(x/s + 128) equals ONNX's round(x/s) + 128 (half to even).
        return type(name, (base,), {"signed": False, "zero_point_impl": MidRangeZeroPoint,
                                    "int_scaling_impl": MidRangeIntScaling, "__module__": __name__})

    relu6 = type("Uint8ReLU6ActPerTensorFixedPoint", (Uint8ActPerTensorFixedPoint,),
                 {"restrict_scale_threshold_impl": ScaleCap, "scale_cap": RELU6_SCALE_CAP, "__module__": __name__})
    _PO2 = {"weight": Int8WeightPerChannelFixedPoint, "bias": Int32Bias,
            "signed": mid_uint8(Int8ActPerTensorFixedPointMSE, "MidUint8ActPerTensorFixedPointMSE"),
            "unsigned": relu6,
            "output": mid_uint8(Int8ActPerTensorFixedPoint, "MidUint8ActPerTensorFixedPoint")}
    return _PO2


def quantizers(scales: str) -> dict:
    """The Brevitas quantizer classes of a scale type: ``weight``, ``bias``, ``signed`` (input,
    bottlenecks, residual stream), ``unsigned`` (after ReLU6, pooled features), ``output`` (logits).

    ``po2``: power-of-two scales (fixed point). Every dequantized value is an
    integer times a power of two, so a convolution's float32 sums are exact
    whenever its integer accumulator stays below ``2^24``: PyTorch and
    onnxruntime then agree bit for bit whatever their summation order, with or
    without onnxruntime's fused int8 kernels (their requantization multipliers
    are powers of two too), and rescaling is a shift in hardware. Every
    activation is uint8: zero point 128 for signed ranges (the int8 grid shifted
    by 128), zero point 0 after ReLU6 with a scale of at most 2^-6 (range
    [0, 3.98]). Signed ranges are calibrated by MSE over power-of-two scales
    (the logits by the 99.999th percentile), the rest by the 99.999th percentile.
    ``float``: free float scales, int8 signed activations and asymmetric uint8
    after ReLU6 (finer grids; PyTorch and onnxruntime then differ by rounding flips).
    """
    _brevitas()
    if scales == "po2":
        return dict(_po2_quantizers())
    if scales == "float":
        from brevitas.quant import Int8ActPerTensorFloat as I8
        from brevitas.quant import Int8WeightPerChannelFloat as W
        from brevitas.quant.shifted_scaled_int import ShiftedUint8ActPerTensorFloat as U8
    else:
        raise HdsimError(f"scales: expected one of {list(SCALES)}, got {scales!r}")
    from brevitas.quant import Int32Bias

    return {"weight": W, "bias": Int32Bias, "signed": I8, "unsigned": U8, "output": I8}


def _value(x):
    """The float value of a tensor or a Brevitas ``QuantTensor``."""
    return x.value if hasattr(x, "value") and not isinstance(x, Tensor) else x


class ClampReLU6(nn.Module):
    """``min(max(x, 0), 6)`` as a plain module.

    Brevitas drops an ``nn.Hardtanh`` activation (``nn.ReLU6`` is one) in front of
    a quantizer, assuming the quantizer clamps; a learned asymmetric quantizer
    does not clamp at 6, so the activation is kept as this module (exported as ``Clip``).
    """

    def __init__(self) -> None:  # explicit: Brevitas' injector rejects *args/**kwargs constructors
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, 0.0, 6.0)


_RELU6 = None


def _quant_relu6_class():
    """The ``QuantReLU6`` class (Brevitas is imported on first use)."""
    global _RELU6
    if _RELU6 is None:
        _, QNLAL = _brevitas()

        class _QuantReLU6(QNLAL):
            def __init__(self, act_quant, return_quant_tensor: bool = True) -> None:
                QNLAL.__init__(self, act_impl=ClampReLU6, passthrough_act=False, input_quant=None,
                               act_quant=act_quant, return_quant_tensor=return_quant_tensor)

        _QuantReLU6.__name__ = _QuantReLU6.__qualname__ = "QuantReLU6"
        _RELU6 = _QuantReLU6
    return _RELU6


def QuantReLU6(act_quant, return_quant_tensor: bool = True):
    """ReLU6 followed by an unsigned asymmetric int8 quantizer (returns a ``QuantTensor``)."""
    return _quant_relu6_class()(act_quant, return_quant_tensor)


# ---- blockwise winner-take-all (seed 001_*) -----------------------------------------------------
_WTA = None


def QuantWTA(act_quant, l: int, t: float = 1.0, return_quant_tensor: bool = True):
    """Quantized :class:`export.mobilenet.WTA`: ``Q(wta(Q(relu6(x))))`` with **one** unsigned quantizer ``Q``.

    A :func:`QuantReLU6` (same state-dict keys, so ``l = 1`` is the ReLU6 twin) whose forward
    applies itself, the WTA (soft with temperature ``t`` in training mode, hard in eval mode;
    :mod:`hdsim.wta`), then itself again. Why twice: the WTA then compares quantized values
    (PyTorch and onnxruntime see the same integers, so the same winners, ties included),
    its hard output (winners kept, the rest 0) lies on ``Q``'s grid so the second ``Q`` is
    exact, and in the ONNX graph both convolutions around it keep a ``QuantizeLinear`` /
    ``DequantizeLinear`` neighbour, so onnxruntime still fuses them into ``QLinearConv``
    (the WTA runs in float between ``DequantizeLinear`` and ``QuantizeLinear``). The soft
    WTA of training is off the grid; the second ``Q`` puts it back (QAT sees what inference does).
    """
    global _WTA
    if _WTA is None:
        relu6 = _quant_relu6_class()

        class _QuantWTA(relu6):
            is_wta = True

            def __init__(self, act_quant, l: int, t: float = 1.0, return_quant_tensor: bool = True) -> None:
                relu6.__init__(self, act_quant, return_quant_tensor)
                self.l = int(l)
                self.t = float(t)

            def forward(self, x):
                from hdsim.wta import hard_wta, soft_wta

                y = _value(relu6.forward(self, x))
                y = soft_wta(y, self.l, self.t) if self.training else hard_wta(y, self.l)
                return relu6.forward(self, y)

            def extra_repr(self) -> str:
                return f"l={self.l}, t={self.t:g}"

        _QuantWTA.__name__ = _QuantWTA.__qualname__ = "QuantWTA"
        _WTA = _QuantWTA
    return _WTA(act_quant, l, t, return_quant_tensor)


def _qact(q: dict, backbone: BackboneConfig | None, position: str) -> nn.Module:
    """The activation after a convolution: ``QuantReLU6``, or ``QuantWTA`` where the backbone makes
    ``position`` a WTA (:func:`export.mobilenet.is_wta_position`)."""
    if is_wta_position(backbone, position):
        return QuantWTA(q["unsigned"], backbone.wta_group)
    return QuantReLU6(q["unsigned"])


def _qconv(q: dict, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Module:
    qnn, _ = _brevitas()
    return qnn.QuantConv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False,
                           weight_quant=q["weight"], bias_quant=q["bias"], return_quant_tensor=False)


def _qconv_bn_relu6(q: dict, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                    backbone: BackboneConfig | None = None, position: str = "stem") -> nn.Sequential:
    return nn.Sequential(_qconv(q, cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout),
                         _qact(q, backbone, position))


def _act(q: dict, kind: str, return_quant_tensor: bool = True) -> nn.Module:
    qnn, _ = _brevitas()
    return qnn.QuantIdentity(act_quant=q[kind], return_quant_tensor=return_quant_tensor)


class QuantInvertedResidual(nn.Module):
    """Quantized inverted residual; ``out_quant`` is the stage's shared quantizer.

    ``y = Q(project(dw(expand(x))))``; with the shortcut, ``y = Q(x + y)`` where
    ``x`` already carries ``Q``'s scale (the previous block of the stage).
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, out_quant: nn.Module, q: dict,
                 backbone: BackboneConfig | None = None, in_quant: nn.Module | None = None) -> None:
        super().__init__()
        self.stride = stride
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_qconv_bn_relu6(q, cin, hidden, kernel=1, backbone=backbone, position="expand"))
        layers += [_qconv_bn_relu6(q, hidden, hidden, 3, stride, groups=hidden, backbone=backbone,
                                   position="depthwise"),
                   _qconv(q, hidden, cout, 1), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout
        self.out_quant = out_quant
        # wta_layers="stream": y = Q(wta(Q(...))) on the stage's quantizer: the hard WTA of grid values
        # is on the grid (winners kept, the rest 0), so the second Q is exact, and the next block's
        # convolutions keep their DequantizeLinear neighbour (QLinearConv after onnxruntime's fusion)
        self.out_act = WTA(backbone.wta_group, signed=True) if is_wta_position(backbone, "output") else None
        # wta_layers="inputs": conv(Q_in(wta(x))) with Q_in the quantizer that made x (the previous block's
        # stage quantizer): the WTA of its grid values is on its grid, so Q_in is exact and the
        # expansion keeps its DequantizeLinear neighbour. Held outside the module tree (its owner
        # registers it): no duplicate state-dict keys.
        self.in_act = None
        if expand != 1 and is_wta_position(backbone, "input"):
            if in_quant is None:
                raise HdsimError("in_quant: a block with an input WTA needs the quantizer of its input")
            self.in_act = WTA(backbone.wta_group, signed=True)
        object.__setattr__(self, "_in_quant", in_quant)

    def forward(self, x):
        if self.in_act is not None:
            y = self.out_quant(self.conv(self._in_quant(self.in_act(_value(x)))))
        else:
            y = self.out_quant(self.conv(x))
        if self.use_res_connect:
            y = self.out_quant(_value(x) + _value(y))
        if self.out_act is not None:
            y = self.out_quant(self.out_act(_value(y)))
        return y


class QuantMobileNetV2(nn.Module):
    """Int8 QAT twin of :class:`~export.mobilenet.MobileNetV2` (same names, same forward signature).

    Extra modules: ``quant_inp`` (input), ``features.K.out_quant`` (shared per stage),
    ``quant_pool`` (pooled features), ``quant_out`` (int8 output logits, returned dequantized).
    With ``pool_size`` (sparse-resonator head): ``pool`` is a ``QuantLinear(n, 1)`` over the
    flattened positions (int8 weights, one per position shared by every channel) and
    ``quant_out`` quantizes the pooled features, which are the output.
    """

    def __init__(self, num_outputs: int = 1000, backbone: BackboneConfig = BackboneConfig(),
                 dropout: float | nn.Module = 0.2, scales: str = "po2", pool_size: int = 0) -> None:
        super().__init__()
        backbone.validate()
        qnn, _ = _brevitas()
        q = quantizers(scales)
        self.backbone_config = backbone
        self.scales = scales
        self.input_pad = 0  # zero channels appended to the input (see pad_input_channels)
        self.quant_inp = _act(q, "signed")
        layers: list[nn.Module] = [_qconv_bn_relu6(q, backbone.in_channels, backbone.stem_channels, 3, 2,
                                                   backbone=backbone)]
        stage_quant: nn.Module | None = None
        cin = backbone.stem_channels
        prev_out = None
        for _, bin_, bout, stride, t in block_plan(backbone):
            if stage_quant is None or bout != prev_out or stride != 1:
                stage_quant = _act(q, "signed")
            in_quant = layers[-1].out_quant if isinstance(layers[-1], QuantInvertedResidual) else None
            layers.append(QuantInvertedResidual(bin_, bout, stride, t, stage_quant, q, backbone, in_quant))
            prev_out = bout
            cin = bout
        layers.append(_qconv_bn_relu6(q, cin, backbone.features, kernel=1, backbone=backbone, position="last"))
        self.features = nn.Sequential(*layers)
        self.pool_size = check_pool_size(pool_size, num_outputs, backbone)
        if pool_size:
            self.pool = _quant_weighted_pool(q, pool_size)
        else:
            self.quant_pool = _act(q, "unsigned")
            self.classifier = nn.Sequential(
                dropout if isinstance(dropout, nn.Module) else nn.Dropout(p=dropout),
                qnn.QuantLinear(backbone.features, num_outputs, bias=True, weight_quant=q["weight"],
                                bias_quant=q["bias"], return_quant_tensor=False))
        self.quant_out = _act(q, "output", return_quant_tensor=False)
        MobileNetV2.reset_parameters(self)  # same init as the float net (QuantConv2d is a Conv2d)

    def pad_input_channels(self, multiple: int = 4) -> int:
        """Give the stem convolution a multiple of ``multiple`` input channels; returns how many it adds.

        The added channels have zero weights and :meth:`embed` appends as many zero
        channels to the input, so the function, the per-channel weight scales and the
        input quantizer are unchanged. onnxruntime's int8 direct convolution (x86) needs
        input channels in multiples of 4; a 3-channel (RGB) or 1-channel stem otherwise
        runs as a slower im2col GEMM. Applied to a copy at ONNX export.
        """
        conv = self.features[0][0]
        extra = (-conv.in_channels) % multiple
        if extra == 0:
            return 0
        new = _qconv(quantizers(self.scales), conv.in_channels + extra, conv.out_channels, conv.kernel_size[0],
                     conv.stride[0], conv.groups)
        with torch.no_grad():
            new.weight.copy_(nn.functional.pad(conv.weight, (0, 0, 0, 0, 0, extra)))
            if conv.bias is not None:
                new.bias = nn.Parameter(conv.bias.detach().clone())
        new.train(conv.training)
        self.features[0][0] = new
        self.input_pad += extra
        return extra

    def feature_map(self, x: Tensor) -> Tensor:
        """The last feature map ``(N, features, h, w)`` (float values of the quantized activations)."""
        if self.input_pad:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.input_pad))
        return _value(self.features(self.quant_inp(x)))

    def embed(self, x: Tensor):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.feature_map(x), 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool_size:
            return self.quant_out(self.pool(self.feature_map(x)))
        x = self.classifier[0](self.embed(x))
        return self.quant_out(self.classifier[1](self.quant_pool(x)))


_POOL = None


def _quant_weighted_pool(q: dict, n: int) -> nn.Module:
    """The quantized :class:`export.mobilenet.WeightedPool2d`: ``QuantLinear(n, 1)`` over the positions."""
    global _POOL
    if _POOL is None:
        qnn, _ = _brevitas()

        class QuantWeightedPool2d(qnn.QuantLinear):
            is_weighted_pool = True

            def __init__(self, n: int, weight_quant) -> None:
                qnn.QuantLinear.__init__(self, n, 1, bias=False, weight_quant=weight_quant,
                                         return_quant_tensor=False)

            def forward(self, x: Tensor) -> Tensor:
                check_pool_input(x, self.in_features)
                return qnn.QuantLinear.forward(self, torch.flatten(x, 2)).squeeze(-1)

        _POOL = QuantWeightedPool2d
    return _POOL(n, q["weight"])


def quant_only_key(key: str) -> bool:
    """Whether a state-dict key belongs to a quantizer (no float twin)."""
    parts = key.split(".")
    return any(p in ("quant_inp", "quant_pool", "quant_out", "out_quant", "weight_quant", "bias_quant",
                     "act_quant", "input_quant", "output_quant") for p in parts)


def load_float_weights(qmodel: nn.Module, float_state: dict, *, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load a float MobileNetV2 state dict into the quant twin: every float key must match by name and shape.

    Raises:
        HdsimError: a float key the twin lacks, or a twin parameter the float dict lacks.
    """
    own = qmodel.state_dict()
    float_state = {k: v for k, v in float_state.items() if not k.startswith(skip_prefixes)}
    need = {k for k in own if not quant_only_key(k) and not k.startswith(skip_prefixes)}
    missing = sorted(need - set(float_state))
    unexpected = sorted(set(float_state) - set(own))
    if missing or unexpected:
        raise HdsimError(f"float weights: do not fit the quantized net: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    for k, v in float_state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise HdsimError(f"float weights: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = qmodel.load_state_dict(float_state, strict=False)
    bad = [k for k in result.missing_keys if not quant_only_key(k) and not k.startswith(skip_prefixes)]
    if bad or result.unexpected_keys:
        raise HdsimError(f"float weights: load left {bad[:3]} missing, {result.unexpected_keys[:3]} unexpected")


def merge_batchnorm(qmodel: nn.Module) -> int:
    """Fold every ``QuantConv2d -> BatchNorm2d`` pair into the convolution (BN becomes ``Identity``).

    Call in eval mode, after training, before export. Returns the number of merged pairs.
    """
    from brevitas.nn import QuantConv2d
    from brevitas.nn.utils import merge_bn

    merged = 0
    for seq in list(qmodel.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            if isinstance(seq[i], QuantConv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                merge_bn(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
                merged += 1
    qmodel.bn_merged = True
    return merged


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@torch.no_grad()
def calibrate(qmodel: nn.Module, batches, *, bias_correction: bool = False) -> None:
    """Post-training calibration: float forward passes collect each activation quantizer's statistics
    (Brevitas ``calibration_mode``); the scales (and zero points) are set from them on exit.

    ``bias_correction``: then one more pass over the batches (Brevitas ``bias_correction_mode``)
    adds to every convolution / linear bias the mean, per output channel, of its float
    output minus its quantized output; for post-training export after
    :func:`merge_batchnorm` (layers without a bias are left alone).
    """
    from brevitas.graph.calibrate import bias_correction_mode, calibration_mode

    batches = list(batches)
    was_training = qmodel.training
    qmodel.eval()
    with calibration_mode(qmodel):
        for x in batches:
            qmodel(x)
    if bias_correction:
        qmodel.eval()
        with bias_correction_mode(qmodel, skip_if_no_bias=True):
            for x in batches:
                qmodel(x)
    qmodel.train(was_training)
