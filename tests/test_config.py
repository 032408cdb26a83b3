"""LogConfig: the setup request accepted as-is, and every mistake named with its fix."""

from __future__ import annotations

import base64
import logging
import re
from typing import Iterator, List

import attrs
import pytest
import trustme

import lelog
import lelog._config
from lelog import ConfigError, LogConfig

SETUP_REQUEST = {
    "le_log_key": "stage-123/lite-engine-logs",
    "log_config": {
        "url": "http://log-service:8080",
        "account_id": "account-123",
        "token": "auth-token",
        "indirect_upload": True,
        "trim_new_line_suffix": False,
        "skip_opening_stream": False,
        "skip_closing_stream": False,
    },
    "secrets": ["hunter2"],
    "unrelated_engine_field": {"volumes": []},
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_setup_request_is_accepted_as_is() -> None:
    config = LogConfig.from_setup_request(SETUP_REQUEST)
    assert config.url == "http://log-service:8080"
    assert config.account_id == "account-123"
    assert config.token == "auth-token"
    assert config.indirect_upload is True
    assert config.le_log_key == "stage-123/lite-engine-logs"
    assert config.secrets == ("hunter2",)


def test_only_log_config_is_accepted_too() -> None:
    config = LogConfig.from_setup_request(SETUP_REQUEST["log_config"])
    assert config.url == "http://log-service:8080"
    assert config.le_log_key == ""


def test_mtls_config_is_read_from_the_setup_request() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("client")
    request = dict(
        SETUP_REQUEST,
        mtls_config={
            "client_cert": _b64(cert.cert_chain_pems[0].bytes()),
            "client_cert_key": _b64(cert.private_key_pem.bytes()),
        },
    )
    config = LogConfig.from_setup_request(request)
    assert config.client_cert_pem == cert.cert_chain_pems[0].bytes()
    assert config.client_cert_key_pem == cert.private_key_pem.bytes()


def test_trailing_slash_is_stripped_and_prefix_kept() -> None:
    config = LogConfig(url="https://gw.example/log-service/", account_id="a", token="t")
    assert config.url == "https://gw.example/log-service"


def test_token_and_key_material_never_in_repr() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("client")
    key_b64 = _b64(cert.private_key_pem.bytes())
    config = LogConfig(
        url="http://h",
        account_id="a",
        token="tok-SECRET-123",
        secrets=["pw-SECRET-456"],
        client_cert=_b64(cert.cert_chain_pems[0].bytes()),
        client_cert_key=key_b64,
    )
    text = repr(config) + str(config)
    for secret in ("tok-SECRET-123", "pw-SECRET-456", key_b64[:40]):
        assert secret not in text
    assert "token='***'" in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"url": "log-service:8080"},
            "url 'log-service:8080' has no scheme: write it as 'http://log-service:8080'",
        ),
        ({"url": "ftp://h"}, "must start with http:// or https://"),
        ({"url": "http://"}, "has no host"),
        ({"url": "http://h?x=1", "account_id": "a", "token": "t"}, "must not carry a query"),
        ({"indirect_upload": "true"}, "indirect_upload must be true or false, got 'true' (str)"),
        ({"skip_opening_stream": 1}, "skip_opening_stream must be true or false"),
        ({"url": "http://h", "token": "t"}, "account_id is required when url is set"),
        ({"url": "http://h", "account_id": "a"}, "token is required when url is set"),
        ({"verify": "/no/such/ca.pem"}, "verify: CA bundle '/no/such/ca.pem' does not exist"),
        ({"verify": 3}, "verify must be true, false, or the path"),
        ({"client_cert": "!!notbase64", "client_cert_key": "x"}, "client_cert is not valid base64"),
        (
            {"client_cert": _b64(b"hello"), "client_cert_key": _b64(b"hello")},
            "decodes from base64 but is not PEM",
        ),
        (
            {"client_cert": _b64(b"-----BEGIN CERTIFICATE-----\n")},
            "client_cert and client_cert_key go together",
        ),
        ({"secrets": "hunter2"}, "secrets must be a list of strings, not one string"),
        ({"secrets": ["ok", 3]}, "secrets must hold only strings"),
        ({"read_timeout": 0}, "read_timeout must be a positive number of seconds, at most 604800"),
        ({"call_deadline": float("inf")}, "call_deadline must be a positive number of seconds"),
        ({"secrets": {"pw": "x"}}, "secrets must be a list of strings, not an object"),
        ({"max_attempts": 0}, "max_attempts must be a whole number > 0"),
        (
            {"sanitize_config": {"sanitize_patterns_content": _b64(b"(unclosed")}},
            "sanitize_config.sanitize_patterns_content",
        ),
        ({"sanitize_config": {"patterns": "x"}}, "sanitize_config: unknown option(s) 'patterns'"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LogConfig(**values)
    assert message in str(info.value)


def test_unknown_keys_are_reported_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'acount_id' \(did you mean 'account_id'\?\)"):
        LogConfig.from_setup_request({"log_config": {"url": "", "acount_id": "a"}})
    with pytest.raises(ConfigError, match="unknown option"):
        LogConfig.from_setup_request({"urll": "http://h"})
    with pytest.raises(ConfigError, match="mtls_config: unknown option"):
        LogConfig.from_setup_request({"log_config": {}, "mtls_config": {"cert": "x"}})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, lelog.LelogError)


def test_from_env_reads_lelog_variables_and_overrides_win() -> None:
    env = {
        "LELOG_URL": "http://h:1",
        "LELOG_ACCOUNT_ID": "acct",
        "LELOG_TOKEN": "t",
        "LELOG_INDIRECT_UPLOAD": "yes",
        "LELOG_TRIM_NEW_LINE_SUFFIX": "0",
        "LELOG_CALL_DEADLINE": "2.5",
        "LELOG_MAX_ATTEMPTS": "3",
        "LELOG_VERIFY": "false",
        "LELOG_SECRETS": "one\ntwo\n",
        "UNRELATED": "x",
    }
    config = LogConfig.from_env(env, account_id="override", token=None)
    assert config.url == "http://h:1"
    assert config.account_id == "override"
    assert config.token == "t"
    assert config.indirect_upload is True
    assert config.trim_new_line_suffix is False
    assert config.call_deadline == 2.5
    assert config.max_attempts == 3
    assert config.verify is False
    assert config.secrets == ("one", "two")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LELOG_INDIRECT_UPLOAD": "maybe"}, "LELOG_INDIRECT_UPLOAD must be true or false"),
        ({"LELOG_READ_TIMEOUT": "soon"}, "LELOG_READ_TIMEOUT must be a number"),
    ],
)
def test_from_env_bad_values(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LogConfig.from_env(env)


def test_sanitize_patterns_and_secrets_build_the_masker() -> None:
    content = _b64(b"# comment\n\nAKIA[0-9A-Z]{4}\n")
    config = LogConfig(secrets=["hunter2"], sanitize_config={"sanitize_patterns_content": content})
    assert config.sanitize_patterns == ["AKIA[0-9A-Z]{4}"]
    masked = config.masker().mask("pw=hunter2 key=AKIAABCD end")
    assert masked == "pw=************** key=************** end"


def test_evolve_validates_and_rejects_unknown_names() -> None:
    config = LogConfig()
    assert config.evolve(trim_new_line_suffix=True).trim_new_line_suffix is True
    with pytest.raises(ConfigError, match="unknown option"):
        config.evolve(trim_newline=True)
    with pytest.raises(ConfigError, match="url"):
        config.evolve(url="nohost")


def test_a_client_cert_key_password_that_is_not_a_string_is_a_config_error() -> None:
    # Found by test_fuzz: a list here was a TypeError from attrs, not a ConfigError.
    with pytest.raises(ConfigError, match="client_cert_key_password must be a string"):
        LogConfig.from_setup_request({"client_cert_key_password": []})


# -- the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "secrets"),
    [
        ('["hunter2hunter2"]', ("hunter2hunter2",)),  # as the setup request gives them
        ('  ["one", "two"]\n', ("one", "two")),
        ('["[starts-with-a-bracket"]', ("[starts-with-a-bracket",)),
        ("one\ntwo\n", ("one", "two")),  # one secret per line, as before
        ("not [a list]", ("not [a list]",)),
    ],
)
def test_lelog_secrets_takes_a_json_list_or_one_secret_per_line(raw: str, secrets: tuple) -> None:
    assert LogConfig.from_env({"LELOG_SECRETS": raw}).secrets == secrets


@pytest.mark.parametrize("raw", ['["hunter2hunter2"', "[hunter2hunter2]", '["a", 1]', "[]x", '[{"a": "b"}]'])
def test_lelog_secrets_that_starts_with_a_bracket_must_be_a_json_list_of_strings(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"LELOG_SECRETS starts with '\[' but is not") as info:
        LogConfig.from_env({"LELOG_SECRETS": raw})
    assert "hunter2" not in str(info.value)  # the value is a secret: never shown


@pytest.mark.parametrize("verify", [False, True])
def test_an_explicit_verify_wins_over_a_blank_lelog_verify(verify: bool) -> None:
    env = {"LELOG_VERIFY": ""}
    assert LogConfig.from_env(env, verify=verify).verify is verify
    request = {"log_config": {"url": "http://h:1", "account_id": "a", "token": "t", "verify": verify}}
    assert lelog._config.resolve_config(request, environ=env).verify is verify
    with pytest.raises(ConfigError, match="LELOG_VERIFY is empty"):
        LogConfig.from_env(env)  # not given: the environment's mistake is still reported


def test_an_explicit_key_wins_over_conflicting_key_variables() -> None:
    env = {"LELOG_KEY": "a", "LELOG_LE_LOG_KEY": "b"}
    assert LogConfig.from_env(env, le_log_key="mine").le_log_key == "mine"
    with pytest.raises(ConfigError, match="LELOG_KEY and LELOG_LE_LOG_KEY"):
        LogConfig.from_env(env)


def test_writer_options_come_from_their_variables() -> None:
    env = {"LELOG_FLUSH_INTERVAL": "0.25", "LELOG_HISTORY_BYTES": " 4096 ", "LELOG_CLOSE_TIMEOUT": "2"}
    options = lelog._config.writer_options_from_env(env)
    assert options == {"flush_interval": 0.25, "history_bytes": 4096, "close_timeout": 2.0}
    assert lelog.WriterOptions(**options).history_bytes == 4096


def test_every_writer_option_but_the_spool_directory_has_a_variable() -> None:
    fields = {f.name: f.default for f in attrs.fields(lelog.WriterOptions) if f.name != "spool_dir"}
    whole = {name: isinstance(default, int) for name, default in fields.items()}
    assert whole == dict(lelog._config.WRITER_ENV_OPTIONS)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LELOG_FLUSH_INTERVAL": "x"}, "LELOG_FLUSH_INTERVAL must be a number of seconds, got 'x'"),
        ({"LELOG_CLOSE_TIMEOUT": "-1"}, "LELOG_CLOSE_TIMEOUT must be a positive number of seconds"),
        ({"LELOG_CLOSE_TIMEOUT": "inf"}, "LELOG_CLOSE_TIMEOUT must be a positive number of seconds"),
        ({"LELOG_MAX_PENDING_LINES": "1e6"}, "LELOG_MAX_PENDING_LINES must be a whole number, got '1e6'"),
        ({"LELOG_HISTORY_BYTES": "0"}, "LELOG_HISTORY_BYTES must be a whole number > 0"),
    ],
)
def test_a_bad_writer_option_variable_is_a_config_error_naming_it(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        lelog._config.writer_options_from_env(env)


@pytest.fixture
def lelog_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[str]]:
    """What lelog warns about on its own (non-propagating) logger; no misspelling warned yet."""
    monkeypatch.setattr(lelog._config, "_typos_warned", {})
    seen: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lelog")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def test_a_misspelt_variable_is_warned_about_once_naming_the_intended_one(lelog_warnings: List[str]) -> None:
    env = {
        "LELOG_ACOUNT_ID": "acct",
        "LELOG_URL": "",
        "LELOG_HYPOTHESIS_PROFILE": "x",
        "LELOG_FLUSH_INTERVAL": "1",
    }
    LogConfig.from_env(env)
    LogConfig.from_env(env)
    assert lelog_warnings == [
        "lelog: LELOG_ACOUNT_ID is not a variable lelog reads; did you mean LELOG_ACCOUNT_ID?"
    ]
