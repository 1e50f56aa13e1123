"""MobileNetV3's int8 speed: hard activations as integer/delegated ops, and the gate's speed check.

Real conversions and real runtimes (onnxruntime, LiteRT with XNNPACK); a recipe known to be
slow (TFLite's int8 HARD_SWISH, which XNNPACK does not delegate) builds the slow int8 the
gate must refuse.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgetl.contract.artifact import int8_over_fp32, read_parity
from edgetl.contract.sidecar import Sidecar
from edgetl.export import ExportSettings, gate

pytestmark = pytest.mark.slow

SIZE = 96
UNGATED = ExportSettings(calib_size=16, max_drop=None)
LOOSE = ExportSettings(calib_size=16, max_drop=100.0, min_agreement=0.0)  # only the speed check can refuse


@pytest.fixture(scope="module")
def v3_run(tmp_path_factory, digits_dir) -> dict:
    """A MobileNetV3-Small trained for one epoch (weights only need to be real, not good)."""
    from edgetl.train import TrainConfig, finetune

    out = tmp_path_factory.mktemp("runs") / "v3s"
    return finetune(TrainConfig(data=str(digits_dir), model="mobilenet_v3_small", out=str(out), epochs=1,
                                img_size=SIZE, batch_size=16, augment="none", pretrained=False, seed=1))


def _delegate_partitions(path: Path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    return sum(1 for op in interpreter._get_ops_details() if op["op_name"] == "DELEGATE")


def _slow_tflite_recipe(monkeypatch) -> None:
    """The gate searches only TFLite's int8 with an integer HARD_SWISH (the recipe known to be slow)."""
    from edgetl.export import tflite

    def recipes(calib_size, calib_all, searched=True):
        return [gate.Attempt("int8 a8w8, integer hard-swish", "int8",
                             {"recipe": "static_wi8_ai8", "calib_images": calib_size, "hard_swish": "int8"})]
    monkeypatch.setattr(tflite, "int8_recipes", recipes)


def test_onnx_int8_runs_hard_swish_in_integer_ops_and_matches_the_float_graph(v3_run, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgetl.export import export_run
    from edgetl.export.hard_activations import fold_scales, integer_friendly

    report = export_run(v3_run["run_dir"], ["onnx"], ["fp32", "int8"], UNGATED, out=tmp_path)
    fp32 = onnx.load(str(tmp_path / "onnx-fp32" / "model.onnx"))
    assert any(n.op_type == "HardSwish" for n in fp32.graph.node)  # the float artifact keeps the fused op
    int8_path = tmp_path / "onnx-int8" / "model.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "HardSigmoid" not in ran and "HardSwish" not in ran
    # Only the input's quantizer is left outside an integer kernel: no float islands in between.
    assert ran.count("DequantizeLinear") == 0 and ran.count("QuantizeLinear") == 1, sorted(set(ran))

    rewritten = onnx.load(str(tmp_path / "onnx-fp32" / "model.onnx"))
    assert integer_friendly(rewritten) > 0
    inputs = np.random.default_rng(0).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(), plain, providers=["CPUExecutionProvider"])
        return session.run(None, {"input": inputs})[0]

    before, after = run(fp32), run(rewritten)
    assert np.abs(before - after).max() <= 1e-4 * np.abs(before).max()
    int8 = onnx.load(str(int8_path))
    assert fold_scales(int8) == 0  # already folded at export: no hard-sigmoid scale Mul left
    assert report["artifacts"][1]["delivered"] == "int8"


def test_tflite_int8_is_one_xnnpack_partition_and_integer_hard_swish_splits_it(v3_run, tmp_path, monkeypatch):
    from edgetl.export import export_run

    export_run(v3_run["run_dir"], ["tflite"], ["int8"], UNGATED, out=tmp_path / "default")
    default = tmp_path / "default" / "tflite-int8"
    assert _delegate_partitions(default / "model.tflite") == 1
    assert set(Sidecar.read(default).quantization["float_ops"]) == {"HARD_SWISH"}  # the only float op

    _slow_tflite_recipe(monkeypatch)
    export_run(v3_run["run_dir"], ["tflite"], ["int8"], UNGATED, out=tmp_path / "slow")
    slow = tmp_path / "slow" / "tflite-int8" / "model.tflite"
    assert _delegate_partitions(slow) > 5

    # The rewrite QAT's TFLite files get: the same int8 tensors, HARD_SWISH computing in float between them.
    from edgetl.export.tflite_ops import float_hard_swish

    fixed_bytes, count = float_hard_swish(slow.read_bytes())
    fixed = tmp_path / "fixed.tflite"
    fixed.write_bytes(fixed_bytes)
    assert count == 19 and _delegate_partitions(fixed) == 1  # MobileNetV3-Small's 19 hard-swishes
    assert float_hard_swish(fixed_bytes)[1] == 0  # nothing left to rewrite
    inputs = np.random.default_rng(0).normal(size=(8, SIZE, SIZE, 3)).astype(np.float32)
    before, after = _outputs(slow, inputs), _outputs(fixed, inputs)
    assert np.array_equal(before.argmax(1), after.argmax(1))
    assert np.abs(before - after).max() < 0.1 * np.abs(before).max(), (before, after)


def _outputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in inputs:
        interpreter.set_tensor(detail["index"], image[None].astype(detail["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].astype(np.float64))
    return np.stack(rows)


def test_gate_refuses_an_int8_slower_than_fp32_and_names_it(v3_run, tmp_path, monkeypatch):
    from edgetl.deploy.bundle import NoArtifactError, choose_artifact
    from edgetl.deploy.profiles import get_profile
    from edgetl.export import export_run

    _slow_tflite_recipe(monkeypatch)
    gated = export_run(v3_run["run_dir"], ["tflite"], ["int8"], LOOSE, out=tmp_path / "gated")["artifacts"][0]
    assert gated["delivered"] == "fp16", gated
    assert "slower than the float model" in gated["message"] and "--no-speed-gate" in gated["message"]
    timed = [a for a in gated["attempts"] if a.get("speed")]
    assert timed and timed[0]["speed"]["ratio"] > 1.0 and timed[0]["status"].startswith("best recipe, int8 is")
    assert any(a["status"].startswith("skipped: every int8 recipe") for a in gated["attempts"])  # no mixed, no QAT

    kept = export_run(v3_run["run_dir"], ["tflite"], ["int8"], replace(LOOSE, speed_gate=False),
                      out=tmp_path / "kept")["artifacts"][0]
    assert kept["delivered"] == "int8" and kept["speed"]["ratio"] > 1.0
    sidecar = Sidecar.read(Path(kept["path"]))
    assert int8_over_fp32(sidecar) == kept["speed"]["ratio"]

    # The default choice of a deploy never ships it: the rpi5 profile's first target is tflite int8.
    run_dir = Path(v3_run["run_dir"])
    (run_dir / "export").mkdir(exist_ok=True)
    (run_dir / "export" / "tflite-int8").symlink_to(Path(kept["path"]))
    with pytest.raises(NoArtifactError):
        choose_artifact(run_dir, get_profile("rpi5"))


def test_parity_records_the_int8_speed_ratio(v3_run, tmp_path):
    from edgetl.export import export_run
    from edgetl.parity import run_parity

    row = export_run(v3_run["run_dir"], ["onnx"], ["int8"], replace(LOOSE, qat="off"), out=tmp_path)["artifacts"][0]
    ratio = row["speed"]["ratio"] if row["delivered"] == "int8" else None
    run_parity(v3_run["run_dir"], artifacts=[row["path"]])
    assert read_parity(Path(row["path"]))["int8_over_fp32"] == ratio
