"""gevent-patched programs (pitfalls.md 17): the writer works with cooperative locks and threads."""

from __future__ import annotations

import pytest

from tests.helpers import run_python
from tests.service import FakeLogService

pytest.importorskip("gevent")

SCRIPT = """
from gevent import monkey
monkey.patch_all()
import logging, time
import lelog

config = lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token", read_timeout=1)
handler = lelog.StreamWriter("gevent-key", config, flush_interval=0.05, close_timeout={budget})
worst = 0.0
import gc
gc.collect()
gc.disable()  # a garbage collection is not the writer waiting
for i in range(2000):
    start = time.perf_counter()
    handler.write_line(f"line {{i}}")
    worst = max(worst, time.perf_counter() - start)
start = time.monotonic()
stats = handler.close()
print(stats.sent, stats.accepted, round(worst * 1000, 2), round(time.monotonic() - start, 2))
"""


def test_writer_under_gevent_delivers_everything(service: FakeLogService) -> None:
    result = run_python(SCRIPT.format(url=service.url, budget=5), timeout=60)
    assert result.returncode == 0, result.stderr
    sent, accepted, _worst_ms, _close_s = result.stdout.split()
    assert int(sent) == int(accepted) == 2000
    assert [row["pos"] for row in service.blob_lines("gevent-key")] == list(range(2000))


def test_writer_under_gevent_against_a_blackhole_neither_blocks_nor_hangs(service: FakeLogService) -> None:
    service.blackhole(True)
    result = run_python(SCRIPT.format(url=service.url, budget=1.5), timeout=60)
    service.blackhole(False)
    assert result.returncode == 0, result.stderr
    sent, accepted, worst_ms, close_s = result.stdout.split()
    assert int(accepted) == 2000 and int(sent) == 0
    assert float(worst_ms) < 50
    assert float(close_s) < 1.5 + 0.6
