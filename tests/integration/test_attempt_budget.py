"""One attempt budget per source: the pipeline's re-asks of a malformed body spend the lane's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aretriever.adapters.ztf import COLUMNS
from aretriever.catalogs.core import GeneratedCatalog
from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.engine.summary import Outcome
from aretriever.store.db import create_engine
from aretriever.testing.fake_archive import FakeArchive
from aretriever.testing.ztf_replay import ZTF_PATH

# a whole HTTP answer (200, full Content-Length) whose CSV ends inside IRSA's header line
CUT_HEADER = ",".join(COLUMNS)[:12].encode()


def _cfg(url: str, db_url: str, tmp_path: Path, max_attempts: int) -> object:
    return load_config(
        False,
        overrides={
            "store": {"data_root": str(tmp_path / "data"), "db_url": db_url},
            "observatories": {"ztf": {"base_url": url, "rate_per_s": 1000, "max_attempts": max_attempts}},
            "engine": {"analyze": False},
        },
    )


async def test_an_always_malformed_source_costs_max_attempts_requests(db_url: str, tmp_path: Path) -> None:
    async with FakeArchive() as fake:
        fake.script(ZTF_PATH, [(200, CUT_HEADER, {})] * 20)
        cfg = _cfg(fake.url, db_url, tmp_path, max_attempts=3)
        with ThreadPoolExecutor(max_workers=1) as executor:
            summary = await Engine(cfg, executor=executor).run(GeneratedCatalog(1))  # type: ignore[arg-type]
    assert fake.count(ZTF_PATH) == 3  # not 3 x 3: the re-asks spend the lane's budget
    assert summary.total(Outcome.FAILED) == 1
    engine = create_engine(db_url)
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("select stage, reason, attempts from failures")).all()
    await engine.dispose()
    assert [tuple(r) for r in rows] == [("fetch", "MalformedResponse", 3)]


async def test_lane_retries_and_re_asks_share_one_budget(db_url: str, tmp_path: Path) -> None:
    """503, 503, a malformed body, again and again: 3 requests, not 3 lane tries x 3 re-asks."""
    async with FakeArchive() as fake:
        fake.script(ZTF_PATH, [(503, "busy", {}), (503, "busy", {}), (200, CUT_HEADER, {})] * 3)
        cfg = _cfg(fake.url, db_url, tmp_path, max_attempts=3)
        cfg.observatories.ztf.backoff_base_s = 0.001  # type: ignore[attr-defined]
        with ThreadPoolExecutor(max_workers=1) as executor:
            summary = await Engine(cfg, executor=executor).run(GeneratedCatalog(1))  # type: ignore[arg-type]
    assert fake.count(ZTF_PATH) == 3
    assert summary.total(Outcome.FAILED) == 1


async def test_a_malformed_body_is_asked_for_again_within_the_budget(db_url: str, tmp_path: Path) -> None:
    async with FakeArchive() as fake:
        fake.script(ZTF_PATH, [(200, CUT_HEADER, {})] * 2)  # then the recorded answer
        cfg = _cfg(fake.url, db_url, tmp_path, max_attempts=3)
        with ThreadPoolExecutor(max_workers=1) as executor:
            summary = await Engine(cfg, executor=executor).run(GeneratedCatalog(1))  # type: ignore[arg-type]
    assert fake.count(ZTF_PATH) == 3
    assert summary.total(Outcome.FETCHED) == 1
