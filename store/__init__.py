"""Storage: database models and migrations, on-disk paths, HDF5 files, and the two writer tasks.

Installed as ``aretriever.store``. See :mod:`aretriever.store.paths` for the folder layout,
:mod:`aretriever.store.hdf5` for the file format and :mod:`aretriever.store.writers` for the rule
that only the writer tasks write (files before rows), :mod:`aretriever.store.rows` for the one
builder of each row kind and :mod:`aretriever.store.queries` / :mod:`aretriever.store.workqueue`
for every statement run outside the writer: SQL lives in this package only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers and readers
    from .datafiles import DataFileMixin
    from .db import create_engine, normalize_url, ping, resolve_db_url, session_factory
    from .hdf5 import (
        delete_key,
        frame_to_records,
        h5_keys,
        h5_nrows,
        read_h5,
        records_to_frame,
        verify_h5,
        write_h5,
    )
    from .models import (
        Base,
        Detection,
        Failure,
        Lightcurve,
        Properties,
        RawPhotometry,
        RawStatus,
        Source,
        Stage,
    )
    from .paths import (
        product_folder,
        ra_folder,
        raw_key,
        raw_relpath,
        reduced_relpath,
        reduction_key,
        resolve,
        safe_name,
    )
    from .schema import current_revision, downgrade, migrate
    from .sessions import NoOpSession, Session, SmartSession, sync_engine, use_database
    from .transient import is_transient
    from .writers import Delete, FileWriter, Op, Replace, RowWriter, Upsert

# Each name is imported from its module at its first use: ``from aretriever.store import paths``
# then costs only ``paths``, not h5py, pandas and the ORM models (the fetch command's start-up).
_HOMES: dict[str, str] = {
    "Base": "models",
    "DataFileMixin": "datafiles",
    "Delete": "writers",
    "Detection": "models",
    "Failure": "models",
    "FileWriter": "writers",
    "Lightcurve": "models",
    "NoOpSession": "sessions",
    "Op": "writers",
    "Properties": "models",
    "RawPhotometry": "models",
    "RawStatus": "models",
    "Replace": "writers",
    "RowWriter": "writers",
    "Session": "sessions",
    "SmartSession": "sessions",
    "Source": "models",
    "Stage": "models",
    "Upsert": "writers",
    "create_engine": "db",
    "current_revision": "schema",
    "delete_key": "hdf5",
    "downgrade": "schema",
    "frame_to_records": "hdf5",
    "h5_keys": "hdf5",
    "h5_nrows": "hdf5",
    "is_transient": "transient",
    "migrate": "schema",
    "normalize_url": "db",
    "ping": "db",
    "product_folder": "paths",
    "ra_folder": "paths",
    "raw_key": "paths",
    "raw_relpath": "paths",
    "read_h5": "hdf5",
    "records_to_frame": "hdf5",
    "reduced_relpath": "paths",
    "reduction_key": "paths",
    "resolve": "paths",
    "resolve_db_url": "db",
    "safe_name": "paths",
    "session_factory": "db",
    "sync_engine": "sessions",
    "use_database": "sessions",
    "verify_h5": "hdf5",
    "write_h5": "hdf5",
}

__all__ = [
    "Base",
    "DataFileMixin",
    "Delete",
    "Detection",
    "Failure",
    "FileWriter",
    "Lightcurve",
    "NoOpSession",
    "Op",
    "Properties",
    "RawPhotometry",
    "RawStatus",
    "Replace",
    "RowWriter",
    "Session",
    "SmartSession",
    "Source",
    "Stage",
    "Upsert",
    "create_engine",
    "current_revision",
    "delete_key",
    "downgrade",
    "frame_to_records",
    "h5_keys",
    "h5_nrows",
    "is_transient",
    "migrate",
    "normalize_url",
    "ping",
    "product_folder",
    "ra_folder",
    "raw_key",
    "raw_relpath",
    "read_h5",
    "records_to_frame",
    "reduced_relpath",
    "reduction_key",
    "resolve",
    "resolve_db_url",
    "safe_name",
    "session_factory",
    "sync_engine",
    "use_database",
    "verify_h5",
    "write_h5",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
