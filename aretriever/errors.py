"""The exceptions aretriever raises.

Every error derives from :class:`AretrieverError`; a class docstring is its default message.

    AretrieverError
    ├── ConfigError             bad configuration value, file or key
    ├── CatalogError            a catalog cannot be read or a row is unusable
    ├── StoreError              database or HDF5 storage failed
    │   ├── WriteError          a file could not be written completely
    │   └── StorageFault        storage unusable: DATA_ROOT unreadable, the database unreachable
    ├── ScienceError            a science step cannot run on a lightcurve (missing columns, bad bins)
    ├── ExportError             a lightcurve cannot be exported (unknown filter, bad metadata)
    └── FetchError              an archive request failed
        ├── TransientFetchError     worth retrying: timeouts, 429, 5xx, truncated bodies
        │   ├── MalformedResponse   a body that is cut short or garbled
        │   └── RetryAfterTooLong   the archive asked to wait longer than the lane's cap
        └── PermanentFetchError     not worth retrying: 4xx, error pages, bad requests
            ├── ArchiveErrorPage    the archive answered with an HTML/VOTable error page
            └── BodyTooLarge        an answer larger than the lane's size limit

Foreign exceptions (aiohttp, h5py, SQLAlchemy) are mapped once, at the boundary that calls them,
with ``raise ... from exc``; nothing classifies an error by searching its message.
"""

from __future__ import annotations


class AretrieverError(Exception):
    """aretriever failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(AretrieverError):
    """The configuration is invalid."""


class CatalogError(AretrieverError):
    """The catalog cannot be used."""


class StoreError(AretrieverError):
    """Storage failed."""


class WriteError(StoreError):
    """A data file could not be written completely."""


class StorageFault(StoreError):
    """Storage cannot be used: DATA_ROOT is unmounted, not permitted or failing, or no database answers.

    Never taken for missing files: a run that meets it stops (exit 2) and re-fetches nothing.
    """


class ScienceError(AretrieverError, ValueError):
    """A science step cannot run on this lightcurve."""


class ExportError(AretrieverError, ValueError):
    """A lightcurve cannot be exported."""


class FetchError(AretrieverError):
    """An archive request failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        url: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s
        # the ``failures.reason`` to record, when the status or the class alone would not say it
        self.reason = reason


class TransientFetchError(FetchError):
    """The archive failed in a way that is worth retrying."""


class MalformedResponse(TransientFetchError):
    """The archive's answer was cut short or garbled."""


class RetryAfterTooLong(TransientFetchError):
    """The archive asked to wait longer than the lane's ``max_retry_after_s``."""


class PermanentFetchError(FetchError):
    """The archive refused the request; retrying will not help."""


class ArchiveErrorPage(PermanentFetchError):
    """The archive answered with an error page instead of data."""


class BodyTooLarge(PermanentFetchError):
    """The archive's answer is larger than the lane's ``max_body_bytes``."""


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order; ``error`` itself if it is none."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def cause(error: BaseException) -> BaseException:
    """The one error that explains ``error``: a group's first aretriever error, else its first."""
    found = leaves(error)
    ours = [e for e in found if isinstance(e, AretrieverError | KeyboardInterrupt)]
    return (ours or found)[0]
