"""``LogConfig``: where the log service is and how to talk to it.

The field names are the JSON names of the seed's ``log_config`` (docs/protocol.md#setup-request), so a setup
request is accepted as it is.  Every value is checked when the config is built: a mistake is a
``ConfigError`` naming the field and the fix, never a failure later on a worker thread.
Secrets (token, secrets, key material) never appear in ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import attrs

from ._exceptions import ConfigError
from ._masking import Masker, decode_sanitize_patterns

__all__ = ["LogConfig", "setup_request_values"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

#: Keys of a whole setup request that are ours; everything else belongs to the engine.
_SETUP_KEYS = ("le_log_key", "log_config", "secrets", "mtls_config")


def _hidden(value: object) -> str:
    return "'***'" if value else repr(value)


def _bool_check(name: str) -> Callable[[object, object, object], None]:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise ConfigError(
                f"{name} must be true or false, got {value!r} ({type(value).__name__}); "
                "use a JSON/YAML boolean, not a string"
            )

    return check


def _bool_field(name: str) -> Any:
    return attrs.field(default=False, validator=_bool_check(name))


def _seconds_field(name: str, default: float) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"{name} must be a positive, finite number of seconds, got {value!r}")

    return attrs.field(default=default, validator=check)


def _str_field(name: str, *, secret: bool = False) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {type(value).__name__}")

    return attrs.field(default="", validator=check, repr=_hidden if secret else True)


def _normalise_url(value: object) -> object:
    """Strip one trailing ``/`` (docs/protocol.md#common-rules), but not the one of a bare ``scheme://``."""
    if isinstance(value, str) and value.endswith("/") and not value.endswith("://"):
        return value[:-1]
    return value


def _check_url(_inst: object, _attr: object, value: object) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"url must be a string, got {type(value).__name__}")
    if not value:
        return  # no log service: the file store is used
    if "://" not in value:
        raise ConfigError(f"url {value!r} has no scheme: write it as 'http://{value}' or 'https://{value}'")
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in ("http", "https"):
        raise ConfigError(f"url {value!r} must start with http:// or https://, not {scheme}://")
    host = rest.split("/", 1)[0]
    if not host or host.startswith(":"):
        raise ConfigError(f"url {value!r} has no host: e.g. 'http://log-service:8080'")
    if "?" in rest or "#" in rest:
        raise ConfigError(f"url {value!r} must not carry a query or fragment; lelog adds its own")


def _check_verify(_inst: object, _attr: object, value: object) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"verify must be true, false, or the path of a CA bundle file or directory, got {value!r}"
        )
    if not os.path.exists(value):
        raise ConfigError(f"verify: CA bundle {value!r} does not exist; give an existing file or directory")


def _pem(name: str, value: Optional[str]) -> Optional[bytes]:
    """Decode base64 PEM (the seed's form) or accept PEM text as it is."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a base64-encoded PEM string, got {type(value).__name__}")
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is not valid base64; give the base64 of a PEM file") from None
    if b"-----BEGIN" not in raw:
        raise ConfigError(f"{name} decodes from base64 but is not PEM (no '-----BEGIN' line)")
    return raw


def _check_cert(inst: LogConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    _pem(attribute.name, value)  # type: ignore[arg-type]


def _to_secrets(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigError('secrets must be a list of strings, not one string; wrap it: ["..."]')
    if isinstance(value, Mapping):
        raise ConfigError("secrets must be a list of strings, not an object")
    if not isinstance(value, Iterable):
        raise ConfigError(f"secrets must be a list of strings, got {type(value).__name__}")
    items: tuple[object, ...] = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"secrets must hold only strings, found {type(item).__name__}")
    return items  # type: ignore[return-value]  # checked item by item above


def _check_sanitize(_inst: object, _attr: object, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigError('sanitize_config must be an object like {"sanitize_patterns_content": "<base64>"}')
    unknown = set(value) - {"sanitize_patterns_content"}
    if unknown:
        raise ConfigError(
            f"sanitize_config: unknown key(s) {sorted(unknown)}; the only key is sanitize_patterns_content"
        )
    content = value.get("sanitize_patterns_content", "")
    if not isinstance(content, str):
        raise ConfigError("sanitize_config.sanitize_patterns_content must be a base64 string")
    try:
        Masker(patterns=decode_sanitize_patterns(content))
    except ValueError as exc:
        raise ConfigError(f"sanitize_config.sanitize_patterns_content: {exc}") from None


@attrs.frozen(slots=True)
class LogConfig:
    """Where the log service is and how to reach it; immutable, validated when built.

    ``url=""`` means no log service: ``lelog`` then writes to its local file store.
    """

    url: str = attrs.field(default="", converter=_normalise_url, validator=_check_url)
    account_id: str = _str_field("account_id")
    token: str = _str_field("token", secret=True)
    indirect_upload: bool = _bool_field("indirect_upload")
    trim_new_line_suffix: bool = _bool_field("trim_new_line_suffix")
    skip_opening_stream: bool = _bool_field("skip_opening_stream")
    skip_closing_stream: bool = _bool_field("skip_closing_stream")
    dual_logging_enabled: bool = _bool_field("dual_logging_enabled")
    sanitize_config: Optional[Mapping[str, str]] = attrs.field(  # type: ignore[assignment]
        default=None, validator=_check_sanitize
    )
    #: Strings to mask in every line (the setup request's ``secrets``).
    secrets: tuple[str, ...] = attrs.field(default=(), converter=_to_secrets, repr=_hidden)
    #: Client certificate and key for mTLS: base64 PEM as in ``mtls_config``, or PEM text.
    client_cert: Optional[str] = attrs.field(default=None, validator=_check_cert, repr=_hidden)
    client_cert_key: Optional[str] = attrs.field(default=None, validator=_check_cert, repr=_hidden)
    #: TLS verification: True (system/certifi CAs), False, or a CA bundle path.
    verify: Union[bool, str] = attrs.field(default=True, validator=_check_verify)
    #: Honour HTTP(S)_PROXY / NO_PROXY / SSL_CERT_FILE from the environment, as httpx does.
    trust_env: bool = attrs.field(default=True, validator=_bool_check("trust_env"))
    #: The default stream key of a setup request (``le_log_key``); may be empty.
    le_log_key: str = _str_field("le_log_key")
    connect_timeout: float = _seconds_field("connect_timeout", 5.0)
    read_timeout: float = _seconds_field("read_timeout", 10.0)
    write_timeout: float = _seconds_field("write_timeout", 10.0)
    pool_timeout: float = _seconds_field("pool_timeout", 5.0)
    #: Total time for one call, retries included: opening, writing/closing, uploading.
    open_deadline: float = _seconds_field("open_deadline", 10.0)
    call_deadline: float = _seconds_field("call_deadline", 15.0)
    upload_deadline: float = _seconds_field("upload_deadline", 60.0)
    #: The longest single wait between two attempts.
    max_retry_wait: float = _seconds_field("max_retry_wait", 30.0)
    max_attempts: int = attrs.field(default=10)

    @max_attempts.validator
    def _check_attempts(self, _attr: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"max_attempts must be a whole number >= 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.url and not self.account_id:
            raise ConfigError("account_id is required when url is set (the service stores logs per account)")
        if self.url and not self.token:
            raise ConfigError("token is required when url is set (sent as X-Harness-Token)")
        if bool(self.client_cert) != bool(self.client_cert_key):
            raise ConfigError("client_cert and client_cert_key go together: give both or neither")

    # -- derived values ---------------------------------------------------------------------

    @property
    def client_cert_pem(self) -> Optional[bytes]:
        return _pem("client_cert", self.client_cert)

    @property
    def client_cert_key_pem(self) -> Optional[bytes]:
        return _pem("client_cert_key", self.client_cert_key)

    @property
    def sanitize_patterns(self) -> list[str]:
        if not self.sanitize_config:
            return []
        return decode_sanitize_patterns(self.sanitize_config.get("sanitize_patterns_content", ""))

    def masker(self) -> Masker:
        """The masker for this config's secrets and sanitize patterns."""
        return Masker(self.secrets, self.sanitize_patterns)

    def evolve(self, **changes: Any) -> LogConfig:
        """A copy with ``changes`` applied and validated (unknown names are reported)."""
        _reject_unknown(changes, "LogConfig")
        return attrs.evolve(self, **changes)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "log_config") -> LogConfig:
        """Build from a plain mapping, reporting unknown keys with a suggestion."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be an object, got {type(values).__name__}")
        _reject_unknown(values, where)
        return cls(**values)

    @classmethod
    def from_setup_request(cls, obj: Mapping[str, Any]) -> LogConfig:
        """Accept the seed's whole setup request, or only its ``log_config``.

        A whole request is recognised by its ``log_config`` key; of its other keys only
        ``le_log_key``, ``secrets`` and ``mtls_config`` are read (the rest is the engine's).
        """
        return cls(**setup_request_values(obj))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> LogConfig:
        """Read ``LELOG_<FIELD>`` variables (``LELOG_URL``, ``LELOG_TOKEN``, ...).

        ``overrides`` win over the environment; a value of ``None`` there means "not given".
        ``LELOG_SECRETS`` holds one secret per line; booleans take 1/0, true/false, yes/no.
        """
        env = os.environ if environ is None else environ
        _reject_unknown(overrides, "LogConfig")
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            raw = env.get("LELOG_" + field.name.upper())
            if raw is not None:
                values[field.name] = _parse_env(field.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def setup_request_values(obj: object, *, where: str = "the setup request") -> dict[str, Any]:
    """The ``LogConfig`` values a setup request (or its ``log_config``) gives, by field name.

    Unknown keys and malformed parts are reported here; the values themselves are checked
    when a ``LogConfig`` is built from them, possibly merged with flags or the environment
    first (a request without a token is fine when ``LELOG_TOKEN`` has it).
    """
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(obj).__name__}")
    if "log_config" not in obj:
        _reject_unknown(obj, where)
        return dict(obj)
    log_config = obj["log_config"] if obj["log_config"] is not None else {}
    if not isinstance(log_config, Mapping):
        raise ConfigError(f"{where}: log_config must be an object")
    _reject_unknown(log_config, "log_config")
    values: dict[str, Any] = dict(log_config)
    for name in ("le_log_key", "secrets"):
        if obj.get(name) is not None:
            values[name] = obj[name]
    mtls = obj.get("mtls_config")
    if mtls:
        if not isinstance(mtls, Mapping):
            raise ConfigError(f"{where}: mtls_config must be an object with client_cert and client_cert_key")
        unknown = set(mtls) - {"client_cert", "client_cert_key"}
        if unknown:
            raise ConfigError(
                f"mtls_config: unknown key(s) {sorted(unknown)}; expected client_cert, client_cert_key"
            )
        values["client_cert"] = mtls.get("client_cert") or None
        values["client_cert_key"] = mtls.get("client_cert_key") or None
    return values


def _reject_unknown(values: Mapping[str, Any], where: str) -> None:
    known = _FIELD_NAMES
    unknown = [k for k in values if k not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), sorted(known), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(
        f"{where}: unknown key(s) {', '.join(hints)}; known keys are {', '.join(sorted(known))}"
    )


def _parse_bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"LELOG_{name.upper()} must be true or false (1/0, yes/no), got {raw!r}")


def _parse_number(kind: Callable[[str], Any], name: str, raw: str) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ConfigError(f"LELOG_{name.upper()} must be a number, got {raw!r}") from None


def _parse_env(name: str, raw: str) -> Any:
    if name in _BOOL_FIELDS:
        return _parse_bool(name, raw)
    if name == "verify":
        text = raw.strip().lower()
        return _parse_bool(name, raw) if text in _TRUE | _FALSE else raw
    if name == "max_attempts":
        return _parse_number(int, name, raw)
    if name in _FLOAT_FIELDS:
        return _parse_number(float, name, raw)
    if name == "secrets":
        return [line for line in raw.splitlines() if line.strip()]
    if name == "sanitize_config":
        return {"sanitize_patterns_content": raw.strip()}
    return raw


_FIELD_NAMES = frozenset(f.name for f in attrs.fields(LogConfig))
_BOOL_FIELDS = frozenset(
    f.name for f in attrs.fields(LogConfig) if isinstance(f.default, bool) and f.name != "verify"
)
_FLOAT_FIELDS = frozenset(
    f.name
    for f in attrs.fields(LogConfig)
    if f.name.endswith(("_timeout", "_deadline")) or f.name == "max_retry_wait"
)
