"""Run every benchmark, side by side, and print the table (also written to a file).

    python -m benchmarks            # the full run (< 10 minutes on 2 cores)
    python -m benchmarks --quick    # a 1-2 minute smoke run: same rows, smaller numbers

Every measurement runs in a fresh interpreter (``benchmarks.child``); every far end (the
fake log service for lelog, a loopback sink per peer) runs in yet another process.  The
machine is assumed slow and noisy: subjects are interleaved run by run, each figure is the
median of several runs with its min-max spread, and each ratio is taken against a baseline
measured in the same invocation.  Peers that are not installed are skipped, not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .subjects import FORMATTERS, SINK_KIND, SUBJECTS

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("watchtower", "logstash-async", "fluent-async", "otel-batch")
#: What runs unless --subjects says otherwise: the floor, the two stdlib asynchronous paths,
#: lelog without and with its crash spool (rows 1 and 2 only), and the fastest peer.  The other peers are 3-45x slower (README's earlier tables)
#: and would take the run past 10 minutes: ``--subjects all`` adds them.
DEFAULT_SUBJECTS = ("floor", "stdlib-queue", "stdlib-queue-stream", "lelog", "lelog-spool", "watchtower")
#: Peers that call their service when built (watchtower creates its log group), so a dead
#: or hung service blocks the program before its first line: left out of those runs.
BUILD_CALLS_SERVICE = frozenset({"watchtower", "prototype"})
#: lelog's close_timeout in the exit row: the "configured deadline" its target is measured on.
EXIT_DEADLINE = 2.0


ROWS = ("cost", "throughput", "sustained", "construction", "memory", "latency", "exit", "members")
#: The rows' subjects: the sustained row is about lelog against the floor, over a long run
#: (and the bare prototype, benchmarks/prototype.py, when --subjects names it).
SUSTAINED_SUBJECTS = ("floor", "stdlib-queue-stream", "lelog", "prototype")
#: The members row: processes of one host on one key (docs/writer.md#processes-on-one-key),
#: an owner and this many members logging flat out at once.
MEMBERS = 3


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions; ``--quick`` shrinks them.  Peers get fewer runs on the rows
    that have no target about them, and none in ``--quick`` beyond rows 1 and 2."""

    runs: dict[str, int]  # per row, for the floor, the stdlib baseline and lelog
    peer_runs: dict[str, int]  # per row, for the peers (0: the row leaves them out)
    cost_n: int
    warm: int
    throughput_n: int
    sustained_n: int  # so long a run that no work can hide after the timed loop
    construct_n: int  # handlers built in one process
    memory_marks: tuple[int, int]
    peer_memory_marks: tuple[int, int]  # the peers' calls cost 3-15x lelog's: smaller marks
    latency_n: int
    exit_n: int
    peer_exit_n: int  # the peers' calls cost 3-5x lelog's: a smaller backlog
    delivery_cap: float  # a burst not delivered by then is shown as "> cap" and not repeated
    slow_delivery: float  # a subject whose delivery alone took longer runs once per row
    exit_cap: float  # an exit taking longer is killed, shown as "> cap" and not repeated
    members_n: int  # calls per process in the members row (an owner and MEMBERS members)


FULL = Plan(
    runs={
        "cost": 5,
        "throughput": 5,
        "sustained": 3,
        "construction": 2,
        "memory": 3,
        "latency": 5,
        "exit": 3,
        "members": 3,
    },
    peer_runs={
        "cost": 5,
        "throughput": 2,
        "sustained": 0,
        "construction": 0,
        "memory": 1,
        "latency": 1,
        "exit": 1,
        "members": 0,
    },
    cost_n=20_000,
    warm=2_000,
    throughput_n=200_000,
    sustained_n=1_000_000,
    construct_n=300,
    memory_marks=(100_000, 500_000),
    peer_memory_marks=(20_000, 100_000),
    latency_n=50_000,
    exit_n=100_000,
    peer_exit_n=20_000,
    delivery_cap=30.0,
    slow_delivery=10.0,
    exit_cap=6.0,
    members_n=50_000,
)
QUICK = Plan(
    runs={
        "cost": 2,
        "throughput": 1,
        "sustained": 1,
        "construction": 1,
        "memory": 1,
        "latency": 1,
        "exit": 1,
        "members": 1,
    },
    peer_runs={
        "cost": 1,
        "throughput": 1,
        "sustained": 0,
        "construction": 0,
        "memory": 0,
        "latency": 0,
        "exit": 0,
        "members": 0,
    },
    cost_n=5_000,
    warm=1_000,
    throughput_n=30_000,
    sustained_n=100_000,
    construct_n=40,
    memory_marks=(60_000, 120_000),
    peer_memory_marks=(5_000, 20_000),
    latency_n=10_000,
    exit_n=20_000,
    peer_exit_n=5_000,
    delivery_cap=10.0,
    slow_delivery=5.0,
    exit_cap=5.0,
    members_n=20_000,
)


# -- far ends ---------------------------------------------------------------------------------


class Far:
    """A far end in its own process: the fake log service or one of ``benchmarks.sinks``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "service":
            cmd = [sys.executable, "-m", "tests.service", "--discard", "--port", "0"]
        else:
            cmd = [sys.executable, "-m", "benchmarks.sinks", kind]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addr = self.stats = self.url = ""
        want = ("URL",) if kind == "service" else ("ADDR", "STATS")
        for name, value in _read_lines(self.proc, want, timeout=30):
            if name == "URL":
                self.url = value
                self.addr = value.split("://", 1)[1]
            elif name == "ADDR":
                self.addr, self.url = value, f"http://{value}"
            else:
                self.stats = value

    def target(self, subject: str) -> dict[str, Any]:
        """Where ``subject`` sends, and where its lines are counted."""
        if self.kind == "service":
            key = f"bench/{uuid.uuid4().hex[:12]}"
            stats = f"{self.url}/_stats?key={key}&accountID=acct"
            return {"url": self.url, "key": key, "stats": stats}
        key = f"bench-{uuid.uuid4().hex[:12]}"  # a stream of its own (watchtower)
        return {"addr": self.addr, "url": self.url, "stats": self.stats, "key": key}

    def stop(self) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _read_lines(
    proc: subprocess.Popen[str], names: tuple[str, ...], timeout: float, first: bool = False
) -> list[tuple[str, str]]:
    """Read ``NAME value`` lines from a child's stdout until every name (or, with ``first``,
    any one) was seen.  A child silent for ``timeout`` seconds is killed, ending the read.
    """
    found: list[tuple[str, str]] = []
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        while not (found and first) and {n for n, _ in found} != set(names):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"{' '.join(map(str, proc.args))}: no {names} (exit {proc.poll()})")
            name, _, value = line.strip().partition(" ")
            if name in names:
                found.append((name, value))
    finally:
        watchdog.cancel()
    return found


def dead_target() -> dict[str, Any]:
    """A port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {
        "addr": f"127.0.0.1:{port}",
        "url": f"http://127.0.0.1:{port}",
        "key": f"bench/{uuid.uuid4().hex[:12]}",
    }


class Fars:
    """The long-lived far ends of the "service up" rows, one per kind, started on demand."""

    def __init__(self) -> None:
        self._up: dict[str, Far] = {}

    def up(self, subject: str) -> dict[str, Any]:
        kind = SINK_KIND.get(subject)
        if kind is None:
            return {}
        if kind not in self._up:
            self._up[kind] = Far(kind)
        return self._up[kind].target(subject)

    def stop(self) -> None:
        for far in self._up.values():
            far.stop()


# -- running one measurement ------------------------------------------------------------------


def child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its result."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.child", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:g}s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            if done.stderr.strip():  # a library's own warnings: shown in the progress log
                result["stderr"] = done.stderr.strip().splitlines()[-1][:300]
            return result
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {done.returncode}: {tail}"}


def timed_exit(spec: dict[str, Any], cap: float) -> dict[str, Any]:
    """Run the exit scenario: seconds from the end of the logging loop to process exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.child", json.dumps(spec)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        try:
            ((name, value),) = _read_lines(proc, ("LOOP_END", "RESULT"), timeout=120, first=True)
        except (RuntimeError, ValueError) as exc:
            return {"error": str(exc)}
        if name == "RESULT":
            return json.loads(value)
        loop_end = float(value)
        try:
            proc.wait(max(loop_end + cap - time.time(), 0.0))
        except subprocess.TimeoutExpired:
            return {"exit_s": None, "killed_after": cap}
        return {"exit_s": time.time() - loop_end, "code": proc.returncode}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


class Driven:
    """A measurement process the parent drives through its stdin and reads on its stdout
    (``NAME value`` lines, as ``_read_lines`` reads them), for rows whose processes must
    meet: the members row's start barrier is a ``GO`` line to each of them."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        self._stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.child", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for ``name`` (its value as JSON) or the child's result; a child that ends or
        goes silent for ``timeout`` seconds gives an ``error``."""
        try:
            ((said, value),) = _read_lines(self.proc, (name, "RESULT"), timeout=timeout, first=True)
        except (RuntimeError, ValueError) as exc:
            return {"error": f"{exc}: {self.stderr_tail()}"}
        result: dict[str, Any] = json.loads(value)
        if said != name:
            return {**result, "error": result.get("error") or f"ended before {name}"}
        return result if said == "RESULT" else {name: result}

    def say(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            pass  # it ended: its result (or its absence) says why

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return lines[-1][:300] if lines else "no stderr"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._stderr.close()


# -- statistics and formatting ----------------------------------------------------------------


@dataclass
class Cell:
    """The runs of one figure."""

    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.values) if self.values else None

    def show(self, fmt: str = "{:.1f}", spread: bool = True) -> str:
        if not self.values:
            return self.notes[0] if self.notes else "n/a"
        text = fmt.format(self.median)
        if spread and len(self.values) > 1:
            text += f" ({fmt.format(min(self.values))}–{fmt.format(max(self.values))})"
        if self.notes:
            text += f" [{len(self.notes)} failed: {self.notes[0]}]"
        return text


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def show_ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the rows ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, subjects: list[str], formatter: str) -> None:
        self.plan = plan
        self.subjects = subjects
        self.formatter = formatter
        self.fars = Fars()
        self.results: dict[str, dict[str, dict[str, Cell]]] = {}
        self.skipped: dict[str, str] = {}
        self.remarks: list[str] = []
        self.row_seconds: dict[str, float] = {}

    def cell(self, row: str, subject: str, name: str) -> Cell:
        return self.results.setdefault(row, {}).setdefault(subject, {}).setdefault(name, Cell())

    def get(self, row: str, subject: str, name: str) -> Optional[float]:
        return self.results.get(row, {}).get(subject, {}).get(name, Cell()).median

    def _rounds(self, row: str, candidates: tuple[str, ...]) -> list[list[str]]:
        """Interleave subjects run by run (rotating who goes first), so slow spells of a
        noisy machine hit every subject alike."""
        p = self.plan
        subjects = [s for s in candidates if s in self.subjects]
        runs = {s: p.peer_runs[row] if s in PEERS else p.runs[row] for s in subjects}
        subjects = [s for s in subjects if runs[s]]
        rounds = []
        for r in range(max(runs.values(), default=0)):
            order = subjects[r % len(subjects) :] + subjects[: r % len(subjects)]
            rounds.append([s for s in order if r < runs[s]])
        return rounds

    def _options(self, **extra: Any) -> dict[str, Any]:
        return {"formatter": self.formatter, **extra}

    def _record(self, row: str, subject: str, result: dict[str, Any], fields: dict[str, str]) -> None:
        if "skipped" in result:
            self.skipped[subject] = result["skipped"]
            return
        for key, name in fields.items():
            value: Any = result
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                self.cell(row, subject, name).values.append(float(value))
            elif name == "dropped" and "error" not in result:
                self.cell(row, subject, name).notes.append("not counted")
            else:
                self.cell(row, subject, name).notes.append(result.get("error") or result.get("note") or "n/a")

    def _skip(self, subject: str, gave_up: set[Any], key: Any) -> bool:
        return subject in self.skipped or key in gave_up

    def _burst(
        self, row: str, subjects: tuple[str, ...], n: int, fields: dict[str, str], **options: Any
    ) -> None:
        """Rows 1 and 2: a burst of ``n`` calls, then wait for the far end to have them all."""
        cap = self.plan.delivery_cap
        gave_up: set[str] = set()
        for rnd in self._rounds(row, subjects):
            for s in rnd:
                if self._skip(s, gave_up, s):
                    continue
                spec = {
                    "scenario": "burst",
                    "subject": s,
                    "n": n,
                    "warm": self.plan.warm,
                    "target": self.fars.up(s),
                    "options": self._options(**options),
                    "timeout": cap,
                }
                result = child(spec, timeout=cap + 300)
                if result.get("delivered", n) < n:
                    # Too slow to deliver within the cap: one such run is the answer.
                    result["note"] = (
                        f"> {cap:g} s: {result['delivered']:,} of {n:,} delivered "
                        f"(< {result['delivered'] / cap:,.0f}/s)"
                    )
                    gave_up.add(s)
                elif result.get("delivery_s", 0) > self.plan.slow_delivery:
                    gave_up.add(s)  # its runs would eat the time budget; the first says it all
                    self.remarks.append(
                        f"{s} ran once on row {row}: delivering after the loop "
                        f"alone took {result['delivery_s']:.0f} s."
                    )
                self._record(row, s, result, fields)
                _progress(f"{row:10s} {s:15s} {_brief(result)}")

    # Rows 1 and 2: every queue may hold the whole burst, so what is measured is delivery,
    # not which library drops first.  lelog's defaults hold it as they are.

    def cost(self) -> None:
        n = self.plan.cost_n
        self._burst(
            "cost",
            SUBJECTS,
            n,
            {"call_us": "call", "total_us": "total", "cpu_us": "cpu", "dropped": "dropped"},
            buffer_lines=n + self.plan.warm,
        )

    def throughput(self) -> None:
        n = self.plan.throughput_n
        self._burst(
            "throughput",
            SUBJECTS,
            n,
            {"rate": "rate", "dropped": "dropped", "call_us": "call"},
            buffer_lines=n + self.plan.warm,
        )

    def sustained(self) -> None:
        n = self.plan.sustained_n
        self._burst(
            "sustained",
            SUSTAINED_SUBJECTS,
            n,
            {
                "call_us": "call",
                "total_us": "total",
                "cpu_us": "cpu",
                "rate": "rate",
                "dropped": "dropped",
            },
            buffer_lines=n + self.plan.warm,
        )

    def construction(self) -> None:
        """Build many handlers with a URL in one process: time and RSS each, and what closing
        them all gives back.  Nothing listens on the URL: building must not connect."""
        for rnd in self._rounds("construction", ("lelog",)):
            for s in rnd:
                for scheme in ("http", "https"):
                    target = dead_target()
                    target["url"] = target["url"].replace("http://", f"{scheme}://")
                    spec = {
                        "scenario": "construct",
                        "subject": s,
                        "n": self.plan.construct_n,
                        "target": target,
                    }
                    result = child(spec, timeout=300)
                    self._record(
                        "construction",
                        s,
                        result,
                        {
                            "build_ms": f"ms_{scheme}",
                            "rss_mib_each": f"mib_{scheme}",
                            "rss_mib_total": f"total_{scheme}",
                            "held_after_close_mib": f"held_{scheme}",
                        },
                    )
                    _progress(f"construct  {s:15s} {scheme:9s} {_brief(result)}")

    def memory(self) -> None:
        for rnd in self._rounds("memory", ("lelog",) + PEERS):
            for s in rnd:
                if s in self.skipped or s in BUILD_CALLS_SERVICE:
                    continue
                marks = self.plan.peer_memory_marks if s in PEERS else self.plan.memory_marks
                spec = {
                    "scenario": "memory",
                    "subject": s,
                    "marks": list(marks),
                    "target": dead_target(),
                    "options": self._options(),
                }
                result = child(spec, timeout=400)
                lo, hi = (str(m) for m in marks)
                self._record(
                    "memory",
                    s,
                    result,
                    {
                        f"growth_mib.{lo}": "lo",
                        f"growth_mib.{hi}": "hi",
                        "dropped": "dropped",
                        "call_us": "call",
                    },
                )
                _progress(f"memory     {s:15s} {_brief(result)}")

    def latency(self) -> None:
        p = self.plan
        for rnd in self._rounds("latency", SUBJECTS):
            for s in rnd:
                for mode in ("up", "blackhole"):
                    if s in self.skipped or (
                        mode == "blackhole" and (s not in SINK_KIND or s in BUILD_CALLS_SERVICE)
                    ):
                        continue
                    far = Far("blackhole") if mode == "blackhole" else None
                    try:
                        target = far.target(s) if far else self.fars.up(s)
                        spec = {
                            "scenario": "latency",
                            "subject": s,
                            "n": p.latency_n,
                            "warm": p.warm if mode == "up" else 0,
                            "target": target,
                            "options": self._options(),
                        }
                        result = child(spec, timeout=300)
                    finally:
                        if far:
                            far.stop()
                    self._record(
                        "latency",
                        s,
                        result,
                        {"p99_us": f"p99_{mode}", "max_ms": f"max_{mode}", "p50_us": f"p50_{mode}"},
                    )
                    _progress(f"latency    {s:15s} {mode:9s} {_brief(result)}")

    def exit(self) -> None:
        p = self.plan
        gave_up: set[tuple[str, str]] = set()
        for rnd in self._rounds("exit", ("lelog",) + PEERS):
            for s in rnd:
                for mode in ("up", "dead", "blackhole"):
                    if self._skip(s, gave_up, (s, mode)) or (mode != "up" and s in BUILD_CALLS_SERVICE):
                        continue
                    far = Far("blackhole") if mode == "blackhole" else None
                    try:
                        if far is not None:
                            target = far.target(s)
                        else:
                            target = self.fars.up(s) if mode == "up" else dead_target()
                        before = _received(target) if mode == "up" else 0
                        n = p.peer_exit_n if s in PEERS else p.exit_n
                        spec = {
                            "scenario": "exit",
                            "subject": s,
                            "n": n,
                            "target": target,
                            "options": self._options(lelog={"close_timeout": EXIT_DEADLINE}),
                        }
                        result = timed_exit(spec, cap=p.exit_cap)
                        if mode == "up" and "exit_s" in result:
                            result["delivered"] = _received(target) - before
                            result["lines"] = n
                    finally:
                        if far:
                            far.stop()
                    if "killed_after" in result:
                        gave_up.add((s, mode))  # one hang is the answer; do not repeat it
                        result["note"] = f"> {p.exit_cap:g} s (killed)"
                    self._record("exit", s, result, {"exit_s": mode})
                    if mode == "up" and "delivered" in result:
                        self.cell("exit", s, "delivered").values.append(result["delivered"])
                        self.cell("exit", s, "lines").values.append(n)
                    _progress(f"exit       {s:15s} {mode:9s} {_brief(result)}")

    def members(self) -> None:
        """Processes of one host on one key (docs/writer.md#processes-on-one-key): an owner
        alone, then the same owner while MEMBERS member processes log flat out at once, each
        pair in one round, the order of the two alternating round by round.  The floor, when
        run, does the same with four do-nothing handlers: what four processes flat out cost
        any caller on this machine."""
        for r, rnd in enumerate(self._rounds("members", ("floor", "lelog"))):
            for s in rnd:
                for mode in ("alone", "shared") if r % 2 == 0 else ("shared", "alone"):
                    result = self._members_run(s, mode)
                    fields = (
                        {
                            "owner_us": "alone",
                            "owner_cpu_us": "cpu_alone",
                            "delivered_ratio": "delivered_alone",
                        }
                        if mode == "alone"
                        else {
                            "owner_us": "owner",
                            "owner_cpu_us": "cpu_owner",
                            "member_us": "member",
                            "member_cpu_us": "cpu_member",
                            "overlap": "overlap",
                            "logged": "logged",
                            "delivered": "delivered",
                            "delivered_ratio": "delivered_ratio",
                            "overflow": "overflow",
                            "lost_at_owner": "lost_at_owner",
                            "owner_dropped": "owner_dropped",
                        }
                    )
                    self._record("members", s, result, fields)
                    self._members_remarks(s, mode, result)
                    _progress(f"members    {s:15s} {mode:9s} {_brief(result)}")

    def _members_remarks(self, s: str, mode: str, result: dict[str, Any]) -> None:
        """Say what the table's medians would hide: an owner alone that lost lines, and a run
        whose processes did not take the parts they were started for."""
        if mode == "alone" and result.get("delivered_ratio") not in (None, 1.0):
            self.remarks.append(
                f"members row, {s} alone: {result['delivered']:,} of {result['logged']:,} lines "
                "delivered with no member at all."
            )
        own, members = result.get("owner_stats"), result.get("member_stats")
        if mode == "shared" and own is not None and members is not None:
            if own["handed_on"] or not own["shared"] or not own["uploaded"]:
                self.remarks.append(f"members row, {s}: the owner's stats were not an owner's: {own}")
            if not all(m["shared"] and m["handed_on"] for m in members):
                self.remarks.append(f"members row, {s}: a member's stats were not a member's: {members}")

    def _members_run(self, s: str, mode: str) -> dict[str, Any]:
        """One owner, and MEMBERS members in ``shared`` mode, on one key, in a runtime
        directory of their own (so no other run's processes meet them)."""
        p = self.plan
        n, warm = p.members_n, p.warm
        k = MEMBERS if mode == "shared" else 0
        target = self.fars.up(s)
        spec = {
            "scenario": "members",
            "subject": s,
            "n": n,
            "warm": warm,
            "target": target,
            "options": self._options(),
            "timeout": p.delivery_cap,
        }
        runtime = tempfile.mkdtemp(prefix="lelog-bench-members-")
        env = dict(os.environ, LELOG_RUNTIME_DIR=runtime)
        procs: list[Driven] = []
        try:
            # The owner's first line takes the stream's lock, and its warm-up is delivered,
            # before any member starts: it is the owner.
            owner = Driven({**spec, "role": "owner"}, env)
            procs.append(owner)
            said = owner.expect("READY", timeout=120)
            if "READY" not in said:
                return {"error": f"owner: {said.get('error')}"}
            members = [Driven({**spec, "role": "member"}, env) for _ in range(k)]
            procs += members
            for m in members:
                said = m.expect("READY", timeout=120)
                if "READY" not in said:
                    return {"error": f"member: {said.get('error')}"}
            logged = (k + 1) * warm
            # Every member's warm-up has reached the service, which only the owner writes to:
            # they have all joined before the clock starts.
            if target.get("stats") and _wait_received(target, logged, 30) < logged:
                return {"error": f"the members' warm-up did not arrive: {_received(target):,} of {logged:,}"}
            for proc in members + [owner]:
                proc.say("GO")  # the start barrier: every process is waiting on its stdin
            results = [m.expect("RESULT", timeout=p.delivery_cap + 120) for m in members]
            for res in results:
                if "error" in res:
                    return {"error": f"member: {res['error']}"}
            logged += (k + 1) * n
            stats = [res.get("stats") or {} for res in results]
            overflow = sum(st.get("dropped", {}).get("overflow", 0) for st in stats)
            dropped = sum(sum(st.get("dropped", {}).values()) for st in stats)
            owner.say(f"FINISH {logged} {dropped}")  # every member has left
            own = owner.expect("RESULT", timeout=p.delivery_cap + 120)
            if "error" in own:
                return {"error": f"owner: {own['error']}"}
            delivered = _received(target) if target.get("stats") else None
        finally:
            for proc in procs:
                proc.stop()
            shutil.rmtree(runtime, ignore_errors=True)
        loops = [own] + results
        # The share of the owner's loop during which every process was in its own.
        overlap = (min(r["end"] for r in loops) - max(r["start"] for r in loops)) / (
            own["end"] - own["start"]
        )
        own_stats = own.get("stats")
        return {
            "owner_us": own["call_us"],
            "owner_cpu_us": own["caller_cpu_us"],
            "member_us": statistics.median(r["call_us"] for r in results) if results else None,
            "member_cpu_us": statistics.median(r["caller_cpu_us"] for r in results) if results else None,
            "overlap": overlap if results else None,
            "logged": logged,
            "delivered": delivered,
            "delivered_ratio": ratio(delivered, logged),
            "overflow": overflow if own_stats else None,
            # What the members counted as with the owner, but the owner did not send (its
            # own count of drops also has its members' gaps that a later line showed it).
            "lost_at_owner": logged - own_stats["sent"] - dropped if own_stats else None,
            "owner_dropped": sum(own_stats["dropped"].values()) if own_stats else None,
            "owner_stats": own_stats,
            "member_stats": stats if own_stats else None,
        }

    def stop(self) -> None:
        self.fars.stop()


def _received(target: dict[str, Any]) -> int:
    from .subjects import StatsPoller

    if not target.get("stats"):
        return 0
    poller = StatsPoller(target["stats"])
    try:
        return poller.received()
    finally:
        poller.close()


def _wait_received(target: dict[str, Any], expected: int, timeout: float) -> int:
    """Poll the far end until it has ``expected`` lines for the target (or ``timeout``)."""
    from .subjects import StatsPoller

    poller = StatsPoller(target["stats"])
    try:
        end = time.monotonic() + timeout
        while (got := poller.received()) < expected and time.monotonic() < end:
            time.sleep(0.01)
        return got
    finally:
        poller.close()


def _brief(result: dict[str, Any]) -> str:
    return json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()})


# -- the report -------------------------------------------------------------------------------


def lelog_budget_mib() -> float:
    """What lelog's default buffers may hold: ingress and live queue bytes, plus history."""
    from lelog import WriterOptions

    o = WriterOptions()
    return (2 * o.max_pending_bytes + o.history_bytes) / (1 << 20)


def _runs(b: Bench, row: str) -> str:
    p = b.plan
    peers = f", peers {p.peer_runs[row]}" if p.peer_runs[row] != p.runs[row] else ""
    return f"{p.runs[row]} runs{peers}"


def report(b: Bench, command: str, elapsed: float) -> str:
    p = b.plan
    out: list[str] = []
    add = out.append
    peers = [s for s in PEERS if s in b.subjects and s not in b.skipped]

    def ran(row: str) -> list[str]:
        return [s for s in SUBJECTS if s in b.results.get(row, {}) and s not in b.skipped]

    def table(
        row: str, title: str, header: list[str], cells: Callable[[str], list[str]], notes: str = ""
    ) -> None:
        if not ran(row):
            return
        add(f"### {title}")
        add("")
        add("| " + " | ".join(["handler"] + header) + " |")
        add("|" + "---|" * (len(header) + 1))
        for s in ran(row):
            add("| " + " | ".join([s] + cells(s)) + " |")
        add("")
        if notes:
            add(notes)
            add("")

    rows = ", ".join(f"{row} {t:.0f} s" for row, t in b.row_seconds.items())
    add(
        f"Command: `{command}` ({elapsed / 60:.1f} min: {rows}; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()})."
    )
    add("")
    add(
        "Each figure is the median of its runs, with (min–max); each ratio is between medians of "
        "this same invocation. Every measurement ran in a fresh process; lelog's service "
        "(`tests/service.py --discard`) and each peer's sink ran in processes of their own, on "
        f"loopback. {_formatter_note(b.formatter)}; each "
        "peer uses its own formatter; *stdlib-queue-stream*'s target formats with a time "
        "(`%(asctime)s %(levelname)s %(name)s %(message)s`)."
    )
    add("")

    c = lambda row, s, name, fmt="{:.1f}", spread=True: b.cell(row, s, name).show(fmt, spread)  # noqa: E731

    def above_floor(row: str, s: str) -> str:
        cpu, floor = b.get(row, s, "cpu"), b.get(row, "floor", "cpu")
        return "n/a" if cpu is None or floor is None else f"{cpu - floor:.1f}"

    base = b.get("cost", "stdlib-queue", "total")
    table(
        "cost",
        f'1. Caller cost per `logger.info("…%d…", i)`: {p.cost_n:,} calls ({_runs(b, "cost")})',
        [
            "call loop µs/call",
            "call + delivery µs/call",
            "CPU µs/call",
            "CPU above floor µs",
            "vs floor (loop)",
            "vs floor (+ delivery)",
            "CPU vs floor",
            "vs stdlib queue",
            "dropped",
        ],
        lambda s: [
            c("cost", s, "call"),
            c("cost", s, "total"),
            c("cost", s, "cpu", spread=False),
            above_floor("cost", s),
            show_ratio(ratio(b.get("cost", s, "call"), b.get("cost", "floor", "call"))),
            show_ratio(ratio(b.get("cost", s, "total"), b.get("cost", "floor", "total"))),
            show_ratio(ratio(b.get("cost", s, "cpu"), b.get("cost", "floor", "cpu"))),
            show_ratio(ratio(b.get("cost", s, "total"), base)),
            c("cost", s, "dropped", "{:,.0f}", False),
        ],
        "*floor*: a handler whose `emit` does nothing, what `logging` itself costs. *call loop*: "
        "the loop of calls alone, while the background works; *call + delivery*: until the far "
        "end has every line (`flush()`, then polling it). *CPU*: the process's CPU time (all its "
        "threads) over the same span. *vs stdlib queue*: call + delivery." + _spool_note(b),
    )
    base = b.get("throughput", "stdlib-queue", "rate")
    best = max((v for v in (b.get("throughput", s, "rate") for s in peers) if v), default=None)
    table(
        "throughput",
        f"2. Delivered throughput: {p.throughput_n:,} lines until the far end has "
        f"them all ({_runs(b, 'throughput')})",
        ["lines/s", "vs floor", "vs stdlib queue", "vs best peer", "dropped"],
        lambda s: [
            c("throughput", s, "rate", "{:,.0f}"),
            show_ratio(ratio(b.get("throughput", s, "rate"), b.get("throughput", "floor", "rate"))),
            show_ratio(ratio(b.get("throughput", s, "rate"), base)),
            show_ratio(ratio(b.get("throughput", s, "rate"), best)),
            c("throughput", s, "dropped", "{:,.0f}", False),
        ],
        "Each library's queue was sized to hold the whole burst where its default would drop "
        "(OpenTelemetry `max_queue_size`, fluent `queue_maxsize`); lelog runs on its defaults. "
        "*stdlib-queue* delivers to a discarding handler in the same process, *stdlib-queue-stream* "
        "to a `StreamHandler` on `os.devnull` formatting with a time; watchtower to a moto "
        "server (CloudWatch Logs) in its own process." + _spool_note(b),
    )
    table(
        "sustained",
        f"2b. Sustained: {p.sustained_n:,} calls in one loop, until the far end has them all "
        f"({_runs(b, 'sustained')})",
        [
            "call loop µs/call",
            "call + delivery µs/call",
            "lines/s",
            "CPU µs/call",
            "CPU above floor µs",
            "vs floor (loop)",
            "vs floor (+ delivery)",
            "CPU vs floor",
            "rate vs floor",
            "dropped",
        ],
        lambda s: [
            c("sustained", s, "call"),
            c("sustained", s, "total"),
            c("sustained", s, "rate", "{:,.0f}"),
            c("sustained", s, "cpu", spread=False),
            above_floor("sustained", s),
            show_ratio(ratio(b.get("sustained", s, "call"), b.get("sustained", "floor", "call"))),
            show_ratio(ratio(b.get("sustained", s, "total"), b.get("sustained", "floor", "total"))),
            show_ratio(ratio(b.get("sustained", s, "cpu"), b.get("sustained", "floor", "cpu"))),
            show_ratio(ratio(b.get("sustained", s, "rate"), b.get("sustained", "floor", "rate"))),
            c("sustained", s, "dropped", "{:,.0f}", False),
        ],
        "So long that whatever the background defers is paid inside the run: *call + delivery* "
        "and the rate count every line until the far end has it. *CPU vs floor*: process CPU "
        "(all threads) per call against the floor's, which a shared machine's other load "
        "does not inflate as it does wall times.",
    )
    n_built = p.construct_n
    table(
        "construction",
        f"2c. Building {n_built:,} handlers with a URL in one process ({_runs(b, 'construction')})",
        [
            "ms each, http://",
            "MiB each, http://",
            f"MiB for {n_built}, http://",
            "MiB held after closing, http://",
            "ms each, https://",
            "MiB each, https://",
            "MiB held after closing, https://",
        ],
        lambda s: [
            c("construction", s, "ms_http", "{:.2f}"),
            c("construction", s, "mib_http", "{:.3f}"),
            c("construction", s, "total_http"),
            c("construction", s, "held_http"),
            c("construction", s, "ms_https", "{:.2f}"),
            c("construction", s, "mib_https", "{:.3f}"),
            c("construction", s, "held_https"),
        ],
        "RSS growth (`VmRSS`, after `gc.collect()`) over the handlers, one warm-up handler "
        "built first; *held after closing*: the growth left once every handler is closed and "
        "collected. Nothing listens on the URL: building one must not connect.",
    )

    def marks(s: str) -> str:
        return " → ".join(f"{m:,}" for m in (p.peer_memory_marks if s in PEERS else p.memory_marks))

    table(
        "memory",
        f"3. Peak RSS growth against a dead service ({_runs(b, 'memory')})",
        ["lines", "MiB after the first", "MiB after the second", "dropped, counted", "µs/call"],
        lambda s: [
            marks(s),
            c("memory", s, "lo"),
            c("memory", s, "hi"),
            c("memory", s, "dropped", "{:,.0f}", False),
            c("memory", s, "call", spread=False),
        ],
        f"Connection refused on every attempt; library defaults. lelog's configured buffers: "
        f"2 × `max_pending_bytes` + `history_bytes` = {lelog_budget_mib():.0f} MiB.",
    )
    table(
        "latency",
        f"4. One call's latency, {p.latency_n:,} calls each timed ({_runs(b, 'latency')})",
        [
            "p50 up µs",
            "p99 up µs",
            "p99 blackhole µs",
            "blackhole / up, p99",
            "max up ms",
            "max blackhole ms",
        ],
        lambda s: [
            c("latency", s, "p50_up"),
            c("latency", s, "p99_up"),
            c("latency", s, "p99_blackhole"),
            show_ratio(ratio(b.get("latency", s, "p99_blackhole"), b.get("latency", s, "p99_up"))),
            c("latency", s, "max_up"),
            c("latency", s, "max_blackhole"),
        ],
        "*blackhole*: a sink that accepts connections and never reads or answers.",
    )
    table(
        "exit",
        f"5. Exit with {p.exit_n:,} lines just logged (peers {p.peer_exit_n:,}): seconds "
        f"from the loop's end to process exit ({_runs(b, 'exit')})",
        ["service up", "delivered (up)", "dead service", "blackhole service"],
        lambda s: [
            c("exit", s, "up", "{:.2f}"),
            c("exit", s, "delivered", "{:,.0f}", False) + f" of {b.get('exit', s, 'lines') or 0:,.0f}",
            c("exit", s, "dead", "{:.2f}"),
            c("exit", s, "blackhole", "{:.2f}"),
        ],
        f"The program just returns (atexit hooks, then `logging.shutdown()`). lelog's "
        f"`close_timeout` here: {EXIT_DEADLINE:g} s. An exit taking over {p.exit_cap:g} s is "
        "killed and not repeated.",
    )

    def each_run(s: str, first: str, second: str, between: str) -> str:
        """Two counts of every run, side by side (a loss in one run is the answer)."""
        one, two = b.cell("members", s, first), b.cell("members", s, second)
        if not one.values:
            return one.show()
        return ", ".join(f"{x:,.0f}{between}{y:,.0f}" for x, y in zip(one.values, two.values))

    table(
        "members",
        f"6. Processes on one key: an owner alone, then with {MEMBERS} member processes logging "
        f"flat out, {p.members_n:,} calls each ({_runs(b, 'members')})",
        [
            "alone µs/call",
            f"owner, {MEMBERS} members µs/call",
            "member µs/call",
            "owner vs alone",
            "member vs alone",
            "caller CPU µs/call: alone, owner, member",
            "loops overlapped",
            "delivered of logged, each run",
            "dropped, each run: members' overflow / at the owner",
        ],
        lambda s: [
            c("members", s, "alone"),
            c("members", s, "owner"),
            c("members", s, "member"),
            show_ratio(ratio(b.get("members", s, "owner"), b.get("members", s, "alone"))),
            show_ratio(ratio(b.get("members", s, "member"), b.get("members", s, "alone"))),
            ", ".join(
                c("members", s, name, spread=False) for name in ("cpu_alone", "cpu_owner", "cpu_member")
            ),
            c("members", s, "overlap", "{:.0%}"),
            each_run(s, "delivered", "logged", " of "),
            each_run(s, "overflow", "lost_at_owner", " / "),
        ],
        f"Each process logs {p.warm:,} lines first; the owner's first line takes the stream (its "
        "warm-up delivered before any member starts), and the clock starts once every member's "
        "warm-up has reached the service through it; then all of them start at once (a `GO` "
        "line on each one's stdin). *owner* and *member*: each process's own loop (the member "
        f"column: the median of the {MEMBERS}); *vs alone*: against the owner logging alone "
        "in the same round, on a fresh runtime directory each. *caller CPU*: the calling thread's "
        "CPU (`time.thread_time()`), which waiting for the GIL or for a core does not count. "
        "*loops overlapped*: the share of the owner's loop during which every process was in "
        "its own. *delivered*: what the service received on the key (the lines of all "
        "processes, and any `[lelog]` marker of a gap). *dropped*: the `overflow` the members "
        "counted (their connection to the owner full), and the lines they counted as sent that "
        "the owner then did not send (lines logged, less the owner's `sent` and the members' "
        "drops). *floor*: the same four processes with "
        f"a handler that does nothing, what {MEMBERS + 1} processes logging flat out cost any "
        f"caller on these {os.cpu_count()} cores.",
    )

    for remark in b.remarks:
        add(f"- {remark}")
    if b.remarks:
        add("")
    add("### Targets")
    add("")
    for ok, text in targets(b, peers):
        add(f"- {'PASS' if ok else 'FAIL' if ok is not None else 'n/a '} {text}")
    if b.skipped:
        add("")
        add("Skipped (not installed; `pip install -e '.[bench]'`): " + ", ".join(sorted(b.skipped)))
    return "\n".join(out) + "\n"


def _formatter_note(name: str) -> str:
    if name == "logfmt":
        return (
            "lelog runs on its default formatter (its own `LogfmtFormatter`: records are captured "
            "and rendered on its worker); the stdlib-queue row formats with `lelog.LogfmtFormatter()` "
            "in the caller"
        )
    return (
        'The stdlib-queue and lelog rows use `logging.Formatter("%(asctime)s %(levelname)s '
        '%(name)s %(message)s")` (lelog formats such records in the caller)'
    )


def spool_ratios(b: Bench) -> dict[str, Optional[float]]:
    """What the crash spool costs: lelog-spool over lelog (time per line, so for the rate
    lelog's over lelog-spool's); above 1 the spool costs more."""
    return {
        "call loop": ratio(b.get("cost", "lelog-spool", "call"), b.get("cost", "lelog", "call")),
        "call + delivery": ratio(b.get("cost", "lelog-spool", "total"), b.get("cost", "lelog", "total")),
        "CPU": ratio(b.get("cost", "lelog-spool", "cpu"), b.get("cost", "lelog", "cpu")),
        "throughput": ratio(b.get("throughput", "lelog", "rate"), b.get("throughput", "lelog-spool", "rate")),
    }


def _spool_note(b: Bench) -> str:
    if "lelog-spool" not in b.subjects:
        return ""
    shown = ", ".join(f"{name} {show_ratio(r)}" for name, r in spool_ratios(b).items())
    return (
        " *lelog-spool*: lelog with `spool_dir` set (a fresh temporary directory per run); "
        f"its cost over lelog's (for throughput, lelog's rate over its rate): {shown}."
    )


def targets(b: Bench, peers: list[str]) -> list[tuple[Optional[bool], str]]:
    """lelog's targets, judged on this run's medians."""
    checks: list[tuple[Optional[bool], str]] = []

    def check(value: Optional[float], ok: Callable[[float], bool], text: str) -> None:
        if value is None:
            checks.append((None, text.rsplit(": ", 1)[0] + ": not measured"))
        else:
            checks.append((ok(value), text.format(v=value)))

    # Cost and rate against logging's own floor, judged on the sustained row where it ran (no
    # work can hide after its loop), else on rows 1 and 2.
    row = "sustained" if b.get("sustained", "lelog", "call") else "cost"
    wall = ratio(b.get(row, "lelog", "call"), b.get(row, "floor", "call"))
    cpu = ratio(b.get(row, "lelog", "cpu"), b.get(row, "floor", "cpu"))
    cpu_note = "" if cpu is None else f" (process CPU: {cpu:.2f}x)"
    check(wall, lambda v: v <= 1.6, f"caller wall cost ≤ 1.6x the floor ({row} row){cpu_note}: {{v:.2f}}x")
    check(
        wall,
        lambda v: v <= 1.3,
        f"stretch: caller wall cost ≤ 1.3x the floor ({row} row){cpu_note}: {{v:.2f}}x",
    )
    row = "sustained" if b.get("sustained", "lelog", "rate") else "throughput"
    rate = ratio(b.get(row, "lelog", "rate"), b.get(row, "floor", "rate"))
    check(rate, lambda v: v >= 0.55, f"delivered ≥ 0.55x the floor's rate ({row} row): {{v:.2f}}x")
    check(rate, lambda v: v >= 0.7, f"stretch: delivered ≥ 0.7x the floor's rate ({row} row): {{v:.2f}}x")
    check(
        b.get("construction", "lelog", "mib_http"),
        lambda v: v <= 0.1,
        "a handler with an http:// URL costs ≤ 0.1 MiB RSS: {v:.3f} MiB",
    )
    check(
        b.get("construction", "lelog", "ms_http"),
        lambda v: v <= 1.0,
        "a handler with an http:// URL is built in ≤ 1 ms: {v:.2f} ms",
    )
    for name, what in (("call", "call loop"), ("total", "call + delivery")):
        best = min((v for v in (b.get("cost", s, name) for s in peers) if v), default=None)
        check(
            ratio(b.get("cost", "lelog", name), best),
            lambda v: v < 1,
            f"caller cost ({what}) below every peer: {{v:.2f}}x the cheapest peer",
        )
    best = max((v for v in (b.get("throughput", s, "rate") for s in peers) if v), default=None)
    check(
        ratio(b.get("throughput", "lelog", "rate"), best),
        lambda v: v >= 2,
        "throughput ≥ 2x the best peer: {v:.2f}x",
    )
    hi = b.get("memory", "lelog", "hi")
    check(
        hi,
        lambda v: v <= lelog_budget_mib() * 1.1,
        "memory within the buffer budget +10 %: {v:.1f} MiB of " + f"{lelog_budget_mib() * 1.1:.0f}",
    )
    lo = b.get("memory", "lelog", "lo")
    # "No more than" with room for the allocator's noise: 5 % or 1 MiB.
    check(
        ratio(hi, lo),
        lambda v: hi <= max(lo * 1.05, lo + 1),  # type: ignore[operator]
        f"memory flat: {b.plan.memory_marks[1]:,} lines cost {{v:.2f}}x {b.plan.memory_marks[0]:,}",
    )
    r = ratio(b.get("latency", "lelog", "p99_blackhole"), b.get("latency", "lelog", "p99_up"))
    check(r, lambda v: v <= 1.5, "blackhole p99 ≤ 1.5x p99 with the service up: {v:.2f}x")
    check(b.get("latency", "lelog", "max_blackhole"), lambda v: v < 20, "blackhole max < 20 ms: {v:.1f} ms")
    for mode in ("dead", "blackhole"):
        check(
            b.get("exit", "lelog", mode),
            lambda v: v <= EXIT_DEADLINE + 0.5,
            f"exit against a {mode} service ≤ {EXIT_DEADLINE + 0.5:g} s: {{v:.2f}} s",
        )
    check(
        b.get("exit", "lelog", "delivered"),
        lambda v: v >= b.plan.exit_n,
        f"exit with the service up delivers all {b.plan.exit_n:,} lines: {{v:,.0f}}",
    )

    # Processes on one key: a member's call costs about what the owner's does alone, the
    # owner is not slowed by its members' lines, and every line arrives.
    def members_notes(who: str) -> str:
        """The caller thread's CPU ratio, and the floor's wall ratio in the same setting (what
        the machine's cores alone make of four processes flat out)."""
        cpu = ratio(b.get("members", "lelog", f"cpu_{who}"), b.get("members", "lelog", "cpu_alone"))
        floor = ratio(b.get("members", "floor", who), b.get("members", "floor", "alone"))
        notes = ([f"caller CPU: {cpu:.2f}x"] if cpu else []) + (
            [f"the floor's: {floor:.2f}x"] if floor else []
        )
        return f" ({'; '.join(notes)})" if notes else ""

    alone = b.get("members", "lelog", "alone")
    check(
        ratio(b.get("members", "lelog", "member"), alone),
        lambda v: v <= 1.5,
        f"a member's caller wall ≤ 1.5x an owner alone (members row){members_notes('member')}: {{v:.2f}}x",
    )
    check(
        ratio(b.get("members", "lelog", "owner"), alone),
        lambda v: v <= 1.5,
        f"the owner's caller wall with {MEMBERS} members flooding ≤ 1.5x alone (members row)"
        f"{members_notes('owner')}: {{v:.2f}}x",
    )
    delivered = b.cell("members", "lelog", "delivered_ratio").values
    overflow, lost = (b.cell("members", "lelog", name).values for name in ("overflow", "lost_at_owner"))
    most = max((x + y for x, y in zip(overflow, lost)), default=0)
    check(
        min(delivered) if delivered else None,
        lambda v: v == 1 and most == 0,
        f"every line delivered with {MEMBERS} members flooding (members row): {{v:.4f}} of the "
        f"lines logged in the worst run, {most:,.0f} dropped",
    )
    # The crash spool keeps caller cost and throughput within 1.2x of lelog without it.
    if "lelog-spool" in b.subjects:
        for name, r in spool_ratios(b).items():
            check(r, lambda v: v <= 1.2, f"with the spool, {name} ≤ 1.2x lelog without it: {{v:.2f}}x")
    return checks


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument(
        "--subjects",
        default=",".join(DEFAULT_SUBJECTS),
        help=f"comma-separated subset of {','.join(SUBJECTS)}, or 'all'",
    )
    parser.add_argument(
        "--formatter",
        choices=FORMATTERS,
        default="logfmt",
        help="for the stdlib-queue and lelog rows (default: lelog's LogfmtFormatter)",
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.md"))
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    everything = [s for s in SUBJECTS if s != "prototype"]  # named explicitly, or not run
    subjects = everything if args.subjects == "all" else args.subjects.split(",")
    unknown = set(rows) - set(ROWS) | set(subjects) - set(SUBJECTS)
    if unknown:
        parser.error(f"unknown row(s) or subject(s): {', '.join(sorted(unknown))}")
    bench = Bench(QUICK if args.quick else FULL, subjects, args.formatter)
    command = "python -m benchmarks" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    start = time.monotonic()
    try:
        for row in rows:
            row_start = time.monotonic()
            getattr(bench, row)()
            bench.row_seconds[row] = time.monotonic() - row_start
    finally:
        bench.stop()
    table = report(bench, command, time.monotonic() - start)
    Path(args.output).write_text(table)
    print(table)
    return 0
