"""Evaluation passes: loss, accuracy and a confusion matrix, sharded across ranks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgetl.train.distributed import DistInfo, all_reduce_sum


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    count: int
    confusion: np.ndarray  # [true, predicted]

    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(axis=1)
        return [float(self.confusion[i, i] / t) if t else float("nan") for i, t in enumerate(totals)]


class Normalizer:
    """uint8 NCHW RGB batch -> normalised float on the training device, with the constants and the
    order of operations of `Preprocess.normalize` (`Preprocess.pixel_offset_scale`)."""

    def __init__(self, preprocess, device, channels_last: bool):
        import torch

        offset, scale = preprocess.pixel_offset_scale()
        self.mean = torch.from_numpy(offset).to(device).view(1, 3, 1, 1)
        self.inv_std = torch.from_numpy(scale).to(device).view(1, 3, 1, 1)
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, pixels, augment=None):
        x = pixels.to(self.device, non_blocking=True).float()
        if augment is not None:  # batched colour jitter on [0, 255] pixels (device_augment.py)
            x = augment(x)
        return ((x - self.mean) * self.inv_std).contiguous(memory_format=self.memory_format)


def evaluate(model, dataset, normalizer: Normalizer, num_classes: int, batch_size: int,
             dist: DistInfo, autocast, label_smoothing: float = 0.0) -> EvalResult:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset

    shard = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=0)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=normalizer.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=normalizer.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for pixels, labels in loader:
            labels = labels.to(normalizer.device)
            with autocast():
                logits = model(normalizer(pixels))
            loss_sum += F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction="sum")
            predicted = logits.argmax(dim=1)
            confusion.index_put_((labels, predicted), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
    model.train(was_training)
    all_reduce_sum(confusion, dist)
    all_reduce_sum(loss_sum, dist)
    matrix = confusion.cpu().numpy().astype(np.int64)
    count = int(matrix.sum())
    return EvalResult(
        loss=float(loss_sum) / max(1, count),
        accuracy=float(np.trace(matrix)) / max(1, count),
        count=count,
        confusion=matrix,
    )
