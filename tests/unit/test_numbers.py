"""aretriever.numbers is the one home of finite floats and sky distances (issue #13)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from aretriever.numbers import finite_or_none, separation_deg

REPO = Path(__file__).resolve().parents[2]
# the copies these helpers replaced (array filters named _finite are another thing); the fake
# archive (aretriever/testing) keeps its own on purpose: it must not share the client's code
COPIES = {"separation_arcsec", "finite_float"}


def test_no_module_defines_its_own_copy_of_the_helpers() -> None:
    found = [
        f"{path.relative_to(REPO)}: {node.name}"
        for folder in ("aretriever", "adapters", "store")
        for path in sorted((REPO / folder).rglob("*.py"))
        if "testing" not in path.parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name in COPIES
    ]
    assert found == []


def test_separation_in_arcsec_as_the_adapters_use_it() -> None:
    # 1 arcsec in declination, and across the RA wrap at 0/360 on the equator
    one = separation_deg(10.0, 20.0, 10.0, 20.0 + 1 / 3600) * 3600
    wrap = separation_deg(359.9995, 0.0, 0.0005, 0.0) * 3600
    assert np.isclose(one, 1.0, rtol=1e-9) and np.isclose(wrap, 3.6, rtol=1e-9)
    assert finite_or_none(np.float32(2.5)) == 2.5 and finite_or_none(float("nan")) is None
