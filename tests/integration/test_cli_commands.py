"""The ``aretriever`` command: every command a subcommand, each the same as its ``python -m`` form."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aretriever import fetch
from aretriever.cli.main import main
from aretriever.export import DEFAULT_KEY
from tests.integration.conftest import ArchiveThread

COMMANDS = ["fetch", "daemon", "populate", "plot", "export", "config"]


def _fetch_args(archive: ArchiveThread, root: Path) -> list[str]:
    # no --db-url: each run gets the default database, SQLite in its own DATA_ROOT
    return [
        "--quiet",
        "--catalog", "test",
        "--data-root", str(root),
        "--summary-json", str(root.parent / f"{root.name}.json"),
        "--set", f"observatories.ztf.base_url={archive.url}",
        "--set", "observatories.ztf.rate_per_s=1000",
        "--set", "catalog.test_size=3",
        "--set", "engine.workers=1",
    ]  # fmt: skip


def _outcomes(root: Path) -> dict[str, object]:
    return json.loads(root.parent.joinpath(f"{root.name}.json").read_text())["observatories"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_a_subcommand_with_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert f"aretriever {command}" in capsys.readouterr().out


def test_aretriever_fetch_is_python_m_aretriever_fetch_and_export_writes_skyportal_files(
    archive: ArchiveThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARETRIEVER_DB_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert fetch.main(_fetch_args(archive, tmp_path / "module")) == 0
    assert main(["fetch", *_fetch_args(archive, tmp_path / "command")]) == 0
    assert _outcomes(tmp_path / "command") == _outcomes(tmp_path / "module")
    assert (tmp_path / "command" / "aretriever.sqlite").is_file()
    assert archive.archive.count("/cgi-bin/ZTF/nph_light_curves") == 6  # both runs fetched every source, each in its own store

    out = tmp_path / "export"
    assert main(["export", "TEST000001", "--out-dir", str(out), "--data-root", str(tmp_path / "command")]) == 0
    files = sorted(out.glob("*.h5"))
    assert files and all(f.name.startswith("TEST000001_ztf_") for f in files)
    with pd.HDFStore(files[0], "r") as store:
        table = store[DEFAULT_KEY]
        metadata = store.get_storer(DEFAULT_KEY).attrs.metadata
    assert len(table) > 0 and {"mjd", "mag", "flux", "filter"} <= set(table.columns)
    assert metadata["obj_id"] == "TEST000001"


def test_export_of_an_unknown_source_fails_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ARETRIEVER_DB_URL", raising=False)
    assert main(["export", "nobody", "--data-root", str(tmp_path)]) == 1  # as plot: nothing to read
    assert "no database" in capsys.readouterr().err
