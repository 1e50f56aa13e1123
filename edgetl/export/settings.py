"""The knobs of one export session (calibration, the gate's bounds, QAT), frozen and checked once.

Like NNCF's typed `quantize()` parameters: the CLI (or a script) builds one
`ExportSettings` and every module reads the same validated values, so a misspelt
knob fails at construction instead of silently taking a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from edgetl.contract.fields import Fields
from edgetl.export.gate import CALIBRATION_CAP, DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT

QAT_MODES = ("auto", "force", "off")


@dataclass(frozen=True)
class ExportSettings:
    calib_size: int = 300  # class-balanced train images the default recipe calibrates on
    calib_data: str | None = None  # a folder of calibration images instead of the run's train split
    max_drop: float | None = DEFAULT_MAX_DROP  # pp of validation top-1 int8 may lose; None: the gate is off
    min_agreement: float | None = DEFAULT_MIN_AGREEMENT  # the share of images whose int8 top-1 equals float's
    budget_seconds: float = 600.0  # of int8 attempts per artifact; the fp16 and fp32 fallbacks always run
    qat: str = "auto"  # auto: the gate's step before fp16; force: int8 from QAT alone; off: never
    qat_settings: Any = None  # edgetl.export.qat.QatSettings (None: its defaults)
    speed_gate: bool = True  # an int8 slower than its format's fp32 on this host misses the gate
    golden_count: int = 4  # held-out images each artifact carries with its own answers

    def __post_init__(self) -> None:
        fields = Fields("export settings")
        fields.number(self.calib_size, "calib_size", low=1, integer=True)
        if self.calib_data is not None:
            if not isinstance(self.calib_data, (str, os.PathLike)):
                fields.fail("calib_data", f"must be a folder path, got {self.calib_data!r}")
            object.__setattr__(self, "calib_data", os.fspath(self.calib_data))  # a str in the provenance key
        if self.max_drop is not None:
            fields.number(self.max_drop, "max_drop", low=0)
        if self.min_agreement is not None:
            fields.number(self.min_agreement, "min_agreement", low=0, high=1)
        fields.number(self.budget_seconds, "budget_seconds", low=0)
        fields.choice(self.qat, QAT_MODES, "qat")
        fields.choice(self.speed_gate, (True, False), "speed_gate")
        fields.number(self.golden_count, "golden_count", low=1, integer=True)

    @property
    def gated(self) -> bool:
        """Whether int8 is judged (`max_drop` None delivers the first recipe as it comes)."""
        return self.max_drop is not None

    @property
    def agreement_bound(self) -> float | None:
        """The agreement the gate demands; None when the gate is off."""
        return self.min_agreement if self.gated else None

    @property
    def calibration_draw(self) -> int:
        """Calibration images to load: the gate's search also tries the whole split (up to a cap), and the
        first `calib_size` of this balanced draw are the same images as a draw of `calib_size` alone."""
        return max(self.calib_size, CALIBRATION_CAP) if self.gated else self.calib_size

    def provenance(self, precision: str, calibration_images: int, qat_key: dict | None) -> dict:
        """The settings that decide an artifact's bytes, for its provenance key (fp32 and fp16 use none)."""
        from edgetl.export.provenance import GATE_VERSION  # provenance reads sidecars: not for `edgetl --help`

        if precision != "int8":
            return {"max_drop": None, "qat": None, "min_agreement": None, "gate": GATE_VERSION}
        return {"calib_size": self.calib_size, "calib_data": self.calib_data, "calib_images": calibration_images,
                "max_drop": self.max_drop, "qat": qat_key, "min_agreement": self.agreement_bound,
                "gate": GATE_VERSION, **({"speed_gate": False} if not self.speed_gate else {})}
