"""lelog's own warnings: rate-limited, and kept away from the handlers they are about."""

from __future__ import annotations

import logging

from lelog._diagnostics import RateLimitedWarnings, logger
from tests.helpers import dead_url, run_python


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_one_warning_per_kind_per_window_with_a_count_of_the_rest() -> None:
    now = [0.0]
    warnings = RateLimitedWarnings(window=60, clock=lambda: now[0])
    handler = ListHandler()
    logger.addHandler(handler)
    try:
        assert warnings.warn("write:503", "service down") is True
        for _ in range(100):
            assert warnings.warn("write:503", "service down") is False
        assert warnings.warn("auth", "bad token") is True  # another kind is not held back
        now[0] = 61
        assert warnings.warn("write:503", "still down") is True
    finally:
        logger.removeHandler(handler)
    assert handler.messages == [
        "lelog: service down",
        "lelog: bad token",
        "lelog: still down (100 similar warnings held back)",
    ]


def test_the_lelog_logger_does_not_propagate_to_the_root() -> None:
    assert logger.name == "lelog" and logger.propagate is False


DEAD_SERVICE_SCRIPT = """
import logging, lelog
logging.basicConfig(level=logging.DEBUG)  # a root handler must not see lelog's warnings
config = lelog.LogConfig(url={url!r}, account_id="a", token="t")
client = lelog.LogServiceClient(config, retry=lelog.RetryPolicy(first_wait=0.01, max_wait=0.02, max_attempts=1000))
writer = lelog.StreamWriter("k", client, flush_interval=0.01, close_timeout=1)
for i in range(50):
    writer.write_line(str(i))
writer.flush(1.0)  # dozens of failed attempts happen meanwhile
stats = writer.close()
print(stats.retries)
"""


def test_a_dead_service_warns_a_few_times_on_stderr_not_per_attempt() -> None:
    result = run_python(DEAD_SERVICE_SCRIPT.format(url=dead_url()), timeout=30)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 10
    lelog_lines = [line for line in result.stderr.splitlines() if line.startswith("lelog: ")]
    assert 1 <= len(lelog_lines) <= 6, result.stderr
    assert "Traceback" not in result.stderr
    assert "WARNING:lelog" not in result.stderr  # not through the root logger's handler


def test_a_dict_config_that_disables_existing_loggers_does_not_silence_lelogs_warnings() -> None:
    result = run_python(
        """
        import logging.config
        from lelog._diagnostics import RateLimitedWarnings
        logging.config.dictConfig({"version": 1})  # disable_existing_loggers: on by default
        RateLimitedWarnings().warn("kind", "lines were lost")
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "lelog: lines were lost" in result.stderr
