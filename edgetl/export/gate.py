"""The int8 gate: a calibration search, measured mixed precision, then fp16 and fp32.

On by default (`--max-drop 1.0`; `--max-drop none` turns it off). Every attempt
is measured on the validation split against the float model, and one passes
when its top-1 drop is within `max_drop` *and* its top-1 agreement with float is
at least `min_agreement`: accuracy lets flipped images cancel out, agreement
counts each of them. The steps, all plain data so every one can be recorded:

1. **Recipe search** (each format's `int8_recipes`, in its exporter module): a
   few calibrations per format (number of images, range estimator, bias
   correction), all tried within `--budget`, in a fixed order with a fixed image
   draw, so the same run gives the same artifact. The best agreement (then the
   smallest drop) wins.
2. **Mixed precision** (`mixed`): if the winner misses the bound, the layers
   that measured most sensitive (`sensitivity.py`, torch module names, the same
   in every format) are kept in float, 1, 2, 3, 5, 8 of them, worst first, on the
   winning recipe; the first that passes is delivered: the fewest float layers.
3. **Quantization-aware training** (`qat`): a short fine-tune with int8 fake
   quantization from the run's best checkpoint (trained once per run and
   settings, shared by the formats, kept in RUN_DIR/qat/), then the QAT model
   with the k most sensitive layers computing in float (no retraining: see
   `export/qat.py`). `--qat` makes these the only int8 attempts; `--no-qat`
   leaves them out.
4. **fp16**, then **fp32** as the last resort (always delivered).

An int8 attempt also misses when it runs slower than the same format's fp32 on the
export host (`speed.py`); when every recipe does, mixed precision and QAT (the
same graph or a slower one) are skipped. `--no-speed-gate` keeps int8 regardless.

Without the gate, int8 is the first recipe alone. These are the pieces; `chain.py`
orders them (which attempt comes next, given the results so far and the bounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MIXED_COUNTS = (1, 2, 3, 5, 8)
DEFAULT_MAX_DROP = 1.0
DEFAULT_MIN_AGREEMENT = 0.985
CALIBRATION_CAP = 1000  # "all the train split" stops here: ranges settle long before, time does not


@dataclass(frozen=True)
class Attempt:
    what: str
    precision: str
    options: dict = field(default_factory=dict)
    stage: str = "recipe"  # recipe | mixed | qat | fallback
    last_resort: bool = False


def calibration_sizes(calib_size: int, calib_all: int, searched: bool = True) -> list[int]:
    """The image counts a format's recipe search calibrates on: `calib_size`, then (searched) the whole split."""
    return [calib_size] + ([calib_all] if searched and calib_all > calib_size else [])


def mixed(best: Attempt, ranking: list[str], counts: tuple[int, ...] = MIXED_COUNTS, stage: str = "mixed") -> list[Attempt]:
    """The winning recipe (or the QAT model) with the k most sensitive layers kept in float, k = 1, 2, 3, 5, 8."""
    steps = []
    for count in counts:
        if count > len(ranking):
            break
        layers = ranking[:count]
        steps.append(replace(best, what=f"{best.what}, {count} most sensitive layer(s) float ({', '.join(layers)})",
                             options={**best.options, "float_layers": layers}, stage=stage))
    return steps


def qat(what: str) -> Attempt:
    """Quantization-aware fine-tuning (`edgetl.export.qat`), shared by every format of the session."""
    return Attempt(what, "int8", {"qat": True}, stage="qat")


def fallbacks() -> list[Attempt]:
    return [Attempt("fp16", "fp16", stage="fallback"),
            Attempt("fp32 (last resort)", "fp32", stage="fallback", last_resort=True)]


def agreement_of(metrics: dict) -> float:
    """The agreement the bound judges: over the shifted views of each image when the split is small
    (views.py), else over the images."""
    return metrics.get("gate_agreement", metrics["agreement"])


def passes(metrics: dict, max_drop: float | None, min_agreement: float | None) -> bool:
    """Within the drop and the agreement bound, and (`too_slow`, set by the speed check) not slower than fp32."""
    if max_drop is None:
        return True
    return (metrics["drop_pp"] <= max_drop and (min_agreement is None or agreement_of(metrics) >= min_agreement)
            and not metrics.get("too_slow"))


def better(a: dict, b: dict | None) -> bool:
    """Whether measured attempt `a` beats `b`: faster than fp32 first, then agreement (every flip counts),
    then the drop."""
    def rank(m: dict) -> tuple:
        return (not m.get("too_slow"), agreement_of(m), -m["drop_pp"])

    return b is None or rank(a) > rank(b)


def resolution_note(images: int, max_drop: float | None) -> str | None:
    """A warning when one validation image is worth too much for the gate to tell recipes apart."""
    if images == 0:
        return "no validation images: int8 cannot be judged; the gate accepts the first recipe"
    one = 100.0 / images
    if max_drop is not None and one > max_drop / 4:
        return (f"the validation split has {images} images: one image is {one:.2f} pp, too coarse to tell "
                f"int8 recipes apart at --max-drop {max_drop}; give the run a larger validation split")
    return None
