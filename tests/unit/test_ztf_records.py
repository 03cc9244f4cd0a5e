"""The ZTF raw table is a structured array from parse to file: the same table, and the same raw
file, as the pandas path made (pyarrow -> DataFrame -> ``frame_to_records``), kept here as the
reference; a re-analysis hands the stored array to the reducer as it is."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from aretriever.adapters.base import Fetched, RawTable, ReducedLightcurve, Target, raw_table_kind
from aretriever.adapters.ztf import COLUMNS, ZtfAdapter, parse_lightcurve_table, reduce_lightcurves
from aretriever.engine.pool import CpuJob, CpuResult, run_job
from aretriever.errors import ArchiveErrorPage, StoreError
from aretriever.settings import AnalysisConfig, ZtfConfig, ZtfReducerConfig
from aretriever.store import paths
from aretriever.store.hdf5 import (
    build_h5_image,
    frame_to_records,
    read_image,
    read_records,
    records_to_frame,
    write_image,
)
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.ztf_replay import ZtfReplay, recorded_irsa_csv

STAR = Target("WD recorded", 200.0, 30.0, mag=20.3)
KEY = paths.raw_key(STAR.name)
ATTRS = {"source_name": STAR.name, "fetched_at": "2026-01-01T00:00:00+00:00"}
_KINDS = {"int64": pa.int64(), "float64": pa.float64(), "str": pa.string()}


def pandas_parse(body: bytes) -> pd.DataFrame:
    """The parser before structured arrays (reference only): pyarrow, then ``to_pandas``."""
    convert = pa_csv.ConvertOptions(
        column_types={name: _KINDS[kind] for name, kind in COLUMNS.items()}, strings_can_be_null=False
    )
    table = pa_csv.read_csv(io.BytesIO(body), convert_options=convert)
    if table.num_rows == 0:
        return pd.DataFrame({name: pd.Series([], dtype=kind) for name, kind in COLUMNS.items()})
    return table.to_pandas()


def _same(new: np.ndarray[Any, Any], old: np.ndarray[Any, Any]) -> None:
    assert new.dtype == old.dtype
    assert new.tobytes() == old.tobytes()  # NaN payloads and text padding included


def _replayed() -> dict[str, bytes]:
    replay = ZtfReplay.load(DATA_DIR)
    places = [(200.0, 30.0, 32768), (0.00005, -20.0, 0), (359.9999, 51.39, 1 | 16), (10.0, 80.0, 516)]
    return {f"{ra},{dec},{mask}": replay.answer(ra, dec, mask) for ra, dec, mask in places}


def _edited(body: bytes, edit: Callable[[list[bytes]], None]) -> bytes:
    lines = body.split(b"\n")
    edit(lines)
    return b"\n".join(lines)


def _set(lines: list[bytes], row: int, names: tuple[str, ...], value: bytes = b"") -> None:
    fields = lines[row].split(b",")
    for name in names:
        fields[list(COLUMNS).index(name)] = value
    lines[row] = b",".join(fields)


def _answers() -> dict[str, bytes]:
    body = recorded_irsa_csv(DATA_DIR)
    header, _, rows = body.partition(b"\n")
    return {
        "recorded": body,
        **_replayed(),
        "header only": header + b"\n",
        # IRSA leaves a float empty when it has no value, and could a text one
        "empty values": _edited(body, lambda lines: _set(lines, 5, ("mag", "chi", "ccdid", "qid"))),
        "all text empty": _edited(
            header + b"\n" + b"\n".join(rows.split(b"\n")[:3]),
            lambda lines: [_set(lines, k, ("filtercode",)) for k in (1, 2, 3)],
        ),
        # over pyarrow's 1 MiB block: the columns arrive in several chunks
        "several chunks": header + b"\n" + rows * 4,
        "wider text": _edited(body, lambda lines: _set(lines, 7, ("ccdid", "filtercode"), "0x10é".encode())),
    }


ANSWERS = _answers()
AT_STAR = ANSWERS["200.0,30.0,32768"]  # the recorded star moved to STAR, as the fake archive sends it


@pytest.mark.parametrize("name", list(ANSWERS))
def test_parse_gives_what_the_pandas_path_stored(name: str) -> None:
    new = parse_lightcurve_table(ANSWERS[name])
    old = frame_to_records(pandas_parse(ANSWERS[name]))
    _same(new, old)
    assert new.dtype.names == tuple(COLUMNS)


def test_the_answers_cover_what_they_claim() -> None:
    assert len(ANSWERS["several chunks"]) > 1 << 20
    chunks = pa_csv.read_csv(io.BytesIO(ANSWERS["several chunks"])).column("mag").num_chunks
    assert chunks > 1
    blanks = parse_lightcurve_table(ANSWERS["empty values"])
    assert np.isnan(blanks["mag"][4]) and blanks["ccdid"][4] == b""
    assert parse_lightcurve_table(ANSWERS["all text empty"]).dtype["filtercode"] == np.dtype("S1")


def test_the_raw_file_is_the_one_the_pandas_path_wrote() -> None:
    body = ANSWERS["recorded"]
    new = build_h5_image({KEY: (parse_lightcurve_table(body), ATTRS)})
    old = build_h5_image({KEY: (frame_to_records(pandas_parse(body)), ATTRS)})
    assert new == old


def test_every_recorded_irsa_answer(shared_data: Path) -> None:
    """Every real IRSA answer held: ZTF light curves parse as before; the other service's table (an
    IBE position search, IPAC text) is refused as no light-curve answer."""
    (ztf_csv,) = sorted((shared_data / "ztf").glob("*.csv"))
    body = recorded_irsa_csv(ztf_csv.parent)
    _same(parse_lightcurve_table(body), frame_to_records(pandas_parse(body)))
    for other in sorted((shared_data / "irsa").iterdir()):
        with pytest.raises(ArchiveErrorPage, match="expected IRSA's columns"):
            parse_lightcurve_table(other.read_bytes(), source="s", url="u")


def _equal_curves(a: list[ReducedLightcurve], b: list[ReducedLightcurve]) -> None:
    assert [(lc.filter, lc.time_start_mjd, lc.time_end_mjd, lc.meta) for lc in a] == [
        (lc.filter, lc.time_start_mjd, lc.time_end_mjd, lc.meta) for lc in b
    ]
    for x, y in zip(a, b, strict=True):
        _same(x.data, y.data)


@pytest.mark.parametrize("drop_bad", [True, False])
def test_reducing_the_array_is_reducing_the_old_frame(drop_bad: bool) -> None:
    body = AT_STAR
    cfg = ZtfReducerConfig(drop_bad=drop_bad)
    new = reduce_lightcurves(parse_lightcurve_table(body), STAR, cfg)
    assert len(new) == 10
    _equal_curves(new, reduce_lightcurves(pandas_parse(body), STAR, cfg))


def test_the_reducer_leaves_the_parsed_array_alone() -> None:
    raw = parse_lightcurve_table(AT_STAR)
    before = raw.copy()
    curves = reduce_lightcurves(raw, STAR, ZtfReducerConfig(drop_bad=False))
    curves[0].data["mag"][0] = -99.0
    _same(raw, before)


# ------------------------------------------------------------------ re-analysis from the raw file


class _Seen:
    """What an adapter's reduce was handed, per adapter class (run_job runs in this process)."""

    tables: ClassVar[list[RawTable]] = []


class _RecordingZtf(ZtfAdapter):
    def reduce(self, raw: RawTable, target: Target) -> list[ReducedLightcurve]:
        _Seen.tables.append(raw)
        return super().reduce(raw, target)


class _FrameZtf(_RecordingZtf):
    """An adapter written before ``raw_table``: it is handed DataFrames, as it always was."""

    raw_table = "frame"  # type: ignore[assignment]


def _fetched_then_reread(adapter: ZtfAdapter, tmp_path: Path) -> tuple[CpuResult, CpuResult]:
    fetched = Fetched(STAR, AT_STAR, "recorded")
    first = run_job(CpuJob(adapter, STAR, fetched, analysis=AnalysisConfig(), raw_attrs=ATTRS))
    assert first.raw_image is not None
    write_image(tmp_path / "raw.h5", first.raw_image, fsync=False)
    again = CpuJob(adapter, STAR, raw_path=str(tmp_path / "raw.h5"), raw_key=KEY, analysis=AnalysisConfig())
    return first, run_job(again)


@pytest.mark.parametrize("adapter", [_RecordingZtf(ZtfConfig()), _FrameZtf(ZtfConfig())])
def test_a_reanalysis_gives_the_same_lightcurves(adapter: ZtfAdapter, tmp_path: Path) -> None:
    _Seen.tables.clear()
    first, second = _fetched_then_reread(adapter, tmp_path)
    assert second.raw_image is None and second.num_raw_rows == first.num_raw_rows == 1810
    assert first.lightcurves == second.lightcurves and len(first.lightcurves) == 10
    assert first.reduced_image == second.reduced_image  # same tables, same bytes
    parsed, reread = _Seen.tables
    assert isinstance(parsed, np.ndarray)
    if raw_table_kind(adapter) == "records":
        _same(reread, parsed)  # the stored array itself: no DataFrame in between
    else:
        assert isinstance(reread, pd.DataFrame)
        pd.testing.assert_frame_equal(reread, records_to_frame(parsed))


def test_raw_table_kind() -> None:
    assert raw_table_kind(ZtfAdapter(ZtfConfig())) == "records"
    assert raw_table_kind(_FrameZtf(ZtfConfig())) == "frame"
    assert raw_table_kind(object()) == "frame"  # adapters that never heard of it


def test_read_records_reads_the_table_as_stored(tmp_path: Path) -> None:
    parsed = parse_lightcurve_table(ANSWERS["recorded"])
    write_image(tmp_path / "raw.h5", build_h5_image({KEY: (parsed, ATTRS)}), fsync=False)
    _same(read_records(tmp_path / "raw.h5", KEY), parsed)
    frame, meta = read_image(build_h5_image({KEY: (parsed, ATTRS)}), KEY)
    assert meta == ATTRS and list(frame.columns) == list(COLUMNS)
    with pytest.raises(StoreError, match="nope"):
        read_records(tmp_path / "raw.h5", "nope")
    with pytest.raises(StoreError):
        read_records(tmp_path / "missing.h5", KEY)
