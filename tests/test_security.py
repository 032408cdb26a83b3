"""Security from outside: the token never leaves but in its header, TLS is never off by
accident, and what can be checked at configuration is checked there.

A leak is looked for as any 8-character piece of the token, and of its ``repr``, JSON and
percent-encoded forms, in everything a run shows or stores.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import ssl
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, quote_plus

import pytest

import lelog
from lelog import ConfigError, LogConfig, LogServiceClient, StreamHandler, StreamWriter, TLSError
from lelog._config import MAX_SECONDS
from tests.helpers import ROOT, dead_url, run_python, without_lelog_variables
from tests.service import FakeLogService

# Visible ASCII without '*' (the mask's own character), with the characters that make the
# quoted forms differ from the token: quote, backslash, slash, percent, plus.
_ALPHABET = "".join(c for c in map(chr, range(0x21, 0x7F)) if c != "*")


def random_token(length: int = 64) -> str:
    rng = random.Random()  # each run its own token: a leak cannot hide behind a lucky one
    return "".join(rng.choice(_ALPHABET) for _ in range(length - 5)) + '"\\/%+'


def forms(token: str) -> list[str]:
    """The token and the ways an error text may quote it."""
    return [
        token,
        repr(token),
        repr(token.encode()),
        json.dumps(token),
        quote(token, safe=""),
        quote_plus(token, safe=""),
    ]


def leaks(text: str, token: str) -> list[str]:
    """Every 8-character piece of any form of ``token`` that ``text`` holds."""
    found = []
    for form in forms(token):
        for i in range(len(form) - 7):
            piece = form[i : i + 8]
            if piece in text:
                found.append(piece)
    return found


def assert_no_leak(text: str, token: str) -> None:
    found = leaks(text, token)
    assert not found, f"the token leaked: {found[:5]} in {text[:2000]!r}"


@pytest.fixture
def lelog_records() -> Iterator[list[logging.LogRecord]]:
    """The records of lelog's own (non-propagating) logger."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("lelog")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _env_without_lelog(**extra: str) -> dict[str, str]:
    env = without_lelog_variables()
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], stdin: bytes = b"", cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lelog", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=str(cwd),
        timeout=timeout,
    )


# -- the token checked at configuration --------------------------------------------------------


@pytest.mark.parametrize("around", [("", "\n"), ("", "\r\n"), ("  ", " \t\n")])
def test_a_token_read_from_a_file_is_stripped_and_works(
    service_factory: Any, around: tuple[str, str]
) -> None:
    token = random_token()
    svc = service_factory(token=token)
    config = LogConfig(url=svc.url, account_id="acct", token=around[0] + token + around[1])
    assert config.token == token
    assert LogConfig.from_env({"LELOG_TOKEN": token + around[1]}).token == token
    with LogServiceClient(config) as client:
        client.open_stream("k")  # the service compares the token byte for byte
    assert svc.is_open("k")
    assert not svc.token_leaks()


@pytest.mark.parametrize(
    "inside, kind",
    [
        ("é", "non-ASCII"),
        ("\n", "control"),
        ("\r", "control"),
        (" ", "whitespace"),
        ("\x00", "control"),
        ("\u2028", "non-ASCII"),
    ],
)
def test_a_token_that_is_not_visible_ascii_is_a_config_error_that_never_shows_it(
    monkeypatch: pytest.MonkeyPatch, inside: str, kind: str
) -> None:
    token = random_token()
    bad = token[:30] + inside + token[30:]
    attempts = [
        lambda: LogConfig(url="http://h", account_id="a", token=bad),
        lambda: LogConfig.from_env({"LELOG_URL": "http://h", "LELOG_ACCOUNT_ID": "a", "LELOG_TOKEN": bad}),
        lambda: LogConfig.from_setup_request(
            {"log_config": {"url": "http://h", "account_id": "a", "token": bad}}
        ),
        lambda: StreamHandler("k", url="http://h", account_id="a", token=bad),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError) as info:
            attempt()
        text = str(info.value) + repr(info.value)
        assert "token: character 31 of" in text and kind.split("-")[0].lower() in text.lower()
        assert_no_leak(text, token)


def test_a_bad_token_through_the_cli_config_file_and_env_is_one_line_without_it(tmp_path: Path) -> None:
    token = random_token()
    bad = token[:20] + "é" + token[20:]
    setup = tmp_path / "setup.json"
    setup.write_text(
        json.dumps({"log_config": {"url": "http://127.0.0.1:9", "account_id": "a", "token": bad}})
    )
    for args, env in [
        (["cat", "--key", "k", "--config", str(setup)], _env_without_lelog()),
        (
            ["cat", "--key", "k"],
            _env_without_lelog(LELOG_URL="http://127.0.0.1:9", LELOG_ACCOUNT_ID="a", LELOG_TOKEN=bad),
        ),
    ]:
        done = run_cli(*args, env=env, cwd=tmp_path)
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 2, stderr
        assert stderr.startswith("lelog: error: token: character 21 of") and stderr.count("\n") == 1
        assert "Traceback" not in stderr
        assert_no_leak(stderr + done.stdout.decode("utf-8", "replace"), token)


# -- the token masked in everything shown or stored ----------------------------------------------


def test_a_failing_handler_run_shows_and_stores_no_piece_of_the_token(
    service_factory: Any, capsys: pytest.CaptureFixture[str], lelog_records: list[logging.LogRecord]
) -> None:
    token = random_token()
    svc = service_factory(token=token)
    # A service (or a proxy) that quotes the token back in its errors, in every form.
    echo = f"bad token {token} {json.dumps(token)} {repr(token)} {quote(token, safe='')}"
    svc.fail_next(3, status=500, error_msg=echo, method="PUT", path="/stream")
    handler = StreamHandler(
        "k",
        url=svc.url,
        account_id="acct",
        token=token + "\n",
        dual_logging_enabled=True,
        flush_interval=0.05,
        max_attempts=2,
    )
    logger = logging.getLogger("test_security.handler")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.info("token is %s", token)
        logger.info("as JSON %s, repr %r, in a URL ?t=%s", json.dumps(token), token, quote(token, safe=""))
        logger.info("in extras", extra={"credential": token})
        handler.flush(30)  # False: the failing pushes were given up, as they should be
    finally:
        logger.removeHandler(handler)
        handler.close()
    stats = handler.stats
    assert stats.last_error is not None and "**************" in stats.last_error
    blob = svc.blob("k")
    assert blob is not None
    shown = capsys.readouterr()
    everything = "\n".join(
        [
            blob.decode(),
            json.dumps(svc.all_written("k")),
            shown.out,
            shown.err,
            stats.last_error,
            stats.summary(),
            repr(stats),
            repr(handler),
            repr(handler.writer.config),
            *(record.getMessage() for record in lelog_records),
        ]
    )
    assert_no_leak(everything, token)
    assert len([line for line in shown.out.splitlines() if line.startswith("{")]) == 3  # dual logging ran
    assert any("bad token **************" in record.getMessage() for record in lelog_records)
    assert not svc.token_leaks()


def _token_for_a_name() -> str:
    # A name starting with "_" is private, not an extra (structlog's _logger): 1 random token
    # in about 90 would be left out as a name, and the test would see no key at all.
    return "k" + random_token()[1:]


def _log_with_the_token_as_an_extra_name(token: str, **options: Any) -> tuple[bytes, str]:
    """Log one record whose extra's name is the token; the stored log and stdout."""
    svc = FakeLogService(token=token).start()
    try:
        handler = StreamHandler("k", url=svc.url, account_id="acct", token=token, **options)
        logger = logging.getLogger("test_security.keys")
        logger.propagate = False
        logger.addHandler(handler)
        out = io.StringIO()
        stdout, sys.stdout = sys.stdout, out
        try:
            logger.warning("a key", extra={token: "value", "plain": token})
        finally:
            sys.stdout = stdout
            logger.removeHandler(handler)
            handler.close()
        return svc.blob("k") or b"", out.getvalue()
    finally:
        svc.stop()


def test_dual_logging_masks_extra_names_as_well_as_values() -> None:
    token = _token_for_a_name()
    _, shown = _log_with_the_token_as_an_extra_name(token, dual_logging_enabled=True)
    assert json.loads(shown)["**************"] == "value"
    assert json.loads(shown)["plain"] == "**************"
    assert_no_leak(shown, token)


def test_the_stored_log_masks_extra_names_as_well_as_values() -> None:
    token = _token_for_a_name()
    stored, _ = _log_with_the_token_as_an_extra_name(token)
    assert_no_leak(stored.decode(), token)


@pytest.mark.parametrize("given_in", ["LELOG_TOKEN", "--config"])
def test_cli_push_with_a_token_from_a_file_masks_it_in_the_log_and_in_its_output(
    service_factory: Any, tmp_path: Path, given_in: str
) -> None:
    token = random_token()
    svc = service_factory(token=token)
    # Opening is refused (a permanent answer that quotes the token); the upload at close works.
    svc.fail_next(
        1, status=403, error_msg=f"operation not permitted for token {token}", method="POST", path="/stream"
    )
    setup = tmp_path / "setup.json"
    log_config = {"url": svc.url, "account_id": "acct"}
    env = _env_without_lelog()
    if given_in == "--config":
        log_config["token"] = token + "\n"
    else:
        env["LELOG_TOKEN"] = token + "\r\n"
    setup.write_text(json.dumps({"le_log_key": "k", "log_config": log_config}))
    text = f"the token is {token}\nquoted {json.dumps(token)}\n".encode()
    done = run_cli("push", "--config", str(setup), env=env, stdin=text, cwd=tmp_path)
    output = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert "last error: open 'k': 403 operation not permitted for token **************" in output
    assert_no_leak(output, token)
    stored = svc.blob("k")
    assert stored is not None and b"the token is **************" in stored
    assert_no_leak(stored.decode() + json.dumps(svc.all_written("k")), token)
    assert not svc.token_leaks()


@pytest.mark.skipif(sys.platform == "win32", reason="lelog run needs POSIX")
def test_lelog_run_env_stores_no_piece_of_the_token(tmp_path: Path) -> None:
    token = random_token()
    env = _env_without_lelog(LELOG_TOKEN=token + "\n", LELOG_HOME=str(tmp_path / "store"))
    # Whether or not the command gets LELOG_TOKEN, no piece of it may reach the stored log.
    done = run_cli("run", "--key", "k", "--", "env", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = (tmp_path / "store" / "k.ndjson").read_text()
    assert "PATH=" in stored
    assert_no_leak(stored + done.stderr.decode("utf-8", "replace"), token)


def test_the_token_is_a_secret_of_every_stream_and_line() -> None:
    token = random_token()
    config = LogConfig(url="http://h", account_id="a", token=token)
    masker = config.masker()
    for form in forms(token):
        masked = masker.mask(f"x {form} y")
        assert "**************" in masked and not leaks(masked, token), form
    assert config.scrub(ValueError(f"Illegal header value b'{token}\\n'")) == (
        "Illegal header value b'**************\\n'"
    )


def test_a_short_token_is_masked_only_as_a_whole_word() -> None:
    config = LogConfig(url="http://h", account_id="a", token="abc12")
    masker = config.masker()
    assert masker.mask("t=abc12 x") == "t=************** x"
    assert masker.mask("abc123 xabc12") == "abc123 xabc12"  # ordinary words stay


def test_the_client_key_is_masked_in_lines_too(tls_ca: Any) -> None:
    cert = tls_ca.issue_cert("client")
    key_pem = cert.private_key_pem.bytes()
    key_b64 = base64.b64encode(key_pem).decode()
    config = LogConfig(
        client_cert=base64.b64encode(cert.cert_chain_pems[0].bytes()).decode(), client_cert_key=key_b64
    )
    body_line = key_pem.decode().splitlines()[1]
    masked = config.masker().mask(f"key {key_b64} and a PEM line {body_line}")
    assert masked == "key ************** and a PEM line **************"


def _encrypted_client_key(tls_ca: Any, password: str) -> tuple[str, str]:
    """A client certificate and its key encrypted with ``password``, both base64 PEM."""
    from cryptography.hazmat.primitives import serialization

    cert = tls_ca.issue_cert("lelog-client")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    return (
        base64.b64encode(cert.cert_chain_pems[0].bytes()).decode(),
        base64.b64encode(encrypted).decode(),
    )


def test_an_encrypted_client_key_with_its_password_and_the_password_masked(
    service_factory: Any, tls_ca: Any, tmp_path: Path
) -> None:
    password = random_token(24)
    client_cert, client_key = _encrypted_client_key(tls_ca, password)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    tls_ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    svc = service_factory(ssl_context=server_ctx)
    ca_path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_path))
    mtls = dict(url=svc.url, account_id="acct", token=svc.token, verify=str(ca_path), client_cert=client_cert)
    for wrong in (None, password[:-1]):
        with pytest.raises(
            ConfigError, match="client_cert_key is encrypted.*client_cert_key_password"
        ) as info:
            LogConfig(client_cert_key=client_key, client_cert_key_password=wrong, **mtls)
        assert_no_leak(str(info.value), password)
    config = LogConfig(client_cert_key=client_key, client_cert_key_password=password, **mtls)
    assert_no_leak(repr(config), password)
    writer = StreamWriter("k", config)
    writer.write_line(f"the key's password is {password}")
    stats = writer.close(20)
    assert stats.sent == 1 and stats.uploaded, stats
    stored = svc.blob("k")
    assert stored is not None and b"the key's password is **************" in stored
    assert_no_leak(stored.decode(), password)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def untrusted_service(service_factory: Any, tls_ca: Any) -> FakeLogService:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    svc: FakeLogService = service_factory(ssl_context=server_ctx)
    return svc


def test_an_untrusted_certificate_is_a_permanent_tls_error_counted_like_an_auth_failure(
    untrusted_service: FakeLogService, lelog_records: list[logging.LogRecord]
) -> None:
    config = LogConfig(url=untrusted_service.url, account_id="acct", token=random_token())
    writer = StreamWriter("k", config, close_timeout=20)
    writer.open()
    writer.write_line("one")
    stats = writer.close()
    assert stats.retries == 0  # never retried
    assert stats.last_error is not None
    assert "the log service's certificate was not trusted: " in stats.last_error
    assert stats.dropped["rejected"] == 1 and stats.uploaded is False
    assert not untrusted_service.requests  # no request ever got through
    assert any("certificate was not trusted" in r.getMessage() for r in lelog_records)
    with LogServiceClient(config) as client, pytest.raises(TLSError, match="not trusted") as info:
        client.open_stream("k", deadline=30)
    assert isinstance(info.value, lelog.TransportError) and not info.value.retryable


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_an_empty_or_blank_lelog_verify_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    env = {"LELOG_URL": "https://h", "LELOG_ACCOUNT_ID": "a", "LELOG_TOKEN": "t" * 20, "LELOG_VERIFY": value}
    with pytest.raises(ConfigError, match="LELOG_VERIFY is (empty|blank).*never turned off"):
        LogConfig.from_env(env)
    with pytest.raises(ConfigError, match="verify"):
        LogConfig(url="https://h", account_id="a", token="t", verify=value)
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(ConfigError, match="LELOG_VERIFY"):
        StreamHandler("k")
    done = run_cli("cat", "--key", "k", env=_env_without_lelog(**env), cwd=tmp_path)
    assert done.returncode == 2 and b"LELOG_VERIFY is" in done.stderr


@pytest.mark.parametrize(
    "value, verify",
    [("false", False), ("0", False), ("NO", False), ("true", True), ("1", True), ("yes", True)],
)
def test_only_words_turn_verification_on_or_off(value: str, verify: bool) -> None:
    assert LogConfig.from_env({"LELOG_VERIFY": value}).verify is verify


def test_off_and_other_words_are_taken_for_a_path_and_fail() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LogConfig.from_env({"LELOG_VERIFY": "off"})


def test_verification_off_warns_once_and_then_talks_to_an_untrusted_server(tmp_path: Path) -> None:
    code = """
        import logging, ssl, warnings
        import trustme
        import lelog
        from tests.service import FakeLogService

        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
        logging.getLogger("lelog").addHandler(Keep())
        ca = trustme.CA()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        svc = FakeLogService(ssl_context=ctx).start()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(3):
                    config = lelog.LogConfig.from_env(
                        {"LELOG_URL": svc.url, "LELOG_ACCOUNT_ID": "acct",
                         "LELOG_TOKEN": "secret-token", "LELOG_VERIFY": "false"}
                    )
                    with lelog.LogServiceClient(config) as client:
                        client.open_stream("k")
            assert svc.is_open("k")
        finally:
            svc.stop()
        unverified = [w for w in caught if "TLS verification is off" in str(w.message)]
        print(len(unverified), sum("TLS verification is off" in r for r in records))
    """
    done = run_python(code, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


# -- every checkable value checked at configuration ------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://h:notaport", "bad port"),
        ("http://h:70000", "bad port"),
        ("http://h:0", "bad port"),
        ("http://h:", "bad port"),
        ("http://h:8080\n", "control character"),
        ("http://h\r\n:8080", "control character"),
        (" http://h", "space or control character"),
        ("http://h/pre fix", "space or control character"),
        ("http://user:pw@h", "user or password"),
    ],
)
def test_a_bad_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LogConfig(url=url, account_id="a", token="t")


@pytest.mark.parametrize("level", ["LOUD", "", -1, 2.5, True, None])
def test_a_bad_handler_level_is_a_config_error_not_a_value_error(level: Any) -> None:
    with pytest.raises(ConfigError, match="level must be a level name or number"):
        StreamHandler("k", level=level)


def test_handler_levels_in_any_case_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    handler = StreamHandler("k", level="warning")
    try:
        assert handler.level == logging.WARNING
    finally:
        handler.close()


@pytest.mark.parametrize(
    "option", ["close_timeout", "flush_interval", "connect_timeout", "call_deadline", "max_retry_wait"]
)
def test_a_timeout_beyond_what_a_clock_can_wait_is_a_config_error(option: str) -> None:
    with pytest.raises(ConfigError, match=f"{option} must be a positive number of seconds, at most"):
        StreamHandler("k", **{option: 1e10})


def test_the_longest_close_timeout_exits_cleanly(tmp_path: Path) -> None:
    code = f"""
        import logging, lelog
        handler = lelog.StreamHandler("k", close_timeout={MAX_SECONDS!r})
        logging.getLogger().addHandler(handler)
        logging.warning("one line")
    """
    done = run_python(code, timeout=60, env={"LELOG_HOME": str(tmp_path)})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert b"one line" in (tmp_path / "k.ndjson").read_bytes()


def test_numbers_are_checked_the_same_way_everywhere() -> None:
    for build in (
        lambda: LogConfig(read_timeout=-1),
        lambda: StreamHandler("k", flush_interval=0),
        lambda: StreamWriter("k", None, close_timeout="5"),
    ):
        with pytest.raises(ConfigError, match=r"must be a positive number of seconds, at most 604800"):
            build()


def test_unknown_options_are_reported_the_same_way_everywhere() -> None:
    for build in (
        lambda: LogConfig.from_dict({"tokn": "x"}),
        lambda: StreamHandler("k", tokn="x"),
        lambda: LogConfig().evolve(tokn="x"),
    ):
        with pytest.raises(ConfigError, match=r"unknown option\(s\) 'tokn' \(did you mean 'token'\?\)"):
            build()


# -- one resolver --------------------------------------------------------------------------------


def test_lelog_key_is_the_stream_key_for_the_handler_and_log_stream_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LELOG_KEY", "from-env")
    handler = StreamHandler()
    try:
        assert handler.writer.key == "from-env"
    finally:
        handler.close()
    monkeypatch.setenv("LELOG_LE_LOG_KEY", "from-env")  # the same value: fine
    assert LogConfig.from_env().le_log_key == "from-env"
    monkeypatch.setenv("LELOG_LE_LOG_KEY", "other")
    with pytest.raises(ConfigError, match="LELOG_KEY and LELOG_LE_LOG_KEY are both set and differ"):
        StreamHandler()


def test_log_stream_completes_a_setup_request_from_the_environment_as_the_handler_does(
    service: FakeLogService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LELOG_TOKEN", service.token + "\n")
    request = {"log_config": {"url": service.url, "account_id": "acct"}}
    with lelog.log_stream("job", request, logger="test_security.job") as job:
        logging.getLogger("test_security.job").info("hello")
    assert job.stats.sent == 1 and job.stats.uploaded
    handler = StreamHandler("h", config=request)
    try:
        assert handler.writer.config.token == service.token
    finally:
        handler.close()


# -- private record attributes --------------------------------------------------------------------


def test_attributes_starting_with_an_underscore_are_not_extras() -> None:
    with lelog.testing.capture_stream() as captured:
        handler = StreamHandler("k")
        logger = logging.getLogger("test_security.private")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            # What structlog's ProcessorFormatter puts on the records it wraps.
            logger.warning("x", extra={"_logger": object(), "_name": "warning", "user": "u"})
        finally:
            logger.removeHandler(handler)
            handler.close()
    (line,) = captured.lines("k")
    assert line.args == {"user": "u"}
    assert "_logger" not in line.out and "_name" not in line.out and "user=u" in line.out


# -- building is cheap ---------------------------------------------------------------------------


def test_a_client_makes_its_connection_pool_on_first_use_once_across_threads(service: FakeLogService) -> None:
    client = LogServiceClient(LogConfig(url=service.url, account_id="acct", token=service.token))
    try:
        assert client._http is None  # nothing built yet: no pool, no TLS context
        seen: list[object] = []
        barrier = threading.Barrier(8)

        def first_use() -> None:
            barrier.wait()
            seen.append(client.http)

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 8 and all(pool is seen[0] for pool in seen)
        client.open_stream("k")
        assert service.is_open("k")
    finally:
        client.close()


def test_a_closed_client_that_never_made_a_pool_stays_closed(service: FakeLogService) -> None:
    client = LogServiceClient(LogConfig(url=service.url, account_id="acct", token=service.token))
    client.close()
    with pytest.raises(RuntimeError):
        client.open_stream("k")
    assert not service.is_open("k")


def test_one_tls_context_per_distinct_tls_configuration(tls_ca: Any, tmp_path: Path) -> None:
    ca_path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_path))
    one = LogConfig(url="https://a:1", account_id="a", token="t", verify=str(ca_path))
    two = LogConfig(url="https://b:2", account_id="b", token="u", verify=str(ca_path))
    default = LogConfig(url="https://a:1", account_id="a", token="t")
    assert one.tls_context() is two.tls_context()
    assert default.tls_context() is not one.tls_context()


def test_bad_tls_material_fails_when_the_config_is_built(tmp_path: Path) -> None:
    not_a_bundle = tmp_path / "ca.pem"
    not_a_bundle.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="could not be loaded as a CA bundle"):
        LogConfig(url="https://h", account_id="a", token="t", verify=str(not_a_bundle))
    # http:// needs no TLS material loaded: only that the path exists.
    assert LogConfig(url="http://h", account_id="a", token="t", verify=str(not_a_bundle))


def test_an_unreachable_service_error_names_no_token() -> None:
    token = random_token()
    config = LogConfig(url=dead_url(), account_id="a", token=token)
    with LogServiceClient(config) as client, pytest.raises(lelog.TransportError) as info:
        client.open_stream("build-" + token, deadline=0.5)  # even a key that holds the token
    buffer = io.StringIO()
    traceback.print_exception(type(info.value), info.value, info.value.__traceback__, file=buffer)
    assert_no_leak(buffer.getvalue() + repr(info.value), token)
    assert "open 'build-**************'" in str(info.value)
