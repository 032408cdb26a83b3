"""One deadline for every way a program ends, tested from child processes.

The bounds here are hang bounds with a wide margin: the old behaviour took 2 x
``close_timeout`` per handler, one after another (12 s for three handlers at 2 s); the
precise figure, ``close_timeout`` + 0.5 s, is measured in ``benchmarks/``.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import dead_url, run_python
from tests.service import FakeLogService

SHUTDOWN_SCRIPT = """
import logging, time, lelog
root = logging.getLogger()
root.setLevel(logging.INFO)
for n in range(3):
    root.addHandler(lelog.StreamHandler(f"k{{n}}", url={url!r}, account_id="acct",
                                        token="secret-token", close_timeout=2))
for i in range(20):
    logging.info("line %d", i)
start = time.monotonic()
{ending}
print("ENDED", round(time.monotonic() - start, 2), flush=True)
"""


def shut_down(url: str, ending: str = "logging.shutdown()") -> float:
    result = run_python(SHUTDOWN_SCRIPT.format(url=url, ending=ending), timeout=60)
    assert result.returncode == 0, result.stderr
    tag, elapsed = result.stdout.split()
    assert tag == "ENDED"
    return float(elapsed)


@pytest.mark.parametrize("kind", ["refusing", "blackhole"])
def test_logging_shutdown_finishes_three_handlers_within_one_budget(
    service: FakeLogService, kind: str
) -> None:
    if kind == "blackhole":
        service.blackhole(True)
    elapsed = shut_down(dead_url() if kind == "refusing" else service.url)
    service.blackhole(False)
    assert elapsed < 2 * 2, f"logging.shutdown() took {elapsed} s with close_timeout=2"


def test_logging_shutdown_on_a_slow_service_still_delivers_every_line(service: FakeLogService) -> None:
    service.stall_next(10_000, seconds=0.5)  # every request answered after 0.5 s
    elapsed = shut_down(service.url)
    service.clear_faults()
    assert elapsed < 2 * 2, f"logging.shutdown() took {elapsed} s with close_timeout=2"
    for n in range(3):
        live = [row["out"] for row in service.all_written(f"k{n}")]
        assert len(live) == 20, live
        assert all(out.endswith(f'msg="line {i}"\n') for i, out in enumerate(live)), live


@pytest.mark.parametrize("kind", ["refusing", "blackhole"])
def test_flush_then_close_share_one_budget_when_the_service_fails(service: FakeLogService, kind: str) -> None:
    if kind == "blackhole":
        service.blackhole(True)
    ending = "h = root.handlers[0]\nh.flush()\nh.close()"
    elapsed = shut_down(dead_url() if kind == "refusing" else service.url, ending)
    service.blackhole(False)
    assert elapsed < 2 * 1.5, f"flush() + close() took {elapsed} s with close_timeout=2"


def test_exit_finishes_every_handler_within_one_budget(service: FakeLogService) -> None:
    """No explicit shutdown: lelog's exit hook, then logging's own, within one budget."""
    service.blackhole(True)
    start = time.monotonic()
    shut_down(service.url, ending="pass")
    elapsed = time.monotonic() - start
    service.blackhole(False)
    assert elapsed < 2 * 2 + 5, f"the exit took {elapsed:.1f} s"  # + interpreter start-up
