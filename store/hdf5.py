"""HDF5 files: one table per key, built as a file image in memory and written atomically.

File format, readable with plain h5py and pandas (``pd.DataFrame(h5py.File(f)[key][:])``):

- each key is one compound dataset at the root of the file, whose fields are the table's columns
  in order; the DataFrame index is not stored;
- a non-empty table is stored in one chunk (tables over 16 MiB in chunks of 16 MiB) with the
  shuffle filter and the file's compression (``store.compression``: ``gzip`` level 1, the default,
  which every HDF5 tool reads; ``lzf``, which only h5py reads; or ``none``); an empty table is
  contiguous and unfiltered. Filters are transparent to readers: the same ``[:]`` reads them;
- text columns are fixed-length UTF-8 bytes (``S<n>``, n >= 1); missing text is stored as ``b""``
  and read back as ``""``; numbers and booleans keep their numpy dtype; nullable pandas integers or
  booleans holding missing values become float64 with NaN; datetimes are refused (store MJD);
- metadata are attributes of the dataset: ``str``, ``int``, ``float`` and ``bool`` values are stored
  natively; anything else (None, dicts, lists, tuples, numpy arrays, huge ints) is stored as JSON
  text, and the attribute ``__json__`` lists, as a JSON array, the names of those attributes so that
  :func:`read_h5` turns them back into Python values (tuples and arrays come back as lists);
- objects carry no modification times, so the same tables always make the same bytes.

:func:`build_h5_image` builds a whole file in memory (HDF5's core driver; the engine does this in
its process pool) and :func:`write_image` writes those bytes to a hidden temporary file in the
target folder, renamed into place, so a file under its final name is always complete.
:func:`write_h5` is both in one call.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import itertools
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import h5py
import numpy as np
import pandas as pd
from h5py import h5a, h5d, h5f, h5p, h5s, h5t, h5z

from aretriever.errors import StoreError, WriteError
from aretriever.store.owners import owner_token

JSON_ATTR = "__json__"
Records = np.ndarray[Any, Any]
#: key -> (table, metadata); a table is a DataFrame or already a structured array
#: (the engine converts in the process pool, so the writer thread only does HDF5 work).
Tables = Mapping[str, tuple[pd.DataFrame | Records, Mapping[str, Any]]]
#: How tables are compressed (see the module docstring and docs/design.md for the default).
Compression = Literal["gzip", "lzf", "none"]
COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)
DEFAULT_COMPRESSION: Compression = "gzip"
_GZIP_LEVEL = 1  # levels 1 to 4 differ by under 1 % in size on ZTF tables, level 4 costs 40 % more time
_MAX_CHUNK_BYTES = 16 << 20  # one chunk for any real source; bounded so no chunk nears HDF5's 4 GiB
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
    h5type = _h5_type(array.dtype)
    attr = h5a.create(dataset, name.encode("utf-8"), h5type, h5s.create(h5s.SCALAR))
    # Text (object arrays) needs h5py's own conversion from Python strings; other values are
    # already in the stored type, and the same type as memory type skips HDF5's conversion search.
    attr.write(array, mtype=None if array.dtype.kind == "O" else h5type)


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


def _creation_plist(records: Records, compression: Compression) -> h5p.PropDCID:
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # no timestamps: equal tables give equal files
    if compression == "none" or not len(records):
        return dcpl  # an empty dataset cannot be chunked by its length, and has nothing to compress
    dcpl.set_chunk((min(len(records), max(1, _MAX_CHUNK_BYTES // records.dtype.itemsize)),))
    # Shuffle groups the bytes of each field by significance: 10 % smaller files for 2 % more time.
    dcpl.set_shuffle()
    if compression == "gzip":
        dcpl.set_deflate(_GZIP_LEVEL)
    else:
        dcpl.set_filter(h5z.FILTER_LZF, h5z.FLAG_OPTIONAL)
    return dcpl


def _write_table(
    fid: h5f.FileID,
    key: str,
    table: pd.DataFrame | Records,
    meta: Mapping[str, Any],
    compression: Compression,
) -> None:
    _check_key(key)
    records = np.ascontiguousarray(as_records(table))
    if records.dtype.names is None:
        raise TypeError(f"table {key!r} is not a structured array")
    h5type = _h5_type(records.dtype)
    space = h5s.create_simple(records.shape)
    dataset = h5d.create(fid, key.encode("utf-8"), h5type, space, dcpl=_creation_plist(records, compression))
    if len(records):
        # The cached type as the memory type too: HDF5 then finds its no-op conversion at once; a
        # fresh, equal type costs a conversion-path search per write (0.2 ms of 0.3 ms per table).
        dataset.write(h5s.ALL, h5s.ALL, records, mtype=h5type)
    _write_attrs(dataset, meta)


_image_names = itertools.count()


def _image_name() -> bytes:
    # The core driver still names its file, and HDF5 refuses to create a name that is open:
    # unique per process and thread, as pool workers and writer threads may build at once.
    return f"aretriever-image-{os.getpid()}-{threading.get_ident()}-{next(_image_names)}".encode()


def _memory_file(size_hint: int) -> h5f.FileID:
    fapl = h5p.create(h5p.FILE_ACCESS)
    # One allocation of about the final size instead of growing by 64 KiB steps; no backing file.
    fapl.set_fapl_core(max(size_hint, 1 << 16), False)
    fapl.set_libver_bounds(h5f.LIBVER_V110, h5f.LIBVER_LATEST)
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # the root group's times too: equal tables, equal bytes
    return h5f.create(_image_name(), h5f.ACC_EXCL, fcpl=fcpl, fapl=fapl)


def _size_hint(tables: Tables) -> int:
    return sum(t.nbytes if isinstance(t, np.ndarray) else 0 for t, _ in tables.values()) + (64 << 10)


class _TableError(Exception):
    """One table could not be stored (``key`` names it; the cause is chained)."""

    def __init__(self, key: str | None, cause: Exception) -> None:
        super().__init__(f"(key {key!r}): {cause}")


def _build(tables: Tables, compression: Compression) -> bytes:
    if not tables:
        raise _TableError(None, ValueError("no tables to write"))
    if compression not in COMPRESSIONS:
        raise _TableError(
            None, ValueError(f"unknown compression {compression!r} (use one of {COMPRESSIONS})")
        )
    fid = _memory_file(_size_hint(tables))
    try:
        for key, (table, meta) in tables.items():
            try:
                _write_table(fid, key, table, meta, compression)
            except Exception as exc:
                raise _TableError(key, exc) from exc
        h5f.flush(fid)
        return bytes(fid.get_file_image())
    finally:
        fid.close()


def build_h5_image(tables: Tables, compression: Compression = DEFAULT_COMPRESSION) -> bytes:
    """Build, in memory, the HDF5 file holding ``tables``; return its bytes.

    Writing the bytes to a file (:func:`write_image`) gives exactly the file :func:`write_h5`
    writes. Pure CPU work, no IO: the engine runs it in its process pool.

    Parameters
    ----------
    tables
        Keys (see :func:`aretriever.store.paths.raw_key`) mapped to a table and its metadata.
    compression
        ``gzip`` (level 1), ``lzf`` or ``none``; always with the shuffle filter when compressed.

    Raises
    ------
    WriteError
        If ``tables`` is empty, ``compression`` unknown, or a key, table or metadata cannot be
        stored (the message names the key).
    """
    try:
        return _build(tables, compression)
    except _TableError as exc:
        raise WriteError(f"store: cannot build an HDF5 file {exc}") from exc.__cause__


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


def write_image(path: Path, image: bytes, *, fsync: bool = True) -> int:
    """Write a file image (:func:`build_h5_image`) to ``path``, atomically; return its size.

    Parent folders are created; the bytes go to a temporary file in the same folder, which then
    replaces ``path`` in one ``os.replace`` (see :func:`atomic_path` for ``fsync``).

    Raises
    ------
    WriteError
        If anything fails; no file is left under ``path`` (an older file there is kept) and the
        temporary file is removed.
    """
    with atomic_path(path, "store", fsync=fsync) as tmp:
        # O_EXCL: the temporary name is ours alone; a file already there is not ours to overwrite.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with open(fd, "wb", closefd=True) as out:
            out.write(image)
    return len(image)


def write_h5(
    path: Path, tables: Tables, *, fsync: bool = True, compression: Compression = DEFAULT_COMPRESSION
) -> int:
    """Write every table of ``tables`` (key -> (DataFrame, metadata)) to ``path``, atomically.

    :func:`build_h5_image` then :func:`write_image`: parent folders are created, and an existing
    file under ``path`` is replaced whole, in one ``os.replace``.

    Parameters
    ----------
    path
        The final file.
    tables
        Keys (see :func:`aretriever.store.paths.raw_key`) mapped to a table and its metadata.
    fsync
        Flush the file, then its folder, to the disk before returning (crash safety; see
        docs/performance.md for its cost).
    compression
        See :func:`build_h5_image`.

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
    try:
        image = _build(tables, compression)
    except _TableError as exc:
        raise WriteError(f"store: cannot write {path} {exc}") from exc.__cause__
    return write_image(path, image, fsync=fsync)


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


def read_records(path: Path, key: str) -> Records:
    """Read one table as the structured array it is stored as (text as ``S<n>`` bytes), without
    its metadata and without a DataFrame: what a reducer taking structured arrays reads.

    Raises
    ------
    StoreError
        If the file or key is missing or unreadable.
    """
    try:
        with h5py.File(path, "r") as h5:
            records: Records = h5[key][()]
            return records
    except Exception as exc:
        raise StoreError(f"store: cannot read key {key!r} of {path}: {exc}") from exc


def read_image(image: bytes, key: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read one table and its metadata from a file image (:func:`build_h5_image`), as :func:`read_h5`.

    Raises
    ------
    StoreError
        If the image or key is missing or unreadable.
    """
    try:
        with h5py.File(io.BytesIO(image), "r") as h5:
            dataset = h5[key]
            return records_to_frame(dataset[()]), read_attrs(dataset)
    except Exception as exc:
        raise StoreError(f"store: cannot read key {key!r} of a file image: {exc}") from exc


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
