#!/usr/bin/env python
"""Export benchmark: int8 fidelity and speed per format, gate off against the default gate.

On a real-photo fine-tune (the photo set of `edgetl.data.photos`: 10 classes,
train/val/test cut from disjoint strips of each photograph; trained here for 4
epochs at 128 px unless --run is given), for each format: fp32, the first int8
recipe with the gate off (`--max-drop none`), the default gated int8 and, with
`--variants ...,qat`, int8 from quantization-aware training (`--qat`, with the default
gate, or `qat alone` with the gate off). The
gate chose on the validation split; the table quotes the *test* split, which
chose nothing: top-1, drop in pp (one image = 100 / N pp), agreement with float,
and p50 int8 / p50 fp32 at --threads, interleaved over rounds (this VM drifts).

    python scripts/bench_export.py                          # trains the photo run first (~3 min)
    python scripts/bench_export.py --run runs/my-run --json
    python scripts/bench_export.py --model mobilenet_v3_large --no-pretrained
    python scripts/bench_export.py --run RUN --variants "gate off,default gate,qat"   # QAT beside PTQ
    python scripts/bench_export.py --workdir /tmp/photo-bench   # keep the photo set and the run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from edgetl.bench.measure import bench_model
from edgetl.evaluation import fp32_ratios
from edgetl.export import FORMATS, ExportSettings, export_run
from edgetl.parity import run_parity


def train_photo_run(workdir: Path, model: str, pretrained: bool) -> Path:
    from edgetl.data.photos import write_photo_set
    from edgetl.train import TrainConfig, finetune

    run_dir = workdir / f"run-{model}"
    if (run_dir / "summary.json").is_file():  # a --workdir kept from an earlier bench: its run is reused
        return run_dir
    data = write_photo_set(workdir / "photos")["path"]
    summary = finetune(TrainConfig(data=data, model=model, out=str(run_dir), epochs=4, img_size=128,
                                   batch_size=32, augment="light", pretrained=pretrained))
    return Path(summary["run_dir"])


def ratios(paths: dict[str, str], threads: int, rounds: int, runs: int) -> dict[str, float]:
    """p50 per artifact, the median over interleaved rounds."""
    import statistics

    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            samples[name].append(bench_model(path, threads=threads, runs=runs, warmup=20)["p50_ms"])
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


VARIANTS = {  # name: (output folder, ExportSettings fields)
    "gate off": ("off", {"max_drop": None, "qat": "off"}),
    "default gate": ("gated", {"max_drop": 1.0}),
    "qat": ("qat", {"max_drop": 1.0, "qat": "force"}),  # `export --qat` as a user types it (default gate)
    "qat alone": ("qat-alone", {"max_drop": None, "qat": "force"}),  # `export --qat --max-drop none`
}


def bench_run(run_dir: Path, threads: int, rounds: int, runs: int, names: list[str]) -> dict:
    variants = {}
    for name in ["gate off", *[n for n in names if n != "gate off"]]:
        folder, options = VARIANTS[name]
        started = time.perf_counter()
        precisions = ["fp32", "int8"] if name == "gate off" else ["int8"]
        exported = export_run(run_dir, list(FORMATS), precisions, ExportSettings(**options),
                              out=run_dir / f"bench-export-{folder}")
        variants[name] = {"seconds": round(time.perf_counter() - started, 1), "export": exported}
    fp32 = {a["format"]: a for a in variants["gate off"]["export"]["artifacts"] if a["precision"] == "fp32"}
    int8 = [(name, a) for name in variants for a in variants[name]["export"]["artifacts"] if a["precision"] == "int8"]
    paths = [a["path"] for a in fp32.values()] + [a["path"] for _, a in int8]
    parity = run_parity(run_dir, artifacts=paths, max_drop=None, report_dir=run_dir / "bench-export-parity")
    by_path = {r["path"]: r for r in parity["artifacts"]}
    p50 = ratios({p: p for p in paths}, threads, rounds, runs)
    rows = []
    for name, art in [("fp32", a) for a in fp32.values()] + int8:
        test = by_path.get(art["path"], {})
        rows.append({"variant": name, "format": art["format"], "delivered": art["delivered"], "status": art["status"],
                     "float_layers": art.get("float_layers", []), "seconds": art["seconds"],
                     "val_drop_pp": art["drop_pp"], "val_agreement": art["agreement"],
                     "test_accuracy": test.get("accuracy"), "test_drop_pp": test.get("drop_pp"),
                     "test_agreement": test.get("agreement"), "p50_ms": p50.get(art["path"])})
    for row, ratio in zip(rows, fp32_ratios(rows, "delivered", "p50_ms")):
        row["vs_fp32"] = ratio
    return {"run_dir": str(run_dir), "float_test_accuracy": parity["float"]["accuracy"], "test_images": parity["images"],
            "threads": threads, "export_seconds": {k: v["seconds"] for k, v in variants.items()},
            "notes": variants.get("default gate", variants["gate off"])["export"].get("notes", []), "artifacts": rows}


def _cell(value, width: int, spec: str) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) else f"{'-':>{width}s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="an existing run directory (default: train the photo run)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--no-pretrained", action="store_true", help="train from scratch (no offline weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--variants", default="gate off,default gate",
                        help=f"comma-separated, of: {', '.join(VARIANTS)} ('gate off' always runs: it gives fp32)")
    parser.add_argument("--workdir", help="keep the photo set and the trained run here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        run_dir = Path(args.run) if args.run else train_photo_run(workdir, args.model, not args.no_pretrained)
        result = bench_run(run_dir, args.threads, args.rounds, args.runs, args.variants.split(","))
    images = result["test_images"]
    print(f"\n{run_dir}: float test top-1 {result['float_test_accuracy']:.4f} on {images} test images "
          f"(one image = {100 / images:.3f} pp); export seconds {result['export_seconds']}; "
          f"p50 at {args.threads} threads", file=sys.stderr)
    print(f"{'variant':13s} {'format':9s} {'prec':5s} {'float':>5s} {'s':>6s} {'val drop':>8s} {'val agr':>7s} "
          f"{'test top-1':>10s} {'test drop':>9s} {'test agr':>8s} {'p50 ms':>7s} {'vs fp32':>7s}", file=sys.stderr)
    for r in result["artifacts"]:
        cells = [_cell(len(r["float_layers"]), 5, "d"), _cell(r["seconds"], 6, ".1f"), _cell(r["val_drop_pp"], 8, ".2f"),
                 _cell(r["val_agreement"], 7, ".4f"), _cell(r["test_accuracy"], 10, ".4f"),
                 _cell(r["test_drop_pp"], 9, ".3f"), _cell(r["test_agreement"], 8, ".4f"), _cell(r["p50_ms"], 7, ".3f"),
                 _cell(r["vs_fp32"], 7, ".3f")]
        print(f"{r['variant']:13s} {r['format']:9s} {str(r['delivered']):5s} " + " ".join(cells), file=sys.stderr)
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
