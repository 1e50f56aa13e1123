"""`edgetl demo`, the first command a newcomer runs, end to end exactly as the README gives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_the_demo_runs_end_to_end_and_every_step_holds(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path / "demo"), "--json", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["finetune"]["test_accuracy"] > 0.8, summary["finetune"]
    assert {(r["format"], r["precision"]) for r in summary["export"]} == {
        (f, p) for f in ("onnx", "openvino", "tflite") for p in ("fp32", "int8")}
    assert all(r["delivered"] for r in summary["export"]), summary["export"]
    assert summary["parity"]["passed"], summary["parity"]
    assert Path(summary["parity"]["report"]["png"]).is_file()
    assert all(Path(p).is_file() for p in summary["bench"]["figures"].values())
    assert summary["run"]["frames"] > 0 and summary["run"]["accuracy"] > 0.8
    deployed = summary["deploy"]
    assert deployed["self_test"]["passed"] and (tmp_path / "demo" / "device" / "current").is_symlink()
