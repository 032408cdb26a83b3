"""The exceptions ``lelog`` raises, as one tree.

::

    LelogError
    ├── ConfigError              bad configuration, raised when it is built (also a ValueError)
    └── LogServiceError          the service (or the way to it) failed a call
        ├── TransportError       no HTTP answer: refused, reset, timed out (status is None)
        │   └── TLSError         the service's certificate was not trusted (never retried)
        ├── AuthError            the service refused the account or token (it answers 400)
        ├── StreamNotFound       the stream was never opened, is closed, or expired
        ├── BlobNotFound         no stored log under that key
        ├── UploadLinkUnsupported  the service has no object storage for upload links
        └── Cancelled            the caller interrupted the call (e.g. the writer is closing)

Only calls raise these.  The logging path (``StreamWriter.write``, ``StreamHandler.emit``)
never raises into the application: it counts and warns instead.
"""

from __future__ import annotations

from typing import ClassVar, Optional

__all__ = [
    "AuthError",
    "BlobNotFound",
    "Cancelled",
    "ConfigError",
    "LelogError",
    "LogServiceError",
    "StreamNotFound",
    "TLSError",
    "TransportError",
    "UploadLinkUnsupported",
]


class LelogError(Exception):
    """Base of every error ``lelog`` raises."""


class ConfigError(LelogError, ValueError):
    """A configuration value is wrong; the message names the field and the fix."""


class LogServiceError(LelogError):
    """A log-service call failed.

    ``status`` is the HTTP status (None when no answer came), ``error_msg`` the service's own
    text from its ``{"error_msg": ...}`` body, ``call`` what was being done, ``attempts`` how
    many times it was tried.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        error_msg: str = "",
        call: str = "",
        attempts: int = 1,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_msg = error_msg
        self.call = call
        self.attempts = attempts
        #: Seconds the service asked us to wait (``Retry-After``), if it said.
        self.retry_after = retry_after

    #: Set on the subclasses whose answer will not change, whatever their status says.
    permanent: ClassVar[bool] = False

    @property
    def retryable(self) -> bool:
        """Whether trying the same call again later could succeed."""
        if self.permanent:
            return False
        if self.status is None:
            return True
        return self.status in (408, 429) or self.status >= 500


class TransportError(LogServiceError):
    """No HTTP answer: the connection failed, was reset, or timed out."""


class TLSError(TransportError):
    """The log service's certificate was not trusted: permanent until someone fixes the
    certificate or the CA bundle, so it is never retried and stops the live stream as an
    ``AuthError`` does."""

    permanent = True


class AuthError(LogServiceError):
    """The service refused the account or token (it answers 400 for these, not 401/403)."""

    permanent = True


class StreamNotFound(LogServiceError):
    """The stream does not exist: never opened, already closed, or expired.

    The service answers ``400`` on a write and ``500`` on a close; both are permanent.
    """

    permanent = True


class BlobNotFound(LogServiceError):
    """No stored log under that key."""


class UploadLinkUnsupported(LogServiceError):
    """The service has no object storage, so it cannot hand out upload links."""

    permanent = True


class Cancelled(LogServiceError):
    """The call was interrupted by its cancel event before it could finish."""

    permanent = True
