"""The engine reads as its flow: a coordinator (core) over resources, lanes, stages and claims."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "aretriever" / "engine"
PARTS = ("resources", "lanes", "stages", "claims", "lookup")


@pytest.mark.parametrize("part", PARTS)
def test_the_engine_parts_do_not_import_the_coordinator(part: str) -> None:
    tree = ast.parse((ENGINE / f"{part}.py").read_text(encoding="utf-8"))
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "aretriever.engine.core" not in names


def test_engine_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in ENGINE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 430} == {}


def test_the_public_api_is_importable_from_core() -> None:
    from aretriever.engine import core

    for name in ("Engine", "LaneState", "ResultSink", "products_for", "write_version_config"):
        assert hasattr(core, name), name
    for method in ("run", "run_targets", "fetch_by_ids", "fetch_by_tic", "resolve_ids", "plan", "opened",
                   "request_stop", "add_listener", "lane_states", "lane_rate", "row_writer", "sessions"):  # fmt: skip
        assert hasattr(core.Engine, method), method
