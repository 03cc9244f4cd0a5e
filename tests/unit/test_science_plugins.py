"""Custom science classes as the seed's users write them: their own parameters, the seed's names."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aretriever.config import config_hash, load_config
from aretriever.errors import ConfigError
from aretriever.science.analysis import analysis_for
from aretriever.settings import AnalysisConfig, FinderConfig

CUSTOM = """
from __future__ import annotations

from pydantic import Field

from aretriever.science.analysis import Analysis
from aretriever.science.finder import Finder
from aretriever.science.quality import QualityChecker
from aretriever.settings import Part


class KernelParameters(Part):
    num_kernels: int = Field(10, ge=1, description="number of kernels")


class NewAnalysis(Analysis):
    parameters = KernelParameters


class WidthParameters(Part):
    min_points: int = Field(1, ge=1, description="points an event needs")


class WideFinder(Finder):
    parameters = WidthParameters

    def detect(self, lc):  # the seed's name for find
        return [e for e in Finder.find(self, lc) if e.quality["num_points"] >= self.cfg.min_points]


class SeedHistograms(Analysis):
    def update_histograms(self, lightcurves, source):
        pass


class SeedSignature(Analysis):
    def analyze_photometry(self, source):
        return []


class BothNames(Analysis):
    def analyze_photometry(self, target, lightcurves):
        return super().analyze(target, lightcurves)

    def analyze(self, target, lightcurves):
        return super().analyze(target, lightcurves)


class OwnCheck(QualityChecker):
    def check(self, lc):
        return lc
"""


@pytest.fixture
def custom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "t12_custom.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "t12_custom"
    sys.modules.pop("t12_custom", None)


def _load(**kwargs: object) -> AnalysisConfig:
    return load_config(False, project="plugins", overrides=kwargs).analysis


def test_declared_parameters_are_accepted_filled_and_hashed(custom: str) -> None:
    given = load_config(
        False,
        project="plugins",
        overrides={
            "analysis_module": custom,
            "analysis_class": "NewAnalysis",
            "analysis_kwargs": {"num_kernels": 20},
        },
    )
    default = load_config(
        False, project="plugins", overrides={"analysis_module": custom, "analysis_class": "NewAnalysis"}
    )
    assert given.analysis.num_kernels == 20 and default.analysis.num_kernels == 10  # the declared default
    assert config_hash(given, "v") != config_hash(default, "v")
    assert analysis_for(given.analysis).cfg.num_kernels == 20


def test_a_config_file_section_reaches_the_class(custom: str, tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(
        f"project:\n  analysis_module: {custom}\n  analysis_class: NewAnalysis\n"
        "analysis:\n  num_kernels: 30\n  finder_module: " + custom + "\n  finder_class: WideFinder\n"
        "  finder:\n    min_points: '3'\n"
    )
    cfg = load_config(path, project="plugins").analysis
    assert cfg.num_kernels == 30 and cfg.finder.min_points == 3  # validated by the declared model
    built = analysis_for(cfg)
    assert built.cfg.num_kernels == 30 and built.finder.cfg.min_points == 3


def test_an_undeclared_key_is_refused_naming_key_class_and_parameters(custom: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(analysis_module=custom, analysis_class="NewAnalysis", analysis_kwargs={"num_kernel": 20})
    text = str(err.value)
    assert "analysis.num_kernel:" in text and f"{custom}.NewAnalysis has no parameter 'num_kernel'" in text
    assert "its own: num_kernels" in text and "num_injections" in text
    with pytest.raises(
        ConfigError, match=r"analysis\.num_kernels: Input should be greater than or equal to 1"
    ):
        _load(analysis_module=custom, analysis_class="NewAnalysis", analysis_kwargs={"num_kernels": 0})
    with pytest.raises(ConfigError, match=r"analysis.finder.num_kernels: .*\.WideFinder has no parameter"):
        _load(
            finder_module=custom,
            finder_class="WideFinder",
            analysis_kwargs={"finder_kwargs": {"num_kernels": 2}},
        )


def test_the_default_classes_stay_strict() -> None:
    with pytest.raises(ConfigError, match=r"analysis.num_kernels: unknown key"):
        _load(analysis_kwargs={"num_kernels": 20})
    with pytest.raises(ConfigError, match=r"analysis.finder.min_points: unknown key"):
        _load(analysis_kwargs={"finder_kwargs": {"min_points": 2}})
    with pytest.raises(ValueError, match=r"finder\.snr_treshold"):
        AnalysisConfig(finder=FinderConfig(snr_treshold=3.0))


def test_a_seed_method_name_is_called_as_our_step(custom: str) -> None:
    cfg = _load(
        finder_module=custom, finder_class="WideFinder", analysis_kwargs={"finder_kwargs": {"min_points": 2}}
    )
    finder = analysis_for(cfg).finder
    assert type(finder).find is type(finder).detect  # Analysis calls find; the seed's detect runs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"analysis_class": "SeedHistograms"}, r"SeedHistograms.update_histograms is a seed .* never called"),
        ({"analysis_class": "SeedSignature"}, r"analyze_photometry is called as analyze: write it as"),
        ({"analysis_class": "BothNames"}, r"BothNames.analyze_photometry and analyze are one step"),
        ({"quality_class": "OwnCheck"}, r"OwnCheck.check is a seed .*override it"),
    ],
)
def test_a_seed_method_without_equivalent_fails_at_load(
    custom: str, kwargs: dict[str, str], message: str
) -> None:
    module = "quality_module" if "quality_class" in kwargs else "analysis_module"
    with pytest.raises(ConfigError, match=message):
        _load(**{module: custom}, **kwargs)
