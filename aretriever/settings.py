"""Typed parameters for every part of aretriever.

Each part has one pydantic model; every field has a type, a default and a one-line description,
and units are part of the name (``timeout_s``, ``gap_days``, ``radius_arcsec``). Unknown keys are
rejected. Seed (AstroRetriever) names are accepted as aliases where they were unambiguous
(``vc``, ``gap``, ``radius``, ``cone_search_radius``...).

Loading, precedence, ``--set`` overrides and the config hash live in :mod:`aretriever.config`.
This module holds the catalog, analysis and project parts and the whole :class:`Config`; the
observatory sections come from the adapter registry (the built-ins' models beside their adapters,
``adapters/*_config.py``), the engine, store and daemon parts from :mod:`aretriever.settings_runtime`.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails

# The registry names the sections a config may have; it imports no adapter for that.
from aretriever.adapters import adapter_class_for, builtin_config_models
from aretriever.adapters.demo_config import DemoConfig
from aretriever.adapters.tess_config import TessConfig, TessReducerConfig
from aretriever.adapters.ztf_config import ZtfConfig, ZtfReducerConfig
from aretriever.declared import find_class, parameter_errors
from aretriever.errors import ConfigError
from aretriever.lane_config import OPERATIONAL, Credentials, LaneConfig, Part
from aretriever.settings_runtime import DaemonConfig, EngineConfig, StoreConfig

# The lane's and the built-ins' models are defined beside the adapters (aretriever.lane_config,
# adapters/*_config.py), the engine's, store's and daemon's in aretriever.settings_runtime; they
# are re-exported here, where callers have always found them.
__all__ = [
    "OPERATIONAL",
    "AnalysisConfig",
    "CatalogConfig",
    "ColumnMap",
    "Config",
    "Credentials",
    "DaemonConfig",
    "DemoConfig",
    "EngineConfig",
    "FinderConfig",
    "HistogramConfig",
    "LaneConfig",
    "ObservatoriesConfig",
    "Part",
    "ProjectConfig",
    "QualityConfig",
    "SimulatorConfig",
    "StoreConfig",
    "TessConfig",
    "TessReducerConfig",
    "ZtfConfig",
    "ZtfReducerConfig",
    "adapter_config_model",
    "submodel",
]


class ObservatoriesBase(Part):
    """One section per observatory: the built-ins' below, and one for any registered adapter.

    The built-ins' sections are typed fields, the others extra keys. The fields come from the
    adapter registry (:func:`aretriever.adapters.builtin_config_models`), so adding a built-in
    touches its adapter, its config model and the registry only. A section named after a
    third-party adapter (entry point group ``aretriever.adapters``) is validated by
    that adapter's ``config_model`` (a :class:`LaneConfig` subclass, plain :class:`LaneConfig` when
    it has none), so its keys are as strict as the built-ins'. A name no adapter is registered
    under is refused with the list of the available ones.
    """

    # Extra keys are allowed only to hold third-party sections: the validator below refuses names
    # no adapter is registered under, so a typo still fails.
    model_config = ConfigDict(**{**Part.model_config, "extra": "allow"})

    @model_validator(mode="after")
    def _registered_sections(self) -> ObservatoriesBase:
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        errors: list[InitErrorDetails] = []
        for name, value in list(extra.items()):
            if isinstance(value, LaneConfig):
                continue  # already validated (a section object made by section())
            try:
                extra[name] = adapter_config_model(name).model_validate(value)
            except ValidationError as exc:
                errors += [_under(name, err) for err in exc.errors()]
        if errors:
            # Raised again with the section's name in each location, so a message reads
            # ``observatories.sky.rate_per_s`` as for a built-in, not ``observatories.rate_per_s``.
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def section(self, name: str) -> LaneConfig:
        """The section of observatory ``name``; its config model's defaults when the file has none."""
        found = getattr(self, name, None)
        if isinstance(found, LaneConfig):
            return found
        default = adapter_config_model(name)()
        if self.__pydantic_extra__ is not None:
            self.__pydantic_extra__[name] = default  # one section object per run, like the built-ins'
        return default

    def sections(self) -> dict[str, LaneConfig]:
        """Every section present: the built-ins' (always), then the third-party ones given."""
        found = {name: getattr(self, name) for name in type(self).model_fields}
        return {**found, **(self.__pydantic_extra__ or {})}


def _under(name: str, err: ErrorDetails) -> InitErrorDetails:
    """A third-party section's error, located under the section's name."""
    details = InitErrorDetails(type=err["type"], loc=(name, *err["loc"]), input=err["input"])
    if "ctx" in err:
        details["ctx"] = err["ctx"]
    return details


def submodel(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``X`` or ``X | None``), else None."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if union else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


# Typed fields rather than extras for the built-ins: their defaults exist without any file, so
# ``config show`` and the hash always cover them, and tests can write ``cfg.observatories.ztf``.
def _builtin_sections() -> dict[str, Any]:
    """``create_model`` field definitions: one typed section per built-in adapter, defaults filled."""
    return {
        name: (model, Field(default_factory=model, description=model.section_description or name))
        for name, model in builtin_config_models().items()
    }


if TYPE_CHECKING:
    # mypy cannot see fields made at run time; code reaches a section through ``section(name)``.
    ObservatoriesConfig: TypeAlias = ObservatoriesBase
else:
    ObservatoriesConfig = create_model(
        "ObservatoriesConfig",
        __base__=ObservatoriesBase,
        __module__=__name__,  # pickled configs (pool workers) find the class by this name
        __doc__=ObservatoriesBase.__doc__,
        **_builtin_sections(),
    )


def adapter_config_model(name: str) -> type[LaneConfig]:
    """The config model of the adapter registered as ``name`` (imports a third-party adapter).

    Raises
    ------
    ConfigError
        No adapter is registered under ``name``, or its ``config_model`` is not a LaneConfig.
    """
    key = name.lower()
    builtin = ObservatoriesConfig.model_fields.get(key)
    if builtin is not None and isinstance(builtin.annotation, type):
        return cast("type[LaneConfig]", builtin.annotation)  # no need to import the adapter
    adapter_class = adapter_class_for(key)
    model = getattr(adapter_class, "config_model", LaneConfig)
    if not (isinstance(model, type) and issubclass(model, LaneConfig)):
        raise ConfigError(f"config: adapter {name!r}: config_model {model!r} is not a LaneConfig subclass")
    return model


class ColumnMap(Part):
    """Which catalog columns hold what aretriever needs."""

    name: str = Field("name", description="source name column")
    ra: str = Field("ra", description="right ascension column (deg)")
    dec: str = Field("dec", description="declination column (deg)")
    mag: str | None = Field("mag", description="magnitude column (None: no magnitude)")
    pmra: str | None = Field("pmra", description="proper motion in RA column (mas/yr)")
    pmdec: str | None = Field("pmdec", description="proper motion in Dec column (mas/yr)")


class CatalogConfig(Part):
    """Where the sources come from."""

    default: str | None = Field(
        None, description="a named catalog: 'wd' (white dwarfs), 'test', 'gaia' (with gaia_query)"
    )
    path: str | None = Field(None, description="a local catalog file (CSV, FITS, Parquet, HDF5)")
    columns: ColumnMap = Field(default_factory=ColumnMap, description="column names in the catalog")
    chunk_rows: int = Field(
        5000, ge=1, description="rows read at a time when streaming", json_schema_extra=OPERATIONAL
    )
    test_size: int = Field(100, ge=1, description="rows of the generated 'test' catalog")
    test_seed: int = Field(42, description="random seed of the generated 'test' catalog")
    cache_dir: Path | None = Field(
        None,
        description="folder of downloaded catalogs (None: $ARETRIEVER_CATALOGS, else ./catalogs)",
        json_schema_extra=OPERATIONAL,
    )
    vizier_url: str = Field(
        "https://vizier.cds.unistra.fr",
        description="VizieR base URL (catalog 'wd')",
        json_schema_extra=OPERATIONAL,
    )
    gaia_tap_url: str = Field(
        "https://gea.esac.esa.int/tap-server/tap",
        description="Gaia archive TAP service (catalogs 'gaia:<ADQL>')",
        json_schema_extra=OPERATIONAL,
    )
    gaia_query: str | None = Field(None, description="ADQL query of the catalog named 'gaia'")
    tap_max_rows: int | None = Field(
        None, ge=1, description="MAXREC sent with Gaia TAP queries (None: the archive's default)"
    )
    allow_truncated: bool = Field(
        False, description="accept a catalog cut at an archive row limit (logged) instead of failing"
    )
    pm_epoch_yr: float | None = Field(
        None, description="move positions by proper motion to this Julian epoch while streaming (None: keep)"
    )
    download_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="timeout of one catalog download request, seconds",
        json_schema_extra=OPERATIONAL,
    )
    poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="first wait between two polls of a TAP job (grows x1.5)",
        json_schema_extra=OPERATIONAL,
    )
    poll_max_interval_s: float = Field(
        30.0, gt=0, description="longest wait between two polls of a TAP job", json_schema_extra=OPERATIONAL
    )
    poll_deadline_s: float = Field(
        3600.0,
        gt=0,
        description="give up on a TAP job still running after this",
        json_schema_extra=OPERATIONAL,
    )


# Extra keys hold the parameters a custom class declares (``parameters``): AnalysisConfig, which
# knows the classes, checks them against the loaded class, so a typo still fails.
_DECLARED = ConfigDict(**{**Part.model_config, "extra": "allow"})


class FinderConfig(Part):
    """S/N peak finder (plus the parameters a custom ``finder_class`` declares)."""

    model_config = _DECLARED

    snr_threshold: float = Field(5.0, gt=0, description="a peak must exceed this S/N")
    sidebands: float = Field(
        -2.0, description="the event region extends while S/N > snr_threshold + sidebands"
    )
    max_det_per_lc: int = Field(1, ge=1, description="detections per lightcurve, at most")


class QualityConfig(Part):
    """Quality cuts applied before finding (plus those a custom ``quality_class`` declares)."""

    model_config = _DECLARED

    offset_threshold: float = Field(
        3.5,
        gt=0,
        description="points further than this many scaled MADs from the median position are flagged",
    )
    drop_flagged: bool = Field(True, description="ignore flagged points when finding")


class SimulatorConfig(Part):
    """Injected events used to measure recovery efficiency (plus a custom class's parameters)."""

    model_config = _DECLARED

    shape: Literal["gaussian", "box"] = Field("gaussian", description="event profile")
    min_width_days: float = Field(0.01, gt=0, description="smallest injected width")
    max_width_days: float = Field(10.0, gt=0, description="largest injected width")
    min_amplitude_mag: float = Field(-2.0, description="strongest brightening (negative mag)")
    max_amplitude_mag: float = Field(2.0, description="strongest dimming (positive mag)")
    seed: int = Field(0, description="random seed of the injections")

    @model_validator(mode="after")
    def _ranges(self) -> SimulatorConfig:
        if self.min_width_days > self.max_width_days:
            raise ValueError(f"min_width_days {self.min_width_days} > max_width_days {self.max_width_days}")
        if self.min_amplitude_mag > self.max_amplitude_mag:
            raise ValueError(
                f"min_amplitude_mag {self.min_amplitude_mag} > max_amplitude_mag {self.max_amplitude_mag}"
            )
        return self


class HistogramConfig(Part):
    """Binning of the score histograms."""

    snr_bins: list[float] = Field(
        default_factory=lambda: [-20.0, 20.0, 0.1], description="snr: [low, high, step]"
    )
    dmag_bins: list[float] = Field(
        default_factory=lambda: [-3.0, 3.0, 0.1], description="dmag: [low, high, step]"
    )
    offset_bins: list[float] = Field(
        default_factory=lambda: [-5.0, 5.0, 0.1], description="offset: [low, high, step]"
    )
    mag_bins: list[float] = Field(
        default_factory=lambda: [15.0, 21.0, 0.5], description="source mag: [low, high, step]"
    )

    @field_validator("snr_bins", "dmag_bins", "offset_bins", "mag_bins")
    @classmethod
    def _low_high_step(cls, bins: list[float]) -> list[float]:
        if len(bins) != 3 or not bins[0] < bins[1] or not bins[2] > 0:
            raise ValueError(f"expected [low, high, step] with low < high and step > 0 (got {bins})")
        return bins


class AnalysisConfig(Part):
    """S/N analysis, quality cuts, finder, simulator and histograms.

    A key none of these has is a parameter of the custom class named here (``analysis_class``
    for this part, ``finder_class`` for ``finder``...): it is validated against the model that
    class declares as ``parameters``, whose defaults are filled in (they shape the results, so
    the config hash covers them). The default classes declare none, so their keys stay strict.
    """

    model_config = _DECLARED

    num_injections: int = Field(0, ge=0, description="simulated events injected per lightcurve")
    analysis_module: str = Field(
        "aretriever.science.analysis", description="module of the Analysis class (custom code)"
    )
    analysis_class: str = Field("Analysis", description="Analysis class name")
    finder_module: str = Field("aretriever.science.finder", description="module of the Finder class")
    finder_class: str = Field("Finder", description="Finder class name")
    quality_module: str = Field("aretriever.science.quality", description="module of the quality-cut class")
    quality_class: str = Field("QualityChecker", description="quality-cut class name")
    simulator_module: str = Field("aretriever.science.simulator", description="module of the Simulator class")
    simulator_class: str = Field("Simulator", description="Simulator class name")
    finder: FinderConfig = Field(default_factory=FinderConfig, description="finder parameters")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="quality-cut parameters")
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig, description="simulator parameters")
    histograms: HistogramConfig = Field(default_factory=HistogramConfig, description="histogram binning")

    @model_validator(mode="after")
    def _declared_parameters(self) -> AnalysisConfig:
        errors: list[InitErrorDetails] = []
        for kind, part, loc in (
            ("analysis", self, ()),
            ("finder", self.finder, ("finder",)),
            ("quality", self.quality, ("quality",)),
            ("simulator", self.simulator, ("simulator",)),
        ):
            errors += _declared(self, kind, part, loc)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def _declared(cfg: AnalysisConfig, kind: str, part: Part, loc: tuple[str, ...]) -> list[InitErrorDetails]:
    """Check and fill the extra keys of ``part`` from the parameters its class declares."""
    extra = part.__pydantic_extra__
    module, name = getattr(cfg, f"{kind}_module"), getattr(cfg, f"{kind}_class")
    fields = AnalysisConfig.model_fields
    if module == fields[f"{kind}_module"].default and name == fields[f"{kind}_class"].default:
        # The default classes declare nothing and are not imported here (``config show`` stays light).
        return [
            InitErrorDetails(type="extra_forbidden", loc=(*loc, k), input=v) for k, v in (extra or {}).items()
        ]
    # Only the class's ``parameters`` are read here; load_class checks its base when it is built.
    cls = find_class(module, name, f"analysis.{kind}_class")
    values, errors = parameter_errors(cls, type(part), dict(extra or {}), loc)
    if extra is not None and not errors:
        extra.clear()
        extra.update(values)
    return errors


class ProjectConfig(Part):
    """A named project: which observatories, and whether products are versioned."""

    name: str = Field("default", min_length=1, description="project name; upper-cased for its folder")
    description: str = Field("", description="free text")
    obs_names: list[str] = Field(
        default_factory=lambda: ["ztf"], description="observatories this project uses"
    )
    version_control: bool = Field(
        False,
        validation_alias=AliasChoices("version_control", "vc"),
        description="products go to DATA_ROOT/<PROJECT>_<cfg hash>",
    )


class Config(Part):
    """Everything aretriever can be told."""

    project: ProjectConfig = Field(default_factory=ProjectConfig, description="project")
    catalog: CatalogConfig = Field(default_factory=CatalogConfig, description="catalog")
    observatories: ObservatoriesConfig = Field(
        default_factory=ObservatoriesConfig, description="observatories"
    )
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig, description="analysis")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="engine")
    store: StoreConfig = Field(default_factory=StoreConfig, description="store")
    daemon: DaemonConfig = Field(default_factory=DaemonConfig, description="the long-running daemon")
