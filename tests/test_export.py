"""Export and parity on a real fine-tuned model, through the real converters and runtimes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import json_out, run_cli
from edgetl.contract.sidecar import Sidecar, verify_files
from edgetl.errors import BadInputError, MissingBackendError
from edgetl.export import FORMATS, ExportSettings, export_run
from edgetl.runtime import load


def _row(exported, fmt, precision) -> dict:
    return next(r for r in exported["artifacts"] if r["format"] == fmt and r["precision"] == precision)


def test_every_registered_format_is_exported_and_runs(exported):
    """A format added to FORMATS cannot ship untested: this fixture exports all of them."""
    for fmt in FORMATS:
        for precision in ("fp32", "int8"):
            row = _row(exported, fmt, precision)
            assert row["status"] == "ok", row
            assert row["delivered"] == precision
            runner = load(row["path"])
            assert runner.sidecar.format == fmt and runner.sidecar.precision == precision
            assert Path(row["path"], FORMATS[fmt].model_file).is_file()


def test_fp32_artifacts_match_the_float_model(exported, trained_run):
    for fmt in FORMATS:
        row = _row(exported, fmt, "fp32")
        minimum = 0.99 if fmt == "tflite" else 1.0
        assert row["agreement"] >= minimum, row
        assert row["golden_passed"], row


def test_int8_is_really_quantized_and_says_how(exported):
    for fmt in FORMATS:
        row = _row(exported, fmt, "int8")
        fp32 = _row(exported, fmt, "fp32")
        sidecar = Sidecar.read(row["path"])
        assert sidecar.quantization and "int8" in sidecar.quantization["weights"], sidecar.quantization
        assert sidecar.calibration["source"] == "train split" and sidecar.calibration["images"] == 32
        assert row["size_bytes"] < 0.5 * fp32["size_bytes"], (row["size_bytes"], fp32["size_bytes"])
        assert row["agreement"] >= 0.5, row


def test_int8_onnx_computes_float_logits_from_int8_features(exported):
    """The classifier reads int8 inputs and weights, but its logits are not rounded to 256 levels.

    Rounded, near-tie images became exact ties that argmax breaks by class index (6 on the
    Lite0 photo run's validation split; float logits agreed with float on 3 more images)."""
    import onnx

    graph = onnx.load(str(Path(_row(exported, "onnx", "int8")["path"]) / "model.onnx")).graph
    producers = {out: node for node in graph.node for out in node.output}
    classifier = producers[graph.output[0].name]
    assert classifier.op_type == "Gemm", classifier.op_type
    assert all(producers[name].op_type == "DequantizeLinear" for name in classifier.input[:2])
    quantized = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) > 20 and graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sidecar = Sidecar.read(_row(exported, "onnx", "int8")["path"])
    assert sidecar.quantization["output"] == "float32 logits (not quantized)"


def test_sidecar_round_trip_and_checksums(exported):
    row = _row(exported, "onnx", "fp32")
    sidecar = Sidecar.read(row["path"])
    again = Sidecar.from_dict(json.loads(sidecar.to_json()))
    assert again.to_dict() == sidecar.to_dict()
    assert sidecar.labels == json.loads((Path(sidecar.source["run_dir"]) / "labels.json").read_text())
    assert sidecar.preprocess.layout == "NCHW"
    assert Sidecar.read(_row(exported, "tflite", "fp32")["path"]).preprocess.layout == "NHWC"
    assert "model.onnx" in sidecar.files and any(name.startswith("golden/") for name in sidecar.files)
    assert verify_files(row["path"], sidecar) == []
    assert len(sidecar.golden) == 4 and all(Path(row["path"], g.file).is_file() for g in sidecar.golden)
    broken = json.loads(sidecar.to_json())
    del broken["labels"]
    with pytest.raises(BadInputError, match="labels"):
        Sidecar.from_dict(broken)


def test_labels_and_preprocessing_are_embedded_in_the_model_files(exported):
    import onnx
    import openvino as ov

    onnx_model = onnx.load(str(Path(_row(exported, "onnx", "fp32")["path"], "model.onnx")))
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    labels = json.loads(meta["edgetl.labels"])
    assert len(labels) == 10 and json.loads(meta["edgetl.preprocess"])["size"] == [32, 32]
    ir = ov.Core().read_model(str(Path(_row(exported, "openvino", "fp32")["path"], "model.xml")))
    assert json.loads(ir.get_rt_info(["edgetl", "labels"]).astype(str)) == labels


def test_rerun_skips_unchanged_and_redoes_tampered(exported, trained_run, monkeypatch, tmp_path):
    out = tmp_path / "export"  # a copy: the shared export is read by other tests (and workers) meanwhile
    shutil.copytree(Path(exported["out"]) / "onnx-fp32", out / "onnx-fp32")
    model_file = out / "onnx-fp32" / "model.onnx"
    again = export_run(trained_run["run_dir"], ["onnx"], ["fp32"], out=out)
    assert again["artifacts"][0]["status"] == "up-to-date"
    # a skipped artifact reports the same size as the fresh export did: the model files only
    assert again["artifacts"][0]["size_bytes"] == _row(exported, "onnx", "fp32")["size_bytes"] == model_file.stat().st_size
    model_file.write_bytes(model_file.read_bytes()[:1000])  # a half-written file
    redone = export_run(trained_run["run_dir"], ["onnx"], ["fp32"], out=out)
    assert redone["artifacts"][0]["status"] == "ok"
    assert verify_files(out / "onnx-fp32", Sidecar.read(out / "onnx-fp32")) == []
    assert not list(out.glob(".*partial*")) and not list(out.glob(".export-work-*"))
    # edited exporter code (an editable install: same version) -> the artifact is made again, not reused
    from edgetl.export import provenance

    monkeypatch.setattr(provenance, "code_digest", lambda: "0" * 64)
    assert export_run(trained_run["run_dir"], ["onnx"], ["fp32"], out=out)["artifacts"][0]["status"] == "ok"
    assert export_run(trained_run["run_dir"], ["onnx"], ["fp32"], out=out)["artifacts"][0]["status"] == "up-to-date"


@pytest.mark.slow
def test_gate_falls_back_on_a_broken_calibration_and_records_attempts(trained_run, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):  # one black image, eight times: ranges that fit nothing real
        Image.new("RGB", (32, 32), (0, 0, 0)).save(calib / f"{i}.png")
    # qat off: the post-training chain; QAT (trained on the train split) passes here
    settings = ExportSettings(calib_size=8, calib_data=str(tmp_path / "calib"), max_drop=0.5, qat="off")
    result = export_run(trained_run["run_dir"], ["openvino"], ["int8"], settings, out=tmp_path / "out")
    row = result["artifacts"][0]
    assert row["attempts"][0]["status"] != "accepted", row["attempts"]
    assert len(row["attempts"]) >= 2
    assert row["status"] in ("fallback", "mixed precision") and row["drop_pp"] <= 0.5
    assert row["agreement"] >= result["min_agreement"]
    sidecar = Sidecar.read(row["path"])
    assert sidecar.attempts == row["attempts"] and sidecar.requested_precision == "int8"


@pytest.mark.slow
def test_a_spent_time_budget_skips_int8_attempts_but_never_the_fp16_fallback(trained_run, tmp_path):
    """The budget bounds the int8 search; fp16 costs one conversion and must not be traded for fp32."""
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):  # ranges that fit nothing real: the first recipe misses
        Image.new("RGB", (32, 32), (0, 0, 0)).save(calib / f"{i}.png")
    settings = ExportSettings(calib_size=8, calib_data=str(calib), max_drop=0.5, budget_seconds=0.0, qat="off")
    result = export_run(trained_run["run_dir"], ["onnx"], ["int8"], settings, out=tmp_path / "out")
    attempts = result["artifacts"][0]["attempts"]
    assert attempts[0]["status"] != "accepted"
    assert any(a["status"] == "skipped: time budget spent" for a in attempts), attempts
    fp16 = next(a for a in attempts if a["what"] == "fp16")
    assert fp16["status"] != "skipped: time budget spent" and "drop_pp" in fp16, attempts


def test_too_few_calibration_images_is_a_clear_error(trained_run, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 50, 0, 0)).save(folder / f"{i}.png")
    result = run_cli("export", trained_run["run_dir"], "--format", "onnx", "--precision", "int8",
                     "--calib-data", str(folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "calibration images" in result.stderr


def test_a_converter_that_crashes_fails_the_export_and_keeps_the_others(trained_run, tmp_path, monkeypatch,
                                                                          capsys):
    import edgetl.export.openvino as openvino_exporter
    from edgetl.cli import main

    def crash(request):
        raise RuntimeError("converter crashed\nsecond line of a long trace")

    monkeypatch.setattr(openvino_exporter, "export", crash)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["export", trained_run["run_dir"], "--format", "onnx,openvino", "--precision", "fp32",
              "--out", str(out), "--json", "-q"])
    captured = capsys.readouterr()
    assert info.value.code == 1
    assert "export failed for openvino-fp32" in captured.err and "converter crashed" in captured.err
    rows = {r["format"]: r for r in json.loads(captured.out)["artifacts"]}
    assert rows["openvino"]["status"] == "failed" and rows["onnx"]["status"] == "ok"
    assert (out / "onnx-fp32" / "model.onnx").is_file() and not (out / "openvino-fp32").exists()


def test_missing_converter_names_the_extra(monkeypatch):
    from edgetl.contract import formats
    from edgetl.export import provenance

    fake = formats.Format("fake", ".x", "model.x", ("fp32",), "NCHW", ("no_such_converter_pkg",), "export", "-",
                          "-", "edgetl.runtime.onnx:OnnxRunner")
    monkeypatch.setitem(formats.FORMATS, "fake", fake)
    with pytest.raises(MissingBackendError) as info:
        provenance.check_converters(["fake"])
    assert info.value.exit_code == 3 and "edgetl[export]" in info.value.hint


def test_parity_report_and_json_contract(exported, trained_run, tmp_path):
    args = ["parity", trained_run["run_dir"], "--max-drop", "100", "--report", str(tmp_path / "rep"), "--json"]
    for row in exported["artifacts"]:
        args += ["--artifacts", row["path"]]
    result = run_cli(*args, check=True)
    data = json_out(result)
    assert data["passed"] is True and data["max_drop"] == 100
    assert {"accuracy"} <= set(data["float"])
    assert len(data["artifacts"]) == 2 * len(FORMATS)
    for row in data["artifacts"]:
        assert {"format", "precision", "path", "accuracy", "drop_pp", "agreement", "kl", "worst_class"} <= set(row)
    for name in ("report.md", "report.json", "parity.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0


def test_parity_names_a_wrong_mean_a_preprocessing_mismatch(exported, trained_run, tmp_path):
    source = tmp_path / "onnx-fp32"  # parity writes its summary into the artifact: a copy of the shared one
    shutil.copytree(_row(exported, "onnx", "fp32")["path"], source)
    broken = tmp_path / "onnx-fp32-wrong-mean"
    shutil.copytree(source, broken)
    data = json.loads((broken / "model.json").read_text())
    data["preprocess"]["mean"] = [0.485, 0.456, 0.406]
    data["preprocess"]["std"] = [0.229, 0.224, 0.225]
    (broken / "model.json").write_text(json.dumps(data))
    result = run_cli("parity", trained_run["run_dir"], "--artifacts", str(broken), "--artifacts", str(source),
                     "--report", str(tmp_path / "rep"), "--json")
    assert result.returncode == 1
    rows = {r["path"]: r for r in json_out(result)["artifacts"]}
    assert rows[str(broken)]["status"] == "preprocessing mismatch"
    assert "mean" in rows[str(broken)]["detail"] and "std" in rows[str(broken)]["detail"]
    assert rows[str(source)]["status"] == "ok"
    assert "preprocessing mismatch" in result.stderr


def test_runner_classifies_images_with_labels(exported):
    runner = load(_row(exported, "openvino", "int8")["path"], threads=1)
    sidecar = runner.sidecar
    golden = Path(_row(exported, "openvino", "int8")["path"], sidecar.golden[0].file)
    top = runner.classify([golden, Image.open(golden)], topk=3)
    assert len(top) == 2 and len(top[0]) == 3 and top[0] == top[1]
    assert top[0][0][0] in sidecar.labels and 0 < top[0][0][1] <= 1
    assert np.isclose(sum(score for _, score in runner.topk(runner.infer(runner.preprocess(golden)), 10)[0]), 1.0)


def test_golden_samples_check_the_artifact_not_the_quantization(exported, tmp_path):
    """A device must reproduce what the artifact answered on the export host; an int8 top-1
    that differs from the float model's is quantization error (counted, not a runtime fault)."""
    from edgetl.runtime.golden import check_golden

    source = Path(_row(exported, "onnx", "int8")["path"])
    sidecar = json.loads((source / "model.json").read_text())
    assert all(g["artifact_top1"] is not None and len(g["artifact_logits"]) == len(sidecar["labels"])
               for g in sidecar["golden"])
    classes = len(sidecar["labels"])

    def variant(name: str, edit) -> dict:
        folder = tmp_path / name
        shutil.copytree(source, folder)
        data = json.loads((folder / "model.json").read_text())
        edit(data["golden"][0])
        (folder / "model.json").write_text(json.dumps(data))
        return check_golden(load(folder, threads=1), folder)

    as_exported = check_golden(load(source, threads=1), source)
    assert as_exported["passed"] and as_exported["matched"] == as_exported["total"] == 4

    # the float model answered otherwise on sample 0: still a healthy runtime, one float disagreement
    quantized = variant("float-differs", lambda g: g.update(top1=(g["artifact_top1"] + 1) % classes))
    assert quantized["passed"] and quantized["samples"][0]["float_match"] is False
    assert quantized["float_matched"] < quantized["total"]

    # the host answered otherwise than this runtime does: a runtime mismatch
    broken = variant("host-differs", lambda g: g.update(artifact_top1=(g["artifact_top1"] + 1) % classes))
    assert not broken["passed"] and broken["matched"] == 3


def test_the_export_time_golden_check_compares_with_the_float_model(exported, tmp_path):
    """At export the artifact's own answers are being recorded and cannot check themselves: `passed`
    there means each golden image got the float model's top-1, and one that did not fails it."""
    from edgetl.runtime.golden import record_reference

    source = Path(_row(exported, "onnx", "fp32")["path"])
    folder = tmp_path / "float-answered-otherwise"
    shutil.copytree(source, folder)
    data = json.loads((folder / "model.json").read_text())
    assert Sidecar.read(source).validation["golden"]["passed"]
    data["golden"][0]["top1"] = (data["golden"][0]["top1"] + 1) % len(data["labels"])
    (folder / "model.json").write_text(json.dumps(data))
    summary = record_reference(load(folder, threads=1), folder)
    assert not summary["passed"] and summary["float_matched"] == summary["total"] - 1 == 3
    assert record_reference(load(source, threads=1), source)["passed"]


def test_a_corrupt_model_file_is_one_line_in_bench_and_run(exported, tmp_path):
    """A truncated model.onnx next to a valid sidecar: the sidecar's sha256 names it; without a recorded
    sha256 the runtime's refusal is still one line, never its traceback."""
    source = Path(_row(exported, "onnx", "fp32")["path"])
    image = next((source / "samples").glob("*.png"))
    truncated = tmp_path / "truncated"
    shutil.copytree(source, truncated)
    model = truncated / "model.onnx"
    model.write_bytes(model.read_bytes()[:2000])
    for args in (["bench", str(truncated), "--runs", "2", "--plot", ""], ["run", str(truncated), "--source", str(image)]):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "sha256 differs from the one in its sidecar" in result.stderr, result.stderr
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(truncated, unrecorded)
    data = json.loads((unrecorded / "model.json").read_text())
    data["files"].pop("model.onnx")
    (unrecorded / "model.json").write_text(json.dumps(data))
    result = run_cli("run", str(unrecorded), "--source", str(image))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "onnx could not load it" in result.stderr, result.stderr


def test_parity_names_a_broken_artifact_by_its_folder(exported, trained_run, tmp_path):
    broken = tmp_path / "onnx-int8"
    shutil.copytree(Path(_row(exported, "onnx", "int8")["path"]), broken)
    (broken / "model.json").write_text("{not json")
    result = run_cli("parity", trained_run["run_dir"], "--artifacts", str(broken), "--report", str(tmp_path / "r"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "onnx-int8: error:" in result.stderr and "parity failed for onnx-int8 (error)" in result.stderr, result.stderr
    assert "None" not in result.stderr
