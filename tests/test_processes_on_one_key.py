"""Processes of one host on one key share its stream: one open, one stored log with every line.

Each process here is a real child process built as a user would build it; the test drives
them through their stdin and reads what they say on stdout, so every step waits on a
condition.  The stored log is checked from the fake service: every line once, ``pos``
contiguous from 0, one ``POST /stream``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.helpers import ROOT, run_python, wait_until
from tests.service import FakeLogService

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AF_UNIX and fcntl: Linux")

#: A process on key "k": it obeys one command per line of its stdin and says "ok" after each.
#: ``log NAME N``: N lines; ``flood NAME N``: N lines on a thread of their own, ``join`` waits
#: for it; ``flush``; ``close`` (prints its stats); ``exit`` (``os._exit``).
PROCESS = """
import json, os, sys, threading, lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url=sys.argv[1], account_id="acct", token=sys.argv[2]),
                            close_timeout=20)
print("started", flush=True)
for command in sys.stdin:
    words = command.split()
    if words[0] == "log":
        for i in range(int(words[2])):
            writer.write_line(f"{words[1]} {i}")
        print("ok", flush=True)
    elif words[0] == "flood":
        name, count = words[1], int(words[2])
        flood = threading.Thread(target=lambda: [writer.write_line(f"{name} {i}") for i in range(count)])
        flood.start()
        print("ok", flush=True)
    elif words[0] == "join":
        flood.join()
        print("ok", flush=True)
    elif words[0] == "flush":
        print("ok", writer.flush(timeout=20), flush=True)
    elif words[0] == "fork":
        pid = os.fork()
        if pid == 0:
            for i in range(int(words[2])):
                writer.write_line(f"{words[1]} {i}")
            stats = writer.close()
            print("child", json.dumps([stats.sent, stats.handed_on]), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("ok", flush=True)
    elif words[0] == "close":
        stats = writer.close()
        whole = stats.stream and [stats.stream.accepted, stats.stream.sent, stats.stream.processes]
        report = [stats.accepted, stats.sent, stats.uploaded, stats.handed_on, stats.shared,
                  whole, dict(stats.dropped), stats.summary()]
        print("ok", json.dumps(report), flush=True)
        break
    elif words[0] == "exit":
        os._exit(0)
"""


class Process:
    """One writer process on the key, driven line by line."""

    def __init__(self, service: FakeLogService, env: dict[str, str], token: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", PROCESS, service.url, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        assert self.read() == "started"

    def read(self) -> str:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()  # each child is bounded: the test's timeout and finally
        assert line, f"process {self.popen.pid} ended early (status {self.popen.poll()})"
        return line.strip()

    def ask(self, command: str) -> str:
        assert self.popen.stdin is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        if command == "exit":
            assert self.popen.wait(30) == 0
            return ""
        answer = self.read()
        while answer.startswith("child"):  # a fork child's report comes first
            self.child = json.loads(answer.split(" ", 1)[1])
            answer = self.read()
        assert answer.startswith("ok"), answer
        return answer[2:].strip()

    def close(self) -> list[object]:
        """Close the writer: [accepted, sent, uploaded, handed_on, shared]; the lines it
        dropped, by reason, in ``dropped``."""
        stats: list[object] = json.loads(self.ask("close"))
        assert self.popen.wait(30) == 0
        self.summary = str(stats.pop())
        self.dropped: dict[str, int] = stats.pop()  # type: ignore[assignment]
        #: The whole stream's [accepted, sent, processes], on the process that stored it.
        self.whole = stats.pop()
        return stats

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)


class Processes:
    """The writer processes a test started; any still running at its end are killed."""

    def __init__(self, service: FakeLogService, runtime: Path) -> None:
        self._service = service
        self._env = dict(os.environ, PYTHONPATH=str(ROOT), LELOG_RUNTIME_DIR=str(runtime))
        self.started: list[Process] = []

    def start(self, token: str = "secret-token", runtime: Optional[Path] = None) -> Process:
        """A writer process; ``runtime``: a runtime directory of its own (as on another host,
        or in a container that does not share the directory)."""
        env = self._env if runtime is None else dict(self._env, LELOG_RUNTIME_DIR=str(runtime))
        process = Process(self._service, env, token)
        self.started.append(process)
        return process


@pytest.fixture
def processes(service: FakeLogService, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(service, tmp_path / "runtime")
    try:
        yield started
    finally:
        for process in started.started:
            if process.popen.poll() is None:
                process.kill()


def stored(service: FakeLogService, key: str = "k") -> list[str]:
    """The stored log's lines, after checking that ``pos`` runs from 0 without a gap and
    that the stream was opened once."""
    rows = service.blob_lines(key) or []
    assert [row["pos"] for row in rows] == list(range(len(rows)))
    assert len(service.requests_for(key=key, method="POST", path="/stream")) == 1
    return [row["out"].rstrip("\n") for row in rows]


def lines(name: str, count: int, start: int = 0) -> list[str]:
    return [f"{name} {i}" for i in range(start, start + count)]


def test_processes_on_one_key_store_every_line_once_and_the_last_out_uploads(
    service: FakeLogService, processes: Processes
) -> None:
    first, second, third = (processes.start() for _ in range(3))
    for process, name in ((first, "a"), (second, "b"), (third, "c")):
        process.ask(f"log {name} 100")
    reports = [second.close(), first.close(), third.close()]  # the owner leaves in the middle
    # [accepted, sent, uploaded, handed_on, shared]: two hand the stream on, the last stores it.
    assert [report[2:] for report in reports] == [[None, True, True], [None, True, True], [True, False, True]]
    # The first to close was a member (one owner), the next the owner (two members' lines);
    # the last took the stream over after the first owner handed it on.
    assert second.summary.endswith("stream shared with 1 other process on this host; handed on")
    assert first.summary.endswith("stream shared with 2 other processes on this host; handed on")
    assert third.summary.endswith(
        "log uploaded (stream shared with 1 other process on this host); "
        "the whole stream: 300 lines of 3 processes, 300 sent"
    )
    assert (first.whole, second.whole, third.whole) == (None, None, [300, 300, 3])
    assert sorted(stored(service)) == sorted(lines("a", 100) + lines("b", 100) + lines("c", 100))


def test_a_member_takes_the_stream_over_when_its_owner_closes_and_continues_pos(
    service: FakeLogService, processes: Processes
) -> None:
    owner = processes.start()
    owner.ask("log owner 10")
    assert owner.ask("flush") == "True"  # it has opened the stream: it owns it
    member = processes.start()
    member.ask("log member 10")
    assert owner.close()[2:] == [None, True, True]  # handed on: a member still writes
    member.ask("log later 10")  # its owner is gone: it takes the stream over
    assert member.close()[2:] == [True, False, True]
    assert stored(service) == lines("owner", 10) + lines("member", 10) + lines("later", 10)


def test_processes_that_come_and_go_around_a_long_lived_one_keep_every_line(
    service: FakeLogService, processes: Processes
) -> None:
    long_lived = processes.start()
    long_lived.ask("log long 5")
    expected = lines("long", 5)
    for n in range(4):  # as workers recycled every few requests
        worker = processes.start()
        worker.ask(f"log worker{n} 20")
        worker.close()
        long_lived.ask("log long 5")
        expected += lines(f"worker{n}", 20) + lines("long", 5)
    assert long_lived.close()[2] is True
    assert sorted(stored(service)) == sorted(expected)


def owner_and_two_members(processes: Processes) -> tuple[Process, list[Process]]:
    """An owner that has opened the stream with 20 lines, and two members with 20 each."""
    owner = processes.start()
    owner.ask("log owner 20")
    assert owner.ask("flush") == "True"
    members = [processes.start(), processes.start()]
    for n, member in enumerate(members):
        member.ask(f"log m{n} 20")
    return owner, members


#: A marker's count of lines lost with an owner that ended without storing them.
_LOST = re.compile(r"^\[lelog\] ([\d,]+) lines lost: process (\d+) ended without storing them")


@pytest.mark.parametrize(
    "how", ["stopped, then killed", "stopped, killed, and the members close", "killed mid-flood"]
)
def test_lines_lost_with_a_killed_owner_are_stored_or_counted_exactly_in_a_marker(
    service: FakeLogService, processes: Processes, how: str
) -> None:
    """Lines the members had sent that the owner never stored (in their connections, or read
    and not yet in its history) are counted by each member and marked with their exact
    number: every member line is stored once or counted once, and the members' stats agree."""
    owner, members = owner_and_two_members(processes)
    stopped = how.startswith("stopped")
    later = 0 if how.endswith("close") else 20  # closing, a member sends nothing that fails
    if stopped:  # what the members send now stays in their connections
        owner.popen.send_signal(signal.SIGSTOP)
        for n, member in enumerate(members):
            member.ask(f"log flood{n} 3000")
        owner.kill()
    else:
        for n, member in enumerate(members):
            member.ask(f"flood flood{n} 20000")
        owner.kill()
        for member in members:
            member.ask("join")
    for n, member in enumerate(members):
        member.ask(f"log after{n} {later}")
    reports = [member.close() for member in members]
    assert sorted(str(report[2]) for report in reports) == ["None", "True"]  # one stores the log
    outs = stored(service)
    counted = [_LOST.match(out) for out in outs]
    lost = sum(int(found.group(1).replace(",", "")) for found in counted if found is not None)
    assert {int(found.group(2)) for found in counted if found is not None} <= {owner.popen.pid}
    plain = [out for out in outs if not out.startswith("[lelog] ")]
    assert len(plain) == len(set(plain)), "a line stored twice"
    flooded = 3000 if stopped else 20000
    sent_by_members = {
        line
        for n in range(2)
        for line in lines(f"m{n}", 20) + lines(f"flood{n}", flooded) + lines(f"after{n}", later)
    }
    assert set(plain) == set(lines("owner", 20)) | (set(plain) & sent_by_members)
    markers = [out for out in outs if out.startswith("[lelog] ")]
    missing = sorted(sent_by_members - set(plain), key=lambda line: (line.split()[0], int(line.split()[1])))
    evidence = (
        f"{markers}; {len(missing)} missing: {missing[:3]}..{missing[-3:]}; {[m.dropped for m in members]}"
    )
    assert len(set(plain) & sent_by_members) + lost == len(sent_by_members), evidence
    assert sum(member.dropped["lost_with_owner"] for member in members) == lost
    if stopped:
        assert lost > 0  # the stopped owner read none of the flood


@pytest.mark.parametrize("how", ["kill -9", "os._exit"])
def test_an_owner_that_vanishes_is_succeeded_and_its_loss_is_marked(
    service: FakeLogService, processes: Processes, how: str
) -> None:
    owner, members = owner_and_two_members(processes)
    assert owner.ask("flush") == "True"  # the members' lines are the owner's, and in its history
    if how == "kill -9":
        owner.kill()
    else:
        owner.ask("exit")
    for n, member in enumerate(members):
        member.ask(f"log after{n} 20")  # the first finds its owner gone, and takes over
    reports = [member.close() for member in members]
    assert sorted(str(report[2]) for report in reports) == ["None", "True"]  # one stores the log
    outs = stored(service)
    markers = [out for out in outs if out.startswith("[lelog] ")]
    assert len(markers) == 1 and "ended without handing it over" in markers[0], markers
    assert sorted(out for out in outs if not out.startswith("[lelog] ")) == sorted(
        lines("owner", 20) + lines("m0", 20) + lines("m1", 20) + lines("after0", 20) + lines("after1", 20)
    )
    # The vanished owner's part counted by the rows it stored: every line, 3 processes.
    assert [member.whole for member in members if member.whole] == [[100, 100, 3]], members[0].summary


def test_a_fork_child_of_a_member_is_a_member_of_its_own(
    service: FakeLogService, processes: Processes
) -> None:
    owner = processes.start()
    owner.ask("log owner 5")
    assert owner.ask("flush") == "True"
    member = processes.start()
    member.ask("log member 5")
    member.ask("fork child 5")
    assert member.child == [5, True]  # the child handed its lines on, as a member
    member.ask("log member 5")
    member.close()
    owner.close()
    assert sorted(stored(service)) == sorted(
        lines("owner", 5) + lines("member", 5) + lines("child", 5) + lines("member", 5, 0)
    )


CRASHED_THEN_RERUN = """
import os, lelog
config = lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token")
writer = lelog.StreamWriter("k", config)
writer.write_line({run!r})
writer.flush(timeout=20)
if {run!r} == "crashed run":
    os._exit(0)
print(writer.close().uploaded)
"""


def test_a_killed_runs_stream_is_stored_and_closed_before_a_new_run_opens_its_own(
    service: FakeLogService, tmp_path: Path
) -> None:
    """Nobody waits on the killed run's stream: the re-run stores that run's log from its
    history file and closes its stream, with a marker, then starts a new log, as a re-run
    always did (and never pushes to the old stream)."""
    env = {"LELOG_RUNTIME_DIR": str(tmp_path / "runtime")}
    result = run_python(CRASHED_THEN_RERUN.format(url=service.url, run="crashed run"), timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert service.is_open("k")
    service.clear_requests()
    result = run_python(CRASHED_THEN_RERUN.format(url=service.url, run="new run"), timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    requests = service.requests_for()  # the upload's body goes to the storage link: no key
    opened = [(r.method, r.path, r.key) for r in requests].index(("POST", "/stream", "k"))
    assert ("DELETE", "/stream", "k") in [(r.method, r.path, r.key) for r in requests[:opened]]
    stored_first = [r.body for r in requests[:opened] if b"crashed run" in r.body]  # closed first
    assert len(stored_first) == 1 and b"ended without closing it" in stored_first[0]
    assert [row["out"] for row in service.blob_lines("k") or []] == ["new run\n"]


OTHER_TOKEN = """
import lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url={url!r}, account_id="acct", token="another-token"))
for i in range(3):
    writer.write_line(f"intruder {{i}}")
stats = writer.close()
print(stats.accepted, stats.sent, stats.dropped["rejected"], stats.uploaded, flush=True)
"""


def test_a_process_with_another_token_is_refused_and_never_opens_the_stream(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    owner = processes.start()
    owner.ask("log owner 5")
    assert owner.ask("flush") == "True"
    result = run_python(
        OTHER_TOKEN.format(url=service.url), timeout=60, env={"LELOG_RUNTIME_DIR": str(tmp_path / "runtime")}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "0", "3", "None"]
    assert "with another token" in result.stderr and "another-token" not in result.stderr
    owner.ask("log owner 5")
    owner.close()
    assert stored(service) == lines("owner", 5) + lines("owner", 5)


LOOP = """
import sys, lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url=sys.argv[1], account_id="acct", token="secret-token"))
for i in range(20):
    writer.write_line(f"{sys.argv[2]} {i}")
stats = writer.close()
whole = stats.stream and (stats.stream.accepted, stats.stream.sent, stats.stream.processes)
print(stats.uploaded, *(whole or ()), flush=True)
"""


@pytest.mark.parametrize(
    ("together", "spool"),
    [(False, False), (True, False), (False, True)],
    ids=["one-after-another", "all-at-once", "one-after-another-with-a-spool"],
)
def test_a_shell_loop_of_processes_on_one_key_stores_one_log(
    service: FakeLogService, tmp_path: Path, together: bool, spool: bool
) -> None:
    """One after another (each starts when the last has stored the log) or all at once:
    the processes of one loop are one run, and its log has every line (a crash spool, whose
    thread encodes too, included)."""
    script = tmp_path / "w.py"
    script.write_text(LOOP)
    background = "&" if together else ";"
    loop = f'for n in 0 1 2 3; do "{sys.executable}" {script} {service.url} p$n {background} done; wait'
    env = dict(os.environ, PYTHONPATH=str(ROOT), LELOG_RUNTIME_DIR=str(tmp_path / "runtime"))
    if spool:
        env["LELOG_SPOOL_DIR"] = str(tmp_path / "spool")
    result = subprocess.run(["bash", "-c", loop], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    rows = service.blob_lines("k") or []
    evidence = f"{len(rows)} rows; uploaded: {result.stdout.split()}; {result.stderr[-2000:]}"
    assert [row["pos"] for row in rows] == list(range(80)), evidence
    assert sorted(row["out"].rstrip("\n") for row in rows) == sorted(
        line for n in range(4) for line in lines(f"p{n}", 20)
    )
    # The last to store it counts the whole stream: continued from the stored log, handed on.
    wholes = [
        tuple(map(int, line.split()[1:])) for line in result.stdout.splitlines() if len(line.split()) == 4
    ]
    assert max(wholes) == (80, 80, 4), evidence


SMALL_OWNER = """
import sys, lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url=sys.argv[1], account_id="acct", token="secret-token"),
                            max_pending_lines=500, close_timeout=60)
writer.write_line("owner")
print(writer.flush(timeout=30), flush=True)
sys.stdin.readline()
stats = writer.close()
print(stats.accepted, stats.sent, stats.dropped_total, stats.uploaded, flush=True)
"""

FLOODING_MEMBER = """
import sys, lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url=sys.argv[1], account_id="acct", token="secret-token"),
                            max_pending_lines=100_000, close_timeout=60)
for i in range(30_000):
    writer.write_line(f"member {i} " + "x" * 60)
stats = writer.close()
print(stats.accepted, stats.sent, stats.dropped_total, stats.handed_on, flush=True)
"""


def test_a_member_faster_than_its_owner_reads_keeps_its_lines_until_there_is_room(
    service: FakeLogService, tmp_path: Path
) -> None:
    """The owner takes members' lines only as its buffer has room; the rest wait in their
    connections, then in the member: none is dropped, and the member never blocks."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), LELOG_RUNTIME_DIR=str(tmp_path / "runtime"))
    owner = subprocess.Popen(
        [sys.executable, "-c", SMALL_OWNER, service.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "True"
        member = subprocess.run(
            [sys.executable, "-c", FLOODING_MEMBER, service.url],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert member.returncode == 0, member.stderr
        assert member.stdout.split() == ["30000", "30000", "0", "True"]
        assert owner.stdin is not None
        owner.stdin.write("close\n")
        owner.stdin.flush()
        assert owner.stdout.readline().split() == ["30001", "30001", "0", "True"]  # pushed as members wait
    finally:
        owner.kill()
        owner.wait(30)
    rows = service.blob_lines("k") or []
    assert [row["pos"] for row in rows] == list(range(30_001))
    assert [row["out"].split()[1] for row in rows[1:]] == [str(i) for i in range(30_000)]


def test_a_stream_is_never_handed_on_to_a_process_with_another_token(
    service: FakeLogService, processes: Processes
) -> None:
    """A process with another token, built but silent, is not one of the stream's: the
    owner stores the log itself when it leaves."""
    owner = processes.start()
    owner.ask("log owner 5")
    assert owner.ask("flush") == "True"
    other = processes.start(token="another-token")  # never logs
    assert owner.close()[2:4] == [True, False]  # uploaded, not handed on
    assert other.close()[2:4] == [None, False]
    assert stored(service) == lines("owner", 5)


MANY_WRITERS = """
import os, sys, time, lelog
store = lelog.FileStore(sys.argv[1])
def descriptors():
    return len(os.listdir("/proc/self/fd"))
first = lelog.StreamWriter("warm-up", store)
first.write_line("x")
first.close()
before = descriptors()
for i in range(100):
    writer = lelog.StreamWriter(f"k{i}", store)
    writer.write_line("x")
    writer.close()
# The channel's reader closes its sockets as it ends, just after the last close returns.
deadline = time.monotonic() + 30
while descriptors() != before and time.monotonic() < deadline:
    time.sleep(0.01)
print(before, descriptors(), flush=True)
"""


def test_writers_that_come_and_go_leave_no_descriptor_open(tmp_path: Path) -> None:
    result = run_python(MANY_WRITERS.replace("sys.argv[1]", repr(str(tmp_path / "store"))), timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    assert after == before


OUT_OF_REACH = """
import lelog
writer = lelog.StreamWriter(
    "k", lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token"), close_timeout=30
)
writer.write_line("new 0")
stats = writer.close()
print(stats.uploaded, stats.joined, flush=True)
"""


def uploads(service: FakeLogService, key: str = "k") -> list[list[str]]:
    """Every log uploaded for ``key``, in order, as its lines' ``out``."""
    bodies = [r.body for r in service.requests_for(method="PUT") if r.path.startswith("/_storage/")]
    bodies += [r.body for r in service.requests_for(key=key, method="POST", path="/blob")]
    return [[json.loads(row)["out"].rstrip("\n") for row in body.splitlines()] for body in bodies if body]


def test_a_stream_a_writer_out_of_reach_writes_is_joined_live_and_its_log_left_to_that_writer(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    """A writer this host cannot reach (a runtime directory of its own: another host, or a
    container) writes the stream: a new writer here finds a line newer than its own start,
    and streams into it without opening, storing or closing it."""
    elsewhere = processes.start()  # the writer out of reach
    elsewhere.ask("log elsewhere 5")
    assert elsewhere.ask("flush") == "True"
    here = processes.start(runtime=tmp_path / "here")  # arrived: lines from now on are live ones
    elsewhere.ask("log later 5")
    assert elsewhere.ask("flush") == "True"
    here.ask("log here 10")
    assert here.ask("flush") == "True"
    accepted, sent, uploaded, handed_on, shared = here.close()
    assert (accepted, sent, uploaded, handed_on) == (10, 10, None, False)
    assert here.summary.endswith(
        "streamed live into a stream a writer elsewhere holds; the stored log is that writer's"
    )
    pushes = service.requests_for(key="k", method="PUT", path="/stream")
    pushed = [line["out"].rstrip("\n") for r in pushes for line in json.loads(r.body or b"null") or []]
    assert [out for out in pushed if out.startswith("here")] == lines("here", 10)
    assert service.is_open("k")  # the writer elsewhere still holds it
    elsewhere.close()
    assert stored(service) == lines("elsewhere", 5) + lines("later", 5)  # one open: the writer elsewhere's
    assert len(service.requests_for(key="k", method="DELETE")) == 1


def test_a_joined_stream_handed_on_to_another_process_of_this_host_is_still_left_to_the_writer_elsewhere(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    elsewhere = processes.start()
    elsewhere.ask("log elsewhere 5")
    assert elsewhere.ask("flush") == "True"
    first, second = processes.start(runtime=tmp_path / "here"), processes.start(runtime=tmp_path / "here")
    elsewhere.ask("log later 5")
    assert elsewhere.ask("flush") == "True"
    first.ask("log one 5")
    assert first.ask("flush") == "True"  # joined: it owns the stream on this host
    second.ask("log two 5")  # a member: to the first
    third = processes.start(runtime=tmp_path / "here")
    third.ask("log three 5")  # a member that leaves while the first still runs
    assert third.close()[2:4] == [None, True] and third.summary.endswith("the stored log is that writer's")
    assert first.close()[2:4] == [None, True]  # handed on to the second
    second.ask("log four 5")  # it takes over from the first's history, which says "joined"
    assert second.close()[2:4] == [None, False]
    assert second.summary.endswith("the stored log is that writer's")
    pushes = service.requests_for(key="k", method="PUT", path="/stream")
    pushed = [line["out"].rstrip("\n") for r in pushes for line in json.loads(r.body or b"null") or []]
    assert sorted(out for out in pushed if not out.startswith(("elsewhere", "later", "[lelog]"))) == sorted(
        lines("one", 5) + lines("two", 5) + lines("three", 5) + lines("four", 5)
    )
    assert service.is_open("k")
    elsewhere.close()
    assert stored(service) == lines("elsewhere", 5) + lines("later", 5)
    assert len(service.requests_for(key="k", method="DELETE")) == 1


def a_writer_elsewhere_and_a_joiner(processes: Processes, tmp_path: Path) -> tuple[Process, Process]:
    """A writer out of this host's reach with 5 lines, and a writer here, built before them,
    that joined its stream with 5 of its own."""
    elsewhere = processes.start()
    here = processes.start(runtime=tmp_path / "here")
    elsewhere.ask("log elsewhere 5")
    assert elsewhere.ask("flush") == "True"
    here.ask("log here 5")
    assert here.ask("flush") == "True"  # joined: the writer elsewhere's lines are newer than it
    return elsewhere, here


def test_lines_a_joiner_logs_after_the_writer_elsewhere_closed_the_stream_are_counted_after_close(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    elsewhere, here = a_writer_elsewhere_and_a_joiner(processes, tmp_path)
    elsewhere.close()
    here.ask("log late 5")
    here.ask("flush")
    accepted, sent, uploaded, handed_on, shared = here.close()
    assert (accepted, sent, uploaded) == (10, 5, None) and here.dropped["after_close"] == 5
    assert stored(service) == lines("elsewhere", 5)


def test_a_stream_a_writer_elsewhere_has_just_opened_is_joined_once_its_first_line_comes(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    """The writer elsewhere opened the stream with its first line and pushes it a flush
    interval later: the look waits for lines long enough to see it, and joins."""
    elsewhere = processes.start()
    here = processes.start(runtime=tmp_path / "here")
    elsewhere.ask("log elsewhere 1")  # opens now, pushes within its flush interval
    assert wait_until(lambda: service.is_open("k"))
    here.ask("log here 1")
    assert here.ask("flush") == "True"
    assert elsewhere.close()[2] is True
    assert here.close()[2:4] == [None, False] and here.summary.endswith("the stored log is that writer's")
    assert stored(service) == ["elsewhere 0"]


@pytest.mark.parametrize("answer", [404, 503])
def test_a_live_stream_whose_lines_cannot_be_read_is_joined_and_never_stored_over_or_closed(
    service: FakeLogService, processes: Processes, tmp_path: Path, answer: int
) -> None:
    """The tail that would tell whose the live stream is fails: for good (404), or until the
    close (503). Not knowing, the writer joins it, and so does the process it hands on to."""
    elsewhere = processes.start()
    elsewhere.ask("log elsewhere 5")
    assert elsewhere.ask("flush") == "True"
    service.fail_next(10_000, status=answer, method="GET", path="/stream")
    first, second = processes.start(runtime=tmp_path / "here"), processes.start(runtime=tmp_path / "here")
    first.ask("log one 5")
    second.ask("log two 5")  # a member of the first
    assert first.close()[2:4] == [None, True]  # handed on, its look undecided or joined
    assert second.close()[2:4] == [None, False]
    assert second.summary.endswith("the stored log is that writer's"), second.summary
    assert service.is_open("k") and len(service.requests_for(key="k", method="POST", path="/stream")) == 1
    elsewhere.ask("log later 5")
    elsewhere.close()
    assert stored(service) == lines("elsewhere", 5) + lines("later", 5)


def test_a_killed_joiners_history_is_not_stored_as_a_leftover_over_the_writer_elsewhere(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    elsewhere, joiner = a_writer_elsewhere_and_a_joiner(processes, tmp_path)
    joiner.kill()  # its history file says it joined
    again = processes.start(runtime=tmp_path / "here")
    elsewhere.ask("log later 5")  # still writing: newer than the new writer
    assert elsewhere.ask("flush") == "True"
    again.ask("log again 5")
    assert again.ask("flush") == "True"
    assert again.close()[2:4] == [None, False] and again.summary.endswith("the stored log is that writer's")
    assert service.is_open("k") and service.requests_for(key="k", method="DELETE") == []
    elsewhere.close()
    assert stored(service) == lines("elsewhere", 5) + lines("later", 5)


def test_a_stream_a_run_killed_elsewhere_left_live_is_stored_as_its_log_then_opened_again(
    service: FakeLogService, processes: Processes, tmp_path: Path
) -> None:
    """A run on another host (here: another runtime directory) was killed with its stream
    live, and a re-run starts: every line the stream holds is older than the re-run, so it
    is stored as the killed run's log, with a marker, and closed; then opened for the re-run."""
    killed = processes.start()
    killed.ask("log killed 10")
    assert killed.ask("flush") == "True"
    killed.kill()
    env = {"LELOG_RUNTIME_DIR": str(tmp_path / "rerun")}
    result = run_python(OUT_OF_REACH.format(url=service.url), timeout=60, env=env)
    assert result.returncode == 0 and result.stdout.split() == ["True", "False"], result.stderr
    assert "left live by a run that ended elsewhere without closing it: the 10 lines" in result.stderr
    assert "secret-token" not in result.stderr
    leftover, rerun = uploads(service)
    assert leftover[:10] == lines("killed", 10) and len(leftover) == 11
    assert leftover[10].startswith(
        "[lelog] the run that wrote this stream elsewhere ended without closing it"
    )
    assert rerun == ["new 0"] and service.blob_lines("k")[0]["pos"] == 0
    calls = [r.method for r in service.requests_for(key="k", path="/stream") if r.method != "PUT"]
    assert calls == ["POST", "GET", "DELETE", "POST", "DELETE"]  # opened, looked at, closed; the re-run's


def run_script(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a child process with ``args``, its runtime directory the test's own (it
    ends when every process it forked has: they share its output)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT), LELOG_RUNTIME_DIR=str(tmp_path / "runtime")),
        cwd=str(ROOT),
    )


OUTLIVES_ITS_PARENT = """
import os, sys, lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url=sys.argv[1], account_id="acct", token="secret-token"))
writer.write_line("parent 0")
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(read, 1)  # until the parent's stream has ended
    for i in range(50):
        writer.write_line(f"child {i}")
    if sys.argv[2] == "close":
        stats = writer.close()
        print("child", stats.accepted, stats.sent, stats.uploaded, flush=True)
        os._exit(0)
    sys.exit(0)  # the exit hook closes the stream
stats = writer.close()
print("parent", stats.uploaded, flush=True)
os.write(write, b"x")
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("ends", ["close", "exit"])
def test_a_fork_child_that_logs_after_its_parents_stream_ended_continues_its_parents_log(
    service: FakeLogService, tmp_path: Path, ends: str
) -> None:
    """The parent stored its log and closed the stream; its fork child, which inherited the
    writer, logs on: it continues that log, so the stored log holds every line of both."""
    result = run_script(OUTLIVES_ITS_PARENT, tmp_path, service.url, ends)
    assert result.returncode == 0, result.stderr
    assert "parent True" in result.stdout.splitlines()
    if ends == "close":
        assert "child 50 50 True" in result.stdout.splitlines(), result.stdout
    rows = service.blob_lines("k") or []
    assert [row["pos"] for row in rows] == list(range(51))
    assert [row["out"].rstrip("\n") for row in rows] == ["parent 0"] + lines("child", 50)
    assert not service.is_open("k")


ORPHANED = """
import os, sys, time, lelog
from lelog import _hostwide
_hostwide.CONTINUE_WINDOW = 0.0  # only a fork child's own parent makes it continue a log
writer = lelog.StreamWriter("k", lelog.LogConfig(url=sys.argv[1], account_id="acct", token="secret-token"))
writer.write_line("parent 0")
parent = os.getpid()
go = [os.pipe() for _ in range(2)]
for n in range(2):
    if os.fork() == 0:
        os.read(go[n][0], 1)  # the parent has stored its log (and, for the second, the first child its part)
        while n == 1 and os.getppid() == parent:
            time.sleep(0.01)  # the parent has exited: this child is an orphan now
        for i in range(5):
            writer.write_line(f"child{n} {i}")
        stats = writer.close()
        print(f"child{n}", stats.uploaded, flush=True)
        if n == 0:
            os.write(go[1][1], b"x")
        os._exit(0)
print("parent", writer.close().uploaded, flush=True)
os.write(go[0][1], b"x")
os._exit(0)  # gone before the second child logs
"""


def test_fork_children_that_outlive_their_parent_continue_its_log_one_after_another(
    service: FakeLogService, tmp_path: Path
) -> None:
    """The parent stores its log and exits; one fork child continues it and stores it; the
    second, an orphan by then and long after the first stored, continues that log too."""
    result = run_script(ORPHANED, tmp_path, service.url)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:3]) == ["child0 True", "child1 True", "parent True"], (
        result.stdout
    )
    rows = service.blob_lines("k") or []
    assert [row["pos"] for row in rows] == list(range(11)), result.stderr
    assert [row["out"].rstrip("\n") for row in rows] == ["parent 0"] + lines("child0", 5) + lines("child1", 5)


def test_the_whole_streams_counts_survive_a_killed_successor_and_count_fork_children(
    service: FakeLogService, processes: Processes
) -> None:
    """A hands on to B, B is killed after storing its lines, C takes over and stores the
    log: its whole-stream counts cover every process, the killed one and A's fork children
    included."""
    a, b, c = processes.start(), processes.start(), processes.start()
    a.ask("log a 10")
    assert a.ask("flush") == "True"  # A owns the stream
    b.ask("log b 10")
    c.ask("log c 10")
    a.ask("fork kid1 5")
    a.ask("fork kid2 5")
    assert a.close()[2:4] == [None, True]
    b.ask("log b2 10")  # B takes the stream over
    assert b.ask("flush") == "True"
    b.kill()
    c.ask("log c2 10")  # C takes over from B's history
    assert c.close()[2:4] == [True, False]
    outs = stored(service)
    assert len([out for out in outs if not out.startswith("[lelog] ")]) == 60, outs  # and B's end marked
    assert c.whole == [60, 60, 5], c.summary  # a, b, c, kid1, kid2
