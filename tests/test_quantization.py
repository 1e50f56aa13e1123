"""int8 that behaves like float: measured layer sensitivity, mixed precision, the default gate, fast ONNX int8.

Real converters, real runtimes, a real fine-tuned Lite0 (the shared digits run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import json_out, run_cli
from edgetl.contract.sidecar import Sidecar
from edgetl.export import ExportSettings, export_run
from edgetl.export.qdq import activation_zero_point_types, activations_to_uint8, module_of, nodes_of_modules
from edgetl.runtime import load as load_runner


def _row(exported, fmt, precision) -> dict:
    return next(r for r in exported["artifacts"] if r["format"] == fmt and r["precision"] == precision)


@pytest.fixture(scope="module")
def float_model(trained_run):
    from edgetl.export.reference import load_reference

    return load_reference(trained_run["run_dir"])


def test_layer_names_are_torch_modules_in_all_three_formats(exported, float_model):
    """One module path names one layer: it maps back to the torch model and selects ops in every format."""
    import onnx
    import openvino as ov

    from edgetl.export.openvino import _ignored_names
    from edgetl.export.tflite import _float_entries

    modules = dict(float_model.model.named_modules())
    graph = onnx.load(str(Path(_row(exported, "onnx", "fp32")["path"]) / "model.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(module_of(n.name) in modules for n in convs), [module_of(n.name) for n in convs][:5]
    depthwise = next(module_of(n.name) for n in convs if module_of(n.name).endswith("conv_dw"))
    chosen = nodes_of_modules(graph, [depthwise])
    assert any(n.endswith("/Conv") for n in chosen) and any(n.endswith("/Clip") for n in chosen), chosen
    assert not nodes_of_modules(graph, ["no_such_module"])
    ir = ov.Core().read_model(str(Path(_row(exported, "openvino", "fp32")["path"]) / "model.xml"))
    assert _ignored_names(ir, [depthwise]) and not _ignored_names(ir, ["no_such_module"])
    tflite = (Path(_row(exported, "tflite", "fp32")["path"]) / "model.tflite").read_bytes()
    assert _float_entries(tflite, [depthwise]) and not _float_entries(tflite, ["no_such_module"])


def test_nncf_int8_activations_move_to_uint8_exactly(exported, trained_run, tmp_path, float_model):
    """NNCF writes int8 activation zero points (slow on x86 without VNNI); the uint8 rewrite changes no output."""
    import nncf
    import onnx
    import onnxruntime as ort

    from edgetl.export.calibration import normalized_batches

    source = Path(_row(exported, "onnx", "fp32")["path"]) / "model.onnx"
    validation = float_model.labelled("val")
    batches = list(normalized_batches(validation.pixels, validation.preprocess, "NCHW", batch_size=1))
    model = nncf.quantize(onnx.load(str(source)), nncf.Dataset([{"input": b} for b in batches]),
                          preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches))
    assert activation_zero_point_types(model).get("int8", 0) > 0
    onnx.save(model, str(tmp_path / "signed.onnx"))
    moved = activations_to_uint8(model)
    onnx.save(model, str(tmp_path / "unsigned.onnx"))
    assert moved > 0 and "int8" not in activation_zero_point_types(model)
    inputs = np.concatenate(batches)
    reference = ort.SessionOptions()  # QDQ semantics, no fused integer kernels: the rewrite must be exact
    reference.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outputs = [ort.InferenceSession(str(tmp_path / name), reference, providers=["CPUExecutionProvider"])
               .run(None, {"input": inputs})[0] for name in ("signed.onnx", "unsigned.onnx")]
    assert np.array_equal(*outputs), float(np.abs(outputs[0] - outputs[1]).max())


@pytest.fixture(scope="module")
def strict(trained_run, tmp_path_factory) -> dict:
    """A gate no recipe alone can pass (no drop, full agreement): the search and mixed precision must run."""
    out = tmp_path_factory.mktemp("strict") / "export"
    return export_run(trained_run["run_dir"], ["onnx", "tflite"], ["int8"],
                      ExportSettings(calib_size=32, max_drop=0.0, min_agreement=1.0, qat="off"), out=out)


@pytest.mark.slow
def test_gate_searches_recipes_then_keeps_the_measured_worst_layers_float(strict):
    for row in strict["artifacts"]:
        stages = [a.get("stage") for a in row["attempts"]]
        assert stages.count("recipe") >= 2, row["attempts"]  # more than one calibration was tried
        sidecar = Sidecar.read(row["path"])
        ranking = [layer["layer"] for layer in sidecar.sensitivity["layers"]]
        assert len(ranking) >= 10 and len(set(ranking)) == len(ranking)
        sqnr = [layer["sqnr_db"] for layer in sidecar.sensitivity["layers"]]
        assert sqnr == sorted(sqnr), "worst first"
        mixed = [a for a in row["attempts"] if a.get("stage") == "mixed"]
        if row["status"] == "ok":  # a recipe already agreed on every validation image
            continue
        assert mixed, row["attempts"]
        for count, attempt in zip((1, 2, 3, 5, 8), mixed):  # the k most sensitive layers, in ranking order
            assert ", ".join(ranking[:count]) in attempt["what"], (attempt["what"], ranking[:count])
        order = [s for i, s in enumerate(stages) if s not in stages[:i]]
        assert order == ["recipe", "mixed", "fallback"][:len(order)], stages  # (QAT's place: test_chain.py)
        if row["status"] == "mixed precision":
            assert sidecar.precision == "int8" and sidecar.sensitivity["float_layers"] == row["float_layers"]
            assert row["float_layers"] == ranking[:len(row["float_layers"])]
            assert sidecar.quantization["float_layers"] == row["float_layers"]
            if row["format"] == "onnx":  # what any onnxruntime needs to keep them float; edgetl's reads it
                assert sidecar.quantization["onnxruntime_disabled_optimizers"] == ["WeightBiasQuantization"]
                assert load_runner(row["path"]).disabled_optimizers == ["WeightBiasQuantization"]
        else:
            assert row["delivered"] in ("fp16", "fp32") and ranking[0] in row["message"], row["message"]
            assert sidecar.sensitivity["float_layers"] == []  # the ranking says what held int8 back


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_mixed_precision_is_delivered_with_its_float_layers_recorded(trained_run, tmp_path, monkeypatch, fmt):
    """The mixed-precision path, forced: every plain recipe's measurement is read as a 100 pp drop, so the
    chain must go on to the best recipe with its most sensitive layers float, and that is what ships."""
    from edgetl.export import chain

    real = chain.next_step

    def plain_recipes_miss(plan, results, seconds, ranking=None):
        doctored = [chain.Result(r.attempt, {**r.metrics, "drop_pp": 100.0})
                    if r.metrics is not None and r.attempt.stage == "recipe" else r for r in results]
        return real(plan, doctored, seconds, ranking)

    monkeypatch.setattr(chain, "next_step", plain_recipes_miss)
    exported = export_run(trained_run["run_dir"], [fmt], ["int8"],
                          ExportSettings(calib_size=32, max_drop=50.0, min_agreement=None, qat="off", speed_gate=False),
                          out=tmp_path / "export")
    row = exported["artifacts"][0]
    assert row["status"] == "mixed precision" and row["delivered"] == "int8", row["attempts"]
    sidecar = Sidecar.read(row["path"])
    ranking = [layer["layer"] for layer in sidecar.sensitivity["layers"]]
    assert row["float_layers"] == ranking[:1]  # the first count tried, the worst layer
    assert sidecar.precision == "int8" and sidecar.sensitivity["float_layers"] == row["float_layers"]
    assert sidecar.quantization["float_layers"] == row["float_layers"]
    if fmt == "onnx":  # what any onnxruntime needs to keep them float; edgetl's reads it
        assert sidecar.quantization["onnxruntime_disabled_optimizers"] == ["WeightBiasQuantization"]
        assert load_runner(row["path"]).disabled_optimizers == ["WeightBiasQuantization"]


@pytest.mark.slow
def test_parity_lists_the_sensitivity_of_each_artifact_that_asked_for_int8(strict, trained_run, tmp_path):
    """Delivered int8 or fallen back to fp16/fp32: parity shows the measured ranking of each."""
    args = ["parity", trained_run["run_dir"], "--max-drop", "100", "--report", str(tmp_path / "rep"), "--json"]
    for row in strict["artifacts"]:
        args += ["--artifacts", row["path"]]
    data = json_out(run_cli(*args, check=True))
    assert len(data["artifacts"]) == len(strict["artifacts"]) == 2
    for row in data["artifacts"]:
        assert len(row["sensitivity"]) >= 10
        assert {"layer", "sqnr_db", "kl", "agreement"} <= set(row["sensitivity"][0])
        assert "agreement_if_float" in row["sensitivity"][0]
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "int8 sensitivity" in report and row["sensitivity"][0]["layer"] in report
    assert (tmp_path / "rep" / "sensitivity.png").stat().st_size > 0


@pytest.mark.slow
def test_export_gates_int8_by_default_and_none_turns_it_off(trained_run, tmp_path):
    gated = json_out(run_cli("export", trained_run["run_dir"], "--format", "onnx", "--precision", "int8",
                             "--calib-size", "32", "--no-qat", "--out", str(tmp_path / "gated"), "--json",
                             check=True))  # (QAT's place in the chain: test_chain.py; QAT itself: test_qat.py)
    assert gated["max_drop"] == 1.0 and gated["min_agreement"] == 0.985
    row = gated["artifacts"][0]
    assert len([a for a in row["attempts"] if a.get("stage") == "recipe"]) >= 2
    assert row["latency_ms"] > 0
    # the digits run's validation split is a few dozen images: the gate says it cannot resolve 1 pp
    assert any("too coarse" in note for note in gated["notes"]), gated["notes"]
    # ... and judges agreement on five shifted views of each of those images (views.py)
    measured = [a for a in row["attempts"] if "drop_pp" in a]
    assert measured and all(a["views"] == 5 and 0 <= a["view_agreement"] <= 1 for a in measured), measured
    off = json_out(run_cli("export", trained_run["run_dir"], "--format", "onnx", "--precision", "int8",
                           "--calib-size", "32", "--max-drop", "none", "--out", str(tmp_path / "off"), "--json",
                           check=True))
    assert off["max_drop"] is None and len(off["artifacts"][0]["attempts"]) == 1
    bad = run_cli("export", trained_run["run_dir"], "--max-drop", "lots")
    assert bad.returncode == 2 and "--max-drop" in bad.stderr and "Traceback" not in bad.stderr


def test_torchvision_scopes_map_to_module_names(tmp_path):
    """MobileNetV3 (torchvision) nests Sequentials differently from timm: every node still names its module."""
    import onnx
    import torch

    from edgetl.backbones import create_model

    model = create_model("mobilenet_v3_small", num_classes=3, pretrained=False).eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=17)
    modules = dict(model.named_modules())
    nodes = [n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type in ("Conv", "Gemm")]
    names = [module_of(n.name) for n in nodes]
    assert len(nodes) > 40 and all(name in modules for name in names), [n for n in names if n not in modules][:5]
    assert "features.1.block.0.0" in names and any(name.endswith("fc2") for name in names)


def test_a_layer_kept_float_in_onnx_runs_float_in_edgetls_onnxruntime_sessions(exported, float_model, tmp_path):
    """onnxruntime's WeightBiasQuantization quantizes a float Conv sandwiched between DQ and Q at load time
    (measured on Lite0: the float layer made int8 worse); every session edgetl opens keeps it float."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgetl.export.calibration import normalized_batches
    from edgetl.export.qdq import BatchReader
    from edgetl.runtime.onnx import FLOAT_LAYER_OPTIMIZERS, session

    source = Path(_row(exported, "onnx", "fp32")["path"]) / "model.onnx"
    graph = onnx.load(str(source)).graph
    depthwise = next(module_of(n.name) for n in graph.node if n.op_type == "Conv" and "conv_dw" in n.name)
    validation = float_model.labelled("val")
    batches = list(normalized_batches(validation.pixels, validation.preprocess, "NCHW", batch_size=8))
    mixed = tmp_path / "mixed.onnx"
    quantize_static(str(source), str(mixed), BatchReader(batches, "input"), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=nodes_of_modules(graph, [depthwise]))

    def weight_of_float_layer(open_session) -> str:
        """What feeds the kept-float Conv's weight after onnxruntime's level-1 rewrites."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        open_session(options)
        optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph
        conv = next(n for n in optimized.node if n.op_type == "Conv" and module_of(n.name) == depthwise)
        producers = {out: n.op_type for n in optimized.node for out in n.output}
        return producers.get(conv.input[1], "initializer")

    plain = weight_of_float_layer(lambda o: ort.InferenceSession(str(mixed), o, providers=["CPUExecutionProvider"]))
    assert plain == "DequantizeLinear"  # onnxruntime's own default: the "float" layer got int8 weights
    assert weight_of_float_layer(lambda o: session(mixed, o, disabled=FLOAT_LAYER_OPTIMIZERS)) == "initializer"
    inputs = np.concatenate(batches)
    reference = ort.SessionOptions()  # the graph's own semantics: no rewrites at all
    reference.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    expected = ort.InferenceSession(str(mixed), reference, providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]
    ours = session(mixed, disabled=FLOAT_LAYER_OPTIMIZERS).run(None, {"input": inputs})[0]
    assert np.allclose(ours, expected, atol=0.05 * float(np.abs(expected).max()))
