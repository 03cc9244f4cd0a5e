"""Observatory adapters and their registry by name.

Built-in adapters are listed in ``_BUILTIN``: the adapter class and its config model, as
``"module:Class"`` strings (adding one is one entry); third-party adapters register a class under
the entry point group ``aretriever.adapters``::

    [project.entry-points."aretriever.adapters"]
    myobs = "my_package.adapter:MyAdapter"

An adapter class names its config section's model in ``config_model`` (a
:class:`~aretriever.lane_config.LaneConfig` subclass): ``observatories.<name>`` in a config file is
validated by it, for built-in and third-party adapters alike. A built-in's config model lives in a
module of its own beside the adapter (``ztf_config.py``), so :mod:`aretriever.settings` builds the
built-in sections from :func:`builtin_config_models` without importing any adapter. See
``docs/adapters.md``.

Nothing is imported until it is asked for, so ``import aretriever.adapters`` stays cheap (the
ZTF adapter pulls in pandas and pyarrow). ``ADAPTERS`` (every adapter class by name) loads them
all on first access and is a snapshot from then on.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from aretriever.errors import ConfigError

if TYPE_CHECKING:
    from aretriever.settings import Config

    from .base import Adapter

ENTRY_POINT_GROUP: Final = "aretriever.adapters"


class Builtin(NamedTuple):
    """Where a built-in adapter and its config model are, as ``"module:Class"`` strings."""

    adapter: str
    config: str  # must be importable without the adapter's module: settings imports it


# The order is the order of the sections in ``config show`` (and of ObservatoriesConfig's fields).
_BUILTIN: Final[dict[str, Builtin]] = {
    "ztf": Builtin("aretriever.adapters.ztf:ZtfAdapter", "aretriever.adapters.ztf_config:ZtfConfig"),
    "tess": Builtin("aretriever.adapters.tess:TessAdapter", "aretriever.adapters.tess_config:TessConfig"),
    "demo": Builtin("aretriever.adapters.demo:DemoAdapter", "aretriever.adapters.demo_config:DemoConfig"),
}

ADAPTERS: dict[str, type[Any]]  # built lazily by __getattr__ below


def available() -> list[str]:
    """Names of every adapter, built-in and third-party, sorted (nothing is imported)."""
    return sorted({*_BUILTIN, *_entry_points()})


def get_adapter(name: str, cfg: Config) -> Adapter:
    """The adapter called ``name`` (case-insensitive), built with its section of ``cfg``.

    Parameters
    ----------
    name : str
        An adapter name such as ``"ztf"``.
    cfg : aretriever.settings.Config
        The whole configuration; the adapter gets ``cfg.observatories.<name>``, validated by
        its class's ``config_model`` (its defaults when the file has no section; None for an
        adapter without a config model and without a section).

    Raises
    ------
    ConfigError
        No adapter has that name, or a third-party adapter failed to import.
    """
    key = name.strip().lower()
    adapter_class = adapter_class_for(key)
    section = getattr(cfg.observatories, key, None)
    if section is None and hasattr(adapter_class, "config_model"):
        section = cfg.observatories.section(key)  # its config model's defaults
    adapter: Adapter = adapter_class(section)
    return adapter


def refresh() -> None:
    """Forget what was discovered and loaded (e.g. after installing an adapter package)."""
    _entry_points.cache_clear()
    _load.cache_clear()
    globals().pop("ADAPTERS", None)


def builtin_config_models() -> dict[str, type[Any]]:
    """The config model of every built-in adapter by name, in section order (adapters not imported)."""
    return {name: _load(name, builtin.config) for name, builtin in _BUILTIN.items()}


def is_builtin(name: str) -> bool:
    """Whether ``name`` (lower case) is a built-in adapter (its section is a typed field)."""
    return name in _BUILTIN


def adapter_class_for(name: str) -> type[Any]:
    """The adapter class registered as ``name`` (lower case), imported on demand."""
    if name in _BUILTIN:
        return _load(name, _BUILTIN[name].adapter)
    found = _entry_points().get(name)
    if found is None:
        raise ConfigError(f"config: unknown observatory {name!r}; available: {', '.join(available())}")
    return _load(name, found.value)


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def _load(name: str, spec: str) -> type[Any]:
    module_name, _, attr = spec.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"config: adapter {name!r} ({spec}) cannot be loaded: {exc}") from exc
    if not isinstance(loaded, type):
        raise ConfigError(f"config: adapter {name!r} ({spec}) is not a class")
    return loaded


def __getattr__(attr: str) -> Any:
    # PEP 562: ``ADAPTERS`` imports every adapter, so it is only built when someone asks for it,
    # then kept as a module attribute (a snapshot: register adapters in _BUILTIN or an entry point).
    if attr == "ADAPTERS":
        adapters = {name: adapter_class_for(name) for name in available()}
        globals()["ADAPTERS"] = adapters
        return adapters
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
