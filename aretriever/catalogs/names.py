"""Catalog cells as the engine reads them: names as exact text, numbers checked cell by cell.

A source's name keys its files and its database rows, so it is read as text from every format and
never type-inferred: ``0012`` stays ``0012``, ``NA`` and ``nan`` are names, and a 64-bit Gaia
``source_id`` used as the name becomes its exact decimal string (never via a float). Only a cell
that is really empty (a masked/null value or blank text) is a missing name.

Numeric columns (ra, dec, mag, proper motion) keep their normal parsing, but a cell that is text
and not a number (``mag = abc``) is named with its row and column instead of turning into NaN.

Names must be unique within the rows a run reads: :func:`check_unique_names` scans them before
any request and raises a :class:`~aretriever.errors.CatalogError` naming the duplicates and their
rows, so a user never gets half a run and then an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from aretriever.errors import CatalogError

#: The strings pandas' CSV reader takes as missing by default (its documented ``na_values``);
#: used for every column but the name column, and for text cells of numeric columns.
MISSING_TEXT: Final = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip
#: Beyond this a float cannot hold every integer: an id stored as a float may have lost digits.
_FLOAT_EXACT_LIMIT: Final = 2**53
_SHOWN_NAMES: Final = 10
_SHOWN_ROWS: Final = 5


def csv_text_options(header: Iterable[str], text_columns: Iterable[str]) -> dict[str, Any]:
    """``pandas.read_csv`` options reading ``text_columns`` as exact text (no missing values, no
    type inference) and the other columns as usual (pandas' default missing-value words)."""
    text = set(text_columns)
    return {
        "dtype": {column: str for column in text},
        "keep_default_na": False,
        "na_values": {column: sorted(MISSING_TEXT) for column in header if column not in text},
    }


def name_text(value: object) -> str:
    """A name cell as exact text (stripped); "" when the cell is missing.

    bytes are decoded as UTF-8 (undecodable bytes kept as ``\\xNN`` escapes, so two different
    names never become one); integers are written in full.
    """
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace").strip()
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return ""
        return str(int(number)) if number.is_integer() and abs(number) < _FLOAT_EXACT_LIMIT else repr(number)
    return str(value).strip()


def name_problem(value: object, text: str) -> str | None:
    """Why a name cell cannot name a source (None when it can)."""
    if not text:
        return "empty name"
    if isinstance(value, float | np.floating) and abs(float(value)) >= _FLOAT_EXACT_LIMIT:
        return (
            f"name {text} is stored as a floating-point number beyond 2**53, so its digits are not "
            "exact (store the ids as integers or text)"
        )
    return None


def names_text(names: pd.Series) -> pd.Series:
    """:func:`name_text` of every cell, keeping the index (integer columns vectorised)."""
    if isinstance(names.dtype, np.dtype) and names.dtype.kind in "iu":  # not Int64: it has <NA>
        return names.astype(str)
    return pd.Series([name_text(v) for v in names], index=names.index, dtype=object)


def numeric_cells(values: pd.Series, column: str) -> tuple[np.ndarray, dict[int, str]]:
    """The column as floats (NaN where missing), and the positions of cells that are not numbers.

    A problem reads ``column 'mag' has 'abc', not a number``. Blank cells and pandas' missing-value
    words (``NA``, ``null``, ...) are missing, not bad.
    """
    numbers = pd.to_numeric(values, errors="coerce")
    floats = np.asarray(pd.Series(numbers).to_numpy(dtype=float, na_value=np.nan), dtype=float)
    if values.dtype.kind in "iufb":
        return floats, {}
    problems: dict[int, str] = {}
    for pos in np.flatnonzero(np.isnan(floats) & values.notna().to_numpy()):
        cell = values.iloc[pos]
        text = name_text(cell)
        if text in MISSING_TEXT or (isinstance(cell, float | np.floating) and math.isnan(cell)):
            continue
        problems[int(pos)] = f"column {column!r} has {text!r}, not a number"
    return floats, problems


# -------------------------------------------------------------------------- duplicate names


@runtime_checkable
class NameSource(Protocol):
    """A catalog that can stream its name column alone (cheaper than whole chunks)."""

    def iter_names(self, start: int = 0, stop: int | None = None) -> Iterator[pd.Series]: ...


class _Chunked(Protocol):
    @property
    def name(self) -> str: ...

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]: ...


def duplicate_names(chunks: Iterable[pd.Series]) -> dict[str, list[int]]:
    """Name -> row numbers, for every non-empty name that appears more than once."""
    parts = [names_text(chunk) for chunk in chunks]
    if not parts:
        return {}
    names = pd.concat(parts)
    repeated = names[names.duplicated(keep=False) & (names != "")]
    rows: dict[str, list[int]] = {}
    for row, name in repeated.items():
        rows.setdefault(str(name), []).append(int(row))
    return rows


def describe_duplicates(what: str, duplicates: dict[str, list[int]]) -> str:
    """The error message: the first names with their rows, capped, and how many more."""

    def rows_of(rows: list[int]) -> str:
        shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
        return shown + (f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else "")

    items = list(duplicates.items())
    listed = ", ".join(f"{name!r} (rows {rows_of(rows)})" for name, rows in items[:_SHOWN_NAMES])
    more = f" and {len(items) - _SHOWN_NAMES} more" if len(items) > _SHOWN_NAMES else ""
    return (
        f"catalog: {what}: {len(items)} source name(s) appear on more than one row: {listed}{more}; "
        "names key a source's files and rows, so they must be unique (rows count from 0, as "
        "--start does; fix the catalog, or map another column with catalog.columns.name)"
    )


def check_unique_names(catalog: _Chunked, name_column: str, start: int = 0, stop: int | None = None) -> None:
    """Raise a CatalogError naming every duplicated name (and its rows) in rows ``start:stop``.

    Reads the name column only when the catalog can (:class:`NameSource`), else whole chunks; a
    missing name column is left to :func:`~aretriever.catalogs.core.chunk_to_targets` to report.
    """
    if isinstance(catalog, NameSource):
        chunks: Iterable[pd.Series] = catalog.iter_names(start, stop)
    else:
        chunks = (c[name_column] for c in catalog.iter_chunks(start, stop) if name_column in c.columns)
    duplicates = duplicate_names(chunks)
    if duplicates:
        raise CatalogError(describe_duplicates(catalog.name, duplicates))
