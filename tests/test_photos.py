"""The held-out photo set: real photographs, splits cut from disjoint regions of each."""

from __future__ import annotations

import numpy as np

from edgetl.data.folder import scan_image_folder
from edgetl.data.photos import PHOTOS, SPLITS, _crop, write_photo_set


def test_crops_never_leave_their_split_strip():
    """A photo whose pixels encode their own column: every crop's columns lie inside its split's strip."""
    width, height = 600, 400
    columns = np.tile(np.arange(width, dtype=np.int32)[None, :], (height, 1))
    photo = np.stack([columns % 256, columns // 256, np.full_like(columns, 9)], axis=2).astype(np.uint8)
    photo[..., 2] = np.random.default_rng(1).integers(0, 255, (height, width))  # texture, so no crop is "flat"
    rng = np.random.default_rng(0)
    for split, start, stop in SPLITS:
        for _ in range(50):
            crop = _crop(photo, start, stop, rng).astype(np.int32)
            x = crop[..., 0] + 256 * crop[..., 1]
            assert crop.shape[0] == crop.shape[1] >= 32
            assert round(start * width) <= x.min() and x.max() < round(stop * width), (split, x.min(), x.max())


def test_photo_set_is_a_pre_split_folder_of_real_photos(tmp_path):
    result = write_photo_set(tmp_path / "photos", counts={"train": 3, "val": 2, "test": 2}, size=64)
    assert result["images"] == {"train": 30, "val": 20, "test": 20} and result["classes"] == list(PHOTOS)
    folder = scan_image_folder(tmp_path / "photos")
    assert sorted(folder.classes) == sorted(PHOTOS)
    assert folder.layout == "pre-split" and [len(folder.presplit[s]) for s in ("train", "val", "test")] == [30, 20, 20]
