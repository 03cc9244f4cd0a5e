"""What an open engine holds besides its lanes: the database and writers, DATA_ROOT, products.

Each ``open_*`` function pushes its own cleanup onto the caller's :class:`AsyncExitStack`, so the
engine closes everything in reverse order of opening with one :func:`close_bounded`, also when a
later step fails halfway.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from aretriever.adapters import available
from aretriever.config import config_hash, to_yaml
from aretriever.config_output import products_hash
from aretriever.engine.histogram_file import HistogramFile
from aretriever.engine.pipeline import FileCompression, Stores
from aretriever.engine.skipcheck import Products
from aretriever.settings import Config
from aretriever.store import owners, paths, product_folders
from aretriever.store.db import create_engine, session_factory
from aretriever.store.hdf5 import atomic_path
from aretriever.store.product_folders import check_project_folder
from aretriever.store.queries import Sessions
from aretriever.store.schema import migrate
from aretriever.store.writers import FileWriter, RowWriter

log = logging.getLogger("aretriever.engine.resources")


def products_for(cfg: Config, *, reduce: bool, analyze: bool = False) -> Products:
    """Where this project's products go: ``<PROJECT>`` or, with version control, ``<PROJECT>_<hash>``."""
    digest = config_hash(cfg) if cfg.project.version_control else ""
    folder = paths.product_folder(cfg.project.name, digest or None)
    check_project_folder(cfg.project.name, folder, [*available(), *cfg.project.obs_names])
    # Recorded on every product row; without version control the skip check re-analyses a source
    # whose record differs, so a changed setting overwrites the products instead of being ignored.
    made_with = {obs.lower(): products_hash(cfg, obs.lower()) for obs in cfg.project.obs_names}
    # analysis scores reduced lightcurves, so it is off whenever reduction is
    return Products(cfg.project.name, digest, folder, reduce, analyze and reduce, made_with)


def write_version_config(cfg: Config, folder: Path, digest: str) -> Path:
    """``<folder>/config.yaml``: the parameters a product folder was made with (no secrets).

    An unversioned folder's (``digest`` '') is its latest run's: its products may be a mix until
    a run completes, so its header points to the per-row record the skip check goes by.
    """
    path = folder / "config.yaml"
    header = (
        f"# project {cfg.project.name}, config hash {digest}\n"
        if digest
        else f"# project {cfg.project.name}, unversioned: the config of its latest run; each product row"
        f" records the products hash it was made with (meta.made_with)\n"
    )
    text = header + to_yaml(cfg)
    with atomic_path(path, f"project {cfg.project.name}") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


async def open_stores(
    stack: AsyncExitStack, cfg: Config, data_root: Path, db_url: str
) -> tuple[Stores, Sessions]:
    """The migrated database and the two writer tasks; the writers close before the database."""
    await anyio.Path(data_root).mkdir(parents=True, exist_ok=True)
    db = create_engine(db_url, statement_timeout_s=cfg.store.statement_timeout_s)
    stack.push_async_callback(db.dispose)
    await migrate(db)
    sessions = session_factory(db)
    files = await stack.enter_async_context(
        FileWriter(fsync=cfg.store.fsync, compression=cfg.store.raw_compression)
    )
    rows = await stack.enter_async_context(
        RowWriter(sessions, batch_rows=cfg.store.db_batch_rows, batch_ms=cfg.store.db_batch_ms)
    )
    compression = FileCompression(cfg.store.raw_compression, cfg.store.reduced_compression)
    return Stores(files, rows, data_root, compression), sessions


async def claim_data_root(
    stack: AsyncExitStack, data_root: Path, observatories: list[str], products: Products
) -> owners.Sweeper:
    """Hold this process's owner lock on DATA_ROOT; sweep what dead owners left behind.

    Scratch folders are few: swept now. Temporary files are looked for only where this
    engine writes (its observatory folders and product folder, one level of RA folders), in
    a background thread: with a million files there, a start must not wait for the walk.
    """
    stack.enter_context(owners.holding(data_root))
    swept = await anyio.to_thread.run_sync(owners.sweep_scratch, data_root)
    if swept:
        log.info("removed %d scratch folders of processes that are gone", swept)
    folders = [data_root / paths.safe_name(name.upper()) for name in observatories]
    if products.reduce:
        folders.append(paths.resolve(data_root, products.folder))
    sweeper = owners.Sweeper(data_root, folders)
    stack.push_async_callback(anyio.to_thread.run_sync, sweeper.stop)
    return sweeper


async def open_products(
    stack: AsyncExitStack, cfg: Config, data_root: Path, products: Products
) -> HistogramFile | None:
    """Claim the product folder, record a versioned folder's config; the histograms when analysing."""
    if products.reduce:
        await anyio.to_thread.run_sync(product_folders.claim, data_root, products.folder, products.project)
    if products.cfg_hash or products.reduce:
        folder = paths.resolve(data_root, products.folder)
        await anyio.to_thread.run_sync(write_version_config, cfg, folder, products.cfg_hash)
    if not products.analyze:
        return None
    folder = paths.resolve(data_root, products.folder)
    histograms = HistogramFile(folder, cfg.analysis.histograms, products.cfg_hash)
    # saved on closing too: the periodic saver may be up to histogram_save_s behind
    stack.push_async_callback(histograms.save)
    return histograms


async def close_bounded(stack: AsyncExitStack, limit_s: float) -> None:
    """Close ``stack`` even when the caller is cancelled, but give up after ``limit_s``.

    Writers flush what finished, the pool and sessions close; the deadline means a stuck
    resource (a hung socket, a wedged worker) cannot hang the process's exit.
    """
    with anyio.CancelScope(shield=True) as closing:
        closing.deadline = anyio.current_time() + limit_s
        log.info("closing: flushing writers")
        await stack.aclose()
    if closing.cancelled_caught:
        log.error("closing took longer than %.0f s: gave up", limit_s)
