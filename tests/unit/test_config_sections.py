"""Observatory sections come from the adapter registry; a third-party one loads like a built-in's."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field, ValidationError

import aretriever.adapters as registry
from aretriever import settings
from aretriever.config import config_hash, load_config, public_dict, to_yaml
from aretriever.errors import ConfigError
from aretriever.lane_config import LaneConfig
from aretriever.settings import Config, ObservatoriesConfig


class SkyConfig(LaneConfig):
    """Sky survey lightcurves (a third party's section)."""

    survey_label: str = Field("sky", description="a key only this adapter has")
    depth_mag: float = Field(21.0, gt=0, description="a product parameter of its own")


class SkyAdapter:
    """An installed package's adapter: only its name and config model matter here."""

    name: ClassVar[str] = "sky"
    config_model: ClassVar[type[SkyConfig]] = SkyConfig

    def __init__(self, cfg: SkyConfig) -> None:
        self.cfg = cfg


@pytest.fixture()
def sky_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``sky`` registered through the entry point group, as an installed package would be."""
    found = [EntryPoint("sky", f"{__name__}:SkyAdapter", registry.ENTRY_POINT_GROUP)]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return found if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    for name in ("USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"ARETRIEVER_SKY_{name}", raising=False)
    registry.refresh()
    yield
    registry.refresh()


def errors_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(exc.value).splitlines()


def sky(cfg: Config) -> SkyConfig:
    section = cfg.observatories.section("sky")
    assert isinstance(section, SkyConfig)
    return section


# --- the built-ins come from the registry --------------------------------------------------------


def test_builtin_sections_are_the_registrys_config_models() -> None:
    models = registry.builtin_config_models()
    assert list(ObservatoriesConfig.model_fields) == list(models) == ["ztf", "tess", "demo"]
    for name, model in models.items():
        assert ObservatoriesConfig.model_fields[name].annotation is model
        assert registry.adapter_class_for(name).config_model is model  # the adapter agrees


def test_a_registry_entry_is_all_a_new_builtin_section_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry.Builtin(f"{__name__}:SkyAdapter", f"{__name__}:SkyConfig")
    monkeypatch.setitem(registry._BUILTIN, "sky", entry)
    fields = settings._builtin_sections()
    assert list(fields) == ["ztf", "tess", "demo", "sky"]
    model, info = fields["sky"]
    assert model is SkyConfig and info.description == "sky"  # no description of its own: the name


def test_settings_import_no_adapter() -> None:
    code = (
        "import sys, aretriever.settings as s; "
        "assert s.ObservatoriesConfig().ztf.base_url; "
        "print('pandas' in sys.modules, 'aretriever.adapters.ztf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_configs_pickle_for_the_pool() -> None:
    cfg = load_config(False, sets=["observatories.ztf.reducer.gap_days=12"])
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and type(again.observatories) is ObservatoriesConfig


# --- a third-party section, every way a config is given ------------------------------------------


def test_third_party_section_by_set(sky_plugin: None) -> None:
    cfg = load_config(False, sets=["observatories.sky.survey_label=mine", "observatories.sky.rate_per_s=2"])
    assert (sky(cfg).survey_label, sky(cfg).rate_per_s) == ("mine", 2.0)
    with pytest.raises(ConfigError) as exc:
        load_config(False, sets=["observatories.sky.survey_lable=x"])
    assert errors_of(exc)[0].startswith(
        "config: observatories.sky.survey_lable: unknown key; did you mean survey_label?"
    )
    assert errors_of(exc)[0].endswith("in --set observatories.sky.survey_lable=x")
    with pytest.raises(ConfigError) as exc:
        load_config(False, sets=["observatories.sky.depth_mag=-1"])
    assert errors_of(exc)[0].startswith("config: observatories.sky.depth_mag: Input should be greater than 0")


def test_third_party_section_in_a_yaml_file(sky_plugin: None, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("observatories:\n  sky:\n    survey_label: filed\nSKY:\n  depth_mag: 19\n")
    cfg = load_config(path)
    assert (sky(cfg).survey_label, sky(cfg).depth_mag) == ("filed", 19.0)
    path.write_text("observatories:\n  sky:\n    depth_mag: deep\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert errors_of(exc)[0].startswith("config: observatories.sky.depth_mag: Input should be a valid number")
    assert errors_of(exc)[0].endswith(f"(got 'deep') in {path}")


def test_third_party_credentials_from_environment(sky_plugin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARETRIEVER_SKY_USERNAME", "env-user")
    monkeypatch.setenv("ARETRIEVER_SKY_PASSWORD", "env-pass")
    # in obs_names without a section of its own: the section is made at load time, with them
    cfg = load_config(False, overrides={"project": {"obs_names": ["sky"]}})
    creds = sky(cfg).credentials
    assert creds is not None
    assert (creds.username, creds.password.get_secret_value()) == ("env-user", "env-pass")
    given = load_config(False, sets=["observatories.sky.credentials.username=guy"])
    given_creds = sky(given).credentials
    assert given_creds is not None and given_creds.username == "guy"  # explicit beats environment
    assert load_config(False).observatories.ztf.credentials is None


def test_third_party_seed_keywords(sky_plugin: None) -> None:
    seed = {"obs_names": ["SKY"], "SKY": {"survey_label": "seed"}, "obs_kwargs": {"rate_per_s": 3}}
    cfg = load_config(False, overrides=seed)
    assert (sky(cfg).survey_label, sky(cfg).rate_per_s) == ("seed", 3.0)
    assert cfg.observatories.ztf.rate_per_s == 3.0
    with pytest.raises(ConfigError) as exc:
        load_config(False, overrides={"obs_names": ["sky"], "obs_kwargs": {"depth": 3}})
    assert errors_of(exc)[0].startswith(
        "config: obs_kwargs.depth: unknown key for every observatory; did you mean depth_mag?"
    )


def test_obs_kwargs_leaves_an_unused_plugin_alone(sky_plugin: None) -> None:
    cfg = load_config(False, overrides={"obs_kwargs": {"rate_per_s": 3}})
    assert "sky" not in public_dict(cfg)["observatories"]
    again = load_config(False, overrides={"obs_kwargs": {"rate_per_s": 3}})
    assert config_hash(cfg, "v") == config_hash(again, "v")


def test_third_party_section_is_hashed_and_written(sky_plugin: None, tmp_path: Path) -> None:
    base = config_hash(load_config(False), "v")
    cfg = load_config(False, sets=["observatories.sky.depth_mag=20", "project.obs_names=[sky]"])
    assert config_hash(cfg, "v") != base  # a product parameter of its own counts
    before = config_hash(cfg, "v")
    cfg.observatories.section("sky")  # what the engine does: the hash does not move
    assert config_hash(cfg, "v") == before
    faster = ["observatories.sky.rate_per_s=9", "observatories.sky.depth_mag=20", "project.obs_names=[sky]"]
    assert config_hash(load_config(False, sets=faster), "v") == before  # operational: not hashed
    text = to_yaml(cfg)
    assert "\n  # Sky survey lightcurves (a third party's section).\n  sky:\n" in text
    assert "    depth_mag: 20.0  # a product parameter of its own\n" in text
    path = tmp_path / "again.yaml"
    path.write_text(text)
    assert load_config(path) == cfg


def test_third_party_errors_name_the_section_without_loading(sky_plugin: None) -> None:
    with pytest.raises(ValidationError) as exc:
        Config(observatories={"sky": {"depth_mag": 0, "rate_per_s": "fast"}})
    locs: list[Any] = sorted(err["loc"] for err in exc.value.errors())
    assert locs == [("observatories", "sky", "depth_mag"), ("observatories", "sky", "rate_per_s")]
