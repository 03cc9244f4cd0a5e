"""Named remote catalogs: the Gaia EDR3 white dwarfs (``wd``) and Gaia TAP queries (``gaia:``).

``wd`` is Gentile Fusillo et al. (2021, MNRAS 508, 3877), the main table of the Gaia EDR3
white-dwarf catalogue, about 1.3 million rows, fetched once from VizieR
(``J/MNRAS/508/3877/maincat``) through the ASU VOTable endpoint with only the columns aretriever
uses, verified and cached as Parquet (see :mod:`aretriever.catalogs.cache`). Its positions are at
epoch J2016.0 (Gaia EDR3), not 2016.5.

Streaming keeps VizieR's column names in the cache and renames them on the way out, to the names
the engine's column map expects (``catalog.columns``): name <- ``WDJname``, ra <- ``RA_ICRS``,
dec <- ``DE_ICRS``, mag <- ``Gmag``, pmra <- ``pmRA``, pmdec <- ``pmDE``; the Gaia id, parallax
and white-dwarf probability come along as ``source_id``, ``parallax`` and ``Pwd``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import aiohttp
import anyio

from aretriever.adapters.base import Request
from aretriever.catalogs.cache import (
    RemoteOptions,
    Sleep,
    cache_is_valid,
    checked_votable,
    download,
    open_lane,
    run_blocking,
    temp_path,
    write_cache,
)
from aretriever.catalogs.core import EpochShift, FileCatalog, SearchableCatalog, resolve_spec
from aretriever.catalogs.tap import cache_path, fetch_gaia, reference_epoch_yr
from aretriever.errors import CatalogError
from aretriever.settings import CatalogConfig, ColumnMap

WD_NAMES: Final = frozenset({"wd", "white_dwarfs", "white-dwarfs", "whitedwarfs"})
WD_VIZIER_SOURCE: Final = "J/MNRAS/508/3877/maincat"
WD_CACHE_FILE: Final = "gaiaedr3_wd_main.parquet"
WD_EPOCH_YR: Final = 2016.0
#: VizieR column -> role; the roles name/ra/dec/mag/pmra/pmdec are renamed per ``catalog.columns``.
WD_COLUMNS: Final = {
    "WDJname": "name",
    "GaiaEDR3": "source_id",
    "RA_ICRS": "ra",
    "DE_ICRS": "dec",
    "Gmag": "mag",
    "Plx": "parallax",
    "pmRA": "pmra",
    "pmDE": "pmdec",
    "Pwd": "Pwd",
}
#: Gaia TAP result column -> role (``name`` is added from ``designation`` or ``source_id``).
GAIA_COLUMNS: Final = {
    "name": "name",
    "ra": "ra",
    "dec": "dec",
    "phot_g_mean_mag": "mag",
    "pmra": "pmra",
    "pmdec": "pmdec",
}
_ROLES: Final = ("name", "ra", "dec", "mag", "pmra", "pmdec")

log = logging.getLogger("aretriever.catalogs.core")


def vizier_request(base_url: str, source: str, columns: list[str], max_rows: int | None = None) -> Request:
    """The VizieR ASU request for a whole table (``-out.max=unlimited`` unless ``max_rows``).

    ``Accept-Encoding: identity``: the lane checks streamed bodies against Content-Length, which
    for a compressed answer would count the compressed bytes.
    """
    params = (
        ("-source", source),
        ("-out", ",".join(columns)),
        ("-out.max", "unlimited" if max_rows is None else str(max_rows)),
    )
    url = f"{base_url.rstrip('/')}/viz-bin/votable"
    return Request("GET", url, params=params, headers={"Accept-Encoding": "identity"})


# The cache keeps the archive's names, so changing ``catalog.columns`` needs no new download.
def rename_map(raw_to_role: dict[str, str], columns: ColumnMap) -> dict[str, str]:
    """Raw column -> chunk column: roles the column map names go to its names, others keep theirs."""
    out = {}
    for raw, role in raw_to_role.items():
        mapped = getattr(columns, role, None) if role in _ROLES else None
        # A role the column map leaves empty keeps its role name rather than the archive's spelling.
        out[raw] = mapped or role
    return out


def wd_cache_path(options: RemoteOptions) -> Path:
    return options.cache_dir / WD_CACHE_FILE


async def fetch_wd(
    options: RemoteOptions,
    *,
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep | None = None,
) -> Path:
    """The cached white-dwarf catalog (Parquet), downloaded from VizieR only when not cached."""
    target = wd_cache_path(options)
    # Checked before anything else: a cached catalog costs no folder, lane or session.
    if cache_is_valid(target, set(WD_COLUMNS)):
        return target
    await anyio.Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
    request = vizier_request(options.vizier_url, WD_VIZIER_SOURCE, list(WD_COLUMNS))
    # The VOTable is only an intermediate: the finally below removes it whether or not the cache is made.
    tmp = temp_path(options.cache_dir, "gaiaedr3_wd_main.vot")
    try:
        log.info("catalog: wd: downloading %s (once; cached in %s)", request.display_url(), target)
        async with open_lane("vizier", options, options.vizier_url, session, sleep) as lane:
            await download(lane, request, tmp, "wd", "VizieR")
        # about a minute and 1.5 GB for the full catalog (astropy reads TABLEDATA cell by cell)
        log.info("catalog: wd: verifying %.0f MB of VOTable", (await anyio.Path(tmp).stat()).st_size / 1e6)
        # Parsing takes a minute: off the loop, so other tasks on it (lanes, a service) keep running.
        parsed = await anyio.to_thread.run_sync(checked_votable, tmp, "wd", None, options.allow_truncated)
        missing = set(WD_COLUMNS) - set(parsed.frame.columns)
        if missing:
            raise CatalogError(
                f"catalog: wd: VizieR's table lacks {sorted(missing)}; it has {list(parsed.frame.columns)}"
            )
        meta = {"source": WD_VIZIER_SOURCE, "url": request.display_url(), "epoch": "J2016.0"}
        await anyio.to_thread.run_sync(write_cache, parsed.frame[list(WD_COLUMNS)], target, meta)
        log.info("catalog: wd: %d rows cached in %s", len(parsed.frame), target)
    finally:
        await anyio.Path(tmp).unlink(missing_ok=True)
    return target


def wd_catalog(path: Path, cfg: CatalogConfig, options: RemoteOptions) -> FileCatalog:
    """The cached white-dwarf catalog as a streamed catalog named ``wd``."""
    shift = None if options.pm_epoch_yr is None else EpochShift(WD_EPOCH_YR, options.pm_epoch_yr)
    return FileCatalog(
        path,
        cfg.chunk_rows,
        label="wd",
        columns=cfg.columns,
        rename=rename_map(WD_COLUMNS, cfg.columns),
        epoch=shift,
    )


def gaia_catalog(path: Path, query: str, cfg: CatalogConfig, options: RemoteOptions) -> FileCatalog:
    """A cached Gaia TAP result as a streamed catalog named ``gaia-<hash>``."""
    shift = None
    if options.pm_epoch_yr is not None:
        shift = EpochShift(reference_epoch_yr(query), options.pm_epoch_yr)
    return FileCatalog(
        path,
        cfg.chunk_rows,
        label=path.stem.replace("_", "-"),
        columns=cfg.columns,
        rename=rename_map(GAIA_COLUMNS, cfg.columns),
        epoch=shift,
    )


def remote_kind(spec: str, options: RemoteOptions) -> tuple[str, str]:
    """("wd", "") or ("gaia", <ADQL>) for a catalog spec; a CatalogError for anything else."""
    text = spec.strip()
    # Lenient on case and spaces ("White Dwarfs") because this is typed on a command line.
    if text.lower().replace(" ", "_") in WD_NAMES:
        return "wd", ""
    head, _, rest = text.partition(":")
    if head.lower() in {"gaia", "adql"} and rest.strip():
        return "gaia", rest.strip()
    if text.lower() == "gaia" and options.gaia_query:
        return "gaia", options.gaia_query
    raise CatalogError(
        f"catalog: {spec!r} is neither a file nor a known catalog name "
        "(known: test, wd (WD, white_dwarfs), gaia:<ADQL query>)"
    )


def open_remote(spec: str, cfg: CatalogConfig, options: RemoteOptions | None = None) -> SearchableCatalog:
    """A named remote catalog, from the cache or downloaded now (blocking)."""
    options = options or RemoteOptions.from_config(cfg)
    kind, query = remote_kind(spec, options)
    if kind == "wd":
        path = wd_cache_path(options)
        if not cache_is_valid(path, set(WD_COLUMNS)):
            path = run_blocking(lambda: fetch_wd(options))
        return wd_catalog(path, cfg, options)
    # "votable" must match fetch_gaia's default format, or this path never finds the cached result.
    path = cache_path(options, query, "votable")
    # run_blocking starts a thread and an event loop; only a cache miss should pay for them.
    if not cache_is_valid(path, {"name", "ra", "dec"}):
        path = run_blocking(lambda: fetch_gaia(query, options))
    return gaia_catalog(path, query, cfg, options)


async def open_catalog_async(
    spec: str | None,
    cfg: CatalogConfig,
    *,
    options: RemoteOptions | None = None,
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep | None = None,
) -> SearchableCatalog:
    """:func:`aretriever.catalogs.core.open_catalog` for async code: downloads never block the loop.

    Parameters
    ----------
    spec, cfg
        As for :func:`~aretriever.catalogs.core.open_catalog`.
    options : RemoteOptions, optional
        Cache folder, archive URLs and limits (default: from ``cfg``).
    session : aiohttp.ClientSession, optional
        Session for the download (default: one of its own).
    sleep : callable, optional
        How to wait between TAP polls and retries (tests pass a fake clock).
    """
    spec, local = resolve_spec(spec, cfg)
    if local is not None:
        return local
    options = options or RemoteOptions.from_config(cfg)
    kind, query = remote_kind(spec, options)
    if kind == "wd":
        return wd_catalog(await fetch_wd(options, session=session, sleep=sleep), cfg, options)
    path = await fetch_gaia(query, options, session=session, sleep=sleep)
    return gaia_catalog(path, query, cfg, options)
