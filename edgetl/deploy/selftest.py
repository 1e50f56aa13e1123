"""The on-device self-test of a release: integrity, golden samples, latency, accuracy. No torch.

Run by deploy inside the release's own environment (`edgetl selftest RELEASE_DIR`), so it
exercises exactly what the device will run: the bundle's files against their manifest,
the golden samples against the artifact's answers on the export host (a
preprocessing or runtime mismatch on the device is caught here), an on-device bench, and accuracy on
the bundled held-out images. Around the bench it reads the device's state (`device: {"before",
"after"}`) and records as `warnings` what slowed it (throttling, a falling clock, heat, a governor
that is not `performance`), printed on stderr too, so a slow device is told from a slow model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from edgetl.bench.measure import bench_model
from edgetl.console import warn
from edgetl.contract.artifact import LABELS_FILE, SAMPLES_DIR, read_parity, read_samples
from edgetl.deploy.bundle import MANIFEST, verify_bundle
from edgetl.errors import BadInputError
from edgetl.runtime import load
from edgetl.runtime.golden import check_golden

ACCURACY_P_FLOOR = 0.001  # a device this far below the recorded accuracy is not bad luck


def self_test(release: str | Path, threads: int | None = None, runs: int = 50) -> dict:
    release = Path(release)
    if not (release / MANIFEST).is_file():
        raise BadInputError(f"{release} is not an edgetl release (no {MANIFEST})")
    manifest = json.loads((release / MANIFEST).read_text())
    threads = threads or manifest["profile"].get("threads")
    result: dict = {"release": manifest["bundle"], "passed": False}
    corrupt = verify_bundle(release)
    result["integrity"] = {"passed": not corrupt, "mismatched": corrupt}
    if corrupt:
        result["reason"] = f"{len(corrupt)} file(s) differ from the manifest, e.g. {corrupt[0]}"
        return result
    # The profile's execution device: on a Jetson this is TensorRT, whose engine is built and cached here.
    device = manifest["profile"].get("execution_device")
    device = None if str(device).lower() == "cpu" else device
    runner = load(release / "model", threads=threads, device=device)
    golden = check_golden(runner, release / "model")
    result["golden"] = golden
    held_out = _held_out_accuracy(runner, release)
    if held_out is not None:
        result.update(accuracy=held_out["observed"], samples=held_out["samples"], accuracy_check=held_out)
    bench = bench_model(release / "model", threads=threads, runs=runs, warmup=5, device=device)
    result["device"], result["warnings"] = bench["device"], bench["warnings"]
    for message in result["warnings"]:
        warn(message)
    result["bench"] = {k: bench[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "fps", "rss_peak_mb",
                                             "load_ms", "threads")}
    result["threads_sweep"] = thread_sweep(release / "model", device, bench, runs=max(10, runs // 2))
    result["recommended_threads"] = min(result["threads_sweep"], key=lambda row: row["p50_ms"])["threads"]
    result["passed"] = golden["passed"] and (held_out is None or held_out["passed"])
    if not golden["passed"]:
        result["reason"] = (f"golden samples reproduce the host's top-1 in {golden['matched']}/{golden['total']}: "
                            "the runtime or preprocessing on this device differs from the one parity verified")
    elif not result["passed"]:
        result["reason"] = (f"held-out accuracy here is {100 * held_out['observed']:.1f}% "
                            f"({held_out['correct']}/{held_out['samples']}), below the artifact's "
                            f"{100 * held_out['expected']:.1f}% ({held_out['against']}) by more than chance allows "
                            f"(p = {held_out['p_value']:.2g}): the device classifies differently from the host")
    return result


def _held_out_accuracy(runner, release: Path) -> dict | None:
    """Accuracy on the bundle's held-out photos (else on all the artifact carries), checked against the
    accuracy the artifact recorded (parity on the test split, else the export's validation)."""
    samples = release / "samples"
    labels = read_samples(release) if (samples / LABELS_FILE).is_file() else read_samples(release / "model")
    if not (samples / LABELS_FILE).is_file():
        samples = release / "model" / SAMPLES_DIR
    if not labels:
        return None
    names = sorted(labels)
    predicted = [top[0][0] for top in runner.classify([samples / n for n in names], topk=1)]
    correct = sum(p == labels[n] for p, n in zip(predicted, names))
    expected, against = _recorded_accuracy(runner.sidecar, release / "model")
    return {"observed": round(correct / len(names), 6), "correct": correct, "samples": len(names),
            **accuracy_holds(correct, len(names), expected), "against": against}


def _recorded_accuracy(sidecar, artifact: Path) -> tuple[float | None, str | None]:
    """The artifact's own accuracy record, read as untrusted input: a number in [0, 1] or nothing."""
    parity = read_parity(artifact) or {}
    validation = sidecar.validation if isinstance(sidecar.validation, dict) else {}
    for record, where in ((parity, "parity, test split"), (validation, "export, val split")):
        value, images = record.get("accuracy"), record.get("images")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            if isinstance(images, int) and not isinstance(images, bool) and images > 0:
                value = (value * images + 0.5) / (images + 1)  # 800 of 800 is not a promise of 100%
            return float(value), where
    return None, None


def accuracy_holds(correct: int, total: int, expected: float | None, p_floor: float = ACCURACY_P_FLOOR) -> dict:
    """Whether `correct` of `total` is consistent with an accuracy of `expected`: fails only when a result
    this low or lower has probability below `p_floor` (one-sided binomial), so the tolerance follows
    the number of photos (30 photos at 90% still pass with 24 right; 15 right fail)."""
    if expected is None or total == 0:
        return {"expected": expected, "p_value": None, "passed": True}
    p_value = sum(math.comb(total, k) * expected ** k * (1 - expected) ** (total - k) for k in range(correct + 1))
    return {"expected": round(expected, 6), "p_value": round(min(1.0, p_value), 6), "passed": p_value >= p_floor}


def thread_counts(cores: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the cores this process may use (and that count itself)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    return sorted({*counts, cores})


def thread_sweep(model: Path, device: str | None, measured: dict, runs: int) -> list[dict]:
    """p50 at each thread count (the one already measured reused): on a Pi, fewer threads than cores is
    often faster and steadier, which only the device can say."""
    rows = {measured["threads"]: measured["p50_ms"]} if measured.get("threads") else {}
    for count in thread_counts():
        if count not in rows:
            rows[count] = bench_model(model, threads=count, runs=runs, warmup=3, device=device)["p50_ms"]
    return [{"threads": count, "p50_ms": p50} for count, p50 in sorted(rows.items())]
