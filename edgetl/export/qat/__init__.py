"""Quantization-aware training and its int8 artifacts, in one subpackage.

    settings  QatSettings: the recipe's knobs, checked once
    graph     the float network captured and prepared with int8 fake quantizers
    data      the run's own splits, the float teacher and its validation answers
    steps     one optimizer step: the distillation loss, the rounding neighbourhood, update units
    targets   the layer-wise float targets
    loop      the fine-tune itself, on the shared epoch loop (`edgetl.train.loop`)
    convert   the trained graph as quantize/dequantize pairs, and each format's `convert_qat` dispatch

Why under export: QAT is torch training, but it exists only to make int8 artifacts,
and its conversion needs the exporters. The layers let export import train and never
the other way round, so the subpackage lives here and borrows train's loop,
checkpoints, loader and distributed helpers; each format's own conversion lives in
that format's module (`export/onnx.py`, `openvino.py`, `tflite.py`).
"""

from edgetl.export.qat.convert import QatSource, export
from edgetl.export.qat.settings import QatSettings

__all__ = ["QatSettings", "QatSource", "export"]
