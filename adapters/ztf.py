"""ZTF lightcurves from IRSA's ``nph_light_curves`` API.

Building the request, parsing IRSA's CSV and reducing it to lightcurves are pure functions; only
:meth:`ZtfAdapter.fetch` touches the network, through the engine's :class:`HttpPort`.

IRSA answers a cone search (``POS=CIRCLE ra dec radius``) with every epoch of every ZTF object
(``oid``) in the cone: one oid per field, CCD quadrant and filter. The reducer keeps the oids
whose median position (and magnitude) match the source and cuts the epochs into seasons and
filters.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any, ClassVar, Final

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from aretriever.errors import ArchiveErrorPage, MalformedResponse
from aretriever.numbers import separation_deg
from aretriever.science.columns import Records, Table, arrow_text, to_records
from aretriever.science.moments import median

# relative: this folder installs as aretriever.adapters, and mypy reads it as ``adapters``
from .base import Fetched, HttpPort, RawTableKind, ReducedLightcurve, Request, Target
from .ztf_config import ZtfConfig, ZtfReducerConfig

LIGHTCURVE_PATH: Final = "/cgi-bin/ZTF/nph_light_curves"

Array = np.ndarray[Any, Any]

# IRSA's CSV columns, in IRSA's order, with their kinds. The parser gives a structured array with
# these numpy dtypes and text as ``S<n>`` bytes (n the longest value, at least 1): the raw file's
# layout. ``ccdid`` and ``qid`` arrive as hex strings ("0xf", "0x2") and are kept as sent.
COLUMNS: Final[dict[str, str]] = {
    "oid": "int64",
    "expid": "int64",
    "hjd": "float64",
    "mjd": "float64",
    "mag": "float64",
    "magerr": "float64",
    "catflags": "int64",
    "filtercode": "str",
    "ra": "float64",
    "dec": "float64",
    "chi": "float64",
    "sharp": "float64",
    "filefracday": "int64",
    "field": "int64",
    "ccdid": "str",
    "qid": "str",
    "limitmag": "float64",
    "magzp": "float64",
    "magzprms": "float64",
    "clrcoeff": "float64",
    "clrcounc": "float64",
    "exptime": "float64",
    "airmass": "float64",
    "programid": "int64",
}
_HEADER: Final = ",".join(COLUMNS).encode()
_ARROW_TYPES: Final = {"int64": pa.int64(), "float64": pa.float64(), "str": pa.string()}
_CONVERT: Final = pa_csv.ConvertOptions(
    column_types={name: _ARROW_TYPES[kind] for name, kind in COLUMNS.items()},
    strings_can_be_null=False,
)
# Threads inside a process-pool worker would only fight the other workers for the cores.
_READ: Final = pa_csv.ReadOptions(use_threads=False)
_INT_COLUMNS: Final = [name for name, kind in COLUMNS.items() if kind == "int64"]
_EMPTY_DTYPE: Final = np.dtype([(name, "S1" if kind == "str" else kind) for name, kind in COLUMNS.items()])
_QUOTE_CHARS: Final = 200
_VOTABLE_ERROR: Final = re.compile(r'<INFO[^>]*value="ERROR"[^>]*>(.*?)</INFO>', re.S | re.I)
_SCRIPT: Final = re.compile(r"<(script|style)\b.*?</\1>", re.S | re.I)
_TAG: Final = re.compile(r"<[^>]*>")
_MEDIAN_OF: Final = ("oid", "ra", "dec", "mag")


class _Secret(str):
    """A header value that does not show itself in ``repr`` (dicts, dataclasses, tracebacks)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


# --------------------------------------------------------------------------------------------
# pure request side


def cone_radius_deg(target: Target, cfg: ZtfConfig) -> float:
    """Cone radius in degrees: the configured radius plus 3 years of proper motion.

    Parameters
    ----------
    target : Target
        The source; its total proper motion (mas/yr) widens the cone by 0.003 arcsec per mas/yr.
    cfg : ZtfConfig
        ``cone_search_radius_arcsec`` is the radius for a source that does not move.
    """
    return (cfg.cone_search_radius_arcsec + 0.003 * target.pm_mas_yr) / 3600.0


def no_data_reason(target: Target, cfg: ZtfConfig) -> str | None:
    """Why ZTF cannot have data for ``target``, or None when it may.

    Parameters
    ----------
    target : Target
        The source.
    cfg : ZtfConfig
        ``minimal_declination_deg`` and ``limiting_magnitude`` decide.
    """
    if target.dec_deg < cfg.minimal_declination_deg:
        return f"below minimal declination (dec {target.dec_deg:.5f} deg < {cfg.minimal_declination_deg} deg)"
    mag = target.mag
    if mag is not None and not math.isnan(mag) and mag > cfg.limiting_magnitude:
        return f"fainter than limiting magnitude (mag {mag:.3f} > {cfg.limiting_magnitude})"
    return None


def build_lightcurve_request(target: Target, cfg: ZtfConfig) -> Request:
    """The ``nph_light_curves`` cone search for ``target`` (pure).

    Parameters
    ----------
    target : Target
        The source; RA/Dec are sent with 8 decimals (0.04 mas).
    cfg : ZtfConfig
        Base URL, cone radius, ``BAD_CATFLAGS_MASK``, optional ``COLLECTION`` and credentials
        (sent as HTTP basic auth, never in :meth:`Request.display_url`).
    """
    radius = cone_radius_deg(target, cfg)
    pos = f"CIRCLE {target.ra_deg % 360.0:.8f} {target.dec_deg:.8f} {radius:.10f}"
    params: tuple[tuple[str, str], ...] = (
        ("POS", pos),
        ("BAD_CATFLAGS_MASK", str(cfg.bad_catflags_mask)),
        ("FORMAT", "csv"),
    )
    if cfg.collection:
        params += (("COLLECTION", cfg.collection),)
    url = cfg.base_url.rstrip("/") + LIGHTCURVE_PATH
    return Request("GET", url, params=params, headers=_auth_headers(cfg))


def _auth_headers(cfg: ZtfConfig) -> dict[str, str]:
    creds = cfg.credentials
    if creds is None or not creds.username:
        return {}
    pair = f"{creds.username}:{creds.password.get_secret_value()}".encode()
    return {"Authorization": _Secret("Basic " + base64.b64encode(pair).decode("ascii"))}


# --------------------------------------------------------------------------------------------
# pure parsing


def empty_lightcurve_table() -> Records:
    """A structured array with IRSA's columns and dtypes (text ``S1``) and no rows."""
    return np.empty(0, dtype=_EMPTY_DTYPE)


def parse_lightcurve_table(body: bytes, *, source: str = "", url: str = "") -> Records:
    """Parse IRSA's CSV answer into a structured array with IRSA's columns and order (pure).

    The array is the raw file's table as it is stored: numbers as int64/float64 (an empty float
    is NaN), text as ``S<n>`` UTF-8 bytes, ``n`` the column's longest value (at least 1). No
    DataFrame is made: the reducer and the HDF5 writer both take the array as it is.

    Parameters
    ----------
    body : bytes
        The answer to a ``FORMAT=csv`` request.
    source, url : str
        Named in error messages.

    Raises
    ------
    ArchiveErrorPage
        The body is an HTML/VOTable error page or a table without IRSA's columns.
    MalformedResponse
        The body is empty, cut short or has unparseable values (worth fetching again).
    """
    _check_header(body, source, url)
    try:
        table = pa_csv.read_csv(io.BytesIO(body), read_options=_READ, convert_options=_CONVERT)
    except pa.ArrowInvalid as exc:
        raise _malformed(source, url, _first_line(str(exc))) from exc
    if table.num_rows == 0:
        return empty_lightcurve_table()
    nulls = [name for name in _INT_COLUMNS if table.column(name).null_count]
    if nulls:
        raise _malformed(source, url, f"empty values in integer columns {nulls}")
    return _records(table)


def _records(table: pa.Table) -> Records:
    arrays = {name: _numpy(table.column(name)) for name in COLUMNS}
    records = np.empty(table.num_rows, dtype=[(name, values.dtype) for name, values in arrays.items()])
    for name, values in arrays.items():
        records[name] = values
    return records


def _numpy(values: pa.ChunkedArray) -> Array:
    if pa.types.is_string(values.type):
        return arrow_text(values)
    # int64 columns hold no nulls (checked); a null float comes out as NaN
    array: Array = values.to_numpy()
    return array


def _check_header(body: bytes, source: str, url: str) -> None:
    head = body.lstrip()[:1]
    if head == b"<":
        raise _error_page(source, url, _page_text(body))
    if not body.strip():
        raise _malformed(source, url, "empty body")
    end = body.find(b"\n")
    header = (body if end < 0 else body[:end]).strip()
    if header == _HEADER:
        return
    if end < 0 and _HEADER.startswith(header):
        raise _malformed(source, url, "body ends inside the header line")
    found = header.decode("utf-8", "replace")[:_QUOTE_CHARS]
    raise _error_page(source, url, f"expected IRSA's columns {list(COLUMNS)}; found {found!r}")


def _page_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    status = _VOTABLE_ERROR.search(text)
    text = status.group(1) if status else _SCRIPT.sub(" ", text)
    text = " ".join(html.unescape(_TAG.sub(" ", text)).split())
    return text[:_QUOTE_CHARS] or "(no text)"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:_QUOTE_CHARS] if text.strip() else text


def _error_page(source: str, url: str, text: str) -> ArchiveErrorPage:
    return ArchiveErrorPage(f"ztf: IRSA answered an error page for {source} ({url}): {text}", url=url)


def _malformed(source: str, url: str, text: str) -> MalformedResponse:
    return MalformedResponse(f"ztf: malformed IRSA answer for {source} ({url}): {text}", url=url)


# --------------------------------------------------------------------------------------------
# pure reduction


def reduce_lightcurves(raw: Table, target: Target, cfg: ZtfReducerConfig) -> list[ReducedLightcurve]:
    """Cut IRSA's epochs for one source into single-filter, single-season lightcurves (pure).

    Parameters
    ----------
    raw : structured array or pandas.DataFrame
        The parsed IRSA table (:func:`parse_lightcurve_table`, or the raw file's table as
        stored), or the same as a DataFrame; not modified.
    target : Target
        The source: oids whose median position is further than ``cfg.radius_arcsec`` from it,
        or whose median mag differs from ``target.mag`` by more than ``cfg.mag_range``, are
        dropped. Medians use the oid's good epochs (catflags 0, finite mag); an oid without
        any good epoch is dropped.
    cfg : ZtfReducerConfig
        ``drop_bad`` removes epochs with catflags != 0 or NaN mag; a gap longer than
        ``gap_days`` between consecutive kept epochs starts a new season.

    Returns
    -------
    list of ReducedLightcurve
        One per season and filter, ordered by start time, then filter name; may be empty. Each
        ``data`` is a structured array (IRSA's columns; text as ``S<n>`` bytes, as wide as the
        lightcurve's longest value, as the HDF5 file stores it).
    """
    # the parsed or stored array passes through (a DataFrame is converted once), one take of the
    # kept rows in their final order: every lightcurve is then a slice of that one array (a
    # DataFrame per lightcurve cost ~0.5 ms)
    records = to_records(raw)
    keep = np.isin(records["oid"], matching_oids(records, target, cfg))
    if cfg.drop_bad:
        keep &= _good_rows(records)
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return []
    rows, seasons, bands = _season_filter_order(records, rows, cfg.gap_days)
    table = records.take(rows)  # take(): a plain copy per row; fancy indexing copies field by field
    starts = np.flatnonzero((np.diff(seasons) != 0) | (bands[1:] != bands[:-1])) + 1
    bounds = zip([0, *starts.tolist()], [*starts.tolist(), rows.size], strict=True)
    lengths = _text_lengths(table)
    curves = [
        _lightcurve(table, slice(lo, hi), lengths, int(seasons[lo]), bands[lo].decode("utf-8"))
        for lo, hi in bounds
    ]
    return sorted(curves, key=lambda lc: (lc.time_start_mjd, lc.filter))


def _season_filter_order(raw: Records, rows: Array, gap_days: float) -> tuple[Array, Array, Array]:
    """``rows`` ordered by season, filter, then time; with each row's season and filter."""
    mjd = raw["mjd"][rows]
    by_time = np.argsort(mjd, kind="stable")
    rows = rows[by_time]
    seasons = season_index(mjd[by_time], gap_days)
    names, codes = np.unique(raw["filtercode"][rows], return_inverse=True)
    regroup = np.lexsort((codes, seasons))  # stable: time order survives within a group
    return rows[regroup], seasons[regroup], names[codes[regroup]]


def matching_oids(raw: Table, target: Target, cfg: ZtfReducerConfig) -> list[int]:
    """The oids whose median position and magnitude match ``target`` (see reduce_lightcurves)."""
    good = _good_rows(raw)
    oids, ra, dec, mag = oid_medians(*(np.asarray(raw[name])[good] for name in _MEDIAN_OF))
    keep = separation_deg(ra, dec, target.ra_deg, target.dec_deg) * 3600.0 <= cfg.radius_arcsec
    if target.mag is not None and not math.isnan(target.mag) and cfg.mag_range is not None:
        keep &= np.abs(mag - target.mag) <= cfg.mag_range
    return [int(oid) for oid in oids[keep]]


def oid_medians(
    oid: Array,
    ra: Array,
    dec: Array,
    mag: Array,
) -> tuple[Array, ...]:
    """(oids, median ra, median dec, median mag), one entry per oid, with RA wrap handled.

    An object sitting on RA 0/360 has epochs at 359.9999 and 0.0001; a plain median of those
    would land on the far side of the sky, so RA is unwrapped around the oid's first epoch.
    """
    oids, inverse = np.unique(oid, return_inverse=True)
    out = np.empty((3, oids.size))
    for k in range(oids.size):
        members = inverse == k
        ra_k = ra[members]
        offset = median((ra_k - ra_k[0] + 180.0) % 360.0 - 180.0)
        out[:, k] = (ra_k[0] + offset) % 360.0, median(dec[members]), median(mag[members])
    return oids, out[0], out[1], out[2]


def season_index(mjd_sorted: Array, gap_days: float) -> Array:
    """Season number (0, 1, ...) of each epoch; a gap longer than ``gap_days`` starts a season."""
    gaps = np.diff(mjd_sorted) > gap_days
    seasons: Array = np.concatenate(([0], np.cumsum(gaps)))
    return seasons


def _good_rows(table: Table) -> Array:
    good: Array = (np.asarray(table["catflags"]) == 0) & ~np.isnan(np.asarray(table["mag"], dtype=np.float64))
    return good


def _text_lengths(table: Records) -> dict[str, Array]:
    """Byte length of every value of each text field."""
    return {
        name: np.strings.str_len(table[name])
        for name in table.dtype.names or ()
        if table.dtype[name].kind == "S"
    }


def _lightcurve(
    table: Records, part: slice, lengths: dict[str, Array], season: int, band: str
) -> ReducedLightcurve:
    data = _narrowed(table[part], {name: length[part] for name, length in lengths.items()})
    mjd = data["mjd"]
    meta = {"oids": np.unique(data["oid"]).tolist(), "season": season, "num_points": len(data)}
    return ReducedLightcurve(
        data=data,
        filter=band,
        time_start_mjd=float(mjd[0]),
        time_end_mjd=float(mjd[-1]),
        meta=meta,
    )


def _narrowed(part: Records, lengths: dict[str, Array]) -> Records:
    """``part`` with each text field as wide as its longest value (at least 1), the width a
    lightcurve had when it was converted on its own; a view when nothing changes."""
    widths = {name: max(1, int(length.max())) for name, length in lengths.items()}
    if all(part.dtype[name].itemsize == width for name, width in widths.items()):
        return part
    fields = [
        (name, f"S{widths[name]}" if name in widths else part.dtype[name]) for name in part.dtype.names or ()
    ]
    return part.astype(fields)


# --------------------------------------------------------------------------------------------
# the adapter


class ZtfAdapter:
    """ZTF through IRSA: one cone search per source, reduced per season and filter."""

    name: ClassVar[str] = "ztf"
    raw_table: ClassVar[RawTableKind] = "records"  # reduce takes the stored raw array as it is
    config_model: ClassVar[type[ZtfConfig]] = ZtfConfig  # validates observatories.ztf

    def __init__(self, cfg: ZtfConfig) -> None:
        self.cfg = cfg

    def no_data_reason(self, target: Target) -> str | None:
        """Why ZTF cannot have data for ``target`` (pure), or None when it may."""
        return no_data_reason(target, self.cfg)

    async def fetch(self, target: Target, http: HttpPort) -> Fetched:
        """Ask IRSA for ``target``'s lightcurves; no request when ZTF cannot have data."""
        reason = self.no_data_reason(target)
        if reason is not None:
            return Fetched(target, None, no_data_reason=reason)
        request = build_lightcurve_request(target, self.cfg)
        response = await http.send(request)
        return Fetched(target, response.body, url=request.display_url())

    def parse(self, fetched: Fetched) -> Records:
        """IRSA's CSV as a structured array (pure); an empty one when nothing was fetched."""
        if fetched.body is None:
            return empty_lightcurve_table()
        return parse_lightcurve_table(fetched.body, source=fetched.target.name, url=fetched.url)

    def reduce(self, raw: Table, target: Target) -> list[ReducedLightcurve]:
        """Lightcurves of ``target`` from its raw table, a structured array (what :meth:`parse`
        gives and the raw file stores) or a DataFrame (pure); their tables are structured arrays."""
        return reduce_lightcurves(raw, target, self.cfg.reducer)

    def __repr__(self) -> str:
        return f"ZtfAdapter(base_url={self.cfg.base_url!r})"
