"""A lane's share of ``rate_per_s`` among workers: computed once, used by the limiter, reported."""

from __future__ import annotations

from pathlib import Path

from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.service.metrics import EngineMetrics


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in:\n{text}")


async def test_metrics_report_the_rate_the_limiter_uses(db_url: str, tmp_path: Path) -> None:
    cfg = load_config(
        False,
        overrides={
            "store": {"data_root": str(tmp_path / "data"), "db_url": db_url},
            "observatories": {"ztf": {"base_url": "http://127.0.0.1:9", "rate_per_s": 30.0}},
            "engine": {"n_workers": 3},
        },
    )
    engine = Engine(cfg, observatories=["ztf"])
    assert engine.lane_rate("ztf") == 10.0
    metrics = EngineMetrics()
    metrics.engine = engine
    async with engine.opened():
        limiter = engine._lanes["ztf"].http._limiter  # what throttles the requests
        assert limiter.max_rate / limiter.time_period == 10.0
        text = metrics.text(metrics.registry()).decode()
    assert _metric(text, 'aretriever_lane_rate_limit{observatory="ztf"}') == 10.0
