"""Spools for the recovery tests: left by writers killed in a child process, or made by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import lelog
from lelog._line import encode_line, format_time, parse_ndjson
from lelog._spool import MANIFEST, Manifest, ProcessIdentity
from tests.helpers import run_python
from tests.service import FakeLogService
from tests.test_recover import TOKEN, _env, _lelog, _spools

#: Where a recovery stores: the fake service, or a file store's directory.
Target = Union[FakeLogService, Path]

_DYING_CHILD = """
import os, signal, time
import lelog
target = {target}
writer = lelog.StreamWriter({key!r}, target, spool_dir={spool!r}, flush_interval=0.2)
writer.open()
for i in range({lines}):
    writer.write_line(f"{text} {{i}}")
while writer.spool_stats.written < {lines}:
    time.sleep(0.02)
writer.flush(10)
os.kill(os.getpid(), signal.SIGKILL)
"""


def target_code(target: Target) -> str:
    if isinstance(target, Path):
        return f"lelog.FileStore({str(target)!r})"
    return f'lelog.LogConfig(url={target.url!r}, account_id="acct", token={TOKEN!r})'


def dead_spool(spool: Path, target: Target, key: str, *, lines: int = 20, text: str = "line") -> Path:
    """The spool of a writer killed once its lines were spooled (and streamed live)."""
    before = set(_spools(spool))
    code = _DYING_CHILD.format(target=target_code(target), key=key, spool=str(spool), lines=lines, text=text)
    result = run_python(code, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (made,) = set(_spools(spool)) - before
    return made


def writer(target: Target, key: str, **options: Any) -> lelog.StreamWriter:
    """A writer in this process on ``target`` (no spool unless given)."""
    if isinstance(target, Path):
        return lelog.StreamWriter(key, lelog.FileStore(target), flush_interval=0.05, **options)
    config = lelog.LogConfig(url=target.url, account_id="acct", token=TOKEN)
    return lelog.StreamWriter(key, config, flush_interval=0.05, **options)


def recover(spool: Optional[Path], target: Target, *extra: str) -> subprocess.CompletedProcess[str]:
    """``lelog recover`` in a child process, configured for ``target``."""
    args = ["recover", *(["--spool", str(spool)] if spool is not None else []), *extra]
    if isinstance(target, Path):
        return _lelog(*args, "--home", str(target), env=_env())
    return _lelog(*args, "--url", target.url, "--account-id", "acct")


def stored(target: Target, key: str) -> Optional[List[dict]]:
    """The stored log's rows, or None when there is none."""
    if isinstance(target, Path):
        try:
            data = lelog.FileStore(target).download(key)
        except lelog.BlobNotFound:
            return None
        return [line.to_dict() for line in parse_ndjson(data)]
    return target.blob_lines(key)


def outs(target: Target, key: str) -> Optional[List[str]]:
    rows = stored(target, key)
    return None if rows is None else [row["out"] for row in rows]


def service_name(target: Target) -> str:
    """How a spool's manifest names ``target``."""
    return f"file:{target}" if isinstance(target, Path) else target.url


def row(pos: int, text: Optional[str] = None, *, at: Optional[float] = None) -> bytes:
    """One spool row, as the writer encodes it; ``at`` defaults to a minute ago plus ``pos`` ms."""
    when = at if at is not None else time.time() - 60 + pos / 1000
    return encode_line(
        "info", pos, f"{text if text is not None else f'line {pos}'}\n", format_time(when), None
    )


def handmade_spool(
    spool: Path, target: Target, key: str, rows: Sequence[bytes], *, name: str = "4242-0badc0de"
) -> Path:
    """A spool of a dead writer whose stream lock was its liveness, with ``rows`` as its one segment."""
    directory = spool / name
    directory.mkdir(parents=True, mode=0o700)
    manifest = Manifest(
        key=key,
        account_id="acct",
        service=service_name(target),
        owner=ProcessIdentity(4_000_000, 1, "a boot long gone"),
        skip_opening_stream=False,
        trim_new_line_suffix=False,
        created=time.time() - 120,
        stream_locked=True,
    )
    (directory / MANIFEST).write_bytes(manifest.to_json())
    (directory / "0000000000.ndjson").write_bytes(b"".join(r + b"\n" for r in rows))
    return directory


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / MANIFEST).read_bytes())


def live_rows(target: Target, key: str) -> List[str]:
    """The ``out`` of every line the key's live stream holds."""
    if isinstance(target, Path):
        path = lelog.FileStore(target).live_path(key)
        if not os.path.exists(path):
            return []
        return [line.out for line in parse_ndjson(Path(path).read_bytes())]
    return [line["out"] for line in target.live_lines(key)]
