"""The ``aretriever`` command line.

Each subcommand registers a handler with ``set_defaults(handler=...)``; a handler takes the parsed
arguments and returns the exit code. Exit codes: 0 success, 2 bad usage or bad configuration (the
message goes to stderr, without a traceback).

    aretriever config show [--config FILE] [--cfg-key K] [--project NAME] [--set k=v ...]
    aretriever config hash [same options]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Literal, cast

from aretriever.cli.exits import EXIT_OK, EXIT_USAGE, exit_code
from aretriever.config import config_hash, load_config, to_yaml
from aretriever.settings import Config

Handler = Callable[[argparse.Namespace], int]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose and override the configuration (for any subcommand)."""
    group = parser.add_argument_group("configuration")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--config", metavar="FILE", help="config file (bare name: in configs/)")
    which.add_argument("--no-config", action="store_true", help="load no config file at all")
    group.add_argument("--cfg-key", metavar="KEY", help="load the config from this key of the file")
    group.add_argument("--project", metavar="NAME", help="project (default file: NAME.yaml)")
    group.add_argument(
        "--set",
        metavar="PATH=VALUE",
        action="append",
        default=[],
        dest="sets",
        help="override one value, e.g. analysis.finder.snr_threshold=7 (repeatable; YAML values)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the configuration the options of :func:`add_config_options` describe."""
    cfg_file: str | Literal[False] | None = False if args.no_config else args.config
    return load_config(cfg_file, args.cfg_key, project=args.project, sets=args.sets)


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
    raise SystemExit(main())
