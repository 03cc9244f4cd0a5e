"""Custom code: a user's subclass, loaded by dotted module path and class name.

A custom class may declare parameters of its own (``parameters = <a pydantic model>``), given
like the built-in ones (``analysis_kwargs={"num_kernels": 20}``, a config file's ``analysis:``
section) and validated against what the loaded class declares (:mod:`aretriever.declared`). A
subclass written for the seed may keep the seed's method names where aretriever has the same step
(``analyze_photometry`` is :meth:`Analysis.analyze`); a seed name with no equivalent fails at load
(:func:`check_seed_names`). The tables are ``seed_methods`` of each base class.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aretriever.declared import find_class, qualified
from aretriever.errors import ConfigError

T = TypeVar("T")


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
        class, the class does not extend ``base``, or it defines a seed method name that is never
        called (:func:`check_seed_names`).
    """
    cls = find_class(module, name, key)
    if not issubclass(cls, base):
        raise ConfigError(
            f"config: {key}: {module}.{name} is not a subclass of {base.__module__}.{base.__qualname__}"
        )
    check_seed_names(cls, base, key)
    return cls


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
