"""`edgetl parity`: every artifact against the float model on the same held-out images.

The artifacts run through `edgetl.runtime`, the same torch-free code the device
runs, each with the preprocessing its own sidecar declares. Two checks come
before accuracy, so that a broken pipeline is named as such instead of showing
up as "low accuracy":

- the sidecar's preprocessing against the run's (size, resize, crop, mean, std,
  colour order): any difference is a *preprocessing mismatch*;
- the golden samples stored in the artifact must reproduce what the artifact
  answered at export (a mismatch there with identical preprocessing is a
  *runtime mismatch*; an int8 top-1 that differs from the float one is
  quantization error, counted in the drop, not a runtime fault).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.console import info, warn
from edgetl.contract.artifact import int8_over_fp32
from edgetl.contract.sidecar import SIDECAR_NAME
from edgetl.errors import BadInputError, CheckFailedError
from edgetl.evaluation import ImageCache, compare, confidence_tradeoff, runner_logits
from edgetl.runtime import load as load_runner

COMPARED_FIELDS = ("size", "resize", "crop_ratio", "interpolation", "mean", "std", "color_order")


def find_artifacts(run_dir: Path, paths: list[str] | None) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    found = sorted(p.parent for p in (run_dir / "export").glob(f"*/{SIDECAR_NAME}"))
    if not found:
        raise BadInputError(f"no exported artifacts under {run_dir / 'export'}",
                            f"run `edgetl export {run_dir}` first, or pass --artifacts PATH")
    return found


def preprocessing_differences(run_pre, sidecar_pre) -> list[str]:
    problems = []
    for name in COMPARED_FIELDS:
        expected, actual = getattr(run_pre, name), getattr(sidecar_pre, name)
        if isinstance(expected, tuple):
            same = len(expected) == len(actual) and np.allclose(expected, actual, atol=1e-6)
        else:
            same = expected == actual
        if not same:
            problems.append(f"{name} {list(actual) if isinstance(actual, tuple) else actual!r} "
                            f"(training used {list(expected) if isinstance(expected, tuple) else expected!r})")
    return problems


def _held_out(reference, data: str | None, split: str | None = None) -> tuple[ImageCache, np.ndarray, str]:
    if data:
        from edgetl.data.folder import scan_image_folder

        folder = scan_image_folder(data)
        unknown = sorted(set(folder.classes) - set(reference.labels))
        if unknown:
            raise BadInputError(f"{data} has classes the model does not know: {', '.join(unknown)}")
        samples = folder.all_samples()
        index = {name: i for i, name in enumerate(reference.labels)}
        return (ImageCache(folder.root, [s.path for s in samples]),
                np.array([index[s.label] for s in samples]), f"folder {data}")
    for name in (split,) if split else ("test", "val"):
        cache, labels = reference.split_images(name)
        if len(labels):
            return cache, labels, f"{name} split"
    raise BadInputError(f"the run has no {split + ' ' if split else 'held-out '}images", "pass --data DIR")


def run_parity(run_dir: str | Path, data: str | None = None, artifacts: list[str] | None = None,
               max_drop: float | None = 1.0, report_dir: str | Path | None = None, threads: int | None = None,
               split: str | None = None) -> dict:
    """Every artifact against the float model on the same held-out images (`split`: test, else val; or
    the folder `data`), with what --min-confidence would cost each (confidence_tradeoff)."""
    from edgetl.export.reference import load_reference
    from edgetl.parity.report import write_report
    from edgetl.runtime.golden import check_golden

    reference = load_reference(run_dir)
    paths = find_artifacts(reference.run.path, artifacts)
    cache, labels, source = _held_out(reference, data, split)
    float_logits = reference.logits(cache.pixels(reference.preprocess))
    if cache.unreadable:
        warn(f"{len(cache.unreadable)} held-out image(s) could not be read, e.g. {cache.unreadable[0]}")
    float_accuracy = float(np.mean(float_logits.argmax(1) == labels))
    info(f"parity on {len(labels)} images ({source}); float accuracy {float_accuracy:.4f}")
    rows = []
    for path in paths:
        row = {"path": str(path), "format": None, "precision": None, "status": "ok"}
        try:
            runner = load_runner(path, threads=threads)
        except Exception as exc:
            row.update(status="error", error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        sidecar = runner.sidecar
        row.update(format=sidecar.format, precision=sidecar.precision)
        differences = preprocessing_differences(reference.preprocess, sidecar.preprocess)
        golden = check_golden(runner, runner.model_path.parent)
        logits = runner_logits(runner, cache.pixels(sidecar.preprocess))
        metrics = compare(float_logits, logits, labels, reference.labels)
        row.update({k: v for k, v in metrics.items() if k not in ("float_accuracy",)})
        row["golden"] = {k: golden[k] for k in ("passed", "matched", "float_matched", "total")}
        if sidecar.sensitivity:  # int8 asked: delivered, or fallen back (then it says what held int8 back)
            row["sensitivity"] = sidecar.sensitivity.get("layers", [])
            row["float_layers"] = sidecar.sensitivity.get("float_layers", [])
            row["sensitivity_method"] = {k: sidecar.sensitivity.get(k) for k in ("method", "split", "images")}
        row["int8_over_fp32"] = int8_over_fp32(sidecar)
        row["confidence"] = confidence_tradeoff(logits, labels)
        row["changed_images"] = [cache.paths[i] for i in metrics["changed"]]
        if differences:
            row.update(status="preprocessing mismatch", detail="; ".join(differences))
        elif not golden["passed"]:
            row.update(status="runtime mismatch",
                       detail=f"golden samples reproduce the artifact's export-time top-1 in "
                              f"{golden['matched']}/{golden['total']}")
        elif max_drop is not None and metrics["drop_pp"] > max_drop:
            row.update(status="too much drop", detail=f"{metrics['drop_pp']:.2f} pp > --max-drop {max_drop}")
        rows.append(row)
        _write_summary(runner.model_path.parent, row, source, len(labels), float_accuracy)
    passed = all(r["status"] == "ok" for r in rows)
    result = {
        "run_dir": str(reference.run.path), "images": int(len(labels)), "source": source,
        "float": {"accuracy": round(float_accuracy, 6), "confidence": confidence_tradeoff(float_logits, labels)},
        "artifacts": rows, "max_drop": max_drop, "passed": passed,
    }
    report = Path(report_dir) if report_dir else reference.run.path / "parity"
    result["report"] = write_report(result, reference.labels, report)
    return result


def _write_summary(folder: Path, row: dict, source: str, images: int, float_accuracy: float) -> None:
    """The artifact's own copy of its result (contract/artifact.py), read by bench and the device."""
    from edgetl import atomic
    from edgetl.contract.artifact import PARITY_FILE

    atomic.write_json(folder / PARITY_FILE, {
        "split": source, "images": images, "float_accuracy": round(float_accuracy, 6),
        **{k: row.get(k) for k in ("accuracy", "drop_pp", "agreement", "status", "int8_over_fp32")}})


def gate(result: dict) -> None:
    """Raise CheckFailedError (exit 1) naming every artifact that failed."""
    failed = [r for r in result["artifacts"] if r["status"] != "ok"]
    if failed:
        from edgetl.parity.report import artifact_name

        names = ", ".join(f"{artifact_name(r)} ({r['status']})" for r in failed)
        raise CheckFailedError(f"parity failed for {names}", f"see {result['report']['markdown']}")
