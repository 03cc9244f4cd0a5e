"""The notebook API hands out DataFrames, though the ZTF parser gives structured arrays."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aretriever.adapters.base import Target
from aretriever.catalogs.core import GeneratedCatalog
from aretriever.observatories import VirtualZTF
from aretriever.store.hdf5 import frame_to_records
from aretriever.store.models import Lightcurve


@pytest.fixture
def obs(archive, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VirtualZTF:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RETRIEVER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ARETRIEVER_DB_URL", db_url)
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(tmp_path / "configs"))
    fetcher = VirtualZTF(base_url=archive.url, rate_per_s=1000)
    fetcher.catalog = GeneratedCatalog(2)
    return fetcher


def test_unsaved_raw_data_and_lightcurves_are_frames(obs: VirtualZTF) -> None:
    obs.fetch_all_sources(0, 1, save=False, reduce=True)
    (source,) = obs.sources
    raw = source.raw_photometry[0]
    assert isinstance(raw.data, pd.DataFrame) and len(raw.data) == raw.num_rows > 0
    assert set(raw.data["filtercode"]) <= {"zg", "zr", "zi"}  # text as str, not bytes
    assert source.lightcurves and all(isinstance(lc.data, pd.DataFrame) for lc in source.lightcurves)


def test_reduce_takes_a_structured_array(obs: VirtualZTF) -> None:
    obs.fetch_all_sources(0, 1, save=False, reduce=True)
    (source,) = obs.sources
    target = Target(source.name, source.ra_deg, source.dec_deg, mag=source.mag)
    frame = source.raw_photometry[0].data
    from_array = obs.reduce(frame_to_records(frame), source=target)  # the raw file's table
    from_frame = obs.reduce(frame, source=target)
    assert all(isinstance(lc, Lightcurve) and isinstance(lc.data, pd.DataFrame) for lc in from_array)
    assert len(from_array) == len(from_frame) == len(source.lightcurves) > 0
    for a, b in zip(from_array, from_frame, strict=True):
        pd.testing.assert_frame_equal(a.data, b.data)
