"""MobileNetV2 (float), written for this project with torchvision's module and parameter names.

The layout follows the MobileNetV2 paper (inverted residuals with linear
bottlenecks). Module names and parameter shapes match torchvision's
``mobilenet_v2`` exactly, so torchvision's ImageNet state dict
(``mobilenet_v2-b0353104.pth``) loads with no missing or unexpected keys:

* ``features.0``: stem ``Sequential(Conv2d 3x3 s2, BatchNorm2d, ReLU6)``
* ``features.1..17``: :class:`InvertedResidual` blocks, each with a ``conv``
  ``Sequential`` of ``[expand 1x1 ConvBNReLU6] + dw 3x3 ConvBNReLU6 + project 1x1 Conv2d + BatchNorm2d``
* ``features.18``: ``Sequential(Conv2d 1x1, BatchNorm2d, ReLU6)`` to ``last_channel`` features
* ``classifier``: ``Sequential(Dropout, Linear)``

Extensions over torchvision (all default to torchvision's choices): input
channels, ``last_channel`` and the classifier's output size. The input size is
free (global average pooling). ``pool_size > 0`` builds the sparse-resonator
variant of seed ``000_*`` (SPEC section 7): ``pool`` is a :class:`WeightedPool2d`
with ``pool_size`` weights shared by every channel (49 on ImageNet's 7x7 map;
``feature_map_size(H, W)`` positions on another input), no classifier: the
output is the ``last_channel`` pooled features themselves.

``BackboneConfig(activation="wta", wta_group=l)`` builds the blockwise winner-take-all
variant of seed ``001_*`` (SPEC section 8, :mod:`hdsim.wta`): the ReLU6 after every
expansion 1x1 and depthwise 3x3 convolution (``wta_layers="blocks"``, the default; ``"all"``
adds the stem and the last 1x1, ``"depthwise"`` keeps only the depthwise ones) becomes a
:class:`WTA` over groups of ``l`` channels, soft (annealed temperature) in training mode
and hard in eval mode; the projections stay linear (MobileNetV2's linear bottlenecks).
Module names and parameters are unchanged (a WTA has none), so ``l = 1`` is the ReLU6
network itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hdsim.errors import HdsimError

__all__ = ["make_divisible", "InvertedResidual", "MobileNetV2", "BackboneConfig", "INVERTED_RESIDUAL_SETTING",
           "block_plan", "load_state_dict_strict", "WeightedPool2d", "feature_map_size", "ACTIVATIONS", "WTA",
           "activation_layers", "set_wta_temperature", "WTA_LAYERS", "wta_layers"]

ACTIVATIONS = ("relu6", "wta")
# Which ReLU6 positions a WTA backbone turns into WTAs. "blocks" (default): inside the inverted
# residuals, where the seed's per-layer competition applies; the stem (8 channels at width 0.25)
# and the last 1x1 (the head's features) stay ReLU6: with them too ("all") the two-digit CI
# network lost 7 more points at l = 2 (docs/export.md). "stream": the blocks' WTAs plus one on
# every block's output (after the residual add), so the residual stream — MobileNetV2's linear
# bottleneck, which every expansion 1x1 reads — is a WTA code too, as in the seed's ResNet where
# the activation follows the add; without it about half of the network's multiplications read a
# dense input whatever the activation (docs/export.md, "Multiplications").
# "inputs": the blocks' WTAs plus a signed WTA on the input of every expansion 1x1 only: the
# expansion reads a sparse code of the stream while the residual add keeps the dense stream (and
# its gradient path); "stream" cuts the stream itself and trains far worse (docs/export.md).
WTA_LAYERS = {"blocks": ("expand", "depthwise"), "depthwise": ("depthwise",),
              "all": ("stem", "expand", "depthwise", "last"),
              "stream": ("expand", "depthwise", "output"),
              "inputs": ("expand", "depthwise", "input")}

# (expand ratio t, output channels c, repeats n, first stride s) — MobileNetV2 paper, table 2.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of a MobileNetV2 backbone.

    Attributes:
        width: width multiplier (1.0 = the ImageNet model).
        in_channels: input image channels (3 for RGB, 1 for grayscale).
        last_channel: features out of ``features.18``; ``None`` = torchvision's
            ``make_divisible(1280 * max(1, width))`` (1280 at width <= 1).
        round_nearest: channel rounding multiple.
        activation: ``relu6`` (MobileNetV2) or ``wta`` (every ReLU6 becomes a blockwise
            winner-take-all, :class:`WTA`; seed ``001_*``).
        wta_group: ``l``, channels per WTA group (``wta`` only); must divide the channel
            count of every WTA activation (:func:`wta_layers`).
        wta_layers: which ReLU6 become WTAs (:data:`WTA_LAYERS`): ``blocks`` (after every
            expansion and depthwise convolution), ``depthwise``, or ``all`` (stem and last 1x1 too).
    """

    width: float = 1.0
    in_channels: int = 3
    last_channel: int | None = None
    round_nearest: int = 8
    activation: str = "relu6"
    wta_group: int = 1
    wta_layers: str = "blocks"

    def validate(self) -> None:
        if not self.width > 0:
            raise HdsimError(f"width: width multiplier must be > 0, got {self.width}")
        if self.in_channels < 1:
            raise HdsimError(f"in_channels: must be >= 1, got {self.in_channels}")
        if self.last_channel is not None and self.last_channel < 1:
            raise HdsimError(f"last_channel: must be >= 1, got {self.last_channel}")
        if self.activation not in ACTIVATIONS:
            raise HdsimError(f"activation: expected one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.activation == "wta":
            from hdsim.wta import check_group

            if self.wta_layers not in WTA_LAYERS:
                raise HdsimError(f"wta_layers: expected one of {list(WTA_LAYERS)}, got {self.wta_layers!r}")
            check_group(self.wta_group, name="wta_group")
            for name, channels in wta_layers(self):
                if channels % self.wta_group:
                    raise HdsimError(f"wta_group: groups of {self.wta_group} do not divide the {channels} channels "
                                     f"of {name} (every activation's channel count must be a multiple)")

    @property
    def stem_channels(self) -> int:
        return make_divisible(32 * self.width, self.round_nearest)

    @property
    def features(self) -> int:
        if self.last_channel is not None:
            return int(self.last_channel)
        return make_divisible(1280 * max(1.0, self.width), self.round_nearest)


def block_plan(cfg: BackboneConfig) -> list[tuple[int, int, int, int, int]]:
    """``(index, in, out, stride, expand)`` of every inverted-residual block (``features.1..17``).

    The same plan builds the float and the quantized network, so their names agree.
    """
    plan = []
    cin = cfg.stem_channels
    idx = 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        cout = make_divisible(c * cfg.width, cfg.round_nearest)
        for i in range(n):
            plan.append((idx, cin, cout, s if i == 0 else 1, t))
            cin = cout
            idx += 1
    return plan


def activation_layers(cfg: BackboneConfig) -> list[tuple[str, int, str]]:
    """``(module name, channels, position)`` of every activation position in forward order; position is
    ``stem``, ``expand``, ``depthwise``, ``last`` (a ReLU6 in MobileNetV2), ``input`` (the input of a
    block's expansion 1x1, linear in MobileNetV2; a signed WTA ``features.K.in_act`` with
    ``wta_layers="inputs"``) or ``output`` (a block's output, linear in MobileNetV2; a signed WTA
    ``features.K.out_act`` with ``wta_layers="stream"``).

    Example:
        >>> layers = activation_layers(BackboneConfig(width=0.25, in_channels=1, last_channel=128))
        >>> layers[:3], layers[-1], len(layers)
        ([('features.0.2', 8, 'stem'), ('features.1.conv.0.2', 8, 'depthwise'), ('features.1.out_act', 8, 'output')], ('features.18.2', 128, 'last'), 68)
    """
    out = [("features.0.2", cfg.stem_channels, "stem")]
    for idx, cin, cout, _, expand in block_plan(cfg):
        hidden = int(round(cin * expand))
        if expand != 1:
            out.append((f"features.{idx}.in_act", cin, "input"))
            out.append((f"features.{idx}.conv.0.2", hidden, "expand"))
        out.append((f"features.{idx}.conv.{int(expand != 1)}.2", hidden, "depthwise"))
        out.append((f"features.{idx}.out_act", cout, "output"))
    out.append((f"features.{len(block_plan(cfg)) + 1}.2", cfg.features, "last"))
    return out


def wta_layers(cfg: BackboneConfig) -> list[tuple[str, int]]:
    """``(module name, channels)`` of the activations that are WTAs (none for ``relu6``).

    Example:
        >>> cfg = BackboneConfig(width=0.25, in_channels=1, last_channel=128, activation="wta", wta_group=2)
        >>> layers = wta_layers(cfg)
        >>> len(layers), layers[0], sorted({c for _, c in layers})
        (33, ('features.1.conv.0.2', 8), [8, 48, 96, 144, 240])
    """
    if cfg.activation != "wta":
        return []
    return [(n, c) for n, c, pos in activation_layers(cfg) if pos in WTA_LAYERS[cfg.wta_layers]]


def feature_map_size(height: int, width: int) -> tuple[int, int]:
    """``(h, w)`` of the last feature map: five stride-2 3x3 convolutions with padding 1, each
    ``ceil(n / 2)`` (224x224 -> 7x7; two-digit MNIST 32x64 -> 1x2; three-digit 32x96 -> 1x3).

    Example:
        >>> feature_map_size(224, 224), feature_map_size(32, 64), feature_map_size(32, 96)
        ((7, 7), (1, 2), (1, 3))
    """
    h, w = int(height), int(width)
    for _ in range(5):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


class WeightedPool2d(nn.Linear):
    """Weighted spatial pooling with one weight per position, shared by all channels (seed ``000_*``).

    ``z_c = sum_p w_p x_{c,p}`` over the ``n = h * w`` positions of the feature map: ``n``
    parameters whatever the channel count. Initialized to ``1/n`` (average pooling). An
    ``nn.Linear(n, 1)`` without bias over the flattened positions, so that its quantized
    twin is Brevitas' ``QuantLinear`` with the same parameter name and shape.

    Shapes:
        input ``(N, C, h, w)`` with ``h * w = n`` -> output ``(N, C)``
    """

    is_weighted_pool = True

    def __init__(self, n: int) -> None:
        super().__init__(n, 1, bias=False)
        nn.init.constant_(self.weight, 1.0 / n)

    def forward(self, x: Tensor) -> Tensor:
        check_pool_input(x, self.in_features)
        return super().forward(torch.flatten(x, 2)).squeeze(-1)


def check_pool_input(x: Tensor, n: int) -> None:
    if x.dim() != 4 or x.shape[2] * x.shape[3] != n:
        raise HdsimError(f"input size: the weighted pooling has {n} weights, the feature map is "
                         f"{tuple(x.shape[2:])} (the sparse-resonator head is trained for one input size)")


# ---- blockwise winner-take-all (seed 001_*) -----------------------------------------------------
class WTA(nn.Module):
    """ReLU6 as a blockwise winner-take-all over groups of ``l`` channels (:mod:`hdsim.wta`).

    ``y = soft_wta(min(x, 6), l, t)`` in training mode (temperature ``t``, set every step by
    the training loop through :func:`set_wta_temperature`), ``y = hard_wta(min(x, 6), l)`` in
    eval mode (one winner per group and pixel, lowest channel on ties). The cap at 6 keeps
    ReLU6's range, so ``l = 1`` is exactly ``ReLU6`` (the WTA functions apply the ``relu``);
    ``signed=True`` (a block's output, ``wta_layers="stream"``): the WTA of a linear layer, winner by
    magnitude, sign kept, no cap (:func:`hdsim.wta.hard_wta`), since the linear bottleneck it
    sparsifies had neither a ReLU nor a bound. No parameters: the state dict of a WTA net is that of the ReLU6 net.

    Shapes:
        input ``(N, C, H, W)`` with ``C`` a multiple of ``l`` -> the same shape
    """

    def __init__(self, l: int, t: float = 1.0, signed: bool = False) -> None:
        super().__init__()
        self.l = int(l)
        self.t = float(t)
        self.signed = bool(signed)

    def forward(self, x: Tensor) -> Tensor:
        from hdsim.wta import hard_wta, soft_wta

        if not self.signed:
            x = torch.clamp(x, max=6.0)
        if self.training:
            return soft_wta(x, self.l, self.t, signed=self.signed)
        return hard_wta(x, self.l, signed=self.signed)

    def extra_repr(self) -> str:
        return f"l={self.l}, t={self.t:g}" + (", signed" if self.signed else "")


def set_wta_temperature(model: nn.Module, t: float) -> int:
    """Set the temperature of every WTA activation of ``model`` (float or quantized); returns how many."""
    n = 0
    for m in model.modules():
        if getattr(m, "is_wta", False) or isinstance(m, WTA):
            m.t = float(t)
            n += 1
    return n


def is_wta_position(backbone: BackboneConfig | None, position: str) -> bool:
    """Whether the ReLU6 at ``position`` (stem, expand, depthwise, last) is a WTA in ``backbone``."""
    return (backbone is not None and backbone.activation == "wta"
            and position in WTA_LAYERS.get(backbone.wta_layers, ()))


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                  backbone: BackboneConfig | None = None, position: str = "stem") -> nn.Sequential:
    """``Sequential(Conv2d(bias=False), BatchNorm2d, ReLU6)`` — torchvision's ``Conv2dNormActivation``;
    the activation is a :class:`WTA` where ``backbone`` makes ``position`` one (:func:`is_wta_position`)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        WTA(backbone.wta_group) if is_wta_position(backbone, position) else nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1); identity shortcut when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, backbone: BackboneConfig | None = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise HdsimError(f"stride: expected 1 or 2, got {stride}")
        self.stride = stride
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, kernel=1, backbone=backbone, position="expand"))
        layers += [
            conv_bn_relu6(hidden, hidden, kernel=3, stride=stride, groups=hidden, backbone=backbone,
                          position="depthwise"),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout
        # wta_layers="stream": the block's output (after the add) is a WTA code; no parameters, so
        # the state dict is that of the linear-bottleneck block
        self.out_act = WTA(backbone.wta_group, signed=True) if is_wta_position(backbone, "output") else None
        # wta_layers="inputs": the expansion reads a signed WTA code of the block input; the shortcut adds
        # the dense input
        self.in_act = (WTA(backbone.wta_group, signed=True) if expand != 1 and is_wta_position(backbone, "input")
                       else None)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x if self.in_act is None else self.in_act(x))
        y = x + y if self.use_res_connect else y
        return self.out_act(y) if self.out_act is not None else y


class MobileNetV2(nn.Module):
    """Float MobileNetV2 with torchvision's names.

    Args:
        num_outputs: size of the classifier output (classes for an FC head, ``D`` for a BCF projection);
            with ``pool_size`` it must equal ``backbone.features`` (no classifier).
        backbone: :class:`BackboneConfig`.
        dropout: dropout probability before the classifier, or the dropout module itself
            (:class:`export.partition_dropout.PartitionDropout`).
        pool_size: ``0``: global average pooling and the classifier; ``n > 0``: a
            :class:`WeightedPool2d` of ``n`` weights and no classifier (sparse-resonator head).

    Shapes:
        input ``(N, in_channels, H, W)`` -> output ``(N, num_outputs)``
    """

    def __init__(self, num_outputs: int = 1000, backbone: BackboneConfig = BackboneConfig(),
                 dropout: float | nn.Module = 0.2, pool_size: int = 0) -> None:
        super().__init__()
        backbone.validate()
        if num_outputs < 1:
            raise HdsimError(f"num_outputs: must be >= 1, got {num_outputs}")
        self.backbone_config = backbone
        layers: list[nn.Module] = [conv_bn_relu6(backbone.in_channels, backbone.stem_channels, 3, 2,
                                                 backbone=backbone)]
        cin = backbone.stem_channels
        for _, bin_, bout, stride, t in block_plan(backbone):
            layers.append(InvertedResidual(bin_, bout, stride, t, backbone))
            cin = bout
        layers.append(conv_bn_relu6(cin, backbone.features, kernel=1, backbone=backbone, position="last"))
        self.features = nn.Sequential(*layers)
        self.pool_size = check_pool_size(pool_size, num_outputs, backbone)
        if pool_size:
            self.pool = WeightedPool2d(pool_size)
        else:
            drop = dropout if isinstance(dropout, nn.Module) else nn.Dropout(p=dropout)  # a module: e.g. PartitionDropout
            self.classifier = nn.Sequential(drop, nn.Linear(backbone.features, num_outputs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialization: Kaiming-normal (fan out) convs, unit BN, N(0, 0.01) linear;
        a weighted pooling starts as the average."""
        for m in self.modules():
            if getattr(m, "is_weighted_pool", False):
                nn.init.constant_(m.weight, 1.0 / m.in_features)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def embed(self, x: Tensor) -> Tensor:
        """Pooled backbone features ``(N, features)``."""
        x = self.features(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool_size:
            return self.pool(self.features(x))
        return self.classifier(self.embed(x))


def check_pool_size(pool_size: int, num_outputs: int, backbone: BackboneConfig) -> int:
    if pool_size < 0:
        raise HdsimError(f"pool_size: must be >= 0, got {pool_size}")
    if pool_size and num_outputs != backbone.features:
        raise HdsimError(f"num_outputs: a weighted-pooling net outputs its {backbone.features} features, "
                         f"not {num_outputs}")
    return int(pool_size)


def load_state_dict_strict(model: nn.Module, state: dict, *, skip_prefixes: tuple[str, ...] = (),
                           name: str = "state dict") -> None:
    """Load ``state`` requiring no missing and no unexpected keys (outside ``skip_prefixes``), matching shapes.

    Raises:
        HdsimError: naming the first mismatched keys.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    wanted = {k for k in own if not k.startswith(skip_prefixes)}
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise HdsimError(f"{name}: does not fit the model: missing keys {missing[:3]}"
                         f"{'...' if len(missing) > 3 else ''}, unexpected keys {unexpected[:3]}"
                         f"{'...' if len(unexpected) > 3 else ''}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise HdsimError(f"{name}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=not skip_prefixes)
