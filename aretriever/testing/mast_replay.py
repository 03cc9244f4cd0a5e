"""MAST for the fake archive: recorded Mashup answers templated for TESS, real SPOC files.

The recordings (``data/mast/*.json``, see ``data/PROVENANCE.md``) are real Mashup answers about
HST observations and a TIC cone elsewhere on the sky. Every answer here keeps their keys, field
lists and values, except those that must change to describe a TESS star: ids, names and
positions (with what follows from them: distances, galactic and ecliptic coordinates), and the
words that say "TESS timeseries" instead of "HST image". ``Download/file`` serves the real FITS
files in ``data/tess/``.

Stars: TIC 55652896 and pi Men (TIC 261136679) sit at their real positions. A cone around any
other position finds a copy of the default star (TIC 55652896, whose file it gets) just beside the
position, so a catalog of random sources gets TESS data everywhere; :meth:`MastReplay.add_star`
places more.

Knobs, which may change while the server runs:

- ``executing_polls``: each distinct query is answered ``EXECUTING`` this many times first;
- ``pages``: rows are split over this many pages (``paging.pagesFiltered``);
- ``errors``: service name (or ``"*"``) -> message answered with ``status: ERROR``;
- ``match_offset_arcsec``, ``default_gaia_mag``: where the default star's copy sits and its GAIAmag.
"""

from __future__ import annotations

import copy
import json
import math
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

INVOKE_PATH: Final = "/api/v0/invoke"
DOWNLOAD_PATH: Final = "/api/v0.1/Download/file"
PRODUCT_PREFIX: Final = "mast:TESS/product/"
RECORDED: Final = {"tic": "mast/tic.json", "caom": "mast/caom.json", "products": "mast/products.json"}
TESS_DIR: Final = "tess"
BTJD_TO_MJD: Final = 2457000.0 - 2400000.5
FOOTPRINT_DEG: Final = 0.032  # an 11 x 11 pixel stamp is about 0.064 deg across

MastAnswer = tuple[int, bytes, dict[str, str]]
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TessFile:
    """One SPOC lightcurve as MAST lists it, backed by a recorded file."""

    name: str  # productFilename, and the end of its dataURI
    recorded: str  # the file in data/tess
    sector: int
    tstart_btjd: float  # the file's TSTART and TSTOP cards: CAOM's t_min and t_max
    tstop_btjd: float
    cadence_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Star:
    """A TIC star the fake MAST knows, with its lightcurve files."""

    tic: int
    ra_deg: float
    dec_deg: float
    gaia_mag: float | None = None  # None: the recorded row's GAIAmag (null)
    files: tuple[TessFile, ...] = ()


ALERT_FILE: Final = TessFile(
    "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits",
    "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits",
    1,
    1325.293854134574,
    1353.177490771500,
)
# Served under the name of the MAST product its 100 cadences were cut from (lightkurve's tests).
PI_MEN_FILE: Final = TessFile(
    "tess2018206045859-s0001-0000000261136679-0120-s_lc.fits",
    "test-lc-tess-pimen-100-cadences.fits",
    1,
    1325.294877306360,
    1353.177760209343,
)
TIC_55652896: Final = Star(55652896, 73.980231, -63.260063, files=(ALERT_FILE,))
PI_MEN: Final = Star(261136679, 84.30089899016973, -80.4691197969941, files=(PI_MEN_FILE,))
# Cut-short copies, served under their own names (for tests that script them).
BROKEN_FILES: Final = ("test-lc-tess-pimen-corrupted.fits", "test-lc-tess-pimen-corrupted-at-header.fits")


class BadQuery(ValueError):
    """A query the fake MAST answers with ``status: ERROR``."""


class MastReplay:
    """Answers ``/api/v0/invoke`` and ``/api/v0.1/Download/file`` from the recordings."""

    def __init__(self, recorded: Mapping[str, Mapping[str, Any]], tess_dir: Path) -> None:
        self.recorded = recorded
        self.tess_dir = tess_dir
        self.stars: dict[int, Star] = {star.tic: star for star in (TIC_55652896, PI_MEN)}
        self.default_tic = TIC_55652896.tic
        self.default_gaia_mag: float | None = None
        self.match_offset_arcsec = 0.7
        self.executing_polls = 0
        self.pages = 1
        self.errors: dict[str, str] = {}
        self._polls: Counter[str] = Counter()
        self._bytes: dict[str, bytes] = {}
        tic_rows = recorded["tic"]["data"]
        # the other recorded rows keep their offsets (deg on the sky) from the first one
        anchor = tic_rows[0]
        cos_dec = math.cos(math.radians(anchor["dec"]))
        self._neighbours = [
            (row, (row["ra"] - anchor["ra"]) * cos_dec, row["dec"] - anchor["dec"]) for row in tic_rows[1:]
        ]
        self._services: dict[str, Callable[[Mapping[str, Any]], tuple[list[Row], list[Any]]]] = {
            "Mast.Catalogs.Tic.Cone": self._tic_cone,
            "Mast.Catalogs.Filtered.Tic.Rows": self._tic_by_id,
            "Mast.Caom.Filtered": self._caom,
            "Mast.Caom.Products": self._products,
        }

    @classmethod
    def load(cls, data_dir: Path) -> MastReplay:
        """Read the recordings in ``data_dir``."""
        recorded = {key: json.loads((data_dir / name).read_text("utf-8")) for key, name in RECORDED.items()}
        return cls(recorded, data_dir / TESS_DIR)

    def add_star(self, star: Star) -> None:
        """Place (or replace) a star."""
        self.stars[star.tic] = star

    # ------------------------------------------------------------------------------ routes

    async def invoke(self, request: web.Request) -> MastAnswer:
        """``/api/v0/invoke``: the Mashup query in the form field (or query parameter) ``request``."""
        form = await request.post()
        text = form.get("request", request.query.get("request"))
        try:
            doc = json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError as exc:
            return _json(_status("ERROR", f"Invalid request: {exc}"))
        if not isinstance(doc, dict):
            return _json(_status("ERROR", "Invalid request: no JSON object in 'request'"))
        return self.answer(doc)

    async def download(self, request: web.Request) -> MastAnswer:
        """``/api/v0.1/Download/file?uri=mast:TESS/product/<name>``: the file's bytes."""
        uri = request.query.get("uri", "")
        body = self.file_bytes(uri.removeprefix(PRODUCT_PREFIX)) if uri.startswith(PRODUCT_PREFIX) else None
        if body is None:
            return 404, f"File not found: {uri}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"}
        return 200, body, {"Content-Type": "application/octet-stream"}

    # ------------------------------------------------------------------------------ answers

    def answer(self, doc: Mapping[str, Any]) -> MastAnswer:
        """The answer to one Mashup query (``service``, ``params``, ``page``, ``pagesize``)."""
        service = str(doc.get("service", ""))
        message = self.errors.get(service, self.errors.get("*"))
        if message is not None:
            return _json(_status("ERROR", message))
        key = json.dumps(doc, sort_keys=True)
        if self._polls[key] < self.executing_polls:
            self._polls[key] += 1
            return _json(_status("EXECUTING", ""))
        handler = self._services.get(service)
        if handler is None:
            return _json(_status("ERROR", f"Unknown service: {service}"))
        params = doc.get("params")
        try:
            rows, fields = handler(params if isinstance(params, Mapping) else {})
        except BadQuery as exc:
            return _json(_status("ERROR", str(exc)))
        return _json(self._page(rows, fields, _int(doc.get("page"), 1), _int(doc.get("pagesize"), 0)))

    def _page(self, rows: list[Row], fields: list[Any], page: int, pagesize: int) -> dict[str, Any]:
        total = len(rows)
        per = math.ceil(total / self.pages) if total else 1
        per = min(per, pagesize) if pagesize > 0 else per
        part = rows[(page - 1) * per : page * per]
        paging = {
            "page": page,
            "pageSize": per,
            "pagesFiltered": max(1, math.ceil(total / per)),
            "rows": len(part),
            "rowsFiltered": total,
            "rowsTotal": total,
        }
        return {"status": "COMPLETE", "msg": "", "data": part, "fields": fields, "paging": paging}

    def file_bytes(self, name: str) -> bytes | None:
        """The bytes served for a product name (read once), or None when there is no such file."""
        recorded = {f.name: f.recorded for star in self.stars.values() for f in star.files}
        recorded.update({broken: broken for broken in BROKEN_FILES})
        if name not in recorded:
            return None
        if name not in self._bytes:
            self._bytes[name] = (self.tess_dir / recorded[name]).read_bytes()
        return self._bytes[name]

    # ------------------------------------------------------------------------------ TIC

    def _tic_cone(self, params: Mapping[str, Any]) -> tuple[list[Row], list[Any]]:
        ra, dec, radius = (_number(params, key) for key in ("ra", "dec", "radius"))
        radius_arcsec = radius * 3600.0
        stars = [s for s in self.stars.values() if _sep(s.ra_deg, s.dec_deg, ra, dec) <= radius_arcsec]
        if not stars:
            stars = [self._default_star_near(ra, dec)]
        anchor = min(stars, key=lambda s: _sep(s.ra_deg, s.dec_deg, ra, dec))
        rows = [self._tic_row(star) for star in stars] + self._neighbour_rows(anchor)
        for row in rows:
            row["dstArcSec"] = _sep(row["ra"], row["dec"], ra, dec)
        rows = sorted(
            (row for row in rows if row["dstArcSec"] <= radius_arcsec), key=lambda r: r["dstArcSec"]
        )
        return rows, [*self.recorded["tic"]["fields"], {"name": "dstArcSec", "type": "float"}]

    def _tic_by_id(self, params: Mapping[str, Any]) -> tuple[list[Row], list[Any]]:
        ids = _filter_values(params, "ID") or []
        stars = [self.stars[int(i)] for i in ids if i.isdigit() and int(i) in self.stars]
        return [self._tic_row(star) for star in stars], list(self.recorded["tic"]["fields"])

    def _default_star_near(self, ra: float, dec: float) -> Star:
        base = self.stars.get(self.default_tic)
        step = self.match_offset_arcsec / 3600.0
        north = dec + step if dec + step <= 90.0 else dec - step
        return Star(self.default_tic, ra, north, self.default_gaia_mag, base.files if base else ())

    def _tic_row(self, star: Star) -> Row:
        row: Row = copy.deepcopy(self.recorded["tic"]["data"][0])
        row.update(ID=star.tic, ra=round(star.ra_deg, 6), dec=round(star.dec_deg, 6))
        if star.gaia_mag is not None:
            row["GAIAmag"] = star.gaia_mag
        _sky_coordinates(row)
        return row

    def _neighbour_rows(self, anchor: Star) -> list[Row]:
        cos_dec = max(math.cos(math.radians(anchor.dec_deg)), 1e-6)
        rows = []
        for recorded, east, north in self._neighbours:
            row = copy.deepcopy(recorded)
            dec = max(-90.0, min(90.0, anchor.dec_deg + north))
            row.update(ra=round((anchor.ra_deg + east / cos_dec) % 360.0, 6), dec=round(dec, 6))
            _sky_coordinates(row)
            rows.append(row)
        return rows

    # ------------------------------------------------------------------------------ CAOM

    def _caom(self, params: Mapping[str, Any]) -> tuple[list[Row], list[Any]]:
        fields = list(self.recorded["caom"]["fields"])
        collections = _filter_values(params, "obs_collection")
        kinds = _filter_values(params, "dataproduct_type")
        if (collections is not None and "TESS" not in collections) or (
            kinds is not None and "timeseries" not in kinds
        ):
            return [], fields
        names = _filter_values(params, "target_name")
        stars = list(self.stars.values())
        if names is not None:
            stars = [self.stars[int(n)] for n in names if n.isdigit() and int(n) in self.stars]
        return [self._caom_row(star, f) for star in stars for f in star.files], fields

    def _caom_row(self, star: Star, f: TessFile) -> Row:
        row: Row = copy.deepcopy(self.recorded["caom"]["data"][0])
        obsid = _obsid(star, f)
        row.update(
            dataproduct_type="timeseries",
            obs_collection="TESS",
            instrument_name="Photometer",
            project="TESS",
            filters="TESS",
            wavelength_region="Optical",
            target_name=str(star.tic),
            target_classification=None,
            obs_id=_stem(f.name),
            s_ra=star.ra_deg,
            s_dec=star.dec_deg,
            proposal_id=None,
            proposal_pi=None,
            t_min=f.tstart_btjd + BTJD_TO_MJD,
            t_max=f.tstop_btjd + BTJD_TO_MJD,
            t_exptime=f.cadence_s,
            em_min=600.0,
            em_max=1000.0,
            obs_title=None,
            s_region=f"CIRCLE ICRS {star.ra_deg:.8f} {star.dec_deg:.8f} {FOOTPRINT_DEG}",
            jpegURL=None,
            dataURL=PRODUCT_PREFIX + f.name,
            obsid=obsid,
            objID=obsid,
            distance=0.0,
        )
        return row

    def _products(self, params: Mapping[str, Any]) -> tuple[list[Row], list[Any]]:
        wanted = {part.strip() for part in str(params.get("obsid", "")).split(",") if part.strip()}
        rows = []
        for star in self.stars.values():
            for f in star.files:
                if str(_obsid(star, f)) in wanted:
                    rows += [self._product_row(star, f, lightcurve=kind) for kind in (True, False)]
        return rows, list(self.recorded["products"]["fields"])

    def _product_row(self, star: Star, f: TessFile, *, lightcurve: bool) -> Row:
        # templates: a recorded science product for the lightcurve, an auxiliary one for the pixels
        kind = "SCIENCE" if lightcurve else "AUXILIARY"
        template = next(r for r in self.recorded["products"]["data"] if r["productType"] == kind)
        row: Row = copy.deepcopy(template)
        name = f.name if lightcurve else f.name.removesuffix("_lc.fits") + "_tp.fits"
        row.update(
            obsID=_obsid(star, f),
            obs_collection="TESS",
            dataproduct_type="timeseries",
            obs_id=_stem(f.name),
            description="Light curves" if lightcurve else "Target pixel files",
            dataURI=PRODUCT_PREFIX + name,
            productType="SCIENCE",
            productGroupDescription="Minimum Recommended Products" if lightcurve else None,
            productSubGroupDescription="LC" if lightcurve else "TP",
            project="TESS",
            productFilename=name,
        )
        if lightcurve:
            row["size"] = (self.tess_dir / f.recorded).stat().st_size
        return row


# ---------------------------------------------------------------------------------- helpers


def _status(status: str, msg: str) -> dict[str, Any]:
    return {"status": status, "msg": msg, "data": [], "fields": []}


def _json(doc: Mapping[str, Any]) -> MastAnswer:
    return 200, json.dumps(doc).encode("utf-8"), {"Content-Type": "application/json; charset=utf-8"}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _number(params: Mapping[str, Any], key: str) -> float:
    try:
        value = float(params[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadQuery(f"Missing or invalid parameter '{key}'") from exc
    if not math.isfinite(value):
        raise BadQuery(f"Invalid parameter '{key}': {value}")
    return value


def _filter_values(params: Mapping[str, Any], name: str) -> list[str] | None:
    """The values of one Mashup filter (``[{"paramName": ..., "values": [...]}]``), or None."""
    filters = params.get("filters")
    for entry in filters if isinstance(filters, Sequence) else ():
        if isinstance(entry, Mapping) and entry.get("paramName") == name:
            return [str(value) for value in entry.get("values", ())]
    return None


def _sep(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Angular distance in arcsec (haversine)."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    hav = math.sin((d1 - d2) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r1 - r2) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(min(1.0, hav)))) * 3600.0


def _obsid(star: Star, f: TessFile) -> int:
    return 60_000_000_000 + zlib.crc32(f"{star.tic}/{f.name}".encode())


def _stem(name: str) -> str:
    return name.removesuffix("_lc.fits")


def _sky_coordinates(row: Row) -> None:
    """Galactic and ecliptic coordinates of a moved TIC row, rounded as the recording has them."""
    from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord  # slow import: only when asked

    here = SkyCoord(row["ra"], row["dec"], unit="deg")
    galactic = here.galactic
    ecliptic = here.transform_to(BarycentricMeanEcliptic())
    row.update(
        gallong=round(float(galactic.l.deg), 3),
        gallat=round(float(galactic.b.deg), 3),
        eclong=round(float(ecliptic.lon.deg), 6),
        eclat=round(float(ecliptic.lat.deg), 6),
    )
