"""ONNX models through onnxruntime; the execution provider follows the device.

device: None/"cpu" (CPUExecutionProvider), "cuda", "tensorrt" (engine cache next
to the model, since engines are built for one GPU and TensorRT version), or
"openvino". Unavailable providers fall back to CPU with a warning.
"""

from __future__ import annotations

from edgetl.console import warn
from edgetl.errors import require
from edgetl.runtime.base import Runner

# onnxruntime's level-1 `WeightBiasQuantization` (1.22+) quantizes the float weights and biases of a
# Conv/Gemm that sits between a DequantizeLinear and a QuantizeLinear when it loads a model. A QAT
# file needs it (its biases are stored float; without the rewrite its convolutions run in float,
# 11x slower), but where mixed precision kept a layer float it gives that layer int8 weights again:
# Lite0's first depthwise layer kept float this way took the photo run's validation agreement from
# 95.9% down to 91.3% instead of up. An artifact with float layers says so in its sidecar
# (`quantization.onnxruntime_disabled_optimizers`) and its sessions skip the rewrite.
FLOAT_LAYER_OPTIMIZERS = ["WeightBiasQuantization"]

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
        self.disabled_optimizers = disabled_optimizers(sidecar)
        self.session = session(model_path, options, providers, provider_options, self.disabled_optimizers)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def _run(self, batch):
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def disabled_optimizers(sidecar) -> list[str]:
    """The rewrites the artifact's sidecar asks to skip; only known names (a sidecar is untrusted input)."""
    quantization = getattr(sidecar, "quantization", None)
    asked = quantization.get("onnxruntime_disabled_optimizers") if isinstance(quantization, dict) else None
    return [name for name in FLOAT_LAYER_OPTIMIZERS if isinstance(asked, list) and name in asked]


def session(model_path, options=None, providers=("CPUExecutionProvider",), provider_options=None,
            disabled: list[str] | tuple[str, ...] = ()):
    """An onnxruntime session with `disabled` optimizers skipped (onnxruntime ignores names it lacks)."""
    ort = require("onnxruntime", "onnx", "running ONNX models")
    kwargs = {"provider_options": provider_options} if provider_options else {}
    return ort.InferenceSession(str(model_path), sess_options=options, providers=list(providers),
                                disabled_optimizers=list(disabled), **kwargs)
