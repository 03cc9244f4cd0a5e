"""HDF5 files: one table per key, written atomically; sync, run by the file writer's thread.

File format, readable with plain h5py and pandas (``pd.DataFrame(h5py.File(f)[key][:])``):

- each key is one contiguous, uncompressed compound dataset at the root of the file, whose fields
  are the table's columns in order; the DataFrame index is not stored;
- text columns are fixed-length UTF-8 bytes (``S<n>``, n >= 1); missing text is stored as ``b""``
  and read back as ``""``; numbers and booleans keep their numpy dtype; nullable pandas integers or
  booleans holding missing values become float64 with NaN; datetimes are refused (store MJD);
- metadata are attributes of the dataset: ``str``, ``int``, ``float`` and ``bool`` values are stored
  natively; anything else (None, dicts, lists, tuples, numpy arrays, huge ints) is stored as JSON
  text, and the attribute ``__json__`` lists, as a JSON array, the names of those attributes so that
  :func:`read_h5` turns them back into Python values (tuples and arrays come back as lists).

Writes go to a hidden temporary file in the target folder and are renamed into place, so a file
under its final name is always complete.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from h5py import h5a, h5d, h5s, h5t

from aretriever.errors import StoreError, WriteError
from aretriever.store.owners import owner_token

JSON_ATTR = "__json__"
Records = np.ndarray[Any, Any]
#: key -> (table, metadata); a table is a DataFrame or already a structured array
#: (the engine converts in the process pool, so the writer thread only does HDF5 work).
Tables = Mapping[str, tuple[pd.DataFrame | Records, Mapping[str, Any]]]
_NATIVE_ATTR_TYPES = (str, bool, float, np.floating, np.bool_)
_INT64 = np.iinfo(np.int64)


def _encode_text(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return b""
    return str(value).encode("utf-8")


def _text_column(series: pd.Series[Any]) -> np.ndarray[Any, Any]:
    values = series.tolist()
    try:  # all str: the common case, 3x faster than pandas' str.encode or np.char (measured)
        encoded = [v.encode("utf-8") for v in values]
    except AttributeError:  # missing values, bytes, numbers in an object column
        encoded = [_encode_text(v) for v in values]
    width = max(map(len, encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def _numeric_column(series: pd.Series[Any]) -> np.ndarray[Any, Any]:
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        return series.to_numpy()
    if series.hasnans:
        return series.to_numpy(dtype="float64", na_value=np.nan)
    return series.to_numpy(dtype=dtype.numpy_dtype)  # type: ignore[attr-defined]


def _column(name: str, series: pd.Series[Any]) -> np.ndarray[Any, Any]:
    kind = series.dtype.kind
    if kind in "biufc":
        return _numeric_column(series)
    if kind in "mM":
        raise TypeError(f"column {name!r} has dtype {series.dtype}; store times as numbers (MJD)")
    return _text_column(series)


def frame_to_records(df: pd.DataFrame) -> np.ndarray[Any, Any]:
    """Convert a DataFrame to a numpy structured array (one field per column, index dropped).

    Raises
    ------
    TypeError
        If a column name is not a non-empty string, names repeat, or a column holds datetimes.
    """
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names) or any(not isinstance(c, str) or not c for c in df.columns):
        raise TypeError(f"column names must be unique non-empty strings (got {list(df.columns)})")
    arrays = [_column(n, df[n]) for n in names]  # df[n] is 4x faster than df.iloc[:, i]
    records = np.empty(len(df), dtype=[(n, a.dtype) for n, a in zip(names, arrays, strict=True)])
    for name, array in zip(names, arrays, strict=True):
        records[name] = array
    return records


def records_to_frame(arr: np.ndarray[Any, Any]) -> pd.DataFrame:
    """Convert a structured array back to a DataFrame; bytes fields become ``str`` columns."""
    names = arr.dtype.names or ()
    columns: dict[str, Any] = {}
    for name in names:
        field = arr[name]
        if field.dtype.kind == "S":
            columns[name] = pd.Series([b.decode("utf-8") for b in field.tolist()], dtype="str")
        else:
            columns[name] = pd.Series(field, copy=True)
    return pd.DataFrame(columns, columns=list(names))


def _json_default(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} as metadata")


def _is_native(value: object) -> bool:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return bool(_INT64.min <= int(value) <= _INT64.max)
    return isinstance(value, _NATIVE_ATTR_TYPES)


_TEXT = h5py.string_dtype("utf-8")


@functools.lru_cache(maxsize=512)
def _h5_type(dtype: np.dtype[Any]) -> h5t.TypeID:
    # Converting a compound dtype to an HDF5 type is a large part of creating a dataset; the
    # (transient) type is independent of any file, so one per dtype serves every write.
    return h5t.py_create(dtype, logical=True)


def _set_attr(dataset: h5d.DatasetID, name: str, value: object) -> None:
    # The low-level call skips h5py's exists-check-and-rename dance (~1 ms per attribute).
    # Text goes in as variable-length UTF-8, which plain h5py reads back as ``str``.
    array = np.array(value, dtype=_TEXT) if isinstance(value, str) else np.asarray(value)
    attr = h5a.create(dataset, name.encode("utf-8"), _h5_type(array.dtype), h5s.create(h5s.SCALAR))
    attr.write(array)


def _write_attrs(dataset: h5d.DatasetID, meta: Mapping[str, Any]) -> None:
    if JSON_ATTR in meta:
        raise TypeError(f"metadata may not use the reserved name {JSON_ATTR!r}")
    as_json: list[str] = []
    for name, value in meta.items():
        if _is_native(value):
            _set_attr(dataset, name, value)
        else:
            _set_attr(dataset, name, json.dumps(value, default=_json_default))
            as_json.append(name)
    if as_json:
        _set_attr(dataset, JSON_ATTR, json.dumps(as_json))


def read_attrs(dataset: h5py.Dataset) -> dict[str, Any]:
    """A dataset's metadata as :func:`write_h5` stored it (``__json__`` attributes parsed)."""
    attrs = dict(dataset.attrs)
    as_json = set(json.loads(attrs.pop(JSON_ATTR, "[]")))
    meta: dict[str, Any] = {}
    for name, value in attrs.items():
        if name in as_json:
            meta[name] = json.loads(value)
        elif isinstance(value, np.generic):
            meta[name] = value.item()
        elif isinstance(value, bytes):
            meta[name] = value.decode("utf-8")
        else:
            meta[name] = value
    return meta


def _check_key(key: str) -> None:
    if not key or "/" in key or key in (".", ".."):
        raise TypeError(f"invalid HDF5 key {key!r} (use paths.raw_key / paths.reduction_key)")


def as_records(table: pd.DataFrame | Records) -> Records:
    """A structured array for ``table`` (converted when it is a DataFrame)."""
    return table if isinstance(table, np.ndarray) else frame_to_records(table)


def _write_table(h5: h5py.File, key: str, table: pd.DataFrame | Records, meta: Mapping[str, Any]) -> None:
    _check_key(key)
    records = as_records(table)
    if records.dtype.names is None:
        raise TypeError(f"table {key!r} is not a structured array")
    dataset = h5d.create(
        h5.id, key.encode("utf-8"), _h5_type(records.dtype), h5s.create_simple(records.shape)
    )
    if len(records):
        dataset.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(records))
    _write_attrs(dataset, meta)


# fsync of a folder is refused by some file systems and platforms (EINVAL, ENOTSUP, EBADF, EACCES):
# the rename is then as durable as that file system makes it, and the write still succeeds
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES})


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError as exc:
        if directory and exc.errno in _DIR_FSYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if not (directory and exc.errno in _DIR_FSYNC_UNSUPPORTED):
            raise
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """Return a hidden temporary name beside ``path``: ``.<name>.<owner token>.<random>.tmp``.

    Never shared; the owner token (host, pid; see :mod:`aretriever.store.owners`) lets a later
    start sweep what a killed process left, and only that.
    """
    return path.with_name(f".{path.name}.{owner_token()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_path(path: Path, what: str, *, fsync: bool = True) -> Iterator[Path]:
    """Write to the yielded temporary path; on success it replaces ``path`` in one rename.

    With ``fsync`` (the default) the temporary file is flushed to the disk before the rename and
    the folder after it, so once this returns the file survives a power cut under its final name
    (rows that point to it are committed only after that). Parent folders are created.
    Any failure raises :class:`WriteError` ("<what>: cannot write <path>: ...") and leaves an
    older file under ``path`` untouched; the temporary is removed (quietly: when the folder
    itself is what failed, that error is the one to report).
    """
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_path(path.parent, directory=True)
    except WriteError:
        raise
    except Exception as exc:
        raise WriteError(f"{what}: cannot write {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_h5(path: Path, tables: Tables, *, fsync: bool = True) -> int:
    """Write every table of ``tables`` (key -> (DataFrame, metadata)) to ``path``, atomically.

    Parent folders are created. All keys go to a temporary file in the same folder, which then
    replaces ``path`` in one ``os.replace``; an existing file under ``path`` is replaced whole.

    Parameters
    ----------
    path
        The final file.
    tables
        Keys (see :func:`aretriever.store.paths.raw_key`) mapped to a table and its metadata.
    fsync
        Flush the file, then its folder, to the disk before returning (crash safety; see
        docs/performance.md for its cost).

    Returns
    -------
    int
        The size of the written file in bytes.

    Raises
    ------
    WriteError
        If anything fails; no file is left under ``path`` (an older file there is kept) and the
        temporary file is removed.
    """
    key: str | None = None
    with atomic_path(path, "store", fsync=fsync) as tmp:
        if not tables:
            raise ValueError("no tables to write")
        try:
            with h5py.File(tmp, "w", libver=("v110", "latest")) as h5:
                for key, (df, meta) in tables.items():
                    _write_table(h5, key, df, meta)
        except Exception as exc:
            raise WriteError(f"store: cannot write {path} (key {key!r}): {exc}") from exc
    return path.stat().st_size


def read_h5(path: Path, key: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read one table and its metadata.

    Raises
    ------
    StoreError
        If the file or key is missing or unreadable.
    """
    try:
        with h5py.File(path, "r") as h5:
            dataset = h5[key]
            return records_to_frame(dataset[()]), read_attrs(dataset)
    except Exception as exc:
        raise StoreError(f"store: cannot read key {key!r} of {path}: {exc}") from exc


def h5_keys(path: Path) -> list[str]:
    """Return the keys (tables) of a file, sorted."""
    try:
        with h5py.File(path, "r") as h5:
            return sorted(h5.keys())
    except Exception as exc:
        raise StoreError(f"store: cannot list the keys of {path}: {exc}") from exc


def h5_nrows(path: Path, key: str) -> int:
    """Return the number of rows of one table without reading it."""
    try:
        with h5py.File(path, "r") as h5:
            return int(h5[key].shape[0])
    except Exception as exc:
        raise StoreError(f"store: cannot read key {key!r} of {path}: {exc}") from exc


def _read_all(h5: h5py.File) -> int:
    count = 0
    for key in h5:
        dataset = h5[key]
        if not isinstance(dataset, h5py.Dataset):
            return -1
        dataset[()]
        read_attrs(dataset)
        count += 1
    return count


def verify_h5(path: Path) -> bool:
    """Return True if ``path`` opens and every table and its metadata read fully.

    A file without any table is not valid (the writer never makes one). Never raises.
    """
    try:
        with h5py.File(path, "r") as h5:
            return _read_all(h5) > 0
    except Exception:
        return False


def delete_key(path: Path, key: str) -> bool:
    """Remove one table from a file; remove the file if it was the last one.

    The file is rewritten: the other tables are copied verbatim (h5py ``copy``, attributes
    included) to a temporary file that replaces the original, so the change is atomic and the file
    does not keep the space of the deleted table, as it would after an in-place ``del``.

    Returns
    -------
    bool
        False if there was no such file or key (nothing changed).

    Raises
    ------
    WriteError
        If the file cannot be rewritten (the original is kept).
    """
    if not path.exists():
        return False
    keys = h5_keys(path)
    if key not in keys:
        return False
    if keys == [key]:
        path.unlink()
        return True
    _copy_without(path, key)
    return True


def _copy_without(path: Path, key: str) -> None:
    tmp = temp_path(path)
    try:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for other in src:
                if other != key:
                    src.copy(src[other], dst, name=other)
        os.replace(tmp, path)
    except Exception as exc:
        raise WriteError(f"store: cannot remove key {key!r} from {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
