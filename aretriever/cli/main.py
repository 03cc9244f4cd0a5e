"""The ``aretriever`` command line: every command is a subcommand.

    aretriever fetch ...      = python -m aretriever.fetch ...     (backfill a catalog)
    aretriever daemon ...     = python -m aretriever.daemon ...    (backfill continuously)
    aretriever populate ...   = python -m aretriever.populate ...  (rebuild rows from raw files)
    aretriever plot ...       = python -m aretriever.plot ...      (a source's lightcurves as PNG)
    aretriever export ...     (a source's lightcurves as SkyPortal HDF5)
    aretriever config show|hash [options]

Each command module adds its arguments (``add_arguments``) and runs the parsed ones (``run``),
for its own ``python -m`` entry point and here alike; the shared options are
:mod:`aretriever.cli.options`, the exit codes :mod:`aretriever.cli.exits`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import cast

from aretriever.cli import export, fetch, plot, populate
from aretriever.cli.exits import EXIT_OK, EXIT_USAGE, exit_code, leave
from aretriever.cli.options import add_config_options, config_from_args
from aretriever.config import config_hash, to_yaml
from aretriever.service import daemon

Handler = Callable[[argparse.Namespace], int]
Adder = Callable[[argparse.ArgumentParser], None]

# name -> (help, the module's add_arguments, its run)
_COMMANDS: dict[str, tuple[str, Adder, Handler]] = {
    "fetch": ("backfill a catalog from one or more observatories", fetch.add_arguments, fetch.run),
    "daemon": ("backfill continuously, with /healthz and /metrics", daemon.add_arguments, daemon.run),
    "populate": ("rebuild database rows from the raw files", populate.add_arguments, populate.run),
    "plot": ("a source's stored lightcurves as a PNG", plot.add_arguments, plot.run),
    "export": ("a source's stored lightcurves as SkyPortal HDF5", export.add_arguments, export.run),
}


def _config_show(args: argparse.Namespace) -> int:
    print(to_yaml(config_from_args(args), comments=not args.no_comments), end="")
    return EXIT_OK


def _config_hash(args: argparse.Namespace) -> int:
    print(config_hash(config_from_args(args)))
    return EXIT_OK


def _add_config_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="show or hash the resolved configuration")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the resolved configuration as commented YAML")
    add_config_options(show)
    show.add_argument("--no-comments", action="store_true", help="leave out the descriptions")
    show.set_defaults(handler=_config_show)
    hash_ = actions.add_parser("hash", help="print the config hash used for version control")
    add_config_options(hash_)
    hash_.set_defaults(handler=_config_hash)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="aretriever", description="aretriever command line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_arguments, run) in _COMMANDS.items():
        command = commands.add_parser(name, help=help_, description=help_)
        add_arguments(command)
        command.set_defaults(handler=run)
    _add_config_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        code = EXIT_OK if exc.code is None else exc.code
        return code if isinstance(code, int) else EXIT_USAGE
    handler = cast(Handler | None, getattr(args, "handler", None))
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return exit_code(lambda: handler(args))


if __name__ == "__main__":
    leave(main())
