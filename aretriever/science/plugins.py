"""Custom code: a user's subclass, loaded by dotted module path and class name."""

from __future__ import annotations

import importlib
from typing import Final, TypeVar

from aretriever.errors import ConfigError

T = TypeVar("T")

# the seed's own module paths (its config files and README name them) are ours under other names
SEED_MODULES: Final = {
    "src.analysis": "aretriever.science.analysis",
    "src.finder": "aretriever.science.finder",
    "src.quality": "aretriever.science.quality",
    "src.simulator": "aretriever.science.simulator",
}


def load_class(module: str, name: str, base: type[T], key: str) -> type[T]:
    """The class ``name`` of ``module``, checked to be ``base`` or a subclass of it.

    Parameters
    ----------
    module, name
        Where the class lives (e.g. ``"extensions.my_analysis"``, ``"NewAnalysis"``).
    base
        The class it must extend.
    key
        The config key that named it (``analysis.finder_class``), for the error message.

    Raises
    ------
    ConfigError
        The module cannot be imported, has no such class, or the class does not extend ``base``.
    """
    module = SEED_MODULES.get(module, module)
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"config: {key}: cannot import module {module!r}: {exc}") from exc
    cls = getattr(found, name, None)
    if cls is None:
        public = sorted(n for n, v in vars(found).items() if isinstance(v, type) and not n.startswith("_"))
        raise ConfigError(f"config: {key}: module {module!r} has no class {name!r} (it has {public})")
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise ConfigError(
            f"config: {key}: {module}.{name} is not a subclass of {base.__module__}.{base.__qualname__}"
        )
    return cls
