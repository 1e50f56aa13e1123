"""The artifact sidecar (`model.json`): the one contract every runtime and device reads.

It travels beside every exported model file and says everything needed to use the
model correctly without the training code: class labels in output order, the
exact preprocessing, input/output tensors (with quantization parameters), what
was quantized and how it was calibrated, the chain of quantization attempts,
where it came from, the sha256 of every file, and golden samples (small held-out
images with the float model's expected outputs) that prove on any machine that
the runtime and preprocessing reproduce the trained model.

Validated on read; an error names the field. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgetl.errors import BadInputError
from edgetl.runtime.preprocess import Preprocess

SCHEMA = "edgetl.artifact/1"
SIDECAR_NAME = "model.json"
FORMAT_NAMES = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")


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
    sensitivity: dict | None = None  # int8: measured per-layer sensitivity, worst first, and the layers kept float
    source: dict = field(default_factory=dict)
    golden: list[GoldenSample] = field(default_factory=list)
    schema: str = SCHEMA

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    def model_bytes(self, folder: str | Path) -> int:
        """Bytes of the files the model needs (weights, graph), without golden samples or this
        sidecar: the number every table calls "size"."""
        names = [n for n in self.files if not n.startswith("golden/") and n != SIDECAR_NAME] or [self.model_file]
        return sum((Path(folder) / n).stat().st_size for n in names)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "sidecar") -> "Sidecar":
        def fail(name: str, problem: str):
            raise BadInputError(f"{where}: field '{name}' {problem}",
                                "re-export the artifact with `edgetl export`")

        if not isinstance(data, dict):
            raise BadInputError(f"{where}: not a JSON object")
        if data.get("schema") != SCHEMA:
            fail("schema", f"is {data.get('schema')!r}, expected {SCHEMA!r}")
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
        try:
            preprocess = Preprocess.from_dict(data["preprocess"])
        except BadInputError as exc:
            fail("preprocess", f"is invalid ({exc.message})")
        tensors = {}
        for name in ("input", "output"):
            try:
                tensors[name] = TensorInfo(**data[name])
            except TypeError as exc:
                fail(name, f"is invalid ({exc})")
        try:
            golden = [GoldenSample(**g) for g in data.get("golden", [])]
        except TypeError as exc:
            fail("golden", f"is invalid ({exc})")
        known = {k: data[k] for k in ("files", "quantization", "calibration", "attempts", "validation", "source",
                                          "sensitivity")
                 if k in data}
        return cls(format=data["format"], precision=data["precision"],
                   requested_precision=data.get("requested_precision", data["precision"]),
                   model_file=data["model_file"], labels=labels, preprocess=preprocess,
                   input=tensors["input"], output=tensors["output"], golden=golden, **known)

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


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: str | Path, sidecar: Sidecar) -> list[str]:
    """Names of files whose sha256 differs from the sidecar's record (or that are missing)."""
    folder = Path(folder)
    bad = []
    for name, expected in sidecar.files.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(name)
    return bad
