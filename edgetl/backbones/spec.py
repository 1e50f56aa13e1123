"""A backbone recipe (`models/<name>.yaml`) read into a typed, frozen spec.

The recipe is the single place that knows a backbone's input size, its
normalisation, where its ImageNet weights live, which module is the classifier
head, how its layers group into stages (for gradual unfreezing), and good default
hyperparameters. Which layers int8 must keep in float is not guessed here: the
export gate measures it per model (`edgetl.export.sensitivity`).
Reading validates every field and names the file and field that is wrong.
Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgetl.contract.fields import Fields
from edgetl.contract.preprocess import Preprocess
from edgetl.errors import BadInputError

BUILDERS = ("torchvision", "timm")
RESIZE_MODES = ("center-crop", "stretch")
STRATEGIES = ("feature-extract", "finetune", "gradual")
AUGMENT_PRESETS = ("none", "light", "strong")
WEIGHT_KINDS = ("file", "package", "url", "timm")


@dataclass(frozen=True)
class WeightSource:
    """One place ImageNet weights can come from, tried in recipe order."""

    kind: str  # file | package | url | timm
    location: str  # path, module name, URL or timm pretrained tag
    file: str | None = None  # for package: the weight file's path inside the package (`path:`)
    sha256: str | None = None  # for url: full digest, checked after download
    hash_prefix: str | None = None  # for url: digest prefix embedded in the file name
    remap: str | None = None  # key mapping: None (same names) or "by-order"

    def describe(self) -> str:
        return f"{self.kind} {self.location}" + (f"/{self.file}" if self.file else "")


@dataclass(frozen=True)
class Recommended:
    strategy: str = "finetune"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    warmup_epochs: int = 1
    patience: int = 5
    augment: str = "light"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    builder: str
    architecture: str
    input_size: int
    preprocess: Preprocess  # the evaluation preprocessing at input_size (0-1 scale stats)
    weights: tuple[WeightSource, ...]
    head: str
    stages: tuple[tuple[str, ...], ...]  # input to output; each a tuple of module paths
    recommended: Recommended = field(default_factory=Recommended)
    source_file: str = ""

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocess.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocess.std


def _expand_range(item: str) -> list[str]:
    """`features.2-4` -> features.2, features.3, features.4 (a compact recipe notation)."""
    match = re.fullmatch(r"(.*\.)(\d+)-(\d+)", item)
    if not match:
        return [item]
    prefix, start, end = match.group(1), int(match.group(2)), int(match.group(3))
    return [f"{prefix}{i}" for i in range(start, end + 1)]


class _Reader(Fields):
    """A recipe's fields (contract/fields.py), plus the recipe-only RGB triple."""

    def __init__(self, path: Path, data: Any):
        super().__init__(f"backbone recipe {path}", "see models/efficientnet_lite0.yaml for a complete example")
        self.path = path
        self.data = self.mapping(data)

    def triple(self, mapping: dict, key: str, where: str) -> tuple[float, float, float]:
        value = mapping.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            self.fail(where + key, f"must be three numbers (R, G, B on the 0-1 scale), got {value!r}")
        if any(not 0 <= v <= 1 for v in value) or (key == "std" and any(v <= 0 for v in value)):
            self.fail(where + key, f"values must lie in (0, 1] on the 0-1 scale, got {value!r}")
        return tuple(float(v) for v in value)  # type: ignore[return-value]


def parse_recipe(path: Path) -> BackboneSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInputError(f"backbone recipe {path} is not valid YAML: {exc}") from exc
    r = _Reader(path, data)
    name = r.get(data, "name", str, "")
    if name != path.stem:
        r.fail("name", f"must match the file name '{path.stem}'")
    builder = r.choice(r.get(data, "builder", str, ""), BUILDERS, "builder")

    input_size = r.get(data, "input_size", int, "")
    if not 32 <= input_size <= 1024:
        r.fail("input_size", "must lie between 32 and 1024 pixels")
    pre = r.get(data, "preprocess", dict, "")
    preprocess = Preprocess(
        size=(input_size, input_size),
        resize=r.choice(pre.get("resize", "center-crop"), RESIZE_MODES, "preprocess.resize"),
        crop_ratio=r.get(pre, "crop_ratio", float, "preprocess.", 0.875),
        interpolation=r.choice(pre.get("interpolation", "bilinear"), ("bilinear", "bicubic"), "preprocess.interpolation"),
        mean=r.triple(pre, "mean", "preprocess."),
        std=r.triple(pre, "std", "preprocess."),
    )
    if not 0.3 <= preprocess.crop_ratio <= 1.0:
        r.fail("preprocess.crop_ratio", "must lie between 0.3 and 1.0")

    sources = []
    for i, item in enumerate(r.get(data, "weights", list, "", [])):
        where = f"weights[{i}]"
        kinds = [k for k in WEIGHT_KINDS if k in item] if isinstance(item, dict) else []
        if len(kinds) != 1:
            r.fail(where, f"needs exactly one of {', '.join(WEIGHT_KINDS)}")
        kind = kinds[0]
        sources.append(
            WeightSource(
                kind=kind,
                location=str(item[kind]),
                file=item.get("path"),
                sha256=item.get("sha256"),
                hash_prefix=item.get("hash_prefix"),
                remap=r.choice(item.get("remap"), (None, "by-order"), where + ".remap"),
            )
        )
        if kind == "package" and not item.get("path"):
            r.fail(where + ".path", "is required: a package source names the weight file inside the package")

    stages = []
    for i, group in enumerate(r.get(data, "stages", list, "")):
        if not isinstance(group, list) or not group or not all(isinstance(g, str) for g in group):
            r.fail(f"stages[{i}]", "must be a non-empty list of module paths")
        stages.append(tuple(p for g in group for p in _expand_range(g)))
    if not stages:
        r.fail("stages", "must list at least one stage")

    rec = r.get(data, "recommended", dict, "", {})
    defaults = Recommended()
    recommended = Recommended(
        strategy=r.choice(rec.get("strategy", defaults.strategy), STRATEGIES, "recommended.strategy"),
        augment=r.choice(rec.get("augment", defaults.augment), AUGMENT_PRESETS, "recommended.augment"),
        **{
            key: r.get(rec, key, type(getattr(defaults, key)), "recommended.", getattr(defaults, key))
            for key in ("epochs", "batch_size", "lr", "backbone_lr_mult", "weight_decay",
                        "label_smoothing", "warmup_epochs", "patience")
        },
    )
    return BackboneSpec(
        name=name,
        description=r.get(data, "description", str, "", name),
        builder=builder,
        architecture=r.get(data, "architecture", str, ""),
        input_size=input_size,
        preprocess=preprocess,
        weights=tuple(sources),
        head=r.get(data, "head", str, ""),
        stages=tuple(stages),
        recommended=recommended,
        source_file=str(path),
    )
