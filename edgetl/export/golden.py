"""Golden samples: a few held-out photos stored in the artifact with the float model's answer.

They prove on any machine, with nothing but the artifact folder, that runtime and
preprocessing reproduce the trained model: the stored image goes through the
sidecar's preprocessing and the runtime, and must give the float model's top-1.
Images are stored as lossless PNGs shrunk to twice the input size (so the resize
step is still exercised), and the expected outputs are computed from the stored
file itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgetl.data.splits import load_split
from edgetl.export.calibration import balanced_draw
from edgetl.runtime.base import Runner, softmax
from edgetl.runtime.images import load_rgb
from edgetl.runtime.sidecar import GoldenSample

GOLDEN_DIR = "golden"


def make_golden(reference, folder: Path, count: int = 4) -> list[GoldenSample]:
    """Write `count` class-balanced held-out images to folder/golden and their float outputs."""
    split = "test" if (reference.run.splits / "test.txt").is_file() and load_split(reference.run.path, "test") \
        else "val"
    samples = balanced_draw(load_split(reference.run.path, split), count, seed=1)
    root = reference.run.data_root()
    (folder / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    side = 2 * max(reference.preprocess.size)
    golden = []
    for number, sample in enumerate(samples):
        image = load_rgb(root / sample.path)
        scale = side / min(image.size)
        if scale < 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR)
        name = f"{GOLDEN_DIR}/{number:02d}.png"
        image.save(folder / name)
        stored = reference.preprocess.resize_crop(load_rgb(folder / name))
        logits = reference.logits(stored[None])[0]
        probs = softmax(logits[None])[0]
        top = np.argsort(-probs)[:5]
        golden.append(GoldenSample(file=name, label=sample.label, top1=int(logits.argmax()),
                                   topk=[[int(i), round(float(probs[i]), 6)] for i in top],
                                   logits=[round(float(v), 5) for v in logits]))
    return golden


def check_golden(runner: Runner, folder: str | Path) -> dict:
    """Run the stored golden images through `runner`; every top-1 must match the float model's."""
    folder = Path(folder)
    results = []
    for sample in runner.sidecar.golden:
        logits = runner.infer(runner.preprocess(folder / sample.file))[0]
        got = int(np.argmax(logits))
        results.append({"file": sample.file, "expected": runner.labels[sample.top1], "got": runner.labels[got],
                        "match": got == sample.top1,
                        "max_logit_error": round(float(np.max(np.abs(logits - np.asarray(sample.logits)))), 5)})
    passed = bool(results) and all(r["match"] for r in results)
    return {"passed": passed, "samples": results, "matched": sum(r["match"] for r in results), "total": len(results)}
