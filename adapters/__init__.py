"""Observatory adapters and their registry by name.

Built-in adapters are listed in ``_BUILTIN`` as ``"module:Class"`` strings (adding one is one
line); third-party adapters register a class under the entry point group
``aretriever.adapters``::

    [project.entry-points."aretriever.adapters"]
    myobs = "my_package.adapter:MyAdapter"

An adapter class names its config section's model in ``config_model`` (a
:class:`~aretriever.settings.LaneConfig` subclass): ``observatories.<name>`` in a config file is
validated by it, for built-in and third-party adapters alike. See ``docs/adapters.md``.

Nothing is imported until it is asked for, so ``import aretriever.adapters`` stays cheap (the
ZTF adapter pulls in pandas and pyarrow). ``ADAPTERS`` (every adapter class by name) loads them
all on first access and is a snapshot from then on.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Final

from aretriever.errors import ConfigError

if TYPE_CHECKING:
    from aretriever.settings import Config

    from .base import Adapter

ENTRY_POINT_GROUP: Final = "aretriever.adapters"

_BUILTIN: Final[dict[str, str]] = {
    "demo": "aretriever.adapters.demo:DemoAdapter",
    "tess": "aretriever.adapters.tess:TessAdapter",
    "ztf": "aretriever.adapters.ztf:ZtfAdapter",
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


def adapter_class_for(name: str) -> type[Any]:
    """The adapter class registered as ``name`` (lower case), imported on demand."""
    if name in _BUILTIN:
        return _load(name, _BUILTIN[name])
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
