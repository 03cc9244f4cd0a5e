"""The embedding API: a Retriever inside the caller's event loop (and inside an aiohttp app)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aretriever import Retriever
from aretriever.catalogs.core import GeneratedCatalog
from aretriever.engine.summary import Outcome
from aretriever.testing.fake_archive import FakeArchive, Faults

SIZE = 6
RETRIEVER = web.AppKey("retriever", Retriever)
POOL = web.AppKey("pool", ThreadPoolExecutor)


@pytest.fixture
async def archive_url() -> AsyncIterator[str]:
    archive = FakeArchive(Faults())
    url = await archive.start()
    try:
        yield url
    finally:
        await archive.close()


def _config(url: str, root: Path, db_url: str | None = None) -> dict[str, Any]:
    return {
        "store": {
            "data_root": str(root),
            "db_url": db_url or f"sqlite+aiosqlite:///{root}/aretriever.sqlite",
        },
        "observatories": {"ztf": {"base_url": url, "rate_per_s": 1000}},
        "catalog": {"test_size": SIZE},
        "engine": {"workers": 2},
    }


def _other_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task()}


async def test_backfill_streams_results_then_rows_and_data_can_be_read(
    archive_url: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRIEVER_DATA", str(tmp_path / "elsewhere"))  # the retriever's root wins
    before = set(asyncio.all_tasks())
    with ThreadPoolExecutor(2) as pool:
        async with Retriever(_config(archive_url, tmp_path / "data", db_url), executor=pool) as r:
            results = [result async for result in r.backfill("test")]
            assert sorted(x.source for x in results) == [f"TEST{i:06d}" for i in range(SIZE)]
            assert {x.outcome for x in results} == {Outcome.FETCHED}
            assert all(x.observatory == "ztf" and x.num_lightcurves > 0 for x in results)

            source = await r.get_source("TEST000001")
            assert source is not None and len(source.raw_photometry) == 1
            (mine,) = [x for x in results if x.source == "TEST000001"]
            assert len(source.lightcurves) == mine.num_lightcurves > 0
            assert len(source.properties) == 1 and source.properties[0].has_data
            table = await anyio.to_thread.run_sync(lambda: source.lightcurves[0].data)
            assert len(table) == source.lightcurves[0].num_rows and "dsnr" in table
            raw = await anyio.to_thread.run_sync(lambda: source.raw_photometry[0].data)
            assert len(raw) == source.raw_photometry[0].num_rows
            assert await r.get_source("nobody") is None

            # the same sources again: skipped, nothing asked
            again = [result async for result in r.backfill("test")]
            assert {x.outcome for x in again} == {Outcome.SKIPPED}

            new = await r.fetch_one({"name": "my star", "ra": 12.5, "dec": 40.25}, observatory="ztf")
            assert (new.source, new.outcome) == ("my star", Outcome.FETCHED)
            stored = await r.fetch_one({"name": "my star", "ra": 12.5, "dec": 40.25})
            assert stored.outcome is Outcome.SKIPPED
    assert not (tmp_path / "elsewhere").exists()
    assert _other_tasks(before) == set()


async def test_leaving_the_loop_early_stops_the_run_and_keeps_what_finished(
    archive_url: str, tmp_path: Path
) -> None:
    before = set(asyncio.all_tasks())
    cfg = _config(archive_url, tmp_path / "data")
    cfg["catalog"]["test_size"] = 40
    cfg["observatories"]["ztf"]["max_concurrency"] = 2
    with ThreadPoolExecutor(2) as pool:
        async with Retriever(cfg, executor=pool) as r:
            seen = []
            async for result in r.backfill("test"):
                seen.append(result.source)
                if len(seen) == 3:
                    break
            # the run stopped: a new one finds the finished sources stored, and the rest to fetch
            summary = await r.run("test")
    outcomes = summary.lane("ztf").outcomes
    assert outcomes["skipped"] >= 3 and outcomes["skipped"] < 40
    assert outcomes["skipped"] + outcomes["fetched"] == 40
    assert _other_tasks(before) == set()


async def test_cancelling_the_caller_closes_everything(archive_url: str, tmp_path: Path) -> None:
    before = set(asyncio.all_tasks())
    cfg = _config(archive_url, tmp_path / "data")
    cfg["catalog"]["test_size"] = 200
    with anyio.CancelScope() as scope:
        async with Retriever(cfg) as r:  # the default process pool
            async for _ in r.backfill("test"):
                scope.cancel()  # mid-run: one result is in, the other 199 sources are not
    assert scope.cancelled_caught
    assert _other_tasks(before) == set()
    for _ in range(600):  # pool workers exit once the pool shut down
        if not multiprocessing.active_children():
            break
        await asyncio.sleep(0.1)
    assert multiprocessing.active_children() == []


async def test_two_retrievers_share_nothing(archive_url: str, tmp_path: Path) -> None:
    async def run(root: Path) -> set[str]:
        with ThreadPoolExecutor(1) as pool:
            async with Retriever(_config(archive_url, root), executor=pool) as r:
                return {x.source async for x in r.backfill(GeneratedCatalog(3, seed=7))}

    first, second = await asyncio.gather(run(tmp_path / "a"), run(tmp_path / "b"))
    assert first == second and len(first) == 3
    for root in (tmp_path / "a", tmp_path / "b"):
        assert len(list((root / "ZTF").rglob("*.h5"))) == 3 and (root / "aretriever.sqlite").exists()


async def test_an_aiohttp_app_embeds_a_retriever(archive_url: str, tmp_path: Path) -> None:
    async def retriever_ctx(app: web.Application) -> AsyncIterator[None]:
        async with Retriever(_config(archive_url, tmp_path / "data"), executor=app[POOL]) as r:
            app[RETRIEVER] = r
            yield

    async def fetch(request: web.Request) -> web.Response:
        q = request.query
        result = await request.app[RETRIEVER].fetch_one({"name": q["name"], "ra": q["ra"], "dec": q["dec"]})
        return web.json_response({"source": result.source, "outcome": result.outcome.value})

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")  # answers while a fetch is in flight: the loop is never blocked

    with ThreadPoolExecutor(2) as pool:
        app = web.Application()
        app[POOL] = pool
        app.cleanup_ctx.append(retriever_ctx)
        app.router.add_get("/fetch", fetch)
        app.router.add_get("/health", health)
        async with TestClient(TestServer(app)) as client:
            params = {"name": "web star", "ra": "100.0", "dec": "20.0"}
            slow = asyncio.create_task(client.get("/fetch", params=params))
            ping = await client.get("/health")
            assert ping.status == 200
            response = await slow
            assert response.status == 200
            assert await response.json() == {"source": "web star", "outcome": "fetched"}
            response = await client.get("/fetch", params=params)
            assert (await response.json())["outcome"] == "skipped"


def test_it_runs_under_anyio(tmp_path: Path) -> None:
    async def main() -> list[str]:
        archive = FakeArchive(Faults())
        url = await archive.start()
        try:
            with ThreadPoolExecutor(1) as pool:
                async with Retriever(_config(url, tmp_path / "data"), executor=pool) as r:
                    return [x.outcome.value async for x in r.backfill(GeneratedCatalog(2))]
        finally:
            await archive.close()

    assert anyio.run(main, backend="asyncio") == ["fetched", "fetched"]


async def test_a_failed_run_raises_in_the_callers_loop(
    archive_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aretriever.errors import StoreError

    with ThreadPoolExecutor(1) as pool:
        async with Retriever(_config(archive_url, tmp_path / "data"), executor=pool) as r:

            async def broken(*args: Any, **kwargs: Any) -> None:
                raise StoreError("store: the database went away for good")

            monkeypatch.setattr(r.engine, "run", broken)
            with pytest.raises(StoreError, match="went away"):
                async for _ in r.backfill("test"):
                    pass
