"""``populate``'s file side (service.populate_files): raw files to rows, with no database."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aretriever.errors import StoreError
from aretriever.service import populate_files as files
from aretriever.store import paths
from aretriever.store.hdf5 import write_h5


def _raw(root: Path, name: str, ra: float, **attrs: object) -> Path:
    path = root / paths.raw_relpath("ztf", name, ra)
    table = pd.DataFrame({"mjd": np.arange(2, dtype=float)})
    meta = {"source_name": name, "observatory": "ztf", "ra_deg": ra, "dec_deg": 20.0, **attrs}
    write_h5(path, {paths.raw_key(name): (table, meta)}, fsync=False)
    return path


def test_the_walk_finds_raw_files_and_reads_their_rows_without_a_database(tmp_path: Path) -> None:
    path = _raw(tmp_path, "star 1", 10.5, mag=17.25, fetched_at="2024-05-01T12:00:00")
    (path.parent / f".{path.name}.abc.123.tmp").write_bytes(b"")  # hidden: never opened
    [(lane, folder)] = files.observatory_folders(tmp_path, ["ztf", "tess"])
    [ra_dir] = files.ra_folders(folder)
    assert (lane, files.raw_files(ra_dir)) == ("ztf", [path])

    batch = files.read_batch(tmp_path, "ztf", [path], None)
    [found] = batch.found
    assert (batch.files, batch.keys, batch.problems, found.matched) == (1, 1, [], False)
    assert (found.source["ra_deg"], found.source["mag"]) == (10.5, 17.25)
    assert found.raw["fetched_at"].tzinfo is not None  # a naive time is read as UTC
    assert found.raw["num_rows"] == 2


def test_attributes_that_are_not_finite_numbers_give_no_value_or_no_row() -> None:
    # the one helper for it (aretriever.numbers.finite_or_none): NaN never reaches a column
    row = files.attrs_source_row("a", {"ra_deg": 1.0, "dec_deg": 2.0, "mag": math.nan})
    assert row["mag"] is None
    for bad in (math.nan, math.inf, True, None):
        with pytest.raises(StoreError, match="no usable ra_deg/dec_deg attributes for 'b'"):
            files.attrs_source_row("b", {"ra_deg": bad, "dec_deg": 2.0})
