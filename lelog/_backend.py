"""What the writer talks to: the log service, the local file store, or a test double."""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

from ._client import LineLike, LogServiceClient
from ._clock import Deadline
from ._config import LogConfig, resolve_config
from ._exceptions import ConfigError
from ._retry import RetryPolicy

__all__ = [
    "ONE_ATTEMPT",
    "Backend",
    "Prepares",
    "StoredLogs",
    "keeps_every_line",
    "make_backend",
    "retry_policy",
    "stream_identity",
]

#: What the writer passes as ``retry``: it owns the retries, a backend makes one attempt.
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


@runtime_checkable
class Backend(Protocol):
    """The calls a writer makes, as ordinary method calls (docs/writer.md#backend).

    The writer passes ``deadline`` (a ``Deadline``: the attempt must be over by then; it
    converts to the seconds left with ``float()``) and ``retry=ONE_ATTEMPT``: the writer owns
    the retries, live and at close alike.  A backend without network may ignore both.
    """

    def open_stream(
        self, key: str, *, deadline: Optional[Deadline] = None, retry: Optional[RetryPolicy] = None
    ) -> None: ...

    def write(
        self,
        key: str,
        lines: Sequence[LineLike],
        *,
        deadline: Optional[Deadline] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None: ...

    def upload(
        self,
        key: str,
        lines: Union[Sequence[LineLike], bytes],
        *,
        deadline: Optional[Deadline] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None: ...

    def close_stream(
        self,
        key: str,
        *,
        snapshot: bool = False,
        deadline: Optional[Deadline] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Prepares(Protocol):
    """A backend that readies itself for requests (a client's connection pool and TLS
    context) on the thread that starts a stream, before the writer's worker exists."""

    def prepare(self) -> None: ...


@runtime_checkable
class StoredLogs(Protocol):
    """A backend that gives a key's stored log back (the service, the file store)."""

    def download(self, key: str, **opts: object) -> bytes: ...


def stream_identity(backend: Backend, config: LogConfig, key: str) -> Hashable:
    """What makes two writers write one stream: its far end, account and key.

    The service's URL and account, or the file store's directory; any other backend object
    (a ``MemoryBackend``) is a far end of its own.
    """
    if isinstance(backend, LogServiceClient):
        return ("service", backend.config.url, backend.config.account_id, key)
    from ._filestore import FileStore

    if isinstance(backend, FileStore):
        return ("files", backend.directory, key)
    return ("object", id(backend), key)


def keeps_every_line(backend: Backend) -> bool:
    """Whether the far end fills a stored log's head from the live stream itself (the file
    store keeps every live line), so lines the history evicted are not left out."""
    from ._filestore import FileStore

    return isinstance(backend, FileStore)


def retry_policy(backend: Backend, config: LogConfig) -> RetryPolicy:
    """How the writer retries calls to ``backend``: a client's own policy, else the config's."""
    if isinstance(backend, LogServiceClient):
        return backend.retry
    return RetryPolicy(max_attempts=config.max_attempts, max_wait=config.max_retry_wait)


#: While set (by ``lelog.testing.capture_stream``), it gives the backend of every writer built
#: from a config, in any thread; the writer does not own (close) what it returns.
override: Optional[Callable[[LogConfig], Backend]] = None


def make_backend(target: object) -> tuple[Backend, bool, LogConfig]:
    """The backend for ``target``, whether the caller owns it (and must close it), its config.

    ``target`` is a backend, a ``LogConfig``, a setup request or ``log_config`` dict, or None
    for the ``LELOG_*`` environment.  No ``url`` means the local file store.
    """
    if isinstance(target, Backend):
        config = getattr(target, "config", None)
        return target, False, config if isinstance(config, LogConfig) else LogConfig()
    if target is None or isinstance(target, (LogConfig, Mapping)):
        config = resolve_config(target)  # the same resolution as the handler's and the CLI's
    else:
        raise ConfigError(
            f"expected a LogConfig, a setup-request dict, a backend or None, got {type(target).__name__}"
        )
    if override is not None:
        return override(config), False, config
    if config.url:
        return LogServiceClient(config), True, config
    from ._filestore import FileStore

    return FileStore(config=config), True, config
