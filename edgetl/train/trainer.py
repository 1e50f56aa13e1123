"""`finetune`: transfer learning of a registered backbone on an image folder.

One function drives a run from data folder to run directory (see run_dir.py for
the contract): prepare data, build the model, train with AdamW, warm-up + cosine
schedule, label smoothing, discriminative learning rates and the chosen
strategy, keep the best checkpoint by validation accuracy, stop early, and
finally evaluate the best weights on the held-out test split. A killed run
continues from `last.pt` with `resume=True` and ends where it would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
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


def _loader(dataset, cfg: TrainConfig, dist: DistInfo, device_type: str):
    import os

    from torch.utils.data import DataLoader, DistributedSampler

    workers = cfg.workers
    if workers < 0:
        cached = dataset.cached is not None
        # A GPU starves on few workers: one per core but one (the main process feeds the GPU), at most 16.
        if device_type == "cuda":
            workers = min(16, max(1, (os.cpu_count() or 2) - 1))
        else:
            workers = 0 if cached else min(2, os.cpu_count() or 1)
    # The shuffle is a function of (seed, epoch) even in one process, so a resumed epoch sees
    # the same order as the uninterrupted one (DistributedSampler with one replica does exactly that).
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=dist.enabled)
    per_rank_batch = max(1, cfg.batch_size // dist.world_size)
    return DataLoader(
        dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=workers,
        pin_memory=device_type == "cuda", drop_last=len(dataset) > per_rank_batch * dist.world_size,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    ), sampler


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
    import torch

    train_loader, sampler = _loader(data.train, cfg, dist, device_type)
    device_cache = _device_cache(cfg, data, device) if colour_jitter is not None else None
    steps_per_epoch = max(1, len(train_loader))
    optimizer = torch.optim.AdamW(
        parameter_groups(model, spec, cfg.lr, cfg.backbone_lr_mult, cfg.weight_decay), lr=cfg.lr,
        fused=device_type == "cuda" or None,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
    autocast = autocast_factory(device_type, precision)
    normalizer = Normalizer(spec.preprocess, device, cfg.channels_last)
    num_classes = len(data.classes)
    step_model = torch.compile(model) if cfg.compile else model

    state = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": 0, "bad_epochs": 0, "train_images": 0, "train_seconds": 0.0}
    if resume and run.last.is_file():
        saved = checkpoint.load(run.last)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        state.update(saved["state"])
        checkpoint.restore_rng_state(saved["rng"][dist.rank] if dist.rank < len(saved["rng"]) else saved["rng"][0])
        info(f"resuming {run.path} after epoch {state['epoch']}")
    if dist.is_main:
        kept = [m for m in run.read_metrics() if m["epoch"] <= state["epoch"]]
        atomic.write_text(run.metrics, "".join(json.dumps(m) + "\n" for m in kept))

    ddp, trainable_key = None, None
    for epoch in range(state["epoch"], cfg.epochs):
        n_trainable = apply_strategy(model, spec, cfg.strategy, epoch, cfg.unfreeze_every)
        key = tuple(p.requires_grad for p in model.parameters())
        if dist.enabled and key != trainable_key:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(step_model, device_ids=[dist.local_rank] if device_type == "cuda" else None)
            trainable_key = key
        forward = ddp if dist.enabled else step_model
        model.train()
        freeze_frozen_batchnorm(model)
        sampler.set_epoch(epoch)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
        epoch_start = time.perf_counter()
        batches = device_cache.epoch(list(sampler), train_loader.batch_size, train_loader.drop_last) \
            if device_cache else train_loader
        with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", len(train_loader)) as advance:
            for step, (pixels, labels) in enumerate(batches):
                labels = labels.to(device, non_blocking=True)
                loss, correct = train_step(forward, optimizer, scaler, autocast, normalizer(pixels, colour_jitter),
                                           labels, cfg.label_smoothing)
                scheduler.step()
                sums += torch.stack([loss.double() * len(labels), correct.double(),
                                     torch.tensor(float(len(labels)), dtype=torch.float64, device=device)])
                # Reading the loss waits for the GPU; doing it every step stalls the input pipeline.
                advance(**({"loss": f"{loss.item():.3f}"} if step % LOSS_SHOWN_EVERY == 0 else {}))
        if device_type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - epoch_start
        all_reduce_sum(sums, dist)
        if cfg.precise_bn:
            _recalibrate_bn(model, train_loader, sampler, device_cache, normalizer, autocast, colour_jitter, dist)
        val = evaluate(model, data.val, normalizer, num_classes, cfg.batch_size, dist, autocast, cfg.label_smoothing)
        count = max(1.0, float(sums[2]))
        state["train_images"] += int(sums[2])
        state["train_seconds"] += train_seconds
        improved = val.accuracy > state["best_accuracy"]
        if improved:
            state.update(best_accuracy=val.accuracy, best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        line = {
            "epoch": epoch + 1, "train_loss": round(float(sums[0]) / count, 6),
            "train_accuracy": round(float(sums[1]) / count, 6), "val_loss": round(val.loss, 6),
            "val_accuracy": round(val.accuracy, 6), "lr": optimizer.param_groups[0]["lr"],
            "trainable_parameters": n_trainable, "seconds": round(train_seconds, 3),
            "images_per_second": round(float(sums[2]) / max(train_seconds, 1e-9), 1),
        }
        info(f"epoch {epoch + 1}/{cfg.epochs}: train loss {line['train_loss']:.4f} acc {line['train_accuracy']:.3f}"
             f" | val loss {line['val_loss']:.4f} acc {line['val_accuracy']:.3f}{'  *best' if improved else ''}")
        rng = _gather_rng(dist)
        if dist.is_main:
            with open(run.metrics, "a") as handle:
                handle.write(json.dumps(line) + "\n")
            if improved:
                checkpoint.save(run.best, _best_payload(model, cfg, data, epoch + 1, val.accuracy))
            checkpoint.save(run.last, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "state": dict(state), "rng": rng, "model_name": cfg.model,
            })
        barrier(dist)
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            info(f"early stopping: no validation improvement for {cfg.patience} epochs")
            break
    return _finish(cfg, model, data, run, dist, normalizer, autocast, state)


def _recalibrate_bn(model, train_loader, sampler, device_cache, normalizer, autocast, colour_jitter, dist) -> None:
    """BatchNorm statistics at the epoch's final weights (precise_bn.py), on augmented training batches."""
    from edgetl.train.precise_bn import recalibrate

    batches = device_cache.epoch(list(sampler), train_loader.batch_size, train_loader.drop_last) \
        if device_cache else train_loader
    recalibrate(model, batches, normalizer, autocast, colour_jitter=colour_jitter, dist=dist)


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


def _gather_rng(dist: DistInfo) -> list[dict]:
    """Every rank's RNG state (its augmentation stream), collected on rank 0."""
    own = checkpoint.rng_state()
    if not dist.enabled:
        return [own]
    import torch.distributed as torch_dist

    gathered: list = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, own)
    return gathered


def _best_payload(model, cfg: TrainConfig, data, epoch: int, accuracy: float) -> dict:
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_name": cfg.model, "classes": list(data.classes), "num_classes": len(data.classes),
        "img_size": cfg.img_size, "epoch": epoch, "val_accuracy": accuracy,
    }


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
