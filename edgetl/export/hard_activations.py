"""Hard-sigmoid and hard-swish as integer ops in ONNX int8 graphs (MobileNetV3's activations).

onnxruntime has no integer kernel for HardSigmoid (nor HardSwish, which
`quant_pre_process` inlines into HardSigmoid times its input). A quantized
graph therefore ran every one of them as DequantizeLinear, float HardSigmoid,
QuantizeLinear: on MobileNetV3 those three carried about a third of the int8
graph's time and made int8 slower than fp32 (docs/quantization.md has the profile).

`integer_friendly` rewrites each HardSigmoid before quantization with ops that
onnxruntime does run in integer (QLinearAdd, a Clip absorbed into the range of
the quantizer after it, QLinearMul):

    hard_sigmoid(x) = clip(alpha * x + beta, 0, 1) = alpha * clip(x + beta / alpha, 0, 1 / alpha)

`fold_scales` then removes the remaining multiplication by the positive
constant alpha after quantization: it only rescales a quantized tensor, so the
dequantizer after it reads the integers before it with scale * alpha. That is
exact and saves one requantization. The fp32 ONNX artifact keeps HardSwish,
which onnxruntime fuses into the convolution in float.
"""

from __future__ import annotations

import numpy as np

SCALE_SUFFIX = "_edgetl_scale"  # marks the multiplications fold_scales may fold


def _consumers(nodes) -> dict[str, list]:
    found: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _replace_nodes(graph, nodes: list) -> None:
    """Set the graph's node list (copies first: the old list's messages go away with it)."""
    from onnx import NodeProto

    copies = []
    for node in nodes:
        copies.append(NodeProto())
        copies[-1].CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _scope_name(node, consumers) -> str:
    """A node name in the torch module's scope: inlined HardSwish nodes come unnamed, their outputs are not."""
    readers = consumers.get(node.output[0], [])
    if len(readers) == 1 and readers[0].op_type == "Mul" and node.input[0] in readers[0].input:
        return readers[0].output[0].removesuffix("_output_0")  # .../features.0.2/HardSwish
    return node.name or node.output[0].removesuffix("_output_0")


def _shift_bias(graph, conv, consumers, shift: float, output: str) -> bool:
    """Add `shift` to the bias of a Conv read only by the hard-sigmoid (squeeze-excite's fc2): no Add op.

    Exact in float; in int8 the bias is int32 at the conv's accumulator scale, so the shift
    costs no precision. The conv then writes `output`, the tensor the Clip reads.
    """
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    if (conv is None or conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[2] not in initializers
            or len(consumers.get(conv.output[0], [])) != 1 or conv.output[0] in {o.name for o in graph.output}):
        return False
    bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float32) + np.float32(shift)
    graph.initializer.append(numpy_helper.from_array(bias, f"{output}_bias"))
    conv.input[2] = f"{output}_bias"
    conv.output[0] = output
    return True


def integer_friendly(model) -> int:
    """Replace every HardSigmoid (alpha > 0) by Add, Clip, Mul, in place; returns how many."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers = _consumers(graph.node)
    producers = {out: node for node in graph.node for out in node.output}
    rewritten, nodes = 0, []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        if node.op_type != "HardSigmoid" or alpha <= 0:
            nodes.append(node)
            continue
        name = _scope_name(node, consumers) + f"_hsig{rewritten}"
        consts = {"shift": beta / alpha, "low": 0.0, "high": 1.0 / alpha, "alpha": alpha}
        for key, value in consts.items():
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}_{key}"))
        shifted, clipped = f"{name}_shifted", f"{name}_clipped"
        if not _shift_bias(graph, producers.get(node.input[0]), consumers, beta / alpha, shifted):
            nodes.append(helper.make_node("Add", [node.input[0], f"{name}_shift"], [shifted], name=f"{name}_add"))
        nodes += [helper.make_node("Clip", [shifted, f"{name}_low", f"{name}_high"], [clipped], name=f"{name}_clip"),
                  helper.make_node("Mul", [clipped, f"{name}_alpha"], [node.output[0]], name=name + SCALE_SUFFIX)]
        rewritten += 1
    _replace_nodes(graph, nodes)
    _drop_unused_initializers(graph)
    return rewritten


def _constant(initializers: dict, producers: dict, name: str) -> float | None:
    """The value of a scalar constant input, read through the DequantizeLinear of a quantized constant."""
    from onnx import numpy_helper

    if name in initializers:
        value = numpy_helper.to_array(initializers[name])
        return float(value) if value.size == 1 else None
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear" or not all(i in initializers for i in node.input):
        return None
    q, scale, *zero = (numpy_helper.to_array(initializers[i]).astype(np.float64) for i in node.input)
    value = (q - (zero[0] if zero else 0)) * scale
    return float(value) if value.size == 1 else None


def fold_scales(model) -> int:
    """Fold each marked `DQ -> Mul(alpha) -> Q -> DQ` into the last DQ's scale, in place; returns how many."""
    from onnx import numpy_helper

    graph = model.graph
    nodes = list(graph.node)  # one set of message objects, so identities hold
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: node for node in nodes for out in node.output}
    consumers = _consumers(nodes)
    removed, folded = set(), 0
    for mul in [n for n in nodes if n.op_type == "Mul" and n.name.endswith(SCALE_SUFFIX)]:
        source = next((producers.get(i) for i in mul.input if producers.get(i) is not None
                       and producers[i].op_type == "DequantizeLinear" and producers[i].input[0] not in initializers), None)
        other = [i for i in mul.input if source is None or i != source.output[0]]
        alpha = _constant(initializers, producers, other[0]) if len(other) == 1 else None
        after = consumers.get(mul.output[0], [])
        if source is None or alpha is None or alpha <= 0 or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        quantizer = after[0]
        readers = consumers.get(quantizer.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" for r in readers):
            continue
        scale = numpy_helper.to_array(initializers[source.input[1]]).astype(np.float64) * alpha
        scale_name = f"{mul.name}_folded_scale"
        graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), scale_name))
        for reader in readers:
            del reader.input[:]
            reader.input.extend([source.input[0], scale_name, *source.input[2:3]])
        removed.update({id(mul), id(quantizer), *(id(producers[i]) for i in other if i in producers)})
        if len(consumers.get(source.output[0], [])) == 1:
            removed.add(id(source))
        folded += 1
    _replace_nodes(graph, [n for n in nodes if id(n) not in removed])
    _drop_unused_initializers(graph)
    return folded


def _drop_unused_initializers(graph) -> None:
    """Constants no node reads any more (a replaced bias, a shift that went into one): onnxruntime warns of each."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
