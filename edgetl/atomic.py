"""Atomic writes: a file or folder is either complete or absent.

Training checkpoints, exported artifacts and device releases are all written
through these helpers: the content goes to a temporary sibling (same folder, so
the final rename stays on one filesystem), is flushed and fsync'ed, then renamed
over the target. A process killed at any moment leaves either the old version or
the new one, never a half-written file that looks complete.

Only regular files and folders are published by rename. A target that is a character device or a
FIFO (`--plot /dev/null`, a pipe a reader waits on) is written in place: renaming over `/dev/null`
would replace the machine's null device with a regular file. A block device or a socket as the target
is refused, and so is a symbolic link: replacing the link would silently cut it from the file it names,
and writing through it would put edgetl's output wherever the link happens to point.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _target_mode(target: Path) -> int | None:
    """`target`'s file type (lstat, links not followed), or None when nothing is there."""
    try:
        return os.lstat(target).st_mode
    except FileNotFoundError:
        return None


def is_special(target: str | os.PathLike) -> bool:
    """True for a character device or a FIFO: a target written in place, never renamed over."""
    mode = _target_mode(Path(target))
    return mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode))


def check_target(target: str | os.PathLike, what: str) -> None:
    """One line for a target that neither a rename nor an in-place write may touch (callers check before
    long work, so a refused `--plot` does not cost the benchmark)."""
    from edgetl.errors import BadInputError

    target = Path(target)
    mode = _target_mode(target)
    if mode is not None and stat.S_ISLNK(mode):
        raise BadInputError(f"{target} is a symbolic link (to {os.readlink(target)}): refusing to replace it "
                            f"with the {what}", "give the path the link points to, or another path")
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or is_special(target)):
        kind = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
        raise BadInputError(f"{target} is a {kind}: refusing to write the {what} there", "choose another path")


@contextlib.contextmanager
def _in_place(target: Path) -> Iterator[Path]:
    """Write to a temporary file elsewhere, then copy it into the device or FIFO `target` (opened as it is)."""
    fd, tmp_name = tempfile.mkstemp(prefix="edgetl-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` atomically (a regular file or
    nothing), or is copied into it (a character device or FIFO). A link or other special file is refused.
    `mode` (e.g. 0o600 for a private key) instead of the umask's: the file never has wider permissions."""
    target = Path(target)
    check_target(target, "file")
    if stat.S_ISDIR(_target_mode(target) or 0):
        from edgetl.errors import BadInputError

        raise BadInputError(f"{target} is a folder: refusing to replace it with a file", "give a file name")
    if is_special(target):
        with _in_place(target) as tmp:
            yield tmp
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(target: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    with atomic_path(target, mode) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    return write_bytes(target, text.encode("utf-8"), mode)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(target: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Let `writer(tmp_path)` produce the file (e.g. torch.save, savefig), then publish it."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


# -- folders -------------------------------------------------------------------------------------
MARKER = ".edgetl"
"""A small JSON file inside every folder edgetl makes: the only folders it will replace or delete."""


def marker_text(kind: str) -> str:
    """The marker's content, for a folder of `kind`; also what a deploy writes on a device (no local path)."""
    from edgetl import __version__

    return json.dumps({"made_by": "edgetl", "kind": kind, "version": __version__}, indent=2) + "\n"


def is_marker(text: str | None, kind: str) -> bool:
    """Whether `text` (a marker file's content, None when absent) is edgetl's marker of a `kind` folder."""
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("made_by") == "edgetl" and data.get("kind") == kind


def mark(folder: str | os.PathLike, kind: str) -> None:
    write_text(Path(folder) / MARKER, marker_text(kind))


def made_by_edgetl(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def ensure_replaceable(target: str | os.PathLike, what: str = "folder") -> None:
    """Refuse to replace anything edgetl did not make: absent, empty or marked folders only.

    A user who points `demo-data` at ~/Pictures, or `export --out` at a folder of their own,
    gets one line and keeps their files.
    """
    from edgetl.errors import BadInputError

    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and not target.is_symlink() and (made_by_edgetl(target) or not any(target.iterdir())):
        return
    raise BadInputError(f"{target} exists and was not made by edgetl (no {MARKER} marker): refusing to replace "
                        f"it with the {what}",
                        "choose a new or empty folder; if it is an older edgetl output, delete it yourself")


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _fsync_tree(folder: Path) -> None:
    """Every file's content and every directory entry on disk before the folder is published."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir() and not path.is_symlink():
            _fsync_dir(path)
    _fsync_dir(folder)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_workdirs(parent: str | os.PathLike, prefix: str) -> None:
    """Delete `PREFIX<pid>-*` folders in `parent` whose process no longer runs (a killed job's scratch)."""
    for folder in Path(parent).glob(f"{prefix}*"):
        pid = folder.name[len(prefix):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def recover_dir(target: str | os.PathLike) -> None:
    """Repair what a killed `atomic_dir` left beside `target`.

    Where the kernel cannot swap two folders in one step, publishing is two renames; a
    crash between them leaves `target` missing and `.NAME.old-*` beside it, which is
    moved back. Temporary `.NAME.PID.*.partial` folders of processes that no longer run
    are deleted (those of a live process are another writer's, and kept).
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists() and not target.is_symlink():
        os.replace(olds.pop(), target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
    for partial in parent.glob(f".{target.name}.*.partial"):
        pid = partial.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces folder `target` as a whole.

    With `kind`, the folder is marked as edgetl's (`.edgetl`), and an existing `target`
    without that mark is refused before any work starts. The swap is one
    renameat2(RENAME_EXCHANGE) where the kernel has it, so `target` is never missing;
    elsewhere the old folder is renamed aside first and `recover_dir` repairs a crash
    between the two renames. Contents are fsynced before the swap.
    """
    target = Path(target)
    check_target(target, kind or "folder")
    if is_special(target) or (target.exists() and not target.is_dir()):
        from edgetl.errors import BadInputError

        raise BadInputError(f"{target} exists and is not a folder: refusing to replace it with the "
                            f"{kind or 'folder'}", "choose a new or empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    if kind is not None:
        ensure_replaceable(target, kind)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        if kind is not None:
            mark(tmp, kind)
            ensure_replaceable(target, kind)  # it may have appeared while we worked
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a service user must be able to read it
        _fsync_tree(tmp)
        if target.exists() and _exchange(tmp, target):
            _fsync_dir(target.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
            return
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
