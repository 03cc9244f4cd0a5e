"""The seed's observatory objects for notebooks: ``VirtualZTF``, ``VirtualTESS``, ``VirtualDemoObs``.

A thin synchronous face over the engine, not a second implementation::

    obs = VirtualZTF(name="ZTF", reducer={"gap": 60})       # parameters of observatories.ztf
    source = obs.fetch_source(obs.catalog.get_row(0, "number", "dict"))  # fetched, stored, reduced
    obs.fetch_all_sources(0, 1000)                           # the engine: rate limits, retries, skips
    lcs = obs.reduce(RawPhotometry(filename="raw.h5"), data_type="photometry")   # unsaved Lightcurves

Fetching goes through the engine (same skip check, lanes, writers and database as the CLI);
``reduce`` calls the adapter's pure reduction in process and returns unsaved
:class:`~aretriever.store.models.Lightcurve` objects (``lc.save()`` writes one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import numpy as np
import pandas as pd

from aretriever.adapters import get_adapter
from aretriever.adapters.base import Adapter, Fetched, RawTable, Target
from aretriever.catalogs.core import SearchableCatalog, chunk_to_targets, open_catalog
from aretriever.config import load_config
from aretriever.engine.core import Engine, products_for
from aretriever.engine.summary import Outcome, RunSummary
from aretriever.errors import ConfigError
from aretriever.http import Lane
from aretriever.service.retriever import target_from
from aretriever.settings import Config, LaneConfig
from aretriever.store import hdf5, paths, queries, rows
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.models import Lightcurve, RawPhotometry, RawStatus, Source
from aretriever.store.sessions import Session
from aretriever.syncrun import run_sync as _run_sync

KEEP_LATEST = 100  # the seed's obs.sources / obs.raw_data keep this many


async def lane_fetch(adapter: Adapter, target: Target, lane: Lane) -> Fetched:
    """The adapter's fetch through a lane, or the no-data answer it gives without asking."""
    reason = adapter.no_data_reason(target)
    return Fetched(target, None, no_data_reason=reason) if reason else await adapter.fetch(target, lane)


class VirtualObservatory:
    """One observatory, its parameters (``pars``), its catalog, and the latest sources it handled.

    Parameters
    ----------
    name
        The observatory's name (checked against the class, case-insensitive), as the seed passes it.
    cfg
        The whole configuration (default: ``load_config(False)``, i.e. defaults and environment).
    catalog
        The catalog ``fetch_all_sources`` walks (default: the configured one, opened on first use).
    **pars
        Parameters of ``observatories.<name>`` (seed names work: ``reducer={"gap": 60}``).
    """

    obs_name: ClassVar[str] = ""

    def __init__(
        self,
        name: str | None = None,
        *,
        cfg: Config | None = None,
        catalog: SearchableCatalog | None = None,
        **pars: Any,
    ) -> None:
        if name is not None and name.strip().lower() != self.obs_name:
            raise ConfigError(f"config: {type(self).__name__} is observatory {self.obs_name!r}, not {name!r}")
        base = cfg if cfg is not None else load_config(False)
        section: LaneConfig = getattr(base.observatories, self.obs_name)
        if pars:
            merged = {**section.model_dump(), **pars}
            section = type(section).model_validate(merged)
        self._base = base
        self.pars = section
        self._catalog = catalog
        self.sources: list[Source] = []
        self.raw_data: list[RawPhotometry] = []

    # -- configuration -------------------------------------------------------------------------

    @property
    def cfg(self) -> Config:
        """The configuration with this object's (possibly edited) ``pars``, only this lane."""
        observatories = self._base.observatories.model_copy(update={self.obs_name: self.pars})
        project = self._base.project.model_copy(update={"obs_names": [self.obs_name]})
        return self._base.model_copy(update={"observatories": observatories, "project": project})

    @property
    def adapter(self) -> Adapter:
        return get_adapter(self.obs_name, self.cfg)

    @property
    def catalog(self) -> SearchableCatalog:
        if self._catalog is None:
            self._catalog = open_catalog(None, self._base.catalog)
        return self._catalog

    @catalog.setter
    def catalog(self, value: SearchableCatalog) -> None:
        self._catalog = value

    @property
    def data_root(self) -> Path:
        return data_root_of(self._base.store)

    # -- fetching ------------------------------------------------------------------------------

    def fetch_source(
        self, cat_row: Mapping[str, Any] | Target, save: bool = True, reduce: bool = True
    ) -> Source:
        """Fetch one catalog row (skipped if stored), save its data and rows, return its Source.

        ``save=False`` (the seed's debugging mode) downloads through the lane and returns an
        unsaved Source whose raw data and lightcurves hold their tables in memory; nothing is
        written and nothing is skipped.
        """
        target = self._target(cat_row)
        if not save:
            (source,) = _run_sync(lambda: self._peek([target], reduce))
            self._keep([source], list(source.raw_photometry))
            return source
        self._run(lambda engine: engine.run_targets([target], self._catalog_name()), reduce)
        return self._remember([target.name])[0]

    def fetch_all_sources(
        self, start: int = 0, stop: int | None = None, save: bool = True, reduce: bool = True
    ) -> RunSummary:
        """Backfill catalog rows ``start`` to ``stop``; ``sources``/``raw_data`` hold the latest.

        ``save=False`` downloads each row in turn without storing anything (debugging; see
        :meth:`fetch_source`); the summary then counts what was fetched.
        """
        if not save:
            return self._peek_all(start, stop, reduce)
        names: list[str] = []
        catalog = self.catalog

        def run(engine: Engine) -> Any:
            engine.add_listener(lambda result: names.append(result.source))
            return engine.run(catalog, start, stop)

        summary: RunSummary = self._run(run, reduce)
        self._remember(names[-KEEP_LATEST:])
        return summary

    def _run(self, work: Any, reduce: bool) -> Any:
        cfg = self.cfg.model_copy(update={"engine": self.cfg.engine.model_copy(update={"reduce": reduce})})

        async def go() -> Any:
            return await work(Engine(cfg, catalog_name=self._catalog_name()))

        return _run_sync(lambda: go())

    async def _peek(self, targets: Sequence[Target], reduce: bool) -> list[Source]:
        """Download ``targets`` through one lane (its rate limit and retries) and keep them in memory."""
        adapter, sources = self.adapter, []
        async with aiohttp.ClientSession() as session:
            lane = Lane(self.obs_name, self.pars, session)
            for target in targets:
                fetched = await lane_fetch(adapter, target, lane)
                sources.append(self._unsaved(target, fetched, adapter, reduce))
        return sources

    def _unsaved(self, target: Target, fetched: Fetched, adapter: Adapter, reduce: bool) -> Source:
        source = Source(**rows.bare_source_row(target.name, target.ra_deg, target.dec_deg, target.mag))
        status = RawStatus.NO_DATA if fetched.body is None else RawStatus.OK
        raw = RawPhotometry(
            source_name=target.name, observatory=self.obs_name, status=status, url=fetched.url
        )
        raw.meta = {"no_data_reason": fetched.no_data_reason} if fetched.no_data_reason else {}
        table = adapter.parse(fetched) if fetched.body is not None else pd.DataFrame()
        # users get a DataFrame; the reducer takes the parsed table as it is
        raw.data, raw.num_rows = _frame(table), len(table)
        source.raw_photometry = [raw]
        if reduce and len(table):
            source.lightcurves = self.reduce(table, source=target)
        return source

    def _peek_all(self, start: int, stop: int | None, reduce: bool) -> RunSummary:
        targets = [t for chunk in self.catalog.iter_chunks(start, stop) for t in self._targets(chunk)]
        sources = _run_sync(lambda: self._peek(targets, reduce))
        self._keep(sources, [r for s in sources for r in s.raw_photometry])
        summary = RunSummary()
        for source in sources:
            no_data = source.raw_photometry[0].status == RawStatus.NO_DATA
            summary.lane(self.obs_name).add(Outcome.NO_DATA if no_data else Outcome.FETCHED)
        return summary

    def _targets(self, chunk: pd.DataFrame) -> list[Target]:
        targets, _ = chunk_to_targets(chunk, self._base.catalog.columns)
        return targets

    def _keep(self, sources: list[Source], raws: list[RawPhotometry]) -> None:
        self.sources = (self.sources + sources)[-KEEP_LATEST:]
        self.raw_data = (self.raw_data + raws)[-KEEP_LATEST:]

    def _catalog_name(self) -> str:
        return self._catalog.name if self._catalog is not None else ""

    def _target(self, cat_row: Mapping[str, Any] | Target) -> Target:
        return target_from(cat_row, self._base.catalog.columns)

    def _remember(self, names: Sequence[str]) -> list[Source]:
        """The Sources (with raw data and lightcurves loaded) of ``names``, kept on the object."""
        url = db_url_of(self._base.store)
        with Session(url, data_root=self.data_root) as session:
            found = queries.sources_with_data(session, names)
        sources = [found[n] for n in names if n in found]
        self._keep(sources, [r for s in sources for r in s.raw_photometry if r.observatory == self.obs_name])
        return sources

    # -- reduction -----------------------------------------------------------------------------

    def reduce(
        self,
        raw: RawPhotometry | Source | RawTable,
        data_type: str = "photometry",
        source: Target | None = None,
    ) -> list[Lightcurve]:
        """Reduce raw photometry to unsaved Lightcurve objects (``lc.save()`` writes one).

        ``raw`` may also be a bare raw table (a DataFrame or a structured array); the source comes
        from ``source``, else from the raw file's metadata (name, position).
        """
        if data_type != "photometry":
            raise ConfigError(f"reduce: only data_type='photometry' exists (got {data_type!r})")
        if isinstance(raw, Source):  # the seed's obs.reduce(source): its raw data from this observatory
            source = source or Target(raw.name, raw.ra_deg, raw.dec_deg, mag=raw.mag)
            mine = [r for r in raw.raw_photometry if r.observatory == self.obs_name]
            if not mine:
                raise ConfigError(f"reduce: {raw.name} has no {self.obs_name} raw data")
            raw = mine[0]
        table = raw if isinstance(raw, (pd.DataFrame, np.ndarray)) else raw.data
        target = source or self._raw_target(raw)
        curves = self.adapter.reduce(table, target)
        products = products_for(self.cfg, reduce=True)
        relpath = paths.reduced_relpath(products.folder, self.obs_name, target.name, target.ra_deg)
        total = len(curves)
        lcs = []
        for number, curve in enumerate(curves, start=1):
            lc = Lightcurve(
                source_name=target.name,
                observatory=self.obs_name,
                project=products.project,
                cfg_hash=products.cfg_hash,
                series_number=number,
                series_total=total,
                simulation_number=0,
                filter=curve.filter,
                time_start_mjd=curve.time_start_mjd,
                time_end_mjd=curve.time_end_mjd,
                meta=dict(curve.meta),
                filename=relpath,
                filekey=paths.reduction_key(target.name, number, total),
                num_rows=len(curve.data),
                nbytes=0,
            )
            # notebooks get DataFrames, whatever table type the reducer works in
            lc.data = (
                curve.data if isinstance(curve.data, pd.DataFrame) else hdf5.records_to_frame(curve.data)
            )
            lc.bind_data_root(self.data_root)
            lcs.append(lc)
        return lcs

    def _raw_target(self, raw: RawPhotometry | RawTable) -> Target:
        if isinstance(raw, (pd.DataFrame, np.ndarray)):
            raise ConfigError("reduce: give source=Target(...) with a bare table")
        path = raw.get_fullname(self.data_root)
        keys = [raw.filekey] if raw.filekey else hdf5.h5_keys(path)
        _, meta = hdf5.read_h5(path, keys[0])
        name = meta.get("source_name") or raw.source_name
        if not name or meta.get("ra_deg") is None:
            raise ConfigError(f"reduce: {raw.filename} says nothing of its source; give source=Target(...)")
        return Target(str(name), float(meta["ra_deg"]), float(meta["dec_deg"]), mag=meta.get("mag"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pars!r})"


def _frame(table: RawTable) -> pd.DataFrame:
    return hdf5.records_to_frame(table) if isinstance(table, np.ndarray) else table


class VirtualZTF(VirtualObservatory):
    """ZTF through IRSA."""

    obs_name = "ztf"


class VirtualTESS(VirtualObservatory):
    """TESS through MAST."""

    obs_name = "tess"

    def download_by_tic(self, tic: int) -> Source:
        """Fetch TIC ``tic`` directly (filed under the nearest catalog row, else ``TIC <id>``)."""
        catalog = self._catalog
        targets: list[Target] = []

        async def go() -> RunSummary:
            engine = Engine(self.cfg, catalog_name=self._catalog_name())
            targets.extend(await engine.resolve_ids("tess", [str(tic)], catalog))
            return await engine.run_targets(targets, self._catalog_name())

        _run_sync(go)
        return self._remember([targets[0].name])[0]


class VirtualDemoObs(VirtualObservatory):
    """The simulated observatory (no network)."""

    obs_name = "demo"


OBSERVATORIES: dict[str, type[VirtualObservatory]] = {
    cls.obs_name: cls for cls in (VirtualZTF, VirtualTESS, VirtualDemoObs)
}


def observatory(name: str, **kwargs: Any) -> VirtualObservatory:
    """The observatory object called ``name`` (``"ztf"``, ``"tess"``, ``"demo"``)."""
    cls = OBSERVATORIES.get(name.strip().lower())
    if cls is None:
        raise ConfigError(f"config: unknown observatory {name!r}; available: {sorted(OBSERVATORIES)}")
    return cls(**kwargs)


class ObservatoryList(list[VirtualObservatory]):
    """A project's observatories: by position (``[0]``) or by name (``["ZTF"]``)."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for obs in self:
                if obs.obs_name == key.strip().lower():
                    return obs
            raise KeyError(f"no observatory {key!r} in this project ({[o.obs_name for o in self]})")
        return super().__getitem__(key)
