"""Golden-sample check: does this runtime, with this sidecar, reproduce the artifact? No torch.

Shared by export (before publishing), parity (on the host) and the device self-test.
Each stored image goes through the sidecar's preprocessing and this runtime; its top-1
must equal what the artifact answered on the export host (`artifact_top1`). That
separates the two questions users ask: a device that answers differently from the
host is a runtime or preprocessing fault (`passed` false), while an int8 artifact that
differs from the float model is quantization error, reported as `float_matched` and
measured properly by parity's accuracy drop. Sidecars written before `artifact_top1`
existed are checked against the float top-1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from edgetl.contract.sidecar import GoldenSample
from edgetl.runtime.base import Runner


def _answers(runner: Runner, folder: Path) -> Iterator[tuple[GoldenSample, np.ndarray]]:
    for sample in runner.sidecar.golden:
        yield sample, runner.infer(runner.preprocess(folder / sample.file))[0]


def _summary(runner: Runner, answers) -> dict:
    results = []
    for sample, logits in answers:
        got = int(np.argmax(logits))
        expected = sample.top1 if sample.artifact_top1 is None else sample.artifact_top1
        reference = sample.logits if sample.artifact_logits is None else sample.artifact_logits
        results.append({"file": sample.file, "expected": runner.labels[expected], "got": runner.labels[got],
                        "float": runner.labels[sample.top1], "match": got == expected,
                        "float_match": got == sample.top1,
                        "max_logit_error": round(float(np.max(np.abs(logits - np.asarray(reference)))), 5)})
    passed = bool(results) and all(r["match"] for r in results)
    return {"passed": passed, "samples": results, "matched": sum(r["match"] for r in results),
            "float_matched": sum(r["float_match"] for r in results), "total": len(results)}


def check_golden(runner: Runner, folder: str | Path) -> dict:
    """Run the stored golden images through `runner`; every top-1 must match the artifact's reference."""
    return _summary(runner, _answers(runner, Path(folder)))


def record_reference(runner: Runner, folder: str | Path) -> dict:
    """Store in the runner's sidecar what this artifact answers for each golden image (export time).

    Returns check_golden's summary of those answers. The answers being recorded cannot check
    themselves, so here `passed` means every golden image got the float model's top-1: golden
    images are chosen far from a decision boundary, and missing one at export is a fault.
    """
    answers = list(_answers(runner, Path(folder)))
    for sample, logits in answers:
        sample.artifact_top1 = int(np.argmax(logits))
        sample.artifact_logits = [round(float(v), 5) for v in logits]
    summary = _summary(runner, answers)
    summary["passed"] = summary["total"] > 0 and summary["float_matched"] == summary["total"]
    return summary
