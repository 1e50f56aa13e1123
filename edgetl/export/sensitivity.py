"""Per-layer int8 sensitivity, measured: which layers cost the accuracy, named by torch module.

A fixed list of "sensitive layers" per recipe only guesses; on a fine-tuned
Lite0 one layer cost almost all of the int8 loss, and it was not on the list.
This measures it the way onnxruntime's `qdq_loss_debug` and NNCF's accuracy
control reason about it, on the calibration images (never val or test):

1. calibrate once (onnxruntime MinMax, the ranges cached as JSON);
2. for every weighted layer (conv / linear), quantize *that layer alone*
   (per-channel int8 weights, uint8 activations, the rest float) and compare the
   model's logits with float: SQNR in dB (higher is better), top-1 agreement and
   KL divergence;
3. for the worst `recover` layers, quantize everything *but* that layer and
   measure how much agreement keeping it float buys back.

The ranking (worst first) names torch modules, which the gate's mixed precision
keeps in float in any format (see `qdq.py`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from edgetl.console import info, progress_bar, warn
from edgetl.export.qdq import BatchReader, weighted_layers
from edgetl.runtime.base import softmax
from edgetl.runtime.onnx import FLOAT_LAYER_OPTIMIZERS
from edgetl.runtime.onnx import session as onnx_session

DEFAULT_IMAGES = 96
SIDECAR_ROWS = 15  # the worst layers a sidecar keeps (parity shows 10)


def _logits(session, batches: list[np.ndarray]) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in batches])


def _scores(reference: np.ndarray, candidate: np.ndarray) -> dict:
    noise = float(np.sum((reference - candidate) ** 2))
    signal = float(np.sum(reference ** 2))
    sqnr = 99.0 if noise == 0 else 10 * np.log10(max(signal, 1e-12) / noise)
    p, q = softmax(reference.astype(np.float64)), softmax(candidate.astype(np.float64))
    kl = float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))
    return {"sqnr_db": round(float(sqnr), 2), "agreement": round(float(np.mean(reference.argmax(1) == candidate.argmax(1))), 4),
            "kl": round(kl, 5)}


def measure(prepared: Path, calibration_batches: list[np.ndarray], recover: int = 10,
            threads: int | None = None) -> dict:
    """Rank the weighted layers of the prepared fp32 ONNX by how much int8 hurts each alone.

    `calibration_batches`: NCHW float32 batches (a few dozen images is enough to rank).
    Returns {"method", "images", "seconds", "full_int8": scores, "layers": [...worst first]}.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    started = time.perf_counter()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads

    def session(path):
        return onnx_session(path, options, disabled=FLOAT_LAYER_OPTIMIZERS)  # layers left float stay float

    float_session = session(prepared)
    input_name = float_session.get_inputs()[0].name
    reference = _logits(float_session, calibration_batches)
    layers = weighted_layers(onnx.load(str(prepared)).graph)
    with tempfile.TemporaryDirectory(prefix="edgetl-sensitivity-") as tmp:
        cache = Path(tmp) / "ranges.json"

        def quantized(nodes=None, exclude=None) -> np.ndarray:
            target = Path(tmp) / "candidate.onnx"
            quantize_static(str(prepared), str(target), BatchReader(calibration_batches, input_name),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_quantize=nodes, nodes_to_exclude=exclude,
                            extra_options={"CalibMaxIntermediateOutputs": 64}, calibration_cache_path=str(cache))
            return _logits(session(target), calibration_batches)

        full = _scores(reference, quantized())
        rows = []
        with progress_bar("int8 sensitivity per layer", len(layers) + min(recover, len(layers))) as advance:
            for module, nodes in layers:
                rows.append({"layer": module, "nodes": nodes, **_scores(reference, quantized(nodes=nodes))})
                advance()
            rows.sort(key=lambda r: (r["sqnr_db"], -r["kl"]))
            for row in rows[:recover]:
                kept = _scores(reference, quantized(exclude=row["nodes"]))
                row["agreement_if_float"] = kept["agreement"]
                row["sqnr_db_if_float"] = kept["sqnr_db"]
                advance()
    images = int(sum(len(b) for b in calibration_batches))
    return {"method": ("onnxruntime QDQ (MinMax, per-channel int8 weights, uint8 activations): each layer quantized "
                       "alone against float, logits compared"),
            "images": images, "split": "calibration", "seconds": round(time.perf_counter() - started, 1),
            "full_int8": full, "layers": rows}


def measure_model(request, calibration) -> dict | None:
    """`measure` for an export session's model, through its prepared fp32 ONNX; None (with a warning) when
    it cannot be measured, since the gate still has its recipes and fallbacks."""
    from edgetl.export import onnx as onnx_export

    try:
        prepared = onnx_export.prepared_for_int8(request, onnx_export.float_onnx(request))
        measured = measure(prepared, list(calibration.batches("NCHW", limit=DEFAULT_IMAGES, batch_size=16)))
    except Exception as exc:
        warn(f"  could not measure layer sensitivity ({type(exc).__name__}: {exc})")
        return None
    info(f"  int8 sensitivity: {len(measured['layers'])} layers in {measured['seconds']} s; worst: "
         + ", ".join(f"{r['layer']} ({r['sqnr_db']} dB)" for r in measured["layers"][:3]))
    return measured


def sidecar_record(measured: dict, float_layers: list[str], max_drop: float | None,
                   min_agreement: float | None) -> dict:
    """What an int8 sidecar says: the ranking (worst first), the layers it keeps float, and why."""
    floats = list(float_layers)
    return {"method": measured["method"], "split": measured["split"], "images": measured["images"],
            "full_int8": measured["full_int8"],
            "layers": [{k: v for k, v in row.items() if k != "nodes"} for row in measured["layers"][:SIDECAR_ROWS]],
            "float_layers": floats,
            "reason": (f"the {len(floats)} most sensitive layer(s) by measured SQNR, the fewest that kept the "
                       f"validation drop within {max_drop} pp and agreement >= {min_agreement}") if floats else None}
