"""The engine embedded directly: any Executor for the CPU stage, results streamed as they come."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aretriever.catalogs.core import GeneratedCatalog
from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.engine.pipeline import SourceResult
from aretriever.engine.summary import Outcome
from aretriever.settings import Config
from aretriever.testing.fake_archive import FakeArchive


def _config(archive_url: str, db_url: str, root: Path, **engine: object) -> Config:
    """The config these tests share: a private DATA_ROOT, the fake archive, no rate limit to speak of."""
    return load_config(
        False,
        overrides={
            "store": {"data_root": str(root), "db_url": db_url},
            "observatories": {"ztf": {"base_url": archive_url, "rate_per_s": 1000}},
            "engine": engine,
        },
    )


async def test_engine_accepts_any_executor_and_reports_each_source(db_url: str, tmp_path: Path) -> None:
    async with FakeArchive() as fake:
        cfg = _config(fake.url, db_url, tmp_path / "data")
        seen: list[SourceResult] = []
        with ThreadPoolExecutor(max_workers=2) as executor:
            engine = Engine(cfg, executor=executor, on_result=seen.append)
            summary = await engine.run(GeneratedCatalog(8), 2, 7)
    assert summary.total(Outcome.FETCHED) == 5 == len(seen)
    assert sorted(r.source for r in seen) == [f"TEST{i:06d}" for i in range(2, 7)]
    assert all(r.observatory == "ztf" and r.num_lightcurves > 0 for r in seen)
    assert fake.count() == 5


async def test_refresh_age_is_measured_with_the_engine_clock(db_url: str, tmp_path: Path) -> None:
    """Ten days on the injected clock make stored raw data stale: no waiting on the wall clock."""
    async with FakeArchive() as fake:
        cfg = _config(fake.url, db_url, tmp_path / "data", refresh_after_days=5.0)
        later = datetime.now(UTC) + timedelta(days=10)
        with ThreadPoolExecutor(max_workers=2) as executor:
            assert (await Engine(cfg, executor=executor).run(GeneratedCatalog(3))).total(Outcome.FETCHED) == 3
            now = await Engine(cfg, executor=executor).run(GeneratedCatalog(3))
            ten_days_on = await Engine(cfg, executor=executor, clock=lambda: later).run(GeneratedCatalog(3))
    assert now.total(Outcome.SKIPPED) == 3
    assert ten_days_on.total(Outcome.REFETCHED) == 3
    assert fake.count() == 6


async def test_files_are_synced_before_their_rows_by_default(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from aretriever.store import hdf5

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(hdf5.os, "fsync", fsync)
    async with FakeArchive() as fake:
        cfg = _config(fake.url, db_url, tmp_path / "data", analyze=False)
        assert cfg.store.fsync is True
        with ThreadPoolExecutor(max_workers=2) as executor:
            summary = await Engine(cfg, executor=executor).run(GeneratedCatalog(3))
    assert summary.total(Outcome.FETCHED) == 3
    raw_files = sorted((tmp_path / "data" / "ZTF").rglob("*.h5"))
    assert len(raw_files) == 3
    for path in raw_files:  # each file was synced under its temporary name, then its folder
        assert any(Path(s).parent == path.parent and f".{path.name}." in s for s in synced)
        assert str(path.parent) in synced
