"""Catalog names are exact text in every format; bad cells are named rows; duplicates are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import MaskedColumn, Table

from aretriever.adapters.base import Target
from aretriever.catalogs.core import BadRow, FileCatalog, chunk_to_targets
from aretriever.catalogs.formats import _astropy_to_frame, read_csv_table, read_tap_json, read_votable
from aretriever.catalogs.names import check_unique_names, name_text
from aretriever.catalogs.tap import with_names
from aretriever.errors import CatalogError
from aretriever.settings import ColumnMap
from aretriever.store.hdf5 import frame_to_records
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.vizier_replay import WD_FIXTURE

GAIA_ID = 4583627001381815936  # > 2**53: a float would make it 4583627001381815808
HOSTILE = ["0012", "12", "NA", "nan", "None", "null", "N/A", "ünïcødé ★", "  padded  ", "x"]
ASCII_HOSTILE = [n for n in HOSTILE if n.isascii()]
ID_MAP = ColumnMap(name="source_id")


def _frame(names: list[str]) -> pd.DataFrame:
    n = len(names)
    return pd.DataFrame({"name": names, "ra": np.linspace(1.0, 2.0, n), "dec": np.full(n, 10.0)})


def _write(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` keeping its column types (text stays text, int64 ids stay int64)."""
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=3)
    elif path.suffix == ".fits":
        Table.from_pandas(frame).write(path)
    elif path.suffix == ".h5":
        with h5py.File(path, "w") as f:
            f.create_dataset("catalog", data=frame_to_records(frame))
    else:
        raise AssertionError(path)
    return path


def _targets(
    path: Path, columns: ColumnMap | None = None, chunk_rows: int = 4
) -> tuple[list[Target], list[BadRow]]:
    columns = columns or ColumnMap()
    chunks = list(FileCatalog(path, chunk_rows=chunk_rows, columns=columns).iter_chunks())
    targets: list[Target] = []
    bad: list[BadRow] = []
    for chunk in chunks:
        t, b = chunk_to_targets(chunk, columns)
        targets += t
        bad += b
    return targets, bad


# -------------------------------------------------------------------------- names per format


def test_csv_names_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "cat.csv"
    lines = ["name,ra,dec,mag"] + [f'"{n}",{1 + i / 10},10.0,NA' for i, n in enumerate(HOSTILE)]
    lines += [",1.9,10.0,15", '"",1.95,10.0,15']  # an empty name: a bad row named by its number
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    targets, bad = _targets(path)
    assert [t.name for t in targets] == [n.strip() for n in HOSTILE]
    assert all(t.mag is None for t in targets)  # NA in the mag column is still a missing value
    assert [(b.index, b.name, b.reason) for b in bad] == [
        (10, "row 10", "empty name"),
        (11, "row 11", "empty name"),
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".h5", ".fits"])
def test_binary_formats_keep_text_names(tmp_path: Path, suffix: str) -> None:
    names = ASCII_HOSTILE if suffix == ".fits" else HOSTILE  # FITS text is ASCII
    targets, bad = _targets(_write(_frame(names), tmp_path / f"cat{suffix}"))
    assert bad == []
    assert [t.name for t in targets] == [n.strip() for n in names]


def test_csv_gaia_ids_as_names_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    # the empty id would make pandas read the column as float64 and round every id
    path.write_text(f"source_id,ra,dec\n{GAIA_ID},1.0,2.0\n,1.0,2.0\n{2**63 - 1},1.0,2.0\n", encoding="utf-8")
    targets, bad = _targets(path, ID_MAP)
    assert [t.name for t in targets] == [str(GAIA_ID), str(2**63 - 1)]
    assert [(b.index, b.reason) for b in bad] == [(1, "empty name")]


@pytest.mark.parametrize("suffix", [".parquet", ".h5", ".fits"])
def test_int64_ids_as_names_are_exact(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(
        {"source_id": np.array([GAIA_ID, 12, -(2**63)], dtype=np.int64), "ra": [1.0, 2.0, 3.0], "dec": [0.0] * 3}
    )
    targets, bad = _targets(_write(frame, tmp_path / f"ids{suffix}"), ID_MAP)
    assert bad == [] and [t.name for t in targets] == [str(GAIA_ID), "12", str(-(2**63))]


def test_parquet_ids_with_nulls_stay_exact(tmp_path: Path) -> None:
    # pandas turns an int64 column with a null into float64: the id would lose its last digits
    table = pa.table(
        {
            "source_id": pa.array([GAIA_ID, None, GAIA_ID + 1], pa.int64()),
            "ra": [1.0, 2.0, 3.0],
            "dec": [0.0, 0.0, 0.0],
            "pmra": pa.array([5, None, 7], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "ids.parquet")
    targets, bad = _targets(tmp_path / "ids.parquet", ColumnMap(name="source_id", pmra="pmra"))
    assert [t.name for t in targets] == [str(GAIA_ID), str(GAIA_ID + 1)]
    assert [t.pmra_mas_yr for t in targets] == [5.0, 7.0]
    assert [(b.index, b.reason) for b in bad] == [(1, "empty name")]


def test_real_gaia_votable_ids_as_names() -> None:
    frame = read_votable((DATA_DIR / "1710099405832VAL-result.vot").read_bytes(), "gaia").frame
    targets, bad = chunk_to_targets(frame, ID_MAP)
    assert bad == [] and [t.name for t in targets] == [str(GAIA_ID), "5348723816842275584"]
    wd = read_votable(DATA_DIR / WD_FIXTURE, "wd").frame
    targets, _ = chunk_to_targets(wd, ColumnMap(name="GaiaEDR3", ra="RA_ICRS", dec="DE_ICRS"))
    assert [t.name for t in targets] == [str(v) for v in wd["GaiaEDR3"]]
    assert "5937144193345094528" in [t.name for t in targets]


def test_masked_votable_ids_stay_exact_and_byte_names_are_decoded() -> None:
    table = Table(
        {
            "source_id": MaskedColumn([GAIA_ID, 0, GAIA_ID + 2], dtype=np.int64, mask=[False, True, False]),
            "name": [b"0012", "ünï".encode(), b"NA"],
            "ra": [1.0, 2.0, 3.0],
            "dec": [0.0, 0.0, 0.0],
        }
    )
    frame = _astropy_to_frame(table)
    assert frame["source_id"].iloc[0] == GAIA_ID and frame["source_id"].iloc[2] == GAIA_ID + 2
    targets, bad = chunk_to_targets(frame, ID_MAP)
    assert [t.name for t in targets] == [str(GAIA_ID), str(GAIA_ID + 2)] and bad[0].index == 1
    targets, _ = chunk_to_targets(frame, ColumnMap())
    assert [t.name for t in targets] == ["0012", "ünï", "NA"]


def test_tap_json_and_csv_results_with_null_ids_stay_exact() -> None:
    document = {
        "metadata": [{"name": "source_id", "datatype": "long"}, {"name": "ra"}, {"name": "dec"}],
        "data": [[GAIA_ID, 1.0, 2.0], [None, 1.0, 2.0]],
    }
    frame = read_tap_json(json.dumps(document).encode(), "gaia")
    assert frame["source_id"].iloc[0] == GAIA_ID
    assert list(with_names(frame, "FROM gaiadr3.gaia_source")["name"]) == [f"Gaia DR3 {GAIA_ID}", ""]
    csv = read_csv_table(f"source_id,designation,ra,dec\n{GAIA_ID},NA,1.0,2.0\n,,1.0,2.0\n".encode(), "g")
    assert csv["source_id"].iloc[0] == GAIA_ID and pd.isna(csv["source_id"].iloc[1])
    assert list(csv["designation"]) == ["NA", ""]  # a name, and a missing one


def test_float_names_beyond_2_53_are_bad_rows_not_rounded() -> None:
    frame = pd.DataFrame({"name": [float(GAIA_ID), 12.0, float("nan")], "ra": [1.0] * 3, "dec": [0.0] * 3})
    targets, bad = chunk_to_targets(frame, ColumnMap())
    assert [t.name for t in targets] == ["12"]
    assert bad[0].index == 0 and "beyond 2**53" in bad[0].reason
    assert (bad[1].index, bad[1].reason) == (2, "empty name")
    assert name_text(b"\xffA") == "\\xffA" and name_text(np.int64(GAIA_ID)) == str(GAIA_ID)


# -------------------------------------------------------------------------- bad cells


def test_a_non_numeric_cell_is_a_bad_row_naming_row_column_and_value(tmp_path: Path) -> None:
    path = tmp_path / "cat.csv"
    path.write_text(
        "name,ra,dec,mag,pmra\n"
        "a,10.0,40.0,15.5,1\n"
        "b,10.1,40.0,abc,2\n"
        "c,10.2,40.0,,3\n"
        "d,12h30m,40.0,16,4\n"
        "e,10.4,40.0,NA,x1\n"
        "f,10.5,40.0,17,5\n",
        encoding="utf-8",
    )
    targets, bad = _targets(path, ColumnMap(pmra="pmra"), chunk_rows=3)
    assert [(t.name, t.mag, t.pmra_mas_yr) for t in targets] == [
        ("a", 15.5, 1.0),
        ("c", None, 3.0),
        ("f", 17.0, 5.0),
    ]
    assert [(b.index, b.name, b.reason) for b in bad] == [
        (1, "b", "row 1: column 'mag' has 'abc', not a number"),
        (3, "d", "row 3: column 'ra' has '12h30m', not a number"),
        (4, "e", "row 4: column 'pmra' has 'x1', not a number"),
    ]


# -------------------------------------------------------------------------- duplicates


def _csv(tmp_path: Path, names: list[str]) -> FileCatalog:
    path = tmp_path / "dup.csv"
    _frame(names).to_csv(path, index=False)
    return FileCatalog(path, chunk_rows=2)


def test_names_differing_only_as_numbers_are_not_duplicates(tmp_path: Path) -> None:
    check_unique_names(_csv(tmp_path, ["0012", "12", "12.0", "NA", "nan", ""]), "name")  # all distinct


def test_duplicates_across_chunks_name_the_rows(tmp_path: Path) -> None:
    catalog = _csv(tmp_path, ["a", "0012", "b", "c", "0012", "a", "0012"])
    with pytest.raises(CatalogError) as caught:
        check_unique_names(catalog, "name")
    message = str(caught.value)
    assert message.startswith(
        "catalog: dup.csv: 2 source name(s) appear on more than one row: 'a' (rows 0, 5), "
        "'0012' (rows 1, 4, 6);"
    )
    check_unique_names(catalog, "name", 0, 4)  # the run's range has no duplicate
    with pytest.raises(CatalogError, match=re.escape("'0012' (rows 4, 6)")):
        check_unique_names(catalog, "name", 2)


def test_many_duplicates_are_capped(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(13)] * 2 + ["s0"] * 6
    with pytest.raises(CatalogError) as caught:
        check_unique_names(_csv(tmp_path, names), "name")
    message = str(caught.value)
    assert "13 source name(s)" in message and "'s0' (rows 0, 13, 26, 27, 28 and 3 more)" in message
    assert "'s9' (rows 9, 22)" in message and "'s10'" not in message and " and 3 more; names" in message


def test_a_name_lookup_of_a_duplicated_name_fails(tmp_path: Path) -> None:
    catalog = _csv(tmp_path, ["a", "b", "a"])
    assert catalog.get_row("b")["name"] == "b"
    with pytest.raises(CatalogError, match=re.escape("the name 'a' is on several rows (0, 2)")):
        catalog.get_row("a")
