"""`finetune`: transfer learning of a registered backbone on an image folder.

One function drives a run from data folder to run directory (see run_dir.py for
the contract): prepare data, build the model, train with AdamW, warm-up + cosine
schedule, label smoothing, discriminative learning rates and the chosen
strategy, keep the best checkpoint by validation accuracy, stop early, and
finally evaluate the best weights on the held-out test split. The epochs run on
the shared loop (loop.py): a killed run continues from `last.pt` with
`resume=True` and ends where it would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from edgetl import atomic
from edgetl.console import info, progress_bar, set_quiet
from edgetl.contract.run_dir import RunDir
from edgetl.errors import BadInputError, require
from edgetl.train import checkpoint
from edgetl.train.config import TrainConfig
from edgetl.train.device_augment import DeviceColourJitter
from edgetl.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from edgetl.train.evaluate import EvalResult, Normalizer, evaluate
from edgetl.train.loader import train_loader
from edgetl.train.loop import EpochLoop, EpochSteps
from edgetl.train.precise_bn import recalibrate
from edgetl.train.strategies import (
    apply_strategy,
    freeze_frozen_batchnorm,
    parameter_groups,
    set_bn_momentum,
    warmup_cosine,
)


DEVICE_CACHE_SHARE = 0.25  # most of the GPU's free memory a training-image cache may take
LOSS_SHOWN_EVERY = 20  # training steps between progress-bar loss readings (each one is a GPU sync)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        raise BadInputError(f"cannot resume: {run.config} does not exist", "start the run without --resume")
    return TrainConfig.from_yaml(run.config)


def _device_and_precision(cfg: TrainConfig):
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda was asked for, but no CUDA GPU is visible", "use --device cpu or auto")
    device_type = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    precision = cfg.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device_type == "cuda" else "fp32"
    return device_type, precision


def autocast_factory(device_type: str, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def _write_run_files(run: RunDir, cfg: TrainConfig, data, preprocess, spec) -> None:
    from edgetl.data.splits import save_splits, split_digest

    if not run.path.is_dir() or not any(run.path.iterdir()):
        atomic.mark(run.path, "run")  # a folder edgetl made: `edgetl demo` may replace it
    atomic.write_text(run.config, cfg.to_yaml())
    atomic.write_json(run.labels, data.classes)
    atomic.write_json(run.preprocess, {**preprocess.to_dict(), "model": spec.name})
    save_splits(run.path, data.splits)
    atomic.write_json(run.dataset, {
        "root": str(Path(data.root).resolve()),
        "split_digest": split_digest(data.splits),
        **data.report,
    })


def finetune(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train `cfg.model` on `cfg.data`; returns the summary (also written to summary.json)."""
    torch = require("torch", "train", "edgetl finetune")
    from edgetl.backbones import create_model, get_spec
    from edgetl.data.folder import scan_image_folder
    from edgetl.data.prepare import prepare_data

    cfg = cfg.resolve()
    run = RunDir(Path(cfg.out))
    if not resume and run.config.is_file():
        raise BadInputError(f"{run.path} already holds a run",
                            "pass --resume to continue it, or choose another --out")
    device_type, precision = _device_and_precision(cfg)
    dist = init_distributed(device_type)
    if not dist.is_main:
        set_quiet(True)
    device = torch.device(device_type, dist.local_rank) if device_type == "cuda" else torch.device("cpu")
    torch.manual_seed(cfg.seed + dist.rank)
    started = time.perf_counter()
    try:
        spec = get_spec(cfg.model)
        preprocess = dataclasses.replace(spec.preprocess, size=(cfg.img_size, cfg.img_size))
        # The layout check and the weights come first: both fail in a second, before images are decoded.
        classes = scan_image_folder(cfg.data).classes
        model = create_model(cfg.model, num_classes=len(classes), pretrained=cfg.pretrained, weights=cfg.weights)
        on_device = cfg.augment_on == "device" or (cfg.augment_on == "auto" and device_type == "cuda")
        colour_jitter = DeviceColourJitter.for_preset(cfg.augment) if on_device else None
        data = prepare_data(cfg, preprocess, colour_in_workers=colour_jitter is None)
        if dist.is_main:
            _write_run_files(run, cfg, data, preprocess, spec)
        weights_source = model.edgetl_weights_source
        info(f"model: {cfg.model} ({weights_source}), strategy {cfg.strategy}, {device_type} {precision}"
             + (f", {dist.world_size} processes" if dist.enabled else ""))
        set_bn_momentum(model, cfg.bn_momentum)
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        result = _train(cfg, spec, model, data, run, dist, device, device_type, precision, resume, colour_jitter)
        result.update(weights_source=weights_source, seconds=round(time.perf_counter() - started, 2))
        if dist.is_main:
            atomic.write_json(run.summary, result)
        barrier(dist)
        return result
    finally:
        shutdown(dist)


def _train(cfg, spec, model, data, run: RunDir, dist: DistInfo, device, device_type, precision, resume,
           colour_jitter=None) -> dict:
    epochs = _FinetuneEpochs(cfg, spec, model, data, dist, device, device_type, precision, colour_jitter)
    loop = EpochLoop(run.path, dist)
    saved = loop.saved() if resume else None
    if saved is not None:
        epochs.load(saved)
    loop.resume(saved, epochs.state, str(run.path))
    loop.run(cfg.epochs, epochs.state, epochs.steps())
    return _finish(cfg, model, data, run, dist, epochs.normalizer, epochs.autocast, epochs.state)


class _FinetuneEpochs:
    """One fine-tune's optimiser, schedule and batches, and its epoch steps for the shared loop."""

    def __init__(self, cfg, spec, model, data, dist: DistInfo, device, device_type, precision, colour_jitter):
        import torch

        self.cfg, self.spec, self.model, self.data, self.dist, self.device = cfg, spec, model, data, dist, device
        self.colour_jitter = colour_jitter
        self.loader, self.sampler = train_loader(data.train, cfg, dist, device_type)
        self.device_cache = _device_cache(cfg, data, device) if colour_jitter is not None else None
        steps_per_epoch = max(1, len(self.loader))
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, spec, cfg.lr, cfg.backbone_lr_mult, cfg.weight_decay), lr=cfg.lr,
            fused=device_type == "cuda" or None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch))
        self.scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
        self.autocast = autocast_factory(device_type, precision)
        self.normalizer = Normalizer(spec.preprocess, device, cfg.channels_last)
        self.step_model = torch.compile(model) if cfg.compile else model
        self.ddp, self.trainable_key = None, None
        self.state = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": 0, "bad_epochs": 0, "train_images": 0,
                      "train_seconds": 0.0}

    def load(self, saved: dict) -> None:
        """Weights, optimiser, schedule and grad scaler from last.pt (the loop restores state and RNG)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])

    def steps(self) -> EpochSteps:
        return EpochSteps(train=self.train_epoch, evaluate=self.evaluate, keep=keep_if_more_accurate,
                          line=self.line, report=self.report, best=self.best_payload, last=self.last_payload,
                          stop=self.stop)

    def _forward(self, epoch: int):
        """(what the step calls, trainable parameters) for this epoch's strategy; DDP rebuilt when it changes."""
        n_trainable = apply_strategy(self.model, self.spec, self.cfg.strategy, epoch, self.cfg.unfreeze_every)
        if not self.dist.enabled:
            return self.step_model, n_trainable
        key = tuple(p.requires_grad for p in self.model.parameters())
        if key != self.trainable_key:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.step_model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)
            self.trainable_key = key
        return self.ddp, n_trainable

    def _batches(self):
        if self.device_cache:
            return self.device_cache.epoch(list(self.sampler), self.loader.batch_size, self.loader.drop_last)
        return self.loader

    def train_epoch(self, epoch: int) -> dict:
        import torch

        forward, n_trainable = self._forward(epoch)
        self.model.train()
        freeze_frozen_batchnorm(self.model)
        self.sampler.set_epoch(epoch)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, count
        started = time.perf_counter()
        with progress_bar(f"epoch {epoch + 1}/{self.cfg.epochs}", len(self.loader)) as advance:
            for step, (pixels, labels) in enumerate(self._batches()):
                labels = labels.to(self.device, non_blocking=True)
                loss, correct = train_step(forward, self.optimizer, self.scaler, self.autocast,
                                           self.normalizer(pixels, self.colour_jitter), labels,
                                           self.cfg.label_smoothing)
                self.scheduler.step()
                sums += torch.stack([loss.double() * len(labels), correct.double(),
                                     torch.tensor(float(len(labels)), dtype=torch.float64, device=self.device)])
                # Reading the loss waits for the GPU; doing it every step stalls the input pipeline.
                advance(**({"loss": f"{loss.item():.3f}"} if step % LOSS_SHOWN_EVERY == 0 else {}))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        all_reduce_sum(sums, self.dist)
        if self.cfg.precise_bn:  # BatchNorm statistics at the epoch's final weights, on augmented batches
            recalibrate(self.model, self._batches(), self.normalizer, self.autocast,
                        colour_jitter=self.colour_jitter, dist=self.dist)
        self.state["train_images"] += int(sums[2])
        self.state["train_seconds"] += seconds
        return {"sums": sums, "seconds": seconds, "trainable_parameters": n_trainable}

    def evaluate(self, _epoch: int) -> EvalResult:
        return evaluate(self.model, self.data.val, self.normalizer, len(self.data.classes), self.cfg.batch_size,
                        self.dist, self.autocast, self.cfg.label_smoothing)

    def line(self, epoch: int, trained: dict, val: EvalResult) -> dict:
        sums, seconds = trained["sums"], trained["seconds"]
        count = max(1.0, float(sums[2]))
        return {
            "epoch": epoch, "train_loss": round(float(sums[0]) / count, 6),
            "train_accuracy": round(float(sums[1]) / count, 6), "val_loss": round(val.loss, 6),
            "val_accuracy": round(val.accuracy, 6), "lr": self.optimizer.param_groups[0]["lr"],
            "trainable_parameters": trained["trainable_parameters"], "seconds": round(seconds, 3),
            "images_per_second": round(float(sums[2]) / max(seconds, 1e-9), 1),
        }

    def report(self, line: dict, improved: bool) -> str:
        return (f"epoch {line['epoch']}/{self.cfg.epochs}: train loss {line['train_loss']:.4f} acc "
                f"{line['train_accuracy']:.3f} | val loss {line['val_loss']:.4f} acc {line['val_accuracy']:.3f}"
                f"{'  *best' if improved else ''}")

    def best_payload(self, epoch: int, val: EvalResult) -> dict:
        return {
            "model": checkpoint.cpu_state_dict(self.model), "model_name": self.cfg.model,
            "classes": list(self.data.classes), "num_classes": len(self.data.classes),
            "img_size": self.cfg.img_size, "epoch": epoch, "val_accuracy": val.accuracy,
        }

    def last_payload(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "model_name": self.cfg.model}

    def stop(self, state: dict) -> str | None:
        if self.cfg.patience and state["bad_epochs"] >= self.cfg.patience:
            return f"early stopping: no validation improvement for {self.cfg.patience} epochs"
        return None


def keep_if_more_accurate(state: dict, val: EvalResult, epoch: int) -> bool:
    """Fine-tuning's keep rule: a higher validation accuracy than any epoch before; counts the others."""
    if val.accuracy > state["best_accuracy"]:
        state.update(best_accuracy=val.accuracy, best_epoch=epoch, bad_epochs=0)
        return True
    state["bad_epochs"] += 1
    return False


def _device_cache(cfg, data, device):
    """The training images on the device (light preset, RAM cache on, room on a GPU), else None: workers cut crops."""
    import torch

    from edgetl.train.device_augment import DeviceImageCache

    images = data.train.cached
    if not images:
        return None
    needed = DeviceImageCache.bytes_needed(images)
    if device.type == "cuda":  # on the CPU (--augment-on device) the RAM cache is already there
        free = torch.cuda.mem_get_info(device)[0]
        if needed > free * DEVICE_CACHE_SHARE:
            info(f"training images stay on the CPU: {needed / 2**30:.1f} GiB would take more than "
                 f"{DEVICE_CACHE_SHARE:.0%} of the GPU's free {free / 2**30:.1f} GiB")
            return None
    info(f"training images on the {device.type.upper()} as one tensor ({needed / 2**30:.2f} GiB): "
         "crops, flips and colour cut there in batches")
    return DeviceImageCache(images, data.train.labels, (cfg.img_size, cfg.img_size), device)


def train_step(forward, optimizer, scaler, autocast, inputs, labels, label_smoothing: float):
    """One optimisation step; returns (loss, number correct) as detached tensors."""
    import torch
    import torch.nn.functional as F

    with autocast():
        logits = forward(inputs)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        return loss.detach(), (logits.argmax(1) == labels).sum()


def _finish(cfg, model, data, run: RunDir, dist: DistInfo, normalizer, autocast, state) -> dict:
    from edgetl.train.plots import plot_confusion, plot_curves

    barrier(dist)
    best = checkpoint.load(run.best)
    model.load_state_dict(best["model"])
    num_classes = len(data.classes)
    val = evaluate(model, data.val, normalizer, num_classes, cfg.batch_size, dist, autocast)
    test: EvalResult | None = None
    if data.test is not None:
        test = evaluate(model, data.test, normalizer, num_classes, cfg.batch_size, dist, autocast)
    shown = test or val
    summary = {
        "run_dir": str(run.path), "model": cfg.model, "classes": list(data.classes),
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "best_val_accuracy": round(val.accuracy, 6),
        "test_accuracy": round(test.accuracy, 6) if test else None,
        "images_per_second": round(state["train_images"] / max(state["train_seconds"], 1e-9), 1),
        "strategy": cfg.strategy, "stopped_early": state["epoch"] < cfg.epochs,
        "evaluated_on": "test" if test else "val",
        "per_class_accuracy": dict(zip(data.classes, [round(a, 4) for a in shown.per_class_accuracy()])),
        "confusion": shown.confusion.tolist(), "world_size": dist.world_size,
        "config": dataclasses.asdict(cfg),
    }
    if dist.is_main:
        plot_curves(run.read_metrics(), run.curves, f"{cfg.model} ({cfg.strategy})")
        plot_confusion(shown.confusion, data.classes, run.confusion,
                       f"{cfg.model}: {summary['evaluated_on']} accuracy {shown.accuracy:.3f}")
    return summary
