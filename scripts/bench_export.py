#!/usr/bin/env python
"""Export benchmark: seconds, size and int8 fidelity per format, on real fine-tunes.

For each run (trained here if not given): export every format in fp32 and int8
(no gate, so the first int8 attempt is what is measured), then parity on the
test split. Prints one table per run and, with --json, the numbers.

Targets (issue 4): all six artifacts in under 2 minutes on 2 cores; int8 drop
<= 0.3 percentage points and >= 99% top-1 agreement with float for every format.

    python scripts/bench_export.py                    # demo digits + a 224 px photo fine-tune
    python scripts/bench_export.py --run runs/my-run  # an existing run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from edgetl.export import FORMATS, export_run
from edgetl.parity import run_parity
from edgetl.train import TrainConfig, finetune


def photo_dataset(out: Path, per_class: int = 40) -> Path:
    """A 224 px dataset from real scikit-image photos: 5 classes, augmented crops of each photo."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("chelsea", "coffee", "astronaut", "rocket", "camera"):
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = photo.size
            side = int(min(w, h) * rng.uniform(0.55, 0.95))
            left, top = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
            crop = photo.crop((left, top, left + side, top + side)).resize((256, 256))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            pixels = np.clip(np.asarray(crop, np.float32) * rng.uniform(0.7, 1.3) + rng.normal(0, 8, (256, 256, 3)),
                             0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(out / name / f"{i:03d}.jpg", quality=92)
    return out


def train_runs(workdir: Path) -> list[tuple[str, Path]]:
    from edgetl.data.demo import write_demo_data

    digits = write_demo_data(workdir / "digits", per_class=180, size=64)["path"]
    runs = [("digits 64px lite0", finetune(TrainConfig(
        data=digits, model="efficientnet_lite0", out=str(workdir / "digits-run"), epochs=3, img_size=64,
        batch_size=32, lr=0.003, backbone_lr_mult=0.5)))]
    photos = photo_dataset(workdir / "photos")
    runs.append(("photos 224px lite0", finetune(TrainConfig(
        data=str(photos), model="efficientnet_lite0", out=str(workdir / "photo-run"), epochs=2, img_size=224,
        batch_size=16, strategy="finetune", augment="light"))))
    return [(name, Path(summary["run_dir"])) for name, summary in runs]


def bench_run(name: str, run_dir: Path, calib_size: int) -> dict:
    started = time.perf_counter()
    exported = export_run(run_dir, list(FORMATS), ["fp32", "int8"], calib_size=calib_size)
    export_seconds = time.perf_counter() - started
    parity = run_parity(run_dir, max_drop=None)
    by_path = {r["path"]: r for r in parity["artifacts"]}
    rows = []
    for art in exported["artifacts"]:
        test = by_path.get(art["path"], {})
        rows.append({"format": art["format"], "precision": art["delivered"], "status": art["status"],
                     "seconds": art["seconds"], "size_mb": round(art["size_bytes"] / 1e6, 2),
                     "val_drop_pp": art["drop_pp"], "val_agreement": art["agreement"],
                     "test_accuracy": test.get("accuracy"), "test_drop_pp": test.get("drop_pp"),
                     "test_agreement": test.get("agreement")})
    return {"name": name, "run_dir": str(run_dir), "float_test_accuracy": parity["float"]["accuracy"],
            "test_images": parity["images"], "export_seconds": round(export_seconds, 1), "artifacts": rows}


def _cell(value, width: int, spec: str) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) else f"{'-':>{width}s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", help="existing run directory (repeatable)")
    parser.add_argument("--calib-size", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(Path(r).name, Path(r)) for r in args.run] if args.run else train_runs(Path(tmp))
        results = [bench_run(name, run_dir, args.calib_size) for name, run_dir in runs]
    for result in results:
        print(f"\n{result['name']}: float test accuracy {result['float_test_accuracy']:.4f} on "
              f"{result['test_images']} images; all artifacts exported in {result['export_seconds']} s", file=sys.stderr)
        print(f"{'format':9s} {'prec':5s} {'s':>6s} {'MB':>6s} {'val drop':>9s} {'test top-1':>10s} "
              f"{'test drop':>9s} {'agree':>7s}", file=sys.stderr)
        for r in result["artifacts"]:
            cells = [_cell(r["seconds"], 6, ".1f"), _cell(r["size_mb"], 6, ".2f"), _cell(r["val_drop_pp"], 9, ".2f"),
                     _cell(r["test_accuracy"], 10, ".4f"), _cell(r["test_drop_pp"], 9, ".2f"),
                     _cell(r["test_agreement"], 7, ".3f")]
            print(f"{r['format']:9s} {str(r['precision']):5s} " + " ".join(cells)
                  + ("" if r["status"] in ("ok", "fallback", "up-to-date") else f"  {r['status']}"), file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
