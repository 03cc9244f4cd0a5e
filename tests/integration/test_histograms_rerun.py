"""Score histograms through the CLI: analysing a source again never counts it twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from aretriever.cli.fetch import main as fetch_main
from aretriever.engine.histogram_io import load_histograms
from aretriever.store import db

from .test_backfill import query


def run_demo(root: Path, db_url: str, size: int) -> int:
    return fetch_main(
        [
            "--quiet", "--catalog", "test", "--observatory", "demo",
            "--data-root", str(root), "--db-url", db_url,
            "--set", f"catalog.test_size={size}", "--set", "engine.workers=2",
            "--set", "observatories.demo.base_url=http://127.0.0.1:9",  # nothing listens: never asked
        ]
    )  # fmt: skip


def execute(db_url: str, sql: str) -> None:
    async def go() -> None:
        engine = db.create_engine(db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text(sql))
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_reanalysed_sources_are_counted_once(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    path = root / "DEFAULT" / "score_histograms.h5"
    assert run_demo(root, db_url, 8) == 0
    first = load_histograms(path)
    assert first.n_points() == 8 * 200  # 8 sources x 2 lightcurves x 100 points

    for reduced in (root / "DEFAULT").glob("RA*/*_reduced.h5"):  # products lost: reduced again
        reduced.unlink()
    assert run_demo(root, db_url, 8) == 0
    assert query(db_url, "select count(*) from properties") == [(8,)]
    assert load_histograms(path) == first

    # the database lost its analysis (rebuilt by populate): analysed again from the raw files
    execute(db_url, "delete from properties")
    execute(db_url, "delete from lightcurves")
    assert run_demo(root, db_url, 10) == 0  # and two new sources
    assert query(db_url, "select count(*) from properties") == [(10,)]
    assert load_histograms(path).n_points() == 10 * 200
