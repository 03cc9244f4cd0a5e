"""Custom code: a user's subclass, loaded by dotted module path and class name.

A custom class may declare parameters of its own (``parameters = <a pydantic model>``), given
like the built-in ones (``analysis_kwargs={"num_kernels": 20}``, a config file's ``analysis:``
section) and validated against what the loaded class declares (:func:`parameter_errors`). A
subclass written for the seed may keep the seed's method names where aretriever has the same step
(``analyze_photometry`` is :meth:`Analysis.analyze`); a seed name with no equivalent fails at load
(:func:`check_seed_names`). The tables are ``seed_methods`` of each base class.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

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
        The module cannot be imported, has no such class, the class does not extend ``base``, or it
        defines a seed method name that is never called (:func:`check_seed_names`).
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
    check_seed_names(cls, base, key)
    return cls


# -- parameters a custom class declares ---------------------------------------------------------


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


# -- the seed's method names ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedMethod:
    """What becomes of a seed (AstroRetriever) method name that a subclass defines.

    ``ours`` is the step it is called as (the same meaning, with aretriever's arguments), or None
    when aretriever has no such step; ``advice`` says what to write instead.
    """

    ours: str | None
    advice: str


def adopt_seed_names(cls: type, names: Mapping[str, SeedMethod]) -> None:
    """Make a seed-named method of ``cls`` the step it stands for (from ``__init_subclass__``).

    A class attribute rather than a wrapper made at load time: instances are pickled to pool
    workers by class name, and the class must behave the same however it was imported.
    """
    own = vars(cls)
    for seed, method in names.items():
        if method.ours is not None and seed in own and method.ours not in own:
            setattr(cls, method.ours, own[seed])


def check_seed_names(cls: type, base: type, key: str) -> None:
    """Refuse seed method names aretriever would never call, or could not call as written.

    Raises
    ------
    ConfigError
        Naming the method and what to override instead.
    """
    names: Mapping[str, SeedMethod] = getattr(base, "seed_methods", {})
    for seed, method in names.items():
        defined = [c for c in cls.__mro__ if c is not base and issubclass(c, base) and seed in vars(c)]
        if not defined:
            continue
        where = f"config: {key}: {qualified(defined[0])}.{seed}"
        if method.ours is None:
            raise ConfigError(f"{where} is a seed (AstroRetriever) method never called here: {method.advice}")
        if any(method.ours in vars(c) and vars(c)[method.ours] is not vars(c)[seed] for c in defined):
            raise ConfigError(f"{where} and {method.ours} are one step (the seed's name and ours); keep one")
        if not _binds(vars(defined[0])[seed], getattr(base, method.ours)):
            raise ConfigError(f"{where} is called as {method.ours}: {method.advice}")


def _binds(func: Any, like: Any) -> bool:
    """Whether ``func`` accepts the positional arguments ``like`` is called with (self included)."""
    wanted = [
        p
        for p in inspect.signature(like).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    try:
        inspect.signature(func).bind(*[None] * len(wanted))
    except (TypeError, ValueError):
        return False
    return True
