"""The on-disk layout: safe names, RA folders, raw and reduced paths, keys, DATA_ROOT."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aretriever.config import load_config
from aretriever.errors import StoreError
from aretriever.settings import StoreConfig
from aretriever.store import paths
from aretriever.store.locations import data_root_of, db_url_of, resolve_store

SAFE = re.compile(r"[A-Za-z0-9+\-._]+")


@pytest.mark.parametrize(
    "name",
    ["WDJ000006.33+512226.63", "J123.1-32.13", "source456", "Gaia_DR3-12345", "a" * 100],
)
def test_safe_name_keeps_ordinary_names(name: str) -> None:
    assert paths.safe_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["../../x", "a/b", "a\\b", "x" * 300, "Ωmega Cen", "nul\x00byte", "", ".", "..", ".hidden"],
)
def test_safe_name_makes_odd_names_safe(name: str) -> None:
    safe = paths.safe_name(name)
    assert SAFE.fullmatch(safe)
    assert not safe.startswith(".")
    assert safe not in (".", "..")
    assert len(safe) <= 120
    assert safe != name
    assert re.search(r"-[0-9a-f]{8}$", safe)


def test_safe_name_distinguishes_names_that_clean_alike() -> None:
    names = ["a/b", "a\\b", "a b", "a_b", "a:b", "x" * 300, "x" * 301, "", ".", ".."]
    assert len({paths.safe_name(n) for n in names}) == len(names)


@given(st.text())
def test_safe_name_is_always_safe(name: str) -> None:
    safe = paths.safe_name(name)
    assert SAFE.fullmatch(safe)
    assert not safe.startswith(".")
    assert len(safe) <= 120


@given(st.lists(st.text(max_size=150), unique=True, max_size=30))
def test_safe_name_is_injective_on_samples(names: list[str]) -> None:
    assert len({paths.safe_name(n) for n in names}) == len(names)


@pytest.mark.parametrize(
    ("ra", "folder"),
    [(12.7, "RA012"), (0.0, "RA000"), (359.99, "RA359"), (360.0, "RA000"), (-0.5, "RA359"),
     (-1e-20, "RA000"), (725.3, "RA005"), (123.0, "RA123")],
)  # fmt: skip
def test_ra_folder(ra: float, folder: str) -> None:
    assert paths.ra_folder(ra) == folder


@pytest.mark.parametrize("ra", [float("nan"), float("inf")])
def test_ra_folder_refuses_non_finite(ra: float) -> None:
    with pytest.raises(StoreError, match="RA"):
        paths.ra_folder(ra)


def test_raw_relpath() -> None:
    assert paths.raw_relpath("ztf", "J123.1-32.13", 123.4) == ("ZTF/RA123/ZTF_photometry_J123.1-32.13.h5")
    assert paths.raw_relpath("tess", "x", 1.0, "images") == "TESS/RA001/TESS_images_x.h5"


def test_raw_relpath_of_a_hostile_name_stays_in_its_folder() -> None:
    rel = paths.raw_relpath("ztf", "../../etc/passwd", 5.0)
    assert rel.startswith("ZTF/RA005/ZTF_photometry_")
    assert rel.count("/") == 2
    assert ".." not in rel.split("/")


def test_product_folder() -> None:
    assert paths.product_folder("test_project", None) == "TEST_PROJECT"
    assert paths.product_folder("test_project", "") == "TEST_PROJECT"
    assert paths.product_folder("wd", "ab12cd") == "WD_ab12cd"


def test_reduced_relpath() -> None:
    folder = paths.product_folder("test_project", None)
    assert paths.reduced_relpath(folder, "demo", "source456", 123.9) == (
        "TEST_PROJECT/RA123/DEMO_photometry_source456_reduced.h5"
    )


def test_keys() -> None:
    assert paths.raw_key("J123.1-32.13") == "J123.1-32.13"
    assert paths.reduction_key("J123.1-32.13", 1, 3) == "J123.1-32.13_reduction_01_of_03"
    assert paths.reduction_key("s", 7, 120) == "s_reduction_007_of_120"
    assert paths.raw_key("a/b") == paths.safe_name("a/b")


@pytest.mark.parametrize(("number", "total"), [(0, 3), (4, 3), (1, 0)])
def test_reduction_key_refuses_numbers_out_of_range(number: int, total: int) -> None:
    with pytest.raises(StoreError):
        paths.reduction_key("s", number, total)


def test_reduction_keys_sort_in_order() -> None:
    keys = [paths.reduction_key("s", n, 12) for n in range(1, 13)]
    assert sorted(keys) == keys


def test_resolve_joins_inside_root(tmp_path: Path) -> None:
    assert paths.resolve(tmp_path, "ZTF/RA001/f.h5") == tmp_path / "ZTF/RA001/f.h5"


@pytest.mark.parametrize("rel", ["../x.h5", "ZTF/../../x.h5", "/etc/passwd", "", "."])
def test_resolve_refuses_escapes(tmp_path: Path, rel: str) -> None:
    with pytest.raises(StoreError, match="outside DATA_ROOT"):
        paths.resolve(tmp_path, rel)


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.DATA_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_root_of(StoreConfig()) == tmp_path / "data"
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert data_root_of(StoreConfig()) == tmp_path / "env"
    assert data_root_of(StoreConfig(data_root=Path("explicit"))) == tmp_path / "explicit"
    # the resolved config carries it: no process-wide setter is left to win over it
    assert load_config(False).store.data_root == tmp_path / "env"
    assert not hasattr(paths, "set_data_root") and not hasattr(paths, "data_root")


def test_data_root_is_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.DATA_ROOT_ENV, "relative/dir")
    assert data_root_of(StoreConfig()).is_absolute()


def test_the_default_db_url_is_resolved_once_with_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARETRIEVER_DB_URL", raising=False)
    cfg = load_config(False, sets=[f"store.data_root={tmp_path}"])
    assert cfg.store.db_url == f"sqlite+aiosqlite:///{tmp_path}/aretriever.sqlite"
    monkeypatch.setenv("ARETRIEVER_DB_URL", "postgres://u@h/d")
    from_env = load_config(False).store
    assert from_env.db_url == "postgres://u@h/d" and db_url_of(from_env) == "postgresql+asyncpg://u@h/d"
    assert resolve_store(cfg.store) == cfg.store  # idempotent
