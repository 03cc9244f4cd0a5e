"""``python -m aretriever.populate``: rebuild ``sources`` and ``raw_photometry`` rows from raw files.

The walk is :func:`aretriever.service.populate.populate`; see there for what is read and kept.

Exit codes: 0 every file read; 1 some file unreadable (or rows refused by the database);
2 bad usage, configuration or catalog; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from aretriever.catalogs.core import SearchableCatalog, open_catalog
from aretriever.cli.exits import EXIT_FAILED, EXIT_OK, exit_code, leave
from aretriever.cli.options import add_config_options, add_log_options, config_from_args
from aretriever.service.logs import configure_cli
from aretriever.service.populate import PopulateSummary, populate
from aretriever.settings import Config


def build_parser() -> argparse.ArgumentParser:
    """``python -m aretriever.populate``'s parser (``aretriever populate`` has the same arguments)."""
    parser = argparse.ArgumentParser(prog="python -m aretriever.populate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add populate's arguments, the shared configuration and output options included."""
    p.add_argument("--catalog", help="name sources from this catalog (file, 'test', 'wd', 'gaia:<ADQL>')")
    p.add_argument(
        "--observatory", action="append", default=[], help="walk this observatory's folder (repeatable)"
    )
    p.add_argument("--summary-json", type=Path, help="write the summary as JSON here")
    add_config_options(p)
    add_log_options(p, quiet="no warning per file (the summary still lists them)")


def load(args: argparse.Namespace) -> Config:
    """The config resolved as ``python -m aretriever.fetch`` resolves it, given the same flags."""
    # fetch's --observatory names the lanes too: the config's obs_names say the same here
    lanes = [f"project.obs_names=[{', '.join(args.observatory)}]"] if args.observatory else []
    return config_from_args(args, lanes)


def _catalog(args: argparse.Namespace, cfg: Config) -> SearchableCatalog | None:
    if not (args.catalog or cfg.catalog.path or cfg.catalog.default):
        return None
    return open_catalog(args.catalog, cfg.catalog)


def _report(summary: PopulateSummary, args: argparse.Namespace) -> int:
    print(summary.format(), file=sys.stderr)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
    return EXIT_OK if summary.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aretriever.populate ARGS``; return the exit code."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed populate command line (also ``aretriever populate``)."""
    configure_cli(verbose=args.verbose, quiet=args.quiet)

    def body() -> int:
        cfg = load(args)
        catalog = _catalog(args, cfg)
        summary = asyncio.run(populate(cfg, catalog, observatories=args.observatory or None))
        return _report(summary, args)

    return exit_code(body)


if __name__ == "__main__":
    leave(main())
