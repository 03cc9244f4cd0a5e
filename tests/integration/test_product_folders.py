"""Products never touch raw data or another project's folder (both backends)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from aretriever.errors import ConfigError
from aretriever.project import Project
from aretriever.store import product_folders

SIZE = 3


def _project(archive: Any, db_url: str, root: Path, name: str, **kwargs: Any) -> Project:
    return Project(
        name,
        cfg_file=False,
        obs_names=["ZTF"],
        catalog_kwargs={"default": "test", "test_size": SIZE},
        analysis_kwargs={"num_injections": 1},
        store={"data_root": str(root), "db_url": db_url},
        engine={"workers": 2},
        ZTF={"base_url": archive.url, "rate_per_s": 1000},
        **kwargs,
    )


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", ["ztf", "ZTF", "Ztf", "demo", "tess", "TESS"])
def test_a_project_named_like_an_observatory_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"DATA_ROOT/{name.upper()}, the raw data folder of observatory"):
        Project(name, cfg_file=False, store={"data_root": str(tmp_path)})


def test_the_cli_refuses_a_project_named_like_an_observatory(run_cli, tmp_path: Path, capsys) -> None:
    assert run_cli("--project", "ztf", size=2) == 2
    assert "raw data folder of observatory 'ztf'" in capsys.readouterr().err
    assert not (tmp_path / "data" / "ZTF").exists()


def test_names_differing_only_in_case_never_share_a_folder(archive, db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    first = _project(archive, db_url, root, "wd_case")
    first.run()
    assert product_folders.owner(root, "WD_CASE") == "wd_case"
    with pytest.raises(ConfigError, match="'WD_Case' would share DATA_ROOT/WD_CASE with project 'wd_case'"):
        _project(archive, db_url, root, "WD_Case")
    # the same name again is the same project: its folder is its own
    assert _project(archive, db_url, root, "wd_case").run().lane("ztf").outcomes["skipped"] == SIZE


def test_claims_race_to_one_winner(tmp_path: Path) -> None:
    product_folders.claim(tmp_path, "P", "p")
    product_folders.claim(tmp_path, "P", "p")  # the owner again: fine
    with pytest.raises(ConfigError, match="would share"):
        product_folders.claim(tmp_path, "P", "P")
    assert [p.name for p in (tmp_path / "P").iterdir()] == ["project.json"]  # no temporary left


def test_delete_products_deletes_nothing_outside_its_own_folder(archive, db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    gone = _project(archive, db_url, root, "gone")
    kept = [
        _project(archive, db_url, root, "gone", version_control=True),  # the same name, versioned
        _project(archive, db_url, root, "gone_b"),  # a name that starts the same
        _project(archive, db_url, root, "keep"),
    ]
    for project in (gone, *kept):
        project.run()
    (root / "notes.txt").write_text("the user's own file")
    others = {k: v for k, v in _tree(root).items() if not k.startswith("GONE/")}
    assert any(k.startswith("ZTF/") for k in others) and any(k.startswith("GONE_B/") for k in others)
    assert any(k.startswith(f"GONE_{kept[0].cfg_hash}/") for k in others)

    deleted = gone.delete_products()
    assert deleted["properties"] == SIZE
    assert not (root / "GONE").exists()
    assert _tree(root) == others  # every other file, byte for byte
