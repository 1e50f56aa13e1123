"""Transfer-learning strategies: what trains, at which learning rate, in which epoch.

- feature-extract: only the new head trains; the backbone is frozen and its
  BatchNorm layers stay in eval mode (their ImageNet statistics are kept). Best
  for small datasets close to ImageNet photos.
- finetune: everything trains, pretrained layers at `lr * backbone_lr_mult`
  (discriminative learning rates): the usual best choice with a few hundred
  images per class or more.
- gradual: starts as feature extraction, then unfreezes one recipe stage every
  `unfreeze_every` epochs from the top (ULMFiT-style); robust when the domain is
  far from ImageNet and data is scarce.

The trainable set is a pure function of the epoch, so a resumed run is in the
same state as an uninterrupted one.
"""

from __future__ import annotations

from edgetl.backbones.factory import stage_modules
from edgetl.backbones.spec import BackboneSpec


def set_bn_momentum(model, momentum: float) -> int:
    """Give every BatchNorm the same momentum (TF ports and torchvision's V3 use 0.01)."""
    import torch.nn as nn

    changed = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
            changed += 1
    return changed


def trainable_stage_count(strategy: str, epoch: int, stages: int, unfreeze_every: int) -> int:
    """How many backbone stages (counted from the top) train in `epoch` (0-based)."""
    if strategy == "finetune":
        return stages
    if strategy == "feature-extract":
        return 0
    return min(stages, epoch // unfreeze_every)


def apply_strategy(model, spec: BackboneSpec, strategy: str, epoch: int, unfreeze_every: int = 1) -> int:
    """Set requires_grad for `epoch`; returns the number of trainable parameters."""
    groups = stage_modules(model, spec)
    backbone, head = groups[:-1], groups[-1]
    n_train = trainable_stage_count(strategy, epoch, len(backbone), unfreeze_every)
    trainable = [*backbone[len(backbone) - n_train:], head] if n_train else [head]
    trainable_ids = {id(m) for group in trainable for m in group}
    for group in groups:
        for module in group:
            flag = id(module) in trainable_ids
            for parameter in module.parameters():
                parameter.requires_grad_(flag)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_frozen_batchnorm(model) -> None:
    """After `model.train()`: BatchNorm layers without trainable parameters go back to eval mode.

    Otherwise a "frozen" backbone would still overwrite its ImageNet running
    statistics with those of the new data.
    """
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def parameter_groups(model, spec: BackboneSpec, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict]:
    """AdamW groups: head vs pretrained layers (discriminative LR), decay vs no decay.

    Biases and normalisation parameters (1-D tensors) take no weight decay.
    Frozen parameters are included: AdamW skips tensors without gradients, and
    gradual unfreezing only has to flip requires_grad.
    """
    from edgetl.backbones.factory import get_submodule

    head_ids = {id(p) for p in get_submodule(model, spec.head).parameters()}
    buckets: dict[tuple[str, bool], list] = {}
    for parameter in model.parameters():
        part = "head" if id(parameter) in head_ids else "backbone"
        buckets.setdefault((part, parameter.ndim > 1), []).append(parameter)
    groups = []
    for (part, decays), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "lr": lr if part == "head" else lr * backbone_lr_mult,
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{part}{'' if decays else '-no-decay'}",
        })
    return groups


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01):
    """LR multiplier per optimizer step: linear warm-up, then cosine decay to `floor`."""
    import math

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return floor + (1 - floor) * (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
