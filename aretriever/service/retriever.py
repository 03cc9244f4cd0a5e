"""Embedding aretriever in an async application.

::

    async with Retriever("configs/wd.yaml") as r:                # a path, a dict or a Config
        async for result in r.backfill("wd", start=0, stop=1000):
            print(result.source, result.observatory, result.outcome, result.num_lightcurves)
        source = await r.get_source("WDJ175216.24+263027.39")   # rows; tables load lazily
        result = await r.fetch_one({"name": "my star", "ra": 12.3, "dec": 45.6}, observatory="ztf")

A ``Retriever`` runs in the caller's event loop (asyncio, or anyio on asyncio) and never calls
``asyncio.run``. Entering it opens the database, the two writer tasks, the process pool (lazily,
at the first source that needs it) and one HTTP session per lane; leaving it, or the caller
being cancelled, drains and closes all of them. Two instances share nothing: each has its own
engine, pool, sessions, writers and DATA_ROOT. Runs on one instance are serialised.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pandas as pd
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from aretriever.adapters.base import Target
from aretriever.catalogs.core import Catalog, chunk_to_targets
from aretriever.catalogs.remote import open_catalog_async
from aretriever.config import load_config
from aretriever.engine.core import Engine, ResultSink
from aretriever.engine.pipeline import SourceResult
from aretriever.engine.summary import RunSummary
from aretriever.errors import CatalogError, ConfigError
from aretriever.settings import ColumnMap, Config
from aretriever.store import queries
from aretriever.store.models import Source

_RESULTS_BUFFER = 256


def as_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    """A config from a typed model, a dict (native or seed keywords), a YAML path, or defaults."""
    if isinstance(config, Config):
        return config
    if config is None:
        return load_config(False)
    if isinstance(config, str | Path):
        return load_config(Path(config))
    return load_config(False, overrides=config)


def target_from(row: Target | Mapping[str, Any], columns: ColumnMap | None = None) -> Target:
    """A target from a mapping with the catalog's columns (``name``, ``ra``, ``dec``, optional
    ``mag``, ``pmra``, ``pmdec``), checked like a catalog row.

    Raises
    ------
    CatalogError
        A column is missing, the name is empty or the coordinates are out of range.
    """
    if isinstance(row, Target):
        return row
    targets, bad = chunk_to_targets(pd.DataFrame([dict(row)]), columns or ColumnMap())
    if bad or not targets:
        raise CatalogError(f"catalog: bad source {dict(row)!r}: {bad[0].reason if bad else 'no usable row'}")
    return targets[0]


class Retriever:
    """aretriever as a library: backfills, single fetches and stored results (see the module).

    Parameters
    ----------
    config
        A :class:`~aretriever.settings.Config`, a dict, a YAML path, or None (defaults).
    observatories
        Lanes to open (default: ``project.obs_names``).
    executor
        Where parsing, reduction and analysis run (default: a process pool of its own).
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        observatories: Sequence[str] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.cfg = as_config(config)
        self.engine = Engine(self.cfg, observatories=observatories, executor=executor)
        self._stack: AsyncExitStack | None = None
        self._tasks: TaskGroup | None = None

    @property
    def data_root(self) -> Path:
        return self.engine.data_root

    async def __aenter__(self) -> Retriever:
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.engine.opened())
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            if self._tasks is not None:
                self._tasks.cancel_scope.cancel()  # a backfill the caller stopped reading
            self._tasks = None
            await stack.aclose()

    # -- work ----------------------------------------------------------------------------------

    async def backfill(
        self, catalog: Catalog | str, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[SourceResult]:
        """Backfill catalog rows ``start`` to ``stop``, yielding each source's result per lane.

        ``catalog`` is a :class:`~aretriever.catalogs.core.Catalog` or a spec (``"wd"``, a file path,
        ``"test"``, ``"gaia:<ADQL>"``). Leaving the loop early stops the run: sources in flight
        finish (within ``engine.grace_s``) and their rows are committed.
        """
        opened = (
            catalog if not isinstance(catalog, str) else await open_catalog_async(catalog, self.cfg.catalog)
        )
        send, receive = anyio.create_memory_object_stream[SourceResult](_RESULTS_BUFFER)
        done = anyio.Event()
        failed: list[Exception] = []

        async def run() -> None:
            with send:
                try:
                    await self.engine.run(opened, start, stop, on_result=_forward(send))
                except Exception as exc:  # the caller's loop raises it: a run never ends silently
                    failed.append(exc)
                finally:
                    done.set()

        self._task_group().start_soon(run, name="retriever-backfill")
        try:
            with receive:
                async for result in receive:
                    yield result
            if failed:
                raise failed[0]
        finally:
            if not done.is_set():
                self.engine.request_stop()
                with anyio.CancelScope(shield=True):
                    await done.wait()

    async def fetch_one(self, source: Target | Mapping[str, Any], observatory: str = "ztf") -> SourceResult:
        """Fetch (or skip, if stored) one source from one observatory and return its result."""
        target = target_from(source, self.cfg.catalog.columns)
        results: list[SourceResult] = []

        async def keep(result: SourceResult) -> None:
            results.append(result)

        await self.engine.run_targets([target], lanes=[observatory.lower()], on_result=keep)
        if not results:
            raise ConfigError(f"fetch_one: no result for {target.name} from {observatory}")
        return results[0]

    async def run(self, catalog: Catalog | str, start: int = 0, stop: int | None = None) -> RunSummary:
        """Like :meth:`backfill`, returning only the summary."""
        opened = (
            catalog if not isinstance(catalog, str) else await open_catalog_async(catalog, self.cfg.catalog)
        )
        return await self.engine.run(opened, start, stop)

    # -- results -------------------------------------------------------------------------------

    async def get_source(self, name: str) -> Source | None:
        """The source's row with its raw data, lightcurves, detections and properties rows.

        Tables are not read until asked for: ``source.lightcurves[0].data`` reads that one (do it
        off the loop for large tables: ``await anyio.to_thread.run_sync(lambda: lc.data)``).
        """
        engine = self.engine
        if engine.sessions is None:
            raise RuntimeError("retriever: use it inside 'async with Retriever(...)'")
        source = await queries.source_with_products(engine.sessions, name)
        if source is not None:
            for raw in source.raw_photometry:
                raw.bind_data_root(self.data_root)
            for lc in source.lightcurves:
                lc.bind_data_root(self.data_root)
        return source

    def _task_group(self) -> TaskGroup:
        if self._tasks is None:
            raise RuntimeError("retriever: use it inside 'async with Retriever(...)'")
        return self._tasks


def _forward(send: MemoryObjectSendStream[SourceResult]) -> ResultSink:
    async def forward(result: SourceResult) -> None:
        # a caller reading slowly holds the fetchers back (backpressure), it never loses results
        with contextlib.suppress(anyio.BrokenResourceError):
            await send.send(result)

    return forward


__all__ = ["Retriever", "as_config", "target_from"]
