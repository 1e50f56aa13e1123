"""TFLite models through LiteRT (`ai_edge_litert`), XNNPACK on the CPU.

Interpreters, in order: `ai_edge_litert` (maintained, numpy 2, Python 3.12+,
aarch64 wheels), then `tflite_runtime` (old 32-bit devices with numpy < 2),
then `tensorflow.lite`. The input tensor is resized to the batch when the model
allows it; otherwise the base Runner feeds it one image at a time.
"""

from __future__ import annotations

import importlib

from edgetl.errors import MissingBackendError
from edgetl.runtime.base import Runner

INTERPRETERS = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


def interpreter_class():
    for module, package in INTERPRETERS:
        try:
            return importlib.import_module(module).Interpreter, package
        except Exception:  # tflite_runtime raises non-ImportErrors under numpy 2
            continue
    raise MissingBackendError("ai-edge-litert", "tflite", "running TFLite models")


class TfliteRunner(Runner):
    format = "tflite"

    def __init__(self, model_path, sidecar, threads=None, device=None):
        super().__init__(model_path, sidecar, threads, device)
        Interpreter, self.backend = interpreter_class()
        self.interpreter = Interpreter(model_path=str(model_path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.fixed_batch = 1

    def _run(self, batch):
        self.interpreter.set_tensor(self.input_detail["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()
