"""One measurement, in a fresh interpreter: ``python -m benchmarks.child '<json spec>'``.

A fresh process per measurement keeps one library's threads, queues and garbage out of
another's numbers.  The spec names the scenario, the subject, its target (the far end, in
another process) and the sizes; the result is one ``RESULT <json>`` line on stdout.

Scenarios:

- ``burst``: warm up, then a tight loop of ``n`` calls, ``flush()``, and wait until the far
  end has received every line.  Gives the call loop alone, call + delivery (the caller
  cost with all background work included), CPU time, and the delivered rate.
- ``memory``: against a dead service, peak RSS growth after 100,000 and after ``n`` lines.
- ``latency``: each of ``n`` calls timed on its own; percentiles and max.
- ``exit``: log ``n`` lines, print ``LOOP_END`` and return: the parent times the exit.
- ``construct``: build ``n`` handlers with the target's URL; time and RSS each, and the RSS
  still held once they are all closed.
- ``members``: one of the processes on one key (``role``: ``owner`` or ``member``), driven
  by the parent through stdin: warm up and say ``READY``, wait for ``GO`` (the start
  barrier, given to every process at once), a tight loop of ``n`` calls; a member then
  closes and reports, the owner waits for ``FINISH <lines logged> <members' drops>``
  (every member has left), delivers, closes and reports.  Each gives its loop's wall and caller-thread CPU, its
  start and end (for the overlap), and its writer's stats.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Optional

from .common import MESSAGE
from .subjects import ACCOUNT, TOKEN, Subject, Unavailable, build, wait_received


def _logger(subject: Subject) -> logging.Logger:
    logger = logging.getLogger("bench")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(subject.handler)
    return logger


def _flush(subject: Subject) -> None:
    # Every library's documented "send what you have now"; none is charged for its timer.
    subject.handler.flush()


def _warm(subject: Subject, info: Callable[..., None], n: int, timeout: float) -> int:
    """Log ``n`` lines and wait for them to arrive (starts workers, opens connections)."""
    base = subject.received() if subject.received else 0
    for i in range(n):
        info(MESSAGE, i)
    _flush(subject)
    _, got = wait_received(subject, base + n, timeout)
    gc.collect()
    return got


def burst(subject: Subject, spec: dict[str, Any]) -> dict[str, Any]:
    info = _logger(subject).info
    n, warm = spec["n"], spec.get("warm", 2000)
    base = _warm(subject, info, warm, spec.get("timeout", 60))
    t0 = time.perf_counter()
    c0 = time.process_time()
    for i in range(n):
        info(MESSAGE, i)
    t1 = time.perf_counter()
    _flush(subject)
    t2, got = wait_received(subject, base + n, spec.get("timeout", 60))
    c2 = time.process_time()
    delivered = got - base
    complete = delivered >= n
    return {
        "call_us": (t1 - t0) / n * 1e6,
        "total_us": (t2 - t0) / n * 1e6 if complete else None,
        "cpu_us": (c2 - c0) / n * 1e6,
        "rate": n / (t2 - t0) if complete else None,
        "delivery_s": t2 - t1,
        "delivered": delivered,
        "dropped": subject.dropped(),  # None: the library does not count what it drops
    }


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory(subject: Subject, spec: dict[str, Any]) -> dict[str, Any]:
    info = _logger(subject).info
    for i in range(1000):  # start the workers; against a dead service these just wait
        info(MESSAGE, i)
    time.sleep(0.3)
    gc.collect()
    if not _reset_peak():
        return {"error": "cannot reset the peak RSS (/proc/self/clear_refs)"}
    rss0 = _status_kib("VmRSS")
    growth: dict[str, float] = {}
    done, loop_time = 0, 0.0
    for mark in spec["marks"]:
        t0 = time.perf_counter()
        for i in range(done, mark):
            info(MESSAGE, i)
        loop_time += time.perf_counter() - t0
        done = mark
        time.sleep(spec.get("settle", 0.5))  # let the background catch up to its bound
        growth[str(mark)] = (_status_kib("VmHWM") - rss0) / 1024
    return {"growth_mib": growth, "call_us": loop_time / done * 1e6, "dropped": subject.dropped()}


def _percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency(subject: Subject, spec: dict[str, Any]) -> dict[str, Any]:
    info = _logger(subject).info
    n = spec["n"]
    if spec.get("warm"):
        _warm(subject, info, spec["warm"], spec.get("timeout", 30))
    else:  # nothing can arrive: start the workers, and collect as _warm() does
        for i in range(1000):
            info(MESSAGE, i)
        time.sleep(0.3)
        gc.collect()
    samples = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        info(MESSAGE, i)
        samples[i] = clock() - start
    samples.sort()
    return {
        "p50_us": _percentile(samples, 0.50) / 1e3,
        "p99_us": _percentile(samples, 0.99) / 1e3,
        "p999_us": _percentile(samples, 0.999) / 1e3,
        "max_ms": samples[-1] / 1e6,
        "dropped": subject.dropped(),
    }


def exit_(subject: Subject, spec: dict[str, Any]) -> None:
    info = _logger(subject).info
    for i in range(spec["n"]):
        info(MESSAGE, i)
    print(f"LOOP_END {time.time():.6f}", flush=True)
    # Returning lets the interpreter exit as any program does: atexit hooks, then
    # logging.shutdown() (flush and close every handler).


def _stats(subject: Subject) -> Optional[dict[str, Any]]:
    stats = getattr(subject.handler, "stats", None)  # lelog's; the floor has none
    if stats is None:
        return None
    return {
        "accepted": stats.accepted,
        "sent": stats.sent,
        "pending": stats.pending,
        "dropped": dict(stats.dropped),
        "shared": stats.shared,
        "handed_on": stats.handed_on,
        "uploaded": stats.uploaded,
    }


def members(subject: Subject, spec: dict[str, Any]) -> dict[str, Any]:
    """One process of the members row (the ``members`` scenario above)."""
    info = _logger(subject).info
    n, warm, timeout = spec["n"], spec.get("warm", 2000), spec.get("timeout", 60)
    if spec["role"] == "owner":
        # Its first line takes the stream's host-wide lock: it owns the stream before any
        # member starts (the parent starts them on READY), and its warm-up is delivered.
        _warm(subject, info, warm, timeout)
    else:
        for i in range(warm):  # its first line finds the stream owned: it joins as a member
            info(MESSAGE, i)
        gc.collect()
    print("READY " + json.dumps(_stats(subject)), flush=True)
    if sys.stdin.readline().strip() != "GO":
        return {"error": "no GO from the parent"}
    start, t0, c0 = time.time(), time.perf_counter(), time.thread_time()
    for i in range(n):
        info(MESSAGE, i)
    t1, c1, end = time.perf_counter(), time.thread_time(), time.time()
    result: dict[str, Any] = {
        "call_us": (t1 - t0) / n * 1e6,
        "caller_cpu_us": (c1 - c0) / n * 1e6,  # the calling thread's alone: no waits counted
        "start": start,
        "end": end,
    }
    if spec["role"] == "owner":
        # FINISH <lines logged on the key> <lines the members dropped>: they have all left.
        words = sys.stdin.readline().split()
        if words[:1] != ["FINISH"]:
            return {**result, "error": "no FINISH from the parent"}
        _flush(subject)
        # Wait until the owner has read every line its members sent, and the service has
        # every line the owner did not count as dropped.  (A member's last lines dropped are
        # a gap no later line shows the owner: only the member counts them.)
        with_owner, deadline = int(words[1]) - int(words[2]), time.perf_counter() + timeout
        stats = getattr(subject.handler, "stats", None)
        while subject.received and stats is not None and time.perf_counter() < deadline:
            stats = subject.handler.stats  # type: ignore[attr-defined]
            if stats.accepted >= with_owner and subject.received() >= stats.accepted - stats.dropped_total:
                break
            time.sleep(0.005)
        result["delivery_s"] = time.perf_counter() - t1
    subject.close()
    result["stats"] = _stats(subject)
    return result


def construct(spec: dict[str, Any]) -> dict[str, Any]:
    import lelog

    n, url = spec["n"], spec["target"]["url"]

    def handler(name: str) -> logging.Handler:
        return lelog.StreamHandler(f"bench/{name}", url=url, account_id=ACCOUNT, token=TOKEN)

    # The warm-up handler stays open: whatever the first one builds for the rest to share
    # (an SSL context per TLS configuration) is built once, as in a real program.
    first = handler("construct-warm")
    gc.collect()
    rss0 = _status_kib("VmRSS")
    t0 = time.perf_counter()
    handlers = [handler(f"construct-{i}") for i in range(n)]
    t1 = time.perf_counter()
    gc.collect()
    rss1 = _status_kib("VmRSS")
    for h in handlers:
        h.close()
    del handlers
    gc.collect()
    rss2 = _status_kib("VmRSS")
    first.close()
    return {
        "build_ms": (t1 - t0) / n * 1e3,
        "rss_mib_each": (rss1 - rss0) / 1024 / n,
        "rss_mib_total": (rss1 - rss0) / 1024,
        "held_after_close_mib": (rss2 - rss0) / 1024,
    }


SCENARIOS = {"burst": burst, "memory": memory, "latency": latency, "members": members}


def main() -> int:
    spec = json.loads(sys.argv[1])
    if spec["scenario"] == "construct":
        print("RESULT " + json.dumps(construct(spec)), flush=True)
        os._exit(0)
    try:
        subject = build(spec["subject"], spec.get("target", {}), spec.get("options", {}))
    except Unavailable as exc:
        print("RESULT " + json.dumps({"skipped": str(exc)}), flush=True)
        return 0
    if spec["scenario"] == "exit":
        exit_(subject, spec)
        return 0
    try:
        result = SCENARIOS[spec["scenario"]](subject, spec)
    finally:
        subject.cleanup()
    print("RESULT " + json.dumps(result), flush=True)
    # No clean shutdown here: exit time is its own scenario, and a peer stuck on a dead
    # service must not stall the harness.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
