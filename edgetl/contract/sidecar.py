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
from pathlib import Path, PureWindowsPath
from typing import Any

from edgetl.contract.fields import Fields
from edgetl.contract.formats import FORMATS, PRECISIONS
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
        fail = Fields(where, "re-export the artifact with `edgetl export`").fail

        def check(name: str, problem: str | None):
            if problem:
                fail(name, problem)

        if not isinstance(data, dict):
            raise BadInputError(f"{where}: not a JSON object")
        if data.get("schema") not in READABLE_SCHEMAS:
            fail("schema", f"is {data.get('schema')!r}, expected one of {', '.join(READABLE_SCHEMAS)}")
        for name in ("format", "precision", "model_file", "labels", "preprocess", "input", "output"):
            if name not in data:
                fail(name, "is missing")
        if data["format"] not in FORMAT_NAMES:
            fail("format", f"is {data['format']!r}, not one of {', '.join(FORMAT_NAMES)}")
        if data["precision"] not in PRECISIONS:
            fail("precision", f"is {data['precision']!r}, not one of {', '.join(PRECISIONS)}")
        labels = data["labels"]
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            fail("labels", "must list at least two class names")
        if not isinstance(data["preprocess"], dict):
            fail("preprocess", "must be a JSON object")
        try:
            preprocess = Preprocess.from_dict(data["preprocess"])
        except BadInputError as exc:
            fail("preprocess", f"is invalid ({exc.message})")
        check("model_file", _inside_problem(data["model_file"]))
        tensors = {}
        for name in ("input", "output"):
            try:
                tensors[name] = TensorInfo(**data[name])
            except TypeError as exc:
                fail(name, f"is invalid ({exc})")
            for sub, problem in _tensor_problems(tensors[name], batch_dim=name == "input"):
                fail(f"{name}.{sub}", problem)
        golden_data = data.get("golden", [])
        if not isinstance(golden_data, list):
            fail("golden", "must be a list of samples")
        try:
            golden = [GoldenSample(**g) for g in golden_data]
        except TypeError as exc:
            fail("golden", f"is invalid ({exc})")
        for number, sample in enumerate(golden):
            for sub, problem in _golden_problems(sample, len(labels)):
                fail(f"golden[{number}].{sub}", problem)
        files = data.get("files", {})
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            fail("files", "must map file names to sha256 strings")
        for name in files:
            check(f"files[{name!r}]", _inside_problem(name))
        for name in ("quantization", "calibration", "validation", "sensitivity", "samples"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                fail(name, "must be a JSON object or null")
        known = {k: data[k] for k in ("files", "quantization", "calibration", "attempts", "validation", "source",
                                      "sensitivity", "samples")
                 if k in data}
        return cls(format=data["format"], precision=data["precision"],
                   requested_precision=data.get("requested_precision", data["precision"]),
                   model_file=data["model_file"], labels=labels, preprocess=preprocess,
                   input=tensors["input"], output=tensors["output"], golden=golden, schema=data["schema"], **known)

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


def _inside_problem(name: Any) -> str | None:
    """Why `name` is not a relative path of plain components inside the artifact folder (None if it is).

    Exporters write "model.onnx", "model.xml" + "model.bin" and "golden/00.png": forward
    slashes between ordinary names. Anything else (absolute, `..`, a drive, a backslash,
    control characters) could make a runner read or hash a file outside the artifact.
    """
    if not isinstance(name, str) or not name:
        return f"is {name!r}, not a file name"
    if any(ch in name for ch in "\\\0\n\r\t"):
        return f"{name!r} contains a backslash or a control character"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return f"{name!r} is an absolute path; it must name a file inside the artifact folder"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"{name!r} must be plain names joined by '/', without '.', '..' or empty parts"
    return None


def _finite(value: Any) -> bool:
    """A JSON number (not a bool) that is finite as a float (huge integers overflow to inf)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _integer(value: Any) -> bool:
    return _finite(value) and float(value).is_integer()


def _tensor_problems(tensor: TensorInfo, batch_dim: bool) -> list[tuple[str, str]]:
    problems = []
    if not isinstance(tensor.name, str):
        problems.append(("name", f"is {tensor.name!r}, not a tensor name"))
    if not isinstance(tensor.shape, list):
        problems.append(("shape", f"is {tensor.shape!r}, not a list of dimensions"))
    else:
        tensor.shape = list(tensor.shape)  # normalised below; never the caller's list
        for i, dim in enumerate(tensor.shape):
            if isinstance(dim, str) or dim is None or dim == -1:
                continue  # dynamic
            if not _integer(dim) or dim < 1:
                problems.append((f"shape[{i}]", f"is {dim!r}, not a positive size or a dynamic name"))
            elif i == 0 and batch_dim and dim > MAX_FIXED_BATCH:
                problems.append(("shape[0]", f"is a fixed batch of {dim}, more than {MAX_FIXED_BATCH}"))
            else:
                tensor.shape[i] = int(dim)
    if not isinstance(tensor.dtype, str) or tensor.dtype not in TENSOR_DTYPES:
        problems.append(("dtype", f"is {tensor.dtype!r}, not one of {', '.join(TENSOR_DTYPES)}"))
    if tensor.scale is not None and not (_finite(tensor.scale) and tensor.scale > 0):
        problems.append(("scale", f"is {tensor.scale!r}; a quantization scale must be a finite positive number"))
    if tensor.zero_point is not None:
        low, high = TENSOR_DTYPES.get(str(tensor.dtype)) or (-128, 255)
        if not _integer(tensor.zero_point):
            problems.append(("zero_point", f"is {tensor.zero_point!r}, not an integer"))
        elif not low <= tensor.zero_point <= high:
            problems.append(("zero_point", f"is {tensor.zero_point}, outside {low}..{high} for {tensor.dtype}"))
        else:
            tensor.zero_point = int(tensor.zero_point)
    return problems


def _golden_problems(sample: GoldenSample, classes: int) -> list[tuple[str, str]]:
    problems = []
    where = _inside_problem(sample.file)
    if where:
        problems.append(("file", where))
    for name in ("top1", "artifact_top1"):
        value = getattr(sample, name)
        if value is None and name == "artifact_top1":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < classes:
            problems.append((name, f"is {value!r}, not a class index below {classes}"))
    for name in ("logits", "artifact_logits"):
        value = getattr(sample, name)
        if value is None and name == "artifact_logits":
            continue
        if not isinstance(value, list) or len(value) != classes or not all(
                _finite(v) for v in value):
            problems.append((name, f"must list {classes} finite numbers, one per label"))
    return problems


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
