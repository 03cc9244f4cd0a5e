"""Reading SPOC ``*_lc.fits`` lightcurve files into the raw table (runs in the process pool).

Each file gives its cadences with the header cards the reducer needs carried as columns
(:data:`aretriever.adapters.tess.TABLE_HEADERS`), so a raw table read back from HDF5 can be reduced
again without the files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from astropy.io import fits

from aretriever.errors import PermanentFetchError
from aretriever.numbers import finite_or_none

# relative: this folder installs as aretriever.adapters, and mypy reads it as ``adapters``
from .fits_checks import broken_file, check_fits_layout

#: Header cards kept per sector beside the raw table: the star's from the primary HDU (whose
#: RA_OBJ/DEC_OBJ are the TIC's J2000 position; HDU 1 may carry them moved to the observation
#: epoch), the times' from the LIGHTCURVE HDU.
PRIMARY_KEYS: Final = (
    "OBJECT", "TICID", "SECTOR", "CAMERA", "CCD", "TESSMAG", "RA_OBJ", "DEC_OBJ", "PROCVER", "DATA_REL",
)  # fmt: skip
LIGHTCURVE_KEYS: Final = ("TIMEDEL", "DEADC", "BJDREFI", "BJDREFF", "TIMESYS", "TSTART", "TSTOP")
#: Per-sector header values the reducer needs, carried as columns of the raw table so that a raw
#: table read back from HDF5 (without its attributes) can be reduced again.
TABLE_HEADERS: Final[dict[str, str]] = {
    "SECTOR": "int16",
    "TICID": "int64",
    "CAMERA": "int8",
    "CCD": "int8",
    "TESSMAG": "float64",
    "BJDREFI": "int32",
    "BJDREFF": "float64",
    "TIMEDEL": "float64",
    "DEADC": "float64",
}
_REQUIRED_CARDS: Final = ("SECTOR", "BJDREFI", "BJDREFF", "TIMEDEL")

Array = np.ndarray[Any, Any]

# FITS files (sync: run in a worker thread by fetch, in the process pool by parse)


def read_lightcurve_file(
    path: str | Path, flux_column: str, *, source: str = ""
) -> tuple[dict[str, Any], dict[str, Array]]:
    """``(headers, columns)`` of one SPOC lightcurve file, checked to be complete.

    The file must have a binary table in HDU 1 holding ``TIME``, ``QUALITY``, ``flux_column`` and
    its ``_ERR`` column with all NAXIS2 rows readable, every extension that the primary header's
    NEXTEND announces, and every byte the headers promise.

    Raises
    ------
    MalformedResponse
        The file is cut short or garbled (worth downloading again).
    PermanentFetchError
        The file is complete but is not a lightcurve of the expected layout.
    """
    path = Path(path)
    try:
        # the layout first, so astropy never meets a cut file (it would warn and read on)
        check_fits_layout(path, source)
        with fits.open(path, memmap=False) as hdul:
            if not isinstance(hdul[1], fits.BinTableHDU):
                raise PermanentFetchError(f"tess: HDU 1 of {path.name} for {source} is not a table")
            _check_columns(hdul[1], flux_column, path)
            data = hdul[1].data
            columns = {name: np.array(data[name]) for name in data.names}
            headers = lightcurve_headers(hdul)
            expected = hdul[1].header.get("NAXIS2")
    except (OSError, ValueError, IndexError, TypeError, KeyError, EOFError) as exc:
        raise broken_file(path, source, f"{type(exc).__name__}: {exc}") from exc
    rows = len(columns["TIME"])
    if rows != expected:
        raise broken_file(path, source, f"{rows} of {expected} rows readable")
    missing = [key for key in _REQUIRED_CARDS if headers.get(key) is None]
    if missing:
        raise PermanentFetchError(f"tess: {path.name} for {source} has no {missing} header cards")
    return headers, columns


def checked_headers(path: str, flux_column: str, source: str) -> dict[str, Any]:
    """The headers of a downloaded file that :func:`read_lightcurve_file` found complete."""
    headers, _ = read_lightcurve_file(path, flux_column, source=source)
    return headers


def _check_columns(hdu: fits.BinTableHDU, flux_column: str, path: Path) -> None:
    found = list(hdu.columns.names)
    for name in ("TIME", "QUALITY", flux_column, flux_column + "_ERR"):
        if name not in found:
            message = f"tess: expected column {name!r} in HDU 1 of {path.name}; found {found}"
            raise PermanentFetchError(message)


def lightcurve_headers(hdul: fits.HDUList) -> dict[str, Any]:
    """The :data:`PRIMARY_KEYS` and :data:`LIGHTCURVE_KEYS` cards (from the other HDU when missing
    there), plus the cadence and the effective exposure per cadence in seconds (TIMEDEL x DEADC,
    e.g. 120 s x 0.792 = 95.04 s)."""
    headers: dict[str, Any] = {}
    for keys, first, second in ((PRIMARY_KEYS, 0, 1), (LIGHTCURVE_KEYS, 1, 0)):
        for key in keys:
            value = hdul[first].header.get(key, hdul[second].header.get(key))
            headers[key] = value if isinstance(value, (bool, int, float, str)) else None  # blank cards
    headers["cadence_s"], headers["exposure_s"] = cadence_exposure_s(headers["TIMEDEL"], headers["DEADC"])
    return headers


def cadence_exposure_s(timedel_d: Any, deadc: Any) -> tuple[float | None, float | None]:
    """(cadence, effective exposure per cadence) in seconds from TIMEDEL (days) and DEADC."""
    timedel, dead = finite_or_none(timedel_d), finite_or_none(deadc)
    if timedel is None:
        return None, None
    cadence_s = timedel * 86400.0
    return cadence_s, cadence_s * (dead if dead is not None else 1.0)


def lightcurve_table(path: str | Path, flux_column: str, *, source: str = "") -> pd.DataFrame:
    """Every HDU 1 column of one file in native byte order, plus :data:`TABLE_HEADERS` columns."""
    headers, found = read_lightcurve_file(path, flux_column, source=source)
    # SPOC lightcurve columns are scalars; a vector column would have no place in a flat table
    columns = {name: _native(values) for name, values in found.items() if values.ndim == 1}
    rows = len(columns["TIME"])
    for key, dtype in TABLE_HEADERS.items():
        value = finite_or_none(headers.get(key))
        fill = value if value is not None else (np.nan if dtype.startswith("float") else -1)
        columns[key] = np.full(rows, fill, dtype=dtype)
    return pd.DataFrame(columns)


def _native(values: Array) -> Array:
    """FITS is big-endian; numpy, pandas and HDF5 readers prefer the machine's byte order."""
    native: Array = values.astype(values.dtype.newbyteorder("="))
    return native


def read_raw_table(paths: Sequence[str | Path], flux_column: str, *, source: str = "") -> pd.DataFrame:
    """One raw table from several files (ordered by SECTOR, each file's rows kept in order)."""
    frames = [lightcurve_table(path, flux_column, source=source) for path in paths]
    if not frames:
        return pd.DataFrame({key: pd.Series([], dtype=dtype) for key, dtype in TABLE_HEADERS.items()})
    raw = pd.concat(frames, ignore_index=True)
    return raw.iloc[np.argsort(raw["SECTOR"].to_numpy(), kind="stable")].reset_index(drop=True)


def remove_scratch(paths: Sequence[str | Path]) -> None:
    """Delete downloaded files, then their folders when empty."""
    for path in map(Path, paths):
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
