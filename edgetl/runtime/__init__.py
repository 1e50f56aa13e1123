"""The on-device runtime. It never imports torch (tests/test_layers.py enforces it).

    runner = edgetl.runtime.load("model.onnx" | "model.xml" | "model.tflite", threads=None, device=None)
    runner.classify([image], topk=3)   runner.preprocess(image)   runner.infer(batch)

Preprocessing (`edgetl.contract.preprocess.Preprocess`) and image decoding
(`edgetl.contract.images.load_rgb`) are defined once and shared by training-time evaluation, parity and
the device; which runner a file gets comes from the backend table (`edgetl.contract.formats`).
"""

from __future__ import annotations

from pathlib import Path

from edgetl.contract.formats import SUFFIXES, get_format
from edgetl.contract.sidecar import Sidecar
from edgetl.errors import BadInputError, EdgetlError, first_line
from edgetl.runtime.base import Runner


def runner_class(fmt: str) -> type[Runner]:
    """The runner for a format, from the one backend table (contract/formats.py)."""
    return get_format(fmt).runner_class()


def resolve_model_file(path: str | Path) -> Path:
    """An artifact folder or model file -> the model file."""
    path = Path(path)
    if path.is_dir():
        sidecar = Sidecar.read(path)
        path = path / sidecar.model_file
    if not path.is_file():
        raise BadInputError(f"model file {path} does not exist", "pass an exported model or its folder")
    if path.suffix not in SUFFIXES:
        raise BadInputError(f"{path.name}: unknown model type {path.suffix!r}",
                            f"edgetl runs {', '.join(SUFFIXES)} files exported by `edgetl export`")
    return path


def load(path: str | Path, threads: int | None = None, device: str | None = None) -> Runner:
    model_file = resolve_model_file(path)
    sidecar = Sidecar.read(model_file)
    fmt = SUFFIXES[model_file.suffix]
    if sidecar.format != fmt:
        raise BadInputError(f"{model_file}: the sidecar describes a {sidecar.format} model, not {fmt}")
    _check_model_files(model_file, sidecar)
    try:
        return runner_class(fmt)(model_file, sidecar, threads=threads, device=device)
    except (EdgetlError, MemoryError):
        raise
    except Exception as exc:  # the runtime refused the file: one line, not the runtime's traceback
        first = first_line(exc) or type(exc).__name__
        raise BadInputError(f"{model_file}: {fmt} could not load it ({type(exc).__name__}: {first})",
                            "re-export the artifact, or copy it again") from exc


def _check_model_files(model_file: Path, sidecar: Sidecar) -> None:
    """The model's own files (model.onnx; model.xml and model.bin) against the sidecar's sha256, where it
    has them: a truncated copy or a replaced file is named before a runtime chokes on it."""
    from edgetl.contract.sidecar import verify_files

    folder = model_file.parent
    present = [p.name for p in folder.glob(f"{model_file.stem}.*") if p.is_file()]
    bad = verify_files(folder, sidecar, present)
    if bad:
        raise BadInputError(f"{folder / bad[0]}: its sha256 differs from the one in its sidecar (corrupt, truncated "
                            "or replaced)", "re-export the artifact, or copy it again")


__all__ = ["Runner", "Sidecar", "load"]
