"""The backbone registry: exactly the recipes found in the recipe folders.

Folders searched, in order: each entry of `$EDGETL_MODELS_PATH` (os.pathsep
separated; a user's own recipes), then the recipes shipped with edgetl
(`models/` in the repository). A name found twice resolves to the first. No
import side effects: a backbone exists if and only if its YAML file exists.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from edgetl.backbones.spec import BackboneSpec, parse_recipe
from edgetl.recipe_folders import SHIPPED, RecipeFolders

RECIPES = RecipeFolders(kind="backbone", env_var="EDGETL_MODELS_PATH", shipped=SHIPPED / "models",
                        list_command="edgetl models", add_hint="add one as a YAML file in models/")

@lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int) -> BackboneSpec:
    return parse_recipe(path)


def list_models() -> list[str]:
    return RECIPES.names()


def get_spec(name: str) -> BackboneSpec:
    path = RECIPES.path(name)
    return _parse(path, path.stat().st_mtime_ns)
