"""Loading the configuration: files, precedence, seed keywords and ``--set``.

Precedence, lowest to highest::

    model defaults < config file < constructor arguments (overrides)
        < observatory sections < --set < later attribute assignment (validated)

Observatory sections stack as: ``obs_kwargs`` of the file, ``obs_kwargs`` of the arguments, then
the specific section (``observatories.<name>`` or a top-level ``ZTF:``) of the file, then of the
arguments. Nested mappings merge key by key; aliases (``vc``, ``gap``...) are renamed to their field
names before merging, so an alias never shadows a field name given at a higher level.
``obs_kwargs`` reaches the built-in sections and the third-party observatories the config names
(their own section, or ``project.obs_names``); every registered adapter's section (third-party too)
takes ``--set observatories.<name>.key=value``, a top-level ``<NAME>:`` key or seed keyword, and
``$ARETRIEVER_<NAME>_USERNAME/_PASSWORD``.

The tree merging and error messages are :mod:`aretriever.config_tree`, the seed keywords
:mod:`aretriever.config_seed`, the hash and dumps :mod:`aretriever.config_output`; the public
names are all importable from here.

Run ``python -m aretriever.config show`` to print the resolved configuration.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import SecretStr

from aretriever.adapters import adapter_class_for
from aretriever.config_output import code_version, config_hash, public_dict, to_yaml
from aretriever.config_seed import from_seed_kwargs
from aretriever.config_tree import BUILTINS, Merged, Tree, named_third_party, nested, split, third_party
from aretriever.errors import ConfigError
from aretriever.settings import AnalysisConfig, Config, Credentials
from aretriever.store.locations import resolve_store

__all__ = [
    "code_version",
    "config_hash",
    "from_seed_kwargs",
    "load_config",
    "public_dict",
    "to_yaml",
]  # the hash and dumps live in config_output, seed keywords in config_seed: one import for callers

# --- files and --set -----------------------------------------------------------------------------


def _find_file(cfg_file: str | Path | Literal[False] | None, name: str, folder: Path) -> Path | None:
    if cfg_file is False:
        return None
    if cfg_file is None:
        default = folder / f"{name}.yaml"
        return default if default.is_file() else None
    # A bare name means "the project's configs folder", as the seed's cfg_file did; a path is a path.
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
    if not isinstance(data, dict | None):  # None: an empty file, which is a valid (empty) config
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
        value = yaml.safe_load(raw)  # YAML, so "3" is a number, "[g, r]" a list, "null" None
    except yaml.YAMLError as exc:
        reason = _yaml_reason(exc)
        raise ConfigError(f"config: --set {_set_shown(text)!r}: not valid YAML: {reason}") from exc
    return nested(keys, value)


def _sections_in_use(cfg: Config) -> None:
    """Give each third-party observatory in ``obs_names`` its section now, defaults if none.

    Made at load time, not on first use, so that environment credentials reach it and the config
    hash is the same before and after an engine asks for the section. An adapter without a config
    model gets none (its adapter is built with None).
    """
    for name in {n.lower() for n in cfg.project.obs_names} & third_party():
        if hasattr(adapter_class_for(name), "config_model"):
            cfg.observatories.section(name)


def _credentials_from_env(cfg: Config, environ: Mapping[str, str]) -> None:
    # After validation, and only where the config has none: credentials given in a file, the
    # arguments or --set win over the environment's.
    for name, section in cfg.observatories.sections().items():
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
    args = split(from_seed_kwargs(**overrides) if overrides else {})
    name = project or _project_name(args.native) or "default"
    folder = configs_dir or Path(os.environ.get("ARETRIEVER_CONFIGS") or "configs")
    path = _find_file(cfg_file, name, folder)
    file = split(_read_yaml(path, cfg_key) if path else {})
    label = (f"{path} [{cfg_key}]" if cfg_key else str(path)) if path else None

    # Parsed first: a --set may name a third-party section that obs_kwargs must reach too.
    set_trees = [(_parse_set(text), f"--set {_set_shown(text)}") for text in sets]
    merged = Merged()
    merged.add(file.native, label)
    merged.add(args.native, None)
    if project:
        merged.add({"project": {"name": project}}, None)
    trees = [merged.tree, file.specific, args.specific, *(tree for tree, _ in set_trees)]
    merged.observatories = BUILTINS + named_third_party(trees)
    merged.add_generic(file.generic, label)
    merged.add_generic(args.generic, None)
    merged.add(file.specific, label)
    merged.add(args.specific, None)
    for tree, origin in set_trees:
        merged.add(tree, origin)
    cfg = merged.validate()
    cfg.store = resolve_store(cfg.store)  # once, here: every part then sees the same DATA_ROOT
    _sections_in_use(cfg)
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


if __name__ == "__main__":
    from aretriever.cli.main import main

    raise SystemExit(main(["config", *sys.argv[1:]]))
