"""The options every command shares, and the one way they become a :class:`Config`.

    --config FILE | --no-config   [--cfg-key KEY]   [--project NAME]   [--set PATH=VALUE ...]
    --data-root DIR   --db-url URL   (and, for commands that log: --verbose / --quiet)

Precedence, lowest first: defaults, the config file, ``--project``, ``--set`` in order, then
``--data-root``/``--db-url`` and the command's own flags (they are ``--set`` strings appended last).
DATA_ROOT and the database URL not given anywhere come from the environment, resolved once by
:func:`aretriever.config.load_config`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from aretriever.config import load_config
from aretriever.settings import Config


def add_config_options(parser: argparse.ArgumentParser, *, config_required: bool = False) -> None:
    """Add the options that choose, override and place the configuration.

    Parameters
    ----------
    config_required
        ``--config`` must be given (the daemon: it re-reads that file on SIGHUP); no ``--no-config``.
    """
    group = parser.add_argument_group("configuration")
    if config_required:
        group.add_argument("--config", metavar="FILE", required=True, help="config file (reloaded on SIGHUP)")
        parser.set_defaults(no_config=False)
    else:
        which = group.add_mutually_exclusive_group()
        which.add_argument("--config", metavar="FILE", help="config file (bare name: in configs/)")
        which.add_argument("--no-config", action="store_true", help="load no config file at all")
    group.add_argument("--cfg-key", metavar="KEY", help="load the config from this key of the file")
    group.add_argument("--project", metavar="NAME", help="project name (default file: configs/NAME.yaml)")
    group.add_argument(
        "--set",
        metavar="PATH=VALUE",
        action="append",
        default=[],
        dest="sets",
        help="override one value, e.g. analysis.finder.snr_threshold=7 (repeatable; YAML values)",
    )
    group.add_argument("--data-root", type=Path, help="DATA_ROOT (default: $RETRIEVER_DATA, else ./data)")
    group.add_argument(
        "--db-url", help="database URL (default: $ARETRIEVER_DB_URL, else SQLite in DATA_ROOT)"
    )


def add_log_options(parser: argparse.ArgumentParser, quiet: str = "no progress bar, warnings only") -> None:
    """Add ``--verbose`` and ``--quiet`` (its help: ``quiet``) for ``logs.configure_cli``."""
    group = parser.add_argument_group("output")
    group.add_argument("--quiet", action="store_true", help=quiet)
    group.add_argument("--verbose", action="store_true", help="log every retry and decision")


def config_sets(args: argparse.Namespace) -> list[str]:
    """``--set`` strings of the shared options, ``--data-root`` and ``--db-url`` last."""
    sets = list(args.sets)
    if args.data_root is not None:
        sets.append(f"store.data_root={args.data_root}")
    if args.db_url:
        sets.append(f"store.db_url={args.db_url}")
    return sets


def config_from_args(args: argparse.Namespace, extra_sets: Sequence[str] = ()) -> Config:
    """The resolved config the shared options describe; ``extra_sets`` (a command's flags) win."""
    cfg_file: str | Literal[False] | None = False if args.no_config else (args.config or None)
    sets = [*config_sets(args), *extra_sets]
    return load_config(cfg_file, args.cfg_key, project=args.project, sets=sets)
