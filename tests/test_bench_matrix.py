"""scripts/bench_matrix.py at toy size: the page, the JSON and the figure, and a resumed second call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_matrix_writes_page_json_and_figure_and_resumes(digits_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_matrix

    argv = ["--models", "mobilenet_v3_small", "--data", str(digits_dir), "--size", "32", "--epochs", "1",
            "--formats", "onnx", "--precisions", "fp32,int8", "--threads", "1", "--rounds", "1", "--runs", "3",
            "--max-drop", "none", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert bench_matrix.main(argv) == 0
    page = (tmp_path / "out" / "matrix.md").read_text()
    rows = json.loads((tmp_path / "out" / "matrix.json").read_text())["rows"]
    assert [(r["format"], r["precision"], r["delivered"]) for r in rows] == [("onnx", "fp32", "fp32"),
                                                                            ("onnx", "int8", "int8")]
    assert rows[0]["vs_fp32_1t"] == 1.0 and rows[1]["vs_fp32_1t"] > 0 and rows[1]["test_images"] > 0
    assert "| mobilenet_v3_small |" in page and "Machine:" in page and "bench_matrix.py --models" in page
    assert (tmp_path / "out" / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = tmp_path / "work" / "run-mobilenet_v3_small" / "summary.json"
    trained = summary.stat().st_mtime_ns
    cached = tmp_path / "work" / "rows-mobilenet_v3_small.json"
    cached.write_text(json.dumps([{**rows[0], "export_seconds": 12345.0}, rows[1]]))  # the kept rows are reused
    assert bench_matrix.main(argv) == 0
    assert summary.stat().st_mtime_ns == trained
    assert "12345.0" in (tmp_path / "out" / "matrix.md").read_text()
