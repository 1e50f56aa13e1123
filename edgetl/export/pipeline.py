"""`edgetl export`: every requested (format, precision) from a run, each measured and gated.

For each artifact the gate's chain (chain.py, a pure function) says which attempt
comes next; the Exporter exports each into a scratch folder, loads it with the
device runtime, measures it against the float model on the validation split, and
publishes the one the chain delivers as `<out>/<format>-<precision>/` with its
sidecar and golden samples (publish.py) — atomically, so a killed export never
leaves a half-written artifact that looks complete. Formats are independent: a
converter that fails costs only its own rows. An artifact whose sources did not
change is skipped on re-runs.
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
from edgetl.export import chain, gate, provenance, speed, views
from edgetl.export.base import ExportRequest
from edgetl.export.golden import make_golden
from edgetl.export.publish import ArtifactResult, measured_line, publish, reused
from edgetl.export.qat import QatSource
from edgetl.backbones.static_padding import static_same_padding
from edgetl.export.samples import write_samples
from edgetl.export.sensitivity import measure_model, sidecar_record
from edgetl.export.settings import ExportSettings
from edgetl.export.trial import Trial
from edgetl.runtime import runner_class


class Exporter:
    """One export session over a run: shared float reference, validation data, calibration."""

    def __init__(self, reference, out: Path, calibration, settings: ExportSettings):
        self.reference = reference
        self.out = out
        self.calibration = calibration
        self.settings = settings
        self._fp32_runners: dict = {}  # format -> its fp32 graph, loaded once, for the speed check
        self._sensitivity: dict | None = None
        self._sensitivity_measured = False
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
        self.golden = make_golden(reference, self.golden_dir, settings.golden_count)
        self.samples_dir = self.workdir / "samples-source"  # held-out photos every artifact carries
        self.samples = write_samples(reference.run, reference.preprocess, self.samples_dir)
        height, width = reference.preprocess.size
        self.export_model = static_same_padding(reference.model, (1, 3, height, width))
        self.qat = QatSource(reference, self.export_model, settings.qat, settings.qat_settings)

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
        return Sidecar(
            format=fmt, precision=attempt.precision, requested_precision=requested, model_file=exported.model_file,
            labels=ref.labels, preprocess=preprocess, input=exported.input, output=exported.output,
            quantization=exported.quantization, calibration=self._calibration_record(attempt),
            golden=[replace(g) for g in self.golden],  # each artifact records its own answers
            source=provenance.source_record(ref, key), samples=dict(self.samples),
        )

    def _calibration_record(self, attempt: gate.Attempt) -> dict | None:
        """The sidecar's `calibration`: what the int8 ranges were learned from (None for float)."""
        if attempt.options.get("qat"):
            settings = self.qat.settings
            return {"source": "train split", "images": settings.calib_images, "balanced": False,
                    "transform": "the run's augmentation", "method": "qat", "epochs": settings.epochs,
                    "lr": settings.lr}
        if attempt.precision == "int8" and self.calibration is not None:
            used = attempt.options.get("calib_images") or len(self.calibration)
            return {"source": self.calibration.source, "images": min(used, len(self.calibration)),
                    "balanced": True, "transform": "evaluation preprocessing",
                    "method": attempt.options.get("method", attempt.options.get("recipe", "default"))}
        return None

    def sensitivity(self) -> dict | None:
        """Per-layer int8 sensitivity of this run's model, measured once per export session (None if it failed)."""
        if not self._sensitivity_measured:
            self._sensitivity_measured = True
            scratch = self.workdir / "sensitivity"
            scratch.mkdir(exist_ok=True)
            self._sensitivity = measure_model(self._request(gate.Attempt("sensitivity", "int8"), scratch),
                                              self.calibration)
        return self._sensitivity

    def _worst_layers(self, count: int | None = None) -> list[str]:
        measured = self.sensitivity() or {"layers": []}
        return [row["layer"] for row in measured["layers"][:count]]

    def _ranking(self) -> chain.Ranking:
        return chain.Ranking(tuple(self._worst_layers()), measured=self.sensitivity() is not None)

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
        if attempt.precision == "int8" and self.settings.gated:
            metrics["speed"] = record["speed"] = self._speed(fmt, runner, key)
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

    def _plan(self, fmt: str, precision: str) -> chain.Plan:
        """What the chain may try for one artifact: for int8, this format's recipes and QAT."""
        if precision != "int8":
            return chain.Plan(precision, self.settings)
        everything = len(self.calibration)
        recipes = FORMATS[fmt].exporter().int8_recipes(min(self.settings.calib_size, everything), everything,
                                                       searched=self.settings.gated)
        return chain.Plan(precision, self.settings, tuple(recipes), gate.qat(self.qat.describe()))

    def _run_chain(self, fmt: str, precision: str, key: str, result: ArtifactResult) -> Trial | None:
        """Run what the chain asks for until it is done; returns the trial to publish (None if none can be)."""
        plan = self._plan(fmt, precision)
        started, results, ranking = time.perf_counter(), [], None
        trials: dict[int, Trial] = {}  # measured attempts whose files are still kept, by record index
        while True:
            step = chain.next_step(plan, results, time.perf_counter() - started, ranking)
            for index in [i for i in trials if i not in (step.keep, step.deliver)]:
                trials.pop(index).discard()  # a search over many recipes holds at most two artifacts
            if step.kind == "rank":
                ranking = self._ranking()
            elif step.kind == "skip":
                result.attempts.append(_skipped(step.attempt.what, step.attempt.stage, step.reason))
                results.append(chain.Result(step.attempt))
            elif step.kind == "try":
                trial = self._attempt(fmt, precision, step.attempt, key, result, announce=plan.gated)
                results.append(chain.Result(step.attempt, trial.metrics))
                if trial.scratch is not None:
                    trials[len(results) - 1] = trial
            else:
                for index, status in step.statuses.items():
                    result.attempts[index]["status"] = status
                return trials.get(step.deliver)

    def _attempt(self, fmt: str, precision: str, attempt: gate.Attempt, key: str, result: ArtifactResult,
                 announce: bool) -> Trial:
        """One attempt of the chain, its record added to the artifact's (with progress lines when gated)."""
        if announce:
            info(f"  {fmt}-{precision} attempt {len(result.attempts) + 1}: {attempt.what} ...")
        trial = self._try(fmt, precision, attempt, len(result.attempts), key)
        result.attempts.append(trial.record)
        if announce:
            info("    " + measured_line(trial.record))
        return trial

    def _publish(self, target: Path, precision: str, chosen: Trial, result: ArtifactResult) -> None:
        if precision == "int8" and self.sensitivity() is not None:
            # Also when int8 missed the gate and fp16/fp32 was delivered: the ranking says which
            # layers held int8 back (parity's report draws it for every artifact that has one).
            float_layers = chosen.attempt.options.get("float_layers", []) if chosen.sidecar.precision == "int8" \
                else []
            chosen.sidecar.sensitivity = sidecar_record(self.sensitivity(), float_layers, self.settings.max_drop,
                                                        self.settings.agreement_bound)
        publish(target, chosen.scratch, chosen.sidecar, chosen.metrics, result, self.golden_dir, self.samples_dir)
        result.status = chain.delivered_status(chosen.attempt, chosen.sidecar.precision, precision)
        result.float_layers = list(chosen.attempt.options.get("float_layers", []))

    def export_one(self, fmt: str, precision: str) -> ArtifactResult:
        target = self.out / f"{fmt}-{precision}"
        result = ArtifactResult(format=fmt, precision=precision, path=str(target))
        calibrated = precision == "int8"
        key = provenance.source_key(self.reference, fmt, precision, self.settings.provenance(
            precision, len(self.calibration) if self.calibration is not None else 0,
            self.qat.key() if calibrated else None))
        existing = provenance.up_to_date(target, key)
        if existing is not None:
            return reused(result, existing, target)
        started = time.perf_counter()
        chosen = self._run_chain(fmt, precision, key, result)
        if chosen is not None:
            self._publish(target, precision, chosen, result)
        result.seconds = round(time.perf_counter() - started, 2)
        if result.delivered is None:
            result.status = "failed"
        worst = self._worst_layers(3) if result.delivered not in (None, precision) else []
        result.message = chain.explain(self.settings, precision, result.delivered, result.attempts,
                                       result.float_layers, worst)
        return result


def export_run(run_dir: str | Path, formats: list[str], precisions: list[str],
               settings: ExportSettings | None = None, out: str | Path | None = None) -> dict:
    """Export a finished run; returns {"run_dir", "out", "float_val_accuracy", "notes", "artifacts": [...]}.

    `settings` (ExportSettings, its defaults when None): int8 is gated by default (`max_drop` pp of
    validation top-1 and `min_agreement`); `max_drop=None` turns the gate off and delivers the first
    recipe as it comes; `speed_gate=False` keeps an int8 that runs slower than fp32 on this host (still
    measured and recorded); `qat` "auto" (the gate's step before fp16), "force" or "off"."""
    from edgetl.export.calibration import calibration_for_run
    from edgetl.export.reference import load_reference

    settings = settings or ExportSettings()
    provenance.check_converters(formats)
    reference = load_reference(run_dir)
    out = Path(out) if out else reference.run.path / "export"
    out.mkdir(parents=True, exist_ok=True)
    calibration = None
    if "int8" in precisions:
        calibration = calibration_for_run(reference, settings.calib_size, settings.calibration_draw,
                                          settings.calib_data)
    session = Exporter(reference, out, calibration, settings)
    notes = []
    if "int8" in precisions and settings.gated:
        note = gate.resolution_note(len(session.validation), settings.max_drop)
        if note:
            warn(note)
            notes.append(note)
    try:
        results = [_export_one(session, fmt, precision) for fmt in formats for precision in precisions]
    finally:
        session.close()
    artifacts = [asdict(r) for r in results]
    for row, ratio in zip(artifacts, fp32_ratios(artifacts, "delivered", "latency_ms")):
        row["latency_ratio"] = ratio if ratio is not None else (row.get("speed") or {}).get("ratio")
    return {"run_dir": str(reference.run.path), "out": str(out),
            "float_val_accuracy": round(float((session.float_val.argmax(1) == session.validation.labels).mean()), 6),
            "max_drop": settings.max_drop, "min_agreement": settings.agreement_bound, "notes": notes,
            "artifacts": artifacts}


def _export_one(session: Exporter, fmt: str, precision: str) -> ArtifactResult:
    """One artifact of the session, with its progress line; a precision the format lacks is a failed row."""
    if precision not in FORMATS[fmt].precisions:
        return ArtifactResult(fmt, precision, status="failed", message=f"{fmt} does not offer {precision}")
    info(f"exporting {fmt} {precision} ...")
    row = session.export_one(fmt, precision)
    info(f"  {fmt}-{precision}: {row.status}"
         + (f", val accuracy {row.val_accuracy:.3f} (drop {row.drop_pp:+.2f} pp, agreement "
            f"{100 * row.agreement:.2f}%)" if row.val_accuracy is not None else f" ({row.message})"))
    return row


def _skipped(what: str, stage: str, why: str) -> dict:
    """The record of an attempt the gate did not run, and why."""
    return {"what": what, "stage": stage, "status": f"skipped: {why}"}
