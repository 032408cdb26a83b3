"""Where lelog's time goes, stage by stage: ``python -m benchmarks.stages [--n N]``.

Prints one markdown table (also written to ``benchmarks/results-stages.md``, git-ignored):

- **caller stages**, each timed alone with ``time.thread_time()`` (this thread's CPU only, so
  a worker running meanwhile is not counted): logging's own work (the floor call, and of it
  ``findCaller``, the ``LogRecord`` and ``getMessage``), the writer's enqueue, the whole call
  through ``lelog.StreamHandler`` with its own formatter (the record captured) and with a
  formatter set (formatted on the caller); what the capture costs is the difference;
- **worker stages**, per line, on batches of the default 5,000 lines: masking the token,
  encoding captured records (logfmt and JSON in one pass) and lines formatted on the caller
  (checked to be the same bytes), the live queue's bookkeeping in a burst (queue each
  drained run, cut it into PUTs, pop each pushed one) and with the service down (full, each
  run evicting as much), the history ring held full by its budget (each run evicting as
  much), the PUT body, and the PUT itself through ``LogServiceClient.write``
  to the fake service (its CPU on this side only);
- **per-thread CPU** over a real burst through the handler, read from
  ``/proc/self/task/*/stat`` after the service has every line, per thread and per line.

Every figure is the median of ``--reps`` runs.  The fake service runs in its own process.
``--only worker`` (or ``caller``, ``burst``) runs one group.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .common import BATCH, MESSAGE
from .run import Far
from .subjects import ACCOUNT, TOKEN, StatsPoller, _Floor, wait_received

ROOT = Path(__file__).resolve().parent.parent
DRAIN = 1700  # lines the worker takes at a time in the live-queue stage: not a divisor of BATCH,
# so PUTs both join runs and cut them, as in a burst
GROUPS = ("caller", "worker", "burst")


def per_call_us(fn: Callable[[], Any], n: int, reps: int) -> float:
    """Median over ``reps`` of this thread's CPU per call of ``fn``, in µs."""
    runs = []
    for _ in range(reps):
        c0 = time.thread_time()
        for _ in range(n):
            fn()
        runs.append((time.thread_time() - c0) / n * 1e6)
    return statistics.median(runs)


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def _ticks() -> dict[int, int]:
    """CPU clock ticks (user + system) of each of this process's threads, by native id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = int(fields[11]) + int(fields[12])  # utime, stime
    return out


def caller_stages(url: str, n: int, reps: int) -> list[tuple[str, float, str]]:
    import lelog
    from lelog import LogfmtFormatter

    floor = _logger("stages.floor", _Floor())
    record = floor.makeRecord("stages", logging.INFO, __file__, 1, MESSAGE, (7,), None)
    formatter = LogfmtFormatter()
    text = formatter.format(record)
    handler = lelog.StreamHandler("stages/caller", url=url, account_id=ACCOUNT, token=TOKEN)
    lelog_logger = _logger("stages.lelog", handler)  # its own formatter: records are captured
    on_caller = lelog.StreamHandler("stages/formatted", url=url, account_id=ACCOUNT, token=TOKEN)
    on_caller.setFormatter(LogfmtFormatter())  # another formatter: formatted on the caller
    formatted_logger = _logger("stages.formatted", on_caller)
    writer = handler.writer
    created = record.created
    i = iter(range(10**9))
    rows = [
        (
            "floor: `logger.info` to a do-nothing handler",
            per_call_us(lambda: floor.info(MESSAGE, 7), n, reps),
        ),
        ("  of it, `logger.findCaller()`", per_call_us(floor.findCaller, n, reps)),
        (
            "  of it, `LogRecord(...)`",
            per_call_us(
                lambda: logging.LogRecord("stages", logging.INFO, __file__, 1, MESSAGE, (7,), None, "f"),
                n,
                reps,
            ),
        ),
        ("  of it, `LogRecord.getMessage()`", per_call_us(record.getMessage, n, reps)),
        (
            "enqueue: `writer.write_line` (lock, counters, deque append, wake)",
            per_call_us(lambda: writer.write_line(text, "info", None, time=created), n, reps),
        ),
        (
            "the whole call through `lelog.StreamHandler`, its own formatter: captured",
            per_call_us(lambda: lelog_logger.info(MESSAGE, next(i)), n, reps),
        ),
        ("formatter: `LogfmtFormatter.format`", per_call_us(lambda: formatter.format(record), n, reps)),
        (
            "the whole call with a formatter set: formatted on the caller",
            per_call_us(lambda: formatted_logger.info(MESSAGE, next(i)), n, reps),
        ),
    ]
    handler.close()
    on_caller.close()
    captured = rows[5][1] - rows[0][1] - rows[3][1]
    rows.append(("  captured: the rest (recursion guard, filters, checks, capture, call)", captured))
    return [(name, us, "caller") for name, us in rows]


def worker_stages(url: str, reps: int) -> list[tuple[str, float, str]]:
    from lelog import LogConfig, LogfmtFormatter
    from lelog._client import LogServiceClient
    from lelog._encode import RecordLine, encode_batch
    from lelog._line import json_array

    config = LogConfig(url=url, account_id=ACCOUNT, token=TOKEN)
    masker = config.masker()
    formatter = LogfmtFormatter()
    now = time.time()
    records = [
        logging.LogRecord("stages", logging.INFO, __file__, 1, MESSAGE, (k,), None) for k in range(BATCH)
    ]
    for k, record in enumerate(records):  # one time for the text and the line, as a handler has
        record.created = now + k * 1e-5
    items = [(now + k * 1e-5, "info", formatter.format(r) + "\n", None, None) for k, r in enumerate(records)]
    captured = [
        (now + k * 1e-5, "INFO", r.getMessage(), None, RecordLine.EXTRAS_AS_ARGS)
        for k, r in enumerate(records)
    ]
    trim = config.trim_new_line_suffix  # the default: False, lines keep their "\n"
    encoded, _ = encode_batch(items, 0, masker, trim)
    if encode_batch(captured, 0, masker, trim)[0] != encoded:
        raise AssertionError("captured records encode to other bytes than formatted ones")

    def per_line(fn: Callable[[], Any]) -> float:
        return per_call_us(fn, 1, reps * 3) / BATCH

    client = LogServiceClient(config)
    key = "stages/worker"
    client.open_stream(key)
    client.write(key, encoded)  # connect first: the burst keeps its connection
    rows = [
        ("mask one line (the token; `Masker.mask`)", per_line(lambda: [masker.mask(t[2]) for t in items])),
        (
            "encode captured records with masking (`encode_batch`: logfmt + JSON, what the worker runs)",
            per_line(lambda: encode_batch(captured, 0, masker, trim)),
        ),
        (
            "encode lines formatted on the caller, with masking (a user's formatter)",
            per_line(lambda: encode_batch(items, 0, masker, trim)),
        ),
        (
            f"live queue: extend + batch + pop per line (runs of {DRAIN:,}, PUTs of {BATCH:,})",
            live_queue_us(encoded * 60, reps),
        ),
        (
            "live queue: extend per line, full and evicting (service down)",
            live_overflow_us(encoded * 60, reps),
        ),
        (
            f"history: extend per line, full and evicting (runs of {DRAIN:,})",
            history_overflow_us(encoded * 60, reps),
        ),
        ("PUT body (`json_array`)", per_line(lambda: json_array(encoded))),
        (
            f"PUT of {BATCH:,} lines (`LogServiceClient.write`, this side's CPU)",
            per_line(lambda: client.write(key, encoded)),
        ),
    ]
    client.close_stream(key)
    client.close()
    return [(name, us, "worker") for name, us in rows]


def _drained_runs(lines: list[bytes]) -> list[list[bytes]]:
    """``lines`` as the worker drains them in a burst: runs of ``DRAIN``."""
    return [lines[start : start + DRAIN] for start in range(0, len(lines), DRAIN)]


def live_queue_us(lines: list[bytes], reps: int) -> float:
    """The worker's live-queue work per line in a burst, on the writer's default bounds: each
    drained run queued, PUTs of ``BATCH`` lines cut from the head, each popped as pushed."""
    from lelog import WriterOptions
    from lelog._buffers import LiveQueue

    opts = WriterOptions()
    runs = _drained_runs(lines)

    def marker(lost: int, pos: int) -> bytes:  # pragma: no cover - nothing is lost here
        raise AssertionError(f"{lost} lines lost from the live queue at {pos}")

    def burst() -> None:
        queue = LiveQueue(opts.max_pending_lines, opts.max_pending_bytes)
        pos = 0
        for run in runs:
            queue.extend(run, 1, pos, 0.0)
            pos += len(run)
            while queue.due(0.0, 1.0, opts.max_batch_lines, opts.max_batch_bytes):
                queue.pop(
                    queue.batch(opts.max_batch_lines, opts.max_batch_bytes, marker), pushed=True, now=0.0
                )
        while queue.entries:
            queue.pop(queue.batch(opts.max_batch_lines, opts.max_batch_bytes, marker), pushed=True, now=0.0)

    return per_call_us(burst, 1, reps * 3) / len(lines)


def live_overflow_us(lines: list[bytes], reps: int) -> float:
    """The live queue's work per line while the service is down: every drained run queued
    into a queue held full by its bounds, which evict as much from the head."""
    from lelog import WriterOptions
    from lelog._buffers import LiveQueue

    opts = WriterOptions()
    runs = _drained_runs(lines)

    def overflow() -> None:
        queue = LiveQueue(opts.max_pending_lines, opts.max_pending_bytes)
        pos = 0
        for run in runs:
            queue.extend(run, 1, pos, 0.0)
            pos += len(run)

    return per_call_us(overflow, 1, reps * 3) / len(lines)


def history_overflow_us(lines: list[bytes], reps: int) -> float:
    """The history's work per line in a sustained run: every encoded run kept in a ring held
    full by the default budget, which evicts as much from the head."""
    from lelog import WriterOptions
    from lelog._buffers import HistoryRing

    budget = WriterOptions().history_bytes
    runs = _drained_runs(lines)

    def overflow() -> None:
        ring = HistoryRing(budget)
        for run in runs:
            ring.extend(run)

    return per_call_us(overflow, 1, reps * 3) / len(lines)


def thread_cpu(url: str, n: int) -> list[tuple[str, float, str]]:
    """A burst through the handler: each thread's CPU per line until the service has them all."""
    import lelog

    key = "stages/burst"
    handler = lelog.StreamHandler(key, url=url, account_id=ACCOUNT, token=TOKEN)
    logger = _logger("stages.burst", handler)
    for k in range(2000):  # start the worker, open the stream and the connection
        logger.info(MESSAGE, k)
    handler.flush()
    names = {t.native_id: t.name for t in threading.enumerate()}
    main_id = threading.main_thread().native_id
    before = _ticks()
    w0, c0 = time.perf_counter(), time.process_time()
    for k in range(n):
        logger.info(MESSAGE, k)
    handler.flush()
    poller = StatsPoller(f"{url}/_stats?key={key}&accountID={ACCOUNT}")
    from .subjects import Subject

    wait_received(Subject(handler, received=poller.received), 2000 + n, 60)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    after = _ticks()
    poller.close()
    handler.close()
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    rows = []
    for tid, ticks in sorted(after.items(), key=lambda kv: -(kv[1] - before.get(kv[0], 0))):
        spent = (ticks - before.get(tid, 0)) * tick_us / n
        if spent > 0.05 or tid == main_id:  # (ticks are 10 ms: a short run shows 0 for some)
            name = "caller (main thread)" if tid == main_id else names.get(tid, f"thread {tid}")
            rows.append((f"thread CPU: {name}", spent, "burst"))
    rows.append(("process CPU, all threads", cpu / n * 1e6, "burst"))
    rows.append(("wall, loop until the service has every line", wall / n * 1e6, "burst"))
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls per caller figure and in the burst")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results-stages.md"))
    parser.add_argument("--only", choices=GROUPS, help="run one group of stages")
    args = parser.parse_args(argv)
    groups = [args.only] if args.only else GROUPS
    far = Far("service")
    rows: list[tuple[str, float, str]] = []
    try:
        if "caller" in groups:
            rows += caller_stages(far.url, args.n, args.reps)
        if "worker" in groups:
            rows += worker_stages(far.url, args.reps)
        if "burst" in groups:
            rows += thread_cpu(far.url, args.n)
    finally:
        far.stop()
    only = f" --only {args.only}" if args.only else ""
    lines = [
        f"Command: `python -m benchmarks.stages --n {args.n} --reps {args.reps}{only}` "
        f"(Python {sys.version.split()[0]}, {os.cpu_count()} cores)",
        "",
        "| where | stage | µs per call or line |",
        "|---|---|---|",
    ]
    lines += [f"| {where} | {name} | {us:.2f} |" for name, us, where in rows]
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
