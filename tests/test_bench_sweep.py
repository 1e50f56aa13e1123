"""`edgetl bench` sweeps, sustained runs and end-to-end stage times, on a real ONNX graph and real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from edgetl.runtime.timing import per_second, slowdown
from test_device_state import _tiny_artifact


@pytest.mark.slow
def test_threads_sweep_with_seconds_gives_one_entry_per_setting_with_a_timeline_and_device_block(tmp_path):
    artifact = _tiny_artifact(tmp_path / "artifact")
    result = run_cli("bench", str(artifact), "--threads", "1,2", "--batch", "1,4", "--seconds", "3", "--json",
                     "--plot", str(tmp_path / "figs" / "bench.png"), timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    settings = [(m["threads"], m["batch"]) for m in data["models"]]
    assert settings == [(1, 1), (2, 1), (1, 4), (2, 4)]
    for model in data["models"]:
        seconds = [t["second"] for t in model["timeline"]]
        assert seconds[:3] == [0, 1, 2] and all(t["runs"] > 0 and t["p50_ms"] > 0 for t in model["timeline"])
        assert sum(t["runs"] for t in model["timeline"]) == model["runs"]
        assert {"before", "after"} == set(model["device"]) and model["device"]["after"]["cpu"]["cores"] >= 1
    (best,) = data["sweep"]
    assert (best["best_threads"], best["best_batch"]) in settings
    assert set(data["figures"]) == {"latency", "sweep", "timeline"}  # one artifact: no trade-off to draw
    for figure in data["figures"].values():
        with Image.open(figure) as image:
            assert image.format == "PNG"


def test_a_run_that_slows_down_is_named():
    starts = [i * 0.01 for i in range(1000)]  # 10 s of runs
    steady = per_second([1.0] * 1000, starts)
    assert len(steady) == 10 and slowdown(steady) == 0.0
    heating = per_second([1.0 + 0.05 * int(s) for s in starts], starts)  # +5% of the start per second
    assert slowdown(heating) > 0.10
    assert slowdown(per_second([1.0] * 100, starts[:100])) is None  # one second: nothing to compare


def test_end_to_end_times_each_stage_on_real_images(tmp_path):
    artifact = _tiny_artifact(tmp_path / "artifact")
    images = tmp_path / "images" / "red"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(3):
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(images / f"{number}.jpg")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    result = run_cli("bench", str(artifact), "--runs", "20", "--end-to-end", str(tmp_path / "images"), "--json",
                     "--plot", "", timeout=300)
    assert result.returncode == 0, result.stderr
    ends = json.loads(result.stdout)["models"][0]["end_to_end"]
    assert ends["images"] == 4 and ends["runs"] == 20
    stages = ends["stages"]
    assert all(stages[s]["p50_ms"] > 0 for s in ("decode", "pre", "infer", "post", "total"))
    # decoding a 640 x 480 JPEG costs more than this 8 x 8 average pool: the point of timing it apart
    assert stages["decode"]["p50_ms"] > stages["infer"]["p50_ms"]
    assert abs(sum(ends["share"].values()) - 1.0) < 0.02
    assert "end to end on 4 image(s)" in result.stderr


def test_figures_go_beside_the_artifact_folders_never_into_the_working_directory(tmp_path):
    artifact = _tiny_artifact(tmp_path / "export" / "onnx-fp32")
    here = tmp_path / "cwd"
    here.mkdir()
    result = run_cli("bench", str(artifact), "--runs", "3", "--json", cwd=here, timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(here.iterdir()) == []
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "export" / "bench.png")
    assert (tmp_path / "export" / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert not (artifact / "bench.png").exists()
