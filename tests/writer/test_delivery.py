"""The delivery alone, driven by ``step(now)`` against ``MemoryBackend`` and ``ManualClock``:
no thread, no sleep (as logtail's tests drive its flush worker's ``step()``)."""

from __future__ import annotations

from typing import Any, Optional

from lelog import LogConfig
from lelog._clock import Deadline
from lelog._delivery import Delivery, LiveState
from lelog._exceptions import LogServiceError, StreamNotFound, TransportError
from lelog._ledger import Ledger
from lelog._pipeline import Pipeline
from lelog._retry import RetryPolicy
from lelog.testing import ManualClock, MemoryBackend


class Faulty(MemoryBackend):
    """A memory backend whose next calls fail as told; each call can cost clock time."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.failures: dict[str, list[LogServiceError]] = {}
        self.cost: dict[str, float] = {}
        self.attempts: list[str] = []

    def _maybe_fail(self, call: str) -> None:
        self.attempts.append(call)
        self.clock.advance(self.cost.get(call, 0.0))
        queued = self.failures.get(call)
        if queued:
            raise queued.pop(0)

    def open_stream(self, key: str, **opts: Any) -> None:
        self._maybe_fail("open_stream")
        super().open_stream(key, **opts)

    def write(self, key: str, lines: Any, **opts: Any) -> None:
        self._maybe_fail("write")
        super().write(key, lines, **opts)

    def upload(self, key: str, lines: Any, **opts: Any) -> None:
        self._maybe_fail("upload")
        super().upload(key, lines, **opts)


def make(
    backend_clock: Optional[ManualClock] = None, **config: Any
) -> tuple[Ledger, Delivery, Faulty, ManualClock]:
    clock = backend_clock or ManualClock()
    ledger = Ledger(100, 1 << 20)
    cfg = LogConfig(**config)
    pipeline = Pipeline(
        ledger, clock, masker=None, trim_new_line_suffix=False, history_bytes=1 << 20,
        max_lines=100, max_bytes=1 << 20, key="k",
    )  # fmt: skip
    backend = Faulty(clock)
    waited: list[float] = []
    delivery = Delivery(
        backend, "k", cfg,
        RetryPolicy(max_attempts=3, first_wait=1.0, jitter=lambda wait: wait, clock=clock.monotonic),
        clock, ledger, pipeline,
        flush_interval=1.0, max_batch_lines=10, max_batch_bytes=1 << 20, max_lines=100, max_bytes=1 << 20,
        opens=True, closes=True, marks_evicted=True, warn=lambda kind, message: None,
        before_open=lambda deadline: waited.append(deadline.remaining()),
    )  # fmt: skip
    return ledger, delivery, backend, clock


def write(ledger: Ledger, delivery: Delivery, *texts: str) -> None:
    for text in texts:
        ledger.accept((1.0, "info", text + "\n", None, None), 8, released=False)
    _failure, taken = delivery._pipeline.drain()
    if taken is not None:
        delivery.take_in(taken)


def test_a_step_opens_then_pushes_a_batch_once_it_is_due() -> None:
    ledger, delivery, backend, clock = make()
    assert delivery.step(clock.monotonic()) == 0.0 and delivery.live_state is LiveState.OPEN
    write(ledger, delivery, "a", "b")
    wait = delivery.step(clock.monotonic())
    assert 0.99 < wait <= 1.0 and backend.outs("k") == []  # not due: a second old at most
    clock.advance(wait)
    assert delivery.step(clock.monotonic()) == 0.0
    assert backend.outs("k") == ["a", "b"] and ledger.snapshot(0).sent == 2


def test_a_full_batch_or_a_flush_is_pushed_at_once() -> None:
    ledger, delivery, backend, clock = make()
    delivery.step(clock.monotonic())
    write(ledger, delivery, *[f"l{i}" for i in range(10)])
    delivery.step(clock.monotonic())
    assert len(backend.outs("k")) == 10
    write(ledger, delivery, "flushed")
    delivery.push_upto = ledger.counters.accepted
    delivery.step(clock.monotonic())
    assert backend.outs("k")[-1] == "flushed"


def test_a_failed_push_is_retried_after_its_wait_while_lines_keep_coming() -> None:
    ledger, delivery, backend, clock = make()
    delivery.step(clock.monotonic())
    backend.failures["write"] = [TransportError("reset", call="write")]
    write(ledger, delivery, "a")
    clock.advance(1.0)
    assert delivery.step(clock.monotonic()) == 0.0  # the attempt failed: a retry is scheduled
    assert delivery.retry_at == clock.monotonic() + 1.0 and ledger.snapshot(0).retries == 1
    write(ledger, delivery, "b")  # accepted meanwhile
    assert delivery.step(clock.monotonic()) == 1.0  # waits for the retry, pushes nothing
    clock.advance(1.0)
    delivery.step(clock.monotonic())
    assert backend.outs("k") == ["a", "b"] and ledger.snapshot(0).sent == 2


def test_a_permanent_answer_stops_the_live_push_and_counts_the_lines_rejected() -> None:
    ledger, delivery, backend, clock = make()
    delivery.step(clock.monotonic())
    backend.failures["write"] = [StreamNotFound("stream: not found", status=400, call="write")]
    write(ledger, delivery, "a")
    clock.advance(1.0)
    delivery.step(clock.monotonic())
    assert delivery.live_state is LiveState.STOPPED
    write(ledger, delivery, "b")  # straight to the history: never pushed live
    stats = ledger.snapshot(0)
    assert stats.dropped["rejected"] == 2 and backend.outs("k") == []
    assert delivery.finish(Deadline.after(5.0, clock.monotonic), lambda: True)
    assert [line.out for line in backend.stream("k").uploaded or ()] == ["a\n", "b\n"]


def test_the_final_sequence_keeps_the_uploads_share_of_the_deadline_from_a_slow_push() -> None:
    """Open and the final push get 60 % of the close's time, the upload up to 85 %, the
    close the rest: a push that uses up its share cannot starve the upload."""
    ledger, delivery, backend, clock = make()
    write(ledger, delivery, "a")
    backend.cost["write"] = 7.0  # every attempt to push takes 7 s of a 10 s deadline
    backend.failures["write"] = [TransportError("slow", call="write")] * 5
    stored = delivery.finish(Deadline.after(10.0, clock.monotonic), lambda: True)
    assert stored  # uploaded and closed in the 3 s the push could not take
    # One push attempt fits in its 6 s share; the upload and the close still run.
    assert backend.attempts == ["open_stream", "write", "upload"]
    assert [name for name, _ in backend.calls] == ["open_stream", "upload", "close_stream"]
    stats = ledger.snapshot(0)
    assert stats.uploaded and stats.dropped["retries_exhausted"] == 1
