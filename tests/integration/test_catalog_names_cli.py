"""The CLI and catalog names: exact text, named bad cells, duplicates refused before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_backfill import query

ZTF = "/cgi-bin/ZTF/nph_light_curves"


def test_duplicate_names_exit_2_naming_the_rows_before_any_request(
    run_cli, archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "dup.csv"
    catalog.write_text(
        "name,ra,dec\nWD 1,10.0,40.0\n0012,10.1,40.0\n12,10.2,40.0\n0012,10.3,40.0\nWD 1,10.4,40.0\n",
        encoding="utf-8",
    )
    assert run_cli("--catalog", str(catalog)) == 2
    err = capsys.readouterr().err
    assert "2 source name(s) appear on more than one row: 'WD 1' (rows 0, 4), '0012' (rows 1, 3)" in err
    assert archive.archive.count() == 0  # refused before the first request, not half-way
    assert run_cli("--catalog", str(catalog), "--dry-run") == 2
    assert run_cli("--catalog", str(catalog), "--start", "1", "--stop", "3") == 0  # no duplicate there
    assert archive.archive.count(ZTF) == 2


def test_a_bad_cell_is_a_catalog_failure_naming_row_and_column_and_the_rest_is_fetched(
    run_cli, archive, db_url: str, tmp_path: Path
) -> None:
    catalog = tmp_path / "cat.csv"
    catalog.write_text(
        "name,ra,dec,mag\n0012,10.0,40.0,\n12,10.1,40.0,NA\nNA,10.2,40.0,abc\nnan,10.3,40.0,\n",
        encoding="utf-8",
    )
    assert run_cli("--catalog", str(catalog)) == 1  # a row failed
    failures = query(db_url, "select source_name, observatory, stage, reason, last_error from failures")
    assert failures == [("NA", "", "catalog", "bad_row", "row 2: column 'mag' has 'abc', not a number")]
    statuses = dict(query(db_url, "select source_name, status from raw_photometry"))
    assert statuses == {"0012": "ok", "12": "ok", "nan": "ok"}
    assert archive.archive.count(ZTF) == 3
