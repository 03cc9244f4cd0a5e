"""store.rows: one builder per row kind, with the table's key and what an upsert overwrites."""

from __future__ import annotations

import pytest

from aretriever.adapters.base import Target
from aretriever.engine.pool import ReducedTable
from aretriever.store import rows
from aretriever.store.models import (
    Detection,
    Failure,
    Lightcurve,
    Properties,
    RawPhotometry,
    RawStatus,
    Source,
    Stage,
    WorkItem,
    WorkState,
)

TARGET = Target("WD 1", 10.0, -5.0, mag=15.5, pmra_mas_yr=1.0, pmdec_mas_yr=2.0, index=7)


def test_source_row_from_a_target_overwrites_every_catalog_column() -> None:
    row = rows.source_row(TARGET, "WD")
    assert row == {
        "name": "WD 1",
        "ra_deg": 10.0,
        "dec_deg": -5.0,
        "mag": 15.5,
        "pmra_mas_yr": 1.0,
        "pmdec_mas_yr": 2.0,
        "catalog": "WD",
        "cat_index": 7,
    }
    op = rows.upsert_sources([row])
    assert (op.model, op.keys, op.update) == (Source, ("name",), rows.SOURCE_COLUMNS)
    assert set(rows.SOURCE_COLUMNS) == set(row) - {"name"}
    assert rows.upsert_sources([row], overwrite=False).update == ()  # a file never overwrites the catalog


@pytest.mark.parametrize(
    ("relpath", "num_rows", "status"),
    [(None, 0, RawStatus.NO_DATA), ("ZTF/a.h5", 0, RawStatus.EMPTY), ("ZTF/a.h5", 3, RawStatus.OK)],
)
def test_raw_row_status_follows_the_file(relpath: str | None, num_rows: int, status: RawStatus) -> None:
    row = rows.raw_row("WD 1", "ztf", relpath, num_rows=num_rows, nbytes=10)
    assert row["status"] == status and type(row["status"]) is str  # plain str for the bulk writer
    assert (row["filekey"] is None) == (relpath is None)
    assert row["fetched_at"].tzinfo is not None
    op = rows.upsert_raw([row])
    assert (op.model, op.keys, op.update) == (RawPhotometry, ("source_name", "observatory"), None)


def test_lightcurve_rows_number_the_series_and_replace_the_real_ones() -> None:
    key = rows.product_key("WD 1", "ztf", "P", "abc")
    tables = [
        ReducedTable(4, "zg", 1.0, 2.0, {"a": 1}, {"mean_mag": 15.0}),
        ReducedTable(2, "zr", 3.0, 4.0),
    ]
    lcs = rows.lightcurve_rows(key, "P/ZTF/x.h5", 99, tables)
    assert [(r["series_number"], r["series_total"], r["num_rows"], r["filter"]) for r in lcs] == [
        (1, 2, 4, "zg"),
        (2, 2, 2, "zr"),
    ]
    assert lcs[0]["mean_mag"] == 15.0 and lcs[0]["meta"] == {"a": 1}
    assert all(r["simulation_number"] == 0 and r["nbytes"] == 99 for r in lcs)
    op = rows.replace_lightcurves(key, lcs)
    assert op.model is Lightcurve and op.where == {**key, "simulation_number": 0}


def test_detection_and_properties_rows_carry_the_product_key() -> None:
    key = rows.product_key("WD 1", "ztf", "P", "")
    detections = rows.detection_rows(key, [[{"snr": 8.0}], [], [{"snr": 9.0}, {"snr": 10.0}]])
    assert [(d["series_number"], d["snr"]) for d in detections] == [(1, 8.0), (3, 9.0), (3, 10.0)]
    assert rows.replace_detections(key, detections).model is Detection
    op = rows.upsert_properties(key, {"num_lightcurves": 3})
    assert op.model is Properties and op.keys == tuple(key)
    assert op.rows == [{**key, "num_lightcurves": 3}]


def test_failure_rows_record_and_resolve_by_stage() -> None:
    row = rows.failure_row("WD 1", "ztf", Stage.FETCH, "http_503", attempts=5, last_error="boom")
    assert row["stage"] == "fetch" and type(row["stage"]) is str and row["resolved"] is False
    op = rows.record_failure(row)
    assert op.model is Failure and op.keys == ("source_name", "observatory", "stage")
    assert "first_at" not in (op.update or ())  # the first failure's time stays
    resolved = rows.resolve_failures("WD 1", "ztf", {"write", "fetch"})
    assert [(r["stage"], r["resolved"]) for r in resolved.rows] == [("fetch", True), ("write", True)]
    assert resolved.update == ("resolved", "last_at")
    catalog = rows.catalog_failure("row 3", "bad_row", "no name")
    assert catalog.rows[0]["stage"] == Stage.CATALOG and catalog.rows[0]["observatory"] == ""


def test_work_done_marks_the_item_done_and_releases_it() -> None:
    op = rows.work_done("WD", "WD 1", {"name": "WD 1"}, "host:1")
    assert op.model is WorkItem and op.keys == ("catalog", "source_name")
    assert op.rows[0]["state"] == WorkState.DONE and op.rows[0]["lease_until"] is None


def test_enums_are_the_stored_strings() -> None:
    assert [s.value for s in RawStatus] == ["ok", "empty", "no_data"]
    assert {"catalog", "fetch", "write", "reduce"} <= {s.value for s in Stage}
