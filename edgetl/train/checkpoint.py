"""Checkpoints that are safe to load and survive a kill at any moment.

`best.pt` holds what later stages need (weights, classes, backbone, image size);
`last.pt` adds everything `--resume` needs to continue exactly where a killed
run stopped: optimizer, scheduler, grad scaler, early-stopping state and, for every
rank, the RNG states of torch, CUDA, numpy and Python. Both contain only tensors and plain
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


def cpu_state_dict(module) -> dict:
    """A module's state as CPU copies, safe to save while training goes on."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def all_rng_states(dist) -> list[dict]:
    """Every rank's RNG state (its augmentation stream), in rank order; a collective under DDP."""
    own = rng_state()
    if not dist.enabled:
        return [own]
    import torch.distributed as torch_dist

    gathered: list = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, own)
    return gathered


def restore_rng_of_rank(saved, rank: int) -> None:
    """This rank's state from a checkpoint's `rng`: a list by rank, or one dict (QAT's `last.pt` before
    the shared loop); a rank the run did not have takes rank 0's."""
    if isinstance(saved, dict):
        restore_rng_state(saved)
    else:
        restore_rng_state(saved[rank] if rank < len(saved) else saved[0])


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
