"""Lightcurve tables as the science reads them: DataFrames or NumPy structured arrays.

The pipeline hands lightcurves around as structured arrays (``Records``: one field per column,
text as ``S<n>`` UTF-8 bytes, the layout the HDF5 files store), because building and slicing
them costs microseconds where a DataFrame costs tens. Users and third-party reducers may still
give DataFrames. Every science step reads its inputs through this module, so both work:

- :func:`names`, :func:`has` and :func:`column` (float64, NaN when absent or missing) read;
- :func:`add_columns` / :func:`add_column` build a new structured array with more columns
  (a column of the same name is replaced in place, as ``DataFrame.assign`` does);
- :func:`assign` and :func:`drop` return the type they were given, for the public functions
  whose callers may work in pandas;
- :func:`to_records` converts a DataFrame as ``aretriever.store.hdf5.frame_to_records`` does
  (same field order, dtypes and text widths), which the science layer may not import.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

Array = np.ndarray[Any, Any]
Records = np.ndarray[Any, Any]
#: a lightcurve table: a DataFrame, or a structured array (one field per column)
Table: TypeAlias = pd.DataFrame | Records

__all__ = [
    "Records",
    "Table",
    "add_column",
    "add_columns",
    "arrow_text",
    "assign",
    "column",
    "drop",
    "flags",
    "has",
    "names",
    "text_array",
    "to_records",
]


def names(table: Table) -> tuple[str, ...]:
    """The column names, in order."""
    if isinstance(table, pd.DataFrame):
        return tuple(str(name) for name in table.columns)
    return table.dtype.names or ()


def has(table: Table, name: str) -> bool:
    """Whether ``table`` has a column ``name``."""
    if isinstance(table, pd.DataFrame):
        return name in table.columns
    return name in (table.dtype.names or ())


def column(table: Table, name: str) -> Array:
    """Column ``name`` as float64: NaN where missing, all NaN when the column is absent.

    A structured array's float64 field comes back as a read-only view (no copy); do not write
    into what this returns.
    """
    if not has(table, name):
        return np.full(len(table), np.nan)
    if isinstance(table, pd.DataFrame):
        values: Array = table[name].to_numpy(dtype=np.float64, na_value=np.nan)
        return values
    field = table[name]
    if field.dtype == np.float64:
        view = field.view()
        view.flags.writeable = False
        return view
    return np.asarray(field, dtype=np.float64)


def flags(table: Table, name: str) -> Array:
    """Column ``name`` as booleans; a missing value (NA, NaN) counts as True, an absent column
    as all False."""
    if not has(table, name):
        return np.zeros(len(table), dtype=bool)
    if isinstance(table, pd.DataFrame):
        flagged: Array = table[name].fillna(True).to_numpy(dtype=bool)
        return flagged
    field = table[name]
    if field.dtype.kind == "b":
        return np.array(field, dtype=bool)
    values = np.asarray(field, dtype=np.float64)
    missing_or_set: Array = np.isnan(values) | (values != 0)
    return missing_or_set


# --------------------------------------------------------------------------------------------
# building tables


def add_columns(table: Table, new: Mapping[str, Any]) -> Records:
    """A new structured array: ``table``'s columns, then the ``new`` ones.

    A name ``table`` already has is replaced where it stands (with the new values' dtype), as
    ``DataFrame.assign`` does; other new names follow in the order given. ``table`` is not
    modified (a DataFrame is converted as :func:`to_records` does).

    Parameters
    ----------
    table : DataFrame or structured array
    new : mapping of str to array
        One value per row each (a scalar is broadcast).

    Raises
    ------
    ValueError
        A new column does not have one value per row.
    """
    rows, old = len(table), _checked_names(table)
    arrays = {name: _one_per_row(name, values, rows) for name, values in new.items()}
    if not isinstance(table, pd.DataFrame) and not set(arrays) & set(old) and table.flags.c_contiguous:
        return _appended(table, arrays)
    base = {name: _field(table, name) for name in old if name not in arrays}
    order = [*old, *(name for name in arrays if name not in base and name not in old)]
    out = np.empty(
        rows, dtype=[(name, (arrays[name] if name in arrays else base[name]).dtype) for name in order]
    )
    for name, values in (*base.items(), *arrays.items()):
        out[name] = values
    return out


def _appended(table: Records, arrays: Mapping[str, Array]) -> Records:
    """A packed contiguous table's bytes copied in one go, then the new fields (the common case:
    a reduced lightcurve gaining its processed columns)."""
    out = np.empty(len(table), dtype=_extended(table.dtype, tuple((n, a.dtype) for n, a in arrays.items())))
    width = table.dtype.itemsize
    if width:
        out.view(np.uint8).reshape(len(table), -1)[:, :width] = table.view(np.uint8).reshape(
            len(table), width
        )
    for name, values in arrays.items():
        out[name] = values
    return out


@functools.lru_cache(maxsize=256)
def _extended(dtype: np.dtype[Any], more: tuple[tuple[str, np.dtype[Any]], ...]) -> np.dtype[Any]:
    """``dtype``'s fields at their offsets, then ``more`` packed after them."""
    known: Mapping[str, tuple[Any, ...]] = dtype.fields or {}
    fields = {name: (known[name][0], known[name][1]) for name in dtype.names or ()}
    offset = dtype.itemsize
    for name, kind in more:
        fields[name] = (kind, offset)
        offset += kind.itemsize
    return np.dtype(
        {
            "names": list(fields),
            "formats": [f[0] for f in fields.values()],
            "offsets": [f[1] for f in fields.values()],
            "itemsize": offset,
        }
    )


def add_column(table: Table, name: str, values: Any) -> Records:
    """:func:`add_columns` with one column: the public way to extend a processed lightcurve."""
    return add_columns(table, {name: values})


def assign(table: Table, new: Mapping[str, Any]) -> Table:
    """``table`` with the ``new`` columns, of the type given: a DataFrame for a DataFrame (its
    index kept), else a structured array (:func:`add_columns`)."""
    if isinstance(table, pd.DataFrame):
        return table.assign(**{name: np.asarray(values) for name, values in new.items()})
    return add_columns(table, new)


def drop(table: Table, dropped: Iterable[str]) -> Table:
    """A copy of ``table`` without the columns ``dropped`` (absent names are ignored)."""
    gone = set(dropped)
    if isinstance(table, pd.DataFrame):
        return table.drop(columns=[name for name in table.columns if name in gone])
    kept = [name for name in names(table) if name not in gone]
    out = np.empty(len(table), dtype=[(name, table.dtype[name]) for name in kept])
    for name in kept:
        out[name] = table[name]
    return out


def to_records(table: Table) -> Records:
    """``table`` as a structured array (one passes through as it is).

    A DataFrame is converted like ``aretriever.store.hdf5.frame_to_records``: index dropped,
    numbers and booleans keep their NumPy dtype, nullable integers or booleans holding missing
    values become float64 with NaN, text becomes ``S<n>`` UTF-8 (missing text ``b""``).
    """
    if not isinstance(table, pd.DataFrame):
        return table
    return add_columns(table, {})


def text_array(values: pd.Series[Any] | Array) -> Array:
    """Text as ``S<n>`` UTF-8 bytes, ``n`` the longest value (at least 1); missing text is ``b""``.

    Arrow-backed strings (what the archive parsers give) are encoded once per distinct value:
    archive text columns (filter codes, CCD ids) hold a handful of values over thousands of rows.
    """
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return _arrow_text(values)
    encoded = [_encode(value) for value in np.asarray(values, dtype=object).tolist()]
    return np.array(encoded, dtype=f"S{max([1, *map(len, encoded)])}")


def _arrow_text(values: pd.Series[Any] | Array) -> Array:
    return arrow_text(pa.array(values))


def arrow_text(values: pa.Array | pa.ChunkedArray) -> Array:
    """Arrow strings as ``S<n>`` UTF-8 bytes, as :func:`text_array` makes them (nulls ``b""``).

    Each distinct value is encoded once: archive text columns (filter codes, CCD ids) hold a
    handful of values over thousands of rows.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    words = [word.encode("utf-8") for word in encoded.dictionary.to_pylist()]
    # one more entry, b"", for the missing values (their index is null)
    table = np.array([*words, b""], dtype=f"S{max([1, *map(len, words)])}")
    text: Array = table[encoded.indices.fill_null(len(words)).to_numpy(zero_copy_only=False)]
    return text


def _encode(value: object) -> bytes:
    """One value as frame_to_records stores it (bytes as they are, missing as b"")."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return b""
    return str(value).encode("utf-8")


def _field(table: Table, name: str) -> Array:
    """One column as stored in a structured array (see :func:`to_records`)."""
    if not isinstance(table, pd.DataFrame):
        field: Array = table[name]
        return field
    series = table[name]
    kind = series.dtype.kind
    if kind in "mM":
        raise TypeError(f"column {name!r} has dtype {series.dtype}; store times as numbers (MJD)")
    if kind not in "biufc":
        return text_array(series)
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()
    if series.hasnans:
        return series.to_numpy(dtype="float64", na_value=np.nan)
    return series.to_numpy(dtype=series.dtype.numpy_dtype)  # type: ignore[attr-defined]


def _checked_names(table: Table) -> tuple[str, ...]:
    if isinstance(table, pd.DataFrame):
        given = list(table.columns)
        if len(set(given)) != len(given) or any(not isinstance(c, str) or not c for c in given):
            raise TypeError(f"column names must be unique non-empty strings (got {given})")
    return names(table)


def _one_per_row(name: str, values: Any, rows: int) -> Array:
    array = np.asarray(values)
    if array.ndim == 0:
        return np.full(rows, array)
    if array.shape != (rows,):
        raise ValueError(f"science: column {name!r} has shape {array.shape}; the table has {rows} rows")
    return array
