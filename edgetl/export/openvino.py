"""OpenVINO IR export: converted from the ONNX graph, int8 through NNCF.

- fp32 / fp16: `openvino.convert_model` on the fp32 ONNX (about 1 s, and the IR
  then has exactly the graph the ONNX artifact has), saved with
  `compress_to_fp16` off for fp32 (OpenVINO's default would halve the weights).
- int8: `nncf.quantize` with an `nncf.Dataset` over the shared calibration set
  (NCHW float), the mixed preset (symmetric weights, asymmetric activations) and
  `ignored_scope` for `float_layers`. With `accuracy_control`, NNCF's
  `quantize_with_accuracy_control` reverts the most harmful layers to float
  until the validation drop is within `max_drop` (bounded iterations: each costs
  about a minute at 224 px on 2 cores).

Labels and preprocessing go into the IR's rt_info (`model_info`, and `edgetl`).
"""

from __future__ import annotations

import json

from edgetl.contract.formats import FORMATS
from edgetl.contract.sidecar import TensorInfo
from edgetl.export.base import ExportedModel, ExportRequest, quiet_converters
from edgetl.export.gate import Attempt, calibration_sizes
from edgetl.export.onnx import float_onnx
from edgetl.export.qdq import in_modules, module_of

FORMAT = FORMATS["openvino"]  # its row of the backend table: model file, layout


def int8_recipes(calib_size: int, calib_all: int, searched: bool = True) -> list[Attempt]:
    """The gate's calibration search here, default first: NNCF with fast bias correction on `calib_size`
    images and (searched) on the whole split, then full bias correction."""
    recipes = [Attempt(f"int8 NNCF, fast bias correction, {images} images", "int8",
                       {"calib_images": images, "bias_correction": "fast"})
               for images in calibration_sizes(calib_size, calib_all, searched)]
    if searched:
        recipes.append(Attempt(f"int8 NNCF, full bias correction, {calib_size} images", "int8",
                               {"calib_images": calib_size, "bias_correction": "full"}))
    return recipes


def _ignored_names(model, patterns) -> list[str]:
    """Friendly names (the ONNX node names, `/blocks/blocks.1/.../conv_dw/Conv`) of the given torch modules."""
    return [op.get_friendly_name() for op in model.get_ops()
            if in_modules(module_of(op.get_friendly_name()), patterns)]


def _quantize(request: ExportRequest, model):
    import nncf

    calibration = request.calibration
    limit = request.options.get("calib_images") or len(calibration)
    dataset = nncf.Dataset(list(calibration.batches("NCHW", limit=limit)))
    float_layers = list(request.options.get("float_layers", []))
    ignored = _ignored_names(model, float_layers) if float_layers else []
    scope = nncf.IgnoredScope(names=ignored, validate=False) if ignored else None
    fast = request.options.get("bias_correction", "fast") == "fast"
    info = {"tool": f"nncf {nncf.__version__}", "weights": "int8 symmetric per-channel",
            "activations": "int8/uint8 per-tensor (mixed preset)", "calibration_images": min(limit, len(calibration)),
            "float_layers": float_layers, "float_nodes": len(ignored),
            "method": f"nncf.quantize, {'fast' if fast else 'full'} bias correction"}
    kwargs = dict(preset=nncf.QuantizationPreset.MIXED, subset_size=min(limit, len(calibration)),
                  fast_bias_correction=fast)
    if scope is not None:
        kwargs["ignored_scope"] = scope
    if not request.options.get("accuracy_control"):
        with quiet_converters():
            return nncf.quantize(model, dataset, **kwargs), info
    validation = request.validation
    items = [(batch, int(label)) for batch, label in zip(validation.batches("NCHW"), validation.labels)]

    def accuracy(compiled, data) -> float:
        output = compiled.output(0)
        hits = [int(compiled(x)[output].argmax()) == y for x, y in data]
        return sum(hits) / max(1, len(hits))

    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    with quiet_converters():
        quantized = nncf.quantize_with_accuracy_control(
            model, dataset, nncf.Dataset(items), validation_fn=accuracy,
            max_drop=request.options.get("max_drop", 0.01), drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=request.options.get("max_iterations", 3)),
            **kwargs,
        )
    info["method"] = "nncf.quantize_with_accuracy_control"
    return quantized, info


def export(request: ExportRequest) -> ExportedModel:
    import openvino as ov

    model = ov.convert_model(str(float_onnx(request)))
    quantization = None
    if request.precision == "int8":
        model, quantization = _quantize(request, model)
    elif request.precision == "fp16":
        quantization = {"tool": f"openvino {ov.__version__}", "weights": "float16 (compressed)",
                        "activations": "device precision", "io": "float32"}
    return _save(model, request, quantization, compress_to_fp16=request.precision == "fp16")


def _save(model, request: ExportRequest, quantization: dict | None, compress_to_fp16: bool) -> ExportedModel:
    """Labels and preprocessing into the IR's rt_info, the IR written, its tensors described."""
    import openvino as ov

    model.set_rt_info("Classification", ["model_info", "model_type"])
    model.set_rt_info(" ".join(label.replace(" ", "_") for label in request.labels), ["model_info", "labels"])
    model.set_rt_info(json.dumps(request.labels), ["edgetl", "labels"])
    model.set_rt_info(json.dumps(request.preprocess.to_dict()), ["edgetl", "preprocess"])
    target = request.out_dir / FORMAT.model_file
    ov.save_model(model, str(target), compress_to_fp16=compress_to_fp16)
    height, width = request.preprocess.size
    return ExportedModel(
        model_file=FORMAT.model_file, layout=FORMAT.layout,
        input=TensorInfo(model.input(0).get_any_name(), ["batch", 3, height, width], "float32"),
        output=TensorInfo(model.output(0).get_any_name(), ["batch", len(request.labels)], "float32"),
        quantization=quantization,
    )


def convert_qat(request: ExportRequest, student, summary: dict) -> ExportedModel:
    """The int8 IR of a trained QAT graph: its QDQ ONNX read by OpenVINO's ONNX frontend (FakeQuantize ops).

    `read_model`, not `convert_model`, which mis-converts the QAT ONNX (docs/qat.md).
    """
    import openvino as ov

    from edgetl.errors import BadInputError
    from edgetl.export.onnx import qat_qdq_onnx
    from edgetl.export.qat.convert import float_layers, record

    model = ov.Core().read_model(str(qat_qdq_onnx(request, student)))
    fake_quantize = sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")
    if fake_quantize == 0:
        raise BadInputError("OpenVINO read the QAT ONNX without any FakeQuantize op: the int8 ranges were lost")
    quantization = record(summary, f"torchao PT2E QAT + OpenVINO ONNX frontend {ov.__version__}",
                          {"fake_quantize_ops": fake_quantize}, float_layers(request))
    return _save(model, request, quantization, compress_to_fp16=False)
