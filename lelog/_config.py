"""``LogConfig``: where the log service is and how to talk to it.

The field names are the JSON names of the setup request's ``log_config``
(docs/protocol.md#setup-request), so a setup request is accepted as it is.  Every value is
checked when the config is built: a mistake is a ``ConfigError`` naming the field and the fix,
never a failure later on a worker thread.
Secrets (token, secrets, key material) never appear in ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import logging
import math
import os
import re
import ssl
import urllib.parse
from typing import Any, Callable, Collection, Iterable, Mapping, Optional, Union

import attrs

from ._diagnostics import logger as diagnostics
from ._exceptions import ConfigError
from ._masking import Masker, decode_sanitize_patterns
from ._tls import tls_context

__all__ = [
    "CONFIG_FIELDS",
    "ENV_VARIABLES",
    "MAX_SECONDS",
    "WRITER_ENV_OPTIONS",
    "LogConfig",
    "check_level",
    "check_positive",
    "reject_unknown",
    "resolve_config",
    "setup_request_values",
    "warn_env_typos",
    "writer_options_from_env",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
#: Only these words turn TLS verification off: an empty or blank value is a mistake.
_VERIFY_TRUE = frozenset({"1", "true", "yes"})
_VERIFY_FALSE = frozenset({"0", "false", "no"})

#: The longest timeout or deadline: one week.  Far below what ``threading`` waits can hold
#: (``threading.TIMEOUT_MAX``), so no exit hook meets an ``OverflowError``.
MAX_SECONDS = 7 * 24 * 3600.0

#: Control characters and whitespace, which no url may hold (a ``\n`` would end a header).
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f]")

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


def check_positive(name: str, value: object, *, whole: bool = False, maximum: float = math.inf) -> None:
    """The one check of a positive number (``whole``: an int) for every option that takes one.

    Seconds get ``maximum=MAX_SECONDS``; a ``ConfigError`` names the field and what fits.
    """
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not 0 < value <= maximum:  # type: ignore[operator]
        what = "a whole number > 0" if whole else "a positive number"
        if maximum == MAX_SECONDS:
            what = f"a positive number of seconds, at most {MAX_SECONDS:g} (one week)"
        elif maximum < math.inf:
            what += f", at most {maximum:g}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def check_level(value: object, name: str = "level") -> int:
    """A logging level from a name (any case) or a number; ``ConfigError`` otherwise."""
    if isinstance(value, str):
        number = logging.getLevelName(value.strip().upper())
        if isinstance(number, int):
            return number
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(
        f"{name} must be a level name or number (DEBUG, INFO, WARNING, ERROR, CRITICAL, or e.g. 20), "
        f"got {value!r}"
    )


def _seconds_field(name: str, default: float) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        check_positive(name, value, maximum=MAX_SECONDS)

    return attrs.field(default=default, validator=check)


def _str_field(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {type(value).__name__}")

    return attrs.field(default="", validator=check)


def _strip_token(value: object) -> object:
    """Surrounding whitespace and a final newline (a token read from a file) are not the token."""
    return value.strip() if isinstance(value, str) else value


def _check_token(_inst: object, _attr: object, value: object) -> None:
    # Never show the token, nor the offending character: say where and what kind it is.
    if not isinstance(value, str):
        raise ConfigError(f"token must be a string, got {type(value).__name__}")
    for i, char in enumerate(value):
        if not 0x21 <= ord(char) <= 0x7E:
            kind = "a non-ASCII character" if ord(char) > 0x7E else "whitespace or a control character"
            raise ConfigError(
                f"token: character {i + 1} of {len(value)} is {kind}; a token is visible ASCII "
                "(no spaces, line breaks or accents): check how it was copied or read"
            )


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
    bad = _URL_FORBIDDEN.search(value)
    if bad:
        raise ConfigError(
            f"url {value!r} holds a space or control character (at {bad.start() + 1}); "
            "check how it was set (a trailing newline from a file?)"
        )
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
    if "@" in host:  # the url is not shown: what precedes the '@' may be a password
        raise ConfigError("url must not carry a user or password ('user:pw@host'); the token authenticates")
    try:
        port = urllib.parse.urlsplit(value).port  # a ValueError for a port out of range or not a number
    except ValueError:
        port = 0
    if port == 0 or host.endswith(":"):
        raise ConfigError(
            f"url {value!r} has a bad port: give a number from 1 to 65535, e.g. 'http://log-service:8080'"
        )


def _check_verify(_inst: object, _attr: object, value: object) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"verify must be true, false, or the path of a CA bundle file or directory, got {value!r}; "
            "an empty value never turns verification off (LELOG_VERIFY=false does)"
        )
    if not os.path.exists(value):
        raise ConfigError(
            f"verify: CA bundle {value!r} does not exist; give an existing file or directory, "
            "or true/false (LELOG_VERIFY: true, false, 1, 0, yes, no)"
        )


def _pem(name: str, value: Optional[str]) -> Optional[bytes]:
    """Decode base64 PEM (the setup request's form) or accept PEM text as it is."""
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
    reject_unknown(value, ("sanitize_patterns_content",), "sanitize_config")
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
    #: Stripped of surrounding whitespace; a secret of every stream, masked in every line.
    token: str = attrs.field(default="", converter=_strip_token, validator=_check_token, repr=_hidden)
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
    #: The password of an encrypted ``client_cert_key``; a credential, masked like the token.
    client_cert_key_password: Optional[str] = attrs.field(default=None, repr=_hidden)
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
    #: Built once with the config: masks the credentials, secrets and patterns.
    _masker: Masker = attrs.field(init=False, repr=False, eq=False)

    @client_cert_key_password.validator
    def _check_password(self, _attr: object, value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"client_cert_key_password must be a string (the password of an encrypted "
                f"client_cert_key), got {type(value).__name__}"
            )

    @max_attempts.validator
    def _check_attempts(self, _attr: object, value: object) -> None:
        check_positive("max_attempts", value, whole=True, maximum=1_000_000)

    def __attrs_post_init__(self) -> None:
        if self.url and not self.account_id:
            raise ConfigError("account_id is required when url is set (the service stores logs per account)")
        if self.url and not self.token:
            raise ConfigError("token is required when url is set (sent as X-Harness-Token)")
        if bool(self.client_cert) != bool(self.client_cert_key):
            raise ConfigError("client_cert and client_cert_key go together: give both or neither")
        if self.client_cert_key_password and not self.client_cert_key:
            raise ConfigError(
                "client_cert_key_password is for an encrypted client_cert_key: give the key too"
            )
        object.__setattr__(
            self, "_masker", Masker(self.secrets, self.sanitize_patterns, credentials=self.credentials)
        )
        if self.url.lower().startswith("https://"):
            self.tls_context()  # bad TLS material fails here; the context is cached for clients

    # -- derived values ---------------------------------------------------------------------

    @property
    def credentials(self) -> list[str]:
        """The configuration's own secrets: the token, the client key (as given and as the
        base64 lines of its PEM body) and its password.  Masked in every line and error text."""
        found = [value for value in (self.token, self.client_cert_key_password) if value]
        if self.client_cert_key:
            found.append(self.client_cert_key)
            pem = self.client_cert_key_pem or b""
            found += [
                line
                for line in pem.decode("ascii", "replace").splitlines()
                if line.strip() and not line.startswith("-----")
            ]
        return found

    def tls_context(self) -> ssl.SSLContext:
        """The shared ``ssl.SSLContext`` for this config's TLS settings (built on first use)."""
        return tls_context(
            self.verify,
            self.client_cert_pem,
            self.client_cert_key_pem,
            self.client_cert_key_password,
            trust_env=self.trust_env,
        )

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

    def literal_secrets(self) -> list[str]:
        """The literal secrets the masker will look for, which a forced break of a long line
        must not split (two halves would each escape the masker).  A superset is harmless (a
        break only moves earlier), so this is every stripped line of the secrets and the token."""
        texts = [*self.secrets, self.token or ""]
        return [part.strip() for text in texts for part in text.split("\n") if len(part.strip()) >= 2]

    def masker(self) -> Masker:
        """The masker for this config's credentials, secrets and sanitize patterns (shared)."""
        return self._masker

    def scrub(self, error: object) -> str:
        """The text of ``error`` with every credential and secret masked: see ``Masker.scrub``."""
        return self._masker.scrub(error)

    def evolve(self, **changes: Any) -> LogConfig:
        """A copy with ``changes`` applied and validated (unknown names are reported)."""
        reject_unknown(changes, CONFIG_FIELDS, "LogConfig")
        return attrs.evolve(self, **changes)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "log_config") -> LogConfig:
        """Build from a plain mapping, reporting unknown keys with a suggestion."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be an object, got {type(values).__name__}")
        reject_unknown(values, CONFIG_FIELDS, where)
        return cls(**values)

    @classmethod
    def from_setup_request(cls, obj: Mapping[str, Any]) -> LogConfig:
        """Accept a whole setup request, or only its ``log_config``.

        A whole request is recognised by its ``log_config`` key; of its other keys only
        ``le_log_key``, ``secrets`` and ``mtls_config`` are read (the rest is the engine's).
        """
        return cls(**setup_request_values(obj))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> LogConfig:
        """Read ``LELOG_<FIELD>`` variables (``LELOG_URL``, ``LELOG_TOKEN``, ...).

        ``overrides`` win over the environment, whose variables for them are not read at all
        (a bad ``LELOG_VERIFY`` does not matter when ``verify`` is given); a value of
        ``None`` there means "not given".  ``LELOG_SECRETS`` is a JSON list of strings when
        it starts with ``[``, else one secret per line; booleans take 1/0, true/false,
        yes/no; ``LELOG_VERIFY`` takes true/false (1/0, yes/no) or a CA bundle path, never
        blank.  The stream key is ``LELOG_KEY`` (``LELOG_LE_LOG_KEY`` is accepted too; both
        set and different is a ``ConfigError``).  An unknown ``LELOG_*`` variable that looks
        like a misspelt known one is warned about once (``warn_env_typos``).
        """
        env = os.environ if environ is None else environ
        reject_unknown(overrides, CONFIG_FIELDS, "LogConfig")
        given = {k: v for k, v in overrides.items() if v is not None}
        warn_env_typos(env)
        values: dict[str, Any] = {}
        for name in sorted(CONFIG_FIELDS - {"le_log_key"} - given.keys()):  # the key: _env_key
            raw = env.get("LELOG_" + name.upper())
            if raw is not None:
                values[name] = _parse_env(name, raw)
        if "le_log_key" not in given:
            key = _env_key(env)
            if key is not None:
                values["le_log_key"] = key
        values.update(given)
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
        reject_unknown(obj, CONFIG_FIELDS, where)
        return dict(obj)
    log_config = obj["log_config"] if obj["log_config"] is not None else {}
    if not isinstance(log_config, Mapping):
        raise ConfigError(f"{where}: log_config must be an object")
    reject_unknown(log_config, CONFIG_FIELDS, "log_config")
    values: dict[str, Any] = dict(log_config)
    for name in ("le_log_key", "secrets"):
        if obj.get(name) is not None:
            values[name] = obj[name]
    mtls = obj.get("mtls_config")
    if mtls:
        if not isinstance(mtls, Mapping):
            raise ConfigError(f"{where}: mtls_config must be an object with client_cert and client_cert_key")
        reject_unknown(mtls, ("client_cert", "client_cert_key"), "mtls_config")
        values["client_cert"] = mtls.get("client_cert") or None
        values["client_cert_key"] = mtls.get("client_cert_key") or None
    return values


def resolve_config(
    config: Union[LogConfig, Mapping[str, Any], None] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    **values: Any,
) -> LogConfig:
    """The one configuration resolver of the CLI, ``StreamHandler`` and ``log_stream``.

    ``values`` (flags, keyword arguments; None means not given) win over ``config`` (a setup
    request or its ``log_config``), which wins over the ``LELOG_*`` environment.  A
    ``LogConfig`` is complete as it is: ``values`` are applied to it, the environment is not read.
    """
    given = {k: v for k, v in values.items() if v is not None}
    if isinstance(config, LogConfig):
        return config.evolve(**given) if given else config
    if config is None or isinstance(config, Mapping):
        from_request = setup_request_values(config) if config is not None else {}
        return LogConfig.from_env(environ, **{**from_request, **given})
    raise ConfigError(
        f"config must be a LogConfig, a setup request or its log_config (an object), got {type(config).__name__}"
    )


def reject_unknown(values: Mapping[str, Any], known: Collection[str], where: str) -> None:
    """The one unknown-option check: a ``ConfigError`` naming each unknown key, with the
    closest known one as a suggestion, and listing what is known."""
    unknown = [k for k in values if k not in known]
    if not unknown:
        return
    names = sorted(known)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), names, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(f"{where}: unknown option(s) {', '.join(hints)}; known: {', '.join(names)}")


def _env_key(env: Mapping[str, str]) -> Optional[str]:
    """The stream key from ``LELOG_KEY`` or ``LELOG_LE_LOG_KEY``; both and different fail."""
    short, long = env.get("LELOG_KEY"), env.get("LELOG_LE_LOG_KEY")
    if short is not None and long is not None and short != long:
        raise ConfigError("LELOG_KEY and LELOG_LE_LOG_KEY are both set and differ; set only LELOG_KEY")
    return short if short is not None else long


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


def _parse_secrets(raw: str) -> list[str]:
    """``LELOG_SECRETS``: a JSON list of strings (the setup request's form) when it starts
    with ``[``, else one secret per line.  A value that starts with ``[`` and is not such a
    list is a mistake, never one literal secret: the real ones would go unmasked."""
    if not raw.lstrip().startswith("["):
        return [line for line in raw.splitlines() if line.strip()]
    how = (
        'write it as ["first", "second"], or give one secret per line (a secret that itself '
        'starts with "[" goes inside a JSON list)'
    )
    try:
        value = json.loads(raw)
    except ValueError as exc:  # its text quotes no part of the value: only where it failed
        where = f" at character {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"LELOG_SECRETS starts with '[' but is not valid JSON{where}; {how}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"LELOG_SECRETS starts with '[' but is not a JSON list of strings; {how}")
    return value


def _parse_env(name: str, raw: str) -> Any:
    if name in _BOOL_FIELDS:
        return _parse_bool(name, raw)
    if name == "verify":
        text = raw.strip().lower()
        if not text:
            raise ConfigError(
                f"LELOG_VERIFY is {'empty' if not raw else 'blank'}: set it to true, false or a CA "
                "bundle path (an unset variable in LELOG_VERIFY=$CA_BUNDLE does this); "
                "verification is never turned off by an empty value"
            )
        return text in _VERIFY_TRUE if text in _VERIFY_TRUE | _VERIFY_FALSE else raw
    if name == "max_attempts":
        return _parse_number(int, name, raw)
    if name in _FLOAT_FIELDS:
        return _parse_number(float, name, raw)
    if name == "secrets":
        return _parse_secrets(raw)
    if name == "sanitize_config":
        return {"sanitize_patterns_content": raw.strip()}
    return raw


#: The names ``LogConfig`` takes (its internal fields are not options).
CONFIG_FIELDS = frozenset(f.name for f in attrs.fields(LogConfig) if f.init)
_BOOL_FIELDS = frozenset(
    f.name for f in attrs.fields(LogConfig) if isinstance(f.default, bool) and f.name != "verify"
)
_FLOAT_FIELDS = frozenset(
    f.name
    for f in attrs.fields(LogConfig)
    if f.name.endswith(("_timeout", "_deadline")) or f.name == "max_retry_wait"
)

#: The writer options (``WriterOptions``) a ``LELOG_<OPTION>`` variable may set, each with
#: whether it is a whole number (the rest are seconds).  ``spool_dir`` is read by the writer
#: itself, from ``LELOG_SPOOL_DIR``.
WRITER_ENV_OPTIONS: Mapping[str, bool] = {
    "flush_interval": False,
    "max_batch_lines": True,
    "max_batch_bytes": True,
    "max_pending_lines": True,
    "max_pending_bytes": True,
    "history_bytes": True,
    "close_timeout": False,
    "max_partial": True,
    "spool_fsync_interval": False,
}

#: Every environment variable lelog reads: the ``LogConfig`` fields, the stream key, the
#: writer options, the file store's, the spool's, the runtime directory and the trace context.
ENV_VARIABLES = frozenset(
    {"LELOG_" + name.upper() for name in CONFIG_FIELDS | WRITER_ENV_OPTIONS.keys()}
    | {"LELOG_KEY", "LELOG_LE_LOG_KEY", "LELOG_HOME", "LELOG_STORE_MAX_BYTES", "LELOG_SPOOL_DIR"}
    | {"LELOG_RUNTIME_DIR", "LELOG_TRACE_CONTEXT"}
)


def writer_options_from_env(environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The writer options set by ``LELOG_<OPTION>`` variables (``LELOG_FLUSH_INTERVAL``,
    ``LELOG_CLOSE_TIMEOUT``, ``LELOG_HISTORY_BYTES``, ...), checked as the keyword
    arguments are; a bad value is a ``ConfigError`` naming the variable.  Explicit keyword
    arguments win over these."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for name, whole in WRITER_ENV_OPTIONS.items():
        variable = "LELOG_" + name.upper()
        raw = env.get(variable)
        if raw is None:
            continue
        text = raw.strip()
        try:
            value: float = int(text) if whole else float(text)
        except ValueError:
            what = "a whole number" if whole else "a number of seconds"
            raise ConfigError(f"{variable} must be {what}, got {raw!r}") from None
        check_positive(variable, value, whole=whole, maximum=math.inf if whole else MAX_SECONDS)
        options[name] = value
    return options


#: Misspelt variables already warned about, so each is warned about once per process: a
#: ``dict.setdefault`` decides who warns, atomically, with no lock to renew after a fork.
_typos_warned: dict[str, object] = {}


def warn_env_typos(environ: Mapping[str, str]) -> None:
    """Warn once per process about each unknown ``LELOG_*`` variable that looks like a
    misspelt known one (``LELOG_ACOUNT_ID``), naming the one it probably means: lelog does
    not read it, and the setting it was meant for is silently missing otherwise."""
    known = {name[len("LELOG_") :]: name for name in ENV_VARIABLES}
    for variable in environ:
        if (
            not variable.upper().startswith("LELOG_")
            or variable in ENV_VARIABLES
            or variable in _typos_warned
        ):
            continue
        close = difflib.get_close_matches(variable[len("LELOG_") :].upper(), known, n=1)
        if not close:
            continue  # not ours to judge: some other tool's LELOG_ variable
        mine = object()
        if _typos_warned.setdefault(variable, mine) is mine:
            diagnostics.warning(
                "lelog: %s is not a variable lelog reads; did you mean %s?", variable, known[close[0]]
            )
