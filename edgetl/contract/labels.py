"""What a class name may be: the same rule for a dataset's class folders and an artifact's sidecar.

Labels reach terminals, JSON lines, MQTT messages, the live page and `labels.txt` inside a TFLite file
(one name per line): a name must be one printable line of bounded length, and a label list bounded in
count, so a crafted sidecar cannot fake output lines or make every reader hold megabytes of names.
"""

from __future__ import annotations

MAX_LABELS = 50_000  # ImageNet-21k has 21,841 classes
MAX_LABEL_CHARS = 200


def label_problem(label: str) -> str | None:
    """Why `label` cannot be a class name (None if it can)."""
    if not label.strip():
        return "is empty"
    if len(label) > MAX_LABEL_CHARS:
        return f"is {len(label)} characters long, more than {MAX_LABEL_CHARS}"
    if not label.isprintable():
        bad = next(ch for ch in label if not ch.isprintable())
        return f"contains the control or invisible character {bad!r}"
    return None


def labels_problem(labels: list[str]) -> tuple[int | None, str] | None:
    """(index of the first bad name, or None for the list itself, why), or None when every name is fine."""
    if len(labels) > MAX_LABELS:
        return None, f"lists {len(labels)} class names, more than {MAX_LABELS}"
    for index, label in enumerate(labels):
        problem = label_problem(label)
        if problem:
            return index, problem
    return None
