"""The ``lelog`` command: run a program, push a file, follow or print a stream.

Every subcommand is configured the same way: flags win over a setup-request file
(``--config``, the original engine's format), which wins over ``LELOG_*`` variables; with no
url the local file store is used.  A user mistake ends in one ``lelog: error: ...`` line and
exit status 2 (usage) or 1 (the service or a file failed), never in a traceback.

``lelog run`` needs a POSIX system: it selects on pipes and forwards signals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Iterator, NoReturn, Optional, Sequence, Union

from ._backend import keeps_every_line
from ._client import LogServiceClient
from ._config import MAX_SECONDS, LogConfig, check_positive, resolve_config, setup_request_values
from ._exceptions import BlobNotFound, ConfigError, LogServiceError
from ._filestore import FileStore
from ._recover import Newer, Status, recover_spools
from ._splitter import LineSplitter
from ._spool import check_spool_dir
from ._stats import STORED_ELSEWHERE, drop_reasons
from ._version import __version__
from ._writer import Stats, StreamWriter

__all__ = ["main"]

_Backend = Union[LogServiceClient, FileStore]

_CHUNK = 1 << 16
#: How long the pipes may stay open after the command exited (a background process it
#: started can hold them forever); what arrives later is not the command's output.
_DRAIN_GRACE = 2.0
#: How often a pipe reader looks at its stop event while the pipe is quiet.
_POLL = 0.1
#: A source far ahead of the writer waits this long at most for it to catch up.
_PATIENCE = 3.0
#: ``lelog run --strict``: the command succeeded but its log is missing or lost lines
#: (EX_IOERR of sysexits.h: "an error occurred while doing I/O on some file").
STRICT_STATUS = 74
#: ``args`` of a line the command wrote on its standard error.
STDERR_ARGS = {"stream": "stderr"}
_FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Failure(Exception):
    """Ends the command with one error line and ``status`` (2: usage, 1: runtime)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# -- arguments -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error; the usage is one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
        check_positive("the value", value, maximum=MAX_SECONDS)
    except ValueError:  # ConfigError is one
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, at most {MAX_SECONDS:g}, got {text!r}"
        ) from None
    return value


_CONFIG_HELP = """\
configuration (flags win over --config, which wins over the environment):
  LELOG_URL, LELOG_ACCOUNT_ID, LELOG_TOKEN   the log service; no url: the file store
  LELOG_HOME                                 the file store's directory (default ./.lelog)
  LELOG_KEY                                  the stream key when no --key or le_log_key
  LELOG_SECRETS                              a JSON list '["a", "b"]', or one secret per line
  LELOG_<FIELD>                              any other LogConfig field or writer option
"""

_RUN_HELP = """\
Run CMD; its output shows as usual, unchanged, and streams line by line to the log stream
(stdout and stderr both; stderr lines carry args {"stream": "stderr"}).  Exits with CMD's
exit status (128+N when a signal N killed it); with --strict, 74 when CMD succeeded but its
log was not stored whole.  Ctrl-C and SIGTERM go to CMD; the stream is still closed and
stored.  A summary line goes to stderr.  CMD gets no LELOG_* variable unless
--pass-lelog-env.  When lelog's own output is closed (`lelog run -- yes | head -1`), it
stops reading CMD's output as tee does: CMD gets SIGPIPE when it next writes.  The key
defaults to the program's name (`make` for `lelog run -- make test`).  When CMD prints
faster than the log takes it, lelog reads more slowly (as tee would) rather than drop
lines, unless the service is stalled.

examples:
  lelog run -- make test                         # stored in ./.lelog/make.ndjson
  lelog run --key stage-1/build -- ./build.sh
  lelog run --config setup.json -- pytest -x     # service and key (le_log_key) from the file
  LELOG_URL=http://log-service:8080 LELOG_ACCOUNT_ID=acct LELOG_TOKEN=... \\
      lelog run --key ci/step-2 -- npm test

"""

_PUSH_HELP = """\
Stream a file, or standard input, to the log stream as it is read, then store it.

examples:
  lelog push --key builds/42 build.log
  make 2>&1 | lelog push --key builds/42

"""

_TAIL_HELP = """\
Follow a live stream: print its lines as they arrive, however long it is quiet; exit 0 when
the stream is closed (a stream that is not open ends at once; on a service that does not say
so, within about two seconds).  A dropped connection is re-established within --timeout, with
a marker line where lines may be missing, and a re-opened stream is marked too; exit 1 with
one line when the service cannot be reached within --timeout, or when the answer is not an
event stream.

examples:
  lelog tail --key stage-1/build
  lelog tail --key stage-1/build --url http://log-service:8080 --account-id acct

"""

_CAT_HELP = """\
Print a stored log: the text of its lines, or with --json the NDJSON as stored.

examples:
  lelog cat --key stage-1/build
  lelog cat --key stage-1/build --json | jq -r .out

"""


_RECOVER_HELP = """\
Find the spools of writers that died (killed, crashed, the machine restarted), store each as
the log of its key in the service configured here, close its stream, and remove the spool.
One line per spool.  Left alone, each with the reason: a spool whose stream a running writer
holds (its lock), or whose live stream shows another writer's lines; a spool of another
service or account; a spool whose key's stored log is newer (a later run stored it: --merge
stores both in one log, --replace the spool's); a spool with no readable rows.  A spool
whose upload fails stays for the next try (exit status 1).  With no service configured, it
then also stores the live files of writers that are gone (a killed 'lelog run', with or
without --spool) as their keys' logs in the file store (--home).  --key: only that key.

examples:
  lelog run --spool /var/spool/lelog --key ci/step-2 -- make test     # killed midway
  lelog recover --spool /var/spool/lelog                              # stores ci/step-2
  lelog recover --spool /var/spool/lelog --key ci/step-2 --merge      # a later run stored it
  lelog recover --home .lelog              # no service: a killed 'lelog run' -> its stored log

"""


def _build_parser() -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("where the log goes")
    group.add_argument("--key", help="the stream key, e.g. stage-1/build")
    group.add_argument("--url", help="the log service, e.g. http://log-service:8080")
    group.add_argument("--account-id", help="the account of the stream")
    group.add_argument("--token", help="the service token (visible in ps: prefer LELOG_TOKEN or --config)")
    group.add_argument(
        "--config", metavar="FILE", help="a setup-request JSON file (log_config, le_log_key, ...)"
    )
    group.add_argument("--home", metavar="DIR", help="the file store's directory (default ./.lelog)")
    group.add_argument("-q", "--quiet", action="store_true", help="no summary or notes on stderr")

    writing = _Parser(add_help=False)
    writing.add_argument(
        "--flush-interval",
        type=_seconds,
        metavar="SECONDS",
        help="send new lines at least this often (default 1)",
    )
    writing.add_argument(
        "--close-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="the time allowed to send what is left, store the log and close (default 5)",
    )
    writing.add_argument(
        "--spool",
        dest="spool_dir",
        metavar="DIR",
        help="also keep the lines in a crash spool in DIR, for 'lelog recover' (default: LELOG_SPOOL_DIR)",
    )
    reading = _Parser(add_help=False)
    reading.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="how long to keep trying to reach the service (default: LELOG_CALL_DEADLINE or 15)",
    )

    parser = _Parser(
        prog="lelog",
        description="Stream a program's logs to a Harness-style log service, or to ./.lelog.",
        epilog=_CONFIG_HELP + "\nrun 'lelog COMMAND --help' for a command's options and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lelog {__version__}")
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], summary: str, text: str, options: _Parser
    ) -> _Parser:
        description, examples = text.split("\n\n", 1)
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=examples + _CONFIG_HELP,
            parents=[common, options],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    run = add("run", _run, "run a command, streaming its output", _RUN_HELP, writing)
    run.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {STRICT_STATUS} when CMD succeeded but its log is missing or lost lines",
    )
    run.add_argument(
        "--pass-lelog-env",
        action="store_true",
        help="let CMD see the LELOG_* variables (by default they are removed: CMD would write "
        "to this key, and LELOG_TOKEN is a secret)",
    )
    run.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run"
    )
    push = add("push", _push, "stream a file or standard input", _PUSH_HELP, writing)
    push.add_argument("file", nargs="?", default="-", metavar="FILE", help="the file; - or none: stdin")
    add("tail", _tail, "follow a live stream", _TAIL_HELP, reading)
    cat = add("cat", _cat, "print a stored log", _CAT_HELP, reading)
    cat.add_argument("--json", action="store_true", help="print the stored NDJSON as it is")
    recover = add(
        "recover", _recover, "store the logs of killed runs from their spools", _RECOVER_HELP, reading
    )
    recover.add_argument(
        "--spool",
        metavar="DIR",
        help="the spool directory (default: LELOG_SPOOL_DIR; optional without a service)",
    )
    newer = recover.add_mutually_exclusive_group()
    newer.add_argument(
        "--merge",
        dest="newer",
        action="store_const",
        const=Newer.MERGE,
        default=Newer.LEAVE,
        help="when a key's stored log is newer than its spool: store both in one log, by time",
    )
    newer.add_argument(
        "--replace",
        dest="newer",
        action="store_const",
        const=Newer.REPLACE,
        help="when a key's stored log is newer than its spool: store the spool's over it",
    )
    return parser


# -- configuration -----------------------------------------------------------------------------


def _read_setup(path: str) -> dict[str, Any]:
    """The ``LogConfig`` fields a setup-request file sets (or a bare ``log_config``).

    Values are checked once, with the flags and the environment, when the config is built:
    a file without a token is fine when ``LELOG_TOKEN`` has it.
    """
    where = f"--config {path}"
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except OSError as exc:
        raise _Failure(f"{where}: {exc.strerror or exc}", 2) from None
    except ValueError as exc:
        raise _Failure(f"{where}: not valid JSON: {exc}", 2) from None
    try:
        return setup_request_values(obj, where=where)
    except ConfigError as exc:
        raise _Failure(str(exc), 2) from None


def _config(args: argparse.Namespace) -> LogConfig:
    values = _read_setup(args.config) if args.config else {}
    flags = {"url": args.url, "account_id": args.account_id, "token": args.token}
    values.update({name: value for name, value in flags.items() if value is not None})
    return resolve_config(None, environ=os.environ, **values)


def _key(args: argparse.Namespace, config: LogConfig, default: str = "") -> str:
    if args.key is not None and not args.key.strip():
        # An empty --key is a mistake (an unset variable in --key "$STEP"), not "no key":
        # falling back to le_log_key or the program's name would write to another stream.
        raise _Failure(
            f"--key is {'empty' if not args.key else 'blank'}: give the stream key, e.g. --key stage-1/build",
            2,
        )
    # config.le_log_key: --config's le_log_key, else LELOG_KEY (or LELOG_LE_LOG_KEY).
    key = args.key or config.le_log_key or default
    if not key:
        raise _Failure("no stream key: give --key K (or set LELOG_KEY, or le_log_key in --config)", 2)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise _Failure(f"the stream key {key!r} holds a control character; use printable text", 2)
    return key


def _prepare(backend: _Backend, key: str) -> None:
    """Before a command runs, prove the file store can hold the key's files (a name too
    long, a directory that cannot be written) before anything is stored.  A second run on
    the key is no error: its writer joins the stream the first one holds
    (docs/writer.md#processes-on-one-key)."""
    if not isinstance(backend, FileStore):
        return
    try:
        backend.prepare(key)
    except LogServiceError as exc:
        raise _Failure(f"cannot store the log of {key!r}: {exc}") from None


def _backend(args: argparse.Namespace, config: LogConfig, *, writes: bool) -> _Backend:
    if config.url:
        return LogServiceClient(config)
    store = FileStore(args.home, config=config)
    if writes:  # fail before the command runs, not in the writer's background retries
        try:
            os.makedirs(store.directory, exist_ok=True)
        except OSError as exc:
            raise _Failure(f"cannot store logs in {store.directory}: {exc.strerror}") from None
        if not os.access(store.directory, os.W_OK | os.X_OK):
            raise _Failure(f"cannot store logs in {store.directory}: not writable")
    return store


def _where(backend: _Backend, key: str) -> str:
    if isinstance(backend, FileStore):
        path = backend.log_path(key)
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative
    return f"{backend.config.url} key {key!r}"


def _open_writer(key: str, backend: _Backend, args: argparse.Namespace) -> StreamWriter:
    _show_library_warnings()
    options = {name: getattr(args, name) for name in ("flush_interval", "close_timeout", "spool_dir")}
    return StreamWriter(key, backend, **{k: v for k, v in options.items() if v is not None}).open()


def _summary(stats: Stats, where: str, *, whole_log: bool, store_dropped: int = 0) -> str:
    """One line: where the log went, lines sent, lines dropped and anything that went wrong."""
    sent = f"{stats.sent:,}" if stats.sent == stats.accepted else f"{stats.sent:,} of {stats.accepted:,}"
    sent += " line" if stats.accepted == 1 else " lines"
    dropped = f"{stats.dropped_total:,} dropped"
    reasons = drop_reasons(stats.dropped)
    notes = [dropped + (f": {reasons}" if reasons else "")]
    if stats.pending:
        notes.append(f"{stats.pending:,} not sent in time")
    if stats.truncated:
        notes.append(f"{stats.truncated:,} cut at the line limit (71,680 bytes)")
    if store_dropped:
        notes.append(f"the file store dropped the {store_dropped:,} oldest (LELOG_STORE_MAX_BYTES)")
    if stats.joined:
        notes.append(STORED_ELSEWHERE)
    elif stats.handed_on:
        shared = stats.sharing if stats.shared else "stream handed on to another writer"
        notes.append(f"{shared}; the last one out stores the log")
    elif stats.shared:
        notes.append(stats.sharing)
    if stats.stream is not None:
        notes.append(stats.stream.text())
    if stats.uploaded is False:
        notes.append("storing the log FAILED")
    elif stats.history_evicted and not whole_log:
        notes.append(f"the stored log keeps the last {stats.history_lines:,} lines")
    trouble = stats.dropped_total or stats.pending or stats.uploaded is False or store_dropped
    if trouble and stats.last_error:
        notes.append(f"last error: {stats.last_error}")
    return f"lelog: {sent} sent → {where} ({'; '.join(notes)})"


def _report(args: argparse.Namespace, stats: Stats, backend: _Backend, key: str) -> None:
    if not args.quiet:
        where = _where(backend, key)
        files = isinstance(backend, FileStore)
        dropped = backend.dropped(key) if isinstance(backend, FileStore) else 0
        _stderr(_summary(stats, where, whole_log=files, store_dropped=dropped))


def _delivered(stats: Stats, backend: _Backend, key: str) -> bool:
    """Whether every line reached the log: nothing dropped, pending or lost at upload."""
    if isinstance(backend, FileStore) and backend.dropped(key):
        return False
    return not stats.dropped_total and not stats.pending and stats.uploaded is not False


def _stored_whole(stats: Stats, backend: _Backend, key: str) -> bool:
    """Whether the stored log holds every line: delivered, and, with a service, none of
    its oldest lines left out of the upload by ``history_bytes`` (the file store keeps
    every live line, so its stored log is whole either way)."""
    evicted = stats.history_evicted and not keeps_every_line(backend)
    return _delivered(stats, backend, key) and not evicted and not stats.joined


class _Backpressure:
    """Lets a fast source wait for the writer rather than overflow the writer's bounds.

    A file, or a command's pipe, can wait (as with ``tee``, the command then writes more
    slowly); dropping the oldest lines is for a destination that cannot keep up.  So while
    flushes succeed, a source that is far ahead waits for one; after the first that fails
    (the service is slow or down) it never waits again and the writer's bounds apply.
    """

    def __init__(self, writer: StreamWriter) -> None:
        self._writer = writer
        self._backlog = writer.options.max_pending_lines // 2
        # Read and written by both pipe readers of ``run`` without a lock: a stale value
        # costs at most one more flush.
        self._patient = True

    def wait_if_behind(self) -> None:
        if self._patient and self._writer.pending >= self._backlog:
            self._patient = self._writer.flush(_PATIENCE)


# -- lelog run ---------------------------------------------------------------------------------


class _Pump:
    """Copies one pipe of the command to our terminal as it comes, and line by line to the
    writer.  One splitter per pipe: a partial stdout line never merges with stderr's text.

    When the copy to our stdout fails with EPIPE (``lelog run -- yes | head -1``), the pump
    stops reading and closes the pipe, as tee would end: the command gets SIGPIPE on its next
    write.  What it read is still logged.  A failed copy to stderr only stops the copy.
    """

    def __init__(
        self,
        pipe: IO[bytes],
        echo: Optional[IO[bytes]],
        writer: StreamWriter,
        backpressure: _Backpressure,
        stop: threading.Event,
        *,
        args: Optional[dict[str, str]] = None,
        unbroken: Sequence[str] = (),
        stop_on_epipe: bool = False,
    ) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._echo = echo
        self._writer = writer
        self._backpressure = backpressure
        self._stop = stop
        self._args = args
        self._stop_on_epipe = stop_on_epipe
        # Forced pieces fit the line limit with the newline write_line adds, and a literal
        # secret is never cut in two halves the masker could not recognise.
        self._splitter = LineSplitter(unbroken=unbroken)
        #: The pieces of the last line, without its newline, once the pipe has ended.
        self.partial: list[str] = []
        #: Our stdout was closed under us (EPIPE): the pump stopped reading.
        self.broken = False
        self.thread = threading.Thread(target=self._run, name=f"lelog-run-pipe[{self._fd}]", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # select before read: a blocking read would never see the stop event if a
            # background process kept the pipe open after the command exited.
            if not select.select([self._fd], [], [], _POLL)[0]:
                continue
            data = os.read(self._fd, _CHUNK)
            if not data:
                break
            shown = self._show(data)
            for line in self._splitter.feed(data):
                self._writer.write_line(line, args=self._args)
            if not shown:
                self.broken = True
                self._pipe.close()  # the command's next write gets SIGPIPE, as with tee
                break
            self._backpressure.wait_if_behind()
        self.partial = self._splitter.finish_lines()

    def _show(self, data: bytes) -> bool:
        """Copy to the terminal; False when our stdout is gone and reading must stop."""
        if self._echo is None:
            return True
        try:
            self._echo.write(data)
            self._echo.flush()
        except BrokenPipeError:
            self._echo = None
            if self._stop_on_epipe:
                _silence_stdout()
                return False
        except (OSError, ValueError):  # the terminal went away: keep logging anyway
            self._echo = None
        return True

    def log_partial(self, *, last: bool) -> None:
        """Log the last line of the pipe; the ``last`` one of all is stored as written (no
        newline added, it goes through ``write``; stderr's keeps its tag with a newline)."""
        for piece in self.partial[:-1]:
            self._writer.write_line(piece, args=self._args)
        if self.partial:
            if last and self._args is None:
                self._writer.write(self.partial[-1])
            else:
                self._writer.write_line(self.partial[-1], args=self._args)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so flushing it at exit cannot fail (EPIPE) a second time."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def _in_terminal_foreground() -> bool:
    """Whether the terminal's Ctrl-C reaches our process group, and so the command in it."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


@contextlib.contextmanager
def _forward_signals(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGINT, SIGTERM and SIGHUP to the command, and keep lelog going until the
    stream is closed.  The handlers run on the main thread, between its waits."""

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _in_terminal_foreground():
            return  # the terminal sent Ctrl-C to the whole group: the command has it already
        child.send_signal(signum)  # a no-op once the command has been reaped

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        for signum in _FORWARDED:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup & co. stay in force
                previous[signum] = signal.signal(signum, forward)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _binary(stream: Optional[IO[str]]) -> Optional[IO[bytes]]:
    return getattr(stream, "buffer", None)


def _pump_until_exit(child: subprocess.Popen[bytes], writer: StreamWriter, unbroken: Sequence[str]) -> None:
    """Stream the command's output until it exits and its pipes are drained."""
    assert child.stdout is not None and child.stderr is not None
    stop = threading.Event()
    backpressure = _Backpressure(writer)
    out = _Pump(
        child.stdout, _binary(sys.stdout), writer, backpressure, stop, unbroken=unbroken, stop_on_epipe=True
    )
    err = _Pump(
        child.stderr, _binary(sys.stderr), writer, backpressure, stop, args=STDERR_ARGS, unbroken=unbroken
    )
    pumps = [out, err]
    for pump in pumps:
        pump.thread.start()
    try:
        child.wait()
        end = time.monotonic() + _DRAIN_GRACE
        for pump in pumps:
            pump.thread.join(max(end - time.monotonic(), 0.0))
    finally:
        stop.set()
        for pump in pumps:
            pump.thread.join()
        child.stdout.close()
        child.stderr.close()
    # The writer's own partial-line buffer is still empty (whole lines went through
    # write_line), so close() stores stdout's last line as the command wrote it.
    err.log_partial(last=False)
    out.log_partial(last=True)


def _child_env(pass_lelog_env: bool) -> dict[str, str]:
    """The command's environment: ours without LELOG_* (the key, the token) unless asked."""
    env = {k: v for k, v in os.environ.items() if pass_lelog_env or not k.startswith("LELOG_")}
    env["PYTHONUNBUFFERED"] = "1"  # Python commands stream too
    return env


def _run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise _Failure("no command to run: lelog run [options] -- CMD [ARGS...]", 2)
    config = _config(args)
    key = _key(args, config, default=os.path.basename(command[0]))
    backend = _backend(args, config, writes=True)
    with contextlib.closing(backend):
        _prepare(backend, key)
        try:
            child = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_child_env(args.pass_lelog_env),
            )
        except OSError as exc:
            status = 127 if isinstance(exc, FileNotFoundError) else 126  # as a shell says
            raise _Failure(f"cannot run {command[0]!r}: {exc.strerror or exc}", status) from None
        # Its output waits in the pipes until the readers start: nothing is lost meanwhile.
        writer = _open_writer(key, backend, args)
        with _forward_signals(child):  # until the stream is closed, not only the command
            _pump_until_exit(child, writer, config.literal_secrets())
            stats = writer.close()
        _report(args, stats, backend, key)
        whole = _stored_whole(stats, backend, key)
    code = child.returncode
    status = 128 - code if code < 0 else code
    if args.strict and status == 0 and not whole:
        return STRICT_STATUS
    return status


# -- lelog push --------------------------------------------------------------------------------


def _copy(fd: int, writer: StreamWriter, name: str) -> None:
    """Write everything from ``fd``, as it comes (``os.read``: a pipe is not waited on to
    fill a buffer)."""
    backpressure = _Backpressure(writer)
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except OSError as exc:
            raise _Failure(f"cannot read {name}: {exc.strerror}") from None
        if not data:
            return
        writer.write(data)
        backpressure.wait_if_behind()


def _push(args: argparse.Namespace) -> int:
    config = _config(args)
    key = _key(args, config)
    stdin = args.file == "-"
    try:
        fd = 0 if stdin else os.open(args.file, os.O_RDONLY)
    except OSError as exc:
        raise _Failure(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):  # before anything is stored
            name = "standard input" if stdin else args.file
            raise _Failure(f"cannot push {name}: it is a directory; give a file", 2)
        backend = _backend(args, config, writes=True)
        with contextlib.closing(backend):
            _prepare(backend, key)
            writer = _open_writer(key, backend, args)
            try:
                _copy(fd, writer, "standard input" if stdin else args.file)
            finally:  # Ctrl-C included: what was read is still stored
                stats = writer.close()
                _report(args, stats, backend, key)
    finally:
        if not stdin:
            os.close(fd)
    return 0 if _delivered(stats, backend, key) else 1


# -- lelog tail, lelog cat ---------------------------------------------------------------------


def _print_line(out: IO[bytes], text: str) -> None:
    out.write(text.encode("utf-8", "replace"))
    if not text.endswith("\n"):
        out.write(b"\n")


def _call_options(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.timeout is None else {"deadline": args.timeout}


def _tail(args: argparse.Namespace) -> int:
    config = _config(args)
    key = _key(args, config)
    backend = _backend(args, config, writes=False)
    shown = 0
    with contextlib.closing(backend):
        out = sys.stdout.buffer
        for line in backend.tail(key, **_call_options(args)):
            _print_line(out, line.out)
            out.flush()  # live: each line as it comes
            shown += 1
    if not shown and not args.quiet:
        _stderr(
            f"lelog: no lines: the stream {key!r} is not open (or closed empty); "
            f"'lelog cat --key {shlex.quote(key)}' prints a stored log"
        )
    return 0


def _cat(args: argparse.Namespace) -> int:
    config = _config(args)
    key = _key(args, config)
    backend = _backend(args, config, writes=False)
    with contextlib.closing(backend):
        try:
            data = backend.download(key, **_call_options(args))
        except BlobNotFound:
            raise _Failure(
                f"no stored log for key {key!r} ({_where(backend, key)}); "
                "a stream is stored when it is closed: 'lelog tail' follows an open one"
            ) from None
    out = sys.stdout.buffer
    if args.json:
        out.write(data)
    else:
        for text in _texts(key, data):
            _print_line(out, text)
    out.flush()
    return 0


def _texts(key: str, data: bytes) -> list[str]:
    """The ``out`` of every row of a stored log.  One JSON decode for the whole log, not one
    per row: ``cat`` of a long log is bound by this."""
    rows = [row for row in data.splitlines() if row.strip()]
    try:
        lines = json.loads(b"[" + b",".join(rows) + b"]")
        return [str(line["out"]) for line in lines]
    except (ValueError, TypeError, KeyError) as exc:
        raise _Failure(
            f"the stored log of {key!r} is not NDJSON log lines ({type(exc).__name__}: {exc})"
        ) from None


def _recover(args: argparse.Namespace) -> int:
    spool = check_spool_dir(args.spool, "--spool")
    config = _config(args)
    backend = _backend(args, config, writes=False)
    with contextlib.closing(backend):
        outcomes = recover_spools(
            spool,
            backend,
            config,
            out=sys.stdout,
            call_options=_call_options(args),
            newer=args.newer,
            key=args.key,
        )
    if not outcomes and not args.quiet:
        found = "spools" if config.url else "spools or live files of dead writers"
        _stderr(f"lelog: no {found} to recover")
    return 1 if any(outcome.status is Status.FAILED for outcome in outcomes) else 0


# -- main --------------------------------------------------------------------------------------


def _stderr(text: str) -> None:
    print(" ".join(text.splitlines()), file=sys.stderr, flush=True)


def _show_library_warnings() -> None:
    """Print the writer's rate-limited warnings (the non-propagating ``lelog`` logger, each
    message already starting with ``lelog:``) on stderr, one line each."""
    logger = logging.getLogger("lelog")
    if not any(getattr(h, "name", None) == "lelog-cli" for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.name = "lelog-cli"
        logger.addHandler(handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``lelog`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:
        parser.error("choose a command: run, push, tail, cat or recover")
    if args.token:
        _stderr(
            "lelog: warning: --token is visible to other users (ps, shell history); "
            "prefer LELOG_TOKEN or --config"
        )
    try:
        return int(args.handler(args))
    except _Failure as exc:
        _stderr(f"lelog: error: {exc}")
        return exc.status
    except ConfigError as exc:
        _stderr(f"lelog: error: {exc}")
        return 2
    except LogServiceError as exc:
        _stderr(f"lelog: error: {exc}")
        return 1
    except BrokenPipeError:  # `lelog cat | head`: the reader has all it wants
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + getattr(signal, "SIGPIPE", 13)
    except OSError as exc:
        _stderr(f"lelog: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
