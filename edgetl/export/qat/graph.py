"""The QAT graph: the float network captured with `torch.export`, with the int8 scheme every backend runs.

Prepared with torchao's PT2E QAT flow and the LiteRT quantizer: per-channel
symmetric int8 weights, per-tensor affine int8 activations, BatchNorm folded into
the weights first, as every converter folds it. The same graph is what `convert`
turns into TFLite, ONNX QDQ and OpenVINO, so the ranges learned in training are
the ranges in every artifact.

The stock LiteRT annotation is changed where the backends' fused kernels differ
from it (docs/qat.md measures each change): every residual add is int8 in and out,
ReLU6 quantizes its own output instead of sharing the pre-activation's range, the
constant pads in front of strided convolutions share their input's range, and the
network's output (the logits) stays float.

The graph is rebuilt the same way on every call (same model, same input size), so
a checkpoint is just its `state_dict`: weights and each fake quantizer's scale,
zero point and observed range.
"""

from __future__ import annotations

from edgetl.errors import MissingBackendError
from edgetl.export.base import quiet_native

PAD_OPS = ("constant_pad_nd.default", "pad.default")
ADD_OPS = ("add.Tensor", "add_.Tensor")
CLAMP_OPS = ("hardtanh.default", "hardtanh_.default", "relu6.default", "clamp.default")


def quantizer():
    """The LiteRT PT2E quantizer (QAT, per-channel weights), annotating as the backends' fused kernels run."""
    try:
        with quiet_native():  # TensorFlow's absl and oneDNN lines on import
            _import_litert_quantizer()
    except ImportError as exc:
        raise MissingBackendError("litert_torch", "export",
                                  "quantization-aware training (the LiteRT PT2E quantizer)") from exc
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class BackendFusedQuantizer(PT2EQuantizer):
        def annotate(self, model):
            model = self._annotate_for_static_quantization_config(model)
            _annotate_backend_fusions(model, self.global_config, utils)
            _float_logits(model)
            utils.propagate_annotation(model)
            return model

    _wrap_pattern_functions(utils)
    return BackendFusedQuantizer().set_global(_symmetric_weights(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)))


def _annotate_backend_fusions(model, config, utils) -> None:
    """Residual adds int8, ReLU6 quantized after the clamp, pads sharing their input's range."""
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    for node in model.graph.nodes:
        if _op_name(node) in ADD_OPS and "quantization_annotation" not in node.meta:
            inputs = [arg for arg in node.args[:2] if isinstance(arg, Node)]
            if len(inputs) == 2:  # a residual add of two activations, int8 in every backend
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={arg: utils.get_input_act_qspec(config) for arg in inputs},
                    output_qspec=utils.get_output_act_qspec(config), _annotated=True)
    for node in model.graph.nodes:
        if _op_name(node) in CLAMP_OPS and _fed_by_annotated_output(node):
            # The producer's (conv+BN or add) output stays float inside the fused kernel.
            node.args[0].meta["quantization_annotation"].output_qspec = None
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=utils.get_output_act_qspec(config), _annotated=True)
    for node in model.graph.nodes:
        if _op_name(node) in PAD_OPS and _fed_by_annotated_output(node, any_producer=True):
            shared = SharedQuantizationSpec(node.args[0])
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: shared}, output_qspec=shared, _annotated=True)


def _import_litert_quantizer() -> None:
    """Import litert-torch's quantizer, also where its TFLite converter is not installed.

    The quantizer needs only torch and torchao, but the package's `__init__` loads the
    converter, which a GPU training server does not need. When the full import fails on a
    missing dependency, the package is registered without running its `__init__` and only
    the quantize subpackage is loaded; `errors.require` then names the converter missing.
    """
    import importlib
    import importlib.util
    import sys
    import types

    try:
        importlib.import_module("litert_torch.quantize.pt2e_quantizer")
        return
    except ImportError as error:
        if (error.name or "").split(".")[0] == "litert_torch":
            raise
    for name in [m for m in sys.modules if m == "litert_torch" or m.startswith("litert_torch.")]:
        del sys.modules[name]  # the half-imported package from the failed attempt
    spec = importlib.util.find_spec("litert_torch")
    if spec is None:
        raise ImportError("litert_torch is not installed", name="litert_torch")
    package = types.ModuleType("litert_torch")
    package.__path__ = list(spec.submodule_search_locations or [])
    package.__spec__ = spec
    package.edgetl_quantizer_only = True
    sys.modules["litert_torch"] = package
    importlib.import_module("litert_torch.quantize.pt2e_quantizer")


def _symmetric_weights(config):
    """The config with weights fake-quantized per-channel *symmetric*, as every backend stores them.

    torch's fused per-channel kernel (the stock config's) ignores its symmetric flag; the unfused
    `FakeQuantize` computes its parameters through the observer, symmetric as asked.
    """
    import dataclasses

    from torchao.quantization.pt2e.fake_quantize import FakeQuantize
    from torchao.quantization.pt2e.observer import MovingAveragePerChannelMinMaxObserver

    weight = dataclasses.replace(config.weight, observer_or_fake_quant_ctr=FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, eps=2 ** -12))
    return dataclasses.replace(config, weight=weight)


def _wrap_pattern_functions(utils) -> None:
    """litert-torch hands torchao plain pattern functions, and `torch.export` takes only modules: wrap them."""
    import torch
    from torchao.quantization.pt2e import WrapperModule

    original = utils._get_aten_graph_module_for_pattern
    if getattr(original, "edgetl_wrapped", False):
        return

    def wrapped(pattern, example_inputs, is_cuda=False, **kwargs):
        if not isinstance(pattern, torch.nn.Module):
            pattern = WrapperModule(pattern)
        return original(pattern, example_inputs, is_cuda, **kwargs)

    wrapped.edgetl_wrapped = True
    utils._get_aten_graph_module_for_pattern = wrapped


def _float_logits(model) -> None:
    """Leave the network's output unquantized: rounded logits turn near ties into exact ties."""
    for node in model.graph.nodes:
        if node.op != "output":
            continue
        for result in node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]:
            annotation = getattr(result, "meta", {}).get("quantization_annotation")
            if annotation is not None:
                annotation.output_qspec = None


def _op_name(node) -> str:
    target = getattr(node, "target", None)
    return f"{getattr(target, '__name__', '')}" if node.op == "call_function" else ""


def _fed_by_annotated_output(node, any_producer: bool = False) -> bool:
    from torch.fx import Node

    producer = node.args[0] if node.args else None
    if not isinstance(producer, Node):
        return False
    annotation = producer.meta.get("quantization_annotation")
    if annotation is None or annotation.output_qspec is None:
        return False
    return any_producer or len(producer.users) == 1


def capture(model, image_size: tuple[int, int]):
    """`model` (float, eval) as an exported graph module with a dynamic batch axis."""
    import torch

    height, width = image_size
    example = (torch.randn(2, 3, height, width),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), example, dynamic_shapes=({0: batch},), strict=False).module()


def prepare(model, image_size: tuple[int, int]):
    """The QAT graph of a float model: BatchNorm folded, fake quantizers in place, observers on.

    BatchNorm is folded (torchao's exact PTQ fold) *before* the quantizers go in: torchao's QAT
    conv+BN pattern rewrites every BN with its own eps, not the model's.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    captured = capture(model, image_size)
    _fuse_conv_bn_(captured)
    captured.graph.eliminate_dead_code()
    captured.recompile()
    prepared = prepare_qat_pt2e(captured, quantizer())
    train_mode(prepared)
    return prepared


def load_state(student, state: dict) -> None:
    """Load a QAT checkpoint into a freshly prepared graph, with the graph's own state-dict versions.

    A saved state is a plain dict without `_metadata`; torchao's observers read a missing version
    as "version 1" and overwrite their `eps` buffer, so a resumed run would compute other scales.
    """
    from collections import OrderedDict

    ordered = OrderedDict(state)
    ordered._metadata = student.state_dict()._metadata
    student.load_state_dict(ordered)


def train_mode(prepared) -> None:
    """Training mode for the graph (dropout, if the capture kept any; BN is folded away)."""
    from torchao.quantization.pt2e import move_exported_model_to_train

    move_exported_model_to_train(prepared)


def eval_mode(prepared) -> None:
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(prepared)


def observers(prepared, enabled: bool) -> None:
    """Turn range observation on (calibration, early QAT) or off (ranges fixed: evaluation, export)."""
    from torchao.quantization.pt2e import disable_observer, enable_observer

    prepared.apply(enable_observer if enabled else disable_observer)


def weight_quantizers(prepared) -> list[tuple[object, object]]:
    """(weight parameter, the per-channel fake quantizer that rounds it) for every quantized layer."""
    params = dict(prepared.named_parameters())
    found = []
    for node in prepared.graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if getattr(source, "op", None) == "get_attr" and source.target in params:
            module = prepared.get_submodule(node.target)
            if getattr(module, "ch_axis", None) == 0 and hasattr(module, "fake_quant_enabled"):
                found.append((params[source.target], module))
    return found


def activation_quantizers(prepared) -> list:
    """Every per-tensor (activation) fake quantizer of the QAT graph, each once."""
    weights = {id(q) for _, q in weight_quantizers(prepared)}
    found = []
    for _name, module in prepared.named_modules():
        scale = getattr(module, "scale", None)
        if hasattr(module, "fake_quant_enabled") and scale is not None and scale.numel() == 1 \
                and id(module) not in weights:
            found.append(module)
    return found


def weight_observers(prepared, enabled: bool) -> None:
    """Turn range observation of the weight quantizers alone on or off (their grid fixed while training)."""
    from torchao.quantization.pt2e import disable_observer, enable_observer

    for _param, module in weight_quantizers(prepared):
        module.apply(enable_observer if enabled else disable_observer)


def fake_quantizers(prepared) -> dict[str, dict]:
    """Each activation fake quantizer's learned scale and zero point, by module name (what export must keep)."""
    found = {}
    for name, module in prepared.named_modules():
        scale, zero_point = getattr(module, "scale", None), getattr(module, "zero_point", None)
        if scale is None or zero_point is None or scale.numel() != 1:
            continue
        found[name] = {"scale": float(scale.detach()), "zero_point": int(zero_point)}
    return found
