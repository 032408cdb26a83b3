"""lelog's per-line work without its guarantees, as a bare handler: what those guarantees cost.

Not lelog and not for use: no recursion guard, lock, counters, bounds, retries, fork or exit
handling.  It does the per-line work lelog does: capture on the caller (no extras here), then
on one worker thread lelog's own one-pass encoder (``lelog._encode.encode_batch``: logfmt,
mask, JSON) per batch, a history kept for the final upload, and one PUT of up to 5,000 lines
through ``LogServiceClient``.  Run it as the ``prototype`` subject:
``python -m benchmarks --rows sustained --subjects floor,lelog,prototype``.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from lelog._encode import RecordLine, encode_batch

from .common import BATCH


class PrototypeHandler(logging.Handler):
    def __init__(self, key: str, url: str, account_id: str, token: str) -> None:
        from lelog import LogConfig
        from lelog._client import LogServiceClient

        super().__init__()
        config = LogConfig(url=url, account_id=account_id, token=token)
        self._client = LogServiceClient(config)
        self._client.open_stream(key)
        self._key = key
        self._masker = config.masker() or None
        self._trim = config.trim_new_line_suffix
        # deque.append and popleft are atomic under the GIL: the caller takes no lock.
        self._captured: collections.deque[Any] = collections.deque()
        self._history: collections.deque[bytes] = collections.deque(maxlen=200_000)
        self._wake = threading.Event()
        self._sleeping = False
        self._stopping = False
        self._pos = 0
        self._thread = threading.Thread(target=self._run, name="prototype-worker", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> Any:  # emit is lock-free: no handler lock
        rv = self.filter(record)
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        self._captured.append(
            (record.created, record.levelname, record.getMessage(), None, RecordLine.EXTRAS_AS_ARGS)
        )
        if self._sleeping:  # the worker re-checks the deque after saying so: no lost wake-up
            self._sleeping = False
            self._wake.set()

    def flush(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(10)
        super().close()

    def _run(self) -> None:
        captured = self._captured
        while True:
            if not captured:
                if self._stopping:
                    return
                self._sleeping = True
                if not captured:
                    self._wake.wait(0.2)
                    self._wake.clear()
                self._sleeping = False
                continue
            pop = captured.popleft
            batch = [pop() for _ in range(min(len(captured), BATCH))]
            lines = encode_batch(batch, self._pos, self._masker, self._trim)[0]
            self._pos += len(lines)
            self._history.extend(lines)
            try:
                self._client.write(self._key, lines)
            except Exception:  # a prototype: a lost batch shows as lines not delivered
                pass
