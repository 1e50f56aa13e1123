"""Train/val/test splits: deterministic, stratified, and saved with the run.

The split files (`splits/<name>.txt`, one `label<TAB>relative/path` per line)
are part of the run-directory contract: export calibrates on `train`, parity and
deploy evaluate on `test` (or `val`), so every later stage sees exactly the
images training held out. `split_digest` fingerprints them for the sidecar.

The format stays that simple line format (other tools read it): names that cannot
be one such line (tab, newline, carriage return, not UTF-8) are refused by name when
the folder is scanned, and lines are split on "\n" only, so names holding other
characters Python calls line breaks (\x0b, \x1c, \x85, U+2028 ...) read back intact.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from edgetl import atomic
from edgetl.data.folder import SPLIT_NAMES, Sample, name_problem
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
        for s in items:  # scan_image_folder refuses these already; samples built elsewhere may not be
            problem = name_problem(s.path) or name_problem(s.label)
            if problem:
                raise DatasetError(f"image {s.path!r} (label {s.label!r}) {problem}",
                                   "rename it: splits/*.txt hold one 'label<TAB>path' per line")
        text = "".join(f"{s.label}\t{s.path}\n" for s in items)
        atomic.write_text(run_dir / "splits" / f"{name}.txt", text)


def load_split(run_dir: str | Path, name: str) -> list[Sample]:
    path = Path(run_dir) / "splits" / f"{name}.txt"
    if not path.is_file():
        raise BadInputError(f"{path} does not exist", "is this an edgetl run directory made by `edgetl finetune`?")
    samples = []
    # Not splitlines(): it also breaks at \x0b, \x1c-\x1e, \x85 and U+2028, all legal in file names.
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        line = line.removesuffix("\r")  # a split file saved by a Windows editor
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
