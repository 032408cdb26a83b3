"""A smoke test of the benchmark harness (``benchmarks/``): its parts work end to end on
tiny sizes, in seconds, with none of the peers needed."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks import run, sinks, subjects
from benchmarks.subjects import StatsPoller
from tests.helpers import dead_url


def _wait(poller: StatsPoller, expected: int) -> int:
    deadline = time.monotonic() + 5
    while (got := poller.received()) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


def test_a_sink_counts_what_it_receives() -> None:
    server, stats, _ = sinks.serve("logstash")
    poller = StatsPoller(f"http://127.0.0.1:{stats.server_address[1]}/_stats")
    try:
        with socket.create_connection(server.server_address[:2]) as sock:
            sock.sendall(b'{"message": "a"}\n{"message": "b"}\n')
        assert _wait(poller, 2) == 2
    finally:
        poller.close()
        for srv in (server, stats):
            srv.shutdown()
            srv.server_close()


def test_a_burst_is_timed_until_the_service_has_every_line(service) -> None:
    key = "bench/smoke"
    target = {"url": service.url, "key": key, "stats": f"{service.url}/_stats?key={key}&accountID=acct"}
    spec = {
        "scenario": "burst",
        "subject": "lelog",
        "n": 300,
        "warm": 50,
        "target": target,
        "options": {"formatter": "logfmt"},
        "timeout": 10,
    }
    result = run.child(spec, timeout=60)
    assert result["delivered"] == 300 and result["dropped"] == 0, result
    assert 0 < result["call_us"] <= result["total_us"]
    assert service.stats(key)["received"] == 350


def test_the_spool_subject_delivers_a_burst(service) -> None:
    key = "bench/spool"
    target = {"url": service.url, "key": key, "stats": f"{service.url}/_stats?key={key}&accountID=acct"}
    spec = {
        "scenario": "burst",
        "subject": "lelog-spool",
        "n": 300,
        "warm": 50,
        "target": target,
        "timeout": 10,
    }
    result = run.child(spec, timeout=60)
    assert result["delivered"] == 300 and result["dropped"] == 0, result


def test_the_spool_subject_spools_into_a_directory_of_its_own_then_removes_it(
    service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    key = "bench/spool-dir"
    target = {"url": service.url, "key": key, "stats": f"{service.url}/_stats?key={key}&accountID=acct"}
    subject = subjects.build("lelog-spool", target, {})
    spool_dir = subject.info["options"]["spool_dir"]
    assert os.path.dirname(spool_dir) == str(tmp_path)
    logger = logging.getLogger("bench.smoke.spool")
    logger.propagate = False
    logger.addHandler(subject.handler)
    try:
        for i in range(100):
            logger.warning("line %d", i)

        def spooled() -> bool:
            return any(p.stat().st_size for p in Path(spool_dir).rglob("*.ndjson"))

        deadline = time.monotonic() + 30
        while not spooled() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spooled()
    finally:
        logger.removeHandler(subject.handler)
        subject.close()
        subject.cleanup()
    assert not os.path.exists(spool_dir)


def test_the_bare_prototype_delivers_every_line_with_lelogs_bytes(service) -> None:
    key = "bench/prototype"
    target = {"url": service.url, "key": key, "stats": f"{service.url}/_stats?key={key}&accountID=acct"}
    spec = {
        "scenario": "burst",
        "subject": "prototype",
        "n": 300,
        "warm": 20,
        "target": target,
        "timeout": 10,
    }
    result = run.child(spec, timeout=60)
    assert result["delivered"] == 300, result
    lines = service.all_written(key)
    assert [line["pos"] for line in lines] == list(range(320))
    assert lines[-1]["out"].endswith('msg="handled request 299: 200 OK in the benchmark loop"\n'), lines[-1]


def test_the_baselines_need_no_far_end() -> None:
    for subject in ("floor", "stdlib-queue", "stdlib-queue-stream"):
        spec = {"scenario": "burst", "subject": subject, "n": 200, "warm": 10, "options": {}}
        result = run.child(spec, timeout=60)
        assert result["delivered"] == 200 and result["total_us"] > 0, (subject, result)


def test_exit_is_timed_from_the_end_of_the_loop() -> None:
    target = {"url": dead_url(), "key": "bench/exit"}
    spec = {
        "scenario": "exit",
        "subject": "lelog",
        "n": 200,
        "target": target,
        "options": {"lelog": {"close_timeout": 0.5}},
    }
    result = run.timed_exit(spec, cap=10)
    assert result["code"] == 0 and 0 < result["exit_s"] < 3, result


def test_construction_is_measured_without_a_service() -> None:
    spec = {"scenario": "construct", "subject": "lelog", "n": 3, "target": {"url": dead_url()}}
    result = run.child(spec, timeout=60)
    assert set(result) == {"build_ms", "rss_mib_each", "rss_mib_total", "held_after_close_mib"}, result
    assert result["build_ms"] > 0, result


def test_a_moto_sink_counts_what_watchtower_sends() -> None:
    pytest.importorskip("watchtower")
    pytest.importorskip("moto")
    far = run.Far("cloudwatch")
    try:
        spec = {
            "scenario": "burst",
            "subject": "watchtower",
            "n": 200,
            "warm": 10,
            "target": far.target("watchtower"),
            "options": {},
            "timeout": 20,
        }
        result = run.child(spec, timeout=120)
    finally:
        far.stop()
    assert result["delivered"] == 200, result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AF_UNIX and fcntl: Linux")
def test_the_members_row_runs_an_owner_alone_then_with_its_members_and_reports() -> None:
    plan = dataclasses.replace(run.QUICK, members_n=300, warm=50, runs={**run.QUICK.runs, "members": 1})
    bench = run.Bench(plan, ["lelog"], "logfmt")
    try:
        bench.members()
    finally:
        bench.stop()
    cells = bench.results["members"]["lelog"]
    for name in ("alone", "owner", "member", "cpu_member", "overlap", "delivered"):
        assert cells[name].values, (name, cells[name].notes)
    assert cells["logged"].values == [(run.MEMBERS + 1) * 350]
    text = run.report(bench, "python -m benchmarks --rows members", 10.0)
    assert "### 6. Processes on one key" in text, text
    for target in ("a member's caller wall", "the owner's caller wall", "every line delivered"):
        assert any(target in line and not line.startswith("- n/a") for line in text.splitlines()), text


def test_the_report_judges_the_targets_on_medians() -> None:
    bench = run.Bench(run.QUICK, ["floor", "stdlib-queue", "lelog"], "logfmt")
    for value in (20.0, 22.0, 21.0):
        bench.cell("cost", "stdlib-queue", "total").values.append(value)
        bench.cell("cost", "lelog", "total").values.append(value / 2)
        bench.cell("cost", "floor", "call").values.append(value / 4)
        bench.cell("cost", "lelog", "call").values.append(value / 2)
        bench.cell("sustained", "floor", "rate").values.append(value * 1000)
        bench.cell("sustained", "lelog", "rate").values.append(value * 600)
    text = run.report(bench, "python -m benchmarks --quick", 60.0)
    assert "| lelog | 10.5 (10.0–11.0) | 10.5 (10.0–11.0) |" in text
    assert "- FAIL caller wall cost ≤ 1.6x the floor (cost row): 2.00x" in text
    assert "- PASS delivered ≥ 0.55x the floor's rate (sustained row): 0.60x" in text
    assert "- FAIL stretch: delivered ≥ 0.7x the floor's rate (sustained row): 0.60x" in text
    assert "- n/a  a handler with an http:// URL costs ≤ 0.1 MiB RSS: not measured" in text


def test_the_stage_breakdown_runs_and_encodes_both_paths_alike(tmp_path) -> None:
    # stages.py raises if captured records encode to other bytes than the same records
    # formatted on the caller, so a clean exit is that check passing.
    out = tmp_path / "stages.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", "--n", "500", "--reps", "1", "--output", str(out)],
        cwd=run.ROOT,
        capture_output=True,
        text=True,
        timeout=55,  # inside pytest's own 60 s
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for stage in (
        "floor: `logger.info`",
        "formatter: `LogfmtFormatter.format`",
        "its own formatter: captured",
        "encode captured records with masking",
        "thread CPU: caller",
    ):
        assert stage in text, text
