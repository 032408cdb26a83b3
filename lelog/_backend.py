"""What the writer talks to: the log service, the local file store, or a test double."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

from ._client import LineLike, LogServiceClient
from ._config import LogConfig, resolve_config
from ._exceptions import ConfigError

__all__ = ["Backend", "make_backend"]


@runtime_checkable
class Backend(Protocol):
    """The calls a writer needs.  ``opts`` are ``deadline``, ``cancel``, ``on_retry`` and
    ``retry`` as ``LogServiceClient`` takes them; a backend without network may ignore them."""

    def open_stream(self, key: str, **opts: Any) -> None: ...

    def write(self, key: str, lines: Sequence[LineLike], **opts: Any) -> None: ...

    def upload(self, key: str, lines: Union[Sequence[LineLike], bytes], **opts: Any) -> None: ...

    def close_stream(self, key: str, *, snapshot: bool = False, **opts: Any) -> None: ...

    def close(self) -> None: ...


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
