"""Checkpoints that are safe to load and survive a kill at any moment.

`best.pt` holds what later stages need (weights, classes, backbone, image size);
`last.pt` adds everything `--resume` needs to continue exactly where a killed
run stopped: optimizer, scheduler, grad scaler, early-stopping state and the RNG
states of torch, CUDA, numpy and Python. Both contain only tensors and plain
Python values, so `torch.load(path, weights_only=True)` reads them, and both are
written atomically (temp file + rename).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from edgetl import atomic
from edgetl.errors import BadInputError

FORMAT = "edgetl-checkpoint"
VERSION = 1


def rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save(path: Path, payload: dict) -> None:
    import torch

    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic.write_with(path, lambda tmp: torch.save(payload, tmp))


def load(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInputError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})",
                            "it may be truncated or not an edgetl checkpoint") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInputError(f"{path} is not an edgetl checkpoint")
    return data
