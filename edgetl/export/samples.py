"""Writing the held-out photos every artifact carries (layout: contract/artifact.py).

The photos are a class-balanced draw of the run's test split (validation when there is
none), the same for every artifact of one export. Photos much larger than the model needs
are shrunk (short side to twice the model's input, bilinear (antialiased by PIL on downscale), saved as JPEG at quality
95), so six artifacts of a run of 12 MP phone photos stay small; a shrunk photo can flip a near-tie
against its original file, which is why the golden samples, not these, prove the runtime
exact. These measure accuracy where the artifact runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgetl import atomic
from edgetl.contract.artifact import LABELS_FILE
from edgetl.contract.images import UnreadableImageError, load_rgb, shrink
from edgetl.data.splits import load_split
from edgetl.errors import BadInputError
from edgetl.export.calibration import balanced_draw

DEFAULT_COUNT = 50


def write_samples(run, preprocess, folder: Path, count: int = DEFAULT_COUNT) -> dict:
    """Write up to `count` held-out photos and labels.json into `folder`; returns the sidecar's
    `samples` record: {"count", "split"}."""
    split = "test"
    try:
        held_out = load_split(run.path, "test")
        if not held_out:
            split, held_out = "val", load_split(run.path, "val")
        root = run.data_root()
    except (BadInputError, OSError, KeyError):
        held_out, root = [], None
    folder.mkdir(parents=True, exist_ok=True)
    short_side = 2 * max(preprocess.size)
    labels = {}
    for sample in balanced_draw(held_out, count, seed=2):
        source = root / sample.path
        name = f"{len(labels):04d}"
        try:
            image = load_rgb(source)
        except UnreadableImageError:
            continue  # gone or damaged since training: fewer samples, not a failed export
        if min(image.size) > 2 * short_side:
            name += ".jpg"
            shrink(image, short_side).save(folder / name, quality=95)
        else:
            name += source.suffix.lower()
            shutil.copyfile(source, folder / name)
        labels[name] = sample.label
    atomic.write_json(folder / LABELS_FILE, labels)
    return {"count": len(labels), "split": split if labels else None}
