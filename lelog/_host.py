"""Facts about this host and its processes that tell one process apart from every other.

A pid alone names no process for long: it is reused, and each pid namespace (a container,
``unshare --pid``) numbers its processes from 1.  The boot id, a process's start time (clock
ticks since boot, the same in every namespace) and its pid namespace make a pid unique on the
host.  They come from Linux's ``/proc``; elsewhere they are None and only the pid is known.

A leaf module: the standard library only.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
from typing import Optional

__all__ = ["boot_id", "locking_pid", "pid_namespace", "proc_stat"]

# struct flock, for F_GETLK: Linux's field order, else the BSDs' and macOS's.
if sys.platform.startswith("linux"):
    _FLOCK, _FIELDS = "hhqqi", ("type", "whence", "start", "len", "pid")
else:  # pragma: no cover - not the test machine's layout
    _FLOCK, _FIELDS = "qqihh", ("start", "len", "pid", "type", "whence")


def locking_pid(fd: int) -> Optional[int]:
    """The pid (as seen here; 0 when not visible) of a process holding a lock on ``fd``'s
    file that would conflict with an exclusive one on the whole file, or None when none
    does.  Never takes a lock, so nobody else's is refused because of a look (``OSError``
    when the kernel cannot answer)."""
    ask = {"type": fcntl.F_WRLCK, "whence": os.SEEK_SET, "start": 0, "len": 0, "pid": 0}
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, *(ask[f] for f in _FIELDS)))
    got = dict(zip(_FIELDS, struct.unpack(_FLOCK, answer)))
    return None if got["type"] == fcntl.F_UNLCK else int(got["pid"])


def boot_id() -> Optional[str]:
    """The id of this boot of the machine (Linux), shared by every container on it."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """The state and start time (clock ticks since boot) of process ``pid`` from Linux's
    ``/proc``; None when there is no such process or no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None


def pid_namespace() -> Optional[str]:
    """This process's pid namespace, e.g. ``pid:[4026531836]`` (Linux); None elsewhere."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
