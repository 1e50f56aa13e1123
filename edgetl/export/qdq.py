"""ONNX QDQ graph facts and rewrites shared by the int8 exporters and the sensitivity analysis.

- Layer names. torch.onnx names every node by its module scope
  (`/blocks/1/0/conv_dw/Conv`), so a node maps back to the torch module it
  came from (`blocks.1.0.conv_dw`). The same module path selects the same layer
  in the OpenVINO IR (friendly names are the ONNX node names) and in the TFLite
  graph (litert-torch writes module scopes into tensor names): one name, one
  layer, three formats.
- uint8 activations. NNCF's ONNX backend writes many activation quantizers with
  int8 zero points. onnxruntime on x86 without VNNI runs S8S8 convolutions far
  slower than U8S8 (measured 3x slower than fp32 on a Lite0, where U8S8 is about
  0.7x). `q_u8 = q_s8 + 128` with the zero point moved by 128 is exact in QDQ
  semantics — the clip range [-128, 127] becomes [0, 255] — checked with graph
  optimisations off. Fused integer kernels may then round differently (U8S8 on
  AVX2 accumulates pairs in int16 and can saturate, VNNI does not).
"""

from __future__ import annotations

import numpy as np

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
FLOAT_LOGITS = "float32 logits (not quantized)"  # sidecar `quantization.output` of every int8 with float logits
# Activations a runtime fuses into the layer before them: quantizing the layer means quantizing
# after them (a range of [0, 6] after ReLU6, not the wide pre-activation range).
FUSED_ACTIVATIONS = ("Clip", "Relu", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "PRelu")


class BatchReader:
    """onnxruntime's CalibrationDataReader over ready NCHW batches."""

    def __init__(self, batches, input_name: str):
        self.items = ({input_name: batch} for batch in batches)

    def get_next(self):
        return next(self.items, None)


def module_of(node_name: str) -> str | None:
    """The torch module path of an exported node; None for nodes outside any module.

    The exporter writes one scope per module, and a Sequential child as its
    parent's attribute plus the index path: timm's `/blocks/blocks.1/blocks.1.0/conv_dw/Conv`
    and torchvision's `/features/features.4/block/block.2/fc1/Conv`. A dotted
    scope replaces the segment it extends, giving `blocks.1.0.conv_dw` and
    `features.4.block.2.fc1`: the names of `model.named_modules()`.
    """
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return None
    segments: list[str] = []
    anchor = -1  # index of the last plain attribute, which a dotted scope extends
    for part in parts[:-1]:
        if "." in part and anchor >= 0 and part.split(".")[0] == segments[anchor].split(".")[0]:
            segments = segments[:anchor] + [part]
        else:
            segments.append(part)
            anchor = len(segments) - 1
    return ".".join(segments)


def in_modules(module: str | None, patterns) -> bool:
    """Whether a module path is one of `patterns` (module paths or globs) or lies inside one.

    Each enclosing path is tried too, so a glob such as `*.se` takes the convs inside every `se`.
    """
    from edgetl.backbones.factory import matches_any

    if not module:
        return False
    return any(matches_any(".".join(module.split(".")[:k]), patterns) for k in range(1, module.count(".") + 2))


def _consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def weighted_layers(graph) -> list[tuple[str, list[str]]]:
    """(module path, node names) of every weighted layer (conv / linear), in graph order.

    The node names are the layer's own node plus the activation it is fused with
    (a Conv's single consumer Clip/Relu/HardSwish...), so that quantizing or
    keeping a layer in float treats them as the runtime does: as one op.
    """
    consumers = _consumers(graph)
    layers = []
    for node in graph.node:
        module = module_of(node.name)
        if node.op_type not in WEIGHTED_OPS or not module:
            continue
        names = [node.name]
        following = consumers.get(node.output[0], [])
        if len(following) == 1 and following[0].op_type in FUSED_ACTIVATIONS:
            names.append(following[0].name)
        layers.append((module, names))
    return layers


def nodes_of_modules(graph, patterns) -> list[str]:
    """Node names that belong to the given torch modules (paths or globs), with their fused activations."""
    if not patterns:
        return []
    chosen = {n.name for n in graph.node if in_modules(module_of(n.name), patterns)}
    for module, names in weighted_layers(graph):
        if names[0] in chosen:
            chosen.update(names)
    return [n.name for n in graph.node if n.name in chosen]


def activations_to_uint8(model) -> int:
    """Move every int8 activation quantizer to uint8 (zero point + 128), in place; returns how many.

    Weight quantizers (whose input is a constant) keep int8: U8S8 is the fast path.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = set(initializers) | {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    consumers = _consumers(graph)
    moved, stale = 0, set()
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[0] in constants:
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None or zero_point.data_type != onnx.TensorProto.INT8:
            continue
        dequantizers = [c for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
        if len(dequantizers) != len(consumers.get(node.output[0], [])):
            continue  # something reads the int8 tensor itself: leave it alone
        shifted = (numpy_helper.to_array(zero_point).astype(np.int16) + 128).astype(np.uint8)
        name = f"{node.output[0]}_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array(shifted, name))
        node.input[2] = name
        for dequantizer in dequantizers:
            while len(dequantizer.input) < 3:
                dequantizer.input.append("")
            dequantizer.input[2] = name
        stale.add(node.output[0])
        moved += 1
    _drop_stale(graph, stale)  # their value_info still says int8
    return moved


def _drop_stale(graph, stale: set[str]) -> None:
    """After a rewrite: drop the value_info of tensors that changed or went, and initializers no node reads."""
    kept = [info for info in graph.value_info if info.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)


def fold_weight_quantizers(model) -> int:
    """Store each quantized weight as the int8 tensor it rounds to, in place; returns how many.

    torchao's converted QAT graph quantizes float weights at run time: a float initializer, then
    QuantizeLinear, then Clip (the symmetric [-127, 127]), then DequantizeLinear. onnxruntime
    folds that on load, but OpenVINO's reader sees no int8 weights and ran every convolution of
    Lite0's QAT IR in bf16 on dequantized weights (1.15x fp32, where post-training int8 is 0.6x),
    and the file kept float weights (3.5x larger). Folded here, with QuantizeLinear's own
    arithmetic (round half to even, saturate) and the Clip's bounds, the graph is the standard
    QDQ one: int8 initializer -> DequantizeLinear, values unchanged.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    folded, dead = 0, []
    for dequantizer in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        clip = producers.get(dequantizer.input[0])
        quantizer = producers.get(clip.input[0]) if clip is not None and clip.op_type == "Clip" else clip
        if quantizer is None or quantizer.op_type != "QuantizeLinear" or quantizer.input[0] not in initializers:
            continue
        if len(quantizer.input) < 3 or quantizer.input[2] not in initializers or quantizer.input[1] not in initializers:
            continue
        chain = [quantizer] + ([clip] if clip is not quantizer else [])
        if any(len(consumers.get(node.output[0], [])) != 1 for node in chain):
            continue  # shared with something else: leave the run-time quantization in place
        zero_point = numpy_helper.to_array(initializers[quantizer.input[2]])
        if zero_point.dtype != np.int8:
            continue
        weights = numpy_helper.to_array(initializers[quantizer.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(initializers[quantizer.input[1]]).astype(np.float32)
        axis = next((a.i for a in quantizer.attribute if a.name == "axis"), 1)
        shape = [1] * weights.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis % weights.ndim] = scale.size
        low, high = -128, 127
        if clip is not quantizer:
            bounds = [numpy_helper.to_array(initializers[name]) for name in clip.input[1:3] if name in initializers]
            if len(bounds) != 2:
                continue
            low, high = max(low, int(bounds[0])), min(high, int(bounds[1]))
        quantized = np.rint(weights / scale.reshape(shape)) + zero_point.astype(np.float32).reshape(shape)
        name = f"{quantizer.input[0]}_int8"
        graph.initializer.append(numpy_helper.from_array(np.clip(quantized, low, high).astype(np.int8), name))
        dequantizer.input[0] = name
        dead += chain
        folded += 1
    for node in dead:
        graph.node.remove(node)
    _drop_stale(graph, {node.output[0] for node in dead})
    return folded


def activation_zero_point_types(model) -> dict[str, int]:
    """How many activation quantizers use each zero-point type ({'int8': n, 'uint8': m})."""
    import onnx

    initializers = {init.name: init for init in model.graph.initializer}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers and len(node.input) > 2:
            zero_point = initializers.get(node.input[2])
            if zero_point is not None:
                kind = onnx.helper.tensor_dtype_to_np_dtype(zero_point.data_type).name
                counts[kind] = counts.get(kind, 0) + 1
    return counts


def float_outputs(model) -> int:
    """Drop the quantize/dequantize pair in front of each graph output, in place; returns how many.

    onnxruntime's quantize_static rounds the classifier's logits to 256 levels like any
    activation. That saves nothing measurable (ten-odd numbers) and turns near-tie images
    into exact ties that argmax breaks by class index: on the Lite0 photo run's validation
    split the first post-training recipe had 6 exact top-2 ties, and the same file with
    float logits agreed with float on 3 more images (96.25% -> 96.625%). The layer before
    still reads int8 inputs and weights; only its output stays float (as QAT's does).
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    dropped = 0
    for output in graph.output:
        dequantizer = producers.get(output.name)
        quantizer = producers.get(dequantizer.input[0]) if dequantizer is not None else None
        if (dequantizer is None or dequantizer.op_type != "DequantizeLinear" or quantizer is None
                or quantizer.op_type != "QuantizeLinear" or len(consumers.get(quantizer.output[0], [])) != 1):
            continue
        source = quantizer.input[0]
        if len(consumers.get(source, [])) != 1 or source not in producers:
            continue  # something else reads the float value too, or it is a graph input: leave it
        producer = producers[source]
        producer.output[list(producer.output).index(source)] = output.name
        graph.node.remove(dequantizer)
        graph.node.remove(quantizer)
        _drop_stale(graph, {source, quantizer.output[0]})
        dropped += 1
    return dropped
