"""Quantization-aware fine-tuning: a short run from the best float checkpoint, with int8 fake quantization.

Post-training quantization cannot always reach float accuracy; a few epochs with
the int8 rounding in the forward pass let the weights and the ranges adapt to it.
The recipe (chosen on the validation split of the photo run):

- the graph and scheme of `fake_quant.py`, ranges first calibrated on
  `calib_images` train images, then tracked by the fake quantizers' moving
  averages during training;
- the loss is distillation from the float model (KL at temperature 2) on the
  run's train split with the run's augmentation, each batch mixed up with itself
  (`mixup`: the teacher labels the blends; +0.4 dB logit SQNR on validation): the goal is an int8 model that
  *agrees with the float one*, which is what the gate and parity measure, and the
  train labels alone pull a memorised model away from it;
- every weight stays within half an int8 grid step of its float value, on the grid
  calibration fixed (`weight_bound`, AdaRound's neighbourhood): QAT chooses each
  weight's rounding, up or down, and trains the float biases. Unbounded, AdamW at lr
  1e-4 moved pointwise weights (grid step ~4e-4) by dozens of steps: the student fit
  the train split and drifted from the float model elsewhere, its validation logits
  falling from 18.9 dB to 12.7-13.4 dB SQNR against float, agreement 96.9% -> 94.5%
  in one run and 96.4% -> 97.5% in another. Bounded at 0.5 step: 18.8 -> 19.1 dB,
  96.4% -> 97.1% in 2 epochs, and 96.4% -> 98.1% (epoch 3 of 4) in 4 epochs, the
  default (lr 3e-4: 96.4%; temperature 1: 96.9%; lr 3e-5: 97.4%, all 2 epochs);
- BatchNorm folded into the convolutions before QAT (frozen statistics from the
  start; see `fake_quant.prepare` for why not torchao's trainable conv+BN pattern)
  and a low learning rate (AdamW, cosine) for every layer but the classifier head, which
  stays the float model's: measured on the photo run's validation split (2 epochs, lr
  1e-4, unbounded), agreement with float went 96.4% -> 97.5% with the head frozen, but 96.9% ->
  95.9% with it training at 1x and 96.4% -> 95.3% at 10x: on a small train split the
  head drifts from the teacher faster than the convolutions learn the rounding;
- a layer-wise loss beside the logits' KL (`feature_weight`, `feature_targets.py`): each
  quantized activation against the float graph's at the same point. Ten logits per image
  under-determine millions of rounding choices, and with logits alone the student fit the
  train split (train loss falling, validation SQNR falling); with dense layer targets, logit
  SQNR on validation rose from 21.4-21.8 dB to 23.4-23.7 dB (agreement 98.0-98.25% -> 98.75%);
- validation every epoch with observers off, the calibrated start (epoch 0) included:
  training that moves the student away from float is never delivered. The best is kept
  by top-1 agreement where two epochs differ by more than 1 pp, by the logits' SQNR
  against float otherwise, never more than 1 pp below the best agreement of any epoch
  (`_better`). Agreement alone is too coarse to rank near-identical students: the same
  QAT ONNX file run four ways (fake quantizers, onnxruntime with no, basic and all graph
  optimisations) had one SQNR against float (19.9-20.1 dB) and agreements from 97.25%
  to 98.25%, eight near-tie images flipping either way. SQNR alone kept a MobileNetV3's
  calibrated start (91.88%) over a student that agreed on 96.62% but whose few large
  logits had moved (16.1 against 18.4 dB).

Same habits as `finetune`: `RUN_DIR/qat/` holds `last.pt` (resumable after
kill -9, written atomically), `best.pt`, `metrics.jsonl` and `summary.json`; GPU
in fp32 with TF32 tensor cores where present (not bf16: see below), CPU works; DDP under `torchrun`. A QAT whose
settings and float checkpoint are unchanged is reused, not retrained.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetl import atomic
from edgetl.console import info, progress_bar
from edgetl.contract.run_dir import RunDir
from edgetl.errors import BadInputError, require
from edgetl.train import checkpoint, fake_quant
from edgetl.train.qat_steps import RoundingNeighbourhood, build_optimizer
from edgetl.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown

QAT_DIR = "qat"
VERSION = 12  # bumped when the QAT graph or procedure changes


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 4
    lr: float = 1e-4  # every layer but the head
    head_lr_mult: float = 0.0  # the head's lr is head_lr_mult x lr; 0: the head stays the float model's
    weight_decay: float = 0.0
    temperature: float = 2.0
    calib_images: int = 256
    batch_size: int = 32
    max_steps: int | None = None  # per epoch; for smoke tests and budgets (None: the whole train split)
    # Activation ranges stop moving after this many epochs (the weights keep training against fixed
    # ranges, as BN statistics are frozen in the literature's recipe); None: they track every epoch.
    freeze_observers_after: int | None = None
    # Each weight stays within this many int8 grid steps of its float value, on a grid fixed at
    # calibration (AdaRound's neighbourhood: QAT then chooses roundings instead of new weights, so the
    # student cannot drift from the float model where the train split does not reach); None: unbounded.
    weight_bound: float | None = 0.5
    # Mixup of the distillation inputs (Beta(mixup, mixup) weights; 0: off): the teacher answers any
    # image, so blends of two train images widen what the student learns to match beyond the train split.
    # Photo run, validation, 4 epochs: logit SQNR at the end 21.40 dB (1.0) and 21.28 dB (0.4) against
    # 20.91 and 20.95 dB in two runs without (agreement 98.0-98.25% in all four).
    mixup: float = 1.0
    # Quantized weights move in units of their own int8 grid step: Adam's update for each output channel
    # is scaled by that channel's step, at this many steps per optimizer step (None: every weight at `lr`).
    # One lr in weight units moved Lite0's pointwise expansions (step ~4e-4) 0.3 steps on average and
    # its depthwise and projection layers (step ~1e-2) 0.05-0.1: QAT chose the rounding of the layers
    # that need it most, the depthwise ones, hardly at all. Measured (logits alone, 4 epochs): 0.01 steps
    # 21.81 dB, within the spread of the default's runs (21.4-21.7); 0.03 steps 19.25 dB. Off by default.
    weight_lr_steps: float | None = None
    # Activation ranges learned by gradient (LSQ), each scale moving by about this fraction of itself per
    # step (None: moving-average min/max, see freeze_observers_after). Measured worse on the photo run
    # (1e-3, logits alone: 20.42 dB at epoch 4), so off by default.
    range_lr: float | None = None
    # Weight of the layer-wise loss (each quantized activation against the float one, relative error
    # power, mean over layers) added to the logits' KL; 0: logits alone. Photo run, validation, 4
    # epochs, logit SQNR at the end: 23.69 dB (30), 23.40 dB (10), against 21.4-21.8 dB with logits
    # alone; agreement 98.75% against 98.0-98.25%.
    feature_weight: float = 30.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise BadInputError(f"QAT epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise BadInputError(f"QAT learning rate must be > 0, got {self.lr}")
        if not self.mixup >= 0:
            raise BadInputError(f"QAT mixup must be >= 0 (0: off), got {self.mixup}")
        if self.weight_bound is not None and not self.weight_bound > 0:
            raise BadInputError(f"QAT weight bound must be > 0 grid steps (or none), got {self.weight_bound}")
        if self.weight_lr_steps is not None and not self.weight_lr_steps > 0:
            raise BadInputError(f"QAT weight learning rate must be > 0 grid steps (or none), got {self.weight_lr_steps}")
        if not self.feature_weight >= 0:
            raise BadInputError(f"QAT feature weight must be >= 0 (0: off), got {self.feature_weight}")
        if self.range_lr is not None and not self.range_lr > 0:
            raise BadInputError(f"QAT range learning rate must be > 0 (or none), got {self.range_lr}")


def qat_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / QAT_DIR


def settings_key(run: RunDir, settings: QatSettings) -> dict:
    """What a QAT result depends on: the float checkpoint and every setting."""
    from edgetl.contract.sidecar import sha256_file

    return {"version": VERSION, "checkpoint_sha256": sha256_file(run.best), **asdict(settings)}


def finished(run_dir: str | Path, settings: QatSettings) -> dict | None:
    """The summary of a finished QAT with these settings on this checkpoint, or None."""
    run = RunDir.open(run_dir)
    path = qat_dir(run.path) / "summary.json"
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
    # No autocast: a fake quantizer rounds to 256 levels, and bf16 keeps only 8 significant bits, so
    # ranges and rounding learned in bf16 are not the int8 ones (torchao's fused fake-quant kernel
    # also refuses bf16 against its float scales: seen on an H200). fp32 with TF32 tensor cores:
    # 10-bit mantissas in the products, fp32 everywhere else.
    precision = "tf32" if device_type == "cuda" else "fp32"
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dist = init_distributed(device_type)
    try:
        device = torch.device(device_type, dist.local_rank) if device_type == "cuda" else torch.device("cpu")
        torch.manual_seed(cfg.seed + 1000 + dist.rank)
        return _run(run, cfg, settings, dist, device, autocast_factory(device_type, "fp32"), precision)
    finally:
        shutdown(dist)


def _run(run: RunDir, cfg, settings: QatSettings, dist: DistInfo, device, autocast, precision: str) -> dict:
    import torch

    from edgetl.train.qat_data import QatData

    folder = qat_dir(run.path)
    folder.mkdir(exist_ok=True)
    key = settings_key(run, settings)
    started = time.perf_counter()
    data = QatData.load(run, cfg, settings, dist, device)
    student = fake_quant.prepare(data.float_export_model(), data.image_size).to(device)
    bound = RoundingNeighbourhood(student, settings.weight_bound)  # the float weights, before any step
    features = None
    if settings.feature_weight > 0:
        from edgetl.train.feature_targets import FeatureTargets

        features = FeatureTargets(student, data.float_export_model(), data.image_size, device)
    state = {"epoch": 0, "best": None, "best_epoch": 0, "top_agreement": 0.0, "seconds": 0.0, "images": 0}
    last, best = folder / "last.pt", folder / "best.pt"
    saved = checkpoint.load(last) if last.is_file() else None
    resuming = saved is not None and saved.get("key") == key
    if resuming:
        load_state(student, saved["model"])
        state.update(saved["state"])
        checkpoint.restore_rng_state(saved["rng"])
        info(f"resuming QAT in {folder} after epoch {state['epoch']}")
        if dist.is_main:  # drop the lines of an epoch that was killed before its checkpoint
            lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()] \
                if (folder / "metrics.jsonl").is_file() else []
            atomic.write_text(folder / "metrics.jsonl",
                              "".join(json.dumps(x) + "\n" for x in lines if x["epoch"] <= state["epoch"]))
    else:
        _reset(folder, dist)
        data.calibrate(student, settings.calib_images, autocast)
        before = data.validate(student, autocast)
        info(f"QAT: {data.describe()}; calibrated fake-quant val accuracy {before['accuracy']:.3f}, "
             f"agreement with float {100 * before['agreement']:.2f}%, logit SQNR {before['sqnr_db']:.2f} dB")
        _log(folder, {"epoch": 0, **before}, dist)
        # The calibrated start is a candidate too: training that moves the student away from float is not kept.
        state.update(best=before, best_epoch=0, top_agreement=before["agreement"])
        if dist.is_main:
            checkpoint.save(best, {"model": _cpu_state(student), "key": key, "epoch": 0, "metrics": before,
                                   "model_name": data.model_name})
    optimizer, scheduler, scaled = build_optimizer(student, data, settings)
    if resuming:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    forward = student
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(student, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    for epoch in range(state["epoch"], settings.epochs):
        fake_quant.train_mode(student)
        # Ranges track until frozen; learned ranges (range_lr) are written by no observer at all.
        fake_quant.observers(student, settings.range_lr is None and (settings.freeze_observers_after is None
                                                                     or epoch < settings.freeze_observers_after))
        if bound.steps is not None:
            fake_quant.weight_observers(student, False)
        epoch_start = time.perf_counter()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss x images, images
        with progress_bar(f"QAT epoch {epoch + 1}/{settings.epochs}", data.steps_per_epoch) as advance:
            for inputs, teacher_logits in data.train_batches(epoch, settings.mixup):
                loss = _distillation_loss(forward, optimizer, autocast, inputs, teacher_logits, settings.temperature,
                                          features, settings.feature_weight)
                with scaled:
                    optimizer.step()
                bound()
                scheduler.step()
                sums += torch.stack([loss.double() * len(inputs), torch.tensor(float(len(inputs)),
                                                                              dtype=torch.float64, device=device)])
                advance(loss=f"{loss.item():.4f}")
        all_reduce_sum(sums, dist)
        state["seconds"] += time.perf_counter() - epoch_start
        state["images"] += int(sums[1])
        measured = data.validate(student, autocast)
        state["epoch"] = epoch + 1
        improved = _keep_if_better(state, measured, epoch + 1)
        line = {"epoch": epoch + 1, "distillation_loss": round(float(sums[0]) / max(1.0, float(sums[1])), 6),
                **measured, "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - epoch_start, 2)}
        info(f"QAT epoch {epoch + 1}/{settings.epochs}: loss {line['distillation_loss']:.4f} | val accuracy "
             f"{measured['accuracy']:.3f}, agreement {100 * measured['agreement']:.2f}%, logit SQNR "
             f"{measured['sqnr_db']:.2f} dB{'  *best' if improved else ''}")
        if dist.is_main:
            _log(folder, line, dist)
            if improved:
                checkpoint.save(best, {"model": _cpu_state(student), "key": key, "epoch": epoch + 1,
                                       "metrics": measured, "model_name": data.model_name})
            checkpoint.save(last, {"model": _cpu_state(student), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "state": dict(state), "key": key,
                                   "rng": checkpoint.rng_state(), "model_name": data.model_name})
        barrier(dist)
    summary = {"run_dir": str(run.path), "qat_dir": str(folder), "key": key, "settings": asdict(settings),
               "best_epoch": state["best_epoch"], "best": state["best"], "float_val_accuracy": data.float_accuracy,
               "device": str(device), "precision": precision, "world_size": dist.world_size,
               "images_per_second": round(state["images"] / max(state["seconds"], 1e-9), 1),
               "seconds": round(time.perf_counter() - started, 2)}
    if dist.is_main:
        atomic.write_json(folder / "summary.json", summary)
    barrier(dist)
    return summary


def load_trained(run_dir: str | Path, float_model, image_size: tuple[int, int]):
    """The best QAT graph of a run (fake quantizers with their learned ranges), observers off, eval mode."""
    saved = checkpoint.load(qat_dir(run_dir) / "best.pt")
    student = fake_quant.prepare(float_model, image_size)
    load_state(student, saved["model"])
    fake_quant.observers(student, False)
    fake_quant.eval_mode(student)
    return student


def _distillation_loss(forward, optimizer, autocast, inputs, teacher_logits, temperature: float,
                       features=None, feature_weight: float = 0.0):
    """The KL loss of the student against the teacher (plus the layer-wise one), its gradients in place.

    The step is the caller's.
    """
    import torch.nn.functional as F

    with autocast():
        logits = forward(inputs)
    log_student = F.log_softmax(logits.float() / temperature, dim=1)
    target = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    loss = F.kl_div(log_student, target, log_target=True, reduction="batchmean") * temperature ** 2
    if features is not None:
        features.float_logits(inputs)
        loss = loss + feature_weight * features.loss()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach()


# Agreement differences up to this (as a fraction) are the noise of near-tie images: one QAT ONNX
# file run four ways (fake quantizers; onnxruntime with no, basic, all graph optimisations) agreed
# with float on 97.25% to 98.25% of the photo run's 800 validation images.
AGREEMENT_NOISE = 0.01
_NOISE_BAND = AGREEMENT_NOISE + 1e-9  # 8 of 800 images is noise, not float rounding's 1e-17 more


def _keep_if_better(state: dict, measured: dict, epoch: int) -> bool:
    """One epoch's validation into the run's state: the top agreement seen, and the kept best if
    `measured` is closer to float (`_better`). True when it became the best."""
    state["top_agreement"] = max(state["top_agreement"], measured["agreement"])
    if not _better(measured, state["best"], state["top_agreement"]):
        return False
    state.update(best=measured, best_epoch=epoch)
    return True


def _better(a: dict, b: dict, top_agreement: float) -> bool:
    """Closer to float on validation: top-1 agreement where it differs beyond its noise, else logit SQNR.

    SQNR uses every logit of every image, so it ranks near-identical students that 800 images'
    agreement cannot. But it alone is not enough: on a MobileNetV3-Large trained from scratch
    (photo run, layer-wise loss) the student's agreement rose 91.88% -> 96.62% while its logit
    SQNR fell 18.35 -> 16.11 dB (its few large logits got worse while the decisions got better),
    and SQNR first kept the calibrated start, 38 images' worth further from float.

    `top_agreement` (the highest agreement of any epoch so far, `a` included) makes the noise band
    absolute: compared with the current best alone, a chain of epochs each within 1 pp of the last
    and each with a higher SQNR could drift agreement down by several points in total.
    """
    if a["agreement"] < top_agreement - _NOISE_BAND:
        return False
    if abs(a["agreement"] - b["agreement"]) > _NOISE_BAND:
        return a["agreement"] > b["agreement"]
    return (a["sqnr_db"], a["agreement"]) > (b["sqnr_db"], b["agreement"])


def _cpu_state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_state(student, state: dict) -> None:
    """Load a QAT checkpoint into a freshly prepared graph, with the graph's own state-dict versions.

    A saved state is a plain dict, without the `_metadata` versions `state_dict()` carries; torchao's
    observers read a missing version as "version 1" and overwrite their `eps` buffer with float32's
    eps (LiteRT's is 2**-12). The resumed run then computed other scales than the uninterrupted one
    from its first step. The prepared graph is rebuilt identically, so its versions are the saved ones.
    """
    from collections import OrderedDict

    ordered = OrderedDict(state)
    ordered._metadata = student.state_dict()._metadata
    student.load_state_dict(ordered)


def _reset(folder: Path, dist: DistInfo) -> None:
    """A fresh QAT: earlier results of other settings are replaced (only files QAT itself writes)."""
    if dist.is_main:
        for name in ("best.pt", "last.pt", "metrics.jsonl", "summary.json"):
            (folder / name).unlink(missing_ok=True)
    barrier(dist)


def _log(folder: Path, line: dict, dist: DistInfo) -> None:
    if dist.is_main:
        with open(folder / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(line) + "\n")
