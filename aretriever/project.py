"""A named, versioned project: the seed's ``Project(...)`` and ``project.run()``.

::

    proj = Project(name="wd_flares", obs_names=["ZTF", "TESS"], catalog_kwargs={"default": "WD"},
                   analysis_kwargs={"num_injections": 3, "finder_kwargs": {"snr_threshold": 7.5}},
                   version_control=True)
    proj.run(0, 1000)      # backfill: fetch what is missing, reduce what is not reduced, analyse
    proj.run(0, 1000)      # nothing left to do: no request, no reduction, no analysis

With ``version_control`` (alias ``vc``) the products go to ``DATA_ROOT/<PROJECT>_<cfg hash>`` and
the folder holds the ``config.yaml`` they were made with (no secrets), so a changed parameter
gives a new folder while raw data, shared by every project, is reused. Without it products go to
``DATA_ROOT/<PROJECT>`` and a changed parameter overwrites them: each product row records the
hash of the settings it was made with (the observatory's section and the analysis), and a run with
other settings re-reduces and re-analyses those sources from their raw files, asking the archive
nothing. Operational settings (rates, workers, paths) and the catalog do not count.

``run`` is synchronous, for notebooks and scripts: it drives the async engine on its own event
loop (in a thread when the caller already runs one, as Jupyter does). ``arun`` is the same for
async callers. The command line equivalent is ``python -m aretriever.fetch --project NAME``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd

from aretriever.catalogs.core import Catalog
from aretriever.catalogs.remote import open_catalog_async
from aretriever.config import load_config, public_dict
from aretriever.engine.core import Engine, products_for
from aretriever.engine.histogram_io import histogram_path, load_histograms
from aretriever.engine.skipcheck import Products
from aretriever.engine.summary import RunSummary
from aretriever.observatories import ObservatoryList, VirtualObservatory, observatory
from aretriever.science.analysis import efficiency_table
from aretriever.science.histograms import ScoreHistograms
from aretriever.settings import Config, ProjectConfig
from aretriever.store import paths, product_folders, queries
from aretriever.store.db import create_engine, session_factory
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.queries import Sessions
from aretriever.store.schema import migrate
from aretriever.syncrun import run_sync as _run_sync

log = logging.getLogger("aretriever.project")

T = TypeVar("T")


class Project:
    """A project: its configuration, its product folder, and running it.

    Parameters
    ----------
    name : str
        The project's name (its folder is the name upper-cased).
    cfg_file, cfg_key
        As in the seed: ``None`` looks for ``configs/<name>.yaml`` quietly, a name or path must
        exist, ``False`` loads no file; ``cfg_key`` picks one top-level key of the file.
    **kwargs
        The seed's keywords (``description``, ``version_control``/``vc``, ``obs_names``,
        ``catalog_kwargs``, ``analysis_kwargs``, ``analysis_module``, ``analysis_class``,
        ``obs_kwargs``, ``ZTF={...}``, ``TESS={...}``) or native config parts (``store={...}``).
    """

    def __init__(
        self,
        name: str,
        cfg_file: str | Path | Literal[False] | None = None,
        cfg_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.cfg: Config = load_config(cfg_file, cfg_key, project=name, overrides=kwargs or None)
        self._observatories: ObservatoryList | None = None
        # a name whose folder is raw data or another project's is refused now, before any run
        product_folders.check_owner(self.data_root, self.products.folder, self.name)

    # -- where things are ----------------------------------------------------------------------

    @property
    def pars(self) -> ProjectConfig:
        """The project's parameters (the seed's ``proj.pars``): ``proj.pars.version_control = True``."""
        return self.cfg.project

    @property
    def name(self) -> str:
        return self.cfg.project.name

    @property
    def products(self) -> Products:
        """Folder, config hash ('' without version control) and what the engine makes."""
        return products_for(self.cfg, reduce=self.cfg.engine.reduce, analyze=self.cfg.engine.analyze)

    @property
    def cfg_hash(self) -> str:
        return self.products.cfg_hash

    @property
    def data_root(self) -> Path:
        return data_root_of(self.cfg.store)

    @property
    def output_folder(self) -> Path:
        """``DATA_ROOT/<PROJECT>`` or, with version control, ``DATA_ROOT/<PROJECT>_<cfg hash>``."""
        return paths.resolve(self.data_root, self.products.folder)

    @property
    def db_url(self) -> str:
        return db_url_of(self.cfg.store)

    # -- running -------------------------------------------------------------------------------

    def run(self, start: int = 0, stop: int | None = None, catalog: Catalog | None = None) -> RunSummary:
        """Backfill catalog rows ``start`` to ``stop`` (see :meth:`arun`); blocks until done."""
        return _run_sync(lambda: self.arun(start, stop, catalog))

    async def arun(
        self, start: int = 0, stop: int | None = None, catalog: Catalog | None = None
    ) -> RunSummary:
        """Fetch missing raw data, reduce what is not reduced, analyse what is not analysed.

        ``catalog`` defaults to the configured one (``catalog_kwargs``).
        """
        catalog = catalog or await open_catalog_async(None, self.cfg.catalog)
        engine = Engine(self.cfg, catalog_name=catalog.name)
        summary = await engine.run(catalog, start, stop)
        log.info("project %s: %s", self.name, summary.format_table())
        return summary

    # -- results -------------------------------------------------------------------------------

    def histograms(self) -> ScoreHistograms | None:
        """The score histograms of everything analysed so far (None before any analysis)."""
        path = histogram_path(self.output_folder)
        return load_histograms(path) if path.exists() else None

    def efficiency(self, bins: int = 5) -> pd.DataFrame:
        """Recovery efficiency of the injected events, per width and amplitude bin."""

        async def injections() -> list[dict[str, Any]]:
            return await self._query(lambda s: queries.injections(s, *self._version))

        return efficiency_table(_run_sync(injections), bins)

    def delete_products(self) -> dict[str, int]:
        """Delete this project's (version's) lightcurves, detections, properties and files.

        Raw data, shared by every project, stays. Returns the rows deleted per table.
        """

        async def delete() -> dict[str, int]:
            return await self._query(lambda s: queries.delete_products(s, *self._version))

        product_folders.check_owner(self.data_root, self.products.folder, self.name)
        counts = _run_sync(delete)
        shutil.rmtree(self.output_folder, ignore_errors=True)
        log.info("project %s: deleted %s and %s", self.name, counts, self.output_folder)
        return counts

    @property
    def _version(self) -> tuple[str, str]:
        return self.products.project, self.products.cfg_hash

    async def _query(self, query: Callable[[Sessions], Awaitable[T]]) -> T:
        """Run one of :mod:`aretriever.store.queries` on a migrated database of its own."""
        engine = create_engine(self.db_url, statement_timeout_s=self.cfg.store.statement_timeout_s)
        try:
            await migrate(engine)
            return await query(session_factory(engine))
        finally:
            await engine.dispose()

    @property
    def observatories(self) -> ObservatoryList:
        """The project's observatory objects: ``proj.observatories["ZTF"]``, ``[0]``, ``proj.ztf``."""
        if self._observatories is None:
            self._observatories = ObservatoryList(
                observatory(name, cfg=self.cfg) for name in self.cfg.project.obs_names
            )
        return self._observatories

    def __getattr__(self, name: str) -> VirtualObservatory:
        if name.startswith("_") or name == "cfg":
            raise AttributeError(name)
        try:
            return self.observatories[name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(f"Project has no attribute or observatory {name!r}") from None

    def __repr__(self) -> str:
        vc = f", version {self.cfg_hash}" if self.cfg.project.version_control else ""
        return f"Project({self.name!r}, {self.cfg.project.obs_names}{vc})"

    def config(self) -> dict[str, Any]:
        """The configuration as plain data, without credentials."""
        return public_dict(self.cfg)
