"""OpenVINO IR (`model.xml` + `model.bin`) on CPU, GPU or NPU.

Every artifact is compiled on CPU with an f32 inference-precision hint. On CPUs
with AMX/AVX-512-BF16 (Sapphire Rapids and later Xeons, this project's reference
VM) OpenVINO's default is bf16 for every layer it does not run in int8: the whole
of an fp32 model (on the photo run's validation split, the fp32 IR in bf16 agreed
with float on 98.0% of images, 1.5x faster) and the unquantized parts of an int8
one (there within one image of f32, at the same speed). Pinned, the artifact
computes what ONNX Runtime and LiteRT compute and what the gate measured, and
gives the same answers on a host with bf16 and a device without.

Exported IRs keep a dynamic batch dimension (parity and calibration feed batches).
A dynamic shape costs the CPU plugin about 10% per inference at batch 1 (shape
inference and memory planning on every call), so the runner compiles a static
batch-1 model for the camera/bench path, as benchmark_app does with `-b 1`, and
compiles the dynamic one only when a larger batch actually arrives.
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
        self.target = (device or "CPU").upper()
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.target == "CPU":
            self.config["INFERENCE_NUM_THREADS"] = self.threads
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        self.dynamic_batch = False
        self.compiled = self.compile()
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        # The request's own tensors, bound once: copying a frame into them (~10 us) is cheaper
        # than binding a new external buffer on every call, which the plugin re-validates.
        self._input = self.request.get_input_tensor(0)
        self._result = self.request.get_output_tensor(0)
        self._batched = None  # (request, output) of the dynamic-batch model, compiled on first use

    def compile(self, **extra):
        """The batch-1 model compiled with this runner's settings (plus `extra`, e.g. PERF_COUNT
        for per-layer profiling, so the profile is of the very model that is benchmarked)."""
        model = self.core.read_model(str(self.model_path))
        self.dynamic_batch = model.input(0).get_partial_shape()[0].is_dynamic
        if self.dynamic_batch:
            model.reshape({model.input(0): _batch_one(model.input(0).get_partial_shape(), self.sidecar)})
        return self.core.compile_model(model, self.target, {**self.config, **extra})

    def _run(self, batch):
        if len(batch) == 1 or not self.dynamic_batch:
            self._input.data[...] = batch
            # start_async + wait: the same inference with half the Python-binding cost of
            # infer() (~35 us against ~80 us here), which builds a result dict per call.
            self.request.start_async()
            self.request.wait()
            return self._result.data.copy()
        if self._batched is None:
            compiled = self.core.compile_model(self.core.read_model(str(self.model_path)), self.target, self.config)
            self._batched = (compiled.create_infer_request(), compiled.output(0))
        request, output = self._batched
        result = request.infer({0: batch}, share_inputs=True, share_outputs=True)
        return result[output].copy()


def _batch_one(shape, sidecar) -> list[int]:
    """The input shape with batch 1; other dynamic dimensions filled from the sidecar's preprocessing."""
    height, width = sidecar.preprocess.size
    fill = [1, 3, height, width] if sidecar.preprocess.layout == "NCHW" else [1, height, width, 3]
    return [1] + [fill[i] if dim.is_dynamic else dim.get_length() for i, dim in enumerate(shape) if i > 0]
