"""The claim alone: what a process holds on the host for a stream it owns, and lets go of."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lelog import FileStore, LogConfig
from lelog._claim import Claim, Ending, Hold
from lelog._streamlock import StreamName, holder_of
from lelog.testing import MemoryBackend
from tests.helpers import ROOT


def _claim(store: FileStore, warnings: list[str]) -> Claim:
    return Claim("k", LogConfig(), store, lambda kind, text: warnings.append(f"{kind}: {text}"))


def test_the_stream_lock_is_held_from_hold_stream_until_let_go(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    name = StreamName.of(LogConfig(), store, "k")
    warnings: list[str] = []
    claim = _claim(store, warnings)
    assert holder_of(name) is None
    assert claim.hold_stream() is Hold.HELD
    assert claim.hold_stream() is Hold.HELD  # again (an open retried): still the one lock
    holder = holder_of(name)
    assert holder is not None and holder.is_this_process() and holder.purpose == "writer"
    assert _claim(store, warnings).hold_stream() is Hold.HERE  # another engine of this process waits
    claim.let_go(Ending.STORED, 1.0)
    assert holder_of(name) is None and warnings == []


def test_a_fork_child_forgets_the_claim_and_the_parent_keeps_the_stream(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    name = StreamName.of(LogConfig(), store, "k")
    claim = _claim(store, [])
    claim.hold_stream()
    pid = os.fork()
    if pid == 0:  # the child: none of it is its own; letting go must release nothing
        try:
            claim.forget_in_child()
            claim.let_go(Ending.NOT_STORED, 1.0)
            claim.abandon()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    holder = holder_of(name)
    assert holder is not None and holder.is_this_process()  # still the parent's
    claim.abandon()
    assert holder_of(name) is None


def test_a_test_double_has_no_host_wide_stream() -> None:
    warnings: list[str] = []
    claim = Claim("k", LogConfig(), MemoryBackend(), lambda kind, text: warnings.append(text))
    assert claim.hold_stream() is Hold.NONE and claim.meeting is None and not claim.join()
    claim.let_go(Ending.STORED, 1.0)
    assert warnings == []


HOLDER = """
import sys, time
from lelog import FileStore, LogConfig
from lelog._claim import Claim, Ending, Hold
claim = Claim("k", LogConfig(), FileStore(sys.argv[1]), lambda kind, text: None)
claim.hold_stream()
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_stream_another_process_holds_is_joined_and_the_last_one_out_finishes_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        warnings: list[str] = []
        claim = _claim(FileStore(tmp_path), warnings)
        assert claim.hold_stream() is Hold.OTHER and claim.join()
        assert not claim.take_over()  # the holder lives
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    assert claim.take_over()  # the holder is gone: this process owns the stream now
    assert claim.last_out()  # and nobody else writes it
    claim.let_go(Ending.STORED, 1.0)
    assert warnings == []
