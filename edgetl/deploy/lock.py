"""One deploy or rollback at a time per install root: an flock held by a process on the device.

The lock is `flock(1)` on ROOT/.deploy.lock, held by a small process that waits on its
standard input. It is released when the deploy closes it, and also when the deploying
machine dies or the connection drops (the process sees end-of-file or SIGHUP and exits),
so a kill -9 never leaves a lock behind that someone must delete by hand. A second
deploy fails at once with one line instead of interleaving its steps with the first.
"""

from __future__ import annotations

import contextlib
import shlex
from typing import Iterator

from edgetl.errors import CheckFailedError

LOCK_NAME = ".deploy.lock"
BUSY = 75  # flock -E: the exit status when another holder has the lock


@contextlib.contextmanager
def device_lock(device, root: str) -> Iterator[None]:
    """Hold ROOT's deploy lock; `device.spawn(argv)` gives a process with stdout, stderr, wait() and close().

    Re-entrant per device connection: a step that takes the lock inside a longer operation already
    holding it (each candidate's install inside `--pick`) goes on under the outer hold."""
    held = device.__dict__.setdefault("_edgetl_locks", set())
    if root in held:
        yield
        return
    lock = f"{root}/{LOCK_NAME}"
    holder = device.spawn(["flock", "-n", "-E", str(BUSY), lock, "sh", "-c", "echo locked; exec cat >/dev/null"])
    try:
        first = holder.stdout.readline()
        if first.strip() != "locked":
            code = holder.wait()
            error = (holder.stderr.read() or "").strip()
            if code == BUSY:
                raise CheckFailedError(f"another deploy or rollback is at work on {device.name}:{root} "
                                       f"(it holds {shlex.quote(lock)})", "wait for it to finish, then try again")
            raise CheckFailedError(f"cannot lock {device.name}:{root} for the deploy: "
                                   f"{error.splitlines()[-1] if error else f'flock exited with {code}'}",
                                   "the device needs flock (util-linux) and a writable install folder")
        held.add(root)
        yield
    finally:
        held.discard(root)
        holder.close()

