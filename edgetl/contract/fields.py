"""One way to read the fields of a file edgetl is given, and to say which one is wrong.

Backbone recipes, device profiles, training configs, fleet inventories, preprocess
records and artifact sidecars are all mappings read from YAML or JSON that a person
(or an attacker) may have edited. Each reader builds a `Fields` for its file, reads
every value through it, and every error it raises reads the same way:

    <what> <file>: field '<dotted.name>' <problem>      (hint: how to fix it)

so a user always learns which file and which field, and code that catches
`BadInputError` gets one line with a non-zero exit (2).

Two kinds of reader: value readers (`number`, `choice`, `boolean`, `numbers`,
`file_in_folder`) check a value already in hand, such as a dataclass attribute; field
readers (`get`, `integer`, `real`, `string`, `strings`) take a mapping and a key, and
return `default` when the key is absent.
"""

from __future__ import annotations

import math
from pathlib import PureWindowsPath
from typing import Any, NoReturn

from edgetl.errors import BadInputError

REQUIRED = object()  # `default` for a field that must be present
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def finite(value: Any) -> bool:
    """A number (not a bool) that is finite as a float (huge integers overflow to inf)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def inside_folder_problem(name: Any, folder: str = "the artifact folder") -> str | None:
    """Why `name` is not a relative path of plain components inside `folder` (None if it is).

    Exporters write "model.onnx", "model.xml" + "model.bin" and "golden/00.png": forward
    slashes between ordinary names. Anything else (absolute, `..`, a drive, a backslash,
    control characters) could make a reader open or hash a file outside the folder.
    """
    if not isinstance(name, str) or not name:
        return f"is {name!r}, not a file name"
    if any(ch in name for ch in "\\\0\n\r\t"):
        return f"{name!r} contains a backslash or a control character"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return f"{name!r} is an absolute path; it must name a file inside {folder}"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"{name!r} must be plain names joined by '/', without '.', '..' or empty parts"
    return None


def _parsed(value: Any, text: bool) -> Any:
    """`value`, or the float a string spells when `text` (hand-edited files write "2222", "2.5")."""
    if text and isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def _within(value: float, low, high, low_open: bool) -> bool:
    below = low is not None and (value <= low if low_open else value < low)
    return not below and not (high is not None and value > high)


def _bounds(low, high, low_open: bool) -> str:
    """' in [low, high]', ' above low', ' at most high' (or '' without bounds) for a message."""
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'above' if low_open else 'at least'} {low}"
    if low is None:
        return f" at most {high}"
    return f" in {'(' if low_open else '['}{low}, {high}]"


class Fields:
    def __init__(self, where: str, hint: str | None = None, prefix: str = ""):
        self.where = where  # e.g. "device profile devices/rpi5.yaml"
        self.hint = hint
        self.prefix = prefix  # prepended to every field name: "hosts[2]." for one entry of a list

    def nested(self, name: str) -> "Fields":
        """The same file's reader for the fields under `name` (errors say 'name.field')."""
        return Fields(self.where, self.hint, f"{self.prefix}{name}.")

    def fail(self, name: str, problem: str, hint: str | None = None) -> NoReturn:
        full = self.prefix + name if name else self.prefix.rstrip(".")
        subject = f"field '{full}'" if full else "the file"
        raise BadInputError(f"{self.where}: {subject} {problem}", hint or self.hint)

    # -- value readers --------------------------------------------------------------------
    def mapping(self, data: Any, name: str = "", what: str = "a mapping") -> dict:
        if not isinstance(data, dict):
            self.fail(name, f"must be {what}, got {type(data).__name__}")
        return data

    def choice(self, value: Any, options, name: str) -> Any:
        try:
            known = value in options
        except TypeError:  # an unhashable value (a list) against a dict or set of options
            known = False
        if not known:
            self.fail(name, f"is {value!r}, not one of {', '.join(str(o) for o in options)}")
        return value

    def number(self, value: Any, name: str, low: float | None = None, high: float | None = None,
               integer: bool = False, low_open: bool = False, text: bool = False,
               hint: str | None = None) -> float | int:
        """A finite number (not a bool) within [low, high] (`low_open`: above low); an int when `integer`.

        `text`: also accept the number written as a string ("2222", "2.5"), as hand-edited files have it.
        """
        number = _parsed(value, text)
        good = finite(number) and (not integer or float(number).is_integer()) and \
            _within(number, low, high, low_open)
        if not good:
            kind = "a whole number" if integer else "a number"
            self.fail(name, f"must be {kind}{_bounds(low, high, low_open)}, got {value!r}", hint)
        return int(number) if integer else number

    def numbers(self, value: Any, name: str, count: int, low: float | None = None, high: float | None = None,
                low_open: bool = False, what: str = "numbers", text: bool = False) -> tuple[float, ...]:
        """Exactly `count` finite numbers, each within the bounds, as floats (`text`: as for `number`)."""
        numbers = [_parsed(v, text) for v in value] if isinstance(value, (list, tuple)) else None
        if not (numbers is not None and len(numbers) == count and all(finite(v) for v in numbers)):
            self.fail(name, f"must be {count} finite {what}, got {value!r}")
        if not all(_within(v, low, high, low_open) for v in numbers):
            self.fail(name, f"values must lie{_bounds(low, high, low_open)}, got {list(value)!r}")
        return tuple(float(v) for v in numbers)

    def boolean(self, value: Any, name: str) -> bool:
        """A YAML boolean, also when quoted: true/false, yes/no, on/off, 1/0 in any case.

        YAML keeps a quoted "false" a string, and `bool("false")` is True.
        """
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        self.fail(name, f"must be true or false, got {value!r}", "write true or false (yes/no also work)")

    def file_in_folder(self, value: Any, name: str, folder: str = "the artifact folder") -> str:
        """A relative file name that stays inside `folder` (see `inside_folder_problem`)."""
        problem = inside_folder_problem(value, folder)
        if problem:
            self.fail(name, problem)
        return value

    # -- field readers: mapping[key], or `default` when absent ------------------------------
    def get(self, mapping: dict, key: str, kind: type | tuple = object, prefix: str = "",
            default: Any = REQUIRED) -> Any:
        """mapping[key] of type `kind` (an int is accepted for a float); `default` when absent or null."""
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

    def integer(self, mapping: dict, key: str, low: int | None = None, high: int | None = None,
                default: Any = REQUIRED) -> int:
        value = self.get(mapping, key, default=default)
        return value if value is default else self.number(value, key, low, high, integer=True)

    def real(self, mapping: dict, key: str, low: float | None = None, high: float | None = None,
             low_open: bool = False, default: Any = REQUIRED) -> float:
        value = self.get(mapping, key, default=default)
        return value if value is default else float(self.number(value, key, low, high, low_open=low_open))

    def string(self, mapping: dict, key: str, choices=None, default: Any = REQUIRED) -> str:
        value = self.get(mapping, key, default=default)
        if value is default:
            return value
        if choices is not None:
            return self.choice(value, choices, key)
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def strings(self, mapping: dict, key: str, at_least: int = 0, what: str = "strings",
                default: Any = REQUIRED) -> list[str]:
        """A list of at least `at_least` strings (`what` names them in the message)."""
        value = self.get(mapping, key, default=default)
        if value is default:
            return value
        if not isinstance(value, list) or len(value) < at_least or not all(isinstance(v, str) for v in value):
            self.fail(key, f"must list at least {at_least} {what}" if at_least else f"must be a list of {what}")
        return value
