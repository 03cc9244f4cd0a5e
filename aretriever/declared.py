"""Parameters a custom science class declares, checked where the config is validated.

A custom ``Analysis`` (``Finder``, ``QualityChecker``, ``Simulator``) subclass may declare
parameters of its own as a pydantic model, ``parameters = KernelParameters``. The config's
analysis part holds them as extra keys and checks them here against the model of the class it
names. This module sits below the science layer (the config may not import it): it finds the
class by module path, as the science's own loader does, and reads only its ``parameters``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from aretriever.errors import ConfigError

__all__ = ["MAIN_MODULES", "SEED_MODULES", "declared_model", "find_class", "parameter_errors", "qualified"]

# the seed's own module paths (its config files and README name them) are ours under other names
SEED_MODULES: Final = {
    "src.analysis": "aretriever.science.analysis",
    "src.finder": "aretriever.science.finder",
    "src.quality": "aretriever.science.quality",
    "src.simulator": "aretriever.science.simulator",
}

# the script being run: ``__main__`` here, ``__mp_main__`` where multiprocessing re-ran it
MAIN_MODULES: Final = frozenset({"__main__", "__mp_main__"})


def find_class(module: str, name: str, key: str) -> type:
    """The class ``name`` of ``module`` (the seed's module paths mapped to ours).

    Raises
    ------
    ConfigError
        The module is the script being run (``__main__``), cannot be imported or has no such
        class; ``key`` names the setting.
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
    if not isinstance(cls, type):
        public = sorted(n for n, v in vars(found).items() if isinstance(v, type) and not n.startswith("_"))
        raise ConfigError(f"config: {key}: module {module!r} has no class {name!r} (it has {public})")
    return cls


def declared_model(cls: type) -> type[BaseModel] | None:
    """The model of the extra parameters ``cls`` declares (its ``parameters`` attribute), if any."""
    model = getattr(cls, "parameters", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def parameter_errors(
    cls: type, builtin: type[BaseModel], given: Mapping[str, Any], loc: tuple[str, ...]
) -> tuple[dict[str, Any], list[InitErrorDetails]]:
    """``given`` (the keys ``builtin`` does not have) validated against what ``cls`` declares.

    Returns the declared parameters with their defaults filled (they shape the results, so they
    belong in the config and its hash even when not given), and the errors located at ``loc``.
    """
    model = declared_model(cls)
    accepted = (sorted(model.model_fields) if model else [], sorted(builtin.model_fields))
    if model is None:
        return {}, [_unknown(key, value, cls, accepted, loc) for key, value in given.items()]
    clash = sorted(set(model.model_fields) & set(builtin.model_fields))
    if clash:
        raise ConfigError(
            f"config: {'.'.join(loc) or 'analysis'}: {qualified(cls)}.parameters redeclares the built-in "
            f"parameter(s) {clash}; give them other names"
        )
    try:
        values = model.model_validate(dict(given)).model_dump()
    except ValidationError as exc:
        return {}, [_relocated(err, cls, accepted, loc) for err in exc.errors()]
    return values, []


Accepted = tuple[list[str], list[str]]  # (the class's own parameters, the built-in ones)


def _unknown(key: str, value: Any, cls: type, accepted: Accepted, loc: tuple[str, ...]) -> InitErrorDetails:
    own, builtin = accepted
    error = PydanticCustomError(
        "unknown_parameter",
        "{cls} has no parameter '{key}' (its own: {own}; built-in: {builtin}); "
        "a class declares its own as `parameters = <a pydantic model>`",
        {"cls": qualified(cls), "key": key, "own": ", ".join(own) or "none", "builtin": ", ".join(builtin)},
    )
    return InitErrorDetails(type=error, loc=(*loc, key), input=value)


def _relocated(err: ErrorDetails, cls: type, accepted: Accepted, loc: tuple[str, ...]) -> InitErrorDetails:
    if err["type"] == "extra_forbidden":
        return _unknown(str(err["loc"][-1]), err["input"], cls, accepted, loc)
    details = InitErrorDetails(type=err["type"], loc=(*loc, *err["loc"]), input=err["input"])
    if "ctx" in err:
        details["ctx"] = err["ctx"]
    return details
