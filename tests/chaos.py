"""The chaos run: the whole library against a misbehaving log service, checked by invariants.

::

    python -m tests.chaos --seed 1 --seconds 20 [--producers 4]

Producer threads log at full speed, through ``StreamHandler`` and ``StreamWriter.write_line``
into one shared writer, and as raw byte streams cut into random chunks (UTF-8 characters,
``\\r\\n`` and a secret split anywhere) through ``StreamWriter.write`` into writers of their
own.  Meanwhile a fault scheduler driven by ``random.Random(seed)`` makes the fake service
answer 5xx, 429 with Retry-After, reset connections, stall, blackhole, redirect, expire a
stream and restart (losing every live stream).  The run is cut into epochs of a few seconds:
at each switch the producers move to fresh writers (new keys, odd characters included) and
the old ones are closed under chaos, then written to once more (after close).  At the end
every stream is checked against the promises of docs/hazards.md and docs/protocol.md (see
``INVARIANTS``) and a summary table is printed; the exit code is 1 if any check failed.

The fake service runs in a subprocess (a ``multiprocessing`` manager): so the RSS measured
here is the library's, not the fake's ever-growing record of lines, and the fake's timing is
not distorted by the producers holding the GIL.  The fault schedule, the producers' chunking
and the keys are reproducible from the seed; how they interleave with the threads is not, so
two runs of one seed give close but not identical figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import os
import random
import re
import sys
import threading
import time
from multiprocessing.managers import BaseManager
from typing import Any, Callable, Iterable, Optional
from urllib.parse import unquote

import httpx

import lelog
from lelog import LogConfig, LogServiceClient, RetryPolicy, StreamHandler, StreamWriter
from lelog._masking import Masker
from tests.service import FakeLogService

__all__ = ["INVARIANTS", "ChaosResult", "main", "run_chaos"]

SECRET = "s3cr3t-Ü-t0ken"
ACCOUNT, TOKEN = "acct", "secret-token"
MARKER = "[lelog] "
_BUFFER_FULL = re.compile(r"\[lelog\] ([\d,]+) lines dropped: buffer full\n?\Z")
_NOT_LIVE = re.compile(r"\[lelog\] ([\d,]+) lines not streamed live \(service too slow or down\)")
_LINE = re.compile(r"([bhl])(\d+)-(\d+) ")

#: Per-writer options: budgets small enough that overflow and eviction really happen.
WRITER_OPTIONS: dict[str, Any] = dict(
    max_pending_lines=5000,
    max_pending_bytes=1 << 20,
    history_bytes=512 << 10,
    close_timeout=2.0,
    flush_interval=0.1,
    max_batch_lines=500,
    max_batch_bytes=64 << 10,
)
#: Short per-attempt timeouts so that a blackhole costs a fraction of an epoch.  The read
#: timeout is shorter than the longest stall on purpose: a stalled PUT that the service
#: applies after the client gave up is the at-least-once case the live invariant allows.
TIMEOUTS: dict[str, float] = dict(
    connect_timeout=1.0,
    read_timeout=0.6,
    write_timeout=1.0,
    pool_timeout=1.0,
    open_deadline=3.0,
    call_deadline=3.0,
    upload_deadline=3.0,
    max_retry_wait=0.2,
)
RETRY = RetryPolicy(first_wait=0.02, max_wait=0.2)
#: A close may overrun its timeout by the join slack and the scheduling of this process, which
#: shares the GIL with ~10 busy threads and, in the suite, the machine with other tests: a
#: bound on a hang, generous on purpose (the summary prints the slowest close as a figure).
CLOSE_SLACK = 2.0
#: An abandoned worker ends within its request's timeout; give it that and a margin.
THREAD_GRACE = max(TIMEOUTS[k] for k in ("connect_timeout", "read_timeout", "write_timeout")) + 1.0
#: One write/emit call slower than this is taken for blocking (the GIL is shared by ~10 busy
#: threads, so single calls of a few tens of milliseconds are normal).
BLOCKING = 1.0
#: Fault kinds and their weights; restart and expire end live streaming for good, so rarer.
FAULTS = {
    "fail": 3.0,
    "throttle": 2.0,
    "reset": 2.0,
    "stall": 2.0,
    "blackhole": 1.0,
    "redirect": 0.3,
    "expire": 0.3,
    "restart": 0.4,
}

INVARIANTS = {
    "accounting": "accepted == sent + sum(dropped by reason), pending == 0, closed",
    "ground truth": "accepted == lines submitted, after_close == late writes, no too_large, "
    "sent == data lines of the PUTs the service answered 2xx",
    "blob": "uploaded => stored; NDJSON; pos contiguous, no duplicate; starts at history_evicted; "
    "within history_bytes and full when lines were evicted",
    "blob content": "each line is one its producer submitted, masked, in order, once; the "
    "buffer-full markers account for every missing line",
    "live": "a pos repeats only if a PUT carrying it got no answer (at-least-once), with the "
    "same line; in order otherwise; lines as submitted and as in the blob; every gap "
    "marked, with the exact count where the blob shows it",
    "wire": "PUTs within max_batch_lines/bytes, contiguous pos; one request in flight per "
    "stream; no token to a storage link; no secret",
    "never blocks": "no write/emit call took >= %.1f s; producers switched writers promptly" % BLOCKING,
    "close deadline": "close() returned within close_timeout + %.1f s" % CLOSE_SLACK,
    "threads": "no thread started during the run alive %.1f s after the last close (an "
    "abandoned worker ends within its request timeout)" % THREAD_GRACE,
    "memory": "peak RSS growth within the budgets of the writers alive at once + 32 MiB",
    "no internal error": "lelog logged no internal failure (nor did the fake service)",
}


# ---- the fake service, in its own process ------------------------------------------------------


class ChaosService(FakeLogService):
    """The fake with the few extra calls the chaos run needs across the process boundary."""

    def base_url(self) -> str:
        return self.url

    def take_fault_counts(self) -> dict[str, int]:
        """Requests per applied fault since the last call; forgets them to bound memory.

        ``del`` of a list slice is one atomic step under the GIL, and the fake only appends,
        so no request is counted twice or lost.
        """
        n = len(self.requests)
        counts = collections.Counter(r.fault for r in self.requests[:n] if r.fault)
        del self.requests[:n]
        return dict(counts)

    def internal_errors(self) -> list[str]:
        """The fake's own bugs, if it had any (a harness failure, not lelog's)."""
        return [repr(exc) for exc in self.errors]

    def written_rows(self, key: str) -> list[tuple[int, str]]:
        """``(pos, out)`` of every line PUT to ``key``, in the order the service applied them."""
        return [(row["pos"], row["out"]) for row in self.all_written(key)]


def _serve(**kwargs: Any) -> ChaosService:
    """Start the fake in the manager process, and end that process if its parent dies."""
    service = ChaosService(**kwargs).start()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="fake-service-parent-watch", daemon=True).start()
    return service


class _Manager(BaseManager):
    pass


_Manager.register(
    "Service",
    callable=_serve,
    exposed=(
        "base_url",
        "take_fault_counts",
        "internal_errors",
        "written_rows",
        "blob",
        "fail_next",
        "throttle_next",
        "reset_next",
        "stall_next",
        "redirect_next",
        "blackhole",
        "restart",
        "expire_stream",
        "clear_faults",
        "stop",
    ),
)


# ---- what the client put on the wire ------------------------------------------------------------


def _count(match: "re.Match[str]") -> int:
    return int(match.group(1).replace(",", ""))


class Put:
    """One ``PUT /stream`` attempt as the client sent it, and whether an answer came."""

    __slots__ = ("lo", "hi", "gap_marker", "gap_count", "data", "lines", "span", "status")

    def __init__(self, body: bytes) -> None:
        entries = json.loads(body)
        elements = body[1:-1]
        self.gap_marker: Optional[int] = None
        self.gap_count = 0
        gap = _NOT_LIVE.match(entries[0]["out"]) if entries else None
        if gap is not None:
            self.gap_marker, self.gap_count = entries[0]["pos"], _count(gap)
            elements = elements[elements.index(b"}") + 2 :]  # the marker and its comma
            entries = entries[1:]
        pos = [e["pos"] for e in entries]
        self.lo, self.hi = (pos[0], pos[-1]) if pos else (0, -1)
        self.data = sum(1 for e in entries if not e["out"].startswith(MARKER))
        self.lines = len(entries) + (self.gap_marker is not None)
        self.span = len(elements)  # the queued lines and their separators, in bytes
        self.status: Optional[int] = None
        if pos != list(range(self.lo, self.hi + 1)):
            raise ValueError(f"PUT body pos not contiguous: {pos[:10]}...")

    @property
    def answered_2xx(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def positions(self) -> Iterable[int]:
        if self.gap_marker is not None:
            yield self.gap_marker
        yield from range(self.lo, self.hi + 1)


class Wire:
    """Everything the taps saw, per stream key; shared by the clients' transports."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.puts: dict[str, list[Put]] = collections.defaultdict(list)
        self.upload_unanswered: set[str] = set()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.max_in_flight: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []


class Tap(httpx.BaseTransport):
    """An httpx transport that records each attempt around the real one."""

    def __init__(self, wire: Wire) -> None:
        self._inner = httpx.HTTPTransport()
        self._wire = wire

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        wire, path = self._wire, request.url.path
        key = request.url.params.get("key")
        put: Optional[Put] = None
        if path.startswith("/_storage/"):  # /_storage/<token>/<quoted account/key>
            quoted = request.url.raw_path.decode("ascii").partition("?")[0].rsplit("/", 1)[1]
            key = unquote(quoted).partition("/")[2]
            if "x-harness-token" in request.headers:
                wire.problems.append(f"token sent to a storage link for {key!r}")
        elif request.method == "PUT" and path.endswith("/stream"):
            try:
                put = Put(request.content)
            except ValueError as exc:
                wire.problems.append(f"{key!r}: {exc}")
        upload = path.startswith("/_storage/") or "/blob" in path
        with wire.lock:
            if put is not None:
                wire.puts[key or ""].append(put)
            if key:
                wire.in_flight[key] += 1
                wire.max_in_flight[key] = max(wire.max_in_flight[key], wire.in_flight[key])
        try:
            response = self._inner.handle_request(request)
        except Exception:
            with wire.lock:
                wire.statuses["no answer"] += 1
                if upload and key:
                    wire.upload_unanswered.add(key)
            raise
        finally:
            with wire.lock:
                if key:
                    wire.in_flight[key] -= 1
        with wire.lock:
            wire.statuses[f"{response.status_code // 100}xx" if response.status_code != 429 else "429"] += 1
        if put is not None:
            put.status = response.status_code
        return response

    def close(self) -> None:
        self._inner.close()


# ---- the lines the producers write ---------------------------------------------------------------


def _payloads(rng: random.Random) -> list[str]:
    """Line bodies: short and long, multi-byte characters, some holding the secret."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 _-=.:/é€😀"
    out = []
    for i in range(97):
        size = rng.choice((0, 5, 20, 60, 120, 400, 2000)) if i % 11 else 5000
        text = "".join(rng.choice(alphabet) for _ in range(size))
        if i % 5 == 2:
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + SECRET + text[cut:]
        out.append(text)
    return out


class Lines:
    """The exact text of every line a producer can write, from (kind, producer, seq)."""

    def __init__(self, seed: int) -> None:
        self.payloads = _payloads(random.Random(f"{seed}:payloads"))
        self.masker = Masker([SECRET])
        #: An upper bound of any encoded line with its newline in the stored NDJSON.
        self.longest = max(len(p.encode()) for p in self.payloads) + 200

    def text(self, tag: str, producer: int, seq: int) -> str:
        payload = self.payloads[(producer * 7919 + seq) % len(self.payloads)]
        return f"{tag}{producer}-{seq} {payload}"

    def raw(self, producer: int, seq: int) -> bytes:
        """A byte-stream producer's line, with a CRLF ending now and then."""
        end = "\r\n" if seq % 7 == 3 else "\n"
        return (self.text("b", producer, seq) + end).encode()

    def out(self, tag: str, producer: int, seq: int) -> str:
        """What the service must store for a whole line: masked, one ``\\n``."""
        return self.masker.mask(self.text(tag, producer, seq) + "\n")


# ---- streams, epochs and producers ------------------------------------------------------------------


class Stream:
    """One writer under test and what was done to it."""

    def __init__(self, key: str, writer: StreamWriter, logger: Optional[logging.Logger]) -> None:
        self.key = key
        #: Dropped once the final stats are known, so that the RSS measures live writers only.
        self.writer: Optional[StreamWriter] = writer
        self.logger = logger
        #: producer -> (tag, first seq, end seq): the lines it submitted before close.
        self.ranges: dict[int, tuple[str, int, int]] = {}
        #: producer -> (seq, expected out) of a line left partial at the switch.
        self.partials: dict[int, tuple[int, str]] = {}
        self.late = 0  # lines written after close() returned
        self.close_seconds = 0.0
        self.abandoned = False
        self.stats: Optional[lelog.Stats] = None

    def submitted(self) -> int:
        return sum(end - first for _, first, end in self.ranges.values())


class Epoch:
    """The writers the producers use now: ``mixed`` (StreamHandler and write_line) and
    ``bytes-<producer>`` (chunked write, one writer per byte-stream producer)."""

    def __init__(self, number: int, streams: dict[str, Stream]) -> None:
        self.number = number
        self.streams = streams


class Producer:
    """One thread's state; it alone writes these fields until it has stopped."""

    def __init__(self, ident: int, kind: str, seed: int) -> None:
        self.ident = ident
        self.kind = kind  # "bytes", "handler" or "line"
        self.tag = {"bytes": "b", "handler": "h", "line": "l"}[kind]
        self.rng = random.Random(f"{seed}:producer:{ident}")
        self.epoch: Optional[Epoch] = None
        self.seq = 0
        self.first = 0
        self.slowest = 0.0
        self.error: Optional[BaseException] = None

    def stream_in(self, epoch: Epoch) -> Stream:
        return epoch.streams[f"bytes-{self.ident}" if self.kind == "bytes" else "mixed"]


class _Collect(logging.Handler):
    """Keeps lelog's own warnings (they would go to stderr otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def writer_budget(options: dict[str, Any]) -> int:
    """The most memory one writer may hold, from its options: its ingress twice (the batch
    being encoded and the one filling meanwhile), ``max_pending_bytes`` characters at up to
    4 bytes each (a str holding an emoji); its live queue of ``max_pending_bytes`` bytes;
    ~128 bytes of Python objects per queued line; and its history twice (the ring and the
    upload body)."""
    chars, lines = options["max_pending_bytes"], options["max_pending_lines"] * 128
    return 2 * (4 * chars + lines) + chars + lines + 2 * options["history_bytes"]


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ChaosResult:
    """The figures and the outcome of each invariant."""

    def __init__(self, seed: int, seconds: float, producers: int) -> None:
        self.seed, self.seconds, self.producers = seed, seconds, producers
        self.checks: dict[str, list[int]] = {name: [0, 0] for name in INVARIANTS}  # passed, run
        self.failures: dict[str, list[str]] = collections.defaultdict(list)
        self.figures: dict[str, Any] = {}
        self.injected: collections.Counter[str] = collections.Counter()
        self.applied: collections.Counter[str] = collections.Counter()
        #: Lines the service stored live, and how many of them repeat a pos (at-least-once).
        self.live_rows = self.repeats = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self, name: str, problems: list[str], where: str = "") -> None:
        self.checks[name][1] += 1
        if problems:
            self.failures[name].extend(f"{where}: {p}" if where else p for p in problems[:5])
            if len(problems) > 5:
                self.failures[name].append(f"{where}: ... {len(problems) - 5} more")
        else:
            self.checks[name][0] += 1


class Chaos:
    """One seeded run: set up, produce under faults, close, check."""

    def __init__(self, seed: int, seconds: float, producers: int) -> None:
        self.seed, self.seconds = seed, seconds
        self.rng = random.Random(f"{seed}:epochs")
        self.lines = Lines(seed)
        kinds = ("bytes", "handler", "line")
        self.producers = [Producer(i, kinds[i % 3], seed) for i in range(producers)]
        self.result = ChaosResult(seed, seconds, producers)
        self.wire = Wire()
        self.streams: list[Stream] = []
        self.epoch: Optional[Epoch] = None
        self._stop_producing = threading.Event()
        self._stop_faults = threading.Event()
        self._stop_sampling = threading.Event()
        self._peak_rss = 0
        self.warnings = _Collect()
        self.epochs = 0
        self.service: Any = None  # the proxy of the fake in the manager process

    # -- setup ------------------------------------------------------------------------------

    def _client(self, url: str, indirect_upload: bool) -> LogServiceClient:
        config = LogConfig(
            url=url,
            account_id=ACCOUNT,
            token=TOKEN,
            secrets=[SECRET],
            indirect_upload=indirect_upload,
            **TIMEOUTS,
        )
        return LogServiceClient(config, transport=Tap(self.wire), retry=RETRY)

    def _new_epoch(self, number: int) -> Epoch:
        streams: dict[str, Stream] = {}
        names = ["mixed"] + [f"bytes-{p.ident}" for p in self.producers if p.kind == "bytes"]
        for name in names:
            # Keys with characters that must be escaped: a wrong escaping loses the stream.
            key = f"chaos {self.seed}/e{number:03d}/{name}?&x=1#%+;é"
            writer = StreamWriter(key, self.rng.choice(self.clients), **WRITER_OPTIONS)
            logger = None
            if name == "mixed":
                logger = logging.getLogger(f"lelog-chaos.{self.seed}.e{number}")
                logger.propagate = False
                logger.setLevel(logging.INFO)
                handler = StreamHandler(writer=writer)
                handler.setFormatter(logging.Formatter("%(message)s"))
                logger.addHandler(handler)
            streams[name] = stream = Stream(key, writer, logger)
            stream.late = self.rng.randint(1, 5)
            self.streams.append(stream)
        self.epochs = number + 1
        return Epoch(number, streams)

    # -- the threads ------------------------------------------------------------------------

    def _produce(self, p: Producer) -> None:
        try:
            write = {"bytes": self._write_bytes, "handler": self._write_record, "line": self._write_line}[
                p.kind
            ]
            while not self._stop_producing.is_set():
                epoch = self.epoch
                if epoch is not p.epoch:
                    self._switch(p, epoch)
                write(p, p.stream_in(epoch))  # type: ignore[arg-type]
            self._switch(p, None)
        except BaseException as exc:  # reported as a failed invariant, never a silent stop
            p.error = exc

    def _switch(self, p: Producer, epoch: Optional[Epoch]) -> None:
        if p.epoch is not None:
            p.stream_in(p.epoch).ranges[p.ident] = (p.tag, p.first, p.seq)
        p.first = p.seq
        p.epoch = epoch

    def _timed(self, p: Producer, call: Callable[[], Any]) -> None:
        start = time.perf_counter()
        call()
        p.slowest = max(p.slowest, time.perf_counter() - start)

    def _write_line(self, p: Producer, stream: Stream) -> None:
        text, writer = self.lines.text("l", p.ident, p.seq), stream.writer
        assert writer is not None  # released only after close, when producers moved on
        self._timed(p, lambda: writer.write_line(text))
        p.seq += 1

    def _write_record(self, p: Producer, stream: Stream) -> None:
        text = self.lines.text("h", p.ident, p.seq)
        self._timed(p, lambda: stream.logger.info("%s", text))  # type: ignore[union-attr]
        p.seq += 1

    def _write_bytes(self, p: Producer, stream: Stream) -> None:
        """One line in random chunks; at an epoch switch it may be left partial on purpose."""
        data, at, writer = self.lines.raw(p.ident, p.seq), 0, stream.writer
        assert writer is not None
        while at < len(data):
            if self.epoch is not p.epoch and at and p.rng.random() < 0.5:
                partial = data[:at].decode("utf-8", "replace")  # as the splitter's finish()
                stream.partials[p.ident] = (p.seq, self.lines.masker.mask(partial))
                break
            chunk = data[at : at + p.rng.randint(1, 48)]
            self._timed(p, lambda: writer.write(chunk))
            at += len(chunk)
        p.seq += 1

    def _inject_faults(self) -> None:
        rng = random.Random(f"{self.seed}:faults")
        kinds, weights = list(FAULTS), list(FAULTS.values())
        svc = self.service
        while not self._stop_faults.wait(rng.uniform(0.05, 0.2)):
            kind = rng.choices(kinds, weights)[0]
            self.result.injected[kind] += 1
            if kind == "fail":
                svc.fail_next(rng.randint(1, 4), rng.choice((500, 502, 503, 504)))
            elif kind == "throttle":
                svc.throttle_next(rng.randint(1, 3), round(rng.uniform(0.1, 0.5), 3))
            elif kind == "reset":
                svc.reset_next(rng.randint(1, 3))
            elif kind == "stall":
                svc.stall_next(1, round(rng.uniform(0.2, 1.0), 3))
            elif kind == "redirect":
                svc.redirect_next(1)
            elif kind == "blackhole":
                svc.blackhole(True)
                self._stop_faults.wait(rng.uniform(0.2, 1.0))
                svc.blackhole(False)
            elif kind == "expire":
                epoch = self.epoch
                if epoch is not None:
                    svc.expire_stream(rng.choice(sorted(epoch.streams.values(), key=lambda s: s.key)).key)
            else:
                svc.restart()

    def _sample_memory(self) -> None:
        while not self._stop_sampling.wait(0.02):
            self._peak_rss = max(self._peak_rss, _rss())

    # -- closing ----------------------------------------------------------------------------

    def _close(self, stream: Stream) -> None:
        writer = stream.writer
        assert writer is not None
        start = time.monotonic()
        writer.close()
        stream.close_seconds = time.monotonic() - start
        stream.abandoned = any(t.name == f"lelog-writer[{stream.key}]" for t in threading.enumerate())
        # Late lines: counted as dropped after close, never sent.
        for n in range(stream.late):
            if stream.logger is not None and n % 2:
                stream.logger.info("late-%d", n)
            elif stream.logger is not None:
                writer.write_line(f"late-{n}")
            else:
                writer.write(f"late-{n}\n".encode())
        if stream.logger is not None:
            for handler in list(stream.logger.handlers):
                stream.logger.removeHandler(handler)
                handler.close()
        if not stream.abandoned:  # its worker ended: the counts are final
            stream.stats, stream.writer = writer.stats, None

    def _close_all(self, epoch: Epoch) -> None:
        """Close an epoch's writers in parallel, as the exit hook would."""
        threads = [
            threading.Thread(target=self._close, args=(s,), name=f"chaos-close-{i}")
            for i, s in enumerate(epoch.streams.values())
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _await_producers(self, epoch: Optional[Epoch]) -> bool:
        deadline = time.monotonic() + 5.0
        while any(p.epoch is not epoch and p.error is None for p in self.producers):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        lelog_logger = logging.getLogger("lelog")
        lelog_logger.addHandler(self.warnings)
        manager = _Manager(ctx=multiprocessing.get_context("spawn"))
        manager.start()
        try:
            self.service = manager.Service(account_id=ACCOUNT, token=TOKEN)  # type: ignore[attr-defined]
            url = self.service.base_url()
            self.clients = [self._client(url, False), self._client(url, True)]
            try:
                self._run()
            finally:
                for event in (self._stop_producing, self._stop_faults, self._stop_sampling):
                    event.set()
                for client in self.clients:
                    client.close()
                self.service.stop()
        finally:
            manager.shutdown()
            lelog_logger.removeHandler(self.warnings)
        return self.result

    def _run(self) -> None:
        result, rng = self.result, self.rng
        threads_before = set(threading.enumerate())
        baseline = _rss()
        self._peak_rss = baseline
        helpers = [
            threading.Thread(target=self._inject_faults, name="chaos-faults"),
            threading.Thread(target=self._sample_memory, name="chaos-rss"),
        ]
        workers = [
            threading.Thread(target=self._produce, args=(p,), name=f"chaos-producer-{p.ident}")
            for p in self.producers
        ]
        started = time.monotonic()
        end = started + self.seconds
        self.epoch = epoch = self._new_epoch(0)
        for t in helpers + workers:
            t.start()
        switches_ok = True
        while True:
            self._stop_producing.wait(max(min(rng.uniform(1.5, 4.0), end - time.monotonic()), 0))
            if end - time.monotonic() < 1.0:
                break
            self.epoch = nxt = self._new_epoch(epoch.number + 1)
            switches_ok &= self._await_producers(nxt)
            self._close_all(epoch)
            result.applied.update(self.service.take_fault_counts())
            epoch = nxt
        self._stop_producing.set()
        for t in workers:
            t.join(5.0)
        switches_ok &= not any(t.is_alive() for t in workers)
        self._close_all(epoch)  # the last epoch closes with the faults still coming
        produce_seconds = time.monotonic() - started
        self._stop_faults.set()
        helpers[0].join()
        self.service.blackhole(False)
        self.service.clear_faults()
        result.applied.update(self.service.take_fault_counts())
        self._stop_sampling.set()
        helpers[1].join()
        self._check_run(switches_ok, self._await_threads(threads_before), self._peak_rss - baseline)
        for stream in self.streams:
            if stream.writer is not None:  # abandoned: final now that every worker ended
                stream.stats, stream.writer = stream.writer.stats, None
            rows = self.service.written_rows(stream.key)
            blob = self.service.blob(stream.key)
            Checker(self, stream, rows, blob).check_all()
        self._figures(produce_seconds)

    @staticmethod
    def _await_threads(before: set[threading.Thread]) -> list[str]:
        """The threads started during the run still alive after the grace period."""
        deadline = time.monotonic() + THREAD_GRACE
        while True:
            alive = [t.name for t in threading.enumerate() if t not in before]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.02)

    # -- run-wide invariants ------------------------------------------------------------------

    def _check_run(self, switches_ok: bool, lingering: list[str], rss_growth: int) -> None:
        result = self.result
        problems = [f"producer {p.ident} ({p.kind}) failed: {p.error!r}" for p in self.producers if p.error]
        problems += [
            f"producer {p.ident} ({p.kind}): one call took {p.slowest:.3f} s"
            for p in self.producers
            if p.slowest >= BLOCKING
        ]
        if not switches_ok:
            problems.append("a producer did not move to the next epoch's writer within 5 s")
        result.check("never blocks", problems)
        result.check("threads", [f"still alive after {THREAD_GRACE:.1f} s: {name}" for name in lingering])
        # The writers alive at once (two epochs during a switch), each at its budget, plus
        # 32 MiB for the interpreter's own churn (httpx, the taps, allocator slack).
        at_once = 2 * (1 + sum(p.kind == "bytes" for p in self.producers))
        bound = at_once * writer_budget(WRITER_OPTIONS) + (32 << 20)
        result.figures["rss"] = (rss_growth, bound)
        result.check(
            "memory",
            []
            if rss_growth <= bound
            else [f"RSS grew by {rss_growth / 2**20:.1f} MiB, budget {bound / 2**20:.1f} MiB"],
        )
        internal = [
            m for m in self.warnings.messages if re.search(r"(worker|write|write_line|closing) failed", m)
        ]
        internal += [f"the fake service failed: {e}" for e in self.service.internal_errors()]
        result.check("no internal error", internal)
        with self.wire.lock:
            result.check("wire", list(self.wire.problems), "taps")

    def _figures(self, produce_seconds: float) -> None:
        f = self.result.figures
        stats = [s.stats for s in self.streams if s.stats is not None]
        f["epochs"] = self.epochs
        f["streams"] = len(self.streams)
        f["seconds"] = produce_seconds
        by_kind: collections.Counter[str] = collections.Counter()
        for s in self.streams:
            for tag, first, end in s.ranges.values():
                by_kind[tag] += end - first
        f["submitted"] = dict(by_kind)
        f["accepted"] = sum(s.accepted for s in stats)
        f["sent"] = sum(s.sent for s in stats)
        f["dropped"] = {r: sum(s.dropped[r] for s in stats) for r in lelog._writer.DROP_REASONS}
        f["retries"] = sum(s.retries for s in stats)
        f["uploaded"] = sum(s.uploaded is True for s in stats)
        f["history_lines"] = sum(s.history_lines for s in stats if s.uploaded)
        f["evicted"] = sum(s.history_evicted for s in stats)
        f["closes"] = (max(s.close_seconds for s in self.streams), sum(s.abandoned for s in self.streams))
        f["statuses"] = dict(self.wire.statuses)
        f["warnings"] = len(self.warnings.messages)
        f["slowest_call"] = max(p.slowest for p in self.producers)


# ---- the per-stream invariants ---------------------------------------------------------------------


class Checker:
    """Checks one closed stream against its stats, the taps' records and the service."""

    def __init__(
        self, chaos: Chaos, stream: Stream, rows: list[tuple[int, str]], blob: Optional[bytes]
    ) -> None:
        self.chaos, self.stream, self.rows, self.blob_bytes = chaos, stream, rows, blob
        self.stats = stream.stats
        self.puts = chaos.wire.puts.get(stream.key, [])
        self.unanswered = {pos for put in self.puts if put.status is None for pos in put.positions()}
        self.blob: dict[int, str] = {}

    def check(self, name: str, problems: list[str]) -> None:
        self.chaos.result.check(name, problems, self.stream.key.split("/", 1)[1])

    def check_all(self) -> None:
        self.check("close deadline", self._close_deadline())
        self.check("accounting", self._accounting())
        self.check("ground truth", self._ground_truth())
        self.check("wire", self._wire())
        blob_problems = self._blob()
        self.check("blob", blob_problems)
        if self.blob_bytes is not None and not blob_problems:
            self.check("blob content", self._blob_content())
        self.check("live", self._live())

    # -- helpers ----------------------------------------------------------------------------

    def _expected(self, out: str) -> Optional[str]:
        """Why ``out`` is not a line of this stream, or None when it is one (as submitted)."""
        m = _LINE.match(out)
        if m is None:
            return f"not a submitted line: {out[:60]!r}"
        tag, producer, seq = m.group(1), int(m.group(2)), int(m.group(3))
        span = self.stream.ranges.get(producer)
        if span is None or span[0] != tag or not span[1] <= seq < span[2]:
            return f"line {out[:30]!r} was not submitted to this stream"
        partial = self.stream.partials.get(producer)
        want = partial[1] if partial and partial[0] == seq else self.chaos.lines.out(tag, producer, seq)
        return None if out == want else f"line altered: {out[:40]!r} != {want[:40]!r}"

    @staticmethod
    def _ident(out: str) -> tuple[int, int]:
        m = _LINE.match(out)
        assert m is not None
        return int(m.group(2)), int(m.group(3))

    # -- the invariants -----------------------------------------------------------------------

    def _close_deadline(self) -> list[str]:
        limit = WRITER_OPTIONS["close_timeout"] + CLOSE_SLACK
        s = self.stream
        return [] if s.close_seconds <= limit else [f"close() took {s.close_seconds:.2f} s > {limit:.2f} s"]

    def _accounting(self) -> list[str]:
        st = self.stats
        assert st is not None
        problems = []
        if st.accepted != st.sent + st.dropped_total:
            problems.append(f"accepted {st.accepted} != sent {st.sent} + dropped {dict(st.dropped)}")
        if st.pending:
            problems.append(f"pending {st.pending} after close")
        if not st.closed:
            problems.append("stats.closed is false after close()")
        return problems

    def _ground_truth(self) -> list[str]:
        st, s = self.stats, self.stream
        assert st is not None
        problems = []
        if st.accepted != s.submitted() + s.late:
            problems.append(f"accepted {st.accepted} != submitted {s.submitted()} + late {s.late}")
        if st.dropped["after_close"] != s.late:
            problems.append(f"after_close {st.dropped['after_close']} != late writes {s.late}")
        if st.dropped["too_large"]:
            problems.append(f"too_large {st.dropped['too_large']}: no line exceeds max_pending_bytes")
        on_wire = sum(put.data for put in self.puts if put.answered_2xx)
        if on_wire != st.sent and not (s.abandoned and st.sent <= on_wire):
            problems.append(f"sent {st.sent} != {on_wire} data lines in PUTs answered 2xx")
        return problems

    def _wire(self) -> list[str]:
        opts, problems = WRITER_OPTIONS, []
        for put in self.puts:
            if put.lines > opts["max_batch_lines"]:
                problems.append(f"PUT of {put.lines} lines > max_batch_lines")
            queued = put.lines - (put.gap_marker is not None)
            if queued > 1 and put.span > opts["max_batch_bytes"]:
                problems.append(f"PUT of {put.span} bytes of lines > max_batch_bytes")
        if self.chaos.wire.max_in_flight[self.stream.key] > 1:
            problems.append(f"{self.chaos.wire.max_in_flight[self.stream.key]} requests in flight at once")
        if any(SECRET in out for _, out in self.rows):
            problems.append("the secret reached the service")
        return problems

    def _blob(self) -> list[str]:
        st, s = self.stats, self.stream
        assert st is not None
        if self.blob_bytes is None:
            return ["uploaded, but the service has no blob"] if st.uploaded else []
        problems = []
        if not st.uploaded and s.key not in self.chaos.wire.upload_unanswered:
            problems.append("a blob is stored, but the upload failed with every attempt answered")
        try:
            rows = [json.loads(row) for row in self.blob_bytes.splitlines()]
        except ValueError as exc:
            return [f"blob is not NDJSON: {exc}"]
        if SECRET.encode() in self.blob_bytes:
            problems.append("the secret is in the blob")
        size = len(self.blob_bytes)
        if st.history_evicted and rows and not s.abandoned:  # headed by the eviction marker
            head = rows[0]["out"]
            if not head.startswith(f"{MARKER}{st.history_evicted:,} earlier lines left out"):
                problems.append(f"{st.history_evicted} lines evicted, the blob starts {head[:60]!r}")
            else:
                size -= len(self.blob_bytes.split(b"\n", 1)[0]) + 1
                rows = rows[1:]
        pos = [row["pos"] for row in rows]
        if pos and pos != list(range(pos[0], pos[0] + len(pos))):
            bad = next(i for i in range(1, len(pos)) if pos[i] != pos[i - 1] + 1)
            problems.append(f"pos not contiguous: ... {pos[max(bad - 2, 0) : bad + 2]} ...")
        if st.uploaded and not s.abandoned:
            if pos and pos[0] != st.history_evicted:
                problems.append(f"blob starts at pos {pos[0]}, but {st.history_evicted} lines were evicted")
            if len(rows) != st.history_lines:
                problems.append(f"blob has {len(rows)} lines, stats.history_lines {st.history_lines}")
        budget = WRITER_OPTIONS["history_bytes"]
        if len(rows) > 1 and size > budget:
            problems.append(f"blob of {size} bytes (without the eviction marker) > history_bytes {budget}")
        # Eviction stops as soon as the history fits: what is left is within one line of full.
        if pos and pos[0] > 0 and budget - size > self.chaos.lines.longest:
            problems.append(f"lines were evicted, yet the blob ({size} bytes) is not full (budget {budget})")
        self.blob = {row["pos"]: row["out"] for row in rows}
        return problems

    def _blob_content(self) -> list[str]:
        problems: list[str] = []
        markers: list[tuple[int, int]] = []  # (pos, count) of buffer-full markers
        seen: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)  # producer -> (pos, seq)
        for pos, out in sorted(self.blob.items()):
            m = _BUFFER_FULL.match(out)
            if m is not None:
                markers.append((pos, _count(m)))
                continue
            why = self._expected(out)
            if why is not None:
                problems.append(f"pos {pos}: {why}")
                continue
            producer, seq = self._ident(out)
            seen[producer].append((pos, seq))
        # A line submitted but not in the blob was dropped at ingress (and counted by a
        # buffer-full marker after the lines before it) or, before the blob's first line,
        # possibly evicted.  So the markers count every line missing between and after a
        # producer's lines in the blob, plus up to all of those missing before them.
        evicted = bool(self.blob) and min(self.blob) > 0
        certain = maybe = 0
        for producer, (_, first, end) in self.stream.ranges.items():
            got = seen.get(producer, [])
            leading = (got[0][1] if got else end) - first
            if evicted:
                maybe += leading
            else:
                certain += leading
            for (p1, s1), (p2, s2) in zip(got, got[1:]):
                if s2 <= s1:
                    problems.append(f"producer {producer}: seq {s2} after {s1} (pos {p1}, {p2})")
                elif s2 > s1 + 1 and not any(p1 < mp < p2 for mp, _ in markers):
                    problems.append(
                        f"producer {producer}: seq {s1 + 1}..{s2 - 1} missing between "
                        f"pos {p1} and {p2} with no buffer-full marker between"
                    )
                certain += max(s2 - s1 - 1, 0)
            if got:
                certain += end - 1 - got[-1][1]
        marked = sum(n for _, n in markers)
        if not certain <= marked <= certain + maybe:
            problems.append(
                f"buffer-full markers count {marked} dropped lines; the blob shows "
                f"{certain}" + (f" to {certain + maybe}" if evicted else "") + " missing"
            )
        return problems

    def _live(self) -> list[str]:
        problems: list[str] = []
        by_pos: dict[int, list[str]] = collections.defaultdict(list)
        for pos, out in self.rows:
            by_pos[pos].append(out)
        # At-least-once: a repeat needs an attempt that got no answer, and is the same line.
        result = self.chaos.result
        result.live_rows += len(self.rows)
        result.repeats += len(self.rows) - len(by_pos)
        for pos, outs in by_pos.items():
            if len(outs) > 1:
                if pos not in self.unanswered:
                    problems.append(f"pos {pos} stored {len(outs)} times, every PUT carrying it answered")
                if len({o for o in outs if not _NOT_LIVE.match(o)}) > 1:
                    problems.append(f"pos {pos} stored with different lines: {[o[:30] for o in outs]}")
        ordered = [pos for pos, _ in self.rows if pos not in self.unanswered]
        for a, b in zip(ordered, ordered[1:]):
            if b <= a:
                problems.append(f"live pos {b} after {a}")
                break

        last: dict[int, int] = {}
        for pos in sorted(by_pos):
            for out in set(by_pos[pos]):
                if out.startswith(MARKER):
                    if not (_NOT_LIVE.match(out) or _BUFFER_FULL.match(out)):
                        problems.append(f"pos {pos}: unknown marker {out!r}")
                    continue
                why = self._expected(out)
                if why is not None:
                    problems.append(f"live pos {pos}: {why}")
                    continue
                if pos in self.blob and self.blob[pos] != out:
                    problems.append(f"pos {pos}: live {out[:30]!r} but blob {self.blob[pos][:30]!r}")
                producer, seq = self._ident(out)
                if seq <= last.get(producer, -1):
                    problems.append(f"producer {producer}: live seq {seq} after {last[producer]}")
                last[producer] = seq
        problems += self._live_gaps(by_pos)
        return problems

    def _live_gaps(self, by_pos: dict[int, list[str]]) -> list[str]:
        """Every line missing live is marked: a "not streamed live" marker at pos g, pushed
        before the queued line at pos q, stands for the lines of [g, q).  A missing pos that no
        marker covers can only be a lone buffer-full marker (it counts no line, so losing it
        alone is not marked; two of them are never adjacent)."""
        problems: list[str] = []
        covered: set[int] = set()
        for put in self.puts:
            if put.gap_marker is None:
                continue
            if not (put.answered_2xx or any(_NOT_LIVE.match(o) for o in by_pos.get(put.gap_marker, ()))):
                continue  # refused, or unanswered and never applied
            end = put.lo if put.hi >= put.lo else max(by_pos) + 1
            covered.update(range(put.gap_marker, end))
            if put.answered_2xx and put.hi >= put.lo:
                span = range(put.gap_marker, put.lo)
                if all(p in self.blob for p in span):
                    lost = sum(1 for p in span if not self.blob[p].startswith(MARKER))
                    if put.gap_count != lost:
                        problems.append(
                            f"marker at pos {put.gap_marker} says {put.gap_count} "
                            f"lines not streamed, {lost} were"
                        )
                elif not 1 <= put.gap_count <= len(span):
                    problems.append(
                        f"marker at pos {put.gap_marker} says {put.gap_count} lines, its gap is {len(span)}"
                    )
        run: list[int] = []
        for pos in range(max(by_pos, default=-1) + 1):
            if pos not in by_pos and pos not in covered:
                run.append(pos)
                continue
            if len(run) > 1 or (run and run[0] in self.blob and not _BUFFER_FULL.match(self.blob[run[0]])):
                problems.append(f"live pos {run[0]}..{run[-1]} missing with no marker")
            run = []
        return problems


# ---- entry points ------------------------------------------------------------------------------


def run_chaos(seed: int = 1, seconds: float = 20.0, producers: int = 4) -> ChaosResult:
    """One chaos run; the result says what was done and which invariants held."""
    if producers < 1:
        raise ValueError("producers must be >= 1")
    return Chaos(seed, seconds, producers).run()


def _n(value: int) -> str:
    return f"{value:,}"


def summary(result: ChaosResult) -> str:
    """The figures and the invariants, as a table for people."""
    f = result.figures
    out = [f"chaos run: seed {result.seed}, {result.seconds:g} s requested, {result.producers} producers"]
    if f:
        sub = f["submitted"]
        out += [
            f"  {f['epochs']} epochs, {f['streams']} streams, producing for {f['seconds']:.1f} s",
            "",
            "lines",
            f"  submitted          {_n(sum(sub.values())):>12}   (StreamHandler {_n(sub.get('h', 0))}, "
            f"write_line {_n(sub.get('l', 0))}, write() chunks {_n(sub.get('b', 0))})",
            f"  accepted           {_n(f['accepted']):>12}   (incl. the late writes after close)",
            f"  sent live          {_n(f['sent']):>12}   ({_n(f['retries'])} retries; the service stored "
            f"{_n(result.live_rows)}, {_n(result.repeats)} of them again after an unanswered PUT)",
        ]
        out += [f"  dropped {r:<18} {_n(n):>10}" for r, n in f["dropped"].items()]
        out += [
            f"  in uploaded logs   {_n(f['history_lines']):>12}   ({f['uploaded']} of {f['streams']} "
            f"uploads succeeded; {_n(f['evicted'])} lines evicted from histories)",
            f"  closes: slowest {f['closes'][0]:.2f} s (limit {WRITER_OPTIONS['close_timeout'] + CLOSE_SLACK:.2f} s), "
            f"{f['closes'][1]} abandoned a stuck worker",
            f"  slowest write/emit call {f['slowest_call'] * 1000:.0f} ms; "
            f"peak RSS growth {f['rss'][0] / 2**20:.1f} MiB (budget {f['rss'][1] / 2**20:.1f} MiB); "
            f"{f['warnings']} lelog warnings",
            "  answers seen by the client: "
            + ", ".join(f"{k} {_n(v)}" for k, v in sorted(f["statuses"].items())),
        ]
    out += ["", "faults              injected   requests hit"]
    for kind in FAULTS:
        hit = result.applied.get(kind, "-") if kind not in ("expire", "restart") else "-"
        out.append(f"  {kind:<16} {result.injected.get(kind, 0):>9}   {hit:>12}")
    out += ["", "invariants"]
    for name, (passed, run) in result.checks.items():
        verdict = "SKIP" if not run else "PASS" if passed == run else "FAIL"
        out.append(f"  {verdict}  {name:<18} {passed:>4}/{run:<4} {INVARIANTS[name]}")
    for name, problems in result.failures.items():
        out.append(f"\nFAILED {name}:")
        out += [f"  - {p}" for p in problems[:20]]
    out.append("")
    out.append(
        f"reproduce: python -m tests.chaos --seed {result.seed} --seconds {result.seconds:g} "
        f"--producers {result.producers}"
    )
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--producers", type=int, default=4)
    args = parser.parse_args(argv)
    result = run_chaos(args.seed, args.seconds, args.producers)
    print(summary(result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
