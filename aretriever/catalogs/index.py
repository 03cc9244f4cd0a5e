"""Row look-ups on a catalog: by row number or name, nearest row on the sky, proper motion.

The sky index sorts the rows by declination once; a cone search then binary-searches the band
``dec ± radius`` and measures true angular distances only inside it, so a look-up costs
O(log N + rows in the band) instead of O(N), and a cone that straddles RA 0/360 needs no special
case (scipy, which would give a KD-tree, is not a dependency of this project).

Proper motion is applied with astropy (``SkyCoord.apply_space_motion``, i.e. ERFA ``pmsafe``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import pandas as pd

from aretriever.catalogs.names import duplicate_names, names_text
from aretriever.errors import CatalogError
from aretriever.numbers import separation_deg
from aretriever.settings import ColumnMap

Array = np.ndarray[Any, Any]

ARCSEC_PER_DEG: Final = 3600.0
# ERFA pmsafe replaces a parallax below max(PXMIN, F x proper motion) by that bound and warns; we
# apply the same bound ourselves, so the answer is the same and no warning is raised.
_PMSAFE_PXMIN_ARCSEC: Final = 5e-7
_PMSAFE_F: Final = 326.0
_MAS_YR_TO_RAD_YR: Final = math.radians(1.0 / 3_600_000.0)


@dataclass(frozen=True, slots=True)
class SkyIndex:
    """Row positions sorted by declination, for cone searches faster than a full scan."""

    dec_sorted: Array
    ra_sorted: Array
    rows: Array  # row number of each sorted entry

    @classmethod
    def build(cls, ra: Array, dec: Array) -> SkyIndex:
        """An index of the rows with finite coordinates (row numbers are positions in ``ra``)."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        keep = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
        order = keep[np.argsort(dec[keep], kind="stable")]
        return cls(dec[order], ra[order] % 360.0, order)

    def __len__(self) -> int:
        return len(self.rows)

    def cone(self, ra: float, dec: float, radius_arcsec: float) -> tuple[Array, Array]:
        """Row numbers within ``radius_arcsec`` of (ra, dec), and their distances in arcsec."""
        if not radius_arcsec > 0:
            raise CatalogError(f"catalog: search radius must be positive (got {radius_arcsec} arcsec)")
        radius_deg = radius_arcsec / ARCSEC_PER_DEG
        lo = int(np.searchsorted(self.dec_sorted, dec - radius_deg, side="left"))
        hi = int(np.searchsorted(self.dec_sorted, dec + radius_deg, side="right"))
        distance = separation_deg(self.ra_sorted[lo:hi], self.dec_sorted[lo:hi], ra, dec)
        inside = distance * ARCSEC_PER_DEG <= radius_arcsec
        return self.rows[lo:hi][inside], distance[inside] * ARCSEC_PER_DEG

    def nearest(self, ra: float, dec: float, radius_arcsec: float) -> tuple[int, float] | None:
        """(row number, distance in arcsec) of the closest row within the radius, or None."""
        rows, distance = self.cone(ra, dec, radius_arcsec)
        if len(rows) == 0:
            return None
        best = int(np.argmin(distance))
        return int(rows[best]), float(distance[best])


class _Chunked(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> ColumnMap: ...

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]: ...


class CatalogLookup:
    """A whole catalog in memory, with a name index and a sky index (built on first use)."""

    def __init__(self, frame: pd.DataFrame, columns: ColumnMap, what: str) -> None:
        for column in (columns.name, columns.ra, columns.dec):
            if column not in frame.columns:
                raise CatalogError(
                    f"catalog: {what}: column {column!r} not found; the catalog has {list(frame.columns)}"
                )
        self.frame = frame.reset_index(drop=True)
        self.columns = columns
        self.what = what
        self._names: pd.Series | None = None
        self._repeated: dict[str, list[int]] = {}
        self._sky: SkyIndex | None = None

    @classmethod
    def load(cls, catalog: _Chunked) -> CatalogLookup:
        """Read every chunk of ``catalog`` into one frame."""
        chunks = list(catalog.iter_chunks())
        frame = pd.concat(chunks) if chunks else pd.DataFrame(columns=[catalog.columns.name])
        return cls(frame, catalog.columns, catalog.name)

    @property
    def sky(self) -> SkyIndex:
        if self._sky is None:
            ra = pd.to_numeric(self.frame[self.columns.ra], errors="coerce").to_numpy(float)
            dec = pd.to_numeric(self.frame[self.columns.dec], errors="coerce").to_numpy(float)
            self._sky = SkyIndex.build(ra, dec)
        return self._sky

    def row_number(self, key: int | str) -> int:
        """The row number of ``key``: a row number itself, or a source name."""
        if isinstance(key, int | np.integer):
            if not 0 <= int(key) < len(self.frame):
                raise CatalogError(
                    f"catalog: {self.what}: row {key} out of range (the catalog has {len(self.frame)} rows)"
                )
            return int(key)
        if self._names is None:
            self._names, self._repeated = _name_index(self.frame[self.columns.name])
        row = self._names.get(key.strip())
        if row is None:
            raise CatalogError(f"catalog: {self.what}: no row named {key!r}")
        if key.strip() in self._repeated:
            rows = ", ".join(map(str, self._repeated[key.strip()]))
            raise CatalogError(f"catalog: {self.what}: the name {key!r} is on several rows ({rows})")
        return int(row)

    def get_row(self, key: int | str) -> pd.Series:
        """The row with this row number or name (its ``name`` is the row number)."""
        return self.frame.iloc[self.row_number(key)]

    def get_nearest_row(self, ra: float, dec: float, radius_arcsec: float) -> pd.Series | None:
        """The closest row within ``radius_arcsec`` of (ra, dec), with ``distance_arcsec`` added."""
        found = self.sky.nearest(float(ra) % 360.0, float(dec), float(radius_arcsec))
        if found is None:
            return None
        row = self.frame.iloc[found[0]].copy()
        row["distance_arcsec"] = found[1]
        return row


def _name_index(names: pd.Series) -> tuple[pd.Series, dict[str, list[int]]]:
    """Row number by exact name text (``catalog_names.names_text``; 1.3 M names in about a second),
    and the rows of every name on more than one row (a look-up of those fails, naming them)."""
    index = pd.Index(names_text(names.reset_index(drop=True)))
    first = ~index.duplicated()
    return pd.Series(np.flatnonzero(first), index=index[first]), duplicate_names([pd.Series(index)])


class Lookups:
    """Mixin: ``get_row`` and ``get_nearest_row`` for a catalog that streams chunks.

    The first look-up reads the whole catalog once (for the white-dwarf catalog, about 100 MB);
    streaming to the engine never does.
    """

    __slots__ = ()
    _lookup: CatalogLookup | None

    def lookup(self: Any) -> CatalogLookup:
        """The in-memory look-up, built on first use."""
        if self._lookup is None:
            self._lookup = CatalogLookup.load(self)
        return self._lookup  # type: ignore[no-any-return]

    def get_row(self, index_or_name: int | str, index_type: str | None = None, output: str = "pandas") -> Any:
        """The row with this row number (0-based) or source name.

        ``index_type`` (``"number"`` or ``"name"``) and ``output`` (``"pandas"``, ``"dict"``,
        ``"list"``) are the seed's arguments: ``catalog.get_row(7, "number", "dict")``.

        Raises
        ------
        CatalogError
            If the number is out of range, no row has that name, or an argument is unknown.
        """
        if index_type not in (None, "number", "name"):
            raise CatalogError(f"catalog: index_type must be 'number' or 'name' (got {index_type!r})")
        key: int | str = str(index_or_name) if index_type == "name" else index_or_name
        if index_type == "number":
            key = int(index_or_name)
        row = self.lookup().get_row(key)
        if output == "pandas":
            return row
        if output == "dict":
            return row.to_dict()
        if output == "list":
            return row.tolist()
        raise CatalogError(f"catalog: output must be 'pandas', 'dict' or 'list' (got {output!r})")

    def get_nearest_row(self, ra: float, dec: float, radius_arcsec: float) -> pd.Series | None:
        """The row closest to (ra, dec) in degrees, if it is within ``radius_arcsec``.

        The row carries an extra ``distance_arcsec`` entry. Safe across RA 0/360 and at the poles.
        """
        return self.lookup().get_nearest_row(ra, dec, radius_arcsec)


# -------------------------------------------------------------------------- proper motion


def _safe_parallax_mas(parallax: Array, pmra: Array, pmdec: Array) -> Array:
    pm_rad_yr = np.hypot(pmra, pmdec) * _MAS_YR_TO_RAD_YR
    floor_mas = 1000.0 * np.maximum(_PMSAFE_F * pm_rad_yr, _PMSAFE_PXMIN_ARCSEC) * 1.000001
    plx = np.where(np.isfinite(parallax), parallax, 0.0)
    return np.asarray(np.maximum(plx, floor_mas))


def propagate(
    ra: Array,
    dec: Array,
    pmra: Array,
    pmdec: Array,
    parallax: Array | None,
    from_epoch_yr: float,
    to_epoch_yr: float,
) -> tuple[Array, Array]:
    """Positions (deg) moved from one Julian epoch to another by their proper motions.

    Parameters
    ----------
    ra, dec : array
        Positions at ``from_epoch_yr`` (deg, ICRS).
    pmra, pmdec : array
        Proper motions (mas/yr; ``pmra`` includes cos(dec), as Gaia gives it). NaN counts as 0.
    parallax : array or None
        Parallaxes (mas); only used for the (tiny) perspective terms. Missing, zero or negative
        parallaxes are replaced as ERFA would do it.
    from_epoch_yr, to_epoch_yr : float
        Julian years, e.g. 2016.0 (Gaia EDR3/DR3) and 2019.5.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.time import Time

    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    pmra = np.nan_to_num(np.asarray(pmra, dtype=float))
    pmdec = np.nan_to_num(np.asarray(pmdec, dtype=float))
    plx = np.full(ra.shape, np.nan) if parallax is None else np.asarray(parallax, dtype=float)
    coords = SkyCoord(
        ra=ra * u.deg,
        dec=dec * u.deg,
        distance=(1000.0 / _safe_parallax_mas(plx, pmra, pmdec)) * u.pc,
        pm_ra_cosdec=pmra * u.mas / u.yr,
        pm_dec=pmdec * u.mas / u.yr,
        radial_velocity=np.zeros(ra.shape) * u.km / u.s,
        obstime=Time(from_epoch_yr, format="jyear", scale="tcb"),
    )
    moved = coords.apply_space_motion(new_obstime=Time(to_epoch_yr, format="jyear", scale="tcb"))
    return np.asarray(moved.ra.deg), np.asarray(moved.dec.deg)


def propagate_frame(
    frame: pd.DataFrame, columns: ColumnMap, from_epoch_yr: float, to_epoch_yr: float
) -> pd.DataFrame:
    """``frame`` with its ra/dec columns moved to ``to_epoch_yr`` (the originals kept as ``*_ref``).

    Rows with a bad position keep it, so the engine still reports them as bad rows.
    """
    if columns.pmra is None or columns.pmdec is None or columns.pmra not in frame.columns:
        return frame
    ra = pd.to_numeric(frame[columns.ra], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(frame[columns.dec], errors="coerce").to_numpy(float)
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    parallax = frame["parallax"].to_numpy(float) if "parallax" in frame.columns else None
    new_ra, new_dec = ra.copy(), dec.copy()
    if ok.any():
        new_ra[ok], new_dec[ok] = propagate(
            ra[ok],
            dec[ok],
            pd.to_numeric(frame[columns.pmra], errors="coerce").to_numpy(float)[ok],
            pd.to_numeric(frame[columns.pmdec], errors="coerce").to_numpy(float)[ok],
            None if parallax is None else parallax[ok],
            from_epoch_yr,
            to_epoch_yr,
        )
    out = frame.copy()
    out[f"{columns.ra}_ref"], out[f"{columns.dec}_ref"] = ra, dec
    out[columns.ra], out[columns.dec] = new_ra % 360.0, new_dec
    return out


# -------------------------------------------------------------------------- WDJ names


def _sexagesimal(value: float, hundredths_per_unit: int) -> tuple[int, int, int, int]:
    """Whole units, minutes, seconds and hundredths, truncated (designations never round up)."""
    total = math.floor(value * hundredths_per_unit + 1e-7)
    hundredths = total % 100
    seconds = (total // 100) % 60
    minutes = (total // 6000) % 60
    return total // 360000, minutes, seconds, hundredths


def wdj_name(ra2000_deg: float, dec2000_deg: float) -> str:
    """``WDJhhmmss.ss±ddmmss.ss`` from J2000 coordinates at epoch 2000 (Gentile Fusillo et al.)."""
    h, m, s, cs = _sexagesimal((ra2000_deg % 360.0) / 15.0, 360000)
    sign = "-" if dec2000_deg < 0 else "+"
    d, dm, ds, dcs = _sexagesimal(abs(dec2000_deg), 360000)
    return f"WDJ{h:02d}{m:02d}{s:02d}.{cs:02d}{sign}{d:02d}{dm:02d}{ds:02d}.{dcs:02d}"


def wdj_names(
    ra: Array, dec: Array, pmra: Array, pmdec: Array, parallax: Array | None, epoch_yr: float = 2016.0
) -> list[str]:
    """WDJ names of Gaia positions at ``epoch_yr``: moved back to epoch 2000, then formatted."""
    ra2000, dec2000 = propagate(ra, dec, pmra, pmdec, parallax, epoch_yr, 2000.0)
    return [wdj_name(float(r), float(d)) for r, d in zip(ra2000, dec2000, strict=True)]
