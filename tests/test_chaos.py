"""The chaos run (tests/chaos.py), short, inside the normal suite.

The long runs are ``python -m tests.chaos --seed N --seconds S``; these keep the invariant
checks themselves from rotting and catch a regression that shows within a few seconds.
"""

from __future__ import annotations

import subprocess
import sys

from tests.chaos import INVARIANTS, run_chaos, summary
from tests.helpers import ROOT


def test_a_short_seeded_run_keeps_every_invariant() -> None:
    result = run_chaos(seed=7, seconds=3.0, producers=3)
    report = summary(result)
    assert result.ok, report
    # The run did what it is for: lines through every path, faults hit, checks ran.
    submitted = result.figures["submitted"]
    assert all(submitted.get(tag, 0) > 100 for tag in "bhl"), report
    assert sum(result.applied.values()) > 0, report
    assert result.figures["dropped"]["overflow"] > 0, report
    streams = result.figures["streams"]
    for name in ("accounting", "ground truth", "blob", "live", "close deadline"):
        assert result.checks[name][1] == streams, f"{name} not checked on every stream\n{report}"
    for name in ("never blocks", "threads", "memory", "no internal error"):
        assert result.checks[name] == [1, 1], report


def test_the_command_line_run_exits_cleanly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--seed", "3", "--seconds", "3", "--producers", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr
    assert "can't create new thread" not in proc.stderr, proc.stderr
    for name in INVARIANTS:
        assert f"FAIL  {name}" not in proc.stdout
    assert "PASS  accounting" in proc.stdout, proc.stdout
    assert "reproduce: python -m tests.chaos --seed 3 --seconds 3 --producers 3" in proc.stdout
