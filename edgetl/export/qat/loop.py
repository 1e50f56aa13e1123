"""Quantization-aware fine-tuning: a short run from the best float checkpoint, with int8 fake quantization.

Post-training quantization cannot always reach float accuracy; a few epochs with
the int8 rounding in the forward pass let the weights and ranges adapt to it. The
recipe (docs/qat.md gives the measurements behind each choice):

- the graph of `graph.py`, ranges calibrated on `calib_images` train images,
  then tracked by the fake quantizers' moving averages;
- distillation from the float model (KL at temperature 2, plus a layer-wise
  loss, `targets.py`) on the run's train split with its augmentation, each batch
  mixed up with itself: the goal is an int8 model that agrees with the float one,
  which is what the gate and parity measure;
- every weight within half an int8 grid step of its float value, BatchNorm folded
  and frozen, the classifier head kept as the float model's (`steps.py`);
- validation after every epoch, the calibrated start (epoch 0) included, and the
  student closest to float kept (`keep_if_better`).

The epochs run on the shared loop (`edgetl.train.loop`): `RUN_DIR/qat/` holds
`last.pt` (resumable after kill -9), `best.pt`, `metrics.jsonl` and `summary.json`.
GPU in fp32 with TF32 tensor cores where present, CPU otherwise; DDP under
`torchrun`. A QAT whose settings and float checkpoint are unchanged is reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from edgetl import atomic
from edgetl.console import info, progress_bar
from edgetl.contract.run_dir import RunDir
from edgetl.errors import require
from edgetl.export.qat import graph
from edgetl.export.qat.settings import QatSettings
from edgetl.export.qat.steps import RoundingNeighbourhood, build_optimizer, distillation_loss
from edgetl.train import checkpoint
from edgetl.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from edgetl.train.loop import EpochLoop, EpochSteps

QAT_DIR = "qat"
SUMMARY = "summary.json"
VERSION = 12  # bumped when the QAT graph or procedure changes
SEED_OFFSET = 1000  # QAT's random stream differs from the fine-tune's of the same seed

# Agreement differences up to this (as a fraction) are the noise of near-tie images, not a better student.
AGREEMENT_NOISE = 0.01
_NOISE_BAND = AGREEMENT_NOISE + 1e-9  # 8 of 800 images is noise, not float rounding's 1e-17 more


def qat_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / QAT_DIR


def settings_key(run: RunDir, settings: QatSettings) -> dict:
    """What a QAT result depends on: the float checkpoint and every setting."""
    from edgetl.contract.sidecar import sha256_file

    return {"version": VERSION, "checkpoint_sha256": sha256_file(run.best), **asdict(settings)}


def finished(run_dir: str | Path, settings: QatSettings) -> dict | None:
    """The summary of a finished QAT with these settings on this checkpoint, or None."""
    run = RunDir.open(run_dir)
    path = qat_dir(run.path) / SUMMARY
    if not path.is_file() or not (qat_dir(run.path) / "best.pt").is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("key") == settings_key(run, settings) else None


def quantization_aware_finetune(run_dir: str | Path, settings: QatSettings = QatSettings()) -> dict:
    """Run (or resume, or reuse) QAT on a run; returns the summary written to RUN_DIR/qat/summary.json."""
    torch = require("torch", "train", "quantization-aware training")
    from edgetl.train.trainer import autocast_factory, load_run_config

    settings.validate()
    run = RunDir.open(run_dir)
    done = finished(run.path, settings)
    if done is not None:
        info(f"QAT up to date: {qat_dir(run.path)} (best epoch {done['best_epoch']})")
        return done
    cfg = load_run_config(run.path)
    device_type = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    # No autocast: a fake quantizer rounds to 256 levels and bf16 keeps 8 significant bits. fp32 with
    # TF32 tensor cores: 10-bit mantissas in the products, fp32 everywhere else.
    precision = "tf32" if device_type == "cuda" else "fp32"
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dist = init_distributed(device_type)
    try:
        device = torch.device(device_type, dist.local_rank) if device_type == "cuda" else torch.device("cpu")
        torch.manual_seed(cfg.seed + SEED_OFFSET + dist.rank)
        return _run(run, cfg, settings, dist, device, autocast_factory(device_type, "fp32"), precision)
    finally:
        shutdown(dist)


def _run(run: RunDir, cfg, settings: QatSettings, dist: DistInfo, device, autocast, precision: str) -> dict:
    from edgetl.export.qat.data import QatData

    folder = qat_dir(run.path)
    folder.mkdir(exist_ok=True)
    started = time.perf_counter()
    data = QatData.load(run, cfg, settings, dist, device)
    epochs = _QatEpochs(data, settings, dist, device, autocast, settings_key(run, settings))
    loop = EpochLoop(folder, dist)
    saved = loop.saved()
    if saved is not None and saved.get("key") == epochs.key:
        graph.load_state(epochs.student, saved["model"])
        loop.resume(saved, epochs.state, f"QAT in {folder}")
    else:
        saved = None
        loop.reset(SUMMARY)
        epochs.calibrate(loop)
    epochs.start_training(saved)
    state = loop.run(settings.epochs, epochs.state, epochs.steps())
    summary = {"run_dir": str(run.path), "qat_dir": str(folder), "key": epochs.key, "settings": asdict(settings),
               "best_epoch": state["best_epoch"], "best": state["best"], "float_val_accuracy": data.float_accuracy,
               "device": str(device), "precision": precision, "world_size": dist.world_size,
               "images_per_second": round(state["images"] / max(state["seconds"], 1e-9), 1),
               "seconds": round(time.perf_counter() - started, 2)}
    if dist.is_main:
        atomic.write_json(folder / SUMMARY, summary)
    barrier(dist)
    return summary


class _QatEpochs:
    """One QAT run's student, teacher data and optimiser, and its epoch steps for the shared loop."""

    def __init__(self, data, settings: QatSettings, dist: DistInfo, device, autocast, key: dict):
        self.data, self.settings, self.dist, self.device, self.autocast, self.key = \
            data, settings, dist, device, autocast, key
        self.student = graph.prepare(data.float_export_model(), data.image_size).to(device)
        self.bound = RoundingNeighbourhood(self.student, settings.weight_bound)  # the float weights, before any step
        self.features = None
        if settings.feature_weight > 0:
            from edgetl.export.qat.targets import FeatureTargets

            self.features = FeatureTargets(self.student, data.float_export_model(), data.image_size, device)
        self.state = {"epoch": 0, "best": None, "best_epoch": 0, "top_agreement": 0.0, "seconds": 0.0, "images": 0}
        self.optimizer = self.scheduler = self.scaled = self.forward = None

    def calibrate(self, loop: EpochLoop) -> None:
        """A fresh start: ranges calibrated, and the calibrated student measured and kept as epoch 0."""
        data = self.data
        data.calibrate(self.student, self.settings.calib_images, self.autocast)
        before = data.validate(self.student, self.autocast)
        info(f"QAT: {data.describe()}; calibrated fake-quant val accuracy {before['accuracy']:.3f}, "
             f"agreement with float {100 * before['agreement']:.2f}%, logit SQNR {before['sqnr_db']:.2f} dB")
        loop.log({"epoch": 0, **before})
        # The calibrated start is a candidate too: training that moves the student away from float is not kept.
        self.state.update(best=before, best_epoch=0, top_agreement=before["agreement"])
        loop.save_best(self.best_payload(0, before))

    def start_training(self, saved: dict | None) -> None:
        """The optimiser (after calibration or loading: learned ranges start from those scales), and DDP."""
        self.optimizer, self.scheduler, self.scaled = build_optimizer(self.student, self.data, self.settings)
        if saved is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        self.forward = self.student
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                self.student, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)

    def steps(self) -> EpochSteps:
        return EpochSteps(train=self.train_epoch, evaluate=self.evaluate, keep=keep_if_better, line=self.line,
                          report=self.report, best=self.best_payload, last=self.last_payload)

    def _observe(self, epoch: int) -> None:
        """Ranges track until frozen; learned ranges (range_lr) and bounded weights are written by no observer."""
        settings = self.settings
        graph.train_mode(self.student)
        graph.observers(self.student, settings.range_lr is None and (settings.freeze_observers_after is None
                                                                     or epoch < settings.freeze_observers_after))
        if self.bound.steps is not None:
            graph.weight_observers(self.student, False)

    def train_epoch(self, epoch: int) -> dict:
        import torch

        settings = self.settings
        self._observe(epoch)
        started = time.perf_counter()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss x images, images
        with progress_bar(f"QAT epoch {epoch + 1}/{settings.epochs}", self.data.steps_per_epoch) as advance:
            for inputs, teacher_logits in self.data.train_batches(epoch, settings.mixup):
                loss = distillation_loss(self.forward, self.optimizer, self.autocast, inputs, teacher_logits,
                                         settings.temperature, self.features, settings.feature_weight)
                with self.scaled:
                    self.optimizer.step()
                self.bound()
                self.scheduler.step()
                sums += torch.stack([loss.double() * len(inputs), torch.tensor(float(len(inputs)),
                                                                              dtype=torch.float64, device=self.device)])
                advance(loss=f"{loss.item():.4f}")
        all_reduce_sum(sums, self.dist)
        self.state["seconds"] += time.perf_counter() - started
        self.state["images"] += int(sums[1])
        return {"loss": float(sums[0]) / max(1.0, float(sums[1])), "started": started}

    def evaluate(self, _epoch: int) -> dict:
        return self.data.validate(self.student, self.autocast)

    def line(self, epoch: int, trained: dict, measured: dict) -> dict:
        seconds = round(time.perf_counter() - trained["started"], 2)  # validation included
        return {"epoch": epoch, "distillation_loss": round(trained["loss"], 6), **measured,
                "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds}

    def report(self, line: dict, improved: bool) -> str:
        return (f"QAT epoch {line['epoch']}/{self.settings.epochs}: loss {line['distillation_loss']:.4f} | val "
                f"accuracy {line['accuracy']:.3f}, agreement {100 * line['agreement']:.2f}%, logit SQNR "
                f"{line['sqnr_db']:.2f} dB{'  *best' if improved else ''}")

    def best_payload(self, epoch: int, measured: dict) -> dict:
        return {"model": checkpoint.cpu_state_dict(self.student), "key": self.key, "epoch": epoch,
                "metrics": measured, "model_name": self.data.model_name}

    def last_payload(self) -> dict:
        return {"model": checkpoint.cpu_state_dict(self.student), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "key": self.key, "model_name": self.data.model_name}


def load_trained(run_dir: str | Path, float_model, image_size: tuple[int, int]):
    """The best QAT graph of a run (fake quantizers with their learned ranges), observers off, eval mode."""
    saved = checkpoint.load(qat_dir(run_dir) / "best.pt")
    student = graph.prepare(float_model, image_size)
    graph.load_state(student, saved["model"])
    graph.observers(student, False)
    graph.eval_mode(student)
    return student


def keep_if_better(state: dict, measured: dict, epoch: int) -> bool:
    """One epoch's validation into the run's state: the top agreement seen, and the kept best if
    `measured` is closer to float (`_better`). True when it became the best."""
    state["top_agreement"] = max(state["top_agreement"], measured["agreement"])
    if not _better(measured, state["best"], state["top_agreement"]):
        return False
    state.update(best=measured, best_epoch=epoch)
    return True


def _better(a: dict, b: dict, top_agreement: float) -> bool:
    """Closer to float on validation: top-1 agreement where it differs beyond its noise, else logit SQNR.

    SQNR uses every logit of every image, so it ranks near-identical students that agreement cannot;
    alone it can prefer a student whose decisions got worse while a few large logits got better.
    `top_agreement` (the highest agreement of any epoch so far, `a` included) makes the noise band
    absolute, so a chain of epochs each within the band of the last cannot drift agreement down.
    """
    if a["agreement"] < top_agreement - _NOISE_BAND:
        return False
    if abs(a["agreement"] - b["agreement"]) > _NOISE_BAND:
        return a["agreement"] > b["agreement"]
    return (a["sqnr_db"], a["agreement"]) > (b["sqnr_db"], b["agreement"])
