"""Decode every image once, up front, so a bad file costs a warning, not a crashed epoch.

Corrupt, truncated, zero-byte and non-image files, and decompression bombs (more
pixels than `contract.images.max_pixels()`, refused from the header before any decoding),
are skipped with a warning that names each file (or, with `strict=True`, stop the
run). The decoded image is handed to `on_image` so the caller can cache it without
decoding twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from edgetl.console import printable, progress_bar, say, warn
from edgetl.contract.images import UnreadableImageError, load_rgb
from edgetl.data.folder import Sample
from edgetl.errors import DatasetError

MAX_NAMED = 20


@dataclass
class CheckResult:
    kept: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def check_images(
    root: Path,
    samples: list[Sample],
    strict: bool = False,
    on_image: Callable[[int, Sample, Image.Image], None] | None = None,
) -> CheckResult:
    result = CheckResult()
    with progress_bar("checking images", len(samples)) as advance:
        for sample in samples:
            path = root / sample.path
            try:
                image = load_rgb(path)
            except UnreadableImageError as exc:
                # The message is "<path>: <reason>"; the path itself may contain ": ".
                reason = exc.message.removeprefix(f"{path}: ")
                if exc.hint:  # e.g. how to admit a genuine image over the pixel limit
                    reason += f"; {exc.hint}"
                result.skipped.append((sample.path, reason))
            else:
                if on_image is not None:
                    on_image(len(result.kept), sample, image)
                result.kept.append(sample)
            advance()
    if result.skipped:
        lines = [f"  {printable(path)}: {printable(reason)}" for path, reason in result.skipped[:MAX_NAMED]]
        more = len(result.skipped) - MAX_NAMED
        if more > 0:
            lines.append(f"  ... and {more} more")
        if strict:
            raise DatasetError(
                f"{len(result.skipped)} unreadable image file(s) in {root} (--strict):\n" + "\n".join(lines),
                "remove or repair them, or drop --strict to skip them with a warning",
            )
        warn(f"skipped {len(result.skipped)} unreadable file(s) of {len(samples)}:")
        for line in lines:  # one plain line each (console.plain): "[draft] cat.jpg" prints verbatim
            say(line)
    return result
