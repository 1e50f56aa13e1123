#!/usr/bin/env python
"""QAT recipes side by side on one run: the student's validation agreement with float per epoch.

Each setting trains in a copy of the run (its own qat/ folder; the run itself is not touched),
so recipes are chosen on the *validation* split and the test split stays unseen. Prints one
row per epoch (epoch 0: calibrated fake quantization before any step) and the seconds spent.

    python scripts/bench_qat.py --run runs/photo --set lr=1e-5 --set lr=1e-4
    python scripts/bench_qat.py --run RUN --set lr=1e-4,epochs=3,freeze_observers_after=1 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import fields, replace
from pathlib import Path

from edgetl.export.qat.loop import QAT_DIR, quantization_aware_finetune
from edgetl.export.qat.settings import QatSettings

RUN_FILES = (".edgetl", "best.pt", "config.yaml", "dataset.json", "labels.json", "preprocess.json", "splits",
             "summary.json", "metrics.jsonl")


def parse_setting(text: str) -> QatSettings:
    """'lr=1e-4,epochs=3' -> QatSettings(lr=1e-4, epochs=3)."""
    types = {f.name: f.type for f in fields(QatSettings)}
    values = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in types:
            sys.exit(f"unknown QAT setting {name!r}; choose from {', '.join(types)}")
        values[name] = None if value.strip().lower() == "none" else (
            float(value) if "float" in str(types[name]) else int(value))
    return replace(QatSettings(), **values)


def copy_run(run: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in RUN_FILES:
        source = run / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        elif source.is_file():
            shutil.copy2(source, target / name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run directory")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="QatSettings fields, comma-separated (repeat for several recipes)")
    parser.add_argument("--workdir", help="where the copies go (default: RUN/bench-qat)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run = Path(args.run)
    workdir = Path(args.workdir or run / "bench-qat")
    results = []
    for index, text in enumerate(args.settings or [""]):
        settings = parse_setting(text)
        copy = copy_run(run, workdir / f"recipe-{index}")
        summary = quantization_aware_finetune(copy, settings)
        epochs = [json.loads(line) for line in (copy / QAT_DIR / "metrics.jsonl").read_text().splitlines()]
        results.append({"setting": text or "default", "settings": summary["settings"], "epochs": epochs,
                        "best_epoch": summary["best_epoch"], "best": summary["best"],
                        "float_val_accuracy": summary["float_val_accuracy"], "seconds": summary["seconds"]})
        (copy / QAT_DIR / "last.pt").unlink(missing_ok=True)  # the optimizer state: 3x the model, not needed
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        images = result["best"]["images"]
        print(f"\n{result['setting']}: {result['seconds']:.0f} s, float val top-1 "
              f"{100 * result['float_val_accuracy']:.2f}% on {images} images (one image = {100 / images:.3f} pp)")
        print(f"{'epoch':>5} {'top-1 %':>8} {'agree %':>8} {'SQNR dB':>8} {'loss':>8}")
        for line in result["epochs"]:
            print(f"{line['epoch']:>5} {100 * line['accuracy']:>8.2f} {100 * line['agreement']:>8.2f} "
                  f"{line.get('sqnr_db', float('nan')):>8.2f} {line.get('distillation_loss', float('nan')):>8.4f}")


if __name__ == "__main__":
    main()
