"""BatchNorm statistics recomputed after each epoch ("precise BN", Wu & Johnson 2021).

During training, BatchNorm's running statistics are an exponential average of
batches taken while the weights move; eval mode uses that average. For a
pretrained backbone the weights move little and the average is close. From
random initialisation the weights move fast and the average lags far behind:
a MobileNetV3-Large after one epoch from scratch scored 59% on its training
batches and 17.5% on validation in eval mode, and 46% once its statistics were
recomputed on 512 training images with the epoch's final weights. Every
artifact is exported from eval mode, so this is the model users ship.
"""

from __future__ import annotations

PRECISE_BN_IMAGES = 512


def recalibrate(model, batches, normalizer, autocast, images: int = PRECISE_BN_IMAGES, colour_jitter=None,
                dist=None) -> int:
    """Recompute the running mean/variance of every BatchNorm in training mode as a plain average over
    `images` training images at the current weights; frozen (eval-mode) BatchNorms keep theirs.

    Returns the number of images used. With several processes the averages are averaged across ranks.
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    from edgetl.train.distributed import all_reduce_sum

    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
    seen = 0
    with torch.no_grad():
        for pixels, _labels in batches:
            with autocast():
                model(normalizer(pixels, colour_jitter))
            seen += len(pixels)
            if seen >= images:
                break
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
        if dist is not None and dist.enabled:
            for stat in (layer.running_mean, layer.running_var):
                all_reduce_sum(stat, dist)
                stat /= dist.world_size
    return seen
