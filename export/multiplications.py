"""Multiplications per input of a network, counted from its shapes and its measured zero activations.

The seed ``001_*`` (DecisiveNets, table 1) reports how many multiplications a network with
blockwise winner-take-all activations needs per input: an input element that is zero
needs no multiplication, and a WTA layer zeroes all but one channel of each group. Here:

* for a convolution or linear layer, an input element ``x`` is multiplied once by every
  weight that reads it: its **fan-out**, ``(C_out / groups) * r_y * r_x`` for a convolution,
  where ``r_y`` (``r_x``) counts the (output row, kernel row) pairs whose tap lands on ``x``'s
  row (column) — a stride-1, padding-1 3x3 conv gives 3 inside, 2 on a border;
  ``out_features`` for a linear layer;
* ``multiplications`` of one input = sum over the layers of the fan-outs of the **nonzero**
  input elements (zeros measured on the actual activations, per image);
* ``multiplications_dense`` = the same sum with every input element counted: the cost of the
  same layer shapes on an engine that does not skip zeros (what the network costs with
  ReLU6's zeros ignored). Taps on the zero padding are not multiplications in either count
  (no engine multiplies by a padding zero); ``multiplications_dense_with_padding`` is the
  textbook ``C_out * C_in/groups * k_h * k_w * H_out * W_out`` (plus ``in * out`` per linear
  layer), given for reference.

Counted on the exported ONNX graph (:func:`count_onnx_multiplications`): every ``Conv``,
``Gemm`` and ``MatMul`` with a weight operand, its input read back from onnxruntime as an
extra graph output. So the zeros are those of the deployed int8 network (a value the
quantizer rounds to zero is a zero), and the evaluation needs only the export folder.
Not counted: additions, the WTA's own selection (a 0/1 mask: a multiplexer, not a
multiplier), pooling, softmax, the quantizers' rescaling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hdsim.errors import HdsimError

__all__ = ["tap_counts", "conv_output_size", "conv_multiplications", "linear_multiplications",
           "count_onnx_multiplications"]


def conv_output_size(size: int, kernel: int, stride: int = 1, pad_begin: int = 0, pad_end: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution along one axis: ``floor((n + p_b + p_e - d (k - 1) - 1) / s) + 1``.

    Example:
        >>> conv_output_size(32, 3, 2, 1, 1), conv_output_size(1, 3, 1, 1, 1)
        (16, 1)
    """
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def tap_counts(size: int, out_size: int, kernel: int, stride: int = 1, pad_begin: int = 0,
               dilation: int = 1) -> np.ndarray:
    """For each input position along one axis, how many (output position, kernel tap) pairs read it.

    ``r[i] = #{(o, k) : 0 <= o < out_size, 0 <= k < kernel, o * stride - pad_begin + k * dilation = i}``;
    taps that land on the padding are dropped.

    Shapes:
        returns: ``(size,)`` int64

    Example:
        >>> tap_counts(4, 4, 3, 1, 1).tolist()   # stride 1, padding 1: borders are read twice
        [2, 3, 3, 2]
        >>> tap_counts(4, 2, 3, 2, 1).tolist()   # stride 2
        [1, 2, 1, 1]
    """
    o = np.arange(out_size)[:, None]
    k = np.arange(kernel)[None, :]
    pos = (o * stride - pad_begin + k * dilation).ravel()
    return np.bincount(pos[(pos >= 0) & (pos < size)], minlength=size).astype(np.int64)


def conv_multiplications(nonzero: np.ndarray, out_channels: int, kernel: tuple[int, int],
                         stride: tuple[int, int] = (1, 1), pads: tuple[int, int, int, int] = (0, 0, 0, 0),
                         groups: int = 1, dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Multiplications of a 2-D convolution per input, counting only nonzero input elements.

    ``sum_{c, y, x} [x_{c,y,x} != 0] * (C_out / groups) * r_y[y] * r_x[x]`` with the tap counts of
    :func:`tap_counts` (``pads`` in ONNX order: top, left, bottom, right). With every element
    nonzero it is the dense count (padding taps excluded).

    Shapes:
        nonzero: ``(N, C_in, H, W)`` bool
        returns: ``(N,)`` int64

    Example:
        >>> conv_multiplications(np.ones((1, 1, 4, 4), bool), 1, (3, 3), pads=(1, 1, 1, 1)).tolist()
        [100]
    """
    if nonzero.ndim != 4:
        raise HdsimError(f"nonzero: expected (N, C, H, W), got shape {nonzero.shape}")
    _, cin, h, w = nonzero.shape
    if cin % groups or out_channels % groups:
        raise HdsimError(f"groups: {groups} does not divide C_in={cin} and C_out={out_channels}")
    hout = conv_output_size(h, kernel[0], stride[0], pads[0], pads[2], dilation[0])
    wout = conv_output_size(w, kernel[1], stride[1], pads[1], pads[3], dilation[1])
    ry = tap_counts(h, hout, kernel[0], stride[0], pads[0], dilation[0])
    rx = tap_counts(w, wout, kernel[1], stride[1], pads[1], dilation[1])
    per_position = np.einsum("nchw->nhw", nonzero.astype(np.int64))
    return (out_channels // groups) * np.einsum("nhw,h,w->n", per_position, ry, rx)


def linear_multiplications(nonzero: np.ndarray, out_features: int) -> np.ndarray:
    """Multiplications of a linear map ``(..., K) -> (..., out_features)`` per input: ``out_features``
    times the nonzero input elements.

    Shapes:
        nonzero: ``(N, ..., K)`` bool
        returns: ``(N,)`` int64

    Example:
        >>> linear_multiplications(np.array([[True, False, True]]), 4).tolist()
        [8]
    """
    return int(out_features) * nonzero.reshape(nonzero.shape[0], -1).sum(axis=1).astype(np.int64)


# ---- on an ONNX graph ------------------------------------------------------------------------------
_PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity")


def _layers(model) -> list[dict]:
    """The counted nodes of a graph: Conv, Gemm, MatMul whose weight has a static shape."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    producer = {out: n for n in model.graph.node for out in n.output}
    graph_inputs = {i.name: shapes.get(i.name) for i in model.graph.input}
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        wshape = shapes.get(node.input[1])
        if wshape is None or any(d is None for d in wshape):
            if node.op_type == "MatMul":
                continue  # a product of two activations, not a layer with weights
            raise HdsimError(f"onnx: no static weight shape for {node.name}")
        layer = {"name": node.name, "op": node.op_type, "input": node.input[0], "weight_shape": wshape}
        if node.op_type == "Conv":
            if len(wshape) != 4:
                raise HdsimError(f"onnx: only 2-D convolutions are counted, {node.name} has weight {wshape}")
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                raise HdsimError(f"onnx: {node.name} uses auto_pad {attrs['auto_pad']!r}; explicit pads only")
            layer.update(out_channels=wshape[0], kernel=tuple(attrs.get("kernel_shape", wshape[2:])),
                         stride=tuple(attrs.get("strides", (1, 1))), pads=tuple(attrs.get("pads", (0, 0, 0, 0))),
                         groups=int(attrs.get("group", 1)), dilation=tuple(attrs.get("dilations", (1, 1))))
            layer["channels"] = _real_channels(node.input[0], producer, graph_inputs)
        elif node.op_type == "Gemm":
            layer["out_features"] = wshape[0] if attrs.get("transB", 0) else wshape[1]
            if attrs.get("transA", 0):
                raise HdsimError(f"onnx: {node.name} has transA; not counted")
        else:
            if len(wshape) != 2:
                continue
            layer["out_features"] = wshape[1]
        layers.append(layer)
    return layers


def _real_channels(name: str, producer: dict, graph_inputs: dict) -> int | None:
    """Channels of a convolution input that are inputs of the network: the exporter pads the
    image with zero channels for onnxruntime's int8 kernel (``QuantMobileNetV2.pad_input_channels``),
    and those structural zeros are not the network's inputs. ``None``: all of them."""
    while name in producer:
        node = producer[name]
        if node.op_type == "Pad" and node.input[0] in graph_inputs:
            shape = graph_inputs[node.input[0]]
            return shape[1] if shape and len(shape) == 4 and shape[1] else None
        if node.op_type not in _PASS_THROUGH:
            return None
        name = node.input[0]
    return None


def _count(layer: dict, nonzero: np.ndarray) -> np.ndarray:
    """Per-input multiplications of one layer; ``nonzero`` already cut to the network's channels."""
    if layer["op"] == "Conv":
        return conv_multiplications(nonzero, layer["out_channels"], layer["kernel"], layer["stride"], layer["pads"],
                                    layer["groups"], layer["dilation"])
    return linear_multiplications(nonzero, layer["out_features"])


def _kind(layer: dict, cin: int) -> str:
    if layer["op"] != "Conv":
        return "linear"
    if layer["groups"] > 1 and layer["groups"] == cin:
        return "depthwise"
    return "pointwise" if tuple(layer["kernel"]) == (1, 1) else "conv"


def _dense_with_padding(layer: dict, shape: tuple[int, ...]) -> int:
    if layer["op"] != "Conv":
        return int(np.prod(shape[1:])) * int(layer["out_features"])
    _, cin, h, w = shape
    if layer["channels"] is not None:
        cin = layer["channels"]
    kh, kw = layer["kernel"]
    pads, stride, dil = layer["pads"], layer["stride"], layer["dilation"]
    hout = conv_output_size(h, kh, stride[0], pads[0], pads[2], dil[0])
    wout = conv_output_size(w, kw, stride[1], pads[1], pads[3], dil[1])
    return int(layer["out_channels"] * (cin // layer["groups"]) * kh * kw * hout * wout)


def count_onnx_multiplications(model_path: str | Path, x: np.ndarray, *, batch: int = 256) -> dict:
    """Mean multiplications per input of an ONNX model on the inputs ``x`` (module docstring).

    Runs the model with onnxruntime (``ORT_DISABLE_ALL``: the graph as exported) with the
    input of every ``Conv`` / ``Gemm`` / ``MatMul``-with-weights added as a graph output, and
    counts per image. Returns ``multiplications`` (mean per input, zeros skipped),
    ``multiplications_dense`` (every input element counted), ``multiplications_ratio``,
    ``multiplications_dense_with_padding``, ``input_zero_fraction`` (zero elements over all
    counted layer inputs), ``multiplications_by_kind`` (``conv``, ``depthwise``, ``pointwise``,
    ``linear``: ``dense`` and ``mean``) and ``layers`` (per node: name, kind, input shape,
    dense, mean, zero fraction).

    Shapes:
        x: ``(N, ...)`` float32, the model's single input
    """
    import onnx
    import onnxruntime as ort

    from hdsim.export_folder import session_options

    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 1 or x.shape[0] < 1:
        raise HdsimError(f"inputs: need at least one input, got shape {x.shape}")
    model = onnx.load(str(model_path))
    layers = _layers(model)
    if not layers:
        raise HdsimError(f"onnx {model_path}: no Conv, Gemm or MatMul layer to count")
    outputs = {o.name for o in model.graph.output}
    for name in dict.fromkeys(layer["input"] for layer in layers):
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), session_options(False), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    names = [layer["input"] for layer in layers]
    sums = np.zeros(len(layers), np.float64)
    zeros = np.zeros(len(layers), np.float64)
    shapes: list = [None] * len(layers)
    dense = np.zeros(len(layers), np.int64)
    for i in range(0, x.shape[0], batch):
        got = sess.run(names, {input_name: x[i:i + batch]})
        for j, (layer, a) in enumerate(zip(layers, got)):
            if layer["op"] == "Conv" and layer["channels"] is not None:
                a = a[:, :layer["channels"]]
            nz = a != 0
            sums[j] += float(_count(layer, nz).sum())
            zeros[j] += float(a.size - nz.sum())
            if shapes[j] is None:
                shapes[j] = tuple(int(d) for d in a.shape)
                dense[j] = int(_count(layer, np.ones((1,) + a.shape[1:], bool))[0])
    n = x.shape[0]
    rows = []
    for j, layer in enumerate(layers):
        shape = shapes[j]
        rows.append({"name": layer["name"], "kind": _kind(layer, shape[1] if len(shape) > 1 else 0),
                     "input_shape": list(shape[1:]), "dense": int(dense[j]), "mean": float(sums[j] / n),
                     "zero_fraction": float(zeros[j] / (n * int(np.prod(shape[1:])))),
                     "dense_with_padding": _dense_with_padding(layer, shape)})
    total, total_dense = float(sum(r["mean"] for r in rows)), int(sum(r["dense"] for r in rows))
    by_kind: dict[str, dict] = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], {"layers": 0, "dense": 0, "mean": 0.0})
        k["layers"] += 1
        k["dense"] += r["dense"]
        k["mean"] += r["mean"]
    elements = sum(int(np.prod(s[1:])) for s in shapes) * n
    return {"multiplications": total, "multiplications_dense": total_dense,
            "multiplications_ratio": total / total_dense,
            "multiplications_dense_with_padding": int(sum(r["dense_with_padding"] for r in rows)),
            "input_zero_fraction": float(zeros.sum() / elements), "multiplications_by_kind": by_kind,
            "layers": rows}
