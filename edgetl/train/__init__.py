"""Training: `finetune(TrainConfig)` and the run-directory contract (`RunDir`)."""

from edgetl.contract.run_dir import RunDir
from edgetl.train.config import TrainConfig

__all__ = ["RunDir", "TrainConfig", "finetune"]


def finetune(cfg: TrainConfig, resume: bool = False) -> dict:
    """Lazy entry point (importing edgetl.train does not import torch)."""
    from edgetl.train.trainer import finetune as _finetune

    return _finetune(cfg, resume=resume)
