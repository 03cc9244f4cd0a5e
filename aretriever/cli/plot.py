"""``python -m aretriever.plot <source> --out lc.png``: a source's stored lightcurves as a PNG.

The figure is made by :mod:`aretriever.plotting`; this module reads the source's lightcurves,
tables and detections from the database and DATA_ROOT.

Exit codes: 0 PNG written; 1 nothing to plot (unknown source, no lightcurves) or storage failed;
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from aretriever.cli.exits import EXIT_OK, exit_code, leave
from aretriever.cli.options import add_config_options, config_from_args
from aretriever.settings import Config
from aretriever.store import db, paths, queries
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.models import Lightcurve, Source
from aretriever.store.queries import Sessions

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from aretriever.plotting import NoLightcurvesError

# --------------------------------------------------------------------------------------------
# reading a source from the store


@dataclass(frozen=True, slots=True)
class SourcePlotInputs:
    """A source's stored lightcurves with their tables, and their detections (as dicts)."""

    name: str
    project: str
    cfg_hash: str
    lightcurves: list[tuple[Lightcurve, pd.DataFrame]]
    detections: list[dict[str, Any]]
    source: Source | None = None

    def title(self) -> str:
        """``<name> (RA .., Dec .., mag ..) - project <project>[ <cfg hash>]``."""
        where = ""
        if self.source is not None:
            mag = "" if self.source.mag is None else f", mag {self.source.mag:.2f}"
            where = f" (RA {self.source.ra_deg:.5f}, Dec {self.source.dec_deg:+.5f}{mag})"
        version = f" {self.cfg_hash}" if self.cfg_hash else ""
        return f"{self.name}{where} - project {self.project}{version}"


def _newest_product_set(lcs: list[Lightcurve]) -> list[Lightcurve]:
    """Only the (project, config hash) written last: versions of one product never share a plot."""
    newest = max(lcs, key=lambda lc: lc.created_at)
    return [lc for lc in lcs if (lc.project, lc.cfg_hash) == (newest.project, newest.cfg_hash)]


async def _detections(session: AsyncSession, lcs: list[Lightcurve]) -> list[dict[str, Any]]:
    from aretriever.plotting import detection_mapping  # matplotlib: only for commands that plot

    return [dict(detection_mapping(d)) for d in await queries.detections_of(session, lcs)]


def _no_lightcurves(name: str, project: str | None, observatory: str | None, why: str) -> NoLightcurvesError:
    from aretriever.plotting import NoLightcurvesError

    where = f"project {project!r}" if project is not None else "any project"
    if observatory is not None:
        where += f", observatory {observatory!r}"
    return NoLightcurvesError(f"plot: no lightcurves for source {name!r} in {where}: {why}")


async def _explain_missing(session: AsyncSession, name: str) -> str:
    if not await queries.source_exists(session, name):
        return "no source of that name in the database"
    projects = await queries.lightcurve_projects(session, name)
    if not projects:
        return "the source has none in any project (no data, or not reduced)"
    return f"the source has some in project(s) {', '.join(map(repr, projects))} (use --project)"


def _read_tables(lcs: Sequence[Lightcurve], data_root: Path | None) -> list[tuple[Lightcurve, pd.DataFrame]]:
    return [(lc, lc.load(data_root)) for lc in lcs]


async def load_source_plot_inputs(
    sessions: Sessions,
    name: str,
    *,
    project: str | None = None,
    observatory: str | None = None,
    data_root: Path | None = None,
) -> SourcePlotInputs:
    """Read a source's lightcurves (rows and HDF5 tables) and detections for :func:`plot_source`.

    Only real lightcurves (``simulation_number`` 0) are read; with several projects or config
    hashes, the set written last. Detections of any simulation number are kept (drawn by
    ``simulated``). Tables are read in a worker thread.

    Raises
    ------
    NoLightcurvesError
        The source is unknown or has no lightcurves there; the message says which, and where else
        it has some.
    StoreError
        A table cannot be read from its file.
    """
    async with sessions() as session:
        lcs = await queries.real_lightcurves(session, name, project, observatory)
        if not lcs:
            raise _no_lightcurves(name, project, observatory, await _explain_missing(session, name))
        lcs = _newest_product_set(lcs)
        detections = await _detections(session, lcs)
        source = await queries.source(session, name)
    tables = await asyncio.to_thread(_read_tables, lcs, data_root)
    return SourcePlotInputs(name, lcs[0].project, lcs[0].cfg_hash, tables, detections, source)


# --------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """``python -m aretriever.plot``'s parser (``aretriever plot`` has the same arguments)."""
    parser = argparse.ArgumentParser(prog="python -m aretriever.plot", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add plot's arguments, the shared configuration options included."""
    p.add_argument("source", help="source name, exactly as in the catalog")
    p.add_argument("--out", type=Path, help="PNG to write (default: <source>.png)")
    p.add_argument("--observatory", help="only this observatory (default: all)")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNG")
    add_config_options(p)


def load(args: argparse.Namespace) -> Config:
    """The resolved config: file, then ``--set``, ``--data-root`` and ``--db-url``."""
    return config_from_args(args)


async def read_source(cfg: Config, name: str, observatory: str | None) -> SourcePlotInputs:
    """Open the configured store and read what :func:`plot_source` needs for ``name``."""
    root = data_root_of(cfg.store)
    timeout_s = cfg.store.statement_timeout_s
    async with db.reading(db_url_of(cfg.store), statement_timeout_s=timeout_s) as sessions:
        return await load_source_plot_inputs(
            sessions, name, project=cfg.project.name, observatory=observatory, data_root=root
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aretriever.plot ARGS``; return the exit code."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed plot command line (also ``aretriever plot``)."""
    out = args.out or Path(f"{paths.safe_name(args.source)}.png")

    def body() -> int:
        from aretriever.plotting import plot_source, save_png

        cfg = load(args)
        inputs = asyncio.run(read_source(cfg, args.source, args.observatory))
        save_png(plot_source(inputs.lightcurves, inputs.detections, inputs.title()), out, dpi=args.dpi)
        print(out)
        return EXIT_OK

    return exit_code(body)


if __name__ == "__main__":
    leave(main())
