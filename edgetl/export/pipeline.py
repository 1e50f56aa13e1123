"""`edgetl export`: every requested (format, precision) from a run, each measured and gated.

For each artifact: plan the attempts (gate.py), export each into a scratch
folder, load it with the device runtime, measure it against the float model on
the validation split, and publish the first attempt that passes as
`<out>/<format>-<precision>/` with its sidecar and golden samples — atomically,
so a killed export never leaves a half-written artifact that looks complete.
Formats are independent: a converter that fails costs only its own rows. An
artifact whose sources did not change is skipped on re-runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from edgetl import __version__, atomic
from edgetl.console import info, warn
from edgetl.errors import EdgetlError, MissingBackendError
from edgetl.evaluation import compare, runner_logits
from edgetl.export import gate
from edgetl.export.base import ExportRequest
from edgetl.export.formats import FORMATS
from edgetl.export.golden import make_golden
from edgetl.export.graph import static_same_padding
from edgetl.runtime import runner_class
from edgetl.runtime.golden import record_reference
from edgetl.runtime.sidecar import SIDECAR_NAME, Sidecar, sha256_file, verify_files


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
    attempts: list[dict] = field(default_factory=list)
    message: str = ""


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def check_converters(formats: list[str]) -> None:
    import importlib.util

    for name in formats:
        for package in FORMATS[name].converter:
            if importlib.util.find_spec(package) is None:
                raise MissingBackendError(package, FORMATS[name].extra, f"exporting {name}")


def _source_key(reference, fmt: str, precision: str, settings: dict) -> str:
    text = json.dumps([reference.checkpoint_sha256, fmt, precision, settings, __version__], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _up_to_date(target: Path, key: str) -> Sidecar | None:
    try:
        sidecar = Sidecar.read(target)
    except EdgetlError:
        return None
    if sidecar.source.get("key") != key or verify_files(target, sidecar):
        return None
    return sidecar


class Exporter:
    """One export session over a run: shared float reference, validation data, calibration."""

    def __init__(self, reference, out: Path, calibration, max_drop: float | None, budget_seconds: float,
                 settings: dict, golden_count: int = 4):
        self.reference = reference
        self.out = out
        self.calibration = calibration
        self.max_drop = max_drop
        self.budget = budget_seconds
        self.settings = settings
        self.workdir = Path(tempfile.mkdtemp(prefix=".export-work-", dir=out))
        self.validation = reference.labelled("val")
        self.float_val = reference.logits(self.validation.pixels)
        self.golden_dir = self.workdir / "golden-source"
        self.golden = make_golden(reference, self.golden_dir, golden_count)
        height, width = reference.preprocess.size
        self.export_model = static_same_padding(reference.model, (1, 3, height, width))

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _request(self, attempt: gate.Attempt, scratch: Path) -> ExportRequest:
        ref = self.reference
        meta = json.dumps({"labels": ref.labels, "preprocess": ref.preprocess.to_dict(), "model": ref.model_name})
        return ExportRequest(model=self.export_model, model_name=ref.model_name, labels=ref.labels,
                             preprocess=ref.preprocess, out_dir=scratch, workdir=self.workdir,
                             precision=attempt.precision, calibration=self.calibration,
                             options={**attempt.options, "metadata_json": meta},
                             validation=self.validation)

    def _sidecar(self, fmt: str, requested: str, attempt: gate.Attempt, exported, key: str) -> Sidecar:
        ref = self.reference
        inp = exported.input
        preprocess = replace(ref.preprocess, layout=exported.layout, input_dtype=inp.dtype,
                             input_scale=inp.scale, input_zero_point=inp.zero_point)
        calibration = None
        if attempt.precision == "int8" and self.calibration is not None:
            used = attempt.options.get("calib_images") or len(self.calibration)
            calibration = {"source": self.calibration.source, "images": min(used, len(self.calibration)),
                           "balanced": True, "transform": "evaluation preprocessing",
                           "method": attempt.options.get("method", attempt.options.get("recipe", "default"))}
        return Sidecar(
            format=fmt, precision=attempt.precision, requested_precision=requested, model_file=exported.model_file,
            labels=ref.labels, preprocess=preprocess, input=exported.input, output=exported.output,
            quantization=exported.quantization, calibration=calibration,
            golden=[replace(g) for g in self.golden],  # each artifact records its own answers
            source={"run_dir": str(ref.run.path.resolve()), "model": ref.model_name,
                    "checkpoint_sha256": ref.checkpoint_sha256,
                    "split_digest": ref.run.read_dataset().get("split_digest"), "edgetl_version": __version__,
                    "git_commit": git_commit(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "key": key},
        )

    def export_one(self, fmt: str, precision: str) -> ArtifactResult:
        target = self.out / f"{fmt}-{precision}"
        result = ArtifactResult(format=fmt, precision=precision, path=str(target))
        attempts = gate.plan(fmt, precision, self.settings["calib_size"], self.reference.sensitive_layers,
                             self.max_drop)
        calibrated = any(a.precision == "int8" for a in attempts)
        key = _source_key(self.reference, fmt, precision, {
            **(self.settings if calibrated else {}), "max_drop": self.max_drop if calibrated else None,
            "plan": [asdict(a) for a in attempts]})
        existing = _up_to_date(target, key)
        if existing is not None:
            validation = existing.validation or {}
            result.__dict__.update(status="up-to-date", delivered=existing.precision, attempts=existing.attempts,
                                   val_accuracy=validation.get("accuracy"), drop_pp=validation.get("drop_pp"),
                                   agreement=validation.get("agreement"),
                                   size_bytes=existing.model_bytes(target),
                                   golden_passed=(validation.get("golden") or {}).get("passed"))
            return result
        started = time.perf_counter()
        for number, attempt in enumerate(attempts):
            if time.perf_counter() - started > self.budget and not attempt.last_resort and number > 0:
                result.attempts.append({"what": attempt.what, "status": "skipped: time budget spent"})
                continue
            record = {"what": attempt.what, "precision": attempt.precision}
            scratch = self.workdir / f"{fmt}-{precision}-{number}"
            scratch.mkdir()
            attempt_start = time.perf_counter()
            try:
                exported = FORMATS[fmt].exporter().export(self._request(attempt, scratch))
                sidecar = self._sidecar(fmt, precision, attempt, exported, key)
                runner = runner_class(fmt)(scratch / exported.model_file, sidecar)
                metrics = compare(self.float_val, runner_logits(runner, self.validation.pixels),
                                  self.validation.labels, self.reference.labels)
            except Exception as exc:  # a converter failing must not lose the other artifacts
                first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
                record.update(status="error", error=f"{type(exc).__name__}: {first_line}",
                              seconds=round(time.perf_counter() - attempt_start, 2))
                result.attempts.append(record)
                shutil.rmtree(scratch, ignore_errors=True)
                if self.max_drop is None:
                    break  # no fallback was asked for
                continue
            record.update(status="measured", drop_pp=metrics["drop_pp"], agreement=metrics["agreement"],
                          val_accuracy=metrics["accuracy"], seconds=round(time.perf_counter() - attempt_start, 2))
            passes = (self.max_drop is None or attempt.precision == "fp32" or attempt.last_resort
                      or metrics["drop_pp"] <= self.max_drop)
            record["status"] = "accepted" if passes else f"rejected: drop {metrics['drop_pp']:.2f} pp > {self.max_drop}"
            result.attempts.append(record)
            if passes:
                self._publish(target, scratch, sidecar, metrics, result)
                result.status = "ok" if number == 0 else "fallback"
                break
            shutil.rmtree(scratch, ignore_errors=True)
        result.seconds = round(time.perf_counter() - started, 2)
        if result.delivered is None:
            result.status = "failed"
            result.message = "; ".join(a.get("error", a["status"]) for a in result.attempts)
        elif result.delivered != precision:
            result.message = (f"delivered {result.delivered}: {precision} lost more than {self.max_drop} pp "
                              f"on validation in every attempt")
        return result

    def _publish(self, target: Path, scratch: Path, sidecar: Sidecar, metrics: dict, result: ArtifactResult) -> None:
        shutil.copytree(self.golden_dir, scratch, dirs_exist_ok=True)
        runner = runner_class(sidecar.format)(scratch / sidecar.model_file, sidecar)
        golden = record_reference(runner, scratch)
        sidecar.attempts = result.attempts
        sidecar.validation = {"split": "val", **{k: metrics[k] for k in (
            "images", "accuracy", "float_accuracy", "drop_pp", "agreement", "kl", "cosine", "worst_class")},
            "golden": {k: golden[k] for k in ("passed", "matched", "float_matched", "total")}}
        sidecar.files = {p.relative_to(scratch).as_posix(): sha256_file(p)
                         for p in sorted(scratch.rglob("*")) if p.is_file()}
        with atomic.atomic_dir(target) as tmp:
            shutil.copytree(scratch, tmp, dirs_exist_ok=True)
            atomic.write_text(tmp / SIDECAR_NAME, sidecar.to_json())
        shutil.rmtree(scratch, ignore_errors=True)
        result.delivered = sidecar.precision
        result.size_bytes = sidecar.model_bytes(target)
        result.val_accuracy, result.drop_pp = metrics["accuracy"], metrics["drop_pp"]
        result.agreement, result.golden_passed = metrics["agreement"], golden["passed"]
        if golden["float_matched"] < golden["total"]:
            warn(f"{target.name}: {sidecar.precision} changes the float top-1 of "
                 f"{golden['total'] - golden['float_matched']}/{golden['total']} golden samples "
                 f"(quantization error; see its accuracy drop)")


def export_run(run_dir: str | Path, formats: list[str], precisions: list[str], calib_size: int = 300,
               calib_data: str | None = None, max_drop: float | None = None, out: str | Path | None = None,
               budget_seconds: float = 600.0) -> dict:
    """Export a finished run; returns {"run_dir", "out", "float_val_accuracy", "artifacts": [...]}."""
    from edgetl.export.calibration import load_calibration
    from edgetl.export.reference import load_reference

    check_converters(formats)
    reference = load_reference(run_dir)
    out = Path(out) if out else reference.run.path / "export"
    out.mkdir(parents=True, exist_ok=True)
    calibration = None
    if "int8" in precisions:
        from edgetl.data.folder import list_images
        from edgetl.data.splits import load_split

        if calib_data:
            samples, root, source = list_images(calib_data), Path(calib_data), f"folder {calib_data}"
        else:
            samples, root, source = load_split(reference.run.path, "train"), reference.run.data_root(), "train split"
        wanted = calib_size * (2 if max_drop is not None else 1)
        calibration = load_calibration(root, samples, reference.preprocess, wanted, source)
        if len(calibration) < calib_size:
            warn(f"calibrating on {len(calibration)} images ({source} has no more); --calib-size asked {calib_size}")
    settings = {"calib_size": calib_size, "calib_data": calib_data}
    session = Exporter(reference, out, calibration, max_drop, budget_seconds, settings)
    results = []
    try:
        for fmt in formats:
            for precision in precisions:
                if precision not in FORMATS[fmt].precisions:
                    results.append(ArtifactResult(fmt, precision, status="failed",
                                                  message=f"{fmt} does not offer {precision}"))
                    continue
                info(f"exporting {fmt} {precision} ...")
                results.append(session.export_one(fmt, precision))
                row = results[-1]
                info(f"  {fmt}-{precision}: {row.status}"
                     + (f", val accuracy {row.val_accuracy:.3f} (drop {row.drop_pp:+.2f} pp)"
                        if row.val_accuracy is not None else f" ({row.message})"))
    finally:
        session.close()
    return {"run_dir": str(reference.run.path), "out": str(out),
            "float_val_accuracy": round(float((session.float_val.argmax(1) == session.validation.labels).mean()), 6),
            "max_drop": max_drop, "artifacts": [asdict(r) for r in results]}
