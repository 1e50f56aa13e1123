"""The artifact sidecar (`model.json`): the one contract every runtime and device reads.

It travels beside every exported model file and says everything needed to use the
model correctly without the training code: class labels in output order, the
exact preprocessing, input/output tensors (with quantization parameters), what
was quantized and how it was calibrated, the chain of quantization attempts,
where it came from, the sha256 of every file, and golden samples (small held-out
images with the float model's expected outputs) that prove on any machine that
the runtime and preprocessing reproduce the trained model.

Validated on read; an error names the field. A sidecar may come from anywhere (a
downloaded bundle, a hand edit), so every file name in it must stay inside the
artifact folder, and every number the runtime computes with (batch, scales, zero
points, class indices) is bounded before a runner is built. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgetl.contract.fields import Fields, finite
from edgetl.contract.formats import FORMATS, PRECISIONS
from edgetl.contract.labels import labels_problem
from edgetl.contract.preprocess import Preprocess
from edgetl.errors import BadInputError

# Version 2: the artifact carries its own held-out samples (`samples`, contract/artifact.py) and,
# once parity ran, its parity summary; later steps never follow `source.run_dir` back to the host.
SCHEMA = "edgetl.artifact/2"
READABLE_SCHEMAS = ("edgetl.artifact/1", SCHEMA)  # a version-1 sidecar reads as one without samples
SIDECAR_NAME = "model.json"
FORMAT_NAMES = tuple(FORMATS)
TENSOR_DTYPES = {"float32": None, "float16": None, "int8": (-128, 127), "uint8": (0, 255),
                 "int16": (-32768, 32767), "int32": (-2**31, 2**31 - 1)}
# A fixed batch is padded up to on every call: bound it so a crafted shape cannot allocate gigabytes.
MAX_FIXED_BATCH = 1024
# ... and the whole input a call is padded up to: a fixed batch of 1024 at 1024 x 1024 would pass both
# bounds alone and ask for 12 GiB; 2**28 values (1 GiB of float32) is a batch of 85 at 1024 x 1024 x 3.
MAX_INPUT_ELEMENTS = 2 ** 28


@dataclass
class TensorInfo:
    name: str
    shape: list[int | str]
    dtype: str  # float32 | float16 | int8 | uint8
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class GoldenSample:
    file: str  # relative to the artifact folder (a lossless PNG)
    label: str  # ground truth from the held-out split
    top1: int  # the float model's class index
    topk: list[list[float]]  # [[index, probability], ...] from the float model
    logits: list[float]
    # What this artifact itself answered on the export host: the reference a device must
    # reproduce. A quantized model may legitimately differ from the float top-1 (that is
    # parity's accuracy drop); a device that differs from the host is a runtime fault.
    artifact_top1: int | None = None
    artifact_logits: list[float] | None = None


@dataclass
class Sidecar:
    format: str
    precision: str  # what was delivered (after any fallback)
    requested_precision: str
    model_file: str
    labels: list[str]
    preprocess: Preprocess
    input: TensorInfo
    output: TensorInfo
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    quantization: dict | None = None
    calibration: dict | None = None
    attempts: list[dict] = field(default_factory=list)
    validation: dict | None = None  # accuracy on the validation split vs float
    sensitivity: dict | None = None  # int8 asked: measured per-layer sensitivity, worst first, the layers kept float
    samples: dict | None = None  # v2: {"count", "split"} of the held-out photos in samples/ (None in v1)
    source: dict = field(default_factory=dict)
    golden: list[GoldenSample] = field(default_factory=list)
    schema: str = SCHEMA

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    def model_bytes(self, folder: str | Path) -> int:
        """Bytes of the files the model needs (weights, graph), without golden and held-out samples or this
        sidecar: the number every table calls "size"."""
        names = [n for n in self.files if not n.startswith(("golden/", "samples/")) and n != SIDECAR_NAME] \
            or [self.model_file]
        return sum((Path(folder) / n).stat().st_size for n in names)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "sidecar") -> "Sidecar":
        fields = Fields(where, "re-export the artifact with `edgetl export`")
        fields.mapping(data, what="a JSON object")
        fields.choice(data.get("schema"), READABLE_SCHEMAS, "schema")
        for name in ("format", "precision", "model_file", "labels", "preprocess", "input", "output"):
            if name not in data:
                fields.fail(name, "is missing")
        fields.choice(data["format"], FORMAT_NAMES, "format")
        fields.choice(data["precision"], PRECISIONS, "precision")
        labels = _read_labels(fields, data)
        fields.mapping(data["preprocess"], "preprocess", what="a JSON object")
        try:
            preprocess = Preprocess.from_dict(data["preprocess"])
        except BadInputError as exc:
            fields.fail("preprocess", f"is invalid ({exc.message})")
        fields.file_in_folder(data["model_file"], "model_file")
        files = data.get("files", {})
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            fields.fail("files", "must map file names to sha256 strings")
        for name in files:
            fields.file_in_folder(name, f"files[{name!r}]")
        for name in ("quantization", "calibration", "validation", "sensitivity", "samples"):
            if data.get(name) is not None:
                fields.mapping(data[name], name, what="a JSON object or null")
        known = {k: data[k] for k in ("files", "quantization", "calibration", "attempts", "validation", "source",
                                      "sensitivity", "samples")
                 if k in data}
        return cls(format=data["format"], precision=data["precision"],
                   requested_precision=data.get("requested_precision", data["precision"]),
                   model_file=data["model_file"], labels=labels, preprocess=preprocess,
                   input=_read_tensor(fields.nested("input"), data["input"], batch_dim=True),
                   output=_read_tensor(fields.nested("output"), data["output"], batch_dim=False),
                   golden=_read_golden(fields, data.get("golden", []), len(labels)), schema=data["schema"], **known)

    @classmethod
    def read(cls, folder_or_file: str | Path) -> "Sidecar":
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / SIDECAR_NAME
        elif path.name != SIDECAR_NAME:
            path = path.with_name(SIDECAR_NAME)
        if not path.is_file():
            raise BadInputError(f"{path} is missing: an edgetl artifact carries its labels and preprocessing there",
                                "export the model with `edgetl export`")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path} is not valid JSON ({exc})", "re-export the artifact") from exc
        return cls.from_dict(data, str(path))


def _read_labels(fields: Fields, data: dict) -> list[str]:
    """The class names, each one printable line, their count bounded (contract/labels.py)."""
    labels = fields.strings(data, "labels", at_least=2, what="class names")
    problem = labels_problem(labels)
    if problem is not None:
        index, why = problem
        fields.fail("labels" if index is None else f"labels[{index}]", why)
    return labels


def _read_tensor(fields: Fields, data: Any, batch_dim: bool) -> TensorInfo:
    """A tensor record, its numbers bounded: a fixed batch (padded up to on every call) by MAX_FIXED_BATCH,
    a zero point by its dtype's range."""
    try:
        tensor = TensorInfo(**data)
    except TypeError as exc:
        fields.fail("", f"is invalid ({exc})")
    if not isinstance(tensor.name, str):
        fields.fail("name", f"is {tensor.name!r}, not a tensor name")
    if not isinstance(tensor.shape, list):
        fields.fail("shape", f"is {tensor.shape!r}, not a list of dimensions")
    tensor.shape = list(tensor.shape)  # normalised below; never the caller's list
    for i, dim in enumerate(tensor.shape):
        if isinstance(dim, str) or dim is None or dim == -1:
            continue  # dynamic
        if not (finite(dim) and float(dim).is_integer() and dim >= 1):
            fields.fail(f"shape[{i}]", f"is {dim!r}, not a positive size or a dynamic name")
        if i == 0 and batch_dim and dim > MAX_FIXED_BATCH:
            fields.fail("shape[0]", f"is a fixed batch of {dim}, more than {MAX_FIXED_BATCH}")
        tensor.shape[i] = int(dim)
    fixed = math.prod(d for d in tensor.shape if isinstance(d, int))
    if batch_dim and fixed > MAX_INPUT_ELEMENTS:
        fields.fail("shape", f"is {tensor.shape}: {fixed:,} values per call, more than {MAX_INPUT_ELEMENTS:,}")
    fields.choice(tensor.dtype, TENSOR_DTYPES, "dtype")
    if tensor.scale is not None and not (finite(tensor.scale) and tensor.scale > 0):
        fields.fail("scale", f"is {tensor.scale!r}; a quantization scale must be a finite positive number")
    if tensor.zero_point is not None:
        low, high = TENSOR_DTYPES[tensor.dtype] or (-128, 255)
        if not (finite(tensor.zero_point) and float(tensor.zero_point).is_integer()):
            fields.fail("zero_point", f"is {tensor.zero_point!r}, not an integer")
        if not low <= tensor.zero_point <= high:
            fields.fail("zero_point", f"is {tensor.zero_point}, outside {low}..{high} for {tensor.dtype}")
        tensor.zero_point = int(tensor.zero_point)
    return tensor


def _read_golden(fields: Fields, data: Any, classes: int) -> list[GoldenSample]:
    """The golden samples, each naming a file inside the artifact and `classes` finite logits."""
    if not isinstance(data, list):
        fields.fail("golden", "must be a list of samples")
    try:
        golden = [GoldenSample(**g) for g in data]
    except TypeError as exc:
        fields.fail("golden", f"is invalid ({exc})")
    for number, sample in enumerate(golden):
        sample_fields = fields.nested(f"golden[{number}]")
        sample_fields.file_in_folder(sample.file, "file")
        for name in ("top1", "artifact_top1"):
            value = getattr(sample, name)
            if value is None and name == "artifact_top1":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < classes:
                sample_fields.fail(name, f"is {value!r}, not a class index below {classes}")
        for name in ("logits", "artifact_logits"):
            value = getattr(sample, name)
            if value is None and name == "artifact_logits":
                continue
            if not isinstance(value, list) or len(value) != classes or not all(finite(v) for v in value):
                sample_fields.fail(name, f"must list {classes} finite numbers, one per label")
    return golden


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: str | Path, sidecar: Sidecar, names=None) -> list[str]:
    """Names of files (all the sidecar records, or those of `names` it records) whose sha256 differs
    from the sidecar's record (or that are missing)."""
    folder = Path(folder)
    bad = []
    for name, expected in sidecar.files.items():
        if names is not None and name not in names:
            continue
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(name)
    return bad
