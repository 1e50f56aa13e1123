"""The one table of export formats.

The CLI's `--format` choices, the export loop, the README table and the test
that every format is exercised all read `FORMATS`. A format is a row here plus
an exporter module (`edgetl.export.<name>`, with `export(request) -> ExportedModel`)
and a runner (`edgetl.runtime.<name>`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgetl.errors import UnknownNameError


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    model_file: str
    precisions: tuple[str, ...]
    layout: str  # input layout of the exported model
    converter: tuple[str, ...]  # Python packages the exporter needs
    extra: str  # the pip extra that installs them
    runtime: str  # what runs it on a device

    def exporter(self):
        return importlib.import_module(f"edgetl.export.{self.name}")


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", "model.onnx", ("fp32", "fp16", "int8"), "NCHW",
               ("onnx", "onnxruntime"), "export", "onnxruntime"),
        Format("openvino", ".xml", "model.xml", ("fp32", "fp16", "int8"), "NCHW",
               ("openvino", "nncf", "onnx"), "export", "openvino"),
        Format("tflite", ".tflite", "model.tflite", ("fp32", "fp16", "int8"), "NHWC",
               ("litert_torch", "ai_edge_quantizer"), "export", "ai-edge-litert (XNNPACK)"),
    )
}
DEFAULT_PRECISIONS = ("fp32", "int8")


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise UnknownNameError(f"unknown export format '{name}'", f"choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def parse_list(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    """'onnx,tflite' or 'all' -> a validated list, order kept."""
    items = list(allowed) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise UnknownNameError(f"unknown {what} {', '.join(unknown) or '(none)'}",
                               f"choose from {', '.join(allowed)} or 'all'")
    return items
