"""Reading an image folder into labelled samples, or saying exactly what is wrong with it.

Two layouts are accepted:

    DATA/<class>/<image>                      split here (stratified, seeded)
    DATA/{train,val,test}/<class>/<image>     splits given by the user (test optional)

Sample paths are kept relative to DATA so the split files saved in a run stay
valid when the folder moves to another machine. Those split files hold one
`label<TAB>path` per line in UTF-8, so an image whose relative path contains a
tab, a newline or a carriage return, or is not valid UTF-8, is refused by name
here, before training, rather than written as a split line that reads back wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgetl.contract.images import is_image_name
from edgetl.contract.labels import labels_problem
from edgetl.errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")
LAYOUT_HELP = (
    "expected DATA/<class>/<image> (for example DATA/cat/001.jpg, DATA/dog/002.jpg) "
    "or DATA/train/<class>/<image> with DATA/val/... (and optionally DATA/test/...)"
)


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the data root, with forward slashes
    label: str


@dataclass
class ImageFolder:
    root: Path
    classes: list[str]
    layout: str  # "flat" or "pre-split"
    samples: list[Sample] = field(default_factory=list)  # flat layout
    presplit: dict[str, list[Sample]] = field(default_factory=dict)  # pre-split layout
    ignored_files: list[str] = field(default_factory=list)  # not images by name

    def all_samples(self) -> list[Sample]:
        if self.layout == "flat":
            return list(self.samples)
        return [s for name in SPLIT_NAMES for s in self.presplit.get(name, [])]


def name_problem(rel: str) -> str | None:
    """Why `rel` cannot be one line of a split file (None if it can)."""
    bad = [name for ch, name in (("\t", "a tab"), ("\n", "a newline"), ("\r", "a carriage return")) if ch in rel]
    if bad:
        return f"contains {' and '.join(bad)}"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def _check_names(root: Path, samples: list[Sample]) -> None:
    refused = [(s.path, problem) for s in samples if (problem := name_problem(s.path))]
    if refused:
        path, problem = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        # repr(): the name printed on one line, its tab or newline visible as \t or \n.
        raise DatasetError(f"image {path!r} in {root} {problem}{more}",
                           "rename it: the run's splits/*.txt files hold one 'label<TAB>path' per line")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(root: Path, class_dir: Path, label: str, ignored: list[str]) -> list[Sample]:
    found = []
    for path in sorted(class_dir.rglob("*")):
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(class_dir).parts):
            continue
        rel = path.relative_to(root).as_posix()
        if is_image_name(path):
            found.append(Sample(rel, label))
        else:
            ignored.append(rel)
    return found


def scan_image_folder(root: str | Path) -> ImageFolder:
    """List labelled image files under `root`; DatasetError (exit 2) when the layout is unusable."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"data folder {root} does not exist", LAYOUT_HELP)
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder of class folders", LAYOUT_HELP)
    subdirs = _visible_dirs(root)
    loose = [p.name for p in root.iterdir() if p.is_file() and is_image_name(p)]
    names = {p.name for p in subdirs}
    ignored: list[str] = []

    if "train" in names and ("val" in names or "test" in names):
        unexpected = sorted(names - set(SPLIT_NAMES))
        if unexpected:
            raise DatasetError(
                f"{root} mixes split folders (train/val/test) with other folders: {', '.join(unexpected)}", LAYOUT_HELP
            )
        presplit = {}
        class_sets = {}
        for split in SPLIT_NAMES:
            if split not in names:
                continue
            class_dirs = _visible_dirs(root / split)
            class_sets[split] = [d.name for d in class_dirs]
            presplit[split] = [s for d in class_dirs for s in _collect(root, d, d.name, ignored)]
        classes = class_sets["train"]
        for split, found in class_sets.items():
            extra = sorted(set(found) - set(classes))
            if extra:
                raise DatasetError(
                    f"{root}/{split} has classes that {root}/train lacks: {', '.join(extra)}",
                    "every class in val/test must also exist in train",
                )
        folder = ImageFolder(root, classes, "pre-split", presplit=presplit, ignored_files=ignored)
        _check_names(root, folder.all_samples())
        _check_classes(folder, {c: sum(s.label == c for s in presplit["train"]) for c in classes}, "train/")
        return folder

    if not subdirs:
        if loose:
            raise DatasetError(
                f"{root} holds {len(loose)} images but no class folders, so their labels are unknown", LAYOUT_HELP
            )
        raise DatasetError(f"{root} is empty: no class folders and no images", LAYOUT_HELP)
    if loose:
        ignored.extend(loose)
    samples = [s for d in subdirs for s in _collect(root, d, d.name, ignored)]
    folder = ImageFolder(root, [d.name for d in subdirs], "flat", samples=samples, ignored_files=ignored)
    _check_names(root, samples)
    _check_classes(folder, {c: sum(s.label == c for s in samples) for c in folder.classes}, "")
    return folder


def _check_classes(folder: ImageFolder, counts: dict[str, int], where: str) -> None:
    problem = labels_problem(list(counts))
    if problem is not None:  # the names become the artifact's labels, which readers refuse otherwise
        index, why = problem
        what = f"class folder {where}{list(counts)[index]!r}" if index is not None else "the data"
        raise DatasetError(f"{what} in {folder.root} {why}",
                           "rename it: class names are one printable line of at most 200 characters")
    if sum(counts.values()) == 0:
        raise DatasetError(f"{folder.root} has class folders but no images in them", LAYOUT_HELP)
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(where + c for c in empty)} in {folder.root} "
            f"{'hold' if len(empty) > 1 else 'holds'} no images",
            "add images or remove the empty folders",
        )
    if len(counts) < 2:
        raise DatasetError(
            f"{folder.root} has a single class ({next(iter(counts))}); a classifier needs at least two",
            LAYOUT_HELP,
        )
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise DatasetError(
            f"class{'es' if len(few) > 1 else ''} {', '.join(few)} in {folder.root} "
            f"{'have' if len(few) > 1 else 'has'} fewer than 2 images",
            "every class needs at least 2 images (and realistically dozens) to train and evaluate",
        )


def list_images(root: str | Path) -> list[Sample]:
    """Every image file under `root`, any layout (calibration data needs no labels).

    The label is the parent folder's name, which keeps class-balanced drawing
    meaningful when the folder happens to be laid out by class.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist", "pass a folder of images")
    return [Sample(p.relative_to(root).as_posix(), p.parent.name) for p in sorted(root.rglob("*"))
            if p.is_file() and is_image_name(p) and not any(s.startswith(".") for s in p.relative_to(root).parts)]


def class_counts(samples: list[Sample], classes: list[str]) -> dict[str, int]:
    counts = {c: 0 for c in classes}
    for sample in samples:
        counts[sample.label] += 1
    return counts


def imbalance_ratio(counts: dict[str, int]) -> float:
    nonzero = [n for n in counts.values() if n > 0]
    return max(nonzero) / min(nonzero) if nonzero else 1.0
