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

import yaml

from edgetl.contract.fields import Fields
from edgetl.contract.images import MAX_INPUT_SIDE, MIN_INPUT_SIDE
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


RECIPE_HINT = "see models/efficientnet_lite0.yaml for a complete example"
RGB_SCALE = "numbers (R, G, B on the 0-1 scale)"


def _preprocess(recipe: Fields, data: dict, input_size: int) -> Preprocess:
    pre = recipe.get(data, "preprocess", dict)
    fields = recipe.nested("preprocess")
    return Preprocess(
        size=(input_size, input_size),
        resize=fields.string(pre, "resize", RESIZE_MODES, default="center-crop"),
        crop_ratio=fields.real(pre, "crop_ratio", 0.3, 1.0, default=0.875),
        interpolation=fields.string(pre, "interpolation", ("bilinear", "bicubic"), default="bilinear"),
        mean=fields.numbers(fields.get(pre, "mean"), "mean", 3, low=0, high=1, what=RGB_SCALE),
        std=fields.numbers(fields.get(pre, "std"), "std", 3, low=0, high=1, low_open=True, what=RGB_SCALE),
    )


def _weight_sources(recipe: Fields, data: dict) -> tuple[WeightSource, ...]:
    """The `weights:` list, in the order they are tried: each item names exactly one kind of source."""
    sources = []
    for i, item in enumerate(recipe.get(data, "weights", list, default=[])):
        fields = recipe.nested(f"weights[{i}]")
        kinds = [k for k in WEIGHT_KINDS if k in item] if isinstance(item, dict) else []
        if len(kinds) != 1:
            fields.fail("", f"needs exactly one of {', '.join(WEIGHT_KINDS)}")
        kind = kinds[0]
        if kind == "package" and not item.get("path"):
            fields.fail("path", "is required: a package source names the weight file inside the package")
        path = fields.string(item, "path", default=None)
        sources.append(WeightSource(
            kind=kind,
            location=str(item[kind]),
            file=path if path is None else fields.file_in_folder(path, "path", "the package"),
            sha256=fields.string(item, "sha256", default=None),
            hash_prefix=fields.string(item, "hash_prefix", default=None),
            remap=fields.string(item, "remap", (None, "by-order"), default=None),
        ))
    return tuple(sources)


def _stages(recipe: Fields, data: dict) -> tuple[tuple[str, ...], ...]:
    stages = []
    for i, group in enumerate(recipe.get(data, "stages", list)):
        if not isinstance(group, list) or not group or not all(isinstance(g, str) for g in group):
            recipe.fail(f"stages[{i}]", "must be a non-empty list of module paths")
        stages.append(tuple(p for g in group for p in _expand_range(g)))
    if not stages:
        recipe.fail("stages", "must list at least one stage")
    return tuple(stages)


def _recommended(recipe: Fields, data: dict) -> Recommended:
    """Default hyperparameters; their ranges are the training config's to check, their types are checked here."""
    rec = recipe.get(data, "recommended", dict, default={})
    fields = recipe.nested("recommended")
    defaults = Recommended()
    numbers = {key: fields.get(rec, key, type(getattr(defaults, key)), default=getattr(defaults, key))
               for key in ("epochs", "batch_size", "lr", "backbone_lr_mult", "weight_decay",
                           "label_smoothing", "warmup_epochs", "patience")}
    return Recommended(strategy=fields.string(rec, "strategy", STRATEGIES, default=defaults.strategy),
                       augment=fields.string(rec, "augment", AUGMENT_PRESETS, default=defaults.augment), **numbers)


def parse_recipe(path: Path) -> BackboneSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInputError(f"backbone recipe {path} is not valid YAML: {exc}") from exc
    recipe = Fields(f"backbone recipe {path}", RECIPE_HINT)
    recipe.mapping(data)
    name = recipe.string(data, "name")
    if name != path.stem:
        recipe.fail("name", f"must match the file name '{path.stem}'")
    input_size = recipe.integer(data, "input_size", MIN_INPUT_SIDE, MAX_INPUT_SIDE)
    return BackboneSpec(
        name=name,
        description=recipe.get(data, "description", str, default=name),
        builder=recipe.string(data, "builder", BUILDERS),
        architecture=recipe.string(data, "architecture"),
        input_size=input_size,
        preprocess=_preprocess(recipe, data, input_size),
        weights=_weight_sources(recipe, data),
        head=recipe.string(data, "head"),
        stages=_stages(recipe, data),
        recommended=_recommended(recipe, data),
        source_file=str(path),
    )
