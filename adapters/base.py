"""The seam between the engine and the archives.

The engine hands an adapter a :class:`Target` and an :class:`HttpPort`; the adapter builds requests
(pure functions), sends them through the port (which owns rate limits, retries and timeouts) and
returns a :class:`Fetched` body. Parsing and reduction are pure functions the engine runs in a
process pool, so everything crossing that boundary is small and picklable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, runtime_checkable
from urllib.parse import urlencode

import numpy as np
import pandas as pd

#: a raw table: a DataFrame, or a NumPy structured array (one field per column, text as ``S<n>``
#: UTF-8 bytes: the layout the raw HDF5 file stores)
RawTable: TypeAlias = pd.DataFrame | np.ndarray[Any, Any]
#: what an adapter's ``reduce`` is handed for a raw table read back from its file
RawTableKind: TypeAlias = Literal["frame", "records"]


@dataclass(frozen=True, slots=True)
class Target:
    """One catalog row, as the engine hands it to an adapter."""

    name: str
    ra_deg: float
    dec_deg: float
    mag: float | None = None
    pmra_mas_yr: float = 0.0
    pmdec_mas_yr: float = 0.0
    index: int | None = None
    # archive identifiers known in advance, e.g. ``(("tic", "261136679"),)``: an adapter that
    # finds one uses it instead of matching by position
    ids: tuple[tuple[str, str], ...] = ()

    def archive_id(self, key: str) -> str | None:
        """The identifier ``key`` given with this target, or None."""
        return next((value for name, value in self.ids if name == key), None)

    @property
    def pm_mas_yr(self) -> float:
        """Total proper motion (mas/yr); 0 when unknown."""
        total = math.hypot(self.pmra_mas_yr or 0.0, self.pmdec_mas_yr or 0.0)
        return 0.0 if math.isnan(total) else total


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request, built by a pure function and sent by the port."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stream_to: str | None = None  # a path: the port streams the body there instead of memory
    # Checks a streamed file (off the event loop) before the port calls the request done; what it
    # returns comes back as ``Response.checked``. A MalformedResponse from it is retried like a
    # cut connection, so a file broken under a complete HTTP answer is fetched again by the port.
    check: Callable[[str], Any] | None = None

    def display_url(self) -> str:
        """The URL with its query string, for messages and logs (never carries credentials)."""
        return f"{self.url}?{urlencode(self.params)}" if self.params else self.url


@dataclass(frozen=True, slots=True)
class Response:
    """What the port hands back for a request that succeeded (2xx)."""

    status: int
    body: bytes
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    checked: Any = None  # what ``Request.check`` returned for a streamed body


class HttpPort(Protocol):
    """Sends requests for one observatory lane: rate limit, concurrency, retries, timeouts.

    ``scratch_dir`` is the lane's folder for streamed downloads (None: the system's temp folder);
    the engine empties it when a run starts, so files a killed run left behind do not pile up.
    """

    scratch_dir: str | None

    async def send(self, request: Request) -> Response: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """An archive's answer for one target, before parsing.

    ``body is None`` means there is nothing to ask the archive for (``no_data_reason`` says why),
    and the source is stored as "no data" so that it is not asked again.
    """

    target: Target
    body: bytes | None
    url: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    no_data_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReducedLightcurve:
    """One reduced lightcurve: a table plus the facts about it the database indexes.

    ``data`` is a DataFrame or a NumPy structured array (one field per column, text as ``S<n>``
    UTF-8 bytes: what the HDF5 file stores). The built-in ZTF reducer gives structured arrays,
    which the pool writes and the analysis reads without a DataFrame in between.
    """

    data: pd.DataFrame | np.ndarray[Any, Any]
    filter: str
    time_start_mjd: float
    time_end_mjd: float
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Adapter(Protocol):
    """One archive. Adapters never open sessions, retry, sleep on their own, or store anything.

    An adapter may set the class attribute ``raw_table = "records"`` (see :func:`raw_table_kind`):
    a raw table read back from its file (a re-analysis) is then handed to :meth:`reduce` as the
    stored structured array; without it, as a DataFrame. It is not part of the protocol, so that
    adapters written before it (TESS, third parties) still are adapters.
    """

    name: ClassVar[str]

    def no_data_reason(self, target: Target) -> str | None:
        """Why the archive cannot have data for ``target`` (pure), or None when it may."""
        ...

    async def fetch(self, target: Target, http: HttpPort) -> Fetched:
        """Ask the archive for ``target``'s photometry."""
        ...

    def parse(self, fetched: Fetched) -> RawTable:
        """Turn the archive's body into the raw table, a DataFrame or a structured array (pure;
        runs in the process pool). The raw file stores it as a structured array."""
        ...

    def reduce(self, raw: RawTable, target: Target) -> list[ReducedLightcurve]:
        """Reduce a raw table to lightcurves (pure; runs in the process pool).

        ``raw`` is what :meth:`parse` returned, or, on a re-analysis, the table read back from the
        raw file: a structured array if the adapter's ``raw_table`` is ``"records"``, else a
        DataFrame (text as ``str``). Never empty.
        """
        ...


def raw_table_kind(adapter: object) -> RawTableKind:
    """How ``adapter`` takes a stored raw table: its ``raw_table`` attribute; ``"frame"`` without one."""
    return "records" if getattr(adapter, "raw_table", "frame") == "records" else "frame"


@runtime_checkable
class LooksUpIds(Protocol):
    """An adapter that can find a star by its own archive identifier (TESS: a TIC id)."""

    id_key: ClassVar[str]  # the ``Target.ids`` key its fetch honours, e.g. "tic"

    async def lookup_id(self, value: str, http: HttpPort) -> Target:
        """The star with this identifier, as a target carrying it in ``ids``."""
        ...
