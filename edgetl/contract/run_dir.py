"""The run directory: the contract between `finetune` and every later stage.

    config.yaml      fully resolved TrainConfig (rerun with --config)
    labels.json      class names in output-index order
    preprocess.json  the evaluation preprocessing (runtime.Preprocess), copied into every artifact sidecar
    dataset.json     data root, layout, per-split class counts, skipped files, split digest
    splits/          train.txt, val.txt, test.txt: `label<TAB>path relative to the data root`
    best.pt          best-validation weights + classes + backbone (weights_only-loadable)
    last.pt          last epoch + optimizer/scheduler/scaler/RNG state for --resume
    metrics.jsonl    one JSON line per epoch
    curves.png, confusion.png, summary.json

Export reads best.pt, labels, preprocess and splits/train.txt (calibration);
parity and deploy read splits/test.txt (held-out images) through `RunDir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgetl.contract.preprocess import Preprocess
from edgetl.errors import BadInputError


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def labels(self) -> Path:
        return self.path / "labels.json"

    @property
    def preprocess(self) -> Path:
        return self.path / "preprocess.json"

    @property
    def dataset(self) -> Path:
        return self.path / "dataset.json"

    @property
    def splits(self) -> Path:
        return self.path / "splits"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def confusion(self) -> Path:
        return self.path / "confusion.png"

    # -- readers for later stages ----------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """A finished run (has best.pt, labels, preprocessing), or one line saying what is missing."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise BadInputError(f"run directory {run.path} does not exist", "pass the folder `edgetl finetune` wrote")
        for needed in (run.labels, run.preprocess, run.best, run.dataset):
            if not needed.is_file():
                raise BadInputError(
                    f"{run.path} is not a finished edgetl run: {needed.name} is missing",
                    "finish or resume it with `edgetl finetune ... --out RUN_DIR --resume`",
                )
        return run

    def read_labels(self) -> list[str]:
        return json.loads(self.labels.read_text())

    def read_preprocess(self) -> Preprocess:
        return Preprocess.from_dict(json.loads(self.preprocess.read_text()))

    def read_dataset(self) -> dict:
        return json.loads(self.dataset.read_text())

    def data_root(self) -> Path:
        return Path(self.read_dataset()["root"])

    def existing_data_root(self, needed_for: str, other_way: str = "") -> Path:
        """The run's data folder, or one line saying it moved (a run is not self-contained: its splits are lists)."""
        root = self.data_root()
        if not root.is_dir():
            raise BadInputError(f"{needed_for} is read from {root}, which does not exist",
                                f"put the run's data folder back where `edgetl finetune` read it{other_way}")
        return root

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]
