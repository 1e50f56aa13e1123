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
