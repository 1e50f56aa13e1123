"""ONNX export: fp32 through torch.onnx, int8 through onnxruntime static quantization.

- fp32: the TorchScript-based `torch.onnx.export` (opset 17, dynamic batch). It
  takes ~1 s where the dynamo exporter takes ~10 s and needs `onnxscript`; opset
  17 is what JetPack 6's TensorRT and every current onnxruntime read. The graph
  is checked with `onnx.checker` and loaded once by onnxruntime.
- fp16: onnxruntime's float16 converter with float32 inputs/outputs kept, so the
  sidecar's preprocessing is unchanged (for GPUs and TensorRT; CPUs gain nothing).
- int8, QDQ form (what TensorRT and the CPU/NPU providers consume), after
  `quant_pre_process` (shape inference, constant folding, BN fusion). Default
  tool: onnxruntime's `quantize_static`, per-channel int8 weights and uint8
  activations (U8S8, onnxruntime's fast path on x86 without VNNI: about 0.8x
  fp32 on a 128 px Lite0 here), MinMax/Percentile/Entropy; in onnxruntime 1.32
  only the Calib{TensorRangeSymmetric,MovingAverage,MovingAverageConstant,
  MaxIntermediateOutputs,Percentile} extra options reach the calibrators.
  `tool: nncf` (NNCF's ONNX backend, fast or full bias correction) has its int8
  activation zero points moved to uint8 (exact), but its graph still ran 3.3x
  slower than fp32 here and lost 5.9 pp on the photo set's validation split
  where onnxruntime lost 0.75: it is kept for explicit use, not searched.
  `float_layers` keeps the given torch modules in float (mixed precision): their
  nodes and the activation fused with each (see `qdq.py`).

Labels and preprocessing are embedded in the model's metadata_props as JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgetl.contract.formats import FORMATS
from edgetl.contract.sidecar import TensorInfo
from edgetl.export.base import ExportedModel, ExportRequest, quiet_converters
from edgetl.export.gate import Attempt, calibration_sizes
from edgetl.export.hard_activations import fold_scales, integer_friendly
from edgetl.export.qdq import FLOAT_LOGITS, BatchReader, activations_to_uint8, float_outputs, nodes_of_modules

FORMAT = FORMATS["onnx"]  # its row of the backend table: model file, layout

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def int8_recipes(calib_size: int, calib_all: int, searched: bool = True) -> list[Attempt]:
    """The gate's calibration search here, default first: onnxruntime MinMax on `calib_size` images and
    (searched) on the whole split, then Percentile 99.999, which clips the rare outliers MinMax keeps."""
    recipes = [Attempt(f"int8 onnxruntime MinMax, {images} images", "int8",
                       {"tool": "onnxruntime", "method": "minmax", "calib_images": images})
               for images in calibration_sizes(calib_size, calib_all, searched)]
    if searched:
        recipes.append(Attempt(f"int8 onnxruntime Percentile 99.999, {calib_size} images", "int8",
                               {"tool": "onnxruntime", "method": "percentile", "percentile": 99.999,
                                "calib_images": calib_size}))
    return recipes


def float_onnx(request: ExportRequest) -> Path:
    """The fp32 ONNX graph, converted once per model and reused by every attempt."""
    import onnx
    import torch

    path = request.workdir / "onnx-fp32.onnx"
    if path.is_file():
        return path
    sample = torch.zeros(request.input_shape)
    tmp = path.with_suffix(".partial")
    with quiet_converters(), torch.no_grad():
        torch.onnx.export(
            request.model, (sample,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
            do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(tmp))
    tmp.rename(path)
    return path


def prepared_for_int8(request: ExportRequest, source: Path) -> Path:
    """The float graph int8 quantizers start from, made once per session.

    Shape inference and graph optimisation (constant-folds padding arithmetic, fuses BN),
    then hard-sigmoid/hard-swish as integer ops (`hard_activations.py` says why).
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = request.workdir / "onnx-fp32-prepared.onnx"
    if not prepared.is_file():
        tmp = prepared.with_suffix(".partial")
        with quiet_converters():
            quant_pre_process(str(source), str(tmp), skip_symbolic_shape=True)
        model = onnx.load(str(tmp))
        if integer_friendly(model):
            onnx.save(model, str(tmp))
        tmp.rename(prepared)
    return prepared


def _quantize_nncf(request: ExportRequest, prepared: Path, target: Path, limit: int | None) -> dict:
    import nncf
    import onnx

    model = onnx.load(str(prepared))
    float_layers = list(request.options.get("float_layers", []))
    excluded = nodes_of_modules(model.graph, float_layers)
    batches = [{INPUT_NAME: b} for b in request.calibration.batches("NCHW", limit=limit)]
    kwargs = {"ignored_scope": nncf.IgnoredScope(names=excluded, validate=False)} if excluded else {}
    fast = request.options.get("bias_correction", "fast") == "fast"
    with quiet_converters():
        quantized = nncf.quantize(model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(batches), fast_bias_correction=fast, **kwargs)
    moved = activations_to_uint8(quantized)  # exact; U8S8 is onnxruntime's fast path on x86
    onnx.save(quantized, str(target))
    return {"tool": f"nncf {nncf.__version__} (ONNX backend)", "format": "QDQ",
            "weights": "int8 symmetric per-channel", "activations": "uint8 per-tensor (int8 zero points moved by 128)",
            "method": f"minmax + {'fast' if fast else 'full'} bias correction", "calibration_images": len(batches),
            "activations_moved_to_uint8": moved, "float_layers": float_layers, "float_nodes": len(excluded),
            **_session_note(excluded)}


def _quantize_onnxruntime(request: ExportRequest, prepared: Path, target: Path, limit: int | None) -> dict:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = request.options.get("method", "minmax")
    float_layers = list(request.options.get("float_layers", []))
    excluded = nodes_of_modules(onnx.load(str(prepared)).graph, float_layers)
    extra = {"CalibMaxIntermediateOutputs": 64}
    if method == "percentile":
        extra["CalibPercentile"] = request.options.get("percentile", 99.99)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    with quiet_converters():
        quantize_static(
            str(prepared), str(target), BatchReader(request.calibration.batches("NCHW", limit=limit), INPUT_NAME),
            quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=calibrate, nodes_to_exclude=excluded, extra_options=extra,
        )
    used = len(request.calibration) if limit is None else min(limit, len(request.calibration))
    return {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": "QDQ",
            "weights": "int8 symmetric per-channel", "activations": "uint8 asymmetric per-tensor",
            "method": method, "calibration_images": used, "float_layers": float_layers,
            "float_nodes": len(excluded), **_session_note(excluded)}


def _session_note(excluded: list[str]) -> dict:
    """What an application's own onnxruntime must be told so the float layers stay float."""
    from edgetl.runtime.onnx import FLOAT_LAYER_OPTIMIZERS

    return {"onnxruntime_disabled_optimizers": FLOAT_LAYER_OPTIMIZERS} if excluded else {}


def _quantize_int8(request: ExportRequest, source: Path, target: Path) -> dict:
    """QDQ int8 through NNCF (default: bias correction keeps depthwise layers honest) or onnxruntime."""
    if request.calibration is None:
        from edgetl.errors import BadInputError

        raise BadInputError("int8 ONNX export needs calibration images")
    import onnx

    prepared = prepared_for_int8(request, source)
    limit = request.options.get("calib_images")
    if request.options.get("tool", "onnxruntime") == "nncf":
        info = _quantize_nncf(request, prepared, target, limit)
    else:
        info = _quantize_onnxruntime(request, prepared, target, limit)
    model = onnx.load(str(target))
    folded = fold_scales(model)  # hard-sigmoid's constant factor moves into a dequantizer's scale
    if float_outputs(model) or folded:  # the logits stay float (qdq.float_outputs says why)
        onnx.save(model, str(target))
    return {**info, "output": FLOAT_LOGITS}


def _embed_metadata(path: Path, request: ExportRequest) -> None:
    import onnx

    model = onnx.load(str(path))
    entries = {"edgetl.labels": json.dumps(request.labels), "edgetl.preprocess": json.dumps(
        request.preprocess.to_dict()), "edgetl.model": request.model_name}
    if request.options.get("metadata_json"):
        entries["edgetl.sidecar"] = request.options["metadata_json"]
    del model.metadata_props[:]
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export(request: ExportRequest) -> ExportedModel:
    import onnxruntime

    source = float_onnx(request)
    target = request.out_dir / FORMAT.model_file
    quantization = None
    if request.precision == "fp32":
        shutil.copyfile(source, target)
    elif request.precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with quiet_converters():
            onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))
        quantization = {"tool": "onnxruntime float16 converter", "weights": "float16", "activations": "float16",
                        "io": "float32"}
    else:
        quantization = _quantize_int8(request, source, target)
    _embed_metadata(target, request)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    height, width = request.preprocess.size
    return ExportedModel(
        model_file=FORMAT.model_file, layout=FORMAT.layout,
        input=TensorInfo(session.get_inputs()[0].name, ["batch", 3, height, width], "float32"),
        output=TensorInfo(session.get_outputs()[0].name, ["batch", len(request.labels)], "float32"),
        quantization=quantization,
    )


def qat_qdq_onnx(request: ExportRequest, student) -> Path:
    """The QAT graph as QDQ ONNX (uint8 activations, int8 weights), converted once per export session."""
    from edgetl.export.qat.convert import cache_path, converted, float_layers

    path = cache_path(request, "onnx-qat-int8", ".onnx")
    if path.is_file():
        return path
    from edgetl.errors import require

    require("onnxscript", "export", "ONNX export of a QAT model (the dynamo exporter)")
    import onnx
    import torch

    from edgetl.export.qdq import fold_weight_quantizers

    model = converted(student, float_layers(request))
    height, width = request.preprocess.size
    batch = torch.export.Dim("batch", min=1, max=4096)
    tmp = path.with_suffix(".partial")
    with quiet_converters(), torch.no_grad():
        program = torch.onnx.export(model, (torch.zeros(2, 3, height, width),), input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                    opset_version=max(OPSET, 18), dynamo=True, optimize=True)
        program.save(str(tmp))
    graph = onnx.load(str(tmp))
    moved = activations_to_uint8(graph)
    folded = fold_weight_quantizers(graph)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(tmp))
    tmp.rename(path)
    path.with_suffix(".json").write_text(json.dumps({"uint8_activations": moved, "int8_weights": folded}))
    return path


def convert_qat(request: ExportRequest, student, summary: dict) -> ExportedModel:
    """The int8 QDQ artifact of a trained QAT graph, at the ranges training learned."""
    import importlib.metadata

    import onnx
    import onnxruntime

    from edgetl.export.qat.convert import float_layers, record
    from edgetl.export.qdq import activation_zero_point_types

    target = request.out_dir / FORMAT.model_file
    shutil.copyfile(qat_qdq_onnx(request, student), target)
    _embed_metadata(target, request)
    zero_points = activation_zero_point_types(onnx.load(str(target)))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    height, width = request.preprocess.size
    tool = f"torchao PT2E QAT + torch.onnx (dynamo) {importlib.metadata.version('onnxscript')}"
    return ExportedModel(
        model_file=FORMAT.model_file, layout=FORMAT.layout,
        input=TensorInfo(session.get_inputs()[0].name, ["batch", 3, height, width], "float32"),
        output=TensorInfo(session.get_outputs()[0].name, ["batch", len(request.labels)], "float32"),
        quantization=record(summary, tool, {"format": "QDQ", "activation_zero_points": zero_points},
                            float_layers(request)),
    )
