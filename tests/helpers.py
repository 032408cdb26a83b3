"""Helpers shared by the tests: subprocess runs with a hard timeout, free ports, waiting on a
condition."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent

#: How long a test waits for something another thread or process does.  It bounds a failure,
#: not a figure: on a loaded 2-core machine a healthy wait ends in well under a second.
GENEROUS = 30.0


def without_lelog_variables() -> dict[str, str]:
    """This process's environment without the ``LELOG_*`` variables a test may have from
    outside, but for the runtime directory of the test's own (``conftest.py``)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LELOG_") or k == "LELOG_RUNTIME_DIR"}


def dead_url() -> str:
    """The URL of a port on which nothing listens (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def stream_dictconfig(close_timeout: float = 5) -> str:
    """The start of a child script: a ``lelog.StreamHandler`` on key ``k`` of the service at
    ``{url!r}``, configured on the root logger by ``dictConfig(CFG)``.  The script is then
    ``.format(url=...)``-ed, so its own braces are doubled, as these are."""
    return f"""
import logging, logging.config, lelog
CFG = {{{{
    "version": 1,
    "handlers": {{{{"stream": {{{{"()": "lelog.StreamHandler", "key": "k", "url": {{url!r}},
                             "account_id": "acct", "token": "secret-token", "close_timeout": {close_timeout}}}}}}}}},
    "root": {{{{"level": "INFO", "handlers": ["stream"]}}}},
}}}}
logging.config.dictConfig(CFG)"""


def wait_until(predicate: Callable[[], object], timeout: float = GENEROUS) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last truth.

    For a condition another thread or process brings about: a test waits on it instead of
    sleeping for a figure, so a slow machine makes the test slower, never red.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(0.005)
    return True


def run_python(
    code: str, *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang fails the test through ``timeout``."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(ROOT),
    )


@contextlib.contextmanager
def writer_threads_refused() -> Iterator[None]:
    """Make starting a writer's worker fail as Python 3.12+ does at interpreter shutdown."""
    original = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name.startswith("lelog-writer"):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        original(self)

    threading.Thread.start = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
