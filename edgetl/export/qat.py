"""int8 artifacts from a quantization-aware fine-tune: the learned ranges, converted, never recalibrated.

The QAT graph (`edgetl.train.fake_quant`) holds fake quantizers whose scales and
zero points were learned in training. `convert_pt2e` turns each into an explicit
quantize/dequantize pair with exactly those parameters (weights kept float beside
their pair: `fold_quantize=False`, so every converter sees one graph form), and:

- **TFLite**: `litert_torch.convert` with the same PT2E quantizer, which lowers the
  pairs into int8 TFLite kernels (int8 weights per channel, int8 activations);
  NHWC input through `to_channel_last_io`, as for fp32.
- **ONNX**: the dynamo exporter (`torch.onnx.export(dynamo=True)`, which needs
  `onnxscript`) writes the pairs as QuantizeLinear/DequantizeLinear, the QDQ form
  onnxruntime and TensorRT consume; int8 activation zero points are then moved to
  uint8 (`qdq.activations_to_uint8`, exact), onnxruntime's fast U8S8 path.
- **OpenVINO**: that QDQ ONNX read by OpenVINO's ONNX frontend (`Core.read_model`),
  which turns the pairs into FakeQuantize ops with the same ranges. (`convert_model`
  on the same file mis-converted it in our trials: 52.6% top-1 instead of 79.75%.)

Each artifact's `quantization` record says `method: qat` with the epochs and
learning rate, and the number of activation ranges carried over from training.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import json
import shutil
from pathlib import Path

from edgetl.contract.formats import FORMATS
from edgetl.contract.sidecar import TensorInfo
from edgetl.errors import BadInputError, require
from edgetl.export.base import ExportedModel, ExportRequest, quiet_converters
from edgetl.export.qdq import FLOAT_LOGITS

QDQ_CACHE = "onnx-qat-int8.onnx"  # the suffix of the per-session ONNX intermediates


def converted(student, float_layers: list[str] | tuple[str, ...] = ()):
    """The QAT graph with explicit quantize/dequantize pairs at the learned ranges."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(_pinned(with_float_layers(student, float_layers)), fold_quantize=False)


def _learned_qparams(fake_quantizer):
    return fake_quantizer.scale, fake_quantizer.zero_point


def _pinned(student):
    """The graph with each fake quantizer's conversion reading the scale it trained and evaluated with.

    `convert_pt2e` asks a fake quantizer for `calculate_qparams()`, which recomputes them from its
    observer's running min/max rather than returning the scale its forward used. With torch's fused
    per-channel kernel for weights (see `fake_quant._symmetric_weights`) the two were 0.3% apart on
    every weight quantizer of Lite0, and the artifact disagreed with its own QAT graph on 10% of a
    small validation set. Nothing guarantees a fake quantizer keeps the two equal, so conversion
    reads the stored scale: exactly the ranges training learned.
    """
    import types

    for module in student.modules():
        if hasattr(module, "fake_quant_enabled") and hasattr(module, "scale"):  # a FakeQuantize of any kind
            module.calculate_qparams = types.MethodType(_learned_qparams, module)
    return student


def with_float_layers(student, float_layers) -> object:
    """A copy of the QAT graph in which the given torch modules compute in float (mixed precision after QAT).

    Each matching convolution or linear layer reads its input *before* its fake quantizer, and its
    weight as the int8 grid values training used (stored in float); its output keeps its quantizer,
    so the layers after it still run int8. No retraining. Not the latent float weights: QAT leaves
    them anywhere inside their rounding bins, and on the photo run's validation split (Lite0, 800
    images) the 1/2/3 most sensitive layers float with latent weights agreed with float on 96.6 /
    96.5 / 96.0% of images, with the grid values on 97.4 / 97.3 / 97.3% (all int8: 97.5%).
    """
    from torch.fx import Node

    from edgetl.export.qdq import in_modules

    student = copy.deepcopy(student)
    if not float_layers:
        return student
    bypassed = 0
    for node in list(student.graph.nodes):
        if node.op != "call_function" or str(node.target) not in ("aten.conv2d.default", "aten.linear.default"):
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if not stack or not in_modules(stack[-1][0], float_layers):
            continue
        args = list(node.args)
        for index in (0, 1):
            arg = args[index]
            if isinstance(arg, Node) and arg.op == "call_module" and str(arg.target).startswith("activation_post"):
                if index == 1:
                    _store_grid_weight(student, arg)
                args[index] = arg.args[0]
                bypassed += 1
        node.args = tuple(args)
    for node in reversed(list(student.graph.nodes)):  # quantizers nobody reads any more
        if node.op == "call_module" and str(node.target).startswith("activation_post") and not node.users:
            student.graph.erase_node(node)
    student.recompile()
    if bypassed == 0:
        raise BadInputError(f"no convolution or linear layer of the QAT graph matches {', '.join(float_layers)}")
    return student


def _store_grid_weight(student, quantizer_node) -> None:
    """Overwrite the weight a fake quantizer reads with what it outputs: the int8 grid values, in float."""
    import torch

    source = quantizer_node.args[0]
    if source.op != "get_attr":
        raise BadInputError(f"the QAT graph's weight quantizer {quantizer_node.target} reads no stored weight")
    owner, _, name = str(source.target).rpartition(".")
    holder = student.get_submodule(owner) if owner else student
    quantizer = student.get_submodule(str(quantizer_node.target))
    observing = bool(quantizer.observer_enabled[0]) if hasattr(quantizer, "observer_enabled") else False
    if hasattr(quantizer, "disable_observer"):
        quantizer.disable_observer()
    with torch.no_grad():
        weight = getattr(holder, name)
        weight.copy_(quantizer(weight.detach().clone()))
    if observing:
        quantizer.enable_observer()


def record(summary: dict, tool: str, extra: dict | None = None, float_layers=()) -> dict:
    settings = summary.get("settings", {})
    return {"method": "qat", "tool": tool, "epochs": settings.get("epochs"), "lr": settings.get("lr"),
            "float_layers": list(float_layers),
            "best_epoch": summary.get("best_epoch"), "qat_val": summary.get("best"),
            "weights": "int8 symmetric per-channel", "activations": "int8 affine per-tensor (ranges from QAT)",
            "output": FLOAT_LOGITS, **(extra or {})}


def _cache(request: ExportRequest, name: str) -> Path:
    """A per-session intermediate, one per set of float layers."""
    import hashlib

    layers = list(request.options.get("float_layers") or [])
    tag = hashlib.sha256(json.dumps(layers).encode()).hexdigest()[:10] if layers else "all"
    return request.workdir / f"{name}-{tag}{Path(QDQ_CACHE).suffix if name.startswith('onnx') else '.tflite'}"


def qdq_onnx(request: ExportRequest, student) -> Path:
    """The QAT graph as QDQ ONNX (uint8 activations, int8 weights), converted once per export session."""
    path = _cache(request, "onnx-qat-int8")
    if path.is_file():
        return path
    require("onnxscript", "export", "ONNX export of a QAT model (the dynamo exporter)")
    import onnx
    import torch

    from edgetl.export.onnx import INPUT_NAME, OPSET, OUTPUT_NAME
    from edgetl.export.qdq import activations_to_uint8, fold_weight_quantizers

    model = converted(student, request.options.get("float_layers") or ())
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


def export_onnx(request: ExportRequest, student, summary: dict) -> ExportedModel:
    import onnxruntime

    from edgetl.export.onnx import _embed_metadata
    from edgetl.export.qdq import activation_zero_point_types

    import onnx

    fmt = FORMATS["onnx"]
    target = request.out_dir / fmt.model_file
    shutil.copyfile(qdq_onnx(request, student), target)
    _embed_metadata(target, request)
    zero_points = activation_zero_point_types(onnx.load(str(target)))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    height, width = request.preprocess.size
    tool = f"torchao PT2E QAT + torch.onnx (dynamo) {importlib.metadata.version('onnxscript')}"
    return ExportedModel(
        model_file=fmt.model_file, layout=fmt.layout,
        input=TensorInfo(session.get_inputs()[0].name, ["batch", 3, height, width], "float32"),
        output=TensorInfo(session.get_outputs()[0].name, ["batch", len(request.labels)], "float32"),
        quantization=record(summary, tool, {"format": "QDQ", "activation_zero_points": zero_points},
                            request.options.get("float_layers") or ()),
    )


def export_openvino(request: ExportRequest, student, summary: dict) -> ExportedModel:
    import openvino as ov

    fmt = FORMATS["openvino"]
    model = ov.Core().read_model(str(qdq_onnx(request, student)))
    fake_quantize = sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")
    if fake_quantize == 0:
        raise BadInputError("OpenVINO read the QAT ONNX without any FakeQuantize op: the int8 ranges were lost")
    model.set_rt_info("Classification", ["model_info", "model_type"])
    model.set_rt_info(" ".join(label.replace(" ", "_") for label in request.labels), ["model_info", "labels"])
    model.set_rt_info(json.dumps(request.labels), ["edgetl", "labels"])
    model.set_rt_info(json.dumps(request.preprocess.to_dict()), ["edgetl", "preprocess"])
    target = request.out_dir / fmt.model_file
    ov.save_model(model, str(target), compress_to_fp16=False)
    height, width = request.preprocess.size
    return ExportedModel(
        model_file=fmt.model_file, layout=fmt.layout,
        input=TensorInfo(model.input(0).get_any_name(), ["batch", 3, height, width], "float32"),
        output=TensorInfo(model.output(0).get_any_name(), ["batch", len(request.labels)], "float32"),
        quantization=record(summary, f"torchao PT2E QAT + OpenVINO ONNX frontend {ov.__version__}",
                            {"fake_quantize_ops": fake_quantize}, request.options.get("float_layers") or ()),
    )


def export_tflite(request: ExportRequest, student, summary: dict) -> ExportedModel:
    import torch

    from edgetl.export import tflite
    from edgetl.train.fake_quant import quantizer

    litert_torch = require("litert_torch", "export", "TFLite conversion")
    from litert_torch.quantize.quant_config import QuantConfig

    height, width = request.preprocess.size
    path = _cache(request, "tflite-qat-int8")
    if not path.is_file():
        tmp = path.with_suffix(".partial")
        with tflite._quiet(), torch.no_grad(), _nhwc_constant_pads():
            wrapped = litert_torch.to_channel_last_io(converted(student, request.options.get("float_layers") or ()),
                                                      args=[0])  # no .eval(): an exported graph
            litert_torch.convert(wrapped, (torch.zeros(1, height, width, 3),),
                                 quant_config=QuantConfig(pt2e_quantizer=quantizer())).export(str(tmp))
        tmp.rename(path)
    tool = f"torchao PT2E QAT + litert-torch {importlib.metadata.version('litert-torch')}"
    quantization = record(summary, tool, None, request.options.get("float_layers") or ())
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
    return tflite.finish(request, model_bytes, quantization, notes)


@contextlib.contextmanager
def _nhwc_constant_pads():
    """litert-torch's layout pass taught that a constant pad of H and W can run in NHWC, for one conversion.

    litert-torch 0.10 keeps `aten.constant_pad_nd` in NCHW, so each pad in front of a strided
    convolution (TF "SAME" padding, `static_padding.py`) got a TRANSPOSE on each side. In a float
    graph the converter folds them away with the pad into the convolution; in the QAT graph the
    pad sits between its own quantize/dequantize pair and nothing folded: Lite0's QAT TFLite ran 4
    PADs and 8 int8 TRANSPOSEs that post-training int8 does not have. The rewrite moves the pad's
    amounts to NHWC's axes (C unpadded, then W, then H); registered only around the QAT conversion.
    """
    import torch
    import torch.nn.functional as F
    from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_check, layout_rewrite

    op = torch.ops.aten.constant_pad_nd.default

    def pad_nhwc(x, pad, value=0.0):
        return F.pad(x, [0, 0, *pad], value=value)

    def rewrite(node):
        if len(node.args[1]) == 4:  # only H and W padded: NCHW (W, H) is NHWC (C=0, W, H)
            node.target = pad_nhwc

    def inputs(node):
        return [node.args[0]]

    def checker(node):
        fits = len(node.args[1]) == 4 and layout_check.is_4d(node) and layout_check.is_4d(node.args[0])
        return layout_check.NHWCable(fits, must_be=False)

    registries = ((layout_rewrite.rewriters, rewrite), (layout_check.layout_sensitive_inputs_getters, inputs),
                  (layout_check.nhwcable_node_checkers, checker))
    saved = [(registry, registry.get(op, _MISSING)) for registry, _ in registries]
    for registry, func in registries:
        registry[op] = func
    try:
        yield
    finally:
        for registry, previous in saved:
            if previous is _MISSING:
                registry.pop(op, None)
            else:
                registry[op] = previous


_MISSING = object()


EXPORTERS = {"onnx": export_onnx, "openvino": export_openvino, "tflite": export_tflite}


def export(fmt: str, request: ExportRequest, student, summary: dict) -> ExportedModel:
    if fmt not in EXPORTERS:
        raise BadInputError(f"no QAT exporter for {fmt}", f"choose from {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](request, student, summary)


class QatSource:
    """The QAT model of one export session: trained (or reused from RUN_DIR/qat/) on first use, shared by formats.

    `mode`: "auto" (the gate's step after post-training int8 misses), "force" (`--qat`: int8 comes from
    QAT), or "off".
    """

    MODES = ("auto", "force", "off")

    def __init__(self, reference, export_model, mode: str = "auto", settings=None):
        if mode not in self.MODES:
            raise BadInputError(f"unknown QAT mode {mode!r}", f"choose from {', '.join(self.MODES)}")
        from edgetl.train.qat import QatSettings

        self.reference, self.export_model, self.mode = reference, export_model, mode
        self.settings = settings or QatSettings()
        self._loaded = None

    def key(self) -> dict:
        from dataclasses import asdict

        return {"mode": self.mode, **(asdict(self.settings) if self.mode != "off" else {})}

    def describe(self) -> str:
        return f"int8 QAT, {self.settings.epochs} epoch(s) at lr {self.settings.lr:g}"

    def load(self) -> tuple[object, dict]:
        """(the trained QAT graph, its summary); trains on first use."""
        if self._loaded is None:
            from edgetl.train.qat import load_trained, quantization_aware_finetune

            summary = quantization_aware_finetune(self.reference.run.path, self.settings)
            student = load_trained(self.reference.run.path, self.export_model, tuple(self.reference.preprocess.size))
            self._loaded = (student, summary)
        return self._loaded
