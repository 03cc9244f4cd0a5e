"""Export a lightcurve to SkyPortal's photometric-series HDF5 file.

The format, as SkyPortal reads it (read in https://github.com/skyportal/skyportal, paths below;
sncosmo: https://github.com/sncosmo/sncosmo):

- ``doc/photometric_series.md`` ("Creating a binary file") and ``skyportal/utils/hdf5_files.py``
  (``dump_dataframe_to_bytestream`` / ``load_dataframe_from_bytestream``): one pandas DataFrame
  per file, under any single key, written by
  ``pd.HDFStore.put(key, df, format="table", index=None, track_times=False)``; the series metadata
  is a dict attribute ``metadata`` of that key (``store.get_storer(key).attrs.metadata``). The
  frame needs ``mjd`` and ``flux`` or ``mag``; ``magerr``/``fluxerr`` are used for display; ``ra``,
  ``dec``, ``exp_time``/``exptime`` and a one-valued ``filter`` column are used to infer the
  series' values; other columns are kept for download only.
- ``skyportal/models/photometric_series.py``: the metadata keys SkyPortal accepts
  (``REQUIRED_ATTRIBUTES``, ``INFERABLE_ATTRIBUTES``, ``OPTIONAL_ATTRIBUTES``; any other key is
  rejected on upload) and the flux convention: ``flux`` is in microJansky, magnitudes are AB with
  ``PHOT_ZP = 23.9``, and ``flux`` is preferred over ``mag`` when both are present.
- ``skyportal/enum_types.py``: ``filter`` must be a bandpass name of the sncosmo registry;
  sncosmo's ``sncosmo/builtins.py`` registers ``ztfg``, ``ztfr``, ``ztfi`` (P48 g/R/I) and ``tess``.
- ``skyportal/models/schema.py`` (``PhotMagFlexible``/``PhotFluxFlexible``, the documented input
  of ``PhotometryHandler.post``): the per-point columns ``mjd, mag, magerr, limiting_mag, magsys,
  filter`` and ``flux, fluxerr, zp`` (``m = -2.5 log10(flux) + zp``); they are written too, so the
  same frame can also be sent point by point (``df.to_dict("list")``).

What is written, per row: ``mjd``, ``mag``, ``magerr``, ``limiting_mag`` (ZTF's ``limitmag``
when present, else the 5-sigma limit from ``fluxerr``), ``magsys``, ``filter`` (sncosmo name),
``flux``/``fluxerr`` (zero point 23.9: microJansky for AB magnitudes), ``zp`` (23.9), and, when the
lightcurve has them, ``exp_time``, ``ra``, ``dec``. Rows with a NaN magnitude stay (NaN).
ZTF magnitudes are AB (``magsys='ab'``). TESS magnitudes (zero point 20.44 e-/s) are on the
Vega-based TESS system, so TESS rows say ``magsys='vega'``; SkyPortal's photometric-series ingest
itself ignores ``magsys`` and reads magnitudes as AB.

The file is written without PyTables (not a dependency here): :func:`write_skyportal_h5` lays out
the HDF5 nodes and attributes that pandas 3.1 + PyTables 3.11 write for
``HDFStore.put(..., format="table")``: a ``frame_table`` group whose ``table`` is a compound
dataset (``index`` plus one ``values_block_<i>`` per dtype), with list/dict/None attributes
pickled (protocol 0) into ASCII strings and text attributes as UTF-8 strings, as PyTables does.
Such files were read back with ``pd.HDFStore`` (PyTables 3.11.1) to the same frame and metadata;
plain h5py reads them too. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np
import pandas as pd
from h5py import h5a, h5s, h5t

from aretriever.errors import ExportError
from aretriever.store.hdf5 import atomic_path

Array = np.ndarray[Any, Any]

SKYPORTAL_ZP: Final = 23.9  # SkyPortal's PHOT_ZP: AB mag of 1 microJansky
TESS_ZP: Final = 20.44  # TESS instrumental zero point (mag of 1 e-/s), as in TessReducerConfig
DETECTION_NSIGMA: Final = 5.0  # limiting magnitude when the archive gives none
DEFAULT_KEY: Final = "phot_series"  # SkyPortal's own default key name
_MAG_PER_LN: Final = 2.5 / math.log(10.0)

#: Metadata keys SkyPortal accepts for a photometric series (photometric_series.py).
SKYPORTAL_METADATA_KEYS: Final = frozenset(
    {
        # REQUIRED_ATTRIBUTES
        "series_name", "series_obj_id", "obj_id", "instrument_id", "owner_id", "group_ids", "stream_ids",
        # INFERABLE_ATTRIBUTES
        "ra", "dec", "exp_time", "filter",
        # OPTIONAL_ATTRIBUTES
        "channel", "origin", "magref", "magref_unc", "ra_unc", "dec_unc", "followup_request_id",
        "assignment_id", "time_stamp_alignment", "altdata",
    }
)  # fmt: skip

_ZTF_BANDS: Final = {"zg": "ztfg", "zr": "ztfr", "zi": "ztfi", "g": "ztfg", "r": "ztfr", "i": "ztfi"}


@dataclass(frozen=True, slots=True)
class _Observatory:
    """How one observatory's lightcurve maps onto SkyPortal photometry."""

    bands: Mapping[str, str]  # accepted filter names (lower case) -> sncosmo bandpass name
    magsys: str
    flux_zp: float | None  # zero point of the frame's own ``flux`` column; None: derive it from mag


OBSERVATORIES: Final[Mapping[str, _Observatory]] = {
    "ztf": _Observatory(_ZTF_BANDS, "ab", None),
    "tess": _Observatory({"tess": "tess"}, "vega", TESS_ZP),
    # the simulated observatory draws AB magnitudes in ZTF-like g/r/i
    "demo": _Observatory(_ZTF_BANDS, "ab", None),
}


def sncosmo_band(filter: str, observatory: str) -> str:
    """Return SkyPortal's (sncosmo's) bandpass name for an observatory's filter.

    Parameters
    ----------
    filter : str
        The filter as the archive names it: ZTF ``zg``/``zr``/``zi`` or ``g``/``r``/``i``,
        TESS ``tess``; an sncosmo name of that observatory (``ztfr``) is accepted as is.
        Case is ignored.
    observatory : str
        ``ztf``, ``tess`` or ``demo`` (case ignored).

    Raises
    ------
    ExportError
        If the observatory or the filter is unknown; the message names it and the known ones.
    """
    obs = _observatory(observatory)
    name = str(filter).strip().lower()
    if name in obs.bands:
        return obs.bands[name]
    if name in obs.bands.values():
        return name
    known = ", ".join(sorted(set(obs.bands) | set(obs.bands.values())))
    raise ExportError(f"export: unknown filter {filter!r} for observatory {observatory!r} (known: {known})")


def _observatory(observatory: str) -> _Observatory:
    try:
        return OBSERVATORIES[observatory.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(OBSERVATORIES))
        raise ExportError(f"export: unknown observatory {observatory!r} (known: {known})") from None


def to_skyportal(
    lc: pd.DataFrame,
    filter: str,
    observatory: str,
    path: Path | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    key: str = DEFAULT_KEY,
) -> pd.DataFrame:
    """Build SkyPortal's photometry table of one single-filter lightcurve; write it if ``path``.

    Parameters
    ----------
    lc : pandas.DataFrame
        A reduced or processed lightcurve (not modified): ``mjd`` and ``mag`` (or, for TESS,
        ``flux``) are required; ``magerr``, ``fluxerr``, ``limitmag``, ``exptime``, ``ra``, ``dec``
        and ``filtercode`` are used when present.
    filter : str
        The lightcurve's filter (``zg``, ``r``, ``tess``...); mapped with :func:`sncosmo_band`.
        A ``filtercode`` column, if any, must agree with it.
    observatory : str
        ``ztf``, ``tess`` or ``demo``: decides the magnitude system and the flux zero point.
    path : Path, optional
        Where to write the HDF5 file (folders are created; an existing file is replaced).
    metadata : Mapping, optional
        More series metadata (``series_name``, ``obj_id``, ``instrument_id``...); only the keys
        SkyPortal accepts (:data:`SKYPORTAL_METADATA_KEYS`) are allowed. They override the values
        inferred from the lightcurve (``filter``, ``exp_time``, ``ra``, ``dec``, ``altdata``).
    key : str
        The HDF5 key of the table (SkyPortal accepts any single key).

    Returns
    -------
    pandas.DataFrame
        The table as written; its ``attrs["metadata"]`` holds the series metadata.

    Raises
    ------
    ExportError
        Unknown observatory or filter, filters that disagree, missing columns, bad metadata keys.
    WriteError
        If the file cannot be written (no file is left under ``path``).
    """
    obs = _observatory(observatory)
    band = sncosmo_band(filter, observatory)
    _check_filtercode(lc, band, observatory)
    table = _photometry_table(lc, band, obs)
    meta = series_metadata(lc, band, observatory, metadata)
    if path is not None:
        write_skyportal_h5(Path(path), table, meta, key=key)
    table.attrs["metadata"] = meta
    return table


def _check_filtercode(lc: pd.DataFrame, band: str, observatory: str) -> None:
    if "filtercode" not in lc:
        return
    codes = pd.unique(lc["filtercode"].dropna().astype(str))
    bands = {sncosmo_band(code, observatory) for code in codes}
    if bands - {band}:
        raise ExportError(
            f"export: the lightcurve's filtercode column holds {sorted(codes)}, "
            f"which is not the single filter {band!r} asked for"
        )


def _column(lc: pd.DataFrame, name: str) -> Array:
    if name not in lc:
        return np.full(len(lc), np.nan)
    return np.asarray(pd.to_numeric(lc[name], errors="coerce"), dtype=np.float64)


def _flux(lc: pd.DataFrame, obs: _Observatory) -> tuple[Array, Array]:
    """Flux and error at zero point 23.9: the frame's own flux rescaled, or derived from mag."""
    if obs.flux_zp is not None and "flux" in lc:
        scale = 10.0 ** (0.4 * (SKYPORTAL_ZP - obs.flux_zp))
        return _column(lc, "flux") * scale, _column(lc, "fluxerr") * scale
    flux = 10.0 ** (-0.4 * (_column(lc, "mag") - SKYPORTAL_ZP))
    return flux, flux * _column(lc, "magerr") / _MAG_PER_LN


def _magnitudes(lc: pd.DataFrame, flux: Array, fluxerr: Array) -> tuple[Array, Array]:
    if "mag" in lc:
        return _column(lc, "mag"), _column(lc, "magerr")
    positive = flux > 0
    safe = np.where(positive, flux, 1.0)
    mag = np.where(positive, SKYPORTAL_ZP - 2.5 * np.log10(safe), np.nan)
    return mag, np.where(positive, _MAG_PER_LN * fluxerr / safe, np.nan)


def _limiting_mag(lc: pd.DataFrame, fluxerr: Array) -> Array:
    if "limitmag" in lc:
        return _column(lc, "limitmag")
    noise = DETECTION_NSIGMA * fluxerr
    ok = noise > 0
    return np.where(ok, SKYPORTAL_ZP - 2.5 * np.log10(np.where(ok, noise, 1.0)), np.nan)


def _photometry_table(lc: pd.DataFrame, band: str, obs: _Observatory) -> pd.DataFrame:
    if "mjd" not in lc or ("mag" not in lc and "flux" not in lc):
        raise ExportError(f"export: the lightcurve needs 'mjd' and 'mag' or 'flux' (has {list(lc.columns)})")
    flux, fluxerr = _flux(lc, obs)
    mag, magerr = _magnitudes(lc, flux, fluxerr)
    n = len(lc)
    table = pd.DataFrame(
        {
            "mjd": _column(lc, "mjd"),
            "mag": mag,
            "magerr": magerr,
            "limiting_mag": _limiting_mag(lc, fluxerr),
            "magsys": np.full(n, obs.magsys, dtype=object),
            "filter": np.full(n, band, dtype=object),
            "flux": flux,
            "fluxerr": fluxerr,
            "zp": np.full(n, SKYPORTAL_ZP),
        }
    )
    for source, target in (("exptime", "exp_time"), ("exp_time", "exp_time"), ("ra", "ra"), ("dec", "dec")):
        if source in lc and target not in table:
            table[target] = _column(lc, source)
    return table


def _median_ra(ra: Array) -> float:
    """Median right ascension that survives the 0/360 wrap (relative to the first value)."""
    ref = ra[0]
    return float((ref + np.median((ra - ref + 180.0) % 360.0 - 180.0)) % 360.0)


def series_metadata(
    lc: pd.DataFrame, band: str, observatory: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The series metadata SkyPortal reads from the file: inferred values, then ``extra``.

    Inferred: ``filter``; ``exp_time`` (median ``exptime``), ``ra``/``dec`` (medians, RA wrap safe)
    when the lightcurve has them; ``altdata`` naming the observatory and magnitude system.

    Raises
    ------
    ExportError
        If ``extra`` has a key SkyPortal would reject.
    """
    obs = _observatory(observatory)
    meta: dict[str, Any] = {"filter": band}
    exptime = _finite(_column(lc, "exptime") if "exptime" in lc else _column(lc, "exp_time"))
    if exptime.size:
        meta["exp_time"] = float(np.median(exptime))
    ra, dec = _finite(_column(lc, "ra")), _finite(_column(lc, "dec"))
    if ra.size and dec.size:
        meta["ra"], meta["dec"] = _median_ra(ra), float(np.median(dec))
    meta["altdata"] = {"observatory": observatory.strip().lower(), "magsys": obs.magsys}
    unknown = sorted(set(extra or {}) - SKYPORTAL_METADATA_KEYS)
    if unknown:
        raise ExportError(
            f"export: SkyPortal rejects metadata keys {unknown}; allowed: {sorted(SKYPORTAL_METADATA_KEYS)}"
        )
    meta.update(extra or {})
    return meta


def _finite(values: Array) -> Array:
    return values[np.isfinite(values)]


# --- the pandas/PyTables "frame_table" layout, written with h5py ---------------------------------


def _string_type(size: int, *, utf8: bool) -> h5t.TypeID:
    tid = h5t.C_S1.copy()
    tid.set_size(max(size, 1))
    tid.set_strpad(h5t.STR_NULLTERM)
    tid.set_cset(h5t.CSET_UTF8 if utf8 else h5t.CSET_ASCII)
    return tid


def _set_string(node: h5py.HLObject, name: str, value: bytes, *, utf8: bool = True) -> None:
    # PyTables reads a UTF-8 string attribute back as ``str`` and an ASCII one as ``bytes``
    # (which it unpickles when it ends with b"."): pandas compares the first kind to ``str``.
    tid = _string_type(len(value), utf8=utf8)
    attr = h5a.create(node.id, name.encode(), tid, h5s.create(h5s.SCALAR))
    attr.write(np.array(value, dtype=f"S{max(len(value), 1)}"), mtype=tid)


def _set_text(node: h5py.HLObject, name: str, value: str) -> None:
    _set_string(node, name, value.encode("utf-8"))


def _set_pickled(node: h5py.HLObject, name: str, value: object) -> None:
    # PyTables stores lists, dicts and None pickled (protocol 0) in an ASCII string attribute.
    _set_string(node, name, pickle.dumps(value, protocol=0), utf8=False)


def _set_bool(node: h5py.HLObject, name: str, value: bool) -> None:
    # PyTables writes numpy booleans as an 8-bit HDF5 bitfield; h5py would write an enum.
    attr = h5a.create(node.id, name.encode(), h5t.STD_B8LE, h5s.create(h5s.SCALAR))
    attr.write(np.array(int(value), dtype=np.uint8), mtype=h5t.NATIVE_B8)


def _pytables_node(node: h5py.HLObject, cls: str, version: str) -> None:
    _set_text(node, "CLASS", cls)
    # an empty TITLE: a one-byte UTF-8 string type over a null dataspace, as PyTables writes it
    h5a.create(node.id, b"TITLE", _string_type(1, utf8=True), h5s.create(h5s.NULL))
    _set_text(node, "VERSION", version)


@dataclass(frozen=True, slots=True)
class _Block:
    name: str
    columns: list[str]
    values: Array  # (rows, len(columns))
    dtype_name: str
    meta: str | None


def _blocks(table: pd.DataFrame) -> list[_Block]:
    """Group the columns like pandas does: one float64 block, then one text block."""
    numbers = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    texts = [c for c in table.columns if c not in numbers]
    blocks: list[_Block] = []
    if numbers:
        values = table[numbers].to_numpy(dtype=np.float64)
        blocks.append(_Block(f"values_block_{len(blocks)}", numbers, values, "float64", None))
    if texts:
        encoded = [[str(v).encode("utf-8") for v in table[c].tolist()] for c in texts]
        width = max((len(v) for col in encoded for v in col), default=1) or 1
        values = np.array(encoded, dtype=f"S{width}").T
        blocks.append(_Block(f"values_block_{len(blocks)}", texts, values, f"bytes{8 * width}", "str"))
    return blocks


def _records(n: int, blocks: list[_Block]) -> Array:
    fields: list[tuple[str, Any, tuple[int, ...]]] = [("index", np.int64, ())]
    fields += [(b.name, b.values.dtype, (len(b.columns),)) for b in blocks]
    records = np.zeros(n, dtype=np.dtype(fields))
    records["index"] = np.arange(n, dtype=np.int64)
    for b in blocks:
        records[b.name] = b.values
    return records


def _write_table_node(group: h5py.Group, n: int, blocks: list[_Block]) -> None:
    records = _records(n, blocks)
    dset = group.create_dataset("table", data=records, maxshape=(None,), chunks=(max(n, 1),))
    _pytables_node(dset, "TABLE", "2.7")
    for i, name in enumerate(records.dtype.names or ()):
        _set_text(dset, f"FIELD_{i}_NAME", name)
        dset.attrs[f"FIELD_{i}_FILL"] = np.zeros((), dtype=records.dtype[name].base)
    dset.attrs["NROWS"] = np.int64(n)
    _set_text(dset, "index_kind", "integer")
    for b in blocks:
        _set_text(dset, f"{b.name}_dtype", b.dtype_name)
        _set_pickled(dset, f"{b.name}_kind", b.columns)
        if b.meta is None:
            _set_pickled(dset, f"{b.name}_meta", None)
        else:
            _set_text(dset, f"{b.name}_meta", b.meta)


def _write_group(h5: h5py.File, key: str, table: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    blocks = _blocks(table)
    group = h5.create_group(key)
    _pytables_node(group, "GROUP", "1.0")
    _set_pickled(group, "data_columns", [])
    _set_text(group, "encoding", "UTF-8")
    _set_text(group, "errors", "strict")
    _set_pickled(group, "index_cols", [(0, "index")])
    info: dict[Any, Any] = {1: {"names": [None], "type": "Index"}, "index": {}}
    info.update({b.name: {} for b in blocks})
    _set_pickled(group, "info", info)
    group.attrs["levels"] = np.int64(1)
    _set_pickled(group, "metadata", dict(meta))
    _set_bool(group, "mi_level_nan_rep", False)
    _set_bool(group, "data_col_nan_rep", True)
    _set_pickled(group, "nan_rep", None)
    _set_pickled(group, "non_index_axes", [(1, [str(c) for c in table.columns])])
    _set_text(group, "pandas_type", "frame_table")
    _set_text(group, "table_type", "appendable_frame")
    _set_pickled(group, "values_cols", [b.name for b in blocks])
    _write_table_node(group, len(table), blocks)


def write_skyportal_h5(
    path: Path, table: pd.DataFrame, metadata: Mapping[str, Any], *, key: str = DEFAULT_KEY
) -> None:
    """Write ``table`` as SkyPortal's photometric-series file (pandas ``format="table"`` layout).

    Numeric columns are stored as float64, every other column as UTF-8 text; the index is not
    kept (rows are numbered 0..n-1). ``metadata`` becomes the key's ``metadata`` attribute.

    Raises
    ------
    WriteError
        If the file cannot be written; the temporary file is removed and ``path`` is untouched.
    """
    with atomic_path(path, "export") as tmp, h5py.File(tmp, "w", track_order=False) as h5:
        _pytables_node(h5, "GROUP", "1.0")
        _set_text(h5, "PYTABLES_FORMAT_VERSION", "2.1")
        _write_group(h5, key, table.reset_index(drop=True), metadata)
