"""Finding and loading ImageNet weights for a backbone, offline first.

Sources are tried in recipe order: a weight file that ships inside an installed
Python package (works with no network), a URL (downloaded once into the cache,
checked against its sha256), or timm's own hub loader. When every source fails
the user gets one line naming what could not be fetched and the two ways out:
`--weights PATH` (a file fetched elsewhere) or `--no-pretrained`.

Every file is read with `torch.load(weights_only=True)`: a weight file is data,
never code.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgetl.backbones.spec import BackboneSpec, WeightSource
from edgetl.contract.sidecar import sha256_file
from edgetl.errors import BadInputError, WeightsUnavailableError, first_line

if TYPE_CHECKING:  # pragma: no cover
    import torch

CACHE_DIR = Path(os.environ.get("EDGETL_CACHE", Path.home() / ".cache" / "edgetl")) / "weights"


def _package_file(source: WeightSource) -> Path | None:
    spec = importlib.util.find_spec(source.location)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / (source.file or "")
    return path if path.is_file() else None


def _url_cache_path(source: WeightSource) -> Path:
    return CACHE_DIR / Path(source.location.split("?")[0]).name


def _timm_cached(source: WeightSource) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(f"timm/{source.location}", filename)
        if isinstance(hit, str):
            return True
    return False


def available_offline(spec: BackboneSpec) -> str | None:
    """Describe the first weight source usable without network, or None."""
    for source in spec.weights:
        if source.kind == "package" and _package_file(source):
            return f"package {source.location}"
        if source.kind == "file" and Path(source.location).expanduser().is_file():
            return f"file {source.location}"
        if source.kind == "url" and _url_cache_path(source).is_file():
            return "cached download"
        if source.kind == "timm" and _timm_cached(source):
            return "cached download"
    return None


def _download(source: WeightSource) -> Path:
    from edgetl.atomic import atomic_path

    target = _url_cache_path(source)
    if not target.is_file():
        from torch.hub import download_url_to_file

        with atomic_path(target) as tmp:
            download_url_to_file(source.location, str(tmp), progress=True)
            _check_digest(source, tmp)
    else:
        _check_digest(source, target)
    return target


def _check_digest(source: WeightSource, path: Path) -> None:
    digest = sha256_file(path)
    expected = source.sha256 or source.hash_prefix
    if expected and not digest.startswith(expected.lower()):
        raise WeightsUnavailableError(
            f"downloaded weights {path.name} have sha256 {digest[:12]}..., expected {expected[:12]}...",
            "the download is corrupt or the file changed upstream; delete it and retry",
        )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Read a weight file (plain state dict, or an edgetl checkpoint) safely."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"weight file {path} does not exist", "check the --weights path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInputError(
            f"cannot read weights from {path}: {type(exc).__name__}: {exc}",
            "pass a PyTorch state dict saved with torch.save(model.state_dict(), path)",
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data:
        raise BadInputError(f"{path} holds no state dict", "save one with torch.save(model.state_dict(), path)")
    return data


def remap_by_order(source: dict, target: dict) -> dict:
    """Rename keys position by position when two ports list the same tensors in the same order.

    Refuses unless every shape lines up, so a wrong pairing cannot load silently.
    """
    if len(source) != len(target):
        raise BadInputError(f"cannot map weights by order: {len(source)} tensors for a model with {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, dst_tensor) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(dst_tensor.shape):
            raise BadInputError(
                f"cannot map weights by order: {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(dst_tensor.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def fetch_imagenet_state(spec: BackboneSpec, model_state: dict) -> tuple[dict, str]:
    """Return (state dict in the model's key names, description of the source used)."""
    failures = []
    for source in spec.weights:
        try:
            if source.kind == "package":
                path = _package_file(source)
                if path is None:
                    raise FileNotFoundError(f"Python package '{source.location}' is not installed")
                state = load_state_dict_file(path)
            elif source.kind == "file":
                state = load_state_dict_file(source.location)
            elif source.kind == "url":
                state = load_state_dict_file(_download(source))
            else:  # timm hub
                import timm

                state = timm.create_model(spec.architecture, pretrained=True,
                                          pretrained_cfg_overlay={"hf_hub_id": f"timm/{source.location}"}).state_dict()
        except WeightsUnavailableError:
            raise
        except Exception as exc:  # network errors come in many types; report each source
            failures.append(f"{source.describe()}: {type(exc).__name__}: {first_line(exc, 120)}")
            continue
        if source.remap == "by-order":
            state = remap_by_order(state, model_state)
        return state, source.describe()
    raise WeightsUnavailableError(
        f"could not fetch ImageNet weights for {spec.name} ({'; '.join(failures) or 'no source in recipe'})",
        "download them on a machine with network and pass --weights PATH, or train from scratch with --no-pretrained",
    )
