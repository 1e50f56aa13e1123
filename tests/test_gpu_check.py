"""scripts/gpu_check.sh, the prepared GPU session (issue 16), run end to end at toy sizes on the CPU.

GPU time is minutes: the script must not fail on its first real run for a reason the CPU could
have shown. Same steps, same files, toy sizes (GPU_CHECK_SMALL=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_runs_every_step_and_writes_its_numbers(tmp_path):
    out = tmp_path / "gpu-check"
    env = {**os.environ, "GPU_CHECK_SMALL": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500)
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["env", "bench_train", "photos", "finetune", "torchrun", "qat"], steps
    assert result.returncode == 0, (steps, result.stderr[-3000:])
    bench = json.loads((out / "bench_train.json").read_text())
    assert bench and "synthetic" in json.dumps(bench)
    finetune = json.loads((out / "finetune.json").read_text())
    assert finetune["epochs_run"] == 2 and (out / "work" / "run" / "best.pt").is_file()
    assert json.loads((out / "torchrun.json").read_text())["world_size"] == 1
    exported = json.loads((out / "qat_export.json").read_text())
    int8 = [a for a in exported["artifacts"] if a["precision"] == "int8"]
    assert len(int8) == 1 and all(a["attempts"][0]["stage"] == "qat" for a in int8), int8  # toy size: ONNX
    assert json.loads((out / "qat_parity.json").read_text())["images"] > 0
