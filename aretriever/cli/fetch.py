"""``python -m aretriever.fetch``: backfill a catalog from one or more observatories.

Exit codes: 0 every source done or skipped; 1 some failed (the summary says which and why);
2 bad usage, configuration or catalog; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from aretriever.catalogs.core import Catalog, GeneratedCatalog, SearchableCatalog, open_catalog
from aretriever.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, exit_code, leave
from aretriever.cli.options import add_config_options, add_log_options, config_from_args
from aretriever.engine.core import Engine
from aretriever.engine.pipeline import SourceResult
from aretriever.engine.summary import RunSummary
from aretriever.errors import CatalogError
from aretriever.service.logs import configure_cli
from aretriever.settings import Config


def build_parser() -> argparse.ArgumentParser:
    """``python -m aretriever.fetch``'s parser (``aretriever fetch`` has the same arguments)."""
    parser = argparse.ArgumentParser(prog="python -m aretriever.fetch", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add fetch's arguments, the shared configuration and output options included."""
    p.add_argument("--catalog", help="catalog file (CSV, FITS, Parquet, HDF5) or 'test', 'wd', 'gaia:<ADQL>'")
    p.add_argument(
        "--observatory", action="append", default=[], help="observatory lane (repeatable; default: config)"
    )
    p.add_argument(
        "--tic",
        action="append",
        type=int,
        default=[],
        help="fetch this TIC star from TESS directly (repeatable); filed under the nearest catalog row",
    )
    p.add_argument("--start", type=int, default=0, help="first catalog row (0-based)")
    p.add_argument("--stop", type=int, default=None, help="stop before this catalog row")
    p.add_argument("--no-reduce", action="store_true", help="only download raw data")
    p.add_argument("--no-analyze", action="store_true", help="reduce but do not analyse (no S/N, detections)")
    p.add_argument("--verify", action="store_true", help="open every stored file; re-fetch unreadable ones")
    p.add_argument("--dry-run", action="store_true", help="say what would be fetched; make no request")
    p.add_argument("--summary-json", type=Path, help="write the run summary as JSON here")
    add_config_options(p)
    add_log_options(p)


# Flags become ``--set`` overrides so they are validated exactly like values from the config file.
def _cli_sets(args: argparse.Namespace) -> list[str]:
    sets: list[str] = []
    if args.no_reduce:
        sets.append("engine.reduce=false")
    if args.no_analyze:
        sets.append("engine.analyze=false")
    if args.verify:
        sets.append("engine.verify=true")
    # TIC ids only mean something to TESS: --tic alone narrows the run to that lane.
    observatories = args.observatory or (["tess"] if args.tic else [])
    if observatories:
        sets.append(f"project.obs_names=[{', '.join(observatories)}]")
    return sets


def load(args: argparse.Namespace) -> Config:
    """The resolved config: file, ``--set``, then the other command-line flags."""
    return config_from_args(args, _cli_sets(args))


def _size_hint(catalog: Catalog | None, start: int, stop: int | None) -> int | None:
    if catalog is None:
        return None
    if stop is not None:
        return max(0, stop - start)
    # Only a generated catalog knows its size for free; len() of a file catalog reads the whole file,
    # too high a price for a progress bar, which then runs without a total.
    if isinstance(catalog, GeneratedCatalog):
        return max(0, len(catalog) - start)
    return None


class _Bar(Protocol):
    def update(self, n: int = 1) -> bool | None: ...


class _NoBar:
    def update(self, n: int = 1) -> bool | None:
        return None


def _progress_bar(total: int | None, show: bool) -> AbstractContextManager[_Bar]:
    """tqdm's bar on a terminal; else a no-op, so tqdm's import is not paid before the first request."""
    if not show:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, unit="src", smoothing=0.05)


async def run_backfill(cfg: Config, catalog: Catalog | None, args: argparse.Namespace) -> RunSummary:
    """Run the engine with a progress bar and signal handling (``--tic``: those stars only)."""
    total = len(args.tic) if args.tic else _size_hint(catalog, args.start, args.stop)
    # One result per (row, lane): each catalog row counts once for every observatory in the run.
    lanes = len(cfg.project.obs_names)
    # A bar redrawn into a log file or CI output is noise; only a terminal gets one.
    show = not args.quiet and sys.stderr.isatty()
    with _progress_bar(None if total is None else total * lanes, show) as bar:

        def on_result(result: SourceResult) -> None:
            bar.update(1)

        engine = Engine(cfg, on_result=on_result, catalog_name=catalog.name if catalog is not None else "")
        loop = asyncio.get_running_loop()
        # On the loop, not signal.signal: the first Ctrl-C lets in-flight sources finish and be
        # recorded, a second one aborts them (Engine.request_stop), instead of a KeyboardInterrupt.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, engine.request_stop)
        try:
            if args.tic:
                searchable = catalog if isinstance(catalog, SearchableCatalog) else None
                return await engine.fetch_by_ids("tess", [str(tic) for tic in args.tic], searchable)
            if catalog is None:
                raise CatalogError("no catalog: give --catalog (or catalog.default / catalog.path)")
            return await engine.run(catalog, args.start, args.stop)
        finally:
            # Hand the signals back, so Ctrl-C after the run (or in the next asyncio.run) behaves normally.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def run_plan(cfg: Config, catalog: Catalog, args: argparse.Namespace) -> dict[str, Counter[str]]:
    """``--dry-run``: the skip check alone."""
    return await Engine(cfg, catalog_name=catalog.name).plan(catalog, args.start, args.stop)


def _report(summary: RunSummary, args: argparse.Namespace) -> int:
    print(summary.format_table(), file=sys.stderr)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
    # Interrupted outranks failed: a script must know the run is incomplete (a rerun skips what is done).
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed else EXIT_OK


def _catalog(args: argparse.Namespace, cfg: Config) -> Catalog | None:
    """The catalog to backfill; with ``--tic`` it is optional (it names the sources found)."""
    if args.tic and not (args.catalog or cfg.catalog.path or cfg.catalog.default):
        return None
    return open_catalog(args.catalog, cfg.catalog)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aretriever.fetch ARGS``; return the exit code."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed fetch command line (also ``aretriever fetch``)."""
    configure_cli(verbose=args.verbose)

    def body() -> int:
        # Config and catalog load inside the body, so their errors map to exit 2 with a one-line message.
        cfg = load(args)
        catalog = _catalog(args, cfg)
        if args.dry_run:
            if catalog is None:
                raise CatalogError("--dry-run needs a catalog")
            plan = asyncio.run(run_plan(cfg, catalog, args))
            for lane, counts in plan.items():
                print(f"{lane}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            return EXIT_OK
        return _report(asyncio.run(run_backfill(cfg, catalog, args)), args)

    return exit_code(body)


if __name__ == "__main__":
    leave(main())
