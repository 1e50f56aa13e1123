"""One resumable epoch loop, shared by fine-tuning and quantization-aware training.

A run folder holds `last.pt` (everything a resume needs, written after every epoch),
`best.pt` (the epoch the keep rule chose) and `metrics.jsonl` (one line per epoch).
The loop owns those files, every rank's RNG state, resuming and early stopping; the
caller supplies what differs (`EpochSteps`): one epoch of training, its evaluation,
the rule that keeps the best, and what each file holds. A run killed at any moment
resumes from `last.pt` and ends where the uninterrupted run ends. Rank 0 alone writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgetl import atomic
from edgetl.console import info
from edgetl.train import checkpoint
from edgetl.train.distributed import DistInfo, barrier

BEST, LAST, METRICS = "best.pt", "last.pt", "metrics.jsonl"


def never_stop(_state: dict) -> str | None:
    return None


@dataclass(frozen=True)
class EpochSteps:
    """What one kind of training does in an epoch; `EpochLoop.run` calls them in this order."""

    train: Callable[[int], Any]  # epoch index -> what training measured
    evaluate: Callable[[int], Any]  # epoch index -> the validation the keep rule compares
    keep: Callable[[dict, Any, int], bool]  # (state, evaluated, epoch number) -> it became the best; updates state
    line: Callable[[int, Any, Any], dict]  # (epoch number, trained, evaluated) -> its metrics.jsonl line
    report: Callable[[dict, bool], str]  # (line, became the best) -> the console line
    best: Callable[[int, Any], dict]  # (epoch number, evaluated) -> best.pt's payload
    last: Callable[[], dict]  # last.pt's payload; the loop adds "state" and "rng"
    stop: Callable[[dict], str | None] = never_stop  # state -> why to stop early, or None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's lines; a last line torn by a kill in mid-write is dropped."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                raise
    return rows


class EpochLoop:
    """The files of one run folder and the epochs that write them."""

    def __init__(self, folder: Path, dist: DistInfo):
        self.folder, self.dist = Path(folder), dist
        self.best, self.last, self.metrics = self.folder / BEST, self.folder / LAST, self.folder / METRICS

    def saved(self) -> dict | None:
        """last.pt, or None before the first finished epoch."""
        return checkpoint.load(self.last) if self.last.is_file() else None

    def resume(self, saved: dict | None, state: dict, what: str) -> None:
        """The loop's state and this rank's RNG from `saved` (None: a fresh start), and metrics.jsonl cut
        back to the epochs `state` holds (the line of an epoch killed before its checkpoint goes)."""
        if saved is not None:
            state.update(saved["state"])
            checkpoint.restore_rng_of_rank(saved["rng"], self.dist.rank)
            info(f"resuming {what} after epoch {state['epoch']}")
        if self.dist.is_main:
            kept = [m for m in read_metrics(self.metrics) if m["epoch"] <= state["epoch"]]
            atomic.write_text(self.metrics, "".join(json.dumps(m) + "\n" for m in kept))

    def reset(self, *others: str) -> None:
        """A fresh start: the loop's files, and `others` in the folder, removed."""
        if self.dist.is_main:
            for name in (BEST, LAST, METRICS, *others):
                (self.folder / name).unlink(missing_ok=True)
        barrier(self.dist)

    def log(self, line: dict) -> None:
        if self.dist.is_main:
            with open(self.metrics, "a") as handle:
                handle.write(json.dumps(line) + "\n")

    def save_best(self, payload: dict) -> None:
        if self.dist.is_main:
            checkpoint.save(self.best, payload)

    def run(self, epochs: int, state: dict, steps: EpochSteps) -> dict:
        """Epochs state["epoch"] + 1 .. `epochs`, each ending with its line, best.pt if kept, and last.pt."""
        for epoch in range(state["epoch"], epochs):
            trained = steps.train(epoch)
            evaluated = steps.evaluate(epoch)
            state["epoch"] = epoch + 1
            improved = steps.keep(state, evaluated, epoch + 1)
            line = steps.line(epoch + 1, trained, evaluated)
            info(steps.report(line, improved))
            rng = checkpoint.all_rng_states(self.dist)  # a collective: every rank takes part
            if self.dist.is_main:
                self.log(line)
                if improved:
                    self.save_best(steps.best(epoch + 1, evaluated))
                checkpoint.save(self.last, {**steps.last(), "state": dict(state), "rng": rng})
            barrier(self.dist)
            reason = steps.stop(state)
            if reason:
                info(reason)
                break
        return state
