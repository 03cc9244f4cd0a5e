"""TESS lightcurves from MAST: TIC match, CAOM observations, SPOC ``*_lc.fits`` products.

One source costs four kinds of request, each built by a pure function and sent through the
engine's :class:`HttpPort` (rate limit, retries, timeouts):

1. ``Mast.Catalogs.Tic.Cone`` around the source; :func:`choose_tic` picks the TIC star;
2. ``Mast.Caom.Filtered``: the TESS timeseries observations whose ``target_name`` is that TIC id;
3. ``Mast.Caom.Products`` of those observations; :func:`select_lightcurves` keeps one SPOC
   ``*_lc.fits`` per sector (120 s cadence first);
4. ``Download/file`` of each kept file, streamed to a scratch folder and checked to be a
   complete FITS (:func:`read_lightcurve_file`); a cut or garbled file is downloaded again.

The MAST Mashup client (requests, JSON answers, polling, pages) is :mod:`.mast`; the check that a
download is a whole FITS file is :mod:`.fits_checks`. MAST's Mashup answers JSON with a
``status``: ``EXECUTING`` means "ask again later" (polled with
``http.sleep`` until ``poll_deadline_s``), ``ERROR`` carries MAST's message, and long answers come
in pages (``paging.pagesFiltered``). :meth:`TessAdapter.parse` (in the process pool) reads the
downloaded files into one raw table and deletes them; :func:`reduce_lightcurves` cuts it into one
lightcurve per sector.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import pandas as pd

from aretriever.errors import PermanentFetchError
from aretriever.numbers import finite_or_none, separation_deg

# relative: this folder installs as aretriever.adapters, and mypy reads it as ``adapters``
from .base import Fetched, HttpPort, ReducedLightcurve, Target
from .mast import (
    CAOM_FILTERED,
    CAOM_PRODUCTS,
    TIC_BY_ID,
    TIC_CONE,
    Row,
    build_download_request,
    caom_params,
    int_or,
    mast_query,
    products_params,
    tic_cone_params,
    tic_id_params,
)
from .tess_config import TessConfig
from .tess_fits import checked_headers, read_raw_table, remove_scratch
from .tess_reduce import reduce_lightcurves

LC_SUFFIX: Final = "_lc.fits"  # SPOC lightcurves; "_fast-lc.fits" (20 s) does not end like this
PREFERRED_CADENCE_S: Final = 120.0
_SECTOR_IN_NAME: Final = re.compile(r"-s(\d{2,4})[-_]")

Array = np.ndarray[Any, Any]


# --------------------------------------------------------------------------------------------
# pure choices: the TIC star, the observations, the lightcurve files


@dataclass(frozen=True, slots=True)
class TicMatch:
    """The TIC star chosen for a source, or why there is none."""

    tic: int | None
    distance_arcsec: float | None = None
    gaia_mag: float | None = None
    reason: str | None = None


def choose_tic(rows: Sequence[Row], target: Target, cfg: TessConfig) -> TicMatch:
    """The nearest TIC row closer than ``distance_thresh_arcsec`` whose ``GAIAmag`` is within
    ``magdiff_thresh`` of the target's mag (when the target has one; a row without GAIAmag then
    does not match). Rows are ranked by ``dstArcSec``, or by their own ra/dec when it is missing.
    """
    ranked = _ranked(rows, target)
    if not ranked:
        return TicMatch(None, reason=f"no TIC star within {cfg.cat_query_radius_arcsec:g} arcsec")
    near = [item for item in ranked if item[0] < cfg.distance_thresh_arcsec]
    if not near:
        d, _, tic = ranked[0]
        within = f"within {cfg.distance_thresh_arcsec:g} arcsec"
        return TicMatch(None, reason=f"no TIC star {within} (nearest: TIC {tic} at {d:.2f} arcsec)")
    mag = finite_or_none(target.mag)
    for d, row, tic in near:
        gaia = finite_or_none(row.get("GAIAmag"))
        if mag is None or (gaia is not None and abs(gaia - mag) < cfg.magdiff_thresh):
            return TicMatch(tic, d, gaia)
    d, row, tic = near[0]
    cut = f"|GAIAmag - {mag:.3f}| < {cfg.magdiff_thresh:g}"
    nearest = f"TIC {tic} at {d:.2f} arcsec, GAIAmag {finite_or_none(row.get('GAIAmag'))}"
    return TicMatch(
        None,
        reason=f"no TIC star within {cfg.distance_thresh_arcsec:g} arcsec has {cut} (nearest: {nearest})",
    )


def _ranked(rows: Sequence[Row], target: Target) -> list[tuple[float, Row, int]]:
    """(distance in arcsec, row, TIC id) of the usable rows, nearest first."""
    ranked = []
    for row in rows:
        tic, distance = _tic_id(row), _distance(row, target)
        if tic is not None and distance is not None:
            ranked.append((distance, row, tic))
    return sorted(ranked, key=lambda item: item[0])


def _tic_id(row: Row) -> int | None:
    try:
        return int(row["ID"])
    except (KeyError, TypeError, ValueError):
        return None


def _distance(row: Row, target: Target) -> float | None:
    given = finite_or_none(row.get("dstArcSec"))
    if given is not None:
        return given
    ra, dec = finite_or_none(row.get("ra")), finite_or_none(row.get("dec"))
    if ra is None or dec is None:
        return None
    return float(separation_deg(ra, dec, target.ra_deg, target.dec_deg)) * 3600.0


def target_from_tic_rows(rows: Sequence[Row], tic: int) -> Target | None:
    """``Target("TIC <id>", ra, dec)`` from the TIC row with that id, or None."""
    for row in rows:
        ra, dec = finite_or_none(row.get("ra")), finite_or_none(row.get("dec"))
        if _tic_id(row) == tic and ra is not None and dec is not None:
            mag = finite_or_none(row.get("GAIAmag"))
            return Target(f"TIC {tic}", ra, dec, mag=mag, ids=(("tic", str(tic)),))
    return None


def observation_cadences(rows: Sequence[Row], tic: int) -> dict[str, float | None]:
    """``obsid -> t_exptime`` (s) of the TESS timeseries observations of ``tic``, in MAST's order."""
    cadences: dict[str, float | None] = {}
    for row in rows:
        if (
            str(row.get("obs_collection")) == "TESS"
            and str(row.get("dataproduct_type")) == "timeseries"
            and int_or(row.get("target_name"), -1) == tic
            and row.get("obsid") is not None
        ):
            cadences[str(row["obsid"])] = finite_or_none(row.get("t_exptime"))
    return cadences


@dataclass(frozen=True, slots=True)
class LightcurveProduct:
    """One SPOC lightcurve file to download."""

    filename: str
    uri: str
    sector: int | None
    cadence_s: float | None


def sector_from_name(filename: str) -> int | None:
    """The sector in a TESS product name (``...-s0001-...`` or the alerts' ``...-s01_...``)."""
    found = _SECTOR_IN_NAME.search(filename)
    return int(found.group(1)) if found else None


def select_lightcurves(rows: Sequence[Row], cadences: Mapping[str, float | None]) -> list[LightcurveProduct]:
    """One ``*_lc.fits`` product per sector, ordered by sector (pure).

    Only products of the observations in ``cadences`` count. When a sector has several, the one
    whose observation cadence is closest to 120 s wins (then the first name in sort order).
    """
    best: dict[object, LightcurveProduct] = {}
    for row in rows:
        product = _lightcurve_product(row, cadences)
        if product is None:
            continue
        key = product.sector if product.sector is not None else product.filename
        if key not in best or _rank(product) < _rank(best[key]):
            best[key] = product
    return sorted(best.values(), key=lambda p: (p.sector is None, p.sector or 0, p.filename))


def _lightcurve_product(row: Row, cadences: Mapping[str, float | None]) -> LightcurveProduct | None:
    obsid = str(row.get("obsID", ""))
    uri = str(row.get("dataURI") or "")
    # never a path from the answer: only the last part of the name is used on disk
    name = Path(str(row.get("productFilename") or uri.rsplit("/", 1)[-1])).name
    if obsid not in cadences or not uri or not name.lower().endswith(LC_SUFFIX):
        return None
    return LightcurveProduct(name, uri, sector_from_name(name), cadences[obsid])


def _rank(product: LightcurveProduct) -> tuple[float, str]:
    cadence = product.cadence_s
    return (abs(cadence - PREFERRED_CADENCE_S) if cadence is not None else math.inf, product.filename)


def no_data_reason(target: Target, limiting_magnitude: float | None = None) -> str | None:
    """Why TESS cannot have data for ``target``: fainter than ``limiting_magnitude`` (when set)."""
    mag = finite_or_none(target.mag)
    if limiting_magnitude is not None and mag is not None and mag > limiting_magnitude:
        return f"fainter than limiting magnitude (mag {mag:.3f} > {limiting_magnitude})"
    return None


class TessAdapter:
    """TESS through MAST: TIC match, SPOC lightcurve files, one lightcurve per sector."""

    name: ClassVar[str] = "tess"
    config_model: ClassVar[type[TessConfig]] = TessConfig  # validates observatories.tess
    id_key: ClassVar[str] = "tic"

    def __init__(self, cfg: TessConfig) -> None:
        self.cfg = cfg

    def no_data_reason(self, target: Target) -> str | None:
        """Why TESS cannot have data for ``target`` (pure), or None when it may."""
        return no_data_reason(target, self.cfg.limiting_magnitude)

    async def fetch(self, target: Target, http: HttpPort) -> Fetched:
        """Match ``target`` to a TIC star and download its SPOC lightcurve files."""
        reason = self.no_data_reason(target)
        if reason is not None:
            return Fetched(target, None, no_data_reason=reason)
        given = target.archive_id("tic")
        if given is not None:
            return await self._fetch_tic(target, int(given), http, {"tic_given": True})
        rows = await mast_query(http, self.cfg, TIC_CONE, tic_cone_params(target, self.cfg), target.name)
        match = choose_tic(rows, target, self.cfg)
        if match.tic is None:
            return Fetched(target, None, no_data_reason=match.reason)
        about = {"tic_distance_arcsec": match.distance_arcsec, "tic_gaia_mag": match.gaia_mag}
        return await self._fetch_tic(target, match.tic, http, about)

    async def fetch_by_tic(self, tic: int, http: HttpPort, target: Target | None = None) -> Fetched:
        """Download the lightcurves of TIC ``tic`` directly (no cone search).

        ``target`` is the source to file them under (e.g. the catalog's nearest row); without one
        the source is the TIC star itself, named ``TIC <id>`` (see :meth:`lookup_tic`).
        """
        if target is None:
            target = await self.lookup_tic(tic, http)
        return await self._fetch_tic(target, tic, http, {"tic_given": True})

    async def lookup_id(self, value: str, http: HttpPort) -> Target:
        """The TIC star with id ``value`` (see :meth:`lookup_tic`)."""
        return await self.lookup_tic(int(value), http)

    async def lookup_tic(self, tic: int, http: HttpPort) -> Target:
        """``Target("TIC <id>")`` at the TIC's position of that star, carrying its TIC id.

        Raises
        ------
        PermanentFetchError
            The TIC has no star with that id.
        """
        rows = await mast_query(http, self.cfg, TIC_BY_ID, tic_id_params(tic), f"TIC {tic}")
        target = target_from_tic_rows(rows, tic)
        if target is None:
            raise PermanentFetchError(f"tess: MAST's TIC has no star with ID {tic}")
        return target

    async def _fetch_tic(self, target: Target, tic: int, http: HttpPort, about: dict[str, Any]) -> Fetched:
        cfg, name = self.cfg, target.name
        observations = await mast_query(http, cfg, CAOM_FILTERED, caom_params(tic), name)
        cadences = observation_cadences(observations, tic)
        if not cadences:
            return Fetched(target, None, no_data_reason=f"MAST has no TESS timeseries of TIC {tic}")
        products = await mast_query(http, cfg, CAOM_PRODUCTS, products_params(list(cadences)), name)
        chosen = select_lightcurves(products, cadences)
        if not chosen:
            reason = f"no SPOC lightcurve (*{LC_SUFFIX}) among {len(products)} products of TIC {tic}"
            return Fetched(target, None, no_data_reason=reason)
        folder = Path(tempfile.mkdtemp(prefix="aretriever-tess-", dir=http.scratch_dir))
        try:
            files = [await self._download(http, product, folder, name) for product in chosen]
        except BaseException:  # cancelled or failed: leave nothing behind in the scratch folder
            shutil.rmtree(folder, ignore_errors=True)
            raise
        headers = [found for _, found in files]
        meta = {
            "tic": tic,
            **about,
            "sectors": [h["SECTOR"] for h in headers],
            "files": [path for path, _ in files],
            "products": [p.filename for p in chosen],
            "headers": headers,
        }
        url = build_download_request(cfg, chosen[0].uri, "").display_url()
        return Fetched(target, b"", url=url, meta=meta)

    async def _download(
        self, http: HttpPort, product: LightcurveProduct, folder: Path, source: str
    ) -> tuple[str, dict[str, Any]]:
        """Stream one file to ``folder``; the port checks it and downloads a broken one again."""
        path = folder / product.filename
        check = functools.partial(checked_headers, flux_column=self.cfg.reducer.flux_column, source=source)
        request = build_download_request(self.cfg, product.uri, path, check=check)
        response = await http.send(request)
        headers: dict[str, Any] = response.checked
        return str(path), headers

    def parse(self, fetched: Fetched) -> pd.DataFrame:
        """The downloaded files as one raw table (pure but for deleting them once read)."""
        files = list(fetched.meta.get("files", ())) if fetched.body is not None else []
        try:
            return read_raw_table(files, self.cfg.reducer.flux_column, source=fetched.target.name)
        finally:
            remove_scratch(files)

    def reduce(self, raw: pd.DataFrame, target: Target) -> list[ReducedLightcurve]:
        """Lightcurves of ``target`` from its raw table (pure)."""
        return reduce_lightcurves(raw, target, self.cfg.reducer)

    def __repr__(self) -> str:
        return f"TessAdapter(base_url={self.cfg.base_url!r})"
