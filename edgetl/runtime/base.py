"""One `Runner` interface for every format; backends only implement `_run`.

A runner is built from an artifact file and its sidecar. It owns the sidecar's
preprocessing (so callers cannot pair a model with the wrong mean/std or
layout), splits batches for fixed-batch models (padding the last one),
dequantizes quantized outputs, and turns logits into top-k labels. No torch.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from edgetl.contract.images import load_rgb
from edgetl.contract.sidecar import Sidecar


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def default_threads() -> int:
    """Physical cores this process may use: the thread count when the caller names none.

    Each runtime has its own default otherwise (LiteRT one thread, onnxruntime and
    OpenVINO the physical cores), which made `bench` compare formats at different
    thread counts and left TFLite at half speed on a 2-core machine. Hyper-threads are
    not counted: they share a core's vector units and inference scales badly onto them.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


class Runner(ABC):
    format: str = ""
    backend: str = ""  # the runtime package actually used

    def __init__(self, model_path: str | Path, sidecar: Sidecar, threads: int | None = None,
                 device: str | None = None):
        self.model_path = Path(model_path)
        self.sidecar = sidecar
        self.threads = int(threads) if threads else default_threads()
        self.device = device
        batch = sidecar.input.shape[0] if sidecar.input.shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    # -- what every caller uses -------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.sidecar.labels

    @property
    def preprocessing(self):
        return self.sidecar.preprocess

    def preprocess(self, image: Image.Image | str | Path) -> np.ndarray:
        """A photo (PIL image or path) -> a batch of one input tensor for this model."""
        if not isinstance(image, Image.Image):
            image = load_rgb(image)
        return self.sidecar.preprocess(image)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Model input tensor (N, ...) -> float32 logits (N, classes).

        A fixed-batch model (input shape [B, ...] with an integer B) gets exactly B rows per
        call: larger inputs are split, and the last short chunk is padded with copies of its
        own last row, run, and trimmed (padding, not recursion: a short chunk split again
        is the same short chunk).
        """
        step = self.fixed_batch
        if step and len(batch) != step:
            parts = []
            for start in range(0, len(batch), step):
                chunk = batch[start:start + step]
                rows = len(chunk)
                if rows < step:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - rows, axis=0)])
                parts.append(self._logits(chunk)[:rows])
            return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)
        return self._logits(batch)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """One call of the network on a batch it accepts, dequantized to float32 logits."""
        raw = self._run(np.ascontiguousarray(batch))
        out = self.sidecar.output
        if out.dtype in ("int8", "uint8") and out.scale is not None:
            return (raw.astype(np.float32) - float(out.zero_point or 0)) * float(out.scale)
        return raw.astype(np.float32, copy=False)

    def classify(self, images: Iterable[Image.Image | str | Path], topk: int = 3) -> list[list[tuple[str, float]]]:
        images = list(images)
        if not images:
            return []
        logits = self.infer(np.concatenate([self.preprocess(image) for image in images]))
        return self.topk(logits, topk)

    def topk(self, logits: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        probs = softmax(logits)
        k = min(k, probs.shape[-1])
        order = np.argsort(-probs, axis=-1)[:, :k]
        return [[(self.labels[i], float(p[i])) for i in row] for row, p in zip(order, probs)]

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a ready input tensor; return its raw output."""

    def describe(self) -> dict:
        return {"format": self.format, "backend": self.backend, "precision": self.sidecar.precision,
                "threads": self.threads, "device": self.device, "path": str(self.model_path)}


def top1(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).argmax(axis=-1)


def batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
