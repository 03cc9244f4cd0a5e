"""Tests of aretriever.config: files, precedence, seed keywords, --set, errors, hash, YAML, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from aretriever import config_output, config_seed
from aretriever.cli.main import main
from aretriever.config import (
    code_version,
    config_hash,
    from_seed_kwargs,
    load_config,
    public_dict,
    to_yaml,
)
from aretriever.errors import ConfigError
from aretriever.settings import Config

REPO = Path(__file__).resolve().parents[2]
SEED_EXAMPLE: dict[str, Any] = {  # the seed README's Project(...) example, verbatim
    "name": "default_test",
    "description": "my project description",
    "version_control": False,
    "obs_names": ["ZTF"],
    "analysis_kwargs": {
        "num_injections": 3,
        "finder_kwargs": {"snr_threshold": 7.5},
        "finder_module": "src.finder",
        "finder_class": "Finder",
    },
    "analysis_module": "src.analysis",
    "analysis_class": "Analysis",
    "catalog_kwargs": {"default": "WD"},
    "obs_kwargs": {"reducer": {"radius": 3, "gap": 40}},
    "ZTF": {"credentials": {"username": "guy", "password": "12345"}},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's configs folder or ARETRIEVER_* variables."""
    for name in list(os.environ):
        if name.startswith("ARETRIEVER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def get(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def errors_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(exc.value).splitlines()


# --- precedence ----------------------------------------------------------------------------------

SNR = "analysis.finder.snr_threshold"
RATE = "observatories.ztf.rate_per_s"
ZTF_RED = "observatories.ztf.reducer"
VC = "project.version_control"


def snr(value: float) -> dict[str, Any]:
    return {"analysis": {"finder": {"snr_threshold": value}}}


def gen(**section: Any) -> dict[str, Any]:
    return {"obs_kwargs": section}


def ztf(**section: Any) -> dict[str, Any]:
    return {"ZTF": section}


def proj(**section: Any) -> dict[str, Any]:
    return {"project": section}


PRECEDENCE = [
    # (file, overrides, sets, dotted path, expected)
    ({}, {}, [], SNR, 5.0),
    (snr(6), {}, [], SNR, 6.0),
    (snr(6), snr(7), [], SNR, 7.0),
    (snr(6), {"analysis_kwargs": {"snr_threshold": 7}}, [f"{SNR}=8"], SNR, 8.0),
    (snr(6), {}, [], "analysis.finder.sidebands", -2.0),  # the rest keeps its defaults
    # obs_kwargs of the file < of the arguments < specific section of the file < of the arguments
    (gen(rate_per_s=2), {}, [], RATE, 2.0),
    (gen(rate_per_s=2), {}, [], "observatories.tess.rate_per_s", 2.0),
    (gen(rate_per_s=2), gen(rate_per_s=3), [], RATE, 3.0),
    (gen(rate_per_s=2) | ztf(rate_per_s=4), gen(rate_per_s=3), [], RATE, 4.0),
    ({"observatories": {"ztf": {"rate_per_s": 4}}}, gen(rate_per_s=3), [], RATE, 4.0),
    (ztf(rate_per_s=4), gen(rate_per_s=3) | ztf(rate_per_s=5), [], RATE, 5.0),
    ({"ztf": {"rate_per_s": 4}}, ztf(rate_per_s=5), [f"{RATE}=6"], RATE, 6.0),
    # nested sections merge key by key across layers
    (gen(reducer={"radius": 4}), ztf(reducer={"gap": 50}), [], f"{ZTF_RED}.radius_arcsec", 4.0),
    (gen(reducer={"radius": 4}), ztf(reducer={"gap": 50}), [], f"{ZTF_RED}.gap_days", 50.0),
    (gen(reducer={"radius": 4}), {}, [], f"{ZTF_RED}.drop_bad", True),
    # an alias at a higher level beats the field name at a lower one, and the other way round
    (ztf(reducer={"gap_days": 10}), ztf(reducer={"gap": 20}), [], f"{ZTF_RED}.gap_days", 20.0),
    (proj(vc=True), proj(version_control=False), [], VC, False),
    (proj(version_control=False), {"vc": True}, [], VC, True),
    (proj(vc=True), {}, [f"{VC}=false"], VC, False),
]


@pytest.mark.parametrize(("file", "overrides", "sets", "dotted", "expected"), PRECEDENCE)
def test_precedence(
    tmp_path: Path,
    file: dict[str, Any],
    overrides: dict[str, Any],
    sets: list[str],
    dotted: str,
    expected: object,
) -> None:
    path = write(tmp_path / "p.yaml", file)
    cfg = load_config(path, overrides=overrides, sets=sets)
    assert get(cfg, dotted) == expected


def test_later_assignment_is_validated() -> None:
    cfg = load_config(False)
    cfg.observatories.ztf.rate_per_s = 3
    assert cfg.observatories.ztf.rate_per_s == 3.0
    with pytest.raises(ValidationError):
        cfg.observatories.ztf.rate_per_s = -1
    assert cfg.observatories.ztf.rate_per_s == 3.0


def test_overrides_accept_model_instances() -> None:
    from aretriever.settings import FinderConfig

    cfg = load_config(False, overrides={"analysis": {"finder": FinderConfig(snr_threshold=9)}})
    assert cfg.analysis.finder.snr_threshold == 9.0
    assert cfg.analysis.finder.sidebands == -2.0


# --- finding files -------------------------------------------------------------------------------


def test_default_file_is_configs_of_the_project(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "wd.yaml", {"catalog": {"default": "wd"}})
    assert load_config(project="wd").catalog.default == "wd"
    assert load_config(project="wd").project.name == "wd"
    assert load_config(overrides={"name": "wd"}).catalog.default == "wd"
    assert load_config(overrides={"project": {"name": "wd"}}).catalog.default == "wd"
    assert load_config(project="other").catalog.default is None  # absent: silently defaults


def test_default_file_named_default(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "default.yaml", {"engine": {"queue_size": 7}})
    assert load_config().engine.queue_size == 7
    assert load_config(False).engine.queue_size == 256  # cfg_file=False: no file at all


def test_configs_dir_from_argument_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "elsewhere" / "wd.yaml", {"engine": {"queue_size": 9}})
    assert load_config(project="wd", configs_dir=tmp_path / "elsewhere").engine.queue_size == 9
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(tmp_path / "elsewhere"))
    assert load_config(project="wd").engine.queue_size == 9
    assert load_config("wd.yaml").engine.queue_size == 9  # a bare name is looked up there too


def test_explicit_file_bare_relative_and_absolute(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "a.yaml", {"engine": {"queue_size": 1}})
    write(tmp_path / "other" / "a.yaml", {"engine": {"queue_size": 2}})
    write(tmp_path / "a.yaml", {"engine": {"queue_size": 3}})
    assert load_config("a.yaml").engine.queue_size == 1
    assert load_config("other/a.yaml").engine.queue_size == 2
    assert load_config("./a.yaml").engine.queue_size == 3
    assert load_config(tmp_path / "other" / "a.yaml").engine.queue_size == 2


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such config file: configs/nope\.yaml"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "x" / "nope.yaml"))):
        load_config(tmp_path / "x" / "nope.yaml")


def test_cfg_key_picks_a_sub_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path / "multi.yaml",
        {
            "small": {"catalog": {"default": "test", "test_size": 5}},
            "big": {"catalog": {"default": "wd"}},
        },
    )
    assert load_config(path, "small").catalog.test_size == 5
    assert load_config(path, "big").catalog.default == "wd"
    with pytest.raises(ConfigError) as exc:
        load_config(path, "medium")
    assert str(exc.value) == f"config: cfg_key 'medium' not in {path} (the file has: big, small)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("project: [unclosed\n", r"p\.yaml is not valid YAML: .*line 2"),
        ("- a\n- b\n", r"p\.yaml: expected a mapping of config parts \(got list\)"),
        ("just a string\n", r"p\.yaml: expected a mapping of config parts \(got str\)"),
    ],
)
def test_bad_yaml_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "p.yaml", text))


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "p.yaml", "# nothing yet\n")) == load_config(False)


def test_example_config_loads() -> None:
    cfg = load_config(REPO / "configs" / "example.yaml")
    assert cfg.project.name == "example"
    assert cfg.catalog.default == "wd"
    assert cfg.observatories.ztf.reducer.gap_days == 40.0
    assert cfg.observatories.ztf.rate_per_s == 4.0  # the ZTF section beats obs_kwargs
    assert cfg.observatories.tess.rate_per_s == 2.0  # obs_kwargs
    assert cfg.analysis.finder.snr_threshold == 5.0


# --- aliases and seed keywords -------------------------------------------------------------------


def test_seed_aliases_in_file_and_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        {
            "project": {"vc": True},
            "ZTF": {"cone_search_radius": 4, "minimal_declination": -20, "reducer": {"radius": 2}},
        },
    )
    cfg = load_config(path, overrides={"ZTF": {"reducer": {"gap": 60}}})
    assert cfg.project.version_control is True
    ztf = cfg.observatories.ztf
    assert (ztf.cone_search_radius_arcsec, ztf.minimal_declination_deg) == (4.0, -20.0)
    assert (ztf.reducer.radius_arcsec, ztf.reducer.gap_days) == (2.0, 60.0)
    assert (
        load_config(False, sets=["observatories.ztf.reducer.gap=10"]).observatories.ztf.reducer.gap_days
        == 10.0
    )


def test_seed_readme_example() -> None:
    cfg = load_config(False, overrides=SEED_EXAMPLE)
    assert cfg.project.name == "default_test"
    assert cfg.project.description == "my project description"
    assert cfg.project.version_control is False
    assert cfg.project.obs_names == ["ztf"]
    assert cfg.analysis.num_injections == 3
    assert cfg.analysis.finder.snr_threshold == 7.5
    assert (cfg.analysis.finder_module, cfg.analysis.analysis_module) == (
        "src.finder",
        "src.analysis",
    )
    assert cfg.catalog.default == "WD"
    assert cfg.observatories.ztf.reducer.radius_arcsec == 3.0
    assert cfg.observatories.ztf.reducer.gap_days == 40.0
    creds = cfg.observatories.ztf.credentials
    assert creds is not None
    assert (creds.username, creds.password.get_secret_value()) == ("guy", "12345")
    assert cfg.observatories.tess.credentials is None
    assert cfg.observatories.tess.reducer == Config().observatories.tess.reducer  # no radius there


def test_from_seed_kwargs_shape() -> None:
    native = from_seed_kwargs(
        name="p",
        vc=True,
        obs_names="TESS",
        catalog_kwargs={"default": "WD"},
        analysis_kwargs={
            "snr_threshold": 8.5,
            "seed": 3,
            "quality_kwargs": {"drop_flagged": False},
            "histogram_kwargs": {"mag_bins": [14, 22, 1]},
        },
        quality_class="MyQuality",
        obs_kwargs={"rate_per_s": 1},
        TESS={"timeout_s": 5},
        engine={"workers": 2},
    )
    assert native == {
        "project": {"name": "p", "vc": True, "obs_names": ["tess"]},
        "catalog": {"default": "WD"},
        "analysis": {
            "finder": {"snr_threshold": 8.5},
            "simulator": {"seed": 3},
            "quality": {"drop_flagged": False},
            "histograms": {"mag_bins": [14, 22, 1]},
            "quality_class": "MyQuality",
        },
        "obs_kwargs": {"rate_per_s": 1},
        "observatories": {"tess": {"timeout_s": 5}},
        "engine": {"workers": 2},
    }


def test_project_level_analysis_code_in_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_code.py").write_text(
        "from aretriever.science.analysis import Analysis\n\nclass MyAnalysis(Analysis):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    project = {"name": "x", "analysis_module": "my_code", "analysis_class": "MyAnalysis"}
    cfg = load_config(write(tmp_path / "p.yaml", {"project": project}))
    assert (cfg.project.name, cfg.analysis.analysis_class) == ("x", "MyAnalysis")


def test_a_custom_class_that_cannot_load_fails_at_load_time(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", {"project": {"name": "x", "analysis_class": "MyAnalysis"}})
    with pytest.raises(ConfigError, match=r"analysis\.analysis_class: module 'aretriever\.science\.analysis' has no"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"analysis\.finder_class: cannot import module 'nowhere'"):
        load_config(False, sets=["analysis.finder_module=nowhere"])


def test_flat_analysis_key_owned_by_two_sub_models_is_ambiguous() -> None:
    class A(BaseModel):
        x: int = 0

    class B(BaseModel):
        x: int = 0
        y: int = 0

    class Outer(BaseModel):
        a: A = Field(default_factory=A)
        b: B = Field(default_factory=B)

    assert config_seed._route(Outer, "y", "analysis_kwargs") == ("b", "y")
    with pytest.raises(ConfigError, match=r"analysis_kwargs\.x: ambiguous; a parameter of a and b"):
        config_seed._route(Outer, "x", "analysis_kwargs")


def test_flat_analysis_key_owned_by_nobody_is_unknown() -> None:
    with pytest.raises(ConfigError, match=r"^config: analysis\.num_kernels: unknown key"):
        load_config(False, overrides={"analysis_kwargs": {"num_kernels": 20}})


# --- errors --------------------------------------------------------------------------------------

ZTF_KEYS = (
    "backoff_base_s, backoff_max_s, bad_catflags_mask, base_url, collection, "
    "cone_search_radius_arcsec, credentials, hedge_after_p95, hedge_min_answers, limiting_magnitude, "
    "max_attempts, max_body_bytes, "
    "max_concurrency, max_retry_after_s, minimal_declination_deg, rate_per_s, reducer, timeout_s"
)


def test_unknown_key_names_path_suggestion_allowed_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", {"ZTF": {"ratelimit": 3}})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert errors_of(exc) == [
        f"config: observatories.ztf.ratelimit: unknown key; did you mean rate_per_s? "
        f"(allowed: {ZTF_KEYS}) in {path}"
    ]


def test_unknown_top_level_key_without_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(False, overrides={"zzz": 1})
    allowed = "analysis, catalog, daemon, engine, observatories, project, store"
    assert errors_of(exc) == [f"config: zzz: unknown key (allowed: {allowed})"]


def test_errors_under_a_cfg_key_name_it(tmp_path: Path) -> None:
    path = write(tmp_path / "multi.yaml", {"small": {"engine": {"workers": 0}}})
    with pytest.raises(ConfigError) as exc:
        load_config(path, "small")
    assert errors_of(exc) == [
        f"config: engine.workers: Input should be greater than or equal to 1 (got 0) in {path} [small]"
    ]


def test_wrong_value_names_path_value_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "configs" / "wd.yaml", {"analysis": {"finder": {"snr_threshold": -5}}})
    with pytest.raises(ConfigError) as exc:
        load_config(project="wd")
    assert errors_of(exc) == [
        "config: analysis.finder.snr_threshold: Input should be greater than 0 (got -5) in configs/wd.yaml"
    ]
    assert path.is_file()


def test_every_error_of_one_validation_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        {
            "catalog": {"chunk_rows": "many"},
            "obs_kwargs": {"reducer": {"gapp": 3}},
            "analysis": {"histograms": {"snr_bins": [1, "x", 2]}},
        },
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, overrides={"engine": {"workers": 0}}, sets=["store.db_batch_rows=-1"])
    lines = errors_of(exc)
    assert len(lines) == 5, lines
    assert lines[0].startswith(
        "config: obs_kwargs.reducer.gapp: unknown key for every observatory; "
        "did you mean gap? (allowed: drop_bad, flux_column, gap_days"
    )
    assert lines[0].endswith(f"in {path}")
    assert (
        "config: catalog.chunk_rows: Input should be a valid integer, unable to parse string as an "
        f"integer (got 'many') in {path}" in lines
    )
    assert (
        f"config: analysis.histograms.snr_bins[1]: Input should be a valid number, unable to parse "
        f"string as a number (got 'x') in {path}" in lines
    )
    assert "config: engine.workers: Input should be greater than or equal to 1 (got 0)" in lines
    assert (
        "config: store.db_batch_rows: Input should be greater than or equal to 1 (got -1) "
        "in --set store.db_batch_rows=-1" in lines
    )


def test_generic_value_error_points_at_obs_kwargs(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", {"obs_kwargs": {"timeout_s": 0}})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert (
        f"config: observatories.tess.timeout_s: Input should be greater than 0 (got 0) "
        f"in {path} (obs_kwargs)" in errors_of(exc)
    )


def test_obs_kwargs_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^config: obs_kwargs: must be a mapping \(got 3\)$"):
        load_config(False, overrides={"obs_kwargs": 3})


def test_secret_values_are_masked_in_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(False, overrides={"ZTF": {"credentials": {"password": 918273}}})
    assert errors_of(exc) == [
        "config: observatories.ztf.credentials.password: Input should be a valid string (got ***)"
    ]
    with pytest.raises(ConfigError) as exc:
        load_config(False, sets=["observatories.ztf.credentials.password=[918273]"])
    assert "918273" not in str(exc.value)
    assert str(exc.value).endswith("(got ***) in --set observatories.ztf.credentials.password=***")
    with pytest.raises(ConfigError) as exc:
        load_config(False, sets=["observatories.ztf.credentials.password=[918273,"])
    assert "918273" not in str(exc.value)


# --- --set ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dotted", "expected"),
    [
        ("engine.queue_size=3", "engine.queue_size", 3),
        ("engine.verify=true", "engine.verify", True),
        ("engine.workers=null", "engine.workers", None),
        ("project.obs_names=[ztf, tess]", "project.obs_names", ["ztf", "tess"]),
        (
            "observatories.ztf.base_url=http://127.0.0.1:8080",
            "observatories.ztf.base_url",
            "http://127.0.0.1:8080",
        ),
        (" project.description = a=b ", "project.description", "a=b"),
        ("catalog.columns.mag=", "catalog.columns.mag", None),
    ],
)
def test_set_values_are_yaml(text: str, dotted: str, expected: object) -> None:
    assert get(load_config(False, sets=[text]), dotted) == expected


@pytest.mark.parametrize("text", ["engine.queue_size", "=3", "engine..queue_size=3", " . =1"])
def test_malformed_set_is_named(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(False, sets=[text])
    assert str(exc.value) == f"config: --set {text!r}: expected dotted.path=value"


def test_set_with_unknown_path_or_bad_yaml() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(False, sets=["engine.queue=3"])
    assert errors_of(exc)[0].startswith("config: engine.queue: unknown key; did you mean queue_size?")
    assert errors_of(exc)[0].endswith("in --set engine.queue=3")
    with pytest.raises(ConfigError, match=r"--set 'engine\.workers=\[1,': not valid YAML"):
        load_config(False, sets=["engine.workers=[1,"])


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARETRIEVER_ZTF_USERNAME", "env-user")
    monkeypatch.setenv("ARETRIEVER_ZTF_PASSWORD", "env-pass")
    cfg = load_config(False)
    creds = cfg.observatories.ztf.credentials
    assert creds is not None
    assert (creds.username, creds.password.get_secret_value()) == ("env-user", "env-pass")
    assert cfg.observatories.tess.credentials is None
    given = load_config(False, overrides={"ZTF": {"credentials": {"username": "guy"}}})
    assert given.observatories.ztf.credentials is not None
    assert given.observatories.ztf.credentials.username == "guy"  # explicit beats environment


# --- hash and version ----------------------------------------------------------------------------

HASH_SCRIPT = (
    "from aretriever.config import config_hash, load_config\n"
    "print(config_hash(load_config(False, overrides={'analysis_kwargs': {'snr_threshold': 6.5}})))"
)


def test_hash_is_stable_across_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARETRIEVER_")}
    env["PYTHONHASHSEED"] = "12345"  # another dict/set order than this process, most likely
    out = subprocess.run(
        [sys.executable, "-c", HASH_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    cfg = load_config(False, overrides={"analysis_kwargs": {"snr_threshold": 6.5}})
    assert out.stdout.strip() == config_hash(cfg)
    assert re.fullmatch(r"[0-9a-f]{64}", config_hash(cfg))


def test_hash_follows_products_not_operations_or_secrets() -> None:
    base = config_hash(load_config(False), "v1")
    assert config_hash(load_config(False), "v1") == base
    assert config_hash(load_config(False), "v2") != base
    for product in [
        "analysis.finder.snr_threshold=6",
        "observatories.ztf.reducer.gap=41",
        "project.obs_names=[tess]",
        "catalog.default=wd",
    ]:
        assert config_hash(load_config(False, sets=[product]), "v1") != base, product
    for operational in [
        "observatories.ztf.rate_per_s=1",
        "observatories.tess.base_url=http://x",
        "store.data_root=/tmp/elsewhere",
        "engine.workers=3",
        "catalog.chunk_rows=9",
    ]:
        assert config_hash(load_config(False, sets=[operational]), "v1") == base, operational
    secret = load_config(False, overrides={"ZTF": {"credentials": {"username": "u", "password": "p"}}})
    assert config_hash(secret, "v1") == base


def test_hash_input_leaves_out_secrets_and_operational_fields() -> None:
    cfg = load_config(False, overrides=SEED_EXAMPLE)
    hashed = json.dumps(config_output._dump(cfg, operational=False))
    assert "12345" not in hashed and "guy" not in hashed and "credentials" not in hashed
    assert "rate_per_s" not in hashed and "data_root" not in hashed and "snr_threshold" in hashed


def test_code_version_is_the_git_commit() -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert code_version() == head.stdout.strip()
    assert code_version() is code_version()  # cached


# --- public_dict and to_yaml ---------------------------------------------------------------------


def test_public_dict_is_json_and_has_no_secrets() -> None:
    data = public_dict(load_config(False, overrides=SEED_EXAMPLE, sets=["store.data_root=/d"]))
    text = json.dumps(data)
    assert "12345" not in text and "credentials" not in text
    assert data["store"]["data_root"] == "/d"
    assert data["observatories"]["ztf"]["rate_per_s"] == 5.0  # operational fields stay here


def test_to_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        False,
        overrides=SEED_EXAMPLE,
        sets=[
            "project.description='a: b # not a comment'",
            "store.data_root=/data/x",
            "observatories.ztf.collection=ztf_dr23",
            "catalog.columns.mag=null",
            "observatories.demo.filters=[g, 'yes', '1', \"two\\nlines\"]",
            "project.name=ünï",
        ],
    )
    for comments in (True, False):
        text = to_yaml(cfg, comments=comments)
        assert "12345" not in text and "password" not in text
        again = load_config(write(tmp_path / f"{comments}.yaml", text))
        assert again.observatories.ztf.credentials is None  # credentials are never written
        again.observatories.ztf.credentials = cfg.observatories.ztf.credentials
        assert again == cfg


def test_to_yaml_comments_describe_fields() -> None:
    text = to_yaml(load_config(False))
    assert "  snr_threshold: 5.0  # a peak must exceed this S/N\n" in text
    assert "\n# S/N analysis, quality cuts, finder, simulator and histograms.\nanalysis:\n" in text
    assert (
        "    # credentials: never written; give them in a private file or "
        "$ARETRIEVER_ZTF_USERNAME/_PASSWORD\n" in text
    )
    assert "#" not in to_yaml(load_config(False), comments=False).replace("# ", "")


# --- command line --------------------------------------------------------------------------------


def test_cli_show_and_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "configs" / "wd.yaml", {"catalog": {"default": "wd"}})
    assert main(["config", "show", "--project", "wd", "--set", "engine.workers=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["catalog"]["default"], shown["engine"]["workers"]) == ("wd", 3)
    assert main(["config", "show", "--no-config", "--no-comments"]) == 0
    out = capsys.readouterr().out
    assert "#" not in out and yaml.safe_load(out) == public_dict(load_config(False))
    assert main(["config", "hash", "--config", "wd.yaml", "--cfg-key", "small"]) == 2
    assert (
        capsys.readouterr().err == "error: config: cfg_key 'small' not in configs/wd.yaml (the file has: catalog)\n"
    )
    assert main(["config", "hash", "--config", "wd.yaml", "--cfg-key", "catalog"]) == 2
    assert capsys.readouterr().err.startswith("error: config: default: unknown key (allowed: analysis, catalog,")
    assert main(["config", "hash", "--project", "wd"]) == 0
    assert capsys.readouterr().out.strip() == config_hash(load_config(project="wd"))


def test_cli_bad_config_exits_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "analysis.finder.snr_threshold=-5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: config: analysis.finder.snr_threshold: Input should be greater than 0 "
        "(got -5) in --set analysis.finder.snr_threshold=-5\n"
    )
    assert main(["config", "show", "--config", "missing.yaml"]) == 2
    assert capsys.readouterr().err == "error: config: no such config file: configs/missing.yaml\n"


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([], 2),
        (["config"], 2),
        (["config", "bogus"], 2),
        (["--help"], 0),
        (["config", "show", "-h"], 0),
    ],
)
def test_cli_usage_exit_codes(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert "usage:" in captured.out + captured.err


def test_python_dash_m_config_show(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARETRIEVER_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aretriever.config",
            "show",
            "--set",
            "observatories.ztf.base_url=http://127.0.0.1:8080",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stderr) == (0, "")
    assert yaml.safe_load(out.stdout)["observatories"]["ztf"]["base_url"] == "http://127.0.0.1:8080"
    assert "# IRSA base URL" in out.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "analysis.simulator.min_width_days=20",
            r"analysis\.simulator: .*min_width_days 20\.0 > max_width_days 10\.0",
        ),
        ("analysis.simulator.max_amplitude_mag=-3", r"min_amplitude_mag -2\.0 > max_amplitude_mag -3\.0"),
        ("analysis.histograms.snr_bins=[1,0,1]", r"analysis\.histograms\.snr_bins: .*low < high"),
        ("analysis.histograms.mag_bins=[15,21,0]", r"analysis\.histograms\.mag_bins: .*step > 0"),
    ],
)
def test_science_ranges_are_checked_when_loading(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(False, sets=[setting])
