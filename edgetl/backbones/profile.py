"""Parameter and multiply-accumulate counts, measured on the built network.

MACs are counted with forward hooks on convolutions and linear layers (the
layers that dominate a mobile CNN), for one image at the recipe's input size.
"""

from __future__ import annotations

from edgetl.backbones.spec import BackboneSpec


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, input_size: int) -> int:
    import torch
    import torch.nn as nn

    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def describe(spec: BackboneSpec, num_classes: int | None = None) -> dict:
    """Size figures for `edgetl models` (builds the network without weights)."""
    from edgetl.backbones.factory import create_model

    model = create_model(spec.name, num_classes=num_classes, pretrained=False)
    return {
        "parameters": count_parameters(model),
        "macs": count_macs(model, spec.input_size),
    }
