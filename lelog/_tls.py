"""TLS contexts, built once per distinct TLS configuration and shared by every client.

Building a context loads a CA bundle (about 20 ms and most of a megabyte for certifi's), so
a process with hundreds of handlers on one service must not build one each.  ``LogConfig``
calls ``tls_context`` for an ``https://`` url when it is built, so bad TLS material is a
``ConfigError`` at configuration and the context is ready (cached) when a client needs it.
"""

from __future__ import annotations

import collections
import os
import ssl
import tempfile
import threading
import warnings
from typing import Optional, Union

import httpx

from . import _lifecycle
from ._diagnostics import logger as diagnostics
from ._exceptions import ConfigError

__all__ = ["tls_context"]

#: Distinct TLS configurations kept; a client keeps its own context alive past eviction.
_CACHE_SIZE = 16

_CacheKey = tuple[
    Union[bool, str], Optional[bytes], Optional[bytes], Optional[str], Optional[str], Optional[str]
]

# Guards _cache.  Held while a context is built (no I/O but reading the CA and key files, no
# logging, no other lock), so two threads never build the same context and it cannot deadlock.
_lock = threading.Lock()
_cache: collections.OrderedDict[_CacheKey, ssl.SSLContext] = collections.OrderedDict()


def _renew_lock_in_child() -> None:
    """A parent thread may have been building a context at the fork: the child's copy of
    the lock would then be held for good, and its first request would wait forever."""
    global _lock
    _lock = threading.Lock()


_lifecycle.after_fork_in_child(_renew_lock_in_child)  # lelog's one fork hook runs it

_UNVERIFIED = (
    "TLS verification is off (verify=false): the token is sent to a server whose certificate "
    "is not checked, so anyone on the way can read it; give a CA bundle path instead"
)


def tls_context(
    verify: Union[bool, str],
    client_cert: Optional[bytes] = None,
    client_key: Optional[bytes] = None,
    key_password: Optional[str] = None,
    *,
    trust_env: bool = True,
) -> ssl.SSLContext:
    """The shared context for these settings; ``ConfigError`` when the material is bad.

    ``verify`` is True (certifi's CAs, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when
    ``trust_env``), False, or a CA bundle file or directory.  The first context built with
    verification off warns (a ``UserWarning`` and a ``lelog`` logger record).
    """
    env = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else (None, None)
    key: _CacheKey = (verify, client_cert, client_key, key_password, *env)
    with _lock:
        context = _cache.get(key)
        if context is not None:
            _cache.move_to_end(key)
            return context
        context = _build(verify, client_cert, client_key, key_password, trust_env)
        _cache[key] = context
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    if verify is False:  # outside the lock: a logging handler may do anything
        warnings.warn(_UNVERIFIED, UserWarning, stacklevel=2)
        diagnostics.warning("lelog: %s", _UNVERIFIED)
    return context


def _build(
    verify: Union[bool, str],
    client_cert: Optional[bytes],
    client_key: Optional[bytes],
    key_password: Optional[str],
    trust_env: bool,
) -> ssl.SSLContext:
    try:
        if isinstance(verify, str):
            if os.path.isdir(verify):
                context = ssl.create_default_context(capath=verify)
            else:
                context = ssl.create_default_context(cafile=verify)
        else:
            context = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
    except (ssl.SSLError, OSError) as exc:
        what = (
            repr(verify)
            if isinstance(verify, str)
            else "the default CA bundle (SSL_CERT_FILE, SSL_CERT_DIR?)"
        )
        raise ConfigError(
            f"verify: {what} could not be loaded as a CA bundle ({_reason(exc)}); "
            "give a PEM file or a directory of hashed PEM certificates"
        ) from None
    if client_cert is not None and client_key is not None:
        _load_client_cert(context, client_cert, client_key, key_password)
    return context


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or type(exc).__name__)


def _load_client_cert(context: ssl.SSLContext, cert: bytes, key: bytes, password: Optional[str]) -> None:
    # ssl loads certificates only from files: write them to private files, load, remove.
    paths = []
    try:
        for pem in (cert, key):
            fd, path = tempfile.mkstemp(prefix="lelog-", suffix=".pem")  # mode 0600
            paths.append(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
        # A password of "" (not None) makes an encrypted key fail at once instead of prompting.
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1], password=password or "")
    except ssl.SSLError as exc:
        if b"ENCRYPTED" in key:  # "BEGIN ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED"
            raise ConfigError(
                "client_cert_key is encrypted and could not be decrypted: give its password as "
                "client_cert_key_password (LELOG_CLIENT_CERT_KEY_PASSWORD), or check it"
            ) from None
        # The reason only ("KEY_VALUES_MISMATCH"), never the text: it could quote the key.
        raise ConfigError(
            f"client_cert/client_cert_key could not be loaded ({exc.reason or 'not PEM'}); "
            "check that the key matches the certificate and both are PEM"
        ) from None
    finally:
        for path in paths:
            os.unlink(path)
