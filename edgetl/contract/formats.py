"""The one table of backends: everything edgetl knows about a model format, in one row.

The CLI's `--format` choices, the export loop, `runtime.load` (suffix -> format -> runner),
the sidecar's checks, device profiles and deploy's pip extras all read `FORMATS`. A
format is a row here plus an exporter module (`edgetl.export.<name>`, with
`export(request) -> ExportedModel` and the gate's calibration search `int8_recipes(calib_size,
calib_all, searched)`) and a runner class (`edgetl.runtime.<name>`).
Nothing is imported until it is asked for, so reading the table costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgetl.errors import UnknownNameError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    model_file: str
    precisions: tuple[str, ...]
    layout: str  # input layout of the exported model
    converter: tuple[str, ...]  # Python packages the exporter needs
    extra: str  # the pip extra that installs them
    runtime: str  # what runs it on a device (for people)
    device_extra: str  # the pip extra a device installs to run it
    runner: str  # "module:Class" of its runner in edgetl.runtime

    def exporter(self):
        return importlib.import_module(f"edgetl.export.{self.name}")

    def runner_class(self):
        module, _, name = self.runner.partition(":")
        return getattr(importlib.import_module(module), name)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", "model.onnx", PRECISIONS, "NCHW", ("onnx", "onnxruntime"), "export",
               "onnxruntime", "onnx", "edgetl.runtime.onnx:OnnxRunner"),
        Format("openvino", ".xml", "model.xml", PRECISIONS, "NCHW", ("openvino", "nncf", "onnx"), "export",
               "openvino", "openvino", "edgetl.runtime.openvino:OpenVinoRunner"),
        Format("tflite", ".tflite", "model.tflite", PRECISIONS, "NHWC", ("litert_torch", "ai_edge_quantizer"),
               "export", "ai-edge-litert (XNNPACK)", "tflite", "edgetl.runtime.tflite:TfliteRunner"),
    )
}
SUFFIXES = {f.suffix: f.name for f in FORMATS.values()}


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
