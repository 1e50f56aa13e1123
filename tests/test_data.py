"""The image-folder layer on real files: layouts, corrupt files, decoding, splits, imbalance, demo data.

Every folder here is written to tmp_path with PIL and read back through the real
code (the `edgetl` entry point in a subprocess for the layout errors a user sees).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from edgetl.contract.images import UnreadableImageError, load_rgb
from edgetl.contract.preprocess import Preprocess
from edgetl.data.folder import Sample, scan_image_folder
from edgetl.data.prepare import prepare_data
from edgetl.data.splits import stratified_split
from edgetl.data.validate import check_images
from edgetl.errors import DatasetError
from edgetl.train.config import TrainConfig

# -- helpers -----------------------------------------------------------------------

def _photo(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A small photo-like RGB image (smooth gradient plus noise), different per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
    pixels = ramp + rng.integers(0, 55, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _images(folder: Path, count: int, ext: str = "jpg", start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"{i:03d}.{ext}"
        _photo(i).save(path)
        paths.append(path)
    return paths


def _flat(root: Path, counts: dict[str, int]) -> Path:
    for label, count in counts.items():
        _images(root / label, count)
    return root


def _one_line(text: str) -> str:
    """Rich wraps long console lines at the terminal width; compare text with whitespace collapsed."""
    return " ".join(text.split())


# -- bad layouts, through the real CLI -------------------------------------------------

def _missing(tmp: Path) -> Path:
    return tmp / "no-such-folder"


def _a_file(tmp: Path) -> Path:
    path = tmp / "photo.jpg"
    _photo(0).save(path)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "data"
    path.mkdir()
    return path


def _loose_images(tmp: Path) -> Path:
    root = tmp / "data"
    _images(root, 3)
    return root


def _single_class(tmp: Path) -> Path:
    return _flat(tmp / "data", {"cat": 4})


def _one_image_class(tmp: Path) -> Path:
    return _flat(tmp / "data", {"cat": 4, "dog": 1})


def _empty_class(tmp: Path) -> Path:
    root = _flat(tmp / "data", {"cat": 4, "dog": 4})
    (root / "bird").mkdir()
    return root


def _val_class_not_in_train(tmp: Path) -> Path:
    root = tmp / "data"
    _flat(root / "train", {"cat": 4, "dog": 4})
    _flat(root / "val", {"cat": 2, "dog": 2, "bird": 2})
    return root


BAD_LAYOUTS = {
    "nonexistent": (_missing, ["does not exist"]),
    "file-not-folder": (_a_file, ["photo.jpg", "is a file, not a folder"]),
    "empty-folder": (_empty, ["is empty"]),
    "images-without-class-folders": (_loose_images, ["3 images", "no class folders"]),
    "single-class": (_single_class, ["single class (cat)", "at least two"]),
    "class-with-one-image": (_one_image_class, ["class dog", "fewer than 2 images"]),
    "empty-class-folder": (_empty_class, ["class folder bird", "holds no images"]),
    "val-class-missing-from-train": (_val_class_not_in_train, ["/val has classes", "lacks: bird"]),
}


@pytest.fixture(scope="module")
def bad_layout_runs(tmp_path_factory) -> dict:
    """Run `edgetl finetune` on every bad layout, a few at a time (each run spends ~3 s importing torch)."""

    def run(case: str):
        tmp = tmp_path_factory.mktemp(case)
        folder = BAD_LAYOUTS[case][0](tmp)
        run_dir = tmp / "run"
        result = run_cli("finetune", str(folder), "--model", "mobilenet_v3_small", "--no-pretrained",
                         "--epochs", "1", "--img-size", "32", "--out", str(run_dir), timeout=120)
        return folder, run_dir, result

    # The base folder first, in this thread: under xdist its first use removes and recreates it, and threads
    # racing to be first would delete each other's folders.
    tmp_path_factory.getbasetemp()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip(BAD_LAYOUTS, pool.map(run, BAD_LAYOUTS)))


@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_bad_layout_is_one_clear_error_from_the_cli(bad_layout_runs, case):
    expected = BAD_LAYOUTS[case][1]
    folder, run_dir, result = bad_layout_runs[case]

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for piece in expected:
        assert piece in errors[0], f"{piece!r} not in {errors[0]!r}"
    assert str(folder) in errors[0]  # names the folder the user passed
    assert "hint:" in result.stderr  # every layout error says how to fix it
    assert not run_dir.exists()  # failed before anything was written
    assert result.stdout == ""


# -- corrupt files ---------------------------------------------------------------------

@pytest.fixture
def corrupt_folder(tmp_path) -> Path:
    root = _flat(tmp_path / "data", {"cat": 3, "dog": 3})
    big = tmp_path / "big.jpg"
    _photo(99, size=(256, 192)).save(big, quality=95)
    data = big.read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "dog" / "text.png").write_text("this is a text file, not a PNG\n")
    # Real-world names: brackets (rich markup syntax) and ': ' (the message separator).
    (root / "dog" / "[draft] copy.jpg").write_bytes(b"")
    (root / "dog" / "shot: 2.jpg").write_bytes(data[: len(data) // 3])
    (root / "cat" / "notes.txt").write_text("labelled by Ann\n")
    return root


CORRUPT = {
    "cat/truncated.jpg": "cannot be decoded",
    "cat/zero.jpg": "empty file (0 bytes)",
    "dog/text.png": "not an image file",
    "dog/[draft] copy.jpg": "empty file (0 bytes)",
    "dog/shot: 2.jpg": "cannot be decoded",
}


def test_truncated_jpeg_passes_verify_but_is_still_refused(corrupt_folder):
    # The reason load_rgb decodes fully: PIL's cheap verify() does not notice a JPEG cut in half.
    with Image.open(corrupt_folder / "cat" / "truncated.jpg") as image:
        image.verify()
    with pytest.raises(UnreadableImageError, match="truncated.jpg"):
        load_rgb(corrupt_folder / "cat" / "truncated.jpg")


def test_corrupt_files_are_skipped_with_a_warning_naming_each(corrupt_folder, capsys):
    folder = scan_image_folder(corrupt_folder)
    assert folder.ignored_files == ["cat/notes.txt"]
    paths = [s.path for s in folder.all_samples()]
    assert "cat/notes.txt" not in paths
    assert set(CORRUPT) <= set(paths)

    seen = []
    result = check_images(folder.root, folder.all_samples(),
                          on_image=lambda i, s, image: seen.append((i, s.path, image.mode)))

    good = {f"{label}/{i:03d}.jpg" for label in ("cat", "dog") for i in range(3)}
    assert {s.path for s in result.kept} == good
    assert dict(result.skipped).keys() == CORRUPT.keys()
    for path, reason in result.skipped:
        assert reason.startswith(CORRUPT[path]), (path, reason)
    # on_image sees every kept image once, decoded to RGB, numbered in order
    assert [i for i, _, _ in seen] == list(range(len(good)))
    assert {p for _, p, _ in seen} == good and {m for _, _, m in seen} == {"RGB"}

    err = _one_line(capsys.readouterr().err)
    assert "warning: skipped 5 unreadable file(s) of 11:" in err
    for path, reason in CORRUPT.items():
        assert f"{path}: {reason}" in err, f"{path} not named verbatim in:\n{err}"


def test_strict_mode_raises_naming_the_files(corrupt_folder):
    folder = scan_image_folder(corrupt_folder)
    with pytest.raises(DatasetError) as caught:
        check_images(folder.root, folder.all_samples(), strict=True)
    message = caught.value.message
    assert "5 unreadable image file(s)" in message and "--strict" in message
    for path in CORRUPT:
        assert path in message
    assert caught.value.exit_code == 2


def test_clean_folder_checks_silently(tmp_path, capsys):
    folder = scan_image_folder(_flat(tmp_path / "data", {"a": 2, "b": 2}))
    result = check_images(folder.root, folder.all_samples())
    assert len(result.kept) == 4 and result.skipped == []
    assert "warning" not in capsys.readouterr().err


# -- decoding to upright 8-bit RGB ---------------------------------------------------------

def _rgb(path: Path) -> np.ndarray:
    image = load_rgb(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    return pixels


def test_greyscale_becomes_grey_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 77], [200, 255]], np.uint8), "L").save(path)
    assert Image.open(path).mode == "L"
    pixels = _rgb(path)
    assert pixels[:, :, 0].tolist() == [[0, 77], [200, 255]]
    assert (pixels == pixels[:, :, :1]).all()


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: the colour underneath must not show
    rgba[0, 1] = (10, 20, 30, 255)  # opaque
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black over white
    rgba[1, 1] = (200, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = _rgb(path)
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[0, 1]) == (10, 20, 30)
    assert all(abs(int(v) - 127) <= 1 for v in pixels[1, 0])
    assert tuple(pixels[1, 1]) == (200, 0, 0)


def test_greyscale_with_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA").save(path)
    assert _rgb(path).tolist() == [[[255, 255, 255], [0, 0, 0]]]


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    image.putpalette([9, 9, 9, 0, 200, 0, 0, 0, 220] + [0] * (256 * 3 - 9))
    image.save(path, transparency=0)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and "transparency" in reopened.info
    pixels = _rgb(path)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # index 0 is transparent, not (9, 9, 9)
    assert tuple(pixels[0, 1]) == (0, 200, 0)
    assert tuple(pixels[1, 0]) == (0, 0, 220)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[65535, 32768], [0, 1000]], np.uint16)).save(path)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")  # I;16 on current Pillow
    pixels = _rgb(path)[:, :, 0].astype(int)
    assert pixels[0, 0] == 255
    assert abs(pixels[0, 1] - 128) <= 1  # clipping would give 255
    assert pixels[1, 0] == 0
    assert pixels[1, 1] == round(1000 / 65535 * 255)  # 4, not 255


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16] = (255, 0, 0, 0)  # cyan
    cmyk[:, 16:] = (0, 255, 255, 0)  # magenta + yellow = red
    Image.fromarray(cmyk, "CMYK").save(path, quality=95)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
    pixels = _rgb(path).astype(int)
    assert np.abs(pixels[8, 4] - (0, 255, 255)).max() <= 8
    assert np.abs(pixels[8, 28] - (255, 0, 0)).max() <= 8


@pytest.mark.parametrize("orientation, marked_corner", [(6, "top-right"), (8, "bottom-left")])
def test_exif_rotated_jpeg_is_upright(tmp_path, orientation, marked_corner):
    # Stored 60 wide x 40 high, blue, with a red 12 x 12 top-left corner.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :] = (0, 0, 255)
    stored[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: rotate 90 degrees clockwise to view; 8: counter-clockwise
    path = tmp_path / f"phone-{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)

    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (40, 60)  # width, height swapped
    pixels = np.asarray(image).astype(int)
    corners = {"top-left": pixels[3, 3], "top-right": pixels[3, -4],
               "bottom-left": pixels[-4, 3], "bottom-right": pixels[-4, -4]}
    for name, value in corners.items():
        target = (255, 0, 0) if name == marked_corner else (0, 0, 255)
        assert np.abs(value - target).max() <= 12, (name, value)


# -- splits -------------------------------------------------------------------------------

def _samples(counts: dict[str, int]) -> list[Sample]:
    return [Sample(f"{label}/{i:03d}.jpg", label) for label, n in counts.items() for i in range(n)]


COUNTS = {"ant": 40, "bee": 20, "cow": 10, "duo": 2}


def test_stratified_split_is_seeded_disjoint_complete_and_stratified():
    samples = _samples(COUNTS)
    classes = list(COUNTS)
    first = stratified_split(samples, classes, 0.2, 0.1, seed=0)
    assert first == stratified_split(list(reversed(samples)), classes, 0.2, 0.1, seed=0)
    other = stratified_split(samples, classes, 0.2, 0.1, seed=1)
    assert other["val"] != first["val"]

    for splits in (first, other):
        sets = {name: {s.path for s in items} for name, items in splits.items()}
        assert sum(len(items) for items in splits.values()) == len(samples)  # no duplicates
        assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
        assert sets["train"] | sets["val"] | sets["test"] == {s.path for s in samples}
        for label, n in COUNTS.items():
            per = {name: sum(s.label == label for s in items) for name, items in splits.items()}
            if n >= 10:  # proportions kept per class
                assert per == {"train": n - round(n * 0.2) - round(n * 0.1),
                               "val": round(n * 0.2), "test": round(n * 0.1)}, (label, per)
            else:  # a tiny class still gets one training and one validation image
                assert per == {"train": 1, "val": 1, "test": 0}, (label, per)
        for items in splits.values():
            assert items == sorted(items, key=lambda s: s.path)


def test_presplit_layout_is_read_as_given(tmp_path):
    root = tmp_path / "data"
    given = {}
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for label in ("cat", "dog"):
            _images(root / split / label, n)
        given[split] = {f"{split}/{label}/{i:03d}.jpg" for label in ("cat", "dog") for i in range(n)}
    folder = scan_image_folder(root)
    assert folder.layout == "pre-split"
    assert folder.classes == ["cat", "dog"]
    assert {split: {s.path for s in items} for split, items in folder.presplit.items()} == given
    assert all(s.label == s.path.split("/")[1] for s in folder.all_samples())


def _config(root: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{"data": str(root), "model": "mobilenet_v3_small", "augment": "none", "cache": "ram",
                          **overrides})


def test_train_and_test_only_carves_val_from_train(tmp_path, capsys):
    root = tmp_path / "data"
    _flat(root / "train", {"cat": 8, "dog": 8})
    _flat(root / "test", {"cat": 2, "dog": 3})
    (root / "train" / "cat" / "[v2] labels.txt").write_text("not an image\n")
    data = prepare_data(_config(root, val_split=0.25, seed=3), Preprocess(size=(32, 32)))

    assert data.layout == "pre-split"
    train, val, test = ({s.path for s in data.splits[n]} for n in ("train", "val", "test"))
    assert {p.split("/")[0] for p in train | val} == {"train"}  # val comes out of train/
    assert not train & val and len(train | val) == 16
    assert test == {f"test/{label}/{i:03d}.jpg" for label, n in (("cat", 2), ("dog", 3)) for i in range(n)}
    assert data.report["counts"]["val"] == {"cat": 2, "dog": 2}
    assert data.report["counts"]["train"] == {"cat": 6, "dog": 6}
    assert len(data.val) == 4 and data.val.pixels.shape == (4, 32, 32, 3)
    assert len(data.test) == 5 and len(data.train) == 12
    # same seed, same carve
    again = prepare_data(_config(root, val_split=0.25, seed=3), Preprocess(size=(32, 32)))
    assert again.splits == data.splits
    assert data.report["ignored_files"] == ["train/cat/[v2] labels.txt"]
    assert "ignored 1 file(s) that are not images by name, e.g. train/cat/[v2] labels.txt" in _one_line(
        capsys.readouterr().err)


def test_class_imbalance_is_reported_and_warned(tmp_path, capfd):
    root = _flat(tmp_path / "data", {"cat": 12, "dog": 3})
    data = prepare_data(_config(root, val_split=0.2, test_split=0.0), Preprocess(size=(32, 32)))
    # train keeps cat 12 - 2 = 10, dog 3 - 1 = 2
    assert data.report["counts"]["train"] == {"cat": 10, "dog": 2}
    assert data.report["train_imbalance_ratio"] == 5.0
    err = _one_line(capfd.readouterr().err)
    assert "warning: classes are imbalanced 5.0:1 in train (cat: 10, dog: 2)" in err


def test_balanced_classes_give_no_imbalance_warning(tmp_path, capfd):
    root = _flat(tmp_path / "data", {"cat": 5, "dog": 5})
    data = prepare_data(_config(root, val_split=0.2, test_split=0.2), Preprocess(size=(32, 32)))
    assert data.report["train_imbalance_ratio"] == 1.0
    assert "imbalanced" not in capfd.readouterr().err


# -- demo data --------------------------------------------------------------------------------

def test_demo_data_writes_an_image_folder(tmp_path):
    out = tmp_path / "digits"
    result = run_cli("demo-data", str(out), "--per-class", "5", "--size", "32", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert report["images"] == 50
    assert len(report["classes"]) == 10 and len(set(report["classes"])) == 10
    assert Path(report["path"]) == out

    folders = sorted(p for p in out.iterdir() if p.name != ".edgetl")
    assert (out / ".edgetl").is_file()  # edgetl's mark: the only folders it will replace
    assert sorted(p.name for p in folders) == sorted(report["classes"])
    assert all(p.is_dir() for p in folders)
    for folder in folders:
        files = sorted(folder.iterdir())
        assert len(files) == 5 and all(f.suffix == ".png" for f in files)
        for file in files:
            with Image.open(file) as image:
                assert image.size == (32, 32)
                assert np.asarray(image).std() > 10  # a real digit, not a blank tile
    scanned = scan_image_folder(out)
    assert scanned.layout == "flat" and len(scanned.samples) == 50
