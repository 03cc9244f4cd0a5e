"""Downloading remote catalogs once: options, the HTTP lane, verification and the on-disk cache.

Downloads go through the same :class:`~aretriever.http.Lane` the observatories use, so a catalog
download gets the project's retry policy (table-tested, ``Retry-After`` aware), rate limit, typed
errors and streaming to disk with a ``Content-Length`` check, with no second HTTP stack to keep.
A body is streamed to a temporary file next to the cache, verified (complete VOTable, no error
status, no row limit reached, at least one row), converted to Parquet under another temporary
name and renamed into place; a reader never sees a half-written cache file, and a cache file that
exists and reads is never downloaded again.

The cache holds Parquet (columnar, footer-indexed): streaming a chunk from row 1,000,000 of the
white-dwarf catalog reads one row group, and checking the cache reads only the footer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import anyio
import pandas as pd

from aretriever.adapters.base import Request, Response
from aretriever.catalogs.formats import (
    ParsedTable,
    query_status_error,
    read_votable,
    row_limit_reason,
    votable_is_complete,
)
from aretriever.errors import CatalogError, FetchError
from aretriever.http import Lane
from aretriever.settings import CatalogConfig, LaneConfig

log = logging.getLogger("aretriever.catalogs.core")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

CATALOGS_ENV: Final = "ARETRIEVER_CATALOGS"
DEFAULT_VIZIER_URL: Final = "https://vizier.cds.unistra.fr"
DEFAULT_GAIA_TAP_URL: Final = "https://gea.esac.esa.int/tap-server/tap"
ROW_GROUP_ROWS: Final = 100_000


def resolve_cache_dir(configured: str | Path | None) -> Path:
    """The catalog cache folder: as configured, else ``$ARETRIEVER_CATALOGS``, else ``./catalogs``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(CATALOGS_ENV)
    return Path(env).expanduser() if env else Path("catalogs")


@dataclass(frozen=True, slots=True)
class RemoteOptions:
    """Where remote catalogs come from and how they are fetched.

    :meth:`from_config` reads fields of the same names from a
    :class:`~aretriever.settings.CatalogConfig` when it has them, so these become configurable as
    soon as the config grows them.
    """

    cache_dir: Path = Path("catalogs")
    vizier_url: str = DEFAULT_VIZIER_URL
    gaia_tap_url: str = DEFAULT_GAIA_TAP_URL
    gaia_query: str | None = None  # the ADQL query of the catalog named "gaia"
    download_timeout_s: float = 3600.0  # one request; the WD catalog is a few hundred MB
    max_attempts: int = 4
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0
    rate_per_s: float = 2.0
    poll_interval_s: float = 1.0  # first wait between two polls of a TAP job; grows x1.5
    poll_max_interval_s: float = 30.0
    poll_deadline_s: float = 3600.0
    tap_max_rows: int | None = None  # sent as MAXREC (None: the archive's default)
    allow_truncated: bool = False  # accept a result cut at a row limit (logged) instead of failing
    pm_epoch_yr: float | None = None  # move positions by proper motion to this epoch when streaming

    @classmethod
    def from_config(cls, cfg: CatalogConfig) -> RemoteOptions:
        """Options from ``cfg`` (fields it has), ``$ARETRIEVER_CATALOGS`` and the defaults."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(cfg, f.name, None)
            # cache_dir goes through resolve_cache_dir (environment fallback, ``~``), not a plain copy.
            if value is not None and f.name != "cache_dir":
                values[f.name] = value
        return cls(cache_dir=resolve_cache_dir(getattr(cfg, "cache_dir", None)), **values)

    def lane_config(self, base_url: str) -> LaneConfig:
        """The lane settings for one catalog archive."""
        return LaneConfig(
            base_url=base_url,
            rate_per_s=self.rate_per_s,
            # A catalog is one long download; parallel requests would only split the bandwidth and the
            # archive's patience.
            max_concurrency=1,
            timeout_s=self.download_timeout_s,
            max_attempts=self.max_attempts,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
        )


@asynccontextmanager
async def open_lane(
    name: str,
    options: RemoteOptions,
    base_url: str,
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep | None = None,
) -> AsyncIterator[Lane]:
    """A lane to one catalog archive, on ``session`` or on a session of its own."""
    cfg = options.lane_config(base_url)
    if session is not None:
        yield Lane(name, cfg, session, sleep=sleep or asyncio.sleep)
        return
    async with aiohttp.ClientSession() as own:
        yield Lane(name, cfg, own, sleep=sleep or asyncio.sleep)


def temp_path(folder: Path, stem: str) -> Path:
    """A fresh hidden name next to the cache (same filesystem, so the final rename is atomic)."""
    return folder / f".{stem}.{secrets.token_hex(4)}.part"


async def send(lane: Lane, request: Request, what: str, archive: str) -> Response:
    """Send through the lane; a failure (after retries) becomes a catalog error naming the archive."""
    try:
        return await lane.send(request)
    except FetchError as exc:
        # "at most": a permanent error (404, 400) is not retried, so fewer attempts may have been made.
        raise CatalogError(
            f"catalog: {what}: {archive} {exc} [gave up after at most {lane.cfg.max_attempts} attempts]"
        ) from exc


async def download(lane: Lane, request: Request, dest: Path, what: str, archive: str) -> None:
    """Stream the answer to ``request`` into ``dest``; nothing is left behind on failure."""
    try:
        await send(lane, replace(request, stream_to=str(dest)), what, archive)
    # BaseException so a cancelled or interrupted download leaves no .part file either.
    except BaseException:
        await anyio.Path(dest).unlink(missing_ok=True)
        raise


def checked_votable(path: Path, what: str, asked_max_rows: int | None, allow_truncated: bool) -> ParsedTable:
    """Parse a downloaded VOTable and refuse it when it is empty, an error, or cut at a row limit."""
    size = path.stat().st_size
    # Checked before parsing: a stream cut mid-table would otherwise fail deep inside astropy, or worse,
    # parse as a shorter table.
    if size == 0 or not votable_is_complete(path):
        raise CatalogError(
            f"catalog: {what}: the download is not a complete VOTable ({size} bytes); not cached"
        )
    parsed = read_votable(path, what)
    status = query_status_error(parsed)
    if status is not None:
        detail = "; ".join(v for k, v in parsed.infos if k.upper() not in {"QUERY_STATUS", "QUERY"})
        raise CatalogError(f"catalog: {what}: the archive answered {status}: {detail}")
    check_rows(parsed, what, asked_max_rows, allow_truncated)
    return parsed


def check_rows(parsed: ParsedTable, what: str, asked_max_rows: int | None, allow_truncated: bool) -> None:
    """Refuse an empty table, and one cut at a row limit unless that is allowed (then say so)."""
    if parsed.frame.empty:
        raise CatalogError(f"catalog: {what}: the archive answered with no rows; not cached")
    reason = row_limit_reason(parsed, asked_max_rows)
    if reason is None:
        return
    if not allow_truncated:
        raise CatalogError(
            f"catalog: {what}: {reason}; the catalog would be incomplete "
            "(raise the limit, or set catalog.allow_truncated to accept it)"
        )
    log.warning("catalog: %s: %s; keeping the truncated catalog (allow_truncated)", what, reason)


def cache_is_valid(path: Path, required: set[str]) -> bool:
    """The cache file exists, its Parquet footer reads, it has rows and the required columns."""
    if not path.is_file():
        return False
    # Imported here: pyarrow is slow to import, and runs on a local catalog never get here.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
        names = set(metadata.schema.names)
    except (OSError, pa.ArrowException) as exc:
        log.warning("catalog: cache file %s is unreadable (%s); fetching it again", path, exc)
        return False
    return int(metadata.num_rows) > 0 and required <= names


def write_cache(frame: pd.DataFrame, target: Path, meta: dict[str, Any]) -> None:
    """Write ``frame`` as Parquet under a temporary name, check it, then rename it into place."""
    import pyarrow.parquet as pq

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target.parent, target.stem)
    try:
        frame.to_parquet(tmp, index=False, row_group_size=ROW_GROUP_ROWS)
        # Reading the footer back catches a short write (full disk) before it becomes the trusted cache.
        if pq.read_metadata(tmp).num_rows != len(frame):
            raise CatalogError(f"catalog: {target.name}: the cache file did not read back; not cached")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    # The sidecar is informational and written after the Parquet is in place: cache_is_valid reads only
    # the Parquet, so a crash in between leaves a valid cache without notes, never notes without data.
    sidecar = target.with_suffix(".json")
    tmp_meta = temp_path(target.parent, sidecar.stem)
    tmp_meta.write_text(json.dumps({**meta, "rows": len(frame)}, indent=2, default=str))
    os.replace(tmp_meta, sidecar)


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running event loop.

    Under a running loop the coroutine runs on a loop of its own in a helper thread (the caller
    blocks, so async code should await the coroutine instead).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # asyncio.run refuses to start under a running loop (Jupyter, a service), so use a thread of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="catalog-download") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
