"""An artifact folder stands alone (issue 14): copied where its run directory does not exist, it
still benches with its accuracy and self-tests on held-out photos; a version-1 sidecar still reads.

Everything here is the real CLI on real exported models; "the run is gone" is made true by
pointing the copy's `source.run_dir` at a path that does not exist, so nothing could be read
from the run even by accident.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import artifact, json_out, run_cli
from edgetl.contract.artifact import PARITY_FILE, read_parity, read_samples
from edgetl.contract.sidecar import SCHEMA, Sidecar, verify_files

pytestmark = pytest.mark.slow


def _elsewhere(folder: str, tmp_path: Path) -> Path:
    copy = tmp_path / "elsewhere" / Path(folder).name
    shutil.copytree(folder, copy)
    sidecar = json.loads((copy / "model.json").read_text())
    sidecar["source"]["run_dir"] = str(tmp_path / "no-such-run")
    (copy / "model.json").write_text(json.dumps(sidecar))
    return copy


def test_every_artifact_carries_its_held_out_samples(exported):
    for row in exported["artifacts"]:
        folder = Path(row["path"])
        sidecar = Sidecar.read(folder)
        labels = read_samples(folder)
        assert sidecar.schema == SCHEMA and sidecar.samples == {"count": len(labels), "split": "test"}
        assert len(labels) >= 10 and set(labels.values()) <= set(sidecar.labels)
        assert len(set(labels.values())) == len(sidecar.labels)  # every class, balanced draw
        assert all(f"samples/{name}" in sidecar.files for name in labels)  # checksummed like the model
        assert not verify_files(folder, sidecar)
        assert sidecar.model_bytes(folder) < sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_copied_artifact_benches_with_its_accuracy_and_self_tests_on_the_device(exported, trained_run,
                                                                                 tmp_path):
    original = str(tmp_path / "onnx-int8")  # parity writes its summary into the artifact: a copy of the shared one
    shutil.copytree(artifact(exported, "onnx", "int8")["path"], original)
    parity = json_out(run_cli("parity", trained_run["run_dir"], "--artifacts", original, "--max-drop", "100",
                              "--report", str(tmp_path / "report"), "--json", check=True))
    summary = read_parity(original)
    assert summary["accuracy"] == parity["artifacts"][0]["accuracy"] and summary["images"] == parity["images"]
    assert {"drop_pp", "agreement", "float_accuracy", "split"} <= set(summary)

    copy = _elsewhere(original, tmp_path)
    bench = json_out(run_cli("bench", str(copy), "--runs", "5", "--json", check=True))
    assert bench["models"][0]["accuracy"] == summary["accuracy"]

    deployed = json_out(run_cli("deploy", str(copy), "--device", "linux-x86", "--local", str(tmp_path / "box"),
                                "--samples", "12", "--json", check=True))
    assert deployed["self_test"]["passed"] and deployed["self_test"]["samples"] == 12
    assert deployed["accuracy"] is not None and deployed["accuracy"] >= 0.5  # a trained model, not chance (10%)


def test_without_a_parity_summary_bench_says_no_accuracy(exported, tmp_path):
    copy = _elsewhere(artifact(exported, "tflite", "fp32")["path"], tmp_path)
    (copy / PARITY_FILE).unlink(missing_ok=True)
    bench = json_out(run_cli("bench", str(copy), "--runs", "3", "--json", check=True))
    assert bench["models"][0]["accuracy"] is None


def test_a_version_1_sidecar_still_reads_and_runs(exported, tmp_path):
    copy = _elsewhere(artifact(exported, "openvino", "fp32")["path"], tmp_path)
    data = json.loads((copy / "model.json").read_text())
    data["schema"] = "edgetl.artifact/1"
    data.pop("samples")
    (copy / "model.json").write_text(json.dumps(data))
    sidecar = Sidecar.read(copy)
    assert sidecar.schema == "edgetl.artifact/1" and sidecar.samples is None
    ran = json_out(run_cli("bench", str(copy), "--runs", "3", "--json", check=True))
    assert ran["models"][0]["format"] == "openvino"
    data["schema"] = "edgetl.artifact/9"
    (copy / "model.json").write_text(json.dumps(data))
    refused = run_cli("bench", str(copy), "--runs", "3")
    assert refused.returncode == 2 and "schema" in refused.stderr and "edgetl.artifact/2" in refused.stderr
