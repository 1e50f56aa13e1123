"""TFLite export: fp32 through litert-torch, int8 and fp16 through ai-edge-quantizer.

- fp32: `litert_torch.convert` on `litert_torch.to_channel_last_io(model, args=[0])`,
  the converter's own NCHW -> NHWC input wrapper. Its permute folds into the NHWC
  graph TFLite runs anyway (no TRANSPOSE op is left), so the model takes
  (1, H, W, 3) float32, the layout TFLite users and camera pipelines feed, and
  matches torch to ~1e-5. The conversion (~25-30 s) is done once per model and
  cached as `workdir/tflite-fp32.tflite`; int8 and fp16 attempts start from it.
- int8: ai-edge-quantizer on that fp32 file, not PT2E quantization before the
  conversion (slower, ~45-78 s, and less faithful here). Recipe `static_wi8_ai8`
  (int8 symmetric per-channel weights, int8 asymmetric per-tensor activations,
  int32 bias) or `static_wi8_ai16` (16-bit symmetric activations, int64 bias,
  better fidelity; runs on CPU kernels, rarely on NPUs), calibrated on the shared
  calibration set in NHWC. The result is checked, not assumed: tensor dtypes and
  ops still computing in float are counted and reported in `quantization`.
- Quantized I/O (`io_dtype`): ai-edge-quantizer 0.10 quantizes the graph's input
  and output like any activation (its virtual INPUT/OUTPUT ops), so left alone
  it yields int8 I/O with no QUANTIZE/DEQUANTIZE op at all; "float32" (the
  default) marks INPUT/OUTPUT `no_quantize`, which puts one QUANTIZE after the
  input and one DEQUANTIZE before the output; "uint8" gives INPUT/OUTPUT a UINT8
  activation config (the policy's `static_wi8_au8`), adding a uint8<->int8
  requantize at each edge (Edge TPU-style I/O). Integer I/O needs `static_wi8_ai8`.
- `float_layers` (mixed precision): torch module paths or globs, as for the ONNX
  and OpenVINO exporters (`conv_stem`, `blocks.6`, `*.se`), matched against the
  module scopes litert-torch writes into tensor names; an entry `re:<regex>` is a
  raw regex on the TFLite op scope (its output tensor names). Fused tensors carry
  several scopes, so a module also takes ops fused with it (`*.fc2` takes the SE
  hard-sigmoid and scale MUL of MobileNetV3). The matched ops get
  exact-scope `no_quantize` recipe entries (per op type, so the graph's OUTPUT
  keeps `io_dtype`); the quantizer adds the (de)quantize ops around them. Scopes
  are resolved here because the quantizer matches output tensor names only and
  the classifier's output tensor is renamed to the signature output.
- fp16: ai-edge-quantizer's `float_casting` algorithm as weight-only: float16
  weights for CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED with explicit
  DEQUANTIZE ops (folded at load time; compute and I/O stay float32).

Labels and preprocessing: the flatbuffer's `metadata` list gets an entry "edgetl"
whose buffer holds UTF-8 JSON (`options["metadata_json"]`, else labels +
preprocessing + model name), written with `ai_edge_litert.tools.flatbuffer_utils`
(object API + schema shipped with ai-edge-litert; no tflite-support needed).
Readers: `flatbuffer_utils.read_model_from_bytearray`, then `model.metadata`. Beside it,
the standard TFLite Model Metadata ("TFLITE_METADATA" + a zip-appended labels.txt) that
MediaPipe Tasks and the TFLite Task Library read: see `tflite_metadata.py`.
The converters' chatter (rich progress, tqdm, absl C++ logs) is silenced by
pointing fds 1/2 at a temp file for the call (process-wide), replayed on failure.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from collections import Counter
from pathlib import Path

from edgetl.contract.formats import FORMATS, PRECISIONS
from edgetl.contract.sidecar import TensorInfo
from edgetl.errors import BadInputError, require
from edgetl.export import tflite_metadata
from edgetl.export.base import ExportedModel, ExportRequest, quiet_native
from edgetl.export.gate import Attempt, calibration_sizes

FORMAT = FORMATS["tflite"]  # its row of the backend table: model file, layout

FP32_CACHE = "tflite-fp32.tflite"
RECIPES = {"static_wi8_ai8": 8, "static_wi8_ai16": 16}
IO_DTYPES = ("float32", "int8", "uint8")
METADATA_NAME = "edgetl"
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
_EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")


def int8_recipes(calib_size: int, calib_all: int, searched: bool = True) -> list[Attempt]:
    """The gate's calibration search here, default first: ai-edge-quantizer a8w8 on `calib_size` images
    and (searched) on the whole split."""
    return [Attempt(f"int8 ai-edge-quantizer a8w8, {images} images", "int8",
                    {"recipe": "static_wi8_ai8", "calib_images": images})
            for images in calibration_sizes(calib_size, calib_all, searched)]


def _tool() -> str:
    return f"ai-edge-quantizer {importlib.metadata.version('ai-edge-quantizer')}"


def float_tflite(request: ExportRequest) -> Path:
    """The fp32 NHWC .tflite, converted once per model (the workdir is per model) and reused."""
    path = request.workdir / FP32_CACHE
    if path.is_file():
        return path
    import torch

    height, width = request.preprocess.size
    tmp = path.with_suffix(".partial")
    with quiet_native(), torch.no_grad():
        litert_torch = require("litert_torch", "export", "TFLite conversion")
        wrapped = litert_torch.to_channel_last_io(request.model, args=[0]).eval()
        litert_torch.convert(wrapped, (torch.zeros(1, height, width, 3),)).export(str(tmp))
    tmp.rename(path)
    return path


def _module_paths(tensor_name: str) -> list[str]:
    """litert-torch scopes ('pkg.Class_attr/...') in a tensor name -> torch module paths ('blocks.6.0')."""
    paths = []
    for part in tensor_name.split(";"):
        comps = part.split("/")
        start = next((i + 1 for i, c in enumerate(comps) if c.endswith("_wrapped")), 1)
        attrs = [c.rsplit(".", 1)[-1].partition("_")[2] for c in comps[start:]]
        if attrs and all(attrs):
            paths.append(".".join(attrs))
    return paths


def _float_entries(model_bytes, patterns: list[str]) -> list[tuple[str, str]]:
    """(exact-scope regex, op name) for every op the float_layers patterns select."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    from edgetl.export.qdq import in_modules

    try:
        regexes = [re.compile(p[3:]) for p in patterns if p.startswith("re:")]
    except re.error as exc:
        raise BadInputError(f"float_layers: bad regex ({exc})") from exc
    modules = [p for p in patterns if not p.startswith("re:")]
    model = tfu.read_model(model_bytes)
    entries = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            name = tfu.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
            if name is None:
                continue  # ops the quantizer does not know stay float anyway
            scope = tfu.get_op_scope(op, subgraph.tensors)
            own = [t for t in op.outputs if t >= 0] + [  # outputs and constants, not the inputs from upstream
                t for t in op.inputs if t >= 0 and _has_data(model.buffers[subgraph.tensors[t].buffer])]
            names = [tfu.get_tensor_name(subgraph.tensors[t]) for t in own]
            paths = [p for n in names for p in _module_paths(n)]
            if any(r.search(scope) for r in regexes) or any(in_modules(p, modules) for p in paths):
                entries.append(("^" + re.escape(scope) + "$", name))
    return entries


def _has_data(buffer) -> bool:
    return (buffer.data is not None and len(buffer.data) > 0) or bool(buffer.size)


def _recipe(bits: int, io_dtype: str, float_entries, integer_hard_swish: bool = False):
    """The quantizer's recipe; HARD_SWISH stays float unless `integer_hard_swish`.

    ai-edge-litert 2.3.0's XNNPACK delegate takes HARD_SWISH in float only: an int8 one runs on
    the builtin kernels and splits the delegated graph at each (MobileNetV3-Small: 19, so 20
    partitions and int8 3.6x slower than fp32). Float between QUANTIZE and DEQUANTIZE keeps
    the whole graph in one partition. Integer-only accelerators need the int8 op.
    """
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    ops, none = qtyping.TFLOperationName, algorithm_manager.AlgorithmName.NO_QUANTIZE
    manager = recipe_manager.RecipeManager()
    manager.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=bits, weight_num_bits=8)
    for edge in (ops.INPUT, ops.OUTPUT):
        if io_dtype == "float32":
            manager.add_quantization_config(".*", edge, algorithm_key=none)
        elif io_dtype == "uint8":
            manager.add_quantization_config(".*", edge, qtyping.OpQuantizationConfig(
                activation_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=8, symmetric=False, dtype=qtyping.TensorDataType.UINT),
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=8, symmetric=True),
                compute_precision=qtyping.ComputePrecision.INTEGER))
    if not integer_hard_swish:
        manager.add_quantization_config(".*", ops.HARD_SWISH, algorithm_key=none)
    for regex, op_name in float_entries:
        manager.add_quantization_config(regex, op_name, algorithm_key=none)
    return manager.get_quantization_recipe()


def _quantize_int8(request: ExportRequest, source: Path) -> tuple[bytes, dict]:
    recipe_name = request.options.get("recipe", "static_wi8_ai8")
    io_dtype = request.options.get("io_dtype", "float32")
    if recipe_name not in RECIPES:
        raise BadInputError(f"unknown TFLite int8 recipe {recipe_name!r}", f"choose from {', '.join(RECIPES)}")
    if io_dtype != "float32" and RECIPES[recipe_name] != 8:
        raise BadInputError(f"io_dtype {io_dtype} needs 8-bit activations, not recipe {recipe_name}",
                            "use recipe static_wi8_ai8, or float32 I/O")
    if request.calibration is None:
        raise BadInputError("int8 TFLite export needs calibration images")
    from ai_edge_litert.interpreter import Interpreter

    quantizer = require("ai_edge_quantizer.quantizer", "export", "TFLite int8 quantization")
    with quiet_native():
        signature, inputs = next(iter(Interpreter(model_path=str(source)).get_signature_list().items()))
    input_name = inputs["inputs"][0]
    data = [{input_name: batch} for batch in request.calibration.batches(
        layout="NHWC", limit=request.options.get("calib_images"))]
    float_layers = list(request.options.get("float_layers") or [])
    model_bytes = source.read_bytes()
    entries = _float_entries(model_bytes, float_layers) if float_layers else []
    with quiet_native():
        integer_hard_swish = request.options.get("hard_swish", "float") == "int8"
        quant = quantizer.Quantizer(model_bytes, _recipe(RECIPES[recipe_name], io_dtype, entries, integer_hard_swish))
        calibration = quant.calibrate({signature: data}, num_threads=os.cpu_count() or 1)
        result = quant.quantize(calibration, enable_progress_report=False)
    info = {"tool": _tool(), "recipe": recipe_name,
            "weights": "int8 per-channel", "activations": f"int{RECIPES[recipe_name]}", "io": io_dtype,
            "calibration_images": len(data), "float_layers": float_layers, "float_layer_ops": len(entries),
            "hard_swish": "int8" if integer_hard_swish else "float (between QUANTIZE/DEQUANTIZE, delegated)"}
    return bytes(result.quantized_model), info


def _fp16(source: Path) -> tuple[bytes, dict]:
    require("ai_edge_quantizer", "export", "TFLite fp16 conversion")
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    with quiet_native():
        quant = quantizer.Quantizer(source.read_bytes(), manager.get_quantization_recipe())
        result = quant.quantize(enable_progress_report=False)
    return bytes(result.quantized_model), {
        "tool": _tool(), "recipe": "float_casting (weight-only fp16)",
        "weights": "float16 (conv/fc, dequantized at load)", "activations": "float32", "io": "float32"}


def _census(model_bytes: bytes) -> dict:
    """What the written model really holds: tensor dtypes, stored conv/fc weight dtypes, ops computing in float."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(model_bytes))
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    dtypes, float_ops, weights = Counter(), Counter(), Counter()
    for subgraph in model.subgraphs:
        dtypes.update(types.get(t.type, str(t.type)) for t in subgraph.tensors)
        named = [(fb.opcode_to_name(model, op.opcodeIndex), op) for op in subgraph.operators]
        dequantized = {op.outputs[0]: op.inputs[0] for name, op in named if name == "DEQUANTIZE"}
        for name, op in named:
            outs = [subgraph.tensors[t].type for t in op.outputs if t >= 0]
            if name not in _EDGE_OPS and schema.TensorType.FLOAT32 in outs:
                float_ops[name] += 1
            if name in _WEIGHT_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
                stored = dequantized.get(op.inputs[1], op.inputs[1])  # fp16 weights sit behind a DEQUANTIZE
                weights[types.get(subgraph.tensors[stored].type)] += 1
    return {"float_tensors": dtypes["float32"], "int8_tensors": dtypes["int8"], "int16_tensors": dtypes["int16"],
            "uint8_tensors": dtypes["uint8"], "float16_tensors": dtypes["float16"],
            "weight_dtypes": dict(weights), "float_ops": dict(float_ops)}


def _embed_metadata(model_bytes: bytes, text: str) -> bytes:
    """Append metadata "edgetl" -> a buffer of UTF-8 JSON (replacing an older entry)."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb

    from edgetl.export.tflite_ops import read_model

    model = read_model(model_bytes)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(schema.MetadataT(name=METADATA_NAME, buffer=len(model.buffers) - 1))
    return bytes(fb.convert_object_to_bytearray(model))


def _tensor_info(detail: dict) -> TensorInfo:
    import numpy as np

    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail["quantization"]
    quantized = dtype in ("int8", "uint8", "int16")
    return TensorInfo(detail["name"], [int(v) for v in detail["shape"]], dtype,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


def export(request: ExportRequest) -> ExportedModel:
    io_dtype = request.options.get("io_dtype", "float32")
    if io_dtype not in IO_DTYPES:
        raise BadInputError(f"unknown io_dtype {io_dtype!r}", f"choose from {', '.join(IO_DTYPES)}")
    if io_dtype != "float32" and request.precision != "int8":
        raise BadInputError(f"io_dtype {io_dtype} needs an int8 model, not {request.precision}",
                            "export with --precision int8, or keep float32 I/O")
    if request.precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {request.precision!r} for TFLite", "choose fp32, fp16 or int8")
    source = float_tflite(request)
    quantization, notes = None, ["NHWC input via litert_torch.to_channel_last_io (transpose folded)"]
    if request.precision == "fp32":
        model_bytes = source.read_bytes()
    elif request.precision == "fp16":
        model_bytes, quantization = _fp16(source)
    else:
        model_bytes, quantization = _quantize_int8(request, source)
    return finish(request, model_bytes, quantization, notes)


def finish(request: ExportRequest, model_bytes: bytes, quantization: dict | None, notes: list[str]) -> ExportedModel:
    """Count what the model holds, embed both metadata forms, write it and read its tensors back."""
    if quantization is not None:
        census = _census(model_bytes)
        quantization.update(census)
        if request.precision == "int8":
            quantization["full_integer"] = not census["float_ops"] and set(census["weight_dtypes"]) == {"int8"}
            if not quantization["full_integer"]:
                notes.append(f"not full-integer: ops computing in float {census['float_ops']}")
    metadata = request.options.get("metadata_json") or json.dumps(
        {"labels": request.labels, "preprocess": request.preprocess.to_dict(), "model": request.model_name})
    target = request.out_dir / FORMAT.model_file
    target.write_bytes(tflite_metadata.add_classifier_metadata(  # standard metadata last: it appends a zip
        _embed_metadata(model_bytes, metadata), request.labels, request.preprocess, request.model_name,
        request.precision))
    notes.append(f"labels/preprocessing JSON in flatbuffer metadata '{METADATA_NAME}'")
    notes.append(f"TFLite Model Metadata '{tflite_metadata.METADATA_NAME}' (NormalizationOptions, "
                 f"{tflite_metadata.LABELS_FILE}) for MediaPipe Tasks / the TFLite Task Library")
    with quiet_native():
        interpreter = require("ai_edge_litert.interpreter", "export", "checking TFLite models").Interpreter(
            model_path=str(target))
        interpreter.allocate_tensors()
    exported = ExportedModel(model_file=FORMAT.model_file, layout=FORMAT.layout,
                             input=_tensor_info(interpreter.get_input_details()[0]),
                             output=_tensor_info(interpreter.get_output_details()[0]),
                             quantization=quantization, notes=notes)
    notes.extend(tflite_metadata.compatibility_notes(request.preprocess, exported.input.dtype,
                                                     exported.output.dtype))
    return exported


def convert_qat(request: ExportRequest, student, summary: dict) -> ExportedModel:
    """The int8 TFLite model of a trained QAT graph: litert-torch lowers its quantize/dequantize pairs."""
    import torch

    from edgetl.export.qat.convert import cache_path, converted, float_layers, nhwc_constant_pads, record
    from edgetl.export.qat.graph import quantizer

    litert_torch = require("litert_torch", "export", "TFLite conversion")
    from litert_torch.quantize.quant_config import QuantConfig

    height, width = request.preprocess.size
    path = cache_path(request, "tflite-qat-int8", ".tflite")
    if not path.is_file():
        tmp = path.with_suffix(".partial")
        with quiet_native(), torch.no_grad(), nhwc_constant_pads():
            wrapped = litert_torch.to_channel_last_io(converted(student, float_layers(request)),
                                                      args=[0])  # no .eval(): an exported graph
            litert_torch.convert(wrapped, (torch.zeros(1, height, width, 3),),
                                 quant_config=QuantConfig(pt2e_quantizer=quantizer())).export(str(tmp))
        tmp.rename(path)
    tool = f"torchao PT2E QAT + litert-torch {importlib.metadata.version('litert-torch')}"
    quantization = record(summary, tool, None, float_layers(request))
    model_bytes, notes = path.read_bytes(), ["NHWC input via litert_torch.to_channel_last_io",
                                             "int8 kernels lowered by litert-torch from the QAT graph's "
                                             "quantize/dequantize pairs"]
    if request.options.get("hard_swish", "float") != "int8":  # as post-training int8 has it (tflite_ops.py)
        from edgetl.export.tflite_ops import float_hard_swish

        model_bytes, count = float_hard_swish(model_bytes)
        if count:
            quantization["hard_swish"] = "float (between QUANTIZE/DEQUANTIZE, delegated)"
            notes.append(f"{count} int8 HARD_SWISH op(s) rewritten to compute in float: XNNPACK delegates no "
                         "int8 HARD_SWISH")
    return finish(request, model_bytes, quantization, notes)
