"""Registries as data: named YAML recipes found in folders, a user's own first.

Backbones (`models/`, `$EDGETL_MODELS_PATH`) and device profiles (`devices/`,
`$EDGETL_DEVICES_PATH`) are both a folder of `NAME.yaml` files, like timm's
registry but with no import side effects: a name exists if and only if its file
does. Folders are rescanned on every lookup (a glob is cheap), so a recipe added
while a program runs is seen. A name found twice resolves to the first folder.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import UnknownNameError

SHIPPED = Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class RecipeFolders:
    kind: str  # "backbone", "device profile": used in messages
    env_var: str  # os.pathsep-separated folders searched before the shipped one
    shipped: Path
    list_command: str  # how a user lists the names
    add_hint: str  # how a user adds one

    def folders(self) -> list[Path]:
        extra = [Path(p) for p in os.environ.get(self.env_var, "").split(os.pathsep) if p]
        return [*extra, self.shipped]

    def paths(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder in self.folders():
            if folder.is_dir():
                for path in sorted(folder.glob("*.yaml")):
                    found.setdefault(path.stem, path)
        return found

    def names(self) -> list[str]:
        return sorted(self.paths())

    def path(self, name: str) -> Path:
        """The recipe file for `name`, or one clear error suggesting the closest name."""
        paths = self.paths()
        if name not in paths:
            close = difflib.get_close_matches(name, list(paths), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UnknownNameError(f"unknown {self.kind} '{name}'",
                                   f"{hint}`{self.list_command}` lists the {len(paths)} available; {self.add_hint}")
        return paths[name]
