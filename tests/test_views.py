"""The gate's agreement evidence: shifted views of small validation splits, and the bound that reads them."""

from __future__ import annotations

import numpy as np

from edgetl.export import gate, views


def test_small_splits_get_views_until_the_gate_has_enough_inputs():
    assert views.views_per_image(160) == 5  # 800 inputs
    assert views.views_per_image(400) == 2
    assert views.views_per_image(800) == 1 and views.views_per_image(5000) == 1
    assert views.views_per_image(40) == views.MAX_VIEWS_PER_IMAGE  # capped: five views, not twenty
    assert views.views_per_image(0) == 1


def test_views_are_the_images_then_their_shifts():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 50, 40, 3), dtype=np.uint8)
    every = views.shifted_views(pixels, 5)
    shift = round(views.SHIFT_FRACTION * 40)
    assert every.shape == (15, 50, 40, 3) and every.dtype == np.uint8
    assert np.array_equal(every[:3], pixels)  # the first block is the split itself, in order
    assert np.array_equal(every[3:6][:, :, :-shift], pixels[:, :, shift:])  # moved sideways
    assert np.array_equal(every[6:9][:, :, shift:], pixels[:, :, :-shift])
    assert np.array_equal(every[9:12][:, :-shift], pixels[:, shift:])  # moved vertically
    assert np.array_equal(every[12:15][:, shift:], pixels[:, :-shift])
    assert np.array_equal(every[3:6][:, :, -1], every[3:6][:, :, -2])  # edges replicated, no black border
    assert views.shifted_views(pixels, 1) is pixels


def test_the_bound_judges_the_view_agreement_when_there_is_one():
    metrics = {"drop_pp": 0.0, "agreement": 0.99, "gate_agreement": 0.98}
    assert not gate.passes(metrics, 1.0, 0.985)  # the images alone would pass
    assert gate.passes({**metrics, "gate_agreement": 0.986}, 1.0, 0.985)
    assert gate.passes({"drop_pp": 0.0, "agreement": 0.99}, 1.0, 0.985)  # no views: the images decide
    worse, better = {**metrics, "agreement": 1.0}, {**metrics, "gate_agreement": 0.99}
    assert gate.better(better, worse) and not gate.better(worse, better)


def test_the_default_agreement_bound_is_98_5_percent():
    assert gate.DEFAULT_MIN_AGREEMENT == 0.985
