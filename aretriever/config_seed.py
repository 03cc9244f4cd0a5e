"""AstroRetriever (seed) ``Project(...)`` keywords mapped onto the native nested config form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from aretriever.config_tree import ANALYSIS_CODE, Tree, is_observatory, keys_of, merge, nested
from aretriever.errors import ConfigError
from aretriever.settings import AnalysisConfig, submodel

__all__ = ["from_seed_kwargs"]

# Seed keywords that set the project itself (``project.*``), not one of its parts.
_PROJECT_KEYS = frozenset({"name", "description", "version_control", "vc", "obs_names"})
_ANALYSIS_SUBS = {
    "finder_kwargs": "finder",
    "quality_kwargs": "quality",
    "simulator_kwargs": "simulator",
    "histogram_kwargs": "histograms",
}

# --- seed (AstroRetriever) constructor keywords --------------------------------------------------


def _route(model: type[BaseModel], key: str, where: str) -> tuple[str, ...]:
    """Where a flat key of ``model``'s kwargs belongs: the model itself or its one sub-model."""
    if key in keys_of(model):
        return (key,)
    owners = [
        name
        for name, info in model.model_fields.items()
        if (sub := submodel(info.annotation)) is not None and key in keys_of(sub)
    ]
    if len(owners) > 1:
        raise ConfigError(
            f"config: {where}.{key}: ambiguous; a parameter of {' and '.join(owners)} "
            f"(give it inside {owners[0]}=...)"
        )
    return (owners[0], key) if owners else (key,)


def _seed_analysis(kwargs: Any) -> Tree:
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"config: analysis_kwargs: must be a mapping (got {kwargs!r})")
    out: Tree = {}
    for key, value in kwargs.items():
        loc = (
            (_ANALYSIS_SUBS[key],)
            if key in _ANALYSIS_SUBS
            else _route(AnalysisConfig, key, "analysis_kwargs")
        )
        merge(out, nested(loc, value), None, {})
    return out


def _seed_entry(key: str, value: Any) -> Tree:
    if key == "obs_names":
        names = [value] if isinstance(value, str) else value
        # The seed wrote "ZTF"; observatory sections, adapters and DB values are lower case.
        value = [n.lower() for n in names] if isinstance(names, list | tuple) else names
    if key in _PROJECT_KEYS:
        return {"project": {key: value}}
    if key in ANALYSIS_CODE:
        return {"analysis": {key: value}}
    if key == "catalog_kwargs":
        return {"catalog": value}
    if key == "analysis_kwargs":
        return {"analysis": _seed_analysis(value)}
    if is_observatory(key):
        return {"observatories": {key.lower(): value}}
    return {key: value}  # native parts and obs_kwargs as they are; unknown keys fail validation


def from_seed_kwargs(**kwargs: Any) -> Tree:
    """Map AstroRetriever ``Project(...)`` keywords onto the native nested form.

    Parameters
    ----------
    **kwargs
        Seed keywords (``name``, ``vc``, ``obs_names``, ``catalog_kwargs``, ``analysis_kwargs``,
        ``analysis_module``..., ``obs_kwargs``, ``ZTF={...}``) and/or native parts (``project``,
        ``analysis``...). They are merged in the order given.

    Returns
    -------
    dict
        Native parts, plus ``obs_kwargs`` when given (the section for every observatory).
    """
    out: Tree = {}
    for key, value in kwargs.items():
        merge(out, _seed_entry(key, value), None, {})
    return out
