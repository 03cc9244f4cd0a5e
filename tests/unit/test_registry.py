"""The adapter registry: built-ins by name, third-party adapters through entry points."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import aretriever.adapters as registry
from aretriever.adapters.base import Adapter
from aretriever.adapters.ztf import ZtfAdapter
from aretriever.errors import ConfigError
from aretriever.settings import Config, ZtfConfig

PLUGIN = """
class SkyAdapter:
    name = "sky"

    def __init__(self, cfg):
        self.cfg = cfg
"""


@pytest.fixture()
def plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[EntryPoint]]:
    """Entry points the registry will see; a real module ``sky_plugin`` backs the first one."""
    (tmp_path / "sky_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint("Sky", "sky_plugin:SkyAdapter", registry.ENTRY_POINT_GROUP)]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return found if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    registry.refresh()
    yield found
    registry.refresh()
    sys.modules.pop("sky_plugin", None)


def test_builtin_ztf() -> None:
    cfg = Config(observatories={"ztf": {"base_url": "http://fake:1"}})
    adapter = registry.get_adapter("ZTF", cfg)
    assert isinstance(adapter, ZtfAdapter)
    assert isinstance(adapter, Adapter)
    assert adapter.cfg is cfg.observatories.ztf
    assert isinstance(adapter.cfg, ZtfConfig) and adapter.cfg.base_url == "http://fake:1"
    assert "ztf" in registry.available()
    assert registry.ADAPTERS["ztf"] is ZtfAdapter


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        registry.get_adapter("hubble", Config())
    assert "'hubble'" in str(caught.value)
    assert "ztf" in str(caught.value)


def test_third_party_adapter_from_entry_point(plugins: list[EntryPoint]) -> None:
    assert registry.available() == sorted(["demo", "sky", "tess", "ztf"])
    adapter = registry.get_adapter("sky", Config())
    assert type(adapter).__name__ == "SkyAdapter"
    assert adapter.cfg is None  # no section for it in Config.observatories
    assert set(registry.ADAPTERS) == {"demo", "sky", "tess", "ztf"}


def test_broken_third_party_adapter(plugins: list[EntryPoint]) -> None:
    plugins.append(EntryPoint("broken", "no_such_module_xyz:Thing", registry.ENTRY_POINT_GROUP))
    registry.refresh()
    with pytest.raises(ConfigError, match=r"'broken'.*no_such_module_xyz"):
        registry.get_adapter("broken", Config())
    assert type(registry.get_adapter("sky", Config())).__name__ == "SkyAdapter"


def test_import_is_lazy() -> None:
    code = (
        "import sys, aretriever.adapters as a; "
        "assert 'ztf' in a.available(); "
        "print('pandas' in sys.modules, 'aretriever.adapters.ztf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
