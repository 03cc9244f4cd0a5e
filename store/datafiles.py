"""Rows that point to a table in an HDF5 file under DATA_ROOT, and load it lazily (``data``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from aretriever.errors import StoreError

from . import hdf5, paths

if TYPE_CHECKING:
    pass



_DATA_CACHE = "_aretriever_data"
_DATA_ROOT = "_aretriever_data_root"  # plain attribute, not a column


class DataFileMixin:
    """A row that points to one table (``filekey``) in an HDF5 file (``filename``).

    ``data`` reads the table on first access and keeps it; assigning ``data`` replaces the cache.
    Reading is synchronous file IO: in async code call ``await asyncio.to_thread(obj.load)``.
    """

    filename: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    filekey: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    num_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    nbytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)

    def bind_data_root(self, data_root: Path) -> None:
        """Read this row's file under ``data_root`` (set by whoever loaded the row, e.g. a Retriever)."""
        setattr(self, _DATA_ROOT, data_root)

    def get_fullname(self, data_root: Path | None = None) -> Path:
        """The file's absolute path: ``filename`` under ``data_root``, else the bound DATA_ROOT.

        Rows read through :func:`aretriever.store.Session` are bound; others need ``data_root``
        (there is no process-wide DATA_ROOT to fall back on).
        """
        if not self.filename:
            raise StoreError(f"store: {self!r} has no data file")
        if Path(self.filename).is_absolute():
            return Path(self.filename)
        root = data_root or getattr(self, _DATA_ROOT, None)
        if root is None:
            raise StoreError(f"store: {self.filename!r} is relative, no DATA_ROOT bound: pass data_root")
        return paths.resolve(Path(root).expanduser().absolute(), self.filename)

    @property
    def data(self) -> pd.DataFrame:
        """The table, read from disk on first access."""
        cached: pd.DataFrame | None = getattr(self, _DATA_CACHE, None)
        return cached if cached is not None else self.load()

    @data.setter
    def data(self, value: pd.DataFrame | None) -> None:
        setattr(self, _DATA_CACHE, value)

    def load(self, data_root: Path | None = None) -> pd.DataFrame:
        """Read the table from disk (again), cache and return it.

        With no ``filekey``, a file holding a single table is read.
        """
        path = self.get_fullname(data_root)
        key = self.filekey
        if key is None:
            keys = hdf5.h5_keys(path)
            if len(keys) != 1:
                raise StoreError(f"store: {path} holds keys {keys}; say which one (filekey)")
            key = keys[0]
        frame, _meta = hdf5.read_h5(path, key)
        setattr(self, _DATA_CACHE, frame)
        return frame

    def save(self, data_root: Path | None = None) -> Path:
        """Write ``data`` to ``filename``/``filekey`` (other tables of the file are kept).

        Interactive use: inside the engine, files go through the file writer. The file is
        rewritten under a temporary name and renamed, so a failure leaves the old file whole.
        """
        data: pd.DataFrame | None = getattr(self, _DATA_CACHE, None)
        if data is None or not self.filekey:
            raise StoreError(f"store: {self!r} has no data or no filekey to save")
        path = self.get_fullname(data_root)
        tables: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
        for key in hdf5.h5_keys(path) if path.exists() else []:
            tables[key] = hdf5.read_h5(path, key)
        # the file's own metadata of this table (source, position, archive) stays; the row's adds
        _, attrs = tables.get(self.filekey, (data, {}))
        attrs = {**attrs, **(getattr(self, "meta", None) or {})}
        band = getattr(self, "filter", None)
        if band:
            attrs["filter"] = band
        tables[self.filekey] = (data, attrs)
        self.nbytes = hdf5.write_h5(path, tables)
        self.num_rows = len(data)
        return path

    def delete_data_from_disk(self, data_root: Path | None = None) -> bool:
        """Remove this table from its file (the file too if it was its last table).

        Interactive use only: inside the engine, file changes go through the file writer
        (``await file_writer.run(hdf5.delete_key, path, key)``).

        Returns
        -------
        bool
            False if there was nothing to remove.
        """
        setattr(self, _DATA_CACHE, None)
        if not self.filename or not self.filekey:
            return False
        return hdf5.delete_key(self.get_fullname(data_root), self.filekey)
