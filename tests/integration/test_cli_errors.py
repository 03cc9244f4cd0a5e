"""One exit-code mapping: errors inside the engine's task group are one line, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from aretriever.catalogs.core import open_catalog
from aretriever.cli.fetch import main as fetch_main
from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.errors import CatalogError

SECRET = "hunter2-Zq"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_missing_catalog_column_exits_2_with_one_line(run_cli, archive, tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "nodec.csv"
    catalog.write_text("name,ra\nA,10.0\n")
    assert run_cli("--catalog", str(catalog)) == 2
    assert "column 'dec' not found" in _one_error_line(capsys.readouterr().err)
    assert archive.archive.count() == 0


def test_a_wrong_analysis_class_is_refused_before_any_request(run_cli, archive, capsys) -> None:
    assert run_cli("--set", "analysis.analysis_class=NoSuchAnalysis", size=3) == 2
    assert "analysis.analysis_class" in _one_error_line(capsys.readouterr().err)
    assert archive.archive.count() == 0
    assert run_cli("--set", "analysis.finder_module=no_such.module", size=3) == 2
    assert "analysis.finder_class: cannot import module 'no_such.module'" in capsys.readouterr().err
    assert archive.archive.count() == 0


def test_an_unreadable_catalog_file_exits_2(run_cli, archive, tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "broken.fits"
    catalog.write_bytes(b"this is not a FITS file\x00" * 10)
    assert run_cli("--catalog", str(catalog)) == 2
    assert "broken.fits" in _one_error_line(capsys.readouterr().err)


async def test_the_engine_raises_the_error_itself_not_a_task_group(db_url: str, tmp_path: Path) -> None:
    catalog = tmp_path / "nodec.csv"
    catalog.write_text("name,ra\nA,10.0\n")
    cfg = load_config(False, overrides={"store": {"data_root": str(tmp_path / "d"), "db_url": db_url}})
    with pytest.raises(CatalogError, match="column 'dec' not found"):
        await Engine(cfg).run(open_catalog(str(catalog), cfg.catalog))


def test_an_unreachable_database_names_it_without_its_password(tmp_path: Path, capsys) -> None:
    url = f"postgresql+asyncpg://astro:{SECRET}@127.0.0.1:1/wd"
    argv = ["--quiet", "--catalog", "test", "--data-root", str(tmp_path), "--db-url", url]
    assert fetch_main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot open the database postgresql+asyncpg://astro:***@127.0.0.1:1/wd" in line
    assert SECRET not in line


def test_config_show_masks_the_database_password(capsys) -> None:
    from aretriever.cli.main import main

    assert main(["config", "show", "--set", f"store.db_url=postgresql://astro:{SECRET}@h/d"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "db_url: postgresql://astro:***@h/d" in out
