"""Train/val/test splits: deterministic, stratified, and saved with the run.

The split files (`splits/<name>.txt`, one `label<TAB>relative/path` per line)
are part of the run-directory contract: export calibrates on `train`, parity and
deploy evaluate on `test` (or `val`), so every later stage sees exactly the
images training held out. `split_digest` fingerprints them for the sidecar.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from edgetl import atomic
from edgetl.data.folder import SPLIT_NAMES, Sample
from edgetl.errors import BadInputError, DatasetError


def stratified_split(
    samples: list[Sample], classes: list[str], val_split: float, test_split: float, seed: int
) -> dict[str, list[Sample]]:
    """Split each class separately so every split keeps the class proportions.

    Each class keeps at least one training image and, when it has enough images,
    at least one validation image.
    """
    if not 0 < val_split < 1 or not 0 <= test_split < 1 or val_split + test_split >= 1:
        raise BadInputError(
            f"--val-split {val_split} and --test-split {test_split} must be fractions summing to less than 1"
        )
    rng = random.Random(seed)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    for label in classes:
        members = sorted((s for s in samples if s.label == label), key=lambda s: s.path)
        rng.shuffle(members)
        n = len(members)
        n_test = int(round(n * test_split)) if test_split > 0 else 0
        n_val = max(1, int(round(n * val_split))) if n >= 2 else 0
        while n_val + n_test > n - 1 and (n_test > 0 or n_val > 1):
            if n_test >= n_val and n_test > 0:
                n_test -= 1
            else:
                n_val -= 1
        splits["test"].extend(members[:n_test])
        splits["val"].extend(members[n_test:n_test + n_val])
        splits["train"].extend(members[n_test + n_val:])
    for name in SPLIT_NAMES:
        splits[name].sort(key=lambda s: s.path)
    if not splits["val"]:
        raise DatasetError("the validation split is empty", "add images or raise --val-split")
    return splits


def save_splits(run_dir: Path, splits: dict[str, list[Sample]]) -> None:
    for name, items in splits.items():
        text = "".join(f"{s.label}\t{s.path}\n" for s in items)
        atomic.write_text(run_dir / "splits" / f"{name}.txt", text)


def load_split(run_dir: str | Path, name: str) -> list[Sample]:
    path = Path(run_dir) / "splits" / f"{name}.txt"
    if not path.is_file():
        raise BadInputError(f"{path} does not exist", "is this an edgetl run directory made by `edgetl finetune`?")
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        label, sep, rel = line.partition("\t")
        if not sep:
            raise BadInputError(f"{path}:{number}: expected 'label<TAB>path'")
        samples.append(Sample(rel, label))
    return samples


def split_digest(splits: dict[str, list[Sample]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(splits):
        for s in splits[name]:
            digest.update(f"{name}\t{s.label}\t{s.path}\n".encode())
    return digest.hexdigest()
