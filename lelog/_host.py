"""Facts about this host and its processes that tell one process apart from every other.

A pid alone names no process for long: it is reused, and each pid namespace (a container,
``unshare --pid``) numbers its processes from 1.  The boot id, a process's start time (clock
ticks since boot, the same in every namespace) and its pid namespace make a pid unique on the
host.  They come from Linux's ``/proc``; elsewhere they are None and only the pid is known.

A leaf module: the standard library only.
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["boot_id", "pid_namespace", "proc_stat"]


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
