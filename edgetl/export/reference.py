"""The float PyTorch model of a run: the reference every artifact is judged against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetl.contract.preprocess import Preprocess
from edgetl.contract.run_dir import RunDir
from edgetl.data.splits import load_split
from edgetl.errors import require
from edgetl.evaluation import ImageCache
from edgetl.export.calibration import LabelledImages


@dataclass
class FloatReference:
    run: RunDir
    model: object  # torch.nn.Module, eval mode, CPU, float32
    model_name: str
    labels: list[str]
    preprocess: Preprocess
    checkpoint_sha256: str

    def logits(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Float logits for pre-cut uint8 pixels, normalised with the run's preprocessing."""
        import torch

        parts = []
        with torch.no_grad():
            for start in range(0, len(pixels), batch_size):
                batch = self.preprocess.normalize(pixels[start:start + batch_size])
                parts.append(self.model(torch.from_numpy(batch)).float().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def split_images(self, split: str) -> tuple[ImageCache, np.ndarray]:
        """The run's saved split as an image cache plus class indices."""
        samples = load_split(self.run.path, split)
        root = self.run.existing_data_root(f"the run's {split} split")
        index = {name: i for i, name in enumerate(self.labels)}
        cache = ImageCache(root, [s.path for s in samples])
        return cache, np.array([index[s.label] for s in samples], dtype=np.int64)

    def labelled(self, split: str) -> LabelledImages:
        cache, labels = self.split_images(split)
        return LabelledImages(cache.pixels(self.preprocess), labels, cache.paths, self.preprocess)


def load_reference(run_dir: str | Path) -> FloatReference:
    require("torch", "train", "loading the float model of a run")
    from edgetl.backbones import create_model
    from edgetl.contract.sidecar import sha256_file
    from edgetl.train import checkpoint

    run = RunDir.open(run_dir)
    saved = checkpoint.load(run.best)
    labels = run.read_labels()
    model = create_model(saved["model_name"], num_classes=len(labels), pretrained=False)
    model.load_state_dict(saved["model"])
    model.eval()
    return FloatReference(run, model, saved["model_name"], labels, run.read_preprocess(), sha256_file(run.best))
