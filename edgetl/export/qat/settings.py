"""The knobs of quantization-aware fine-tuning, frozen and checked once (docs/qat.md has the measurements)."""

from __future__ import annotations

from dataclasses import dataclass

from edgetl.contract.fields import Fields


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 4
    lr: float = 1e-4  # every layer but the head
    head_lr_mult: float = 0.0  # the head's lr is head_lr_mult x lr; 0: the head stays the float model's
    weight_decay: float = 0.0
    temperature: float = 2.0
    calib_images: int = 256
    batch_size: int = 32
    max_steps: int | None = None  # per epoch; for smoke tests and budgets (None: the whole train split)
    # Activation ranges stop moving after this many epochs, the weights training on against fixed
    # ranges; None: they track every epoch.
    freeze_observers_after: int | None = None
    # Each weight stays within this many int8 grid steps of its float value, on the grid calibration
    # fixed (AdaRound's neighbourhood: QAT chooses roundings, not new weights); None: unbounded.
    weight_bound: float | None = 0.5
    # Mixup of the distillation inputs (Beta(mixup, mixup) weights; 0: off): the teacher answers any
    # image, so blends widen what the student learns to match beyond the train split.
    mixup: float = 1.0
    # Quantized weights move in units of their channel's int8 grid step, this many steps per optimizer
    # step (None: every weight at `lr`). Off by default: no better on validation.
    weight_lr_steps: float | None = None
    # Activation ranges learned by gradient (LSQ), each scale moving by about this fraction of itself per
    # step (None: moving-average min/max). Off by default: worse on validation.
    range_lr: float | None = None
    # Weight of the layer-wise loss (each quantized activation against the float one) beside the
    # logits' KL; 0: logits alone.
    feature_weight: float = 30.0

    def validate(self) -> None:
        """Each checked field in range, or a BadInputError that names it."""
        fields = Fields("QAT settings")
        fields.number(self.epochs, "epochs", low=1, integer=True)
        fields.number(self.lr, "lr", low=0, low_open=True)
        fields.number(self.mixup, "mixup", low=0)
        fields.number(self.feature_weight, "feature_weight", low=0)
        for name in ("weight_bound", "weight_lr_steps", "range_lr"):  # None: off
            if getattr(self, name) is not None:
                fields.number(getattr(self, name), name, low=0, low_open=True)
