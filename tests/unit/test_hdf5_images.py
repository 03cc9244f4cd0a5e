"""HDF5 file images: built in memory, the same format as before, written atomically as bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, get_args

import h5py
import numpy as np
import pandas as pd
import pytest

from aretriever.errors import WriteError
from aretriever.settings import StoreConfig
from aretriever.store import hdf5

META: dict[str, Any] = {
    "source": "WDJ000006.33+512226.63",
    "num_oids": 3,
    "radius_arcsec": 2.5,
    "reduced": True,
    "flag": np.bool_(False),
    "nan": float("nan"),
    "none": None,
    "oids": [736115200001082, 736215200003431],
    "cuts": {"mag_range": 0.75, "filters": ["zg", "zr"], "nested": {"deep": [1, 2.5, None]}},
    "pair": (1, 2),
    "array": np.array([1.5, 2.5]),
    "huge": 2**70,
    "unicode": "Ωmega",
    "empty_text": "",
}


@pytest.fixture
def ztf(ztf_csv: Path) -> pd.DataFrame:
    return pd.read_csv(ztf_csv)


def _tables(ztf: pd.DataFrame) -> hdf5.Tables:
    text = pd.DataFrame({"name": ["Ωmega", None, "x"], "n": np.arange(3)})
    return {
        "full": (ztf, META),
        "records": (hdf5.frame_to_records(ztf.iloc[:5]), {"k": 1}),
        "empty": (ztf.iloc[:0], {"why": "nothing survived"}),
        "text": (text, {}),
    }


@pytest.mark.parametrize("compression", hdf5.COMPRESSIONS)
def test_an_image_reads_back_with_plain_h5py_and_read_h5(
    tmp_path: Path, ztf: pd.DataFrame, compression: hdf5.Compression
) -> None:
    image = hdf5.build_h5_image(_tables(ztf), compression)
    path = tmp_path / "f.h5"
    assert hdf5.write_image(path, image) == len(image) == path.stat().st_size
    with h5py.File(path, "r") as h5:
        assert sorted(h5.keys()) == ["empty", "full", "records", "text"]
        plain = pd.DataFrame(h5["full"][:])  # what a user without aretriever does
        assert h5["full"].compression == (None if compression == "none" else compression)
        assert h5["empty"].shape == (0,) and h5["empty"].chunks is None
    np.testing.assert_array_equal(plain["mjd"].to_numpy(), ztf["mjd"].to_numpy())
    frame, meta = hdf5.read_h5(path, "full")
    pd.testing.assert_frame_equal(frame, ztf)
    assert set(meta) == set(META) and np.isnan(meta["nan"])
    for key in ("source", "num_oids", "radius_arcsec", "reduced", "none", "oids", "cuts", "huge", "unicode"):
        assert meta[key] == META[key] and type(meta[key]) is type(META[key]), key
    assert meta["flag"] is False and meta["empty_text"] == ""
    assert meta["pair"] == [1, 2] and meta["array"] == [1.5, 2.5]
    empty, why = hdf5.read_h5(path, "empty")
    assert list(empty.columns) == list(ztf.columns) and len(empty) == 0 and why == {"why": "nothing survived"}
    text, _ = hdf5.read_h5(path, "text")
    assert text["name"].tolist() == ["Ωmega", "", "x"]
    assert hdf5.verify_h5(path) and hdf5.h5_nrows(path, "full") == len(ztf)


def test_an_image_is_the_file_write_h5_writes_and_the_same_tables_give_the_same_bytes(
    tmp_path: Path, ztf: pd.DataFrame
) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_h5(path, _tables(ztf))
    image = hdf5.build_h5_image(_tables(ztf))
    assert path.read_bytes() == image == hdf5.build_h5_image(_tables(ztf))
    with h5py.File(io.BytesIO(image), "r") as h5:
        # no object keeps a time (equal bytes would otherwise hold only within one second)
        for obj in (h5, *h5.values()):
            info = h5py.h5o.get_info(obj.id)
            assert info.ctime == info.mtime == info.atime == info.btime == 0
    frame, meta = hdf5.read_image(image, "records")
    pd.testing.assert_frame_equal(frame, ztf.iloc[:5])
    assert meta == {"k": 1}


def test_compression_makes_a_real_table_smaller_and_stays_one_chunk(ztf: pd.DataFrame) -> None:
    sizes = {c: len(hdf5.build_h5_image({"k": (ztf, {})}, c)) for c in hdf5.COMPRESSIONS}
    assert sizes["gzip"] < sizes["lzf"] < 0.7 * sizes["none"]
    with h5py.File(io.BytesIO(hdf5.build_h5_image({"k": (ztf, {})})), "r") as h5:
        assert h5["k"].chunks == (len(ztf),) and h5["k"].shuffle


def test_a_huge_table_is_cut_in_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    records = np.zeros(1000, dtype=[("a", "f8"), ("b", "i8")])
    records["a"] = np.arange(1000)
    monkeypatch.setattr(hdf5, "_MAX_CHUNK_BYTES", 1600)  # 100 rows of 16 bytes
    with h5py.File(io.BytesIO(hdf5.build_h5_image({"k": (records, {})})), "r") as h5:
        assert h5["k"].chunks == (100,)
        np.testing.assert_array_equal(h5["k"][:], records)


def test_delete_key_and_relink_work_on_compressed_files(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_image(path, hdf5.build_h5_image({"a": (ztf, {"x": 1}), "b": (ztf.iloc[:7], {"y": [1]})}))
    assert hdf5.h5_nrows(path, "a") == len(ztf)
    assert hdf5.delete_key(path, "a") is True
    frame, meta = hdf5.read_h5(path, "b")
    pd.testing.assert_frame_equal(frame, ztf.iloc[:7])
    assert meta == {"y": [1]}
    with h5py.File(path, "r") as h5:
        assert h5["b"].compression == "gzip"  # copied with its filters


@pytest.mark.parametrize(
    ("tables", "compression", "match"),
    [
        ({}, "gzip", "no tables"),
        ({"k": (pd.DataFrame({"a": [1]}), {})}, "zstd", "unknown compression"),
        ({"a/b": (pd.DataFrame({"a": [1]}), {})}, "gzip", "'a/b'"),
        ({"k": (pd.DataFrame({"a": [1]}), {hdf5.JSON_ATTR: 1})}, "gzip", "reserved"),
        ({"k": (np.zeros(3), {})}, "gzip", "not a structured array"),
    ],
)
def test_what_cannot_be_stored_is_refused_before_any_file(
    tables: hdf5.Tables, compression: Any, match: str
) -> None:
    with pytest.raises(WriteError, match=match):
        hdf5.build_h5_image(tables, compression)


def test_a_failing_image_write_leaves_nothing_and_keeps_the_old_file(
    tmp_path: Path, ztf: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.h5"
    old = hdf5.build_h5_image({"old": (ztf.iloc[:3], {})})
    hdf5.write_image(path, old)

    def fail(*args: Any) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(WriteError, match=r"f\.h5.*disk full"):
        hdf5.write_image(path, hdf5.build_h5_image({"new": (ztf, {})}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]  # no temporary left behind
    assert path.read_bytes() == old


@pytest.mark.parametrize("name", ["raw_compression", "reduced_compression"])
def test_the_settings_offer_exactly_the_store_compressions(name: str) -> None:
    field = StoreConfig.model_fields[name]
    assert set(get_args(field.annotation)) == set(hdf5.COMPRESSIONS)
    assert StoreConfig.model_fields["raw_compression"].default == hdf5.DEFAULT_COMPRESSION
