"""The backbone registry: exactly the recipes found in the recipe folders.

Folders searched, in order: each entry of `$EDGETL_MODELS_PATH` (os.pathsep
separated; a user's own recipes), then the recipes shipped with edgetl
(`models/` in the repository). A name found twice resolves to the first. No
import side effects: a backbone exists if and only if its YAML file exists.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path

from edgetl.backbones.spec import BackboneSpec, parse_recipe
from edgetl.errors import UnknownNameError

SHIPPED_RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "models"


def recipe_folders() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EDGETL_MODELS_PATH", "").split(os.pathsep) if p]
    return [*extra, SHIPPED_RECIPES]


def _recipes(folders: tuple[Path, ...]) -> dict[str, Path]:
    """Scanned on every call (a glob is cheap), so a recipe added at run time is seen."""
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


@lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int) -> BackboneSpec:
    return parse_recipe(path)


def list_models() -> list[str]:
    return sorted(_recipes(tuple(recipe_folders())))


def get_spec(name: str) -> BackboneSpec:
    recipes = _recipes(tuple(recipe_folders()))
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UnknownNameError(
            f"unknown backbone '{name}'",
            f"{hint}`edgetl models` lists the {len(recipes)} available; add one as a YAML file in models/",
        )
    path = recipes[name]
    return _parse(path, path.stat().st_mtime_ns)
