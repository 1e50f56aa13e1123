"""One measured attempt of the gate.

A `Trial` keeps its scratch folder only while it may still be delivered: the
Exporter discards every attempt the chain will not publish as soon as the chain
says so (chain.Step.keep), so a search over many recipes never holds more than
two artifacts.
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
