"""Lightcurve tables as DataFrames or structured arrays: reading, converting, extending."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aretriever.adapters.ztf import parse_lightcurve_table
from aretriever.science.columns import (
    add_column,
    add_columns,
    assign,
    column,
    drop,
    flags,
    has,
    names,
    to_records,
)
from aretriever.store.hdf5 import frame_to_records, records_to_frame
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.ztf_replay import recorded_irsa_csv


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    # a DataFrame with text columns, as a notebook or a third-party reducer hands one over
    return records_to_frame(parse_lightcurve_table(recorded_irsa_csv(DATA_DIR)))


def _tricky() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "j": pd.array([1, 2, 3], dtype="Int64"),
            "b": pd.array([True, False, None], dtype="boolean"),
            "f": [0.5, np.nan, 2.0],
            "k": np.array([1, 0, 7], dtype=np.int16),
            "s": ["a", None, "abc"],
            "o": pd.Series([b"xy", 3, None], dtype=object),
            "t": pd.Series(["é", pd.NA, "zz"], dtype="str"),
            "e": pd.Series([None, None, None], dtype="str"),
        }
    )


@pytest.mark.parametrize("frame", ["raw", "tricky", "empty"])
def test_to_records_is_what_the_hdf5_writer_makes(raw: pd.DataFrame, frame: str) -> None:
    table = {"raw": raw, "tricky": _tricky(), "empty": raw.iloc[:0]}[frame]
    ours, theirs = to_records(table), frame_to_records(table)
    assert ours.dtype == theirs.dtype
    assert ours.tobytes() == theirs.tobytes()
    assert to_records(ours) is ours  # a structured array passes through


def test_reading_is_the_same_for_both_types() -> None:
    frame = _tricky()
    records = to_records(frame)
    assert names(frame) == names(records) == tuple(frame.columns)
    assert has(records, "f") and not has(records, "flux") and has(frame, "f")
    for name in ("i", "j", "b", "f", "k", "flux"):
        np.testing.assert_array_equal(column(frame, name), column(records, name))
    assert column(records, "f").dtype == np.float64 and np.isnan(column(records, "flux")).all()
    # missing flags count as flagged; an absent column flags nothing
    assert flags(frame, "b").tolist() == flags(records, "b").tolist() == [True, False, True]
    assert flags(records, "i").tolist() == [True, True, True] and not flags(records, "nope").any()
    with pytest.raises(ValueError, match="read-only"):
        column(records, "f")[0] = 1.0  # a view of the table, which must not change through it


def test_add_columns_replaces_in_place_and_appends() -> None:
    frame = _tricky()
    records = to_records(frame)
    before = records.copy()
    new = {"f": np.array([1, 2, 3], dtype=np.int32), "flux": np.arange(3.0), "flagged": False}
    out = add_columns(records, new)
    assert names(out) == (*names(records), "flux", "flagged")
    assert out.dtype["f"] == np.int32 and out["f"].tolist() == [1, 2, 3]
    assert out["flagged"].dtype == np.bool_ and not out["flagged"].any()
    assert out["s"].tolist() == [b"a", b"", b"abc"]
    assert records.tobytes() == before.tobytes()  # not modified
    # what pandas makes of the same assignment, converted, is the same table
    assert out.tobytes() == frame_to_records(frame.assign(**new)).tobytes()
    assert add_columns(frame, new).tobytes() == out.tobytes()
    with pytest.raises(ValueError, match=r"'x' has shape \(2,\)"):
        add_columns(records, {"x": [1.0, 2.0]})


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_add_column_to_a_slice(raw: pd.DataFrame, layout: str) -> None:
    records = to_records(raw)
    rows = slice(10, 20) if layout == "contiguous" else slice(10, 30, 2)
    out = add_column(records[rows], "snr", np.arange(10.0))
    expected = frame_to_records(raw.iloc[rows].assign(snr=np.arange(10.0)))
    assert out.dtype == expected.dtype and out.tobytes() == expected.tobytes()


def test_assign_and_drop_keep_the_type() -> None:
    frame = _tricky()
    records = to_records(frame)
    assert isinstance(assign(frame, {"x": np.ones(3)}), pd.DataFrame)
    assert list(drop(frame, ["f", "nope"]).columns) == [c for c in frame.columns if c != "f"]
    dropped = drop(records, ["f", "nope"])
    assert isinstance(dropped, np.ndarray) and names(dropped) == tuple(c for c in frame.columns if c != "f")
    assert dropped.tobytes() == frame_to_records(frame.drop(columns="f")).tobytes()
