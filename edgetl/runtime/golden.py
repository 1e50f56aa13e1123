"""Golden-sample check: does this runtime, with this sidecar, reproduce the float model? No torch.

Shared by export (before publishing), parity (on the host) and the device self-test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.runtime.base import Runner


def check_golden(runner: Runner, folder: str | Path) -> dict:
    """Run the stored golden images through `runner`; every top-1 must match the float model's."""
    folder = Path(folder)
    results = []
    for sample in runner.sidecar.golden:
        logits = runner.infer(runner.preprocess(folder / sample.file))[0]
        got = int(np.argmax(logits))
        results.append({"file": sample.file, "expected": runner.labels[sample.top1], "got": runner.labels[got],
                        "match": got == sample.top1,
                        "max_logit_error": round(float(np.max(np.abs(logits - np.asarray(sample.logits)))), 5)})
    passed = bool(results) and all(r["match"] for r in results)
    return {"passed": passed, "samples": results, "matched": sum(r["match"] for r in results), "total": len(results)}
