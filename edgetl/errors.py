"""One exception family for everything a user can get wrong or lack.

Every error carries a one-line `message` (what is wrong) and an optional `hint`
(how to fix it). The CLI prints exactly those lines and exits with `exit_code`;
`--debug` adds the traceback. Library callers catch `EdgetlError`.

Exit codes: 2 bad usage or bad input, 3 a missing optional backend, 1 a check
that ran and failed (a parity gate, a self-test).
"""

from __future__ import annotations


class EdgetlError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class BadInputError(EdgetlError):
    """The user's data, file or argument cannot be used as given."""

    exit_code = 2


class DatasetError(BadInputError):
    """An image folder that is empty, mis-laid-out or unusable for training."""


class UnknownNameError(BadInputError):
    """A backbone, device profile or format name that is not registered."""


class WeightsUnavailableError(BadInputError):
    """Pretrained weights that could not be found or fetched."""


class MissingBackendError(EdgetlError):
    """An optional dependency (torch, a converter, a runtime) is not installed."""

    exit_code = 3

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            f"install it with: pip install 'edgetl[{extra}]'",
        )
        self.package = package
        self.extra = extra


class BrokenBackendError(EdgetlError):
    """An optional dependency that is installed but fails to import (a broken or mismatched install)."""

    exit_code = 3


class CheckFailedError(EdgetlError):
    """A check ran to the end and its verdict is negative (gate, self-test)."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line (a converter's or runtime's can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise MissingBackendError naming the extra."""
    import importlib

    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and missing.split(".")[0] == module.split(".")[0]:
            raise MissingBackendError(module.split(".")[0], extra, purpose) from exc
        # Installed, but it (or something it needs) does not load: reinstalling is the fix, not installing.
        first = first_line(exc, 200) or type(exc).__name__
        raise BrokenBackendError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is installed but does not "
            f"import ({type(exc).__name__}: {first})",
            f"reinstall it: pip install --force-reinstall 'edgetl[{extra}]'") from exc
    if getattr(imported, "edgetl_quantizer_only", False):
        # Only litert-torch's quantizer could be loaded (export/qat/graph.py): its converter is missing.
        raise MissingBackendError(module, extra, purpose)
    return imported
