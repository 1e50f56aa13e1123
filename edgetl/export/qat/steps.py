"""One QAT optimizer step: the distillation loss, and what the optimizer may change and by how much.

Adam moves every parameter by about its learning rate per step, whatever the
parameter's scale; `RoundingNeighbourhood`, `ScaledUpdates` and `learn_ranges` put
the int8 student's parameters on their own scales, and `build_optimizer` puts them
together around each step of `loop`.
"""

from __future__ import annotations

import math
import types

from edgetl.errors import BadInputError
from edgetl.export.qat import graph


def distillation_loss(forward, optimizer, autocast, inputs, teacher_logits, temperature: float,
                      features=None, feature_weight: float = 0.0):
    """The KL loss of the student against the teacher (plus the layer-wise one), its gradients in place.

    The step is the caller's.
    """
    import torch.nn.functional as F

    with autocast():
        logits = forward(inputs)
    log_student = F.log_softmax(logits.float() / temperature, dim=1)
    target = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    loss = F.kl_div(log_student, target, log_target=True, reduction="batchmean") * temperature ** 2
    if features is not None:
        features.float_logits(inputs)
        loss = loss + feature_weight * features.loss()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach()


class RoundingNeighbourhood:
    """Keeps every quantized weight within `steps` grid steps of its float value (None: no bound).

    Unbounded, Adam moves fine-grid weights by many grid steps and the student fits the train
    split instead of the float model; bounded, QAT picks each weight's rounding (and trains the
    float biases).
    """

    def __init__(self, student, steps: float | None):
        self.steps = steps
        self.pairs = [] if steps is None else [(param, quantizer, param.detach().clone())
                                               for param, quantizer in graph.weight_quantizers(student)]

    def __call__(self) -> None:
        import torch

        if self.steps is None:
            return
        with torch.no_grad():
            for param, quantizer, start in self.pairs:
                reach = (quantizer.scale * self.steps).to(param.device).view(-1, *([1] * (param.dim() - 1)))
                param.copy_(torch.minimum(torch.maximum(param, start - reach), start + reach))


class ScaledUpdates:
    """Around an optimizer step: each registered parameter's move multiplied by its own unit.

    Grid steps differ by 25x between a backbone's layers, so one learning rate in weight units
    shakes the fine grids and leaves the coarse ones alone; with a unit per parameter the group's
    learning rate is in those units: grid steps for weights, a fraction of itself for a range.
    """

    def __init__(self):
        self.items: list[tuple[object, object]] = []  # (parameter, unit(before) -> tensor broadcastable to it)
        self.before: list = []

    def add(self, param, unit) -> None:
        self.items.append((param, unit))

    def __enter__(self):
        self.before = [param.detach().clone() for param, _ in self.items]
        return self

    def __exit__(self, *exc) -> None:
        import torch

        with torch.no_grad():
            for (param, unit), before in zip(self.items, self.before):
                param.copy_(before + (param - before) * unit(before))
        self.before = []


def grid_step_unit(param, quantizer):
    """A weight's unit: its output channel's int8 grid step."""
    return lambda _before: quantizer.scale.to(param.device).view(-1, *([1] * (param.dim() - 1)))


def relative_unit(floor: float = 1e-8):
    """A positive parameter's unit: its own value (a learning rate of 1e-3 moves it by 0.1% per step)."""
    return lambda before: before.abs().clamp_min(floor)


def move_to_group(groups: list[dict], params: list, lr: float) -> None:
    """Take `params` out of the groups they are in and give them a group of their own at `lr`."""
    ids = {id(p) for p in params}
    for group in groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]
    groups[:] = [g for g in groups if g["params"]]
    if params:
        groups.append({"params": list(params), "lr": lr})


def learn_ranges(student) -> list:
    """Activation scales as trained parameters (LSQ), zero points fixed where calibration put them.

    The learned scale trades clipping against rounding by the distillation loss itself. It stays
    the quantizer's own `scale` entry (a parameter instead of a buffer, same name), so checkpoints,
    `load_trained` and the exporters read it unchanged. Called after calibration (or after a
    checkpoint is loaded): observers no longer write the scale. Returns the new parameters.
    """
    import torch

    scales = []
    for module in graph.activation_quantizers(student):
        value = module.scale.detach().clone().float().reshape(1)
        del module._buffers["scale"]
        module.register_parameter("scale", torch.nn.Parameter(value))
        module.forward = types.MethodType(_learnable_forward, module)
        scales.append(module.scale)
    return scales


def _learnable_forward(self, X):
    """FakeQuantize with a gradient for the scale (torch's LSQ kernel); the observer no longer runs."""
    import torch

    if self.fake_quant_enabled[0] != 1:
        return X
    observer = self.activation_post_process
    return torch._fake_quantize_learnable_per_tensor_affine(
        X, self.scale, self.zero_point.to(X.dtype), observer.quant_min, observer.quant_max, 1.0)


def build_optimizer(student, data, settings):
    """AdamW over the student's groups (cosine schedule), with the units its updates are taken in.

    Made after calibration or after a checkpoint is loaded: learned ranges start from those scales.
    """
    import torch

    groups = parameter_groups(student, data.head, settings)
    scaled = ScaledUpdates()
    if settings.weight_lr_steps is not None:
        trained = {id(p) for group in groups for p in group["params"]}
        weights = [(p, q) for p, q in graph.weight_quantizers(student) if id(p) in trained]
        for param, quantizer in weights:
            scaled.add(param, grid_step_unit(param, quantizer))
        move_to_group(groups, [p for p, _ in weights], settings.weight_lr_steps)
    if settings.range_lr is not None:
        scales = learn_ranges(student)
        for scale in scales:
            scaled.add(scale, relative_unit())
        move_to_group(groups, scales, settings.range_lr)
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * data.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    return optimizer, scheduler, scaled


def parameter_groups(student, head: str, settings) -> list[dict]:
    """Head at head_lr_mult x lr (0: frozen, out of the optimizer), the rest at lr.

    Exported graphs keep module paths in parameter names.
    """
    prefix = head.replace(".", "_") if head else None
    head_params, body = [], []
    for name, param in student.named_parameters():
        is_head = bool(prefix) and (name.startswith(head + ".") or name.startswith(prefix))
        (head_params if is_head else body).append(param)
    if not body:
        raise BadInputError(f"QAT found no trainable layers outside the head {head!r}")
    groups = [{"params": body, "lr": settings.lr}]
    if head_params and settings.head_lr_mult > 0:  # 0: out of the optimizer (still differentiable: export
        # traces a graph with every parameter alike)
        groups.append({"params": head_params, "lr": settings.lr * settings.head_lr_mult})
    return groups
