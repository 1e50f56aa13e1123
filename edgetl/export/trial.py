"""One measured attempt of the gate.

A `Trial` keeps its scratch folder only while it may still be delivered: the
gate discards every attempt it will not publish as soon as a better one is
measured, so a search over many recipes never holds more than two artifacts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgetl.contract.sidecar import Sidecar
from edgetl.export import gate


@dataclass
class Trial:
    """One measured attempt: its record, and while it may still be delivered, its scratch folder."""

    attempt: gate.Attempt
    record: dict
    scratch: Path | None = None
    sidecar: Sidecar | None = None
    metrics: dict | None = None

    def discard(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def accept(self) -> "Trial":
        self.record["status"] = "accepted"
        return self


def best_of(trials) -> Trial | None:
    """The best measured trial (gate.better), discarding each other one as soon as it is beaten."""
    best: Trial | None = None
    for trial in trials:
        if trial is None:
            continue
        if gate.better(trial.metrics, best.metrics if best else None):
            trial, best = best, trial
        if trial is not None:
            trial.discard()
    return best
