"""The per-user runtime directory: where lelog's processes on one host meet.

Stream locks (``_streamlock``) live here, so every process of the user that writes a stream
finds the same files.  The directory is, in this order:

* ``$LELOG_RUNTIME_DIR`` (tests and containers place it; empty or blank is a ``ConfigError``),
* ``$XDG_RUNTIME_DIR/lelog`` when ``XDG_RUNTIME_DIR`` names a directory of this user,
* ``<temp dir>/lelog-<uid>`` otherwise (``tempfile.gettempdir()``).

It is created 0700 and then checked: a directory (not a symlink), owned by this user,
writable by nobody else.  Anything else is a ``ConfigError`` naming the path and the fix: in
a shared temp directory another user could have made it first, to read or plant lock files.

A leaf module: the standard library and ``_exceptions`` only.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Mapping, Optional

from ._exceptions import ConfigError

__all__ = ["RUNTIME_DIR_ENV", "runtime_dir"]

#: The variable that places the runtime directory (tests, containers sharing a volume).
RUNTIME_DIR_ENV = "LELOG_RUNTIME_DIR"


def _uid() -> Optional[int]:
    getuid = getattr(os, "getuid", None)
    return None if getuid is None else int(getuid())


def _usable_xdg(value: str, uid: Optional[int]) -> bool:
    """Whether ``XDG_RUNTIME_DIR`` is what the spec promises: an absolute path to a
    directory of this user.  A stale or foreign one is passed over, not an error."""
    if not os.path.isabs(value):
        return False
    try:
        st = os.stat(value)
    except (OSError, ValueError):
        return False
    return (
        stat.S_ISDIR(st.st_mode) and (uid is None or st.st_uid == uid) and os.access(value, os.W_OK | os.X_OK)
    )


def _chosen(environ: Mapping[str, str], uid: Optional[int]) -> tuple[str, str]:
    """The path and where it came from (for the messages)."""
    override = environ.get(RUNTIME_DIR_ENV)
    if override is not None:
        if not override.strip():
            raise ConfigError(
                f"{RUNTIME_DIR_ENV} is empty: give a directory for lelog's locks, or unset it "
                "to use $XDG_RUNTIME_DIR/lelog or the temp directory"
            )
        if "\0" in override:
            raise ConfigError(f"{RUNTIME_DIR_ENV} holds a NUL byte: give a directory path")
        return os.path.abspath(override), RUNTIME_DIR_ENV
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if xdg and "\0" not in xdg and _usable_xdg(xdg, uid):
        return os.path.join(xdg, "lelog"), "XDG_RUNTIME_DIR"
    name = "lelog" if uid is None else f"lelog-{uid}"
    return os.path.join(tempfile.gettempdir(), name), "the temp directory"


def runtime_dir() -> str:
    """The runtime directory, created if needed and checked; see the module docstring."""
    uid = _uid()
    path, source = _chosen(os.environ, uid)
    fix = f"remove it, or set {RUNTIME_DIR_ENV} to a private directory"
    try:
        if source == RUNTIME_DIR_ENV:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # checked below, whoever made it
    except OSError as exc:
        raise ConfigError(
            f"lelog's runtime directory {path} (from {source}) cannot be created "
            f"({exc.strerror or exc}); set {RUNTIME_DIR_ENV} to a writable directory"
        ) from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(
            f"lelog's runtime directory {path} cannot be read ({exc.strerror or exc}); {fix}"
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"lelog's runtime directory {path} is a symbolic link; {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"lelog's runtime directory {path} is not a directory; {fix}")
    if uid is not None and st.st_uid != uid:
        raise ConfigError(
            f"lelog's runtime directory {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {uid}); {fix}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"lelog's runtime directory {path} is writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); chmod 700 it, or {fix}"
        )
    return path
