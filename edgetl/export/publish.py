"""Publishing one export: the artifact folder with its sidecar, golden answers and samples, and its result row."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgetl import atomic
from edgetl.console import warn
from edgetl.contract.artifact import SAMPLES_DIR
from edgetl.contract.sidecar import SIDECAR_NAME, Sidecar, sha256_file
from edgetl.runtime import runner_class
from edgetl.runtime.golden import record_reference
from edgetl.runtime.timing import quick_p50_ms


@dataclass
class ArtifactResult:
    format: str
    precision: str  # requested
    delivered: str | None = None
    path: str | None = None
    status: str = "failed"  # ok | fallback | up-to-date | failed
    size_bytes: int = 0
    seconds: float = 0.0
    val_accuracy: float | None = None
    drop_pp: float | None = None
    agreement: float | None = None
    golden_passed: bool | None = None
    latency_ms: float | None = None  # p50 at batch 1 on the export host, default threads
    float_layers: list[str] = field(default_factory=list)
    speed: dict | None = None  # the delivered int8 against fp32 on this host (speed.compare)
    attempts: list[dict] = field(default_factory=list)
    message: str = ""


def publish(target: Path, scratch: Path, sidecar: Sidecar, metrics: dict, result: ArtifactResult, golden_dir: Path,
            samples_dir: Path) -> None:
    """Give the chosen attempt its golden answers, samples, latency and validation record, then publish it
    as `target` atomically (a killed export never leaves a half-written artifact that looks complete)."""
    shutil.copytree(golden_dir, scratch, dirs_exist_ok=True)
    shutil.copytree(samples_dir, scratch / SAMPLES_DIR, dirs_exist_ok=True)
    runner = runner_class(sidecar.format)(scratch / sidecar.model_file, sidecar)
    golden = record_reference(runner, scratch)
    latency = quick_p50_ms(runner)
    sidecar.attempts = result.attempts
    sidecar.validation = {"split": "val", **{k: metrics[k] for k in (
        "images", "accuracy", "float_accuracy", "drop_pp", "agreement", "kl", "cosine", "worst_class")},
        "golden": {k: golden[k] for k in ("passed", "matched", "float_matched", "total")},
        "latency_ms": latency, **({"speed": metrics["speed"]} if metrics.get("speed") else {}),
        **({"views": metrics["views"], "view_agreement": metrics["gate_agreement"]} if metrics.get("views", 1) > 1
           else {})}
    sidecar.files = {p.relative_to(scratch).as_posix(): sha256_file(p)
                     for p in sorted(scratch.rglob("*")) if p.is_file()}
    with atomic.atomic_dir(target, kind="artifact") as tmp:
        shutil.copytree(scratch, tmp, dirs_exist_ok=True)
        atomic.write_text(tmp / SIDECAR_NAME, sidecar.to_json())
    shutil.rmtree(scratch, ignore_errors=True)
    result.delivered = sidecar.precision
    result.size_bytes = sidecar.model_bytes(target)
    result.val_accuracy, result.drop_pp = metrics["accuracy"], metrics["drop_pp"]
    result.agreement, result.golden_passed = metrics["agreement"], golden["passed"]
    result.latency_ms = latency
    result.speed = metrics.get("speed")
    if golden["float_matched"] < golden["total"]:
        warn(f"{target.name}: {sidecar.precision} changes the float top-1 of "
             f"{golden['total'] - golden['float_matched']}/{golden['total']} golden samples "
             f"(quantization error; see its accuracy drop)")


def reused(result: ArtifactResult, existing: Sidecar, target: Path) -> ArtifactResult:
    """The row of an artifact whose sources did not change, read back from its published sidecar."""
    validation = existing.validation or {}
    return replace(result, status="up-to-date", delivered=existing.precision, attempts=existing.attempts,
                   val_accuracy=validation.get("accuracy"), drop_pp=validation.get("drop_pp"),
                   agreement=validation.get("agreement"), size_bytes=existing.model_bytes(target),
                   golden_passed=(validation.get("golden") or {}).get("passed"),
                   latency_ms=validation.get("latency_ms"), speed=validation.get("speed"),
                   float_layers=(existing.sensitivity or {}).get("float_layers", []))


def measured_line(record: dict) -> str:
    """One attempt's progress line: what it measured on validation, or why it failed."""
    if record.get("status") != "measured":
        return record.get("error", record.get("status", ""))
    line = f"drop {record['drop_pp']:+.2f} pp, agreement {100 * record['agreement']:.2f}%"
    if "view_agreement" in record:
        line += f" ({100 * record['view_agreement']:.2f}% on {record['views']} views of each image)"
    if record.get("speed"):
        line += f", {record['speed']['ratio']:.2f}x the fp32 latency"
    return line + f", {record['seconds']} s"
