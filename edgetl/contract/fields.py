"""One way to read the fields of a file edgetl is given, and to say which one is wrong.

Backbone recipes, device profiles, training configs and artifact sidecars are all
mappings read from YAML or JSON that a person (or an attacker) may have edited. Each
reader builds a `Fields` for its file, and every error it raises reads the same way:

    <what> <file>: field '<dotted.name>' <problem>      (hint: how to fix it)

so a user always learns which file and which field, and code that catches
`BadInputError` gets one line with a non-zero exit (2).
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from edgetl.errors import BadInputError

REQUIRED = object()  # `default` for a field that must be present


class Fields:
    def __init__(self, where: str, hint: str | None = None):
        self.where = where  # e.g. "device profile devices/rpi5.yaml"
        self.hint = hint

    def fail(self, name: str, problem: str) -> NoReturn:
        subject = f"field '{name}'" if name else "the file"
        raise BadInputError(f"{self.where}: {subject} {problem}", self.hint)

    def mapping(self, data: Any, name: str = "") -> dict:
        if not isinstance(data, dict):
            self.fail(name, f"must be a mapping, got {type(data).__name__}")
        return data

    def get(self, mapping: dict, key: str, kind: type | tuple, prefix: str = "", default: Any = REQUIRED) -> Any:
        """mapping[key] of type `kind` (an int is accepted for a float); `default` when absent."""
        if key not in mapping or mapping[key] is None and default is not REQUIRED:
            if default is REQUIRED:
                self.fail(prefix + key, "is required")
            return default
        value = mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind in (int, float):
            self.fail(prefix + key, f"must be a number, got {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(prefix + key, f"must be {names}, got {value!r}")
        return value

    def choice(self, value: Any, options, name: str) -> Any:
        if value not in options:
            self.fail(name, f"is {value!r}, not one of {', '.join(str(o) for o in options)}")
        return value

    def number(self, value: Any, name: str, low: float | None = None, high: float | None = None,
               integer: bool = False, low_open: bool = False) -> float | int:
        """A finite number (not a bool) within [low, high] (`low_open`: above low)."""
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not finite or (integer and not float(value).is_integer()):
            self.fail(name, f"must be {'a whole number' if integer else 'a number'}, got {value!r}")
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            bounds = f"{'above' if low_open else 'at least'} {low}" if high is None else \
                f"in {'(' if low_open else '['}{low}, {high}]" if low is not None else f"at most {high}"
            self.fail(name, f"must be {bounds}, got {value!r}")
        return int(value) if integer else value
