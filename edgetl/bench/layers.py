"""Per-layer (per-op) time where the runtime exposes it.

- onnxruntime: session profiling (`enable_profiling`, Chrome-trace JSON), node events summed per node.
- OpenVINO: performance counters (`PERF_COUNT`) from the infer request.
- TFLite: the LiteRT Python interpreter exposes no per-op timings; LiteRT's own
  `benchmark_model --enable_op_profiling=true` does (said in the result, not faked).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from edgetl.runtime import load, resolve_model_file
from edgetl.runtime.onnx import session as onnx_session
from edgetl.runtime.timing import example_input

TOP = 15


def _summarise(per_node: dict[str, tuple[str, float]], runs: int) -> dict:
    total = sum(ms for _, ms in per_node.values()) or 1e-9
    rows = sorted(per_node.items(), key=lambda kv: -kv[1][1])
    by_type: dict[str, float] = {}
    for _, (op_type, ms) in per_node.items():
        by_type[op_type] = by_type.get(op_type, 0.0) + ms
    return {
        "supported": True, "runs": runs, "total_ms": round(total / runs, 4),
        "top_layers": [{"name": n, "op_type": t, "ms": round(ms / runs, 4), "percent": round(100 * ms / total, 2)}
                       for n, (t, ms) in rows[:TOP]],
        "by_op_type": {t: round(100 * ms / total, 2) for t, ms in sorted(by_type.items(), key=lambda kv: -kv[1])},
    }


def _onnx_layers(runner, inputs: np.ndarray, runs: int) -> dict:
    options = runner.options  # the runner's threads and optimisation level, profiling on top
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = onnx_session(runner.model_path, options, runner.providers, disabled=runner.disabled_optimizers)
        feed = {session.get_inputs()[0].name: inputs}
        for _ in range(runs):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, tuple[str, float]] = {}
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            op_type = event.get("args", {}).get("op_name", "?")
            per_node[name] = (op_type, per_node.get(name, (op_type, 0.0))[1] + event["dur"] / 1000.0)
    return _summarise(per_node, runs)


def _openvino_layers(runner, inputs: np.ndarray, runs: int) -> dict:
    # The runner's own compilation (batch 1, threads, f32 hint for fp32 IRs) with counters on.
    request = runner.compile(PERF_COUNT=True).create_infer_request()
    per_node: dict[str, tuple[str, float]] = {}
    for _ in range(runs):
        request.infer({0: inputs})
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                ms = info.real_time.total_seconds() * 1000.0
                per_node[info.node_name] = (info.node_type, per_node.get(info.node_name, ("", 0.0))[1] + ms)
    return _summarise(per_node, runs)


def profile_layers(path: str | Path, threads: int | None = None, runs: int = 20, device: str | None = None) -> dict:
    runner = load(resolve_model_file(path), threads=threads, device=device)
    inputs = example_input(runner, 1)
    if runner.format == "onnx":
        return _onnx_layers(runner, inputs, runs)
    if runner.format == "openvino":
        return _openvino_layers(runner, inputs, runs)
    return {"supported": False, "note": "the LiteRT Python interpreter exposes no per-op timings; run LiteRT's "
                                         "benchmark_model --graph=model.tflite --enable_op_profiling=true"}
