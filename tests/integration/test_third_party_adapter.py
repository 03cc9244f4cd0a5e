"""A third-party adapter runs, not just loads: its own config section, fetched through the engine."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

import aretriever.adapters as registry
from aretriever.adapters.ztf import ZtfAdapter
from aretriever.catalogs.core import GeneratedCatalog
from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.engine.summary import Outcome
from aretriever.errors import ConfigError
from aretriever.settings import Config, ZtfConfig
from aretriever.store.db import create_engine
from aretriever.testing.fake_archive import FakeArchive
from aretriever.testing.ztf_replay import ZTF_PATH


class SkyConfig(ZtfConfig):
    """The third party's own section: IRSA's parameters plus a key of its own."""

    survey_label: str = Field("sky", description="a key only this adapter has")


class SkyAdapter(ZtfAdapter):
    """An adapter from another package: asks an IRSA-like archive (the fake one) under its own name."""

    name: ClassVar[str] = "sky"
    config_model: ClassVar[type[SkyConfig]] = SkyConfig


@pytest.fixture()
def sky_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``sky`` registered as an installed package would: through the entry point group."""
    found = [EntryPoint("sky", f"{__name__}:SkyAdapter", registry.ENTRY_POINT_GROUP)]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return found if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    registry.refresh()
    yield
    registry.refresh()


def test_its_section_is_validated_by_its_config_model(sky_plugin: None) -> None:
    cfg = Config(observatories={"sky": {"base_url": "http://fake:1", "survey_label": "mine"}})
    section = cfg.observatories.section("sky")
    assert isinstance(section, SkyConfig) and section.survey_label == "mine"
    with pytest.raises(ValueError, match="survey_lable"):  # its keys are as strict as ours
        Config(observatories={"sky": {"survey_lable": "typo"}})
    assert isinstance(Config().observatories.section("sky"), SkyConfig)  # no section: its defaults


def test_a_section_for_no_registered_adapter_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'hubble'.*ztf"):
        Config(observatories={"hubble": {}})


async def test_third_party_adapter_fetches_through_the_engine(
    sky_plugin: None, db_url: str, tmp_path: Path
) -> None:
    async with FakeArchive() as fake:
        cfg = load_config(
            False,
            overrides={
                "store": {"data_root": str(tmp_path / "data"), "db_url": db_url},
                "project": {"obs_names": ["sky"]},
                "observatories": {"sky": {"base_url": fake.url, "rate_per_s": 1000, "survey_label": "S"}},
                "engine": {"analyze": False},
            },
        )
        assert cfg.observatories.section("sky").survey_label == "S"  # type: ignore[attr-defined]
        with ThreadPoolExecutor(max_workers=1) as executor:
            summary = await Engine(cfg, executor=executor).run(GeneratedCatalog(3))
    assert summary.total(Outcome.FETCHED) == 3
    assert fake.count(ZTF_PATH) == 3
    engine = create_engine(db_url)
    async with engine.connect() as conn:
        raw = (await conn.exec_driver_sql("select observatory, status from raw_photometry")).all()
        lcs = (await conn.exec_driver_sql("select distinct observatory from lightcurves")).all()
    await engine.dispose()
    assert sorted(tuple(r) for r in raw) == [("sky", "ok")] * 3
    assert [tuple(r) for r in lcs] == [("sky",)]
    assert len(list((tmp_path / "data" / "SKY").rglob("*.h5"))) >= 3  # raw files under its own name
