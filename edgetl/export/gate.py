"""The accuracy gate's fallback plan: what to try, in order, when int8 loses too much.

No anchor tool does this across runtimes. After each attempt the pipeline
measures the drop on the validation split; while it is above `--max-drop` and the
time budget allows, the next step is tried:

1. the default calibrated int8 (NNCF for ONNX and OpenVINO, ai-edge-quantizer static int8 for TFLite);
2. twice the calibration images with mixed precision: the recipe's sensitive layers (first
   conv, classifier, squeeze-excite / hard-swish blocks) kept in float (16-bit activations for TFLite);
3. another quantizer: onnxruntime Percentile for ONNX, NNCF's accuracy-aware quantization for OpenVINO;
4. fp16;
5. fp32, the last resort, always delivered if nothing else passes.

Every attempt (what, drop, agreement, seconds, error) is recorded in the sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attempt:
    what: str
    precision: str
    options: dict = field(default_factory=dict)
    last_resort: bool = False


def plan(fmt: str, precision: str, calib_size: int, sensitive: tuple[str, ...], max_drop: float | None) -> list[Attempt]:
    """The attempts for one requested (format, precision); just one unless int8 is gated."""
    if precision != "int8":
        return [Attempt(f"{precision}", precision)]
    first = {
        "onnx": Attempt("int8 NNCF (QDQ)", "int8", {"tool": "nncf", "calib_images": calib_size}),
        "openvino": Attempt("int8 NNCF", "int8", {"calib_images": calib_size}),
        "tflite": Attempt("int8 static (a8w8)", "int8", {"recipe": "static_wi8_ai8", "calib_images": calib_size}),
    }[fmt]
    if max_drop is None:
        return [first]
    floats = list(sensitive)
    more = 2 * calib_size
    steps = {
        "onnx": [
            Attempt("int8 NNCF, 2x images, sensitive layers float", "int8",
                    {"tool": "nncf", "calib_images": more, "float_layers": floats}),
            Attempt("int8 onnxruntime Percentile 99.99, 2x images, sensitive layers float", "int8",
                    {"tool": "onnxruntime", "method": "percentile", "percentile": 99.99, "calib_images": more,
                     "float_layers": floats}),
        ],
        "openvino": [
            Attempt("int8 NNCF, 2x images, sensitive layers float", "int8",
                    {"calib_images": more, "float_layers": floats}),
            Attempt("int8 NNCF accuracy control", "int8",
                    {"calib_images": more, "accuracy_control": True, "max_drop": max_drop / 100.0,
                     "max_iterations": 3}),
        ],
        "tflite": [
            Attempt("int8 weights, 16-bit activations (a16w8)", "int8",
                    {"recipe": "static_wi8_ai16", "calib_images": more}),
        ],
    }[fmt]
    return [first, *steps, Attempt("fp16", "fp16"), Attempt("fp32 (last resort)", "fp32", last_resort=True)]
