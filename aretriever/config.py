"""Loading the configuration: files, precedence, seed keywords, ``--set`` and the config hash.

Precedence, lowest to highest::

    model defaults < config file < constructor arguments (overrides)
        < observatory sections < --set < later attribute assignment (validated)

Observatory sections stack as: ``obs_kwargs`` of the file, ``obs_kwargs`` of the arguments, then
the specific section (``observatories.<name>`` or a top-level ``ZTF:``) of the file, then of the
arguments. Nested mappings merge key by key; aliases (``vc``, ``gap``...) are renamed to their field
names before merging, so an alias never shadows a field name given at a higher level.

Run ``python -m aretriever.config show`` to print the resolved configuration.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import AliasChoices, BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from aretriever.errors import ConfigError
from aretriever.redact import redact
from aretriever.settings import AnalysisConfig, Config, Credentials, ObservatoriesConfig
from aretriever.store.locations import resolve_store

__all__ = [
    "code_version",
    "config_hash",
    "from_seed_kwargs",
    "load_config",
    "public_dict",
    "to_yaml",
]

Tree = dict[str, Any]
Loc = tuple[str | int, ...]

GENERIC_KEY = "obs_kwargs"
_OBSERVATORIES = tuple(ObservatoriesConfig.model_fields)
_PROJECT_KEYS = frozenset({"name", "description", "version_control", "vc", "obs_names"})
_ANALYSIS_SUBS = {
    "finder_kwargs": "finder",
    "quality_kwargs": "quality",
    "simulator_kwargs": "simulator",
    "histogram_kwargs": "histograms",
}
# The seed gave custom-code locations to the Project, not to its Analysis.
_ANALYSIS_CODE = frozenset(k for k in AnalysisConfig.model_fields if k.endswith(("_module", "_class")))


# --- model introspection -------------------------------------------------------------------------


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``X`` or ``X | None``), else None."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if union else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


@functools.cache
def _keys(model: type[BaseModel]) -> dict[str, str]:
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
        info = model.model_fields.get(part) if model and isinstance(part, str) else None
        model = _submodel(info.annotation) if info else None
    return model


def _walk(
    model: type[BaseModel], data: Mapping[Any, Any], *, keep_unknown: bool = True, at: Loc = ()
) -> tuple[Tree, list[Loc]]:
    """Rename aliases to field names, recursively; also return the unknown keys' locations."""
    tree: Tree = {}
    unknown: list[Loc] = []
    for key, value in data.items():
        name = _keys(model).get(key)
        if name is None:
            unknown.append((*at, key))
            if keep_unknown:
                tree[key] = value
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        sub = _submodel(model.model_fields[name].annotation)
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
    keys = sorted({k for m in models for k in _keys(m)})
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
    return text if len(text) <= 80 else text[:77] + "..."


def _origin(loc: Loc, origins: Mapping[Loc, str | None]) -> str:
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


def _merge(
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
            _merge(dst[key], value, origin, origins, loc)
            continue
        for stale in [o for o in origins if o[: len(loc)] == loc]:
            del origins[stale]
        dst[key] = value
        origins[loc] = origin


class _Parts(NamedTuple):
    native: Tree
    generic: Any
    specific: Tree


def _split(data: Mapping[str, Any]) -> _Parts:
    """Split a top-level mapping into native parts, ``obs_kwargs`` and observatory sections."""
    native: Tree = {}
    generic: Any = None
    obs: Tree = {}
    for key, value in data.items():
        if key == GENERIC_KEY:
            generic = value
        elif key == "observatories" and isinstance(value, Mapping):
            _merge(obs, value, None, {})
        elif isinstance(key, str) and key.lower() in _OBSERVATORIES:
            _merge(obs, {key.lower(): value}, None, {})
        else:
            native[key] = value
    project = native.get("project")
    if isinstance(project, Mapping) and _ANALYSIS_CODE & set(project):
        code = {k: v for k, v in project.items() if k in _ANALYSIS_CODE}
        native["project"] = {k: v for k, v in project.items() if k not in _ANALYSIS_CODE}
        _merge(native, {"analysis": code}, None, {})
    return _Parts(native, generic, {"observatories": obs} if obs else {})


@dataclass
class _Merged:
    """The layers merged so far, where each value came from, and problems found on the way."""

    tree: Tree = field(default_factory=dict)
    origins: dict[Loc, str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, data: Mapping[str, Any], origin: str | None) -> None:
        _merge(self.tree, _walk(Config, data)[0], origin, self.origins)

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
        for obs in _OBSERVATORIES:
            kept, missing = _walk(_obs_model(obs), generic, keep_unknown=False)
            self.add({"observatories": {obs: kept}}, origin)
            unknown.append(set(missing))
        for loc in sorted(_unknown_everywhere(unknown), key=str):
            parents = (_model_at(loc[:-1], _obs_model(obs)) for obs in _OBSERVATORIES)
            models = [m for m in parents if m is not None]
            detail = _unknown_key(loc[-1], models).replace("key", "key for every observatory", 1)
            self.problems.append(f"config: {GENERIC_KEY}.{_dotted(loc)}: {detail}{where}")

    def validate(self) -> Config:
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


def _obs_model(name: str) -> type[BaseModel]:
    model = _submodel(ObservatoriesConfig.model_fields[name].annotation)
    assert model is not None  # every observatory section is a model (settings.py)
    return model


# --- seed (AstroRetriever) constructor keywords --------------------------------------------------


def _nested(loc: Sequence[str], value: Any) -> Tree:
    for key in reversed(loc[1:]):
        value = {key: value}
    return {loc[0]: value}


def _route(model: type[BaseModel], key: str, where: str) -> tuple[str, ...]:
    """Where a flat key of ``model``'s kwargs belongs: the model itself or its one sub-model."""
    if key in _keys(model):
        return (key,)
    owners = [
        name
        for name, info in model.model_fields.items()
        if (sub := _submodel(info.annotation)) is not None and key in _keys(sub)
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
        _merge(out, _nested(loc, value), None, {})
    return out


def _seed_entry(key: str, value: Any) -> Tree:
    if key == "obs_names":
        names = [value] if isinstance(value, str) else value
        # The seed wrote "ZTF"; observatory sections, adapters and DB values are lower case.
        value = [n.lower() for n in names] if isinstance(names, list | tuple) else names
    if key in _PROJECT_KEYS:
        return {"project": {key: value}}
    if key in _ANALYSIS_CODE:
        return {"analysis": {key: value}}
    if key == "catalog_kwargs":
        return {"catalog": value}
    if key == "analysis_kwargs":
        return {"analysis": _seed_analysis(value)}
    if key.lower() in _OBSERVATORIES:
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
        _merge(out, _seed_entry(key, value), None, {})
    return out


# --- files and --set -----------------------------------------------------------------------------


def _find_file(cfg_file: str | Path | Literal[False] | None, name: str, folder: Path) -> Path | None:
    if cfg_file is False:
        return None
    if cfg_file is None:
        default = folder / f"{name}.yaml"
        return default if default.is_file() else None
    bare = "/" not in str(cfg_file) and os.sep not in str(cfg_file)
    path = folder / cfg_file if bare else Path(cfg_file)
    if not path.is_file():
        raise ConfigError(f"config: no such config file: {path}")
    return path


def _read_yaml(path: Path, cfg_key: str | None) -> Tree:
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {_yaml_reason(exc)}") from exc
    if cfg_key is not None:
        if not isinstance(data, dict) or cfg_key not in data:
            has = ", ".join(map(str, data)) if isinstance(data, dict) else "no keys"
            raise ConfigError(f"config: cfg_key {cfg_key!r} not in {path} (the file has: {has})")
        data = data[cfg_key]
    if not isinstance(data, dict | None):
        where = f"{path} [{cfg_key}]" if cfg_key else str(path)
        got = type(data).__name__
        raise ConfigError(f"config: {where}: expected a mapping of config parts (got {got})")
    return data or {}


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _set_shown(text: str) -> str:
    """A ``--set`` for messages: a credential's value is never repeated."""
    path, equals, _ = text.partition("=")
    secret = equals and ("credentials" in path or "password" in path)
    return f"{path}=***" if secret else text


def _parse_set(text: str) -> Tree:
    path, equals, raw = text.partition("=")
    keys = [k.strip() for k in path.split(".")]
    if not equals or not all(keys):
        raise ConfigError(f"config: --set {_set_shown(text)!r}: expected dotted.path=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        reason = _yaml_reason(exc)
        raise ConfigError(f"config: --set {_set_shown(text)!r}: not valid YAML: {reason}") from exc
    return _nested(keys, value)


def _credentials_from_env(cfg: Config, environ: Mapping[str, str]) -> None:
    for name in _OBSERVATORIES:
        section = getattr(cfg.observatories, name)
        user = environ.get(f"ARETRIEVER_{name.upper()}_USERNAME")
        password = environ.get(f"ARETRIEVER_{name.upper()}_PASSWORD")
        if section.credentials is None and (user is not None or password is not None):
            secret = SecretStr(password or "")
            section.credentials = Credentials(username=user or "", password=secret)


def load_config(
    cfg_file: str | Path | Literal[False] | None = None,
    cfg_key: str | None = None,
    *,
    project: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
    configs_dir: Path | None = None,
) -> Config:
    """Resolve the configuration from defaults, a YAML file, arguments and ``--set`` strings.

    Parameters
    ----------
    cfg_file
        None: ``<configs_dir>/<project name>.yaml`` if it exists. A bare file name is looked up in
        ``configs_dir``; a path with a directory is used as given; it must exist. False: no file.
    cfg_key
        Load the config from this top-level key of the file instead of the whole file.
    project
        Project name: names the default file and sets ``project.name``.
    overrides
        Constructor arguments, native (``{"analysis": {...}}``) or seed style (``analysis_kwargs``,
        ``obs_kwargs``, ``ZTF={...}``; see :func:`from_seed_kwargs`).
    sets
        ``dotted.path=value`` strings (command line); values are parsed as YAML.
    configs_dir
        Folder of config files (default: ``$ARETRIEVER_CONFIGS``, else ``./configs``).

    Returns
    -------
    Config
        The validated config; later attribute assignments are validated too. ``store.data_root``
        and ``store.db_url`` are resolved (:func:`resolve_store`).

    Raises
    ------
    ConfigError
        Missing explicit file, bad YAML, unknown keys or invalid values (all of them, one per line).
    """
    args = _split(from_seed_kwargs(**overrides) if overrides else {})
    name = project or _project_name(args.native) or "default"
    folder = configs_dir or Path(os.environ.get("ARETRIEVER_CONFIGS") or "configs")
    path = _find_file(cfg_file, name, folder)
    file = _split(_read_yaml(path, cfg_key) if path else {})
    label = (f"{path} [{cfg_key}]" if cfg_key else str(path)) if path else None

    merged = _Merged()
    merged.add(file.native, label)
    merged.add(args.native, None)
    if project:
        merged.add({"project": {"name": project}}, None)
    merged.add_generic(file.generic, label)
    merged.add_generic(args.generic, None)
    merged.add(file.specific, label)
    merged.add(args.specific, None)
    for text in sets:
        merged.add(_parse_set(text), f"--set {_set_shown(text)}")
    cfg = merged.validate()
    cfg.store = resolve_store(cfg.store)
    _credentials_from_env(cfg, os.environ)
    _check_custom_classes(cfg)
    return cfg


_CLASS_FIELDS = tuple(
    f"{part}_{kind}"
    for part in ("analysis", "finder", "quality", "simulator")
    for kind in ("module", "class")
)


def _check_custom_classes(cfg: Config) -> None:
    """A custom analysis (finder, quality, simulator) class that cannot be built fails at load time.

    A wrong ``analysis_class`` would otherwise surface in a pool worker, after the first requests.
    The default classes are not imported here: ``config show`` stays light.
    """
    defaults = AnalysisConfig()
    if all(getattr(cfg.analysis, f) == getattr(defaults, f) for f in _CLASS_FIELDS):
        return
    from aretriever.science.analysis import analysis_for  # imports numpy and pandas: only when needed

    analysis_for(cfg.analysis)


def _project_name(native: Mapping[str, Any]) -> str | None:
    part = native.get("project")
    name = part.get("name") if isinstance(part, Mapping) else None
    return name if isinstance(name, str) and name else None


# --- hash, version, output -----------------------------------------------------------------------


def _is_secret(info: FieldInfo) -> bool:
    return info.annotation is SecretStr or _submodel(info.annotation) is Credentials


def _is_operational(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and extra.get("operational") is True


def _dump(model: BaseModel, *, operational: bool) -> Tree:
    out: Tree = {}
    for name, info in type(model).model_fields.items():
        if _is_secret(info) or (not operational and _is_operational(info)):
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _dump(value, operational=operational)
        else:  # a password inside a value (store.db_url) is masked: dumps are shown and written
            out[name] = redact(value) if isinstance(value, str) else to_jsonable_python(value)
    return out


def public_dict(cfg: Config) -> Tree:
    """The resolved config as JSON-able data, without credentials (they are never written)."""
    return _dump(cfg, operational=True)


@functools.cache
def code_version() -> str:
    """The git commit of the package source if it is a git checkout, else the package version."""
    return _git_commit(Path(__file__).resolve().parent) or _dist_version()


_current_code_version = code_version  # config_hash's parameter shadows the function's name


def _git_commit(src: Path) -> str | None:
    def git(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(src), *argv], capture_output=True, text=True, timeout=10, check=False
        )

    try:
        # A site-packages copy inside some unrelated work tree must not report that tree's commit.
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() if head.returncode == 0 and head.stdout.strip() else None


def _dist_version() -> str:
    import aretriever

    version = getattr(aretriever, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("aretriever")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def config_hash(cfg: Config, code_version: str | None = None) -> str:
    """Hex sha256 of the parameters that shape the products, plus the code version.

    Fields marked ``operational`` (rates, paths, timeouts) and credentials are left out, so they
    can change without starting a new versioned product folder.
    """
    payload = {
        "config": _dump(cfg, operational=False),
        "code_version": _current_code_version() if code_version is None else code_version,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20)
    text = text.removesuffix("\n").removesuffix("\n...")
    return json.dumps(value, ensure_ascii=False) if "\n" in text else text


def _yaml_lines(model: type[BaseModel], data: Tree, at: tuple[str, ...]) -> Iterator[str]:
    pad = "  " * len(at)
    for name, info in model.model_fields.items():
        note = " ".join((info.description or "").split())  # a comment must stay on its line
        sub = _submodel(info.annotation)
        if name not in data:
            if _is_secret(info):
                env = f"$ARETRIEVER_{at[-1].upper()}_USERNAME/_PASSWORD" if at else "$ARETRIEVER_*"
                yield f"{pad}# {name}: never written; give them in a private file or {env}"
        elif sub is not None and isinstance(data[name], dict) and data[name]:
            # A section whose description only repeats its name says more with its docstring.
            doc = (sub.__doc__ or "").strip().splitlines()
            yield f"{pad}# {doc[0] if note == name and doc else note}"
            yield f"{pad}{name}:"
            yield from _yaml_lines(sub, data[name], (*at, name))
        else:
            yield f"{pad}{name}: {_scalar(data[name])}" + (f"  # {note}" if note else "")


def to_yaml(cfg: Config, *, comments: bool = True) -> str:
    """The resolved config as YAML that :func:`load_config` reads back (credentials left out).

    Parameters
    ----------
    cfg
        The config to write.
    comments
        Put each field's description beside it (scalars) or above it (sections).
    """
    data = public_dict(cfg)
    if not comments:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    lines = ["# aretriever configuration, resolved (defaults < file < arguments < --set)"]
    for line in _yaml_lines(Config, data, ()):
        lines += [""] if line.startswith("# ") else []
        lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from aretriever.cli.main import main

    raise SystemExit(main(["config", *sys.argv[1:]]))
