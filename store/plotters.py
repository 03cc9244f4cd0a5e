"""Plotting sits above the store: rows find the code that draws them through an entry point.

``RawPhotometry.plot()`` and ``Lightcurve.plot()`` (the seed's notebook habit) call whatever is
registered under the entry point group ``aretriever.plotters`` (aretriever's own
:mod:`aretriever.plotting` registers itself in ``pyproject.toml``), so the store never imports
plotting code, and another backend can be installed in its place, as pandas finds its plotting
backends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Final

from aretriever.errors import StoreError

GROUP: Final = "aretriever.plotters"


@functools.cache
def plotter(kind: str) -> Callable[..., Any]:
    """The function registered to plot ``kind`` (``"raw"``, ``"lightcurve"``).

    Raises
    ------
    StoreError
        No installed package registers one (aretriever itself does: reinstall it).
    """
    found = [point for point in entry_points(group=GROUP) if point.name == kind]
    if not found:
        raise StoreError(
            f"store: no plotter for {kind!r} is installed (entry point group {GROUP!r});"
            " reinstall aretriever (pip install -e .)"
        )
    loaded: Callable[..., Any] = found[0].load()
    return loaded
