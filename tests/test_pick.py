"""`edgetl deploy --pick fastest --max-drop PP`: candidates measured on the device, the fastest activated.

Real exported artifacts, real `edgetl parity` summaries, a real local install of every candidate
(its own venv from bundled wheels, self-test, on-device bench): the device is this machine.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import artifact, json_out, run_cli
from edgetl.deploy.local import LocalDevice, current_release, releases

pytestmark = pytest.mark.slow


def test_pick_fastest_measures_each_candidate_on_the_device_and_ships_the_fastest(exported, trained_run, tmp_path):
    folder = tmp_path / "export"
    for fmt, precision in (("onnx", "int8"), ("tflite", "int8"), ("onnx", "fp32"), ("openvino", "fp32")):
        shutil.copytree(artifact(exported, fmt, precision)["path"], folder / f"{fmt}-{precision}")
        (folder / f"{fmt}-{precision}" / "parity.json").unlink(missing_ok=True)
    measured = [str(folder / name) for name in ("onnx-int8", "tflite-int8", "onnx-fp32")]
    run_cli("parity", trained_run["run_dir"], *[a for p in measured for a in ("--artifacts", p)], "--max-drop", "100",
            "--report", str(tmp_path / "report"), check=True)
    too_lossy = folder / "onnx-fp32" / "parity.json"  # say it lost 5 pp: it must be left out, never measured
    too_lossy.write_text(json.dumps({**json.loads(too_lossy.read_text()), "drop_pp": 5.0}))

    box = tmp_path / "box"
    result = json_out(run_cli("deploy", str(folder), "--profile", "linux-x86", "--local", str(box), "--pick", "fastest",
                              "--max-drop", "1.0", "--samples", "6", "--json", check=True))
    pick = result["pick"]
    assert sorted(m["artifact"] for m in pick["measured"]) == ["onnx-int8", "tflite-int8"]
    assert all(m["p50_ms"] > 0 and m["accuracy"] is not None for m in pick["measured"])
    fastest = min(pick["measured"], key=lambda m: m["p50_ms"])["artifact"]
    assert pick["chosen"] == fastest
    assert {x["artifact"]: x["reason"].split(":")[0].split(" ")[0] for x in pick["left_out"]} == \
        {"onnx-fp32": "drop", "openvino-fp32": "no"}
    # The fastest is current and served; the other candidate's release is gone (this command made it).
    assert current_release(box) == result["release"] and releases(LocalDevice(), str(box.resolve())) == [result["release"]]
    model = json.loads((box / "current" / "manifest.json").read_text())["artifact"]
    assert f"{model['format']}-{model['precision']}" == fastest
    assert result["self_test"]["passed"]


def test_pick_needs_one_device_and_a_candidate(exported, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(artifact(exported, "onnx", "fp32")["path"], folder / "onnx-fp32")
    (folder / "onnx-fp32" / "parity.json").unlink(missing_ok=True)
    offline = run_cli("deploy", str(folder), "--profile", "linux-x86", "--bundle-only", str(tmp_path / "b.tar.gz"),
                      "--pick", "fastest")
    assert offline.returncode == 2 and "--pick measures on the device" in offline.stderr
    none = run_cli("deploy", str(folder), "--profile", "linux-x86", "--local", str(tmp_path / "box"), "--pick",
                   "fastest")
    assert none.returncode == 1 and "no parity.json" in none.stderr and not (tmp_path / "box" / "current").exists()


def test_threads_best_writes_the_self_tests_fastest_into_the_service(exported, tmp_path):
    from edgetl.deploy.selftest import thread_counts

    box = tmp_path / "box"
    result = json_out(run_cli("deploy", artifact(exported, "onnx", "fp32")["path"], "--profile", "linux-x86",
                              "--local", str(box), "--threads", "best", "--samples", "4", "--json", check=True))
    sweep = {row["threads"]: row["p50_ms"] for row in result["threads_sweep"]}
    assert sorted(sweep) == thread_counts() and all(p50 > 0 for p50 in sweep.values())
    assert result["recommended_threads"] == min(sweep, key=sweep.get) == result["service_threads"]
    unit = (box / "edgetl.service").read_text()
    assert f'"--threads" "{result["recommended_threads"]}"' in unit
    fixed = json_out(run_cli("deploy", artifact(exported, "onnx", "fp32")["path"], "--profile", "linux-x86",
                             "--local", str(box), "--threads", "1", "--samples", "4", "--json", check=True))
    assert fixed["service_threads"] == 1 and '"--threads" "1"' in (box / "edgetl.service").read_text()
    bad = run_cli("deploy", artifact(exported, "onnx", "fp32")["path"], "--profile", "linux-x86", "--local",
                  str(box), "--threads", "fast")
    assert bad.returncode == 2 and "'--threads': 'fast' is not a whole number >= 1 or best" in bad.stderr


def test_thread_counts_double_up_to_the_cores():
    from edgetl.deploy.selftest import thread_counts

    assert thread_counts(1) == [1] and thread_counts(2) == [1, 2] and thread_counts(6) == [1, 2, 4, 6]
