#!/usr/bin/env python
"""Where an artifact's time goes, op by op, in its own runtime (how MobileNetV3's int8 was diagnosed).

- ONNX: onnxruntime session profiling; kernel time per op type of the graph onnxruntime
  actually runs after its rewrites (QLinearConv, QLinearMul, ...), and which float ops sit
  between a DequantizeLinear and a QuantizeLinear.
- TFLite: the ops left in the file and how many XNNPACK partitions the delegate made (1 means
  the delegate runs the whole graph; each op XNNPACK refuses splits it and runs on the
  builtin kernels).
- OpenVINO: the compiled model's performance counters, time per layer type and execution type
  (jit_avx512_I8, ref_FP32, ...).

    python scripts/profile_int8.py RUN/export/tflite-int8 RUN/export/onnx-int8 [--threads 2] [--runs 200]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np

from edgetl.runtime import load, resolve_model_file
from edgetl.runtime.timing import example_input


def onnx_profile(path: Path, inputs: np.ndarray, threads: int, runs: int) -> dict:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling, options.profile_file_prefix = True, f"{tmp}/profile"
        options.optimized_model_filepath = f"{tmp}/optimized.onnx"
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: inputs})
        events = json.loads(Path(session.end_profiling()).read_text())
        ran = collections.Counter(n.op_type for n in onnx.load(f"{tmp}/optimized.onnx").graph.node)
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1
    return {"runtime": "onnxruntime", "nodes_run": dict(ran),
            "kernel_ms_per_run": {op: round(us / runs / 1000, 4) for op, us in per_op.most_common()},
            "share": {op: round(us / total, 3) for op, us in per_op.most_common()}}


def tflite_profile(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the file's ops, then one DELEGATE node per partition
    kinds = collections.Counter(op["op_name"] for op in ops if op["op_name"] != "DELEGATE")
    partitions = sum(1 for op in ops if op["op_name"] == "DELEGATE")
    return {"runtime": "ai-edge-litert (XNNPACK)", "ops": dict(kinds), "xnnpack_partitions": partitions}


def openvino_profile(path: Path, inputs: np.ndarray, threads: int, runs: int) -> dict:
    import openvino as ov

    core = ov.Core()
    config = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    per_type: collections.Counter = collections.Counter()
    for _ in range(runs):
        request.infer({0: inputs})
        for info in request.get_profiling_info():
            per_type[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds() * 1000
    return {"runtime": "openvino", "ms_per_run": {k: round(v / runs, 4) for k, v in per_type.most_common(15)}}


def profile(artifact: str, threads: int, runs: int) -> dict:
    runner = load(artifact, threads=threads)
    path = resolve_model_file(artifact)
    inputs = example_input(runner, 1)
    result = {"artifact": str(artifact), "format": runner.format, "precision": runner.sidecar.precision}
    if runner.format == "onnx":
        result.update(onnx_profile(path, inputs, threads, runs))
    elif runner.format == "tflite":
        result.update(tflite_profile(path))
    else:
        result.update(openvino_profile(path, inputs, threads, runs))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps([profile(a, args.threads, args.runs) for a in args.artifacts], indent=1))


if __name__ == "__main__":
    main()
