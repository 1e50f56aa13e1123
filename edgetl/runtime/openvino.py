"""OpenVINO IR (`model.xml` + `model.bin`) on CPU, GPU or NPU.

fp32 artifacts are compiled with an f32 inference-precision hint: on CPUs with
AMX/AVX-512-BF16, OpenVINO would otherwise silently run them in bf16, and the
model measured would not be the one exported.
"""

from __future__ import annotations

from edgetl.errors import require
from edgetl.runtime.base import Runner


class OpenVinoRunner(Runner):
    format = "openvino"
    backend = "openvino"

    def __init__(self, model_path, sidecar, threads=None, device=None):
        super().__init__(model_path, sidecar, threads, device)
        ov = require("openvino", "openvino", "running OpenVINO models")
        self.core = ov.Core()
        target = (device or "CPU").upper()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if target == "CPU":
            if threads:
                config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads)}
            if sidecar.precision == "fp32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
        model = self.core.read_model(str(model_path))
        self.compiled = self.core.compile_model(model, target, config)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def _run(self, batch):
        # Shared input/output memory: no copies on the way in; one copy out (the request reuses its buffer).
        result = self.request.infer({0: batch}, share_inputs=True, share_outputs=True)
        return result[self.output].copy()
