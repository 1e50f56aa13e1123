#!/usr/bin/env python
"""Does `edgetl bench` measure the model, not itself?

For each artifact, in one process and with the same thread count:
  edgetl     edgetl.bench.measure.bench_model (Runner.infer on a real preprocessed image)
  bare       the runtime's own API in a tight loop (onnxruntime session.run, OpenVINO
             infer request, LiteRT invoke) on the same input
  benchmark_app  OpenVINO's tool on IR files (-hint none -nstreams 1 -nthreads N, sync API,
             -ip f32: the f32 tensor the model takes, as edgetl feeds it; by default the tool
             would feed u8 and convert inside the graph)
For IR files it also times Runner.infer against OpenVINO's own latency of the same calls
(InferRequest.latency, what benchmark_app reports): a ratio no noisy neighbour can skew.
The three are interleaved over --rounds rounds and each is summarised by the median of its
per-round p50s, so a noisy neighbour (this machine is a VM) hits all of them alike; the
spread of the per-round ratios is printed beside the ratio.
Target (issue 5): p50 ratios edgetl/bare and edgetl/benchmark_app <= 1.05.

    python scripts/bench_runtime.py ARTIFACT_DIR... [--threads 2] [--runs 200] [--rounds 7] [--json]
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

from edgetl.bench.measure import bench_model
from edgetl.runtime import load, resolve_model_file
from edgetl.runtime.timing import example_input, latency_stats


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
        model = core.read_model(str(model_file))
        model.reshape({model.input(0): list(inputs.shape)})  # static, as benchmark_app does with -b 1
        request = core.compile_model(model, "CPU", config).create_infer_request()
        request.set_input_tensor(ov.Tensor(inputs))

        def once():
            request.infer()
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
                          "-nthreads", str(threads), "-niter", str(runs), "-api", "sync", "-b", "1", "-ip", "f32"],
                         capture_output=True, text=True, timeout=600)
    match = re.search(r"Median:\s+([\d.]+)\s+ms", out.stdout)
    return float(match.group(1)) if match else None


def own_latency(model_file: Path, threads: int, runs: int, warmup: int) -> dict:
    """OpenVINO only: edgetl's wall time per Runner.infer against the runtime's own latency of
    the same calls (InferRequest.latency, the number benchmark_app reports). Measured on the
    same calls, so it is immune to the machine's drift: it is what edgetl and the Python
    binding add to the model."""
    runner = load(model_file, threads=threads)
    inputs = example_input(runner, 1)
    for _ in range(warmup):
        runner.infer(inputs)
    wall, own = [], []
    for _ in range(runs):
        start = time.perf_counter_ns()
        runner.infer(inputs)
        wall.append((time.perf_counter_ns() - start) / 1e6)
        own.append(runner.request.latency)
    return {"wall_p50_ms": float(np.median(wall)), "runtime_p50_ms": float(np.median(own)),
            "overhead_us": float(np.median(np.subtract(wall, own)) * 1000)}


def _ratio(ours: list[float], theirs: list[float]) -> dict:
    per_round = [a / b for a, b in zip(ours, theirs)]
    return {"ratio": round(float(np.median(ours) / np.median(theirs)), 3),
            "round_ratios": [round(r, 3) for r in per_round]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for path in args.artifacts:
        model_file = resolve_model_file(path)
        ours, bare, app, own = [], [], [], []
        for _ in range(args.rounds):
            bare.append(bare_loop(model_file, args.threads, args.runs, args.warmup)["p50_ms"])
            result = bench_model(model_file, threads=args.threads, runs=args.runs, warmup=args.warmup)
            ours.append(result["p50_ms"])
            if result["format"] == "openvino":
                app.append(benchmark_app(model_file, args.threads, args.runs))
                own.append(own_latency(model_file, args.threads, args.runs, args.warmup))
        vs_bare = _ratio(ours, bare)
        row = {"artifact": str(Path(path)), "format": result["format"], "precision": result["precision"],
               "threads": args.threads, "rounds": args.rounds, "edgetl_p50_ms": round(float(np.median(ours)), 4),
               "bare_p50_ms": round(float(np.median(bare)), 4), "ratio_vs_bare": vs_bare["ratio"],
               "round_ratios_vs_bare": vs_bare["round_ratios"]}
        extra = ""
        if app and all(a is not None for a in app):
            vs_app = _ratio(ours, app)
            row.update(benchmark_app_p50_ms=round(float(np.median(app)), 4), ratio_vs_benchmark_app=vs_app["ratio"],
                       round_ratios_vs_benchmark_app=vs_app["round_ratios"])
            extra = (f" | benchmark_app {row['benchmark_app_p50_ms']:.3f} ms (x{vs_app['ratio']}, rounds "
                     f"{min(vs_app['round_ratios'])}-{max(vs_app['round_ratios'])})")
        if own:
            wall = float(np.median([o["wall_p50_ms"] for o in own]))
            runtime = float(np.median([o["runtime_p50_ms"] for o in own]))
            row.update(same_calls_wall_p50_ms=round(wall, 4), same_calls_runtime_p50_ms=round(runtime, 4),
                       same_calls_ratio=round(wall / runtime, 3),
                       overhead_us=round(float(np.median([o["overhead_us"] for o in own])), 1))
            extra += (f" | same calls: wall/OpenVINO's own latency x{row['same_calls_ratio']} "
                      f"(+{row['overhead_us']:.0f} us)")
        rows.append(row)
        print(f"{row['artifact']:40s} edgetl p50 {row['edgetl_p50_ms']:8.3f} ms | bare {row['bare_p50_ms']:8.3f} ms "
              f"(x{vs_bare['ratio']}, rounds {min(vs_bare['round_ratios'])}-{max(vs_bare['round_ratios'])}){extra}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
