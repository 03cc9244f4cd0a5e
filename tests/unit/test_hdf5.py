"""HDF5 tables: conversion, round trips readable with plain h5py, atomic writes, key removal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from aretriever.errors import StoreError, WriteError
from aretriever.store import hdf5

META: dict[str, Any] = {
    "source": "WDJ000006.33+512226.63",
    "num_oids": 3,
    "radius_arcsec": 2.5,
    "reduced": True,
    "nan": float("nan"),
    "none": None,
    "oids": [736115200001082, 736215200003431],
    "cuts": {"mag_range": 0.75, "filters": ["zg", "zr"], "nested": {"deep": [1, 2.5, None]}},
    "pair": (1, 2),
    "array": np.array([1.5, 2.5]),
    "huge": 2**70,
    "unicode": "Ωmega",
}


@pytest.fixture
def ztf(ztf_csv: Path) -> pd.DataFrame:
    return pd.read_csv(ztf_csv)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_records_round_trip_the_real_ztf_table(ztf: pd.DataFrame) -> None:
    records = hdf5.frame_to_records(ztf)
    assert list(records.dtype.names or ()) == list(ztf.columns)
    assert records.dtype["filtercode"] == np.dtype("S2")
    back = hdf5.records_to_frame(records)
    pd.testing.assert_frame_equal(back, ztf)


def test_text_is_utf8_and_missing_text_is_empty() -> None:
    df = pd.DataFrame({"name": ["Ωmega", None, "x"], "n": [1, 2, 3]}, dtype=object)
    df["n"] = df["n"].astype("int64")
    records = hdf5.frame_to_records(df)
    assert records["name"].tolist() == ["Ωmega".encode(), b"", b"x"]
    assert hdf5.records_to_frame(records)["name"].tolist() == ["Ωmega", "", "x"]


def test_nullable_columns_become_numpy() -> None:
    df = pd.DataFrame(
        {
            "i": pd.array([1, None], dtype="Int64"),
            "j": pd.array([1, 2], dtype="Int64"),
            "b": pd.array([True, False], dtype="boolean"),
            "f": [1.5, np.nan],
        }
    )
    records = hdf5.frame_to_records(df)
    assert records.dtype["i"] == np.float64 and np.isnan(records["i"][1])
    assert records.dtype["j"] == np.int64
    assert records.dtype["b"] == np.bool_


def test_empty_frame_keeps_columns_and_dtypes(ztf: pd.DataFrame) -> None:
    empty = ztf.iloc[:0]
    back = hdf5.records_to_frame(hdf5.frame_to_records(empty))
    assert list(back.columns) == list(ztf.columns)
    assert back.dtypes.to_dict() == empty.dtypes.to_dict()
    assert len(back) == 0


@pytest.mark.parametrize(
    ("df", "match"),
    [
        (pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])}), "MJD"),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "unique"),
        (pd.DataFrame({0: [1]}), "strings"),
    ],
)
def test_unstorable_frames_are_refused(df: pd.DataFrame, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        hdf5.frame_to_records(df)


def test_write_read_round_trip_with_plain_h5py(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "a" / "b" / "f.h5"
    nbytes = hdf5.write_h5(path, {"WDJ000006.33+512226.63": (ztf, META)})
    assert nbytes == path.stat().st_size > ztf.to_numpy().nbytes // 2
    with h5py.File(path, "r") as h5:
        assert list(h5.keys()) == ["WDJ000006.33+512226.63"]
        dataset = h5["WDJ000006.33+512226.63"]
        # one chunk, shuffled and gzipped: what every HDF5 tool reads
        assert dataset.chunks == (len(ztf),) and dataset.compression == "gzip" and dataset.shuffle
        plain = pd.DataFrame(dataset[:])
        assert dataset.attrs["num_oids"] == 3 and dataset.attrs["source"] == META["source"]
    assert list(plain.columns) == list(ztf.columns)
    np.testing.assert_array_equal(plain["mjd"].to_numpy(), ztf["mjd"].to_numpy())
    assert plain["filtercode"].iloc[0] == b"zg"
    frame, meta = hdf5.read_h5(path, "WDJ000006.33+512226.63")
    pd.testing.assert_frame_equal(frame, ztf)
    _check_meta(meta)


def _check_meta(meta: dict[str, Any]) -> None:
    assert set(meta) == set(META)
    for key in ("source", "num_oids", "radius_arcsec", "reduced", "none", "oids", "cuts", "huge"):
        assert meta[key] == META[key] and type(meta[key]) is type(META[key]), key
    assert np.isnan(meta["nan"])
    assert meta["pair"] == [1, 2] and meta["array"] == [1.5, 2.5]
    assert meta["unicode"] == "Ωmega"


def test_keys_nrows_and_verify(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_h5(path, {"b": (ztf.iloc[:10], {}), "a": (ztf.iloc[:0], {})})
    assert hdf5.h5_keys(path) == ["a", "b"]
    assert hdf5.h5_nrows(path, "b") == 10 and hdf5.h5_nrows(path, "a") == 0
    assert hdf5.verify_h5(path)


def test_verify_rejects_broken_files(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_h5(path, {"k": (ztf, {})})
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    for name in ("cut.h5", "text.h5", "empty.h5", "missing.h5"):
        assert hdf5.verify_h5(tmp_path / name) is False, name


def test_reading_a_missing_key_raises_store_error(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_h5(path, {"k": (ztf.iloc[:3], {})})
    with pytest.raises(StoreError, match="'nope'"):
        hdf5.read_h5(path, "nope")
    with pytest.raises(StoreError):
        hdf5.read_h5(tmp_path / "missing.h5", "k")


def test_failed_write_leaves_no_file(tmp_path: Path, ztf: pd.DataFrame) -> None:
    folder = tmp_path / "RA000"
    path = folder / "f.h5"
    bad = pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])})
    with pytest.raises(WriteError, match=r"f\.h5.*'second'") as info:
        hdf5.write_h5(path, {"first": (ztf, {}), "second": (bad, {})})
    assert isinstance(info.value.__cause__, TypeError)
    assert not folder.exists()  # the file is built in memory first: nothing reached the disk


def test_failure_after_the_first_key_keeps_the_old_file(
    tmp_path: Path, ztf: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_h5(path, {"old": (ztf.iloc[:5], {})})
    real = hdf5.frame_to_records
    calls: list[int] = []

    def fail_on_second(df: pd.DataFrame) -> np.ndarray[Any, Any]:
        calls.append(len(df))
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(df)

    monkeypatch.setattr(hdf5, "frame_to_records", fail_on_second)
    with pytest.raises(WriteError, match=r"'two'.*disk full"):
        hdf5.write_h5(path, {"one": (ztf, {}), "two": (ztf.iloc[:3], {})})
    assert calls == [len(ztf), 3]
    assert _files(tmp_path) == ["f.h5"]
    assert hdf5.h5_keys(path) == ["old"]


def test_bad_keys_and_metadata_are_refused(tmp_path: Path, ztf: pd.DataFrame) -> None:
    for tables in (
        {"a/b": (ztf, {})},
        {"": (ztf, {})},
        {"k": (ztf, {hdf5.JSON_ATTR: 1})},
        {"k": (ztf, {"obj": object()})},
        {},
    ):
        with pytest.raises(WriteError):
            hdf5.write_h5(tmp_path / "f.h5", tables)
    assert _files(tmp_path) == []


def test_delete_key_rewrites_and_removes_the_last(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "f.h5"
    hdf5.write_h5(path, {"a": (ztf, {"x": 1}), "b": (ztf.iloc[:7], {"y": [1, 2]})})
    before = path.stat().st_size
    assert hdf5.delete_key(path, "a") is True
    assert hdf5.h5_keys(path) == ["b"]
    assert path.stat().st_size < before  # rewritten, the space is given back
    frame, meta = hdf5.read_h5(path, "b")
    pd.testing.assert_frame_equal(frame, ztf.iloc[:7])
    assert meta == {"y": [1, 2]}
    assert hdf5.delete_key(path, "a") is False
    assert hdf5.delete_key(path, "b") is True
    assert not path.exists()
    assert hdf5.delete_key(path, "b") is False
    assert _files(tmp_path) == []


def test_fsync_write(tmp_path: Path, ztf: pd.DataFrame) -> None:
    path = tmp_path / "f.h5"
    assert hdf5.write_h5(path, {"k": (ztf.iloc[:3], {})}, fsync=True) == os.path.getsize(path)


def _record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Patch os.fsync and os.replace to record, in order, what was synced and renamed."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(hdf5.os, "fsync", fsync)
    monkeypatch.setattr(hdf5.os, "replace", replace)
    return events


def test_writes_are_synced_file_then_rename_then_folder_by_default(
    tmp_path: Path, ztf: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _record_syncs(monkeypatch)
    path = tmp_path / "sub" / "f.h5"
    hdf5.write_h5(path, {"k": (ztf.iloc[:3], {})})  # fsync is the default
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    tmp_synced, renamed, folder_synced = (where for _, where in events)
    assert Path(tmp_synced).parent == path.parent and Path(tmp_synced).name.endswith(".tmp")
    assert renamed == str(path)
    assert folder_synced == str(path.parent)
    events.clear()
    with hdf5.atomic_path(tmp_path / "plain.txt", "test") as tmp:
        tmp.write_text("x")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    events.clear()
    hdf5.write_h5(tmp_path / "fast.h5", {"k": (ztf.iloc[:3], {})}, fsync=False)
    assert [kind for kind, _ in events] == ["replace"]


def test_folder_fsync_refused_by_the_file_system_is_skipped(
    tmp_path: Path, ztf: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(hdf5.os, "fsync", fsync)
    path = tmp_path / "f.h5"
    assert hdf5.write_h5(path, {"k": (ztf.iloc[:3], {})}) == os.path.getsize(path)

    def fsync_fails(fd: int) -> None:  # a file that cannot be synced is a failed write
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(hdf5.os, "fsync", fsync_fails)
    with pytest.raises(WriteError, match="Input/output error"):
        hdf5.write_h5(tmp_path / "g.h5", {"k": (ztf.iloc[:3], {})})
    assert not (tmp_path / "g.h5").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]
