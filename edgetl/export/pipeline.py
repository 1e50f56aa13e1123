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

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgetl import atomic
from edgetl.console import info, warn
from edgetl.contract.formats import FORMATS
from edgetl.contract.sidecar import Sidecar
from edgetl.errors import first_line
from edgetl.evaluation import compare, fp32_ratios, runner_logits
from edgetl.export import gate, provenance, speed, views
from edgetl.export.base import ExportRequest
from edgetl.export.golden import make_golden
from edgetl.export.publish import ArtifactResult, measured_line, publish
from edgetl.export.qat import QatSource
from edgetl.backbones.static_padding import static_same_padding
from edgetl.export.samples import write_samples
from edgetl.export.sensitivity import sidecar_record
from edgetl.export.trial import Trial, best_of
from edgetl.runtime import runner_class


class Exporter:
    """One export session over a run: shared float reference, validation data, calibration."""

    def __init__(self, reference, out: Path, calibration, max_drop: float | None, budget_seconds: float,
                 settings: dict, golden_count: int = 4, min_agreement: float | None = gate.DEFAULT_MIN_AGREEMENT,
                 qat: str = "auto", qat_settings=None, speed_gate: bool = True):
        self.reference = reference
        self.speed_gate = speed_gate
        self._fp32_runners: dict = {}  # format -> its fp32 graph, loaded once, for the speed check
        self.min_agreement = min_agreement
        self._sensitivity: dict | None = None
        self._sensitivity_failed = False
        self.out = out
        self.calibration = calibration
        self.max_drop = max_drop
        self.budget = budget_seconds
        self.settings = settings
        # One work folder per process, named by its pid: a second export into the same folder works
        # beside this one, and the next export deletes the folders of exports that were killed.
        atomic.remove_dead_workdirs(out, ".export-work-")
        self.workdir = Path(tempfile.mkdtemp(prefix=f".export-work-{os.getpid()}-", dir=out))
        self.validation = reference.labelled("val")
        self.views = views.views_per_image(len(self.validation))  # the agreement bound's inputs (views.py)
        self.view_pixels = views.shifted_views(self.validation.pixels, self.views)
        self.float_views = reference.logits(self.view_pixels)
        self.float_val = self.float_views[:len(self.validation)]
        self.golden_dir = self.workdir / "golden-source"
        self.golden = make_golden(reference, self.golden_dir, golden_count)
        self.samples_dir = self.workdir / "samples-source"  # held-out photos every artifact carries
        self.samples = write_samples(reference.run, reference.preprocess, self.samples_dir)
        height, width = reference.preprocess.size
        self.export_model = static_same_padding(reference.model, (1, 3, height, width))
        self.qat = QatSource(reference, self.export_model, qat, qat_settings)

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
        if attempt.options.get("qat"):
            settings = self.qat.settings
            calibration = {"source": "train split", "images": settings.calib_images, "balanced": False,
                           "transform": "the run's augmentation", "method": "qat", "epochs": settings.epochs,
                           "lr": settings.lr}
        elif attempt.precision == "int8" and self.calibration is not None:
            used = attempt.options.get("calib_images") or len(self.calibration)
            calibration = {"source": self.calibration.source, "images": min(used, len(self.calibration)),
                           "balanced": True, "transform": "evaluation preprocessing",
                           "method": attempt.options.get("method", attempt.options.get("recipe", "default"))}
        return Sidecar(
            format=fmt, precision=attempt.precision, requested_precision=requested, model_file=exported.model_file,
            labels=ref.labels, preprocess=preprocess, input=exported.input, output=exported.output,
            quantization=exported.quantization, calibration=calibration,
            golden=[replace(g) for g in self.golden],  # each artifact records its own answers
            source=provenance.source_record(ref, key), samples=dict(self.samples),
        )

    def sensitivity(self) -> dict | None:
        """Per-layer int8 sensitivity of this run's model, measured once per export session (None if it failed)."""
        if self._sensitivity is None and not self._sensitivity_failed:
            from edgetl.export import onnx as onnx_export
            from edgetl.export.sensitivity import DEFAULT_IMAGES, measure

            try:
                scratch = self.workdir / "sensitivity"
                scratch.mkdir(exist_ok=True)
                request = self._request(gate.Attempt("sensitivity", "int8"), scratch)
                prepared = onnx_export.prepared_for_int8(request, onnx_export.float_onnx(request))
                batches = list(self.calibration.batches("NCHW", limit=DEFAULT_IMAGES, batch_size=16))
                self._sensitivity = measure(prepared, batches)
            except Exception as exc:  # the gate still has its recipes and fallbacks
                self._sensitivity_failed = True
                warn(f"  could not measure layer sensitivity ({type(exc).__name__}: {exc})")
                return None
            info(f"  int8 sensitivity: {len(self._sensitivity['layers'])} layers in "
                 f"{self._sensitivity['seconds']} s; worst: "
                 + ", ".join(f"{r['layer']} ({r['sqnr_db']} dB)" for r in self._sensitivity["layers"][:3]))
        return self._sensitivity

    def _worst_layers(self, count: int | None = None) -> list[str]:
        measured = self.sensitivity() or {"layers": []}
        return [row["layer"] for row in measured["layers"][:count]]

    def _try(self, fmt: str, requested: str, attempt: gate.Attempt, number: int, key: str) -> Trial:
        """Export one attempt into a scratch folder and measure it on the validation split."""
        record = {"what": attempt.what, "precision": attempt.precision, "stage": attempt.stage}
        scratch = self.workdir / f"{fmt}-{requested}-{number}"
        scratch.mkdir()
        started = time.perf_counter()
        # QAT trains once for every format: a run it cannot train on (no data folder) stops the export.
        student = self.qat.load() if attempt.options.get("qat") else None
        try:
            if student is not None:
                from edgetl.export import qat

                exported = qat.export(fmt, self._request(attempt, scratch), *student)
            else:
                exported = FORMATS[fmt].exporter().export(self._request(attempt, scratch))
            sidecar = self._sidecar(fmt, requested, attempt, exported, key)
            runner = runner_class(fmt)(scratch / exported.model_file, sidecar)
            metrics = self._measure(runner)
        except Exception as exc:  # a converter failing must not lose the other artifacts
            record.update(status="error", error=f"{type(exc).__name__}: {first_line(exc)}",
                          seconds=round(time.perf_counter() - started, 2))
            shutil.rmtree(scratch, ignore_errors=True)
            return Trial(attempt, record)
        record.update(status="measured", drop_pp=metrics["drop_pp"], agreement=metrics["agreement"],
                      val_accuracy=metrics["accuracy"], seconds=round(time.perf_counter() - started, 2),
                      **({"view_agreement": metrics["gate_agreement"], "views": self.views} if self.views > 1 else {}))
        if attempt.precision == "int8" and self.max_drop is not None:
            metrics["speed"] = record["speed"] = self._speed(fmt, runner, key)
            metrics["too_slow"] = self.speed_gate and speed.too_slow(metrics["speed"])
        return Trial(attempt, record, scratch, sidecar, metrics)

    def _measure(self, runner) -> dict:
        """Validation metrics on the images; the agreement the gate judges (`gate_agreement`) on every view."""
        logits = runner_logits(runner, self.view_pixels)
        metrics = compare(self.float_val, logits[:len(self.validation)], self.validation.labels, self.reference.labels)
        metrics.update(gate_agreement=round(views.view_agreement(self.float_views, logits), 6), views=self.views)
        return metrics

    def _speed(self, fmt: str, runner, key: str) -> dict | None:
        """int8 against this format's fp32 on this host (None when the fp32 graph cannot be made)."""
        if fmt not in self._fp32_runners:
            scratch = self.workdir / f"{fmt}-speed-reference"
            scratch.mkdir(exist_ok=True)
            attempt = gate.Attempt("fp32, the speed check's reference", "fp32")
            try:
                exported = FORMATS[fmt].exporter().export(self._request(attempt, scratch))
                sidecar = self._sidecar(fmt, "fp32", attempt, exported, key)
                self._fp32_runners[fmt] = runner_class(fmt)(scratch / exported.model_file, sidecar)
            except Exception as exc:  # the accuracy gate still decides
                warn(f"  no fp32 {fmt} to time int8 against ({type(exc).__name__}: {exc})")
                self._fp32_runners[fmt] = None
        reference = self._fp32_runners[fmt]
        if reference is None:
            return None
        height, width = self.reference.preprocess.size
        pixels = self.validation.pixels[:1] if len(self.validation) else np.zeros((1, height, width, 3), np.uint8)
        return speed.compare(runner, reference, pixels)

    def _plan_and_run(self, fmt: str, precision: str, key: str, result: ArtifactResult) -> Trial | None:
        """Run the gate's chain; returns the trial to publish (None if every attempt failed)."""
        started = time.perf_counter()
        gated = precision == "int8" and self.max_drop is not None

        def run(attempt: gate.Attempt) -> Trial | None:
            if gated and time.perf_counter() - started > self.budget and attempt.stage != "fallback" \
                    and result.attempts:
                result.attempts.append(_skipped(attempt.what, attempt.stage, "time budget spent"))
                return None
            if gated:
                info(f"  {fmt}-{precision} attempt {len(result.attempts) + 1}: {attempt.what} ...")
            trial = self._try(fmt, precision, attempt, len(result.attempts), key)
            result.attempts.append(trial.record)
            if gated:
                info("    " + measured_line(trial.record))
            return trial if trial.metrics is not None else None

        def first_passing(attempts: list[gate.Attempt]) -> Trial | None:
            for attempt in attempts:
                trial = run(attempt)
                if trial is None:
                    continue
                if attempt.last_resort or gate.passes(trial.metrics, self.max_drop, self.min_agreement):
                    return trial.accept()
                trial.record["status"] = "rejected: " + self._miss(trial.metrics)
                trial.discard()
            return None

        if precision != "int8":
            return run(gate.Attempt(precision, precision))
        qat_attempt = gate.qat(self.qat.describe())
        if self.qat.mode == "force":
            if not gated:
                return run(qat_attempt)
            return first_passing([qat_attempt, *self._qat_mixed(qat_attempt), *gate.fallbacks()])
        size, everything = self.settings["calib_size"], len(self.calibration)
        candidates = gate.recipes(fmt, min(size, everything), everything, searched=gated)
        if not gated:
            return run(candidates[0])
        best = best_of(run(attempt) for attempt in candidates)
        slow = best is not None and best.metrics.get("too_slow")
        if best is not None:
            if gate.passes(best.metrics, self.max_drop, self.min_agreement):
                return best.accept()
            best.record["status"] = "best recipe, " + self._miss(best.metrics)
            best.discard()
            if slow:  # mixed precision and QAT keep the same graph or add float layers: no faster
                result.attempts.append(_skipped("mixed precision and QAT", "mixed",
                                                "every int8 recipe ran slower than fp32 here"))
            elif self.sensitivity() is None:
                result.attempts.append(_skipped("mixed precision", "mixed",
                                                "the layer sensitivity could not be measured"))
            else:
                chosen = first_passing(gate.mixed(best.attempt, self._worst_layers()))
                if chosen is not None:
                    return chosen
        quantization_aware = [qat_attempt, *self._qat_mixed(qat_attempt)] if self.qat.mode == "auto" and not slow \
            else []
        return first_passing(quantization_aware + gate.fallbacks())

    def _qat_mixed(self, qat_attempt: gate.Attempt) -> list[gate.Attempt]:
        return gate.mixed(qat_attempt, self._worst_layers(), counts=gate.MIXED_COUNTS[:3], stage="qat")

    def _miss(self, metrics: dict) -> str:
        reasons = [speed.miss(metrics["speed"])] if metrics.get("too_slow") else []
        if metrics["drop_pp"] > self.max_drop:
            reasons.append(f"drop {metrics['drop_pp']:.2f} pp > {self.max_drop}")
        agreement = gate.agreement_of(metrics)
        if self.min_agreement is not None and agreement < self.min_agreement:
            where = f" on {metrics['views']} views of each image" if metrics.get("views", 1) > 1 else ""
            reasons.append(f"agreement {100 * agreement:.2f}%{where} < {100 * self.min_agreement:.1f}%")
        return ", ".join(reasons)

    def export_one(self, fmt: str, precision: str) -> ArtifactResult:
        target = self.out / f"{fmt}-{precision}"
        result = ArtifactResult(format=fmt, precision=precision, path=str(target))
        calibrated = precision == "int8"
        key = provenance.source_key(self.reference, fmt, precision, {
            **(self.settings if calibrated else {}), "max_drop": self.max_drop if calibrated else None,
            "qat": self.qat.key() if calibrated else None,
            "min_agreement": self.min_agreement if calibrated else None, "gate": provenance.GATE_VERSION,
            **({"speed_gate": False} if calibrated and not self.speed_gate else {})})
        existing = provenance.up_to_date(target, key)
        if existing is not None:
            validation = existing.validation or {}
            result.__dict__.update(status="up-to-date", delivered=existing.precision, attempts=existing.attempts,
                                   val_accuracy=validation.get("accuracy"), drop_pp=validation.get("drop_pp"),
                                   agreement=validation.get("agreement"),
                                   size_bytes=existing.model_bytes(target),
                                   golden_passed=(validation.get("golden") or {}).get("passed"),
                                   latency_ms=validation.get("latency_ms"), speed=validation.get("speed"),
                                   float_layers=(existing.sensitivity or {}).get("float_layers", []))
            return result
        started = time.perf_counter()
        chosen = self._plan_and_run(fmt, precision, key, result)
        if chosen is not None:
            if precision == "int8" and self.sensitivity() is not None:
                # Also when int8 missed the gate and fp16/fp32 was delivered: the ranking says which
                # layers held int8 back (parity's report draws it for every artifact that has one).
                float_layers = chosen.attempt.options.get("float_layers", []) if chosen.sidecar.precision == "int8" \
                    else []
                chosen.sidecar.sensitivity = sidecar_record(self.sensitivity(), float_layers, self.max_drop,
                                                            self.min_agreement)
            publish(target, chosen.scratch, chosen.sidecar, chosen.metrics, result, self.golden_dir, self.samples_dir)
            stage = chosen.attempt.stage if chosen.sidecar.precision == precision else "fallback"
            result.status = {"recipe": "ok", "mixed": "mixed precision", "qat": "qat"}.get(stage, "fallback")
            result.float_layers = list(chosen.attempt.options.get("float_layers", []))
        result.seconds = round(time.perf_counter() - started, 2)
        if result.delivered is None:
            result.status = "failed"
            result.message = "; ".join(a.get("error", a["status"]) for a in result.attempts)
        elif result.delivered != precision and self.speed_gate and speed.all_too_slow(result.attempts):
            fastest = min((a["speed"] for a in result.attempts if a.get("speed")), key=lambda r: r["ratio"])
            result.message = (f"delivered {result.delivered}: {speed.miss(fastest)}; "
                              "--no-speed-gate keeps int8 regardless")
        elif result.delivered != precision:
            worst = ", ".join(self._worst_layers(3))
            result.message = (f"delivered {result.delivered}: {precision} missed the gate (drop <= {self.max_drop} pp, "
                              f"agreement >= {100 * (self.min_agreement or 0):.1f}%) on validation in every attempt"
                              + (f"; the most sensitive layers: {worst}" if worst else ""))
        elif result.float_layers:
            result.message = f"int8 with {len(result.float_layers)} layer(s) kept float: {', '.join(result.float_layers)}"
        return result


def export_run(run_dir: str | Path, formats: list[str], precisions: list[str], calib_size: int = 300,
               calib_data: str | None = None, max_drop: float | None = gate.DEFAULT_MAX_DROP,
               out: str | Path | None = None, budget_seconds: float = 600.0,
               min_agreement: float | None = gate.DEFAULT_MIN_AGREEMENT, qat: str = "auto",
               qat_settings=None, speed_gate: bool = True) -> dict:
    """Export a finished run; returns {"run_dir", "out", "float_val_accuracy", "notes", "artifacts": [...]}.

    int8 is gated by default (`max_drop` pp of validation top-1 and `min_agreement`); `max_drop=None` turns
    the gate off and delivers the first recipe as it comes; `speed_gate=False` keeps an int8 that runs slower
    than fp32 on this host (still measured and recorded). `qat`: "auto" (the gate's step before fp16),
    "force" (int8 from quantization-aware training), "off"; `qat_settings` an `edgetl.train.qat.QatSettings`."""
    from edgetl.export.calibration import calibration_for_run
    from edgetl.export.reference import load_reference

    provenance.check_converters(formats)
    reference = load_reference(run_dir)
    out = Path(out) if out else reference.run.path / "export"
    out.mkdir(parents=True, exist_ok=True)
    calibration = None
    if "int8" in precisions:
        # The gate's search also tries the whole split (up to a cap); the first calib_size of this
        # balanced draw are the same images as a draw of calib_size alone.
        wanted = max(calib_size, gate.CALIBRATION_CAP) if max_drop is not None else calib_size
        calibration = calibration_for_run(reference, calib_size, wanted, calib_data)
    settings = {"calib_size": calib_size, "calib_data": calib_data,
                "calib_images": len(calibration) if calibration is not None else 0}
    session = Exporter(reference, out, calibration, max_drop, budget_seconds, settings,
                       min_agreement=min_agreement if max_drop is not None else None, qat=qat,
                       qat_settings=qat_settings, speed_gate=speed_gate)
    notes = []
    if "int8" in precisions and max_drop is not None:
        note = gate.resolution_note(len(session.validation), max_drop)
        if note:
            warn(note)
            notes.append(note)
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
                     + (f", val accuracy {row.val_accuracy:.3f} (drop {row.drop_pp:+.2f} pp, agreement "
                        f"{100 * row.agreement:.2f}%)" if row.val_accuracy is not None else f" ({row.message})"))
    finally:
        session.close()
    artifacts = [asdict(r) for r in results]
    for row, ratio in zip(artifacts, fp32_ratios(artifacts, "delivered", "latency_ms")):
        row["latency_ratio"] = ratio if ratio is not None else (row.get("speed") or {}).get("ratio")
    return {"run_dir": str(reference.run.path), "out": str(out),
            "float_val_accuracy": round(float((session.float_val.argmax(1) == session.validation.labels).mean()), 6),
            "max_drop": max_drop, "min_agreement": session.min_agreement, "notes": notes,
            "artifacts": artifacts}


def _skipped(what: str, stage: str, why: str) -> dict:
    """The record of an attempt the gate did not run, and why."""
    return {"what": what, "stage": stage, "status": f"skipped: {why}"}
