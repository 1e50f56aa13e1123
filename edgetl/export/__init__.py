"""Export: ONNX, OpenVINO IR and TFLite in fp32/fp16/int8, each measured against the float model.

    export_run(run_dir, formats, precisions, ExportSettings(calib_size=300, max_drop=1.0), out=None) -> report dict

One module per backend (`onnx.py`, `openvino.py`, `tflite.py`) behind
`export(ExportRequest) -> ExportedModel`; the table of formats is `edgetl.contract.formats.FORMATS`.
"""

from edgetl.contract.formats import FORMATS, get_format
from edgetl.export.settings import ExportSettings


def export_run(*args, **kwargs):
    """Lazy entry point: importing edgetl.export does not import torch or the converters."""
    from edgetl.export.pipeline import export_run as _export_run

    return _export_run(*args, **kwargs)


__all__ = ["FORMATS", "ExportSettings", "export_run", "get_format"]
