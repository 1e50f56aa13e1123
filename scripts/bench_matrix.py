#!/usr/bin/env python
"""The backbone matrix: every recipe in models/, exported to every format and precision, measured.

For each backbone: a run on the photo set (`edgetl.data.photos`: train/val/test cut from
disjoint strips of each photograph), trained from the offline ImageNet weights where a
package ships them and from scratch otherwise (the table says which); then `export_run`
with the default gate for fp32, fp16 and int8 in ONNX, OpenVINO and TFLite; `run_parity`
on the *test* split (which chose nothing); and p50 at each thread count, every artifact of a
backbone interleaved over rounds, so a drifting neighbour hits them alike. It writes one
Markdown page (the machine, the command, the table), one JSON file and one figure.

Resumable: runs, exports (up to date by provenance) and each backbone's measured rows are
kept in --workdir; a killed matrix picks up where it stopped. Delete a backbone's
`rows-<name>.json` to re-measure it.

    python scripts/bench_matrix.py --workdir /work/matrix --out docs/benchmarks
    python scripts/bench_matrix.py --models mobilenet_v3_small,mobilenet_v2 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMATS, PRECISIONS = ("onnx", "openvino", "tflite"), ("fp32", "fp16", "int8")


def backbones() -> list[str]:
    return sorted(p.stem for p in (REPO / "models").glob("*.yaml"))


def train(workdir: Path, model: str, data: Path, size: int, epochs: int) -> Path:
    """The backbone's photo run (reused when finished, resumed when killed)."""
    from edgetl.errors import EdgetlError
    from edgetl.train import TrainConfig, finetune

    run_dir = workdir / f"run-{model}"
    if (run_dir / "summary.json").is_file():
        return run_dir
    common = dict(data=str(data), model=model, out=str(run_dir), epochs=epochs, img_size=size, batch_size=32,
                  augment="light")
    try:
        finetune(TrainConfig(**common, pretrained=True), resume=(run_dir / "last.pt").is_file())
    except EdgetlError as exc:  # no offline ImageNet weights here: a from-scratch run, said so in the table
        print(f"{model}: {exc.message}; training from scratch", file=sys.stderr)
        finetune(TrainConfig(**common, pretrained=False, lr=0.003, backbone_lr_mult=1.0), resume=(run_dir / "last.pt").is_file())
    return run_dir


def interleaved_p50(paths: list[str], threads: int, rounds: int, runs: int) -> dict[str, float]:
    from edgetl.bench.measure import bench_model

    samples: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for path in paths:
            samples[path].append(bench_model(path, threads=threads, runs=runs, warmup=10)["p50_ms"])
    return {p: round(statistics.median(v), 4) for p, v in samples.items()}


def measure(workdir: Path, model: str, run_dir: Path, args) -> list[dict]:
    """One backbone's rows: export (gated), parity on the test split, p50 per thread count."""
    from edgetl.export import ExportSettings, export_run
    from edgetl.parity import run_parity

    started = time.perf_counter()
    settings = ExportSettings(max_drop=args.max_drop, qat=args.qat)
    exported = export_run(run_dir, args.formats, args.precisions, settings, out=workdir / f"export-{model}")
    made = [a for a in exported["artifacts"] if a["delivered"]]
    if "int8" in args.precisions and args.max_drop is not None:  # int8 as it comes, timed whatever the gate chose
        ungated = export_run(run_dir, args.formats, ["int8"], ExportSettings(max_drop=None),
                             out=workdir / f"export-{model}-gate-off")
        made += [{**a, "precision": "int8 (gate off)"} for a in ungated["artifacts"] if a["delivered"]]
    parity = run_parity(run_dir, artifacts=[a["path"] for a in made], max_drop=None,
                        report_dir=workdir / f"parity-{model}")
    tested = {r["path"]: r for r in parity["artifacts"]}
    p50 = {t: interleaved_p50([a["path"] for a in made], t, args.rounds, args.runs) for t in args.threads}
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = []
    for art in made:
        test = tested.get(art["path"], {})
        source = str(summary.get("weights_source", ""))
        rows.append({"model": model, "weights": "from scratch" if source == "random init" else "ImageNet",
                     "format": art["format"], "precision": art["precision"], "delivered": art["delivered"],
                     "status": art["status"], "export_seconds": art["seconds"], "size_mb": round(art["size_bytes"] / 1e6, 2),
                     "float_test_accuracy": parity["float"]["accuracy"], "test_images": parity["images"],
                     "test_accuracy": test.get("accuracy"), "drop_pp": test.get("drop_pp"),
                     "agreement": test.get("agreement"), "float_layers": len(art.get("float_layers") or []),
                     "gate_ratio": (art.get("speed") or {}).get("ratio"),
                     **{f"p50_{t}t_ms": p50[t][art["path"]] for t in args.threads}})
    for t in args.threads:
        fp32 = {r["format"]: r[f"p50_{t}t_ms"] for r in rows if r["delivered"] == "fp32" and r["precision"] == "fp32"}
        for r in rows:
            r[f"vs_fp32_{t}t"] = round(r[f"p50_{t}t_ms"] / fp32[r["format"]], 3) if r["format"] in fp32 else None
    print(f"{model}: measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return rows


def machine() -> str:
    from edgetl.export.speed import host_cpu

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    isa = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "avx2", "asimddp") if f" {f}" in flags]
    return f"{host_cpu()}, {os.cpu_count()} cores ({', '.join(isa) or 'no VNNI/AMX flags'}), {platform.system()}"


def _fmt(value, spec: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}" if spec else str(value)


def markdown(rows: list[dict], args, command: str) -> str:
    threads = args.threads
    head = ["backbone", "weights", "format", "asked", "delivered", "export s", "MB", "float top-1", "test images",
            "drop pp", "agreement", "float layers", *[f"p50 {t}t ms" for t in threads], *[f"vs fp32 {t}t" for t in threads]]
    lines = ["# Backbone matrix", "", f"Machine: {machine()}.", "", f"Command: `{command}`", "",
             f"Image size {args.size} px; photo set test split (one image = 100 / test images pp); p50 is the median of "
             f"{args.rounds} interleaved rounds of {args.runs} runs; `vs fp32` is int8 (or fp16) p50 over the same "
             "format's fp32 p50 in the same run. `asked int8` rows went through the default gate (it may deliver fp16 "
             "or fp32); `int8 (gate off)` rows are the first int8 recipe as it comes, timed whatever the gate chose.",
             "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["model"], r["weights"], r["format"], r["precision"], r["delivered"], _fmt(r["export_seconds"], ".1f"),
                 _fmt(r["size_mb"], ".2f"), _fmt(r["float_test_accuracy"], ".4f"), r["test_images"],
                 _fmt(r["drop_pp"], ".3f"), _fmt(r["agreement"], ".4f"), r["float_layers"],
                 *[_fmt(r[f"p50_{t}t_ms"], ".3f") for t in threads], *[_fmt(r[f"vs_fp32_{t}t"], ".2f") for t in threads]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path, threads: int) -> None:
    """int8 / fp32 p50 per backbone and format (below 1: int8 is faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    int8 = [r for r in rows if r["delivered"] == "int8" and r["precision"].startswith("int8")
            and r.get(f"vs_fp32_{threads}t")]
    int8 = [r for r in int8 if r["precision"] == "int8"] + [  # the gated int8, else the ungated one
        r for r in int8 if r["precision"] != "int8" and not any(
            g["precision"] == "int8" and g["model"] == r["model"] and g["format"] == r["format"] for g in int8)]
    models = sorted({r["model"] for r in int8})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models) + 2), 4))
    width = 0.8 / len(FORMATS)
    for i, fmt in enumerate(FORMATS):
        values = [next((r[f"vs_fp32_{threads}t"] for r in int8 if r["model"] == m and r["format"] == fmt), 0)
                  for m in models]
        ax.bar([k + i * width for k in range(len(models))], values, width, label=fmt)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + width for k in range(len(models))], models, rotation=20, ha="right")
    ax.set_ylabel(f"int8 p50 / fp32 p50 ({threads} threads)")
    ax.set_title("int8 p50 / fp32 p50 (below 1: int8 is faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(backbones()), help="comma-separated recipes (default: all)")
    parser.add_argument("--workdir", default="matrix-work", help="runs, exports and measured rows (resumable)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks"), help="where the page, JSON and PNG go")
    parser.add_argument("--data", help="an image folder instead of the photo set (tests use a tiny one)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--max-drop", default="1.0", help="the export gate's bound ('none': gate off)")
    parser.add_argument("--qat", default="auto", choices=("auto", "force", "off"), help="the gate's QAT step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    args.models, args.formats = args.models.split(","), args.formats.split(",")
    args.precisions, args.threads = args.precisions.split(","), [int(t) for t in args.threads.split(",")]
    args.max_drop = None if args.max_drop == "none" else float(args.max_drop)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir, out = Path(args.workdir), Path(args.out)
    workdir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else None
    if data is None:
        from edgetl.data.photos import write_photo_set

        data = workdir / "photos"
        if not data.is_dir():
            write_photo_set(data)
    rows = []
    for model in args.models:
        cached = workdir / f"rows-{model}.json"
        if not cached.is_file():
            measured = measure(workdir, model, train(workdir, model, data, args.size, args.epochs), args)
            from edgetl import atomic

            atomic.write_json(cached, measured)
        rows += json.loads(cached.read_text())
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_matrix.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    (out / "matrix.md").write_text(markdown(rows, args, command) + "\n![int8 against fp32](matrix.png)\n")
    (out / "matrix.json").write_text(json.dumps({"machine": machine(), "command": command, "rows": rows}, indent=1))
    figure(rows, out / "matrix.png", max(args.threads))
    print(f"wrote {out / 'matrix.md'}, {out / 'matrix.json'}, {out / 'matrix.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
