"""--min-confidence's trade-off as `edgetl parity` reports it: coverage and accuracy on the covered images."""

from __future__ import annotations

import shutil

import numpy as np

from conftest import artifact, run_cli


def test_tradeoff_counts_what_a_threshold_keeps_and_how_often_it_is_right():
    from edgetl.evaluation import confidence_tradeoff

    # Four images, two classes: top-1 probabilities 0.88, 0.73, 0.62, 0.50; the second and the last are wrong.
    logits = np.log(np.array([[0.88, 0.12], [0.27, 0.73], [0.62, 0.38], [0.5, 0.5]]))
    labels = np.array([0, 0, 0, 1])
    rows = {r["min_confidence"]: r for r in confidence_tradeoff(logits, labels, (0.0, 0.6, 0.7, 0.9))}
    assert rows[0.0]["covered"] == 4 and rows[0.0]["accuracy"] == 0.5  # argmax of a tie is class 0: wrong
    assert rows[0.6]["covered"] == 3 and rows[0.6]["accuracy"] == round(2 / 3, 6)
    assert rows[0.7]["covered"] == 2 and rows[0.7]["accuracy"] == 0.5 and rows[0.7]["coverage"] == 0.5
    assert rows[0.9]["covered"] == 0 and rows[0.9]["accuracy"] is None


def test_parity_prints_the_tradeoff_on_the_split_asked_for(trained_run, exported, tmp_path):
    model = str(tmp_path / "onnx-fp32")  # parity writes its summary into the artifact: a copy of the shared one
    shutil.copytree(artifact(exported, "onnx", "fp32")["path"], model)
    result = run_cli("parity", trained_run["run_dir"], "--split", "val", "--artifacts", model, "--report",
                     str(tmp_path / "report"), "--max-drop", "none", "--json", check=True)
    import json

    summary = json.loads(result.stdout)
    assert summary["source"] == "val split"
    floats = summary["float"]["confidence"]
    assert floats[0]["min_confidence"] == 0.0 and floats[0]["accuracy"] == summary["float"]["accuracy"]
    coverage = [point["covered"] for point in floats]
    assert coverage == sorted(coverage, reverse=True) and coverage[0] == summary["images"]
    assert summary["artifacts"][0]["confidence"] == floats  # fp32 ONNX: the float model's answers
    assert "--min-confidence on" in result.stderr
    assert "## Confidence threshold" in (tmp_path / "report" / "report.md").read_text()
