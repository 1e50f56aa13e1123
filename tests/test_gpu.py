"""GPU paths: mixed precision, channels-last and compile on CUDA. Skipped where no GPU is visible (CI)."""

from __future__ import annotations

import pytest
import torch

from edgetl.train import TrainConfig, finetune

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_finetune_on_gpu(digits_dir, tmp_path, precision):
    summary = finetune(TrainConfig(data=str(digits_dir), model="efficientnet_lite0", out=str(tmp_path / precision),
                                   epochs=2, img_size=64, batch_size=32, lr=0.003, backbone_lr_mult=1.0,
                                   device="cuda", precision=precision))
    assert summary["config"]["device"] == "cuda" and summary["best_val_accuracy"] >= 0.5


def test_light_augmentation_on_the_gpu_learns_and_resumes_after_sigkill(digits_dir, tmp_path):
    """The training images on the GPU, crops, flips and colour cut there: it learns, and a run killed
    after epoch 1 and resumed replays the uninterrupted run's epochs (GPU kernels are not bitwise
    deterministic, so losses agree closely, not exactly)."""
    import json

    from conftest import kill_after_epochs, run_cli

    # 5 epochs at lr 0.003: on the CPU with --augment-on device this reached 0.5 (chance: 0.1).
    args = ["finetune", str(digits_dir), "--model", "efficientnet_lite0", "--epochs", "5", "--img-size", "64",
            "--batch-size", "32", "--lr", "0.003", "--backbone-lr-mult", "1.0", "--device", "cuda",
            "--augment", "light", "--patience", "0", "--seed", "4"]
    whole = run_cli(*args, "--out", str(tmp_path / "whole"), "--json", check=True)
    assert "training images on the CUDA as one tensor" in whole.stderr
    assert json.loads(whole.stdout)["best_val_accuracy"] >= 0.4
    killed = tmp_path / "killed"
    kill_after_epochs(args, killed, 1)
    run_cli("finetune", "--out", str(killed), "--resume", "--json", check=True)
    first = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in again] == [1, 2, 3, 4, 5]
    for a, b in zip(first, again):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05), (a, b)


def test_compiled_finetune_on_gpu(digits_dir, tmp_path):
    summary = finetune(TrainConfig(data=str(digits_dir), model="mobilenet_v3_small", pretrained=False,
                                   out=str(tmp_path / "c"), epochs=1, img_size=64, batch_size=32, device="cuda",
                                   compile=True))
    assert summary["epochs_run"] == 1 and summary["images_per_second"] > 0


def test_qat_on_gpu_trains_with_autocast_and_exports_int8(trained_run, tmp_path):
    """QAT on the GPU (fp32 with TF32, fake quantizers on CUDA), then its ONNX int8 from the learned ranges."""
    import shutil

    from edgetl.export import ExportSettings, export_run
    from edgetl.export.qat.loop import quantization_aware_finetune
    from edgetl.export.qat.settings import QatSettings

    run = tmp_path / "run"
    shutil.copytree(trained_run["run_dir"], run, ignore=shutil.ignore_patterns("export", "qat"))
    summary = quantization_aware_finetune(run, QatSettings(epochs=1, batch_size=16))
    assert summary["device"].startswith("cuda") and summary["precision"] == "tf32"
    report = export_run(run, ["onnx"], ["int8"], ExportSettings(
        qat="force", max_drop=None, qat_settings=QatSettings(epochs=1, batch_size=16)), out=tmp_path / "export")
    assert report["artifacts"][0]["delivered"] == "int8" and report["artifacts"][0]["status"] == "qat"
