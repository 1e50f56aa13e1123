"""A TFLite graph rewrite: each int8 HARD_SWISH as DEQUANTIZE -> float HARD_SWISH -> QUANTIZE.

XNNPACK in ai-edge-litert 2.3.0 delegates HARD_SWISH in float only; an int8 one stays
on the builtin kernels and cuts the delegated graph (MobileNetV3-Small: 20 partitions
instead of 1, int8 several times slower than fp32; docs/quantization.md). Post-training
int8 avoids it through ai-edge-quantizer's recipe. A file made elsewhere (litert-torch's
lowering of a quantization-aware-trained graph) gets the same graph form from this
rewrite: the quantized tensors and their scales are unchanged, only the activation
itself computes in float, exactly as the post-training recipe has it.
"""

from __future__ import annotations


def read_model(model_bytes: bytes):
    """The flatbuffer as ai_edge_litert's object API model, its buffers as numpy arrays (offset-resolved
    slices would be packed back byte by byte)."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(model_bytes))
    for buffer in model.buffers:
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(bytes(buffer.data), dtype=np.uint8)
    return model


def _opcode(model, schema, builtin: int, version: int) -> int:
    """The index of `builtin` in the model's operator codes (added when missing)."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_tensor(schema, like, name: str, empty_buffer: int):
    tensor = schema.TensorT()
    tensor.shape, tensor.shapeSignature = like.shape, like.shapeSignature
    tensor.type, tensor.buffer, tensor.name, tensor.hasRank = schema.TensorType.FLOAT32, empty_buffer, name, like.hasRank
    return tensor


def float_hard_swish(model_bytes: bytes) -> tuple[bytes, int]:
    """(the model with each int8 HARD_SWISH computing in float between DEQUANTIZE/QUANTIZE, how many)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = read_model(model_bytes)
    ops = schema.BuiltinOperator
    hard_swish = [i for i, c in enumerate(model.operatorCodes)
                  if max(c.builtinCode, c.deprecatedBuiltinCode) == ops.HARD_SWISH]
    if not hard_swish:
        return model_bytes, 0
    dequantize, quantize = _opcode(model, schema, ops.DEQUANTIZE, 2), _opcode(model, schema, ops.QUANTIZE, 2)
    model.buffers.append(schema.BufferT())  # the float tensors' (empty) buffer
    empty = len(model.buffers) - 1
    rewritten = 0
    for subgraph in model.subgraphs:
        operators = []
        for op in subgraph.operators:
            source, target = (subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]) \
                if op.opcodeIndex in hard_swish else (None, None)
            if source is None or source.type != schema.TensorType.INT8:
                operators.append(op)
                continue
            first = len(subgraph.tensors)
            subgraph.tensors += [_float_tensor(schema, source, f"{_name(source)}/dequantized", empty),
                                 _float_tensor(schema, target, f"{_name(target)}/float", empty)]
            before, after = schema.OperatorT(), schema.OperatorT()
            before.opcodeIndex, before.inputs, before.outputs = dequantize, [op.inputs[0]], [first]
            after.opcodeIndex, after.inputs, after.outputs = quantize, [first + 1], [op.outputs[0]]
            op.inputs, op.outputs = [first], [first + 1]
            operators += [before, op, after]
            rewritten += 1
        subgraph.operators = operators
    return bytes(fb.convert_object_to_bytearray(model)), rewritten


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
