"""int8 artifacts from a quantization-aware fine-tune: the learned ranges, converted, never recalibrated.

`converted` turns each fake quantizer of the QAT graph into an explicit
quantize/dequantize pair with exactly the scale and zero point it trained with
(weights kept float beside their pair, `fold_quantize=False`, so every converter
sees one graph form). Each format's module turns that graph into its artifact
behind one interface, `convert_qat(request, student, summary) -> ExportedModel`,
found through the format's row (`Format.exporter()`):

- ONNX (`export/onnx.py`): QDQ through the dynamo exporter, activation zero points
  moved to uint8 (exact), onnxruntime's fast U8S8 path;
- OpenVINO (`export/openvino.py`): that QDQ ONNX read by OpenVINO's ONNX frontend,
  which turns the pairs into FakeQuantize ops with the same ranges;
- TFLite (`export/tflite.py`): `litert_torch.convert` with the same PT2E quantizer,
  lowering the pairs into int8 kernels, NHWC input as for fp32.

Each artifact's `quantization` record says `method: qat` (`record`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from pathlib import Path

from edgetl.contract.formats import FORMATS
from edgetl.errors import BadInputError
from edgetl.export.base import ExportedModel, ExportRequest
from edgetl.export.qdq import FLOAT_LOGITS

def export(fmt: str, request: ExportRequest, student, summary: dict) -> ExportedModel:
    """`fmt`'s int8 artifact of the trained QAT graph, through its exporter module's `convert_qat`."""
    convert = getattr(FORMATS[fmt].exporter(), "convert_qat", None) if fmt in FORMATS else None
    if convert is None:
        offered = [name for name, row in FORMATS.items() if hasattr(row.exporter(), "convert_qat")]
        raise BadInputError(f"no QAT exporter for {fmt}", f"choose from {', '.join(offered)}")
    return convert(request, student, summary)


def float_layers(request: ExportRequest) -> list[str]:
    """The torch modules this attempt keeps in float (mixed precision after QAT)."""
    return list(request.options.get("float_layers") or ())


def converted(student, layers: list[str] | tuple[str, ...] = ()):
    """The QAT graph with explicit quantize/dequantize pairs at the learned ranges."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(_pinned(with_float_layers(student, layers)), fold_quantize=False)


def _learned_qparams(fake_quantizer):
    return fake_quantizer.scale, fake_quantizer.zero_point


def _pinned(student):
    """The graph with each fake quantizer's conversion reading the scale it trained and evaluated with.

    `convert_pt2e` asks `calculate_qparams()`, which recomputes from the observer's running min/max
    instead of returning the scale the forward used; nothing guarantees the two agree.
    """
    import types

    for module in student.modules():
        if hasattr(module, "fake_quant_enabled") and hasattr(module, "scale"):  # a FakeQuantize of any kind
            module.calculate_qparams = types.MethodType(_learned_qparams, module)
    return student


def with_float_layers(student, layers) -> object:
    """A copy of the QAT graph in which the given torch modules compute in float (mixed precision after QAT).

    Each matching convolution or linear layer reads its input *before* its fake quantizer, and its
    weight as the int8 grid values training used (stored in float; QAT's latent weights sit anywhere
    in their rounding bins); its output keeps its quantizer, so the layers after it still run int8.
    """
    from torch.fx import Node

    from edgetl.export.qdq import in_modules

    student = copy.deepcopy(student)
    if not layers:
        return student
    bypassed = 0
    for node in list(student.graph.nodes):
        if node.op != "call_function" or str(node.target) not in ("aten.conv2d.default", "aten.linear.default"):
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if not stack or not in_modules(stack[-1][0], layers):
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
        raise BadInputError(f"no convolution or linear layer of the QAT graph matches {', '.join(layers)}")
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


def record(summary: dict, tool: str, extra: dict | None = None, layers=()) -> dict:
    """The sidecar's `quantization` of a QAT artifact."""
    settings = summary.get("settings", {})
    return {"method": "qat", "tool": tool, "epochs": settings.get("epochs"), "lr": settings.get("lr"),
            "float_layers": list(layers),
            "best_epoch": summary.get("best_epoch"), "qat_val": summary.get("best"),
            "weights": "int8 symmetric per-channel", "activations": "int8 affine per-tensor (ranges from QAT)",
            "output": FLOAT_LOGITS, **(extra or {})}


def cache_path(request: ExportRequest, name: str, suffix: str) -> Path:
    """A per-session intermediate, one per set of float layers."""
    layers = float_layers(request)
    tag = hashlib.sha256(json.dumps(layers).encode()).hexdigest()[:10] if layers else "all"
    return request.workdir / f"{name}-{tag}{suffix}"


@contextlib.contextmanager
def nhwc_constant_pads():
    """litert-torch's layout pass taught that a constant pad of H and W can run in NHWC, for one conversion.

    litert-torch keeps `aten.constant_pad_nd` in NCHW; in the QAT graph the pad sits between its
    own quantize/dequantize pair, so nothing folds the TRANSPOSE on each side of it. The rewrite
    moves the pad's amounts to NHWC's axes (C unpadded, then W, then H).
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


class QatSource:
    """The QAT model of one export session: trained (or reused from RUN_DIR/qat/) on first use, shared by formats.

    `mode`: "auto" (the gate's step after post-training int8 misses), "force" (`--qat`: int8 comes from
    QAT), or "off".
    """

    MODES = ("auto", "force", "off")

    def __init__(self, reference, export_model, mode: str = "auto", settings=None):
        if mode not in self.MODES:
            raise BadInputError(f"unknown QAT mode {mode!r}", f"choose from {', '.join(self.MODES)}")
        from edgetl.export.qat.settings import QatSettings

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
            from edgetl.export.qat.loop import load_trained, quantization_aware_finetune

            summary = quantization_aware_finetune(self.reference.run.path, self.settings)
            student = load_trained(self.reference.run.path, self.export_model, tuple(self.reference.preprocess.size))
            self._loaded = (student, summary)
        return self._loaded
