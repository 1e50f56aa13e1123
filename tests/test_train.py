"""Fine-tuning on real images: strategies, learning rates, BatchNorm, early stopping, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import json_out, kill_after_epochs, run_cli
from edgetl.backbones import create_model, get_spec
from edgetl.train import RunDir, TrainConfig, finetune
from edgetl.train.strategies import (
    apply_strategy,
    freeze_frozen_batchnorm,
    parameter_groups,
    set_bn_momentum,
    warmup_cosine,
)

FAST = ["--model", "mobilenet_v3_small", "--no-pretrained", "--img-size", "32", "--batch-size", "16",
        "--augment", "light", "--device", "cpu"]


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_strategies_freeze_what_they_claim():
    spec = get_spec("mobilenet_v3_small")
    model = create_model("mobilenet_v3_small", num_classes=5, pretrained=False)
    head = sum(p.numel() for p in model.get_submodule(spec.head).parameters())
    total = sum(p.numel() for p in model.parameters())
    top_stage = sum(p.numel() for path in spec.stages[-1] for p in model.get_submodule(path).parameters())

    assert apply_strategy(model, spec, "feature-extract", epoch=5) == head == _trainable(model)
    assert apply_strategy(model, spec, "finetune", epoch=0) == total
    assert apply_strategy(model, spec, "gradual", epoch=0) == head
    assert apply_strategy(model, spec, "gradual", epoch=1) == head + top_stage
    assert apply_strategy(model, spec, "gradual", epoch=3, unfreeze_every=2) == head + top_stage
    assert apply_strategy(model, spec, "gradual", epoch=99) == total


def test_frozen_batchnorm_keeps_its_statistics():
    spec = get_spec("mobilenet_v3_small")
    model = create_model("mobilenet_v3_small", num_classes=5, pretrained=False)
    apply_strategy(model, spec, "feature-extract", epoch=0)
    model.train()
    freeze_frozen_batchnorm(model)
    stem_bn = model.features[0][1]
    before = stem_bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not stem_bn.training and torch.equal(before, stem_bn.running_mean)


def test_discriminative_learning_rates_and_no_decay_on_norms():
    spec = get_spec("efficientnet_lite0")
    model = create_model("efficientnet_lite0", num_classes=5, pretrained=False)
    groups = {g["name"]: g for g in parameter_groups(model, spec, lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05)}
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["backbone-no-decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.05
    assert all(p.ndim == 1 for p in groups["backbone-no-decay"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_warmup_then_cosine():
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    values = [factor(step) for step in range(100)]
    assert values[0] < values[5] < values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] < 0.05


def test_bn_momentum_is_overridden():
    model = create_model("mobilenet_v3_small", num_classes=3, pretrained=False)  # torchvision uses 0.01
    assert set_bn_momentum(model, 0.1) > 10
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_finetune_writes_the_run_contract(trained_run):
    run = RunDir.open(trained_run["run_dir"])
    for path in (run.config, run.labels, run.preprocess, run.dataset, run.best, run.last, run.metrics,
                 run.summary, run.curves, run.confusion):
        assert path.is_file() and path.stat().st_size > 0, path
    for split in ("train", "val", "test"):
        assert (run.splits / f"{split}.txt").is_file()
    best = torch.load(run.best, weights_only=True)
    assert best["model_name"] == "efficientnet_lite0" and best["classes"] == run.read_labels()
    last = torch.load(run.last, weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng", "state"} <= set(last)
    assert run.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(run.read_metrics()) == trained_run["epochs_run"]
    pre = run.read_preprocess()
    assert pre.size == (32, 32) and pre.mean == pytest.approx((0.498,) * 3)
    # The held-out splits never overlap.
    sets = {s: set((run.splits / f"{s}.txt").read_text().splitlines()) for s in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])


def test_pretrained_finetune_learns_and_evaluation_is_not_collapsed(trained_run):
    """BatchNorm statistics follow the new data: evaluation accuracy tracks training accuracy."""
    metrics = RunDir(Path(trained_run["run_dir"])).read_metrics()
    assert trained_run["best_val_accuracy"] >= 0.6, metrics
    assert trained_run["test_accuracy"] >= 0.5
    last = metrics[-1]
    assert last["val_accuracy"] >= last["train_accuracy"] - 0.25, metrics


def test_config_yaml_reruns_the_same_run(trained_run, tmp_path):
    run = RunDir(Path(trained_run["run_dir"]))
    cfg = TrainConfig.from_yaml(run.config)
    assert cfg.epochs == 3 and cfg.model == "efficientnet_lite0" and cfg.strategy == "finetune"
    assert cfg.lr == 0.003 and cfg.img_size == 32


def test_early_stopping_stops(digits_dir, tmp_path):
    summary = finetune(TrainConfig(
        data=str(digits_dir), model="mobilenet_v3_small", pretrained=False, out=str(tmp_path / "r"), epochs=8,
        img_size=32, batch_size=16, lr=1e-9, warmup_epochs=0, patience=2, augment="none"))
    # With a learning rate of 1e-9 nothing improves after epoch 1: stop after 1 + patience epochs.
    assert summary["epochs_run"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1


def test_existing_run_is_not_overwritten(trained_run):
    result = run_cli("finetune", trained_run["config"]["data"], *FAST, "--epochs", "1", "--out", trained_run["run_dir"])
    assert result.returncode == 2 and "--resume" in result.stderr


@pytest.mark.slow
def test_resume_after_sigkill_ends_where_an_uninterrupted_run_would(digits_dir, tmp_path):
    args = ["finetune", str(digits_dir), *FAST, "--epochs", "5", "--patience", "0", "--seed", "3"]
    reference = run_cli(*args, "--out", str(tmp_path / "whole"), "--json", check=True)

    killed_dir = tmp_path / "killed"
    metrics = killed_dir / "metrics.jsonl"
    assert kill_after_epochs(args, killed_dir, 2) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_dir / "summary.json").exists()

    resumed = run_cli("finetune", "--out", str(killed_dir), "--resume", "--json", check=True)
    whole = [json.loads(l) for l in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert [m["epoch"] for m in again] == [1, 2, 3, 4, 5]
    for a, b in zip(whole, again):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5), (a, b)
        assert a["val_accuracy"] == b["val_accuracy"]
    assert json_out(resumed)["best_val_accuracy"] == json_out(reference)["best_val_accuracy"]


@pytest.mark.slow
def test_augmentation_on_the_device_resumes_after_sigkill_exactly(digits_dir, tmp_path):
    """The GPU path (training images as one device tensor, crops/flips/colour cut there), run on the
    CPU with --augment-on device: a run killed after epoch 1 and resumed replays the same crops."""
    args = ["finetune", str(digits_dir), "--model", "mobilenet_v3_small", "--no-pretrained", "--img-size", "32",
            "--batch-size", "16", "--epochs", "3", "--patience", "0", "--seed", "5", "--augment", "light",
            "--augment-on", "device"]
    whole = run_cli(*args, "--out", str(tmp_path / "whole"), check=True)
    assert "crops, flips and colour cut there" in whole.stderr
    killed = tmp_path / "killed"
    assert kill_after_epochs(args, killed, 1) == -signal.SIGKILL, "the run finished before it could be killed"
    run_cli("finetune", "--out", str(killed), "--resume", check=True)
    first = [json.loads(l) for l in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in again] == [1, 2, 3]
    for a, b in zip(first, again):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5), (a, b)
        assert a["val_accuracy"] == b["val_accuracy"]


def test_cli_json_contract(digits_dir, tmp_path):
    result = run_cli("finetune", str(digits_dir), *FAST, "--epochs", "1", "--strategy", "gradual",
                     "--out", str(tmp_path / "r"), "--json", check=True)
    data = json_out(result)
    for key in ("run_dir", "model", "classes", "epochs_run", "best_epoch", "best_val_accuracy", "test_accuracy",
                "images_per_second"):
        assert key in data, key
    assert data["model"] == "mobilenet_v3_small" and len(data["classes"]) == 10 and data["epochs_run"] == 1
    assert data["images_per_second"] > 0


def test_ddp_with_gloo_two_processes(digits_dir, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "edgetl", "finetune", str(digits_dir), *FAST, "--epochs", "2", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert len(RunDir(out).read_metrics()) == 2  # rank 0 alone wrote
    assert torch.load(out / "best.pt", weights_only=True)["num_classes"] == 10


def test_from_scratch_trains_the_backbone_at_the_heads_rate():
    """A random backbone gets the head's learning rate and full fine-tuning; ImageNet weights keep the recipe's."""
    from edgetl.backbones import get_spec
    from edgetl.train import TrainConfig

    recipe = get_spec("mobilenet_v3_large").recommended
    assert recipe.backbone_lr_mult < 1.0  # the recipe's discriminative rate, meant for ImageNet features
    scratch = TrainConfig(data="d", model="mobilenet_v3_large", out="o", pretrained=False).resolve()
    assert scratch.backbone_lr_mult == 1.0 and scratch.strategy == "finetune"
    pretrained = TrainConfig(data="d", model="mobilenet_v3_large", out="o").resolve()
    assert pretrained.backbone_lr_mult == recipe.backbone_lr_mult and pretrained.strategy == recipe.strategy
    chosen = TrainConfig(data="d", model="mobilenet_v3_large", out="o", pretrained=False, backbone_lr_mult=0.5).resolve()
    assert chosen.backbone_lr_mult == 0.5  # what the user asks for is kept


def test_precise_bn_recomputes_training_statistics_and_leaves_frozen_ones():
    """After an epoch the running statistics are an average over moving weights; precise BN replaces them
    with the plain average at the final weights, only for BatchNorms that train (frozen ones are eval mode)."""
    import contextlib

    from edgetl.train.precise_bn import recalibrate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4))
    model.train()
    for _ in range(3):
        model(torch.randn(8, 3, 12, 12) * 4 + 3)  # stale statistics from other inputs
    model[4].eval()  # a frozen stage's BatchNorm
    frozen_mean = model[4].running_mean.clone()
    batches = [(torch.randn(8, 3, 12, 12), None) for _ in range(3)]
    with torch.no_grad():
        features = torch.cat([model[0](x) for x, _ in batches])
    used = recalibrate(model, batches, lambda pixels, _jitter: pixels, contextlib.nullcontext, images=24)
    assert used == 24
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.equal(model[4].running_mean, frozen_mean) and model[1].momentum == 0.1


def test_from_scratch_recalibrates_batchnorm_and_pretrained_does_not():
    assert TrainConfig(data="d", model="mobilenet_v3_large", out="o", pretrained=False).resolve().precise_bn
    assert not TrainConfig(data="d", model="mobilenet_v3_large", out="o").resolve().precise_bn
    assert TrainConfig(data="d", model="mobilenet_v3_large", out="o", precise_bn=True).resolve().precise_bn


def test_the_loop_resumes_past_a_torn_metrics_line_and_reads_both_rng_forms(tmp_path):
    """A kill in mid-write leaves a torn last line in metrics.jsonl; last.pt's RNG is a list by rank, or
    one dict in a QAT run written before the shared loop: both resume, and the stream goes on as saved."""
    import random

    from edgetl.train import checkpoint
    from edgetl.train.distributed import DistInfo
    from edgetl.train.loop import EpochLoop, read_metrics

    loop = EpochLoop(tmp_path, DistInfo())
    loop.metrics.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_metrics(loop.metrics) == [{"epoch": 1}, {"epoch": 2}]
    random.seed(7)
    checkpoint.save(loop.last, {"state": {"epoch": 1}, "rng": checkpoint.all_rng_states(DistInfo())})
    expected = (random.random(), float(torch.rand(1)))
    saved = loop.saved()
    for rng in (saved["rng"], saved["rng"][0]):
        state = {"epoch": 0}
        loop.resume({**saved, "rng": rng}, state, "test")
        assert state["epoch"] == 1 and (random.random(), float(torch.rand(1))) == expected
    assert read_metrics(loop.metrics) == [{"epoch": 1}]
