"""Storage faults are not 'missing': an unreadable or unmounted DATA_ROOT stops the run (exit 2)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from .test_backfill import query

ZTF = "/cgi-bin/ZTF/nph_light_curves"


def _filled(run_cli, archive, tmp_path: Path) -> Path:
    assert run_cli(size=4) == 0
    archive.archive.reset_counts()
    return tmp_path / "data"


def test_an_unmounted_data_root_refetches_nothing(run_cli, archive, db_url, tmp_path: Path, capsys) -> None:
    root = _filled(run_cli, archive, tmp_path)
    shutil.move(root / "ZTF", tmp_path / "ZTF-elsewhere")  # DATA_ROOT as an empty mount point shows it
    capsys.readouterr()
    assert run_cli(size=4) == 2
    err = capsys.readouterr().err
    assert "does not exist, but the database lists 4 ztf files in it: is DATA_ROOT mounted?" in err
    assert archive.archive.count(ZTF) == 0
    assert query(db_url, "select count(*) from raw_photometry where status = 'ok'") == [(4,)]

    shutil.move(tmp_path / "ZTF-elsewhere", root / "ZTF")  # mounted again: everything is there
    assert run_cli(size=4) == 0 and archive.archive.count(ZTF) == 0


def test_a_deliberately_emptied_observatory_folder_is_fetched_again(run_cli, archive, tmp_path: Path) -> None:
    root = _filled(run_cli, archive, tmp_path)
    shutil.rmtree(root / "ZTF")
    (root / "ZTF").mkdir()  # what the error message tells a user who deleted it on purpose
    assert run_cli(size=4) == 0 and archive.archive.count(ZTF) == 4


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
def test_an_unreadable_file_stops_the_run(
    run_cli, archive, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    root = _filled(run_cli, archive, tmp_path)
    real_stat = os.stat

    def failing_stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(root / "ZTF") + os.sep):
            raise OSError(code, os.strerror(code), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    capsys.readouterr()
    assert run_cli(size=4) == 2
    monkeypatch.undo()
    assert f"(errno {code}); is DATA_ROOT mounted and readable?" in capsys.readouterr().err
    assert archive.archive.count(ZTF) == 0


def test_a_folder_replaced_by_a_file_is_a_storage_fault(run_cli, archive, tmp_path: Path, capsys) -> None:
    root = _filled(run_cli, archive, tmp_path)
    for folder in (root / "ZTF").iterdir():
        shutil.rmtree(folder)
        folder.write_text("not a folder")  # ENOTDIR under it
    capsys.readouterr()
    assert run_cli(size=4) == 2
    assert f"(errno {errno.ENOTDIR})" in capsys.readouterr().err
    assert archive.archive.count(ZTF) == 0


def test_a_product_folder_blocked_by_a_file_stops_before_any_request(run_cli, archive, tmp_path, capsys) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "DEFAULT").write_text("a file where the project's folder should be")
    assert run_cli(size=3) == 2
    assert f"cannot make the product folder {root / 'DEFAULT'}" in capsys.readouterr().err
    assert archive.archive.count() == 0
