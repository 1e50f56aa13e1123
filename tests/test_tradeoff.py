"""The accuracy-latency picture: which artifacts are worth choosing, and a figure that shows it."""

from __future__ import annotations

import pytest
from PIL import Image

from edgetl.bench.tradeoff import best_tradeoffs, plot_tradeoff, tradeoff


def test_best_tradeoffs_are_the_points_nothing_beats_on_both():
    points = [(1.0, 0.90),   # fastest
              (2.0, 0.95),   # slower, more accurate: a trade-off
              (2.5, 0.93),   # dominated by (2.0, 0.95)
              (3.0, 0.95),   # as accurate as (2.0, 0.95) but slower: dominated
              (4.0, 0.97),   # most accurate
              (0.5, 0.50)]   # fastest of all, if you accept 50%
    assert best_tradeoffs(points) == [5, 0, 1, 4]
    assert best_tradeoffs([(1.0, 0.9), (1.0, 0.9)]) == [0, 1]  # ties dominate neither
    assert best_tradeoffs([]) == []


def _model(fmt, precision, p50, accuracy):
    return {"path": f"/x/{fmt}-{precision}/model", "format": fmt, "precision": precision, "p50_ms": p50,
            "accuracy": accuracy}


def test_the_figure_marks_the_trade_offs(tmp_path):
    models = [_model("onnx", "fp32", 2.7, 0.7925), _model("onnx", "int8", 2.0, 0.7950),
              _model("openvino", "int8", 1.5, 0.7863), _model("tflite", "int8", 1.1, 0.7937),
              _model("tflite", "fp32", 2.0, None)]  # no parity summary: left out, not guessed
    result = tradeoff(models)
    assert [p["name"] for p in result["points"]] == ["onnx-fp32", "onnx-int8", "openvino-int8", "tflite-int8"]
    assert result["best"] == ["tflite-int8", "onnx-int8"]
    path = plot_tradeoff(result, tmp_path / "tradeoff.png", "2 threads")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600


@pytest.mark.parametrize("models", [[], [_model("onnx", "fp32", 1.0, 0.9)], [_model("onnx", "fp32", 1.0, None)] * 3])
def test_nothing_to_choose_between_gives_no_figure(models):
    assert tradeoff(models) is None
