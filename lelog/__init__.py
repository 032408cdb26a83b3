"""lelog: stream a program's logs to a Harness-style log service.

Never blocking the program, never hanging its exit, never losing a line without counting it.
"""

from . import (
    integrations,  # a submodule: lelog.integrations.loguru_sink()
    testing,  # a submodule: lelog.testing.capture_stream(), MemoryBackend
)
from ._client import LogServiceClient
from ._config import LogConfig
from ._exceptions import (
    AuthError,
    BlobNotFound,
    Cancelled,
    ConfigError,
    LelogError,
    LogServiceError,
    StreamNotFound,
    TLSError,
    TransportError,
    UploadLinkUnsupported,
)
from ._filestore import FileStore
from ._handler import StreamHandler
from ._job import LogStream, log_stream
from ._line import Line
from ._logfmt import LogfmtFormatter
from ._retry import RetryPolicy
from ._stats import StreamTotals
from ._version import __version__
from ._writer import Stats, StreamWriter, WriterOptions, WriterState

__all__ = [
    "AuthError",
    "BlobNotFound",
    "Cancelled",
    "ConfigError",
    "FileStore",
    "LelogError",
    "Line",
    "LogConfig",
    "LogServiceClient",
    "LogServiceError",
    "LogStream",
    "LogfmtFormatter",
    "RetryPolicy",
    "Stats",
    "StreamHandler",
    "StreamNotFound",
    "StreamTotals",
    "TLSError",
    "StreamWriter",
    "TransportError",
    "UploadLinkUnsupported",
    "WriterOptions",
    "WriterState",
    "__version__",
    "integrations",
    "log_stream",
    "testing",
]
