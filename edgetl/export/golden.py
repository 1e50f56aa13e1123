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

from edgetl.contract.images import load_rgb, shrink
from edgetl.contract.sidecar import GoldenSample
from edgetl.data.splits import load_split
from edgetl.export.calibration import balanced_draw
from edgetl.runtime.base import softmax

GOLDEN_DIR = "golden"


def make_golden(reference, folder: Path, count: int = 4) -> list[GoldenSample]:
    """Write `count` held-out images to folder/golden with the float model's outputs.

    Chosen among class-balanced candidates for a large float margin (top-1 minus
    top-2 probability, correct predictions first): golden samples test the
    pipeline, so they should not sit on a decision boundary that int8 noise may cross.
    """
    test = load_split(reference.run.path, "test") if (reference.run.splits / "test.txt").is_file() else []
    samples = balanced_draw(test or load_split(reference.run.path, "val"), 4 * count, seed=1)
    root, side = reference.run.data_root(), 2 * max(reference.preprocess.size)
    index = {name: i for i, name in enumerate(reference.labels)}
    images = [shrink(load_rgb(root / s.path), side) for s in samples]
    logits = reference.logits(np.stack([reference.preprocess.resize_crop(im) for im in images]))
    probs = softmax(logits)
    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    correct = probs.argmax(1) == np.array([index[s.label] for s in samples])
    ranking = sorted(range(len(samples)), key=lambda i: (not correct[i], -margin[i]))
    chosen: list[int] = []
    for i in ranking:  # the best of each class first ...
        if len(chosen) < count and samples[i].label not in {samples[j].label for j in chosen}:
            chosen.append(i)
    for i in ranking:  # ... then the best of the rest
        if len(chosen) < count and i not in chosen:
            chosen.append(i)
    (folder / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    golden = []
    for number, i in enumerate(chosen):
        name = f"{GOLDEN_DIR}/{number:02d}.png"
        images[i].save(folder / name)
        top = np.argsort(-probs[i])[:5]
        golden.append(GoldenSample(file=name, label=samples[i].label, top1=int(logits[i].argmax()),
                                   topk=[[int(k), round(float(probs[i][k]), 6)] for k in top],
                                   logits=[round(float(v), 5) for v in logits[i]]))
    return golden
