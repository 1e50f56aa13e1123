"""ONNX models through onnxruntime; the execution provider follows the device.

device: None/"cpu" (CPUExecutionProvider), "cuda", "tensorrt" (engine cache next
to the model, since engines are built for one GPU and TensorRT version), or
"openvino". Unavailable providers fall back to CPU with a warning.
"""

from __future__ import annotations

from edgetl.console import warn
from edgetl.errors import require
from edgetl.runtime.base import Runner

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "openvino": ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRunner(Runner):
    format = "onnx"
    backend = "onnxruntime"

    def __init__(self, model_path, sidecar, threads=None, device=None):
        super().__init__(model_path, sidecar, threads, device)
        ort = require("onnxruntime", "onnx", "running ONNX models")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = PROVIDERS.get((device or "cpu").lower(), PROVIDERS["cpu"])
        available = set(ort.get_available_providers())
        providers = [p for p in wanted if p in available]
        if wanted[0] not in available:
            warn(f"onnxruntime has no {wanted[0]} here; running on {providers[0]}")
        provider_options = []
        for name in providers:
            if name == "TensorrtExecutionProvider":
                cache = str(self.model_path.parent / "trt_cache")
                provider_options.append({"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                         "trt_int8_enable": sidecar.precision == "int8",
                                         "trt_fp16_enable": sidecar.precision != "fp32"})
            else:
                provider_options.append({})
        self.options = options
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers,
                                            provider_options=provider_options)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def _run(self, batch):
        return self.session.run([self.output_name], {self.input_name: batch})[0]
