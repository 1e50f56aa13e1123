"""`edgetl bench`: latency of exported models on this machine (no torch)."""

from __future__ import annotations

import click

from edgetl.cli.common import CountType, json_option, percent, table, threads_option


@click.command(short_help="Latency percentiles, FPS, memory and per-layer time of exported models.")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@threads_option(sweep=True)
@click.option("--runs", type=int, help="Timed runs per model (default 100).")
@click.option("--seconds", type=float, help="Time each model for this long instead of a run count.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@click.option("--batch", type=CountType(sweep=True), default="1", show_default=True,
              help="Batch size, or a sweep like 1,4.")
@click.option("--end-to-end", "end_to_end", type=click.Path(exists=True),
              help="Also time decode + preprocessing + inference + top-k on this image or folder, stage by stage.")
@click.option("--layers", is_flag=True, help="Add a per-layer time breakdown (onnxruntime, OpenVINO).")
@click.option("--device", help="Execution device: cpu, cuda, tensorrt, openvino (ONNX); CPU, GPU, NPU (OpenVINO).")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Latency distribution figure; siblings hold the sweep and trade-off figures ('' for none). "
                   "Default: bench.png beside the artifact folders.")
@json_option
def bench(models, threads, runs, seconds, warmup, batch, layers, device, plot, end_to_end):
    """Benchmark MODELS (model files or artifact folders) through edgetl's runtime.

    Per model: load time, first inference, then min/p50/p90/p95/p99/max/mean/std latency over the
    timed runs, FPS, peak memory increase and size; the CPU features are printed beside them
    (int8 is only faster than fp32 on CPUs with int8 dot-product instructions).
    """
    from edgetl.bench import default_figure, run_bench
    from edgetl.bench.report import label
    from edgetl.console import say, warn

    report = run_bench(list(models), threads=threads or [None], runs=runs, seconds=seconds, warmup=warmup,
                       batch=batch, layers=layers, device=device,
                       plot=default_figure(list(models)) if plot is None else plot or None,
                       end_to_end=end_to_end)
    cpu = report["cpu"]
    say(f"CPU: {cpu['model']} ({cpu['logical_cores']} logical cores; {', '.join(cpu['features']) or '-'})"
        + (f" - {cpu['note']}" if cpu["note"] else ""))
    table("bench", ["Model", "Format", "Precision", "Threads", "Batch", "Size MB", "Accuracy", "Load ms", "p50 ms",
                    "p99 ms", "vs fp32", "FPS", "RSS MB"],
          [[label(m), m["format"], m["precision"], m["threads"], m["batch"], m["size_mb"], percent(m["accuracy"]),
            m["load_ms"], m["p50_ms"], m["p99_ms"], m["vs_fp32"] if m["vs_fp32"] is not None else "-", m["fps"],
            m["rss_peak_mb"]] for m in report["models"]])
    ends = [m for m in report["models"] if m.get("end_to_end")]
    if ends:
        table(f"end to end on {ends[0]['end_to_end']['images']} image(s): p50 ms per stage (share of the mean)",
              ["Model", "Threads", "decode", "pre", "infer", "post", "total", "FPS"],
              [[label(m), m["threads"], *[f"{e['stages'][s]['p50_ms']} ({100 * e['share'][s]:.0f}%)"
                                          for s in ("decode", "pre", "infer", "post")],
                e["stages"]["total"]["p50_ms"], e["fps"]] for m in ends for e in [m["end_to_end"]]])
    for row in report["sweep"]:
        say(f"fastest setting for {row['path']}: threads {row['best_threads']}, batch {row['best_batch']} "
            f"({row['p50_ms_per_image']} ms per image at p50)")
    if report.get("tradeoff"):
        say("best trade-offs (no other artifact is faster and at least as accurate): "
            + ", ".join(report["tradeoff"]["best"]))
    for name, figure in (report.get("figures") or {}).items():
        say(f"figure ({name}): {figure}")
    for model in report["models"]:
        layer = model.get("layers")
        if layer and layer.get("supported"):
            table(f"slowest layers: {label(model)}", ["Layer", "Op", "ms", "%"],
                  [[r["name"][-60:], r["op_type"], r["ms"], r["percent"]] for r in layer["top_layers"][:10]])
        elif layer:
            say(f"{label(model)}: per-layer times unavailable: {layer['note']}")
    for message in report["warnings"]:  # what the device did to these timings (device_state.compare_states)
        warn(message)
    for model in report["models"]:
        model.pop("samples_ms", None)
    return report

