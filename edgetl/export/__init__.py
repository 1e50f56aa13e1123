"""Export: ONNX, OpenVINO IR and TFLite in fp32/fp16/int8, each measured against the float model.

    export_run(run_dir, formats, precisions, calib_size=300, max_drop=1.0, min_agreement=0.985) -> report dict

One module per backend (`onnx.py`, `openvino.py`, `tflite.py`) behind
`export(ExportRequest) -> ExportedModel`; the table of formats is `edgetl.contract.formats.FORMATS`.
"""

from edgetl.contract.formats import FORMATS, get_format


def export_run(*args, **kwargs):
    """Lazy entry point: importing edgetl.export does not import torch or the converters."""
    from edgetl.export.pipeline import export_run as _export_run

    return _export_run(*args, **kwargs)


__all__ = ["FORMATS", "export_run", "get_format"]
