"""Making a trained network export-friendly without changing what it computes.

TF-ported backbones (timm's `tf_efficientnet_lite*`) use TensorFlow "SAME"
padding, computed from the input size at every call. Traced with a dynamic batch
axis this becomes a chain of Shape/Gather/Div/Concat ops in front of each strided
convolution: slower on every runtime, and poison for int8 (onnxruntime
quantized those shape computations, cutting top-1 agreement with float from
75% to 29% in our trials). For a fixed image size the padding is a constant, so
each such convolution is swapped for one that pads by that constant.
"""

from __future__ import annotations

import copy


def static_same_padding(model, input_shape: tuple[int, int, int, int]):
    """A copy of `model` whose dynamic SAME-padding convolutions pad by constants for `input_shape`."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    try:
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.padding import pad_same_arg
    except ImportError:  # not a timm model
        return model
    targets = [name for name, module in model.named_modules() if isinstance(module, Conv2dSame)]
    if not targets:
        return model
    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda module, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))) for name in targets]
    with torch.no_grad():
        model(torch.zeros(input_shape))
    for hook in hooks:
        hook.remove()

    class StaticSamePadConv2d(nn.Conv2d):
        pads: tuple[int, int, int, int] = (0, 0, 0, 0)

        def forward(self, x):
            return super().forward(F.pad(x, self.pads))

    for name in targets:
        old = model.get_submodule(name)
        new = StaticSamePadConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, 0, old.dilation,
                                  old.groups, old.bias is not None)
        new.load_state_dict(old.state_dict())
        new.pads = tuple(pad_same_arg(list(sizes[name]), list(old.kernel_size), list(old.stride), list(old.dilation)))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model.eval()
