"""The configuration as a tree of plain data: model introspection, merging, error messages.

:func:`aretriever.config.load_config` merges layers (file, arguments, ``obs_kwargs``, sections,
``--set``) into one tree with :class:`Merged`, which remembers where each value came from so that an
error names the file or ``--set`` it came from, then validates the tree once. Third-party
observatory sections are extra keys of ``observatories``; the adapter registry says which names
exist and :func:`aretriever.settings.adapter_config_model` gives their models.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import AliasChoices, BaseModel, ValidationError

from aretriever.adapters import available
from aretriever.errors import ConfigError
from aretriever.settings import (
    AnalysisConfig,
    Config,
    ObservatoriesBase,
    ObservatoriesConfig,
    adapter_config_model,
    submodel,
)

Tree = dict[str, Any]
Loc = tuple[str | int, ...]

GENERIC_KEY = "obs_kwargs"
BUILTINS = tuple(ObservatoriesConfig.model_fields)
# The seed gave custom-code locations to the Project, not to its Analysis.
ANALYSIS_CODE = frozenset(k for k in AnalysisConfig.model_fields if k.endswith(("_module", "_class")))


# --- model introspection -------------------------------------------------------------------------


def third_party() -> frozenset[str]:
    """Names of the registered adapters that are not built in (asked each time: plugins come and go)."""
    return frozenset(available()) - frozenset(BUILTINS)


def is_observatory(key: object) -> bool:
    """Whether a top-level or seed key (``ZTF``, ``sky``) names an observatory section."""
    return isinstance(key, str) and (key.lower() in BUILTINS or key.lower() in third_party())


def _child(model: type[BaseModel] | None, key: object) -> type[BaseModel] | None:
    """The model of ``key`` inside ``model``: a field's, or a registered third-party section's."""
    if model is None or not isinstance(key, str):
        return None
    info = model.model_fields.get(key)
    if info is not None:
        return submodel(info.annotation)
    # Third-party sections are extra keys of ``observatories``, not fields: the registry knows them.
    if issubclass(model, ObservatoriesBase) and key in third_party():
        return adapter_config_model(key)
    return None


# Cached: models are classes that do not change, and every key of every layer is looked up here.
@functools.cache
def keys_of(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted key of ``model`` (names and aliases) mapped to its field name."""
    keys: dict[str, str] = {}
    for name, info in model.model_fields.items():
        keys[name] = name
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        keys.update({c: name for c in choices if isinstance(c, str) and c not in keys})
    return keys


def _model_at(loc: Loc, model: type[BaseModel] | None = Config) -> type[BaseModel] | None:
    for part in loc:
        model = _child(model, part)
    return model


def _walk(
    model: type[BaseModel], data: Mapping[Any, Any], *, keep_unknown: bool = True, at: Loc = ()
) -> tuple[Tree, list[Loc]]:
    """Rename aliases to field names, recursively; also return the unknown keys' locations."""
    tree: Tree = {}
    unknown: list[Loc] = []
    for key, value in data.items():
        name = keys_of(model).get(key) or (key if _child(model, key) else None)
        if name is None:
            unknown.append((*at, key))
            if keep_unknown:
                tree[key] = value
            continue
        if isinstance(value, BaseModel):
            # Only the keys its author set: a model's defaults must not override a file's values.
            value = value.model_dump(exclude_unset=True)
        sub = _child(model, name)
        if sub is not None and isinstance(value, Mapping):
            value, deeper = _walk(sub, value, keep_unknown=keep_unknown, at=(*at, name))
            unknown += deeper
        tree[name] = value
    return tree, unknown


# --- error messages ------------------------------------------------------------------------------


def _dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _suggest(word: str, candidates: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    # difflib misses "ratelimit" -> "rate_per_s"; a shared leading word is a good hint too.
    heads = [c for c in sorted(candidates) if len(c.split("_")[0]) >= 3]
    return next((c for c in heads if word.startswith(c.split("_")[0])), None)


def _unknown_key(key: object, models: Sequence[type[BaseModel]]) -> str:
    keys = sorted({k for m in models for k in keys_of(m)})
    allowed = ", ".join(sorted({n for m in models for n in m.model_fields}))
    hint = _suggest(str(key), keys)
    return (
        f"unknown key; did you mean {hint}? (allowed: {allowed})"
        if hint
        else (f"unknown key (allowed: {allowed})")
    )


def _shown(loc: Loc, value: Any) -> str:
    if {"credentials", "password"} & {str(p) for p in loc}:
        return "***"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."  # one problem, one line


def _origin(loc: Loc, origins: Mapping[Loc, str | None]) -> str:
    # A value that came inside a mapping is recorded at the mapping's location: look upwards.
    for end in range(len(loc), 0, -1):
        if loc[:end] in origins:
            where = origins[loc[:end]]
            return f" in {where}" if where else ""
    return ""


def _error_line(err: Mapping[str, Any], origins: Mapping[Loc, str | None]) -> str:
    loc: Loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        detail = _unknown_key(loc[-1], [parent] if parent else [])
    else:
        detail = f"{err['msg']} (got {_shown(loc, err['input'])})"
    return f"config: {_dotted(loc)}: {detail}{_origin(loc, origins)}"


# --- merging with provenance ---------------------------------------------------------------------


def merge(
    dst: Tree,
    src: Mapping[str, Any],
    origin: str | None,
    origins: dict[Loc, str | None],
    at: Loc = (),
) -> None:
    """Deep-merge ``src`` into ``dst``, remembering where each value came from."""
    for key, value in src.items():
        loc = (*at, key)
        if isinstance(value, Mapping):
            if not isinstance(dst.get(key), dict):
                dst[key] = {}
                origins[loc] = origin
            merge(dst[key], value, origin, origins, loc)
            continue
        # A scalar replacing a mapping: the keys it replaced must not name their old layer.
        for stale in [o for o in origins if o[: len(loc)] == loc]:
            del origins[stale]
        dst[key] = value
        origins[loc] = origin


class Parts(NamedTuple):
    native: Tree
    generic: Any
    specific: Tree


def split(data: Mapping[str, Any]) -> Parts:
    """Split a top-level mapping into native parts, ``obs_kwargs`` and observatory sections."""
    native: Tree = {}
    generic: Any = None
    obs: Tree = {}
    for key, value in data.items():
        if key == GENERIC_KEY:
            generic = value
        elif key == "observatories" and isinstance(value, Mapping):
            merge(obs, value, None, {})
        elif isinstance(key, str) and is_observatory(key):
            merge(obs, {key.lower(): value}, None, {})
        else:
            native[key] = value
    project = native.get("project")
    if isinstance(project, Mapping) and ANALYSIS_CODE & set(project):
        code = {k: v for k, v in project.items() if k in ANALYSIS_CODE}
        native["project"] = {k: v for k, v in project.items() if k not in ANALYSIS_CODE}
        merge(native, {"analysis": code}, None, {})
    return Parts(native, generic, {"observatories": obs} if obs else {})


@dataclass
class Merged:
    """The layers merged so far, where each value came from, and problems found on the way."""

    tree: Tree = field(default_factory=dict)
    origins: dict[Loc, str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # the sections ``obs_kwargs`` applies to: the built-ins, and the third-party ones the config names
    observatories: tuple[str, ...] = BUILTINS

    def add(self, data: Mapping[str, Any], origin: str | None) -> None:
        merge(self.tree, _walk(Config, data)[0], origin, self.origins)

    def add_generic(self, generic: Any, file: str | None) -> None:
        """Apply ``obs_kwargs`` to every observatory section that has the key."""
        if generic is None:
            return
        where = f" in {file}" if file else ""
        if not isinstance(generic, Mapping):
            self.problems.append(f"config: {GENERIC_KEY}: must be a mapping (got {generic!r}){where}")
            return
        origin = f"{file} ({GENERIC_KEY})" if file else GENERIC_KEY
        unknown: list[set[Loc]] = []
        for obs in self.observatories:
            # Each section takes only the keys its model has: ZTF's cone radius must not fail TESS.
            kept, missing = _walk(adapter_config_model(obs), generic, keep_unknown=False)
            self.add({"observatories": {obs: kept}}, origin)
            unknown.append(set(missing))
        for loc in sorted(_unknown_everywhere(unknown), key=str):
            parents = (_model_at(loc[:-1], adapter_config_model(obs)) for obs in self.observatories)
            models = [m for m in parents if m is not None]
            detail = _unknown_key(loc[-1], models).replace("key", "key for every observatory", 1)
            self.problems.append(f"config: {GENERIC_KEY}.{_dotted(loc)}: {detail}{where}")

    def validate(self) -> Config:
        # Validated once, at the end: a layer alone need not be valid, and every problem of every
        # layer is reported at once (one per line) instead of the first only.
        try:
            cfg = Config.model_validate(self.tree)
        except ValidationError as exc:
            self.problems += [_error_line(err, self.origins) for err in exc.errors()]
            raise ConfigError("\n".join(self.problems)) from exc
        if self.problems:
            raise ConfigError("\n".join(self.problems))
        return cfg


def _unknown_everywhere(unknown: Sequence[set[Loc]]) -> set[Loc]:
    """Keys no section accepts: each section misses the key itself or one of its parents."""
    return {
        loc
        for loc in set().union(*unknown)
        if all(any(loc[:end] in missing for end in range(1, len(loc) + 1)) for missing in unknown)
    }


def named_third_party(trees: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The third-party observatories the config names: a section of their own, or in obs_names.

    ``obs_kwargs`` applies to these and the built-ins only: an installed plugin the project does
    not use must neither change the config hash nor be imported (a broken one would fail the load).
    """
    named: set[str] = set()
    for tree in trees:
        sections = tree.get("observatories")
        named |= {str(k).lower() for k in sections} if isinstance(sections, Mapping) else set()
        project = tree.get("project")
        names = project.get("obs_names") if isinstance(project, Mapping) else None
        named |= {str(n).lower() for n in names} if isinstance(names, list | tuple) else set()
    return tuple(sorted(named & third_party()))


def nested(loc: Sequence[str], value: Any) -> Tree:
    """``("a", "b"), 1`` as ``{"a": {"b": 1}}``: a dotted path as a tree to merge."""
    for key in reversed(loc[1:]):
        value = {key: value}
    return {loc[0]: value}
