"""``aretriever.store`` re-exports its names lazily: importing one module of it loads only that one."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import aretriever.store as store

# every name the package exported when it imported them all eagerly, and the module each lives in
EXPORTED = {
    "datafiles": ["DataFileMixin"],
    "db": ["create_engine", "normalize_url", "ping", "resolve_db_url", "session_factory"],
    "hdf5": ["delete_key", "frame_to_records", "h5_keys", "h5_nrows", "read_h5", "records_to_frame",
             "verify_h5", "write_h5"],
    "models": ["Base", "Detection", "Failure", "Lightcurve", "Properties", "RawPhotometry", "RawStatus",
               "Source", "Stage"],
    "paths": ["product_folder", "ra_folder", "raw_key", "raw_relpath", "reduced_relpath", "reduction_key",
              "resolve", "safe_name"],
    "schema": ["current_revision", "downgrade", "migrate"],
    "sessions": ["NoOpSession", "Session", "SmartSession", "sync_engine", "use_database"],
    "transient": ["is_transient"],
    "writers": ["Delete", "FileWriter", "Op", "Replace", "RowWriter", "Upsert"],
}  # fmt: skip
NAMES = [(module, name) for module, names in EXPORTED.items() for name in names]


def test_all_lists_every_exported_name() -> None:
    assert sorted(store.__all__) == sorted(name for _, name in NAMES)


@pytest.mark.parametrize(("module", "name"), NAMES)
def test_each_name_is_its_home_modules_object(module: str, name: str) -> None:
    home = importlib.import_module(f"aretriever.store.{module}")
    assert getattr(store, name) is getattr(home, name)
    assert name in dir(store)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        store.no_such_name  # noqa: B018


def test_one_module_of_the_store_loads_no_hdf5_pandas_or_orm() -> None:
    code = (
        "import sys\n"
        "from aretriever.store import paths, owners\n"
        "print(' '.join(m for m in ('h5py', 'pandas', 'sqlalchemy.orm', 'aretriever.store.models') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []
