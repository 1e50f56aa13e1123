"""The fully resolved training configuration, saved as `config.yaml` in every run.

Every default is resolved before training starts (recipe defaults for the
backbone, then the user's options), so the saved file alone reproduces the run:
`edgetl finetune --config runs/x/config.yaml`. No torch here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from edgetl.backbones.spec import AUGMENT_PRESETS, STRATEGIES
from edgetl.contract.fields import Fields
from edgetl.contract.images import MAX_INPUT_SIDE, MIN_INPUT_SIDE
from edgetl.errors import BadInputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CACHE_MODES = ("auto", "ram", "none")
# Where the light preset's augmentation runs: auto = on the training device when it is a GPU
# (device_augment.py), else in the DataLoader workers.
AUGMENT_ON = ("auto", "workers", "device")


@dataclass
class TrainConfig:
    data: str
    model: str
    out: str = ""
    # None = take the backbone recipe's recommendation (see models/<model>.yaml).
    strategy: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    img_size: int | None = None
    lr: float | None = None
    backbone_lr_mult: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    warmup_epochs: int | None = None
    patience: int | None = None
    augment: str | None = None
    unfreeze_every: int = 1  # gradual: epochs between unfreezing the next stage
    bn_momentum: float = 0.1  # PyTorch convention; 0.01 (TF ports) leaves stale statistics on short fine-tunes
    val_split: float = 0.15
    test_split: float = 0.15
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    workers: int = -1  # -1: auto
    cache: str = "auto"
    augment_on: str = "auto"
    pretrained: bool = True
    weights: str | None = None
    precise_bn: bool | None = None  # None: on from scratch (precise_bn.py), off from pretrained weights
    strict: bool = False

    def resolve(self) -> "TrainConfig":
        """Fill every unset field from the backbone recipe; validate; return a new config."""
        from edgetl.backbones import get_spec

        spec = get_spec(self.model)
        rec = spec.recommended
        values = dataclasses.asdict(self)
        defaults = {
            "strategy": rec.strategy, "epochs": rec.epochs, "batch_size": rec.batch_size,
            "img_size": spec.input_size, "lr": rec.lr, "backbone_lr_mult": rec.backbone_lr_mult,
            "weight_decay": rec.weight_decay, "label_smoothing": rec.label_smoothing,
            "warmup_epochs": rec.warmup_epochs, "patience": rec.patience, "augment": rec.augment,
        }
        if not self.pretrained and not self.weights:
            # The recipe's discriminative rate and frozen stages protect ImageNet features; a random
            # backbone has none to protect, and at 0.1x the head's rate it barely leaves its start.
            defaults.update(backbone_lr_mult=1.0, strategy="finetune")
        defaults["precise_bn"] = not self.pretrained and not self.weights
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        if not values["out"]:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            values["out"] = str(Path("runs") / f"{self.model}-{stamp}")
        resolved = TrainConfig(**values)
        resolved.validate()
        return resolved

    def validate(self) -> None:
        checks = [
            (self.strategy in STRATEGIES, "strategy", f"one of {', '.join(STRATEGIES)}"),
            (self.augment in AUGMENT_PRESETS, "augment", f"one of {', '.join(AUGMENT_PRESETS)}"),
            (self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}"),
            (self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}"),
            (self.cache in CACHE_MODES, "cache", f"one of {', '.join(CACHE_MODES)}"),
            (self.augment_on in AUGMENT_ON, "augment_on", f"one of {', '.join(AUGMENT_ON)}"),
            (self.warmup_epochs >= 0, "warmup_epochs", "0 or more"),
            (self.weight_decay >= 0, "weight_decay", "0 or more"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (MIN_INPUT_SIDE <= self.img_size <= MAX_INPUT_SIDE, "img_size",
             f"between {MIN_INPUT_SIDE} and {MAX_INPUT_SIDE}"),
            (self.lr > 0, "lr", "positive"),
            (0 <= self.backbone_lr_mult <= 10, "backbone_lr_mult", "between 0 and 10"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
            (self.patience >= 0, "patience", "0 (off) or more"),
            (self.unfreeze_every >= 1, "unfreeze_every", "at least 1"),
            (0 < self.bn_momentum <= 1, "bn_momentum", "in (0, 1]"),
        ]
        fields = Fields("training config", "see `edgetl finetune --help` for every option and its range")
        for ok, name, expected in checks:
            if not ok:
                fields.fail(name, f"is {getattr(self, name)!r}: it must be {expected}")

    def to_yaml(self) -> str:
        header = "# edgetl finetune configuration, fully resolved: `edgetl finetune --config THIS_FILE` reruns it.\n"
        return header + yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BadInputError(f"cannot read training config {path}: {exc}") from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> "TrainConfig":
        reader = Fields(f"training config {where}", "see `edgetl finetune --help` for every option")
        data = reader.mapping(data)
        known = {f.name for f in fields(cls)}
        for name in sorted(set(data) - known):
            reader.fail(name, "is not a training option")
        for required in ("data", "model"):
            reader.get(data, required, object)
        return cls(**data)
