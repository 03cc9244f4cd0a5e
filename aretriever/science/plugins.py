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

# the script being run: ``__main__`` here, ``__mp_main__`` where multiprocessing re-ran it
MAIN_MODULES: Final = frozenset({"__main__", "__mp_main__"})


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
        The module is the script being run (``__main__``), cannot be imported, has no such
        class, or the class does not extend ``base``.
    """
    module = SEED_MODULES.get(module, module)
    if module in MAIN_MODULES:
        # found here, at config load, a class of the script would be missing in every pool worker:
        # they do not run the user's script (see aretriever.engine.workers)
        raise ConfigError(
            f"config: {key}: class {name!r} is in the script being run ({module}): the worker"
            " processes cannot load it from there; move it to an importable module (e.g. a .py file"
            " beside the script) and name that module instead"
        )
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
