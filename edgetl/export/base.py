"""What every exporter receives and returns (the small interface behind FORMATS).

An exporter module exposes `export(request: ExportRequest) -> ExportedModel`. It
writes its files into `request.out_dir` (a temporary folder that the pipeline
publishes atomically), may reuse intermediates in `request.workdir` (one fp32
conversion shared by several attempts), and says exactly what it quantized.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgetl.contract.preprocess import Preprocess
from edgetl.contract.sidecar import TensorInfo


@dataclass
class ExportRequest:
    model: Any  # torch.nn.Module in eval mode on the CPU, float32
    model_name: str
    labels: list[str]
    preprocess: Preprocess  # the run's evaluation preprocessing (NCHW float input)
    out_dir: Path
    workdir: Path
    precision: str  # fp32 | fp16 | int8
    calibration: Any = None  # edgetl.export.calibration.CalibrationSet for int8
    # Attempt-specific knobs from the gate's plan: method, float_layers (the measured most int8-sensitive
    # torch modules, on the attempts that keep them in float), calib_images, io dtype, ...
    options: dict = field(default_factory=dict)
    validation: Any = None  # LabelledImages of the val split, for accuracy-aware quantization

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        height, width = self.preprocess.size
        return (1, 3, height, width)


@dataclass
class ExportedModel:
    model_file: str  # name inside out_dir
    layout: str  # NCHW | NHWC
    input: TensorInfo
    output: TensorInfo
    quantization: dict | None = None  # what exactly was quantized, by which tool
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def quiet_converters() -> Iterator[None]:
    """Converters print progress and INFO logs by the page; keep only real errors."""
    import logging

    names = ("nncf", "onnxruntime", "root", "torch.utils.cpp_extension", "torch.utils._pytree")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def quiet_native():
    """Swallow converters' and their imports' chatter (Python and C++ stdout/stderr: absl, TensorFlow,
    warnings); replay it if they fail."""
    sys.stdout.flush(), sys.stderr.flush()
    text, saved = io.StringIO(), [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            sink.seek(0)
            sys.stderr.write((text.getvalue() + sink.read().decode("utf-8", "replace"))[-6000:])
            raise
        finally:
            os.dup2(saved[0], 1), os.dup2(saved[1], 2), os.close(saved[0]), os.close(saved[1])
