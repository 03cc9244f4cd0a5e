"""``aretriever export <source>``: a source's stored lightcurves as SkyPortal HDF5 files.

The lightcurves are read as ``aretriever plot`` reads them (real ones, the product set written
last); each single-filter lightcurve becomes one file, written by
:func:`aretriever.export.to_skyportal`:
``<out-dir>/<source>_<observatory>_<filter>_<series number>.h5``.

Exit codes: 0 files written; 1 nothing to export (unknown source, no lightcurves), a lightcurve
SkyPortal cannot take, or storage failed; 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from aretriever.cli.exits import EXIT_OK, exit_code, leave
from aretriever.cli.options import add_config_options, config_from_args
from aretriever.cli.plot import read_source
from aretriever.errors import ExportError
from aretriever.export import to_skyportal
from aretriever.store import paths
from aretriever.store.models import Lightcurve


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``aretriever export``, on its own."""
    parser = argparse.ArgumentParser(prog="aretriever export", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add export's arguments, the shared configuration options included."""
    p.add_argument("source", help="source name, exactly as in the catalog")
    p.add_argument("--out-dir", type=Path, default=Path(), help="folder for the files (default: here)")
    p.add_argument("--observatory", help="only this observatory (default: all)")
    add_config_options(p)


def file_name(source: str, lc: Lightcurve) -> str:
    """``<source>_<observatory>_<filter>_<series number>.h5``, every part file-name safe."""
    parts = (source, lc.observatory, lc.filter or "nofilter", f"{lc.series_number:02d}")
    return "_".join(paths.safe_name(part) for part in parts) + ".h5"


def run(args: argparse.Namespace) -> int:
    """Run a parsed export command line; print each file written."""

    def body() -> int:
        cfg = config_from_args(args)
        inputs = asyncio.run(read_source(cfg, args.source, args.observatory))
        for lc, table in inputs.lightcurves:
            if not lc.filter:
                raise ExportError(f"export: lightcurve {lc.id} of {args.source!r} has no filter")
            out = args.out_dir / file_name(args.source, lc)
            meta = {"obj_id": args.source, "series_name": f"{inputs.project} {lc.observatory}"}
            to_skyportal(table, lc.filter, lc.observatory, out, metadata=meta)
            print(out)
        return EXIT_OK

    return exit_code(body)


def main(argv: Sequence[str] | None = None) -> int:
    """``aretriever export ARGS`` as a function; return the exit code."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    leave(main())
