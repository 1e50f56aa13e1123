"""`create_model`: the one way to build a backbone, with or without a new head.

With `num_classes=None` the ImageNet classifier is kept, so a test can prove that
pretrained weights really loaded (a photo of a cat must come out as a cat).
With `num_classes=N` the recipe's `head` module (the last Linear) is replaced by
a freshly initialised Linear with N outputs.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from edgetl.backbones.registry import get_spec
from edgetl.backbones.spec import BackboneSpec
from edgetl.backbones.weights import fetch_imagenet_state, load_state_dict_file
from edgetl.errors import BadInputError, require

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn


def _build_architecture(spec: BackboneSpec) -> "nn.Module":
    if spec.builder == "torchvision":
        require("torchvision", "train", "building torchvision backbones")
        import torchvision.models as tvm

        return getattr(tvm, spec.architecture)(weights=None)
    timm = require("timm", "train", f"building {spec.name}")
    return timm.create_model(spec.architecture, pretrained=False)


def get_submodule(model: "nn.Module", path: str) -> "nn.Module":
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise BadInputError(f"module '{path}' does not exist in this backbone", "fix the recipe's head/stages") from exc


def _set_submodule(model: "nn.Module", path: str, module: "nn.Module") -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def replace_head(model: "nn.Module", spec: BackboneSpec, num_classes: int) -> None:
    import torch.nn as nn

    old = get_submodule(model, spec.head)
    if not isinstance(old, nn.Linear):
        raise BadInputError(f"recipe head '{spec.head}' of {spec.name} is a {type(old).__name__}, not a Linear")
    new = nn.Linear(old.in_features, num_classes)
    nn.init.normal_(new.weight, std=0.01)
    nn.init.zeros_(new.bias)
    _set_submodule(model, spec.head, new)


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = True,
    weights: str | None = None,
) -> "nn.Module":
    """Build backbone `name`.

    pretrained: load ImageNet weights from the recipe's sources (offline first).
    weights: a local file instead (ImageNet state dict, or an edgetl checkpoint
        whose head already has `num_classes` outputs).
    """
    require("torch", "train", "building a model")
    spec = get_spec(name)
    model = _build_architecture(spec)
    model.edgetl_weights_source = "random init"  # type: ignore[attr-defined]
    if weights or pretrained:
        if weights:
            state, source = load_state_dict_file(weights), f"file {weights}"
        else:
            state, source = fetch_imagenet_state(spec, model.state_dict())
        head_weight = f"{spec.head}.weight"
        if num_classes is not None and head_weight in state and state[head_weight].shape[0] == num_classes:
            replace_head(model, spec, num_classes)  # a checkpoint already trained for these classes
            _load(model, state, source)
        else:
            _load(model, state, source)
            if num_classes is not None:
                replace_head(model, spec, num_classes)
        model.edgetl_weights_source = source  # type: ignore[attr-defined]
    elif num_classes is not None:
        replace_head(model, spec, num_classes)
    return model


def _load(model: "nn.Module", state: dict, source: str) -> None:
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if mismatched or missing:
        detail = mismatched[:1] or missing[:1]
        raise BadInputError(
            f"weights from {source} do not fit this backbone ({len(mismatched)} tensors of another shape, "
            f"{len(missing)} missing, e.g. {detail[0]})",
            "pass weights saved from the same backbone",
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def stage_modules(model: "nn.Module", spec: BackboneSpec) -> list[list["nn.Module"]]:
    """Module groups from input to output; the head is the last group."""
    groups = [[get_submodule(model, path) for path in stage] for stage in spec.stages]
    groups.append([get_submodule(model, spec.head)])
    return groups


def matches_any(module_name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether a module path is one of (or inside one of) the recipe's patterns."""
    return any(module_name == p or module_name.startswith(p + ".") or fnmatch.fnmatch(module_name, p) for p in patterns)
