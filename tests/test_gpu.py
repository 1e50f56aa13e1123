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


def test_compiled_finetune_on_gpu(digits_dir, tmp_path):
    summary = finetune(TrainConfig(data=str(digits_dir), model="mobilenet_v3_small", pretrained=False,
                                   out=str(tmp_path / "c"), epochs=1, img_size=64, batch_size=32, device="cuda",
                                   compile=True))
    assert summary["epochs_run"] == 1 and summary["images_per_second"] > 0


def test_qat_on_gpu_trains_with_autocast_and_exports_int8(trained_run, tmp_path):
    """QAT on the GPU (autocast, fake quantizers on CUDA), then its ONNX int8 from the learned ranges."""
    import shutil

    from edgetl.export import export_run
    from edgetl.train.qat import QatSettings, quantization_aware_finetune

    run = tmp_path / "run"
    shutil.copytree(trained_run["run_dir"], run, ignore=shutil.ignore_patterns("export", "qat"))
    summary = quantization_aware_finetune(run, QatSettings(epochs=1, batch_size=16))
    assert summary["device"].startswith("cuda") and summary["precision"] in ("bf16", "fp16")
    report = export_run(run, ["onnx"], ["int8"], qat="force", max_drop=None, out=tmp_path / "export",
                        qat_settings=QatSettings(epochs=1, batch_size=16))
    assert report["artifacts"][0]["delivered"] == "int8" and report["artifacts"][0]["status"] == "qat"
