#!/usr/bin/env python
"""Does `edgetl bench` measure the model, not itself?

For each artifact, in one process and with the same thread count:
  edgetl     edgetl.bench.measure.bench_model (Runner.infer on a real preprocessed image)
  bare       the runtime's own API in a tight loop (onnxruntime session.run, OpenVINO
             infer request, LiteRT invoke) on the same input
  benchmark_app  OpenVINO's tool on IR files (-hint none -nstreams 1 -nthreads N, sync API)
Target (issue 5): p50 ratios edgetl/bare and edgetl/benchmark_app <= 1.05.

    python scripts/bench_runtime.py ARTIFACT_DIR... [--threads 2] [--runs 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgetl.bench.measure import bench_model, example_input
from edgetl.bench.stats import latency_stats
from edgetl.runtime import load, resolve_model_file


def bare_loop(model_file: Path, threads: int, runs: int, warmup: int) -> dict:
    runner = load(model_file, threads=threads)
    inputs = example_input(runner, 1)
    if runner.format == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def once():
            session.run(None, {name: inputs})
    elif runner.format == "openvino":
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if runner.sidecar.precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        request = core.compile_model(core.read_model(str(model_file)), "CPU", config).create_infer_request()

        def once():
            request.infer({0: inputs})
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(model_file), num_threads=threads)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]

        def once():
            interpreter.set_tensor(index, inputs)
            interpreter.invoke()
    for _ in range(warmup):
        once()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        once()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return latency_stats(samples)


def benchmark_app(model_file: Path, threads: int, runs: int) -> float | None:
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    if not Path(tool).exists():
        return None
    out = subprocess.run([tool, "-m", str(model_file), "-d", "CPU", "-hint", "none", "-nstreams", "1",
                          "-nthreads", str(threads), "-niter", str(runs), "-api", "sync", "-b", "1"],
                         capture_output=True, text=True, timeout=600)
    match = re.search(r"Median:\s+([\d.]+)\s+ms", out.stdout)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for path in args.artifacts:
        model_file = resolve_model_file(path)
        # Interleave: bare, edgetl, bare again; the two bare runs bound the machine's drift.
        bare_a = bare_loop(model_file, args.threads, args.runs, args.warmup)
        ours = bench_model(model_file, threads=args.threads, runs=args.runs, warmup=args.warmup)
        bare_b = bare_loop(model_file, args.threads, args.runs, args.warmup)
        bare_p50 = float(np.mean([bare_a["p50_ms"], bare_b["p50_ms"]]))
        row = {"artifact": str(Path(path)), "format": ours["format"], "precision": ours["precision"],
               "threads": args.threads, "edgetl_p50_ms": ours["p50_ms"], "edgetl_p99_ms": ours["p99_ms"],
               "bare_p50_ms": round(bare_p50, 4), "ratio_vs_bare": round(ours["p50_ms"] / bare_p50, 3)}
        if ours["format"] == "openvino":
            app = benchmark_app(model_file, args.threads, args.runs)
            row["benchmark_app_p50_ms"] = app
            row["ratio_vs_benchmark_app"] = round(ours["p50_ms"] / app, 3) if app else None
        rows.append(row)
        extra = (f" | benchmark_app {row['benchmark_app_p50_ms']} ms (x{row['ratio_vs_benchmark_app']})"
                 if "benchmark_app_p50_ms" in row else "")
        print(f"{row['artifact']:40s} edgetl p50 {row['edgetl_p50_ms']:8.3f} ms | bare {row['bare_p50_ms']:8.3f} ms "
              f"(x{row['ratio_vs_bare']}){extra}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
