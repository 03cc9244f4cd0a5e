"""Prometheus metrics of a running engine, read when scraped (nothing global: one registry each)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aretriever.engine.core import Engine
from aretriever.engine.pipeline import SourceResult

PREFIX = "aretriever"


class EngineMetrics(Collector):
    """Counts source results (fed by the engine's callback) and reads lane and writer state."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.sources: Counter[tuple[str, str]] = Counter()
        self.passes = 0
        self.catalog_failures = 0  # passes over a catalog that could not be loaded
        self._last: dict[str, tuple[float, int]] = {}  # lane -> (time, requests) at the last scrape

    def record(self, result: SourceResult) -> None:
        self.sources[(result.observatory, result.outcome.value)] += 1

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry

    def text(self, registry: CollectorRegistry) -> bytes:
        return generate_latest(registry)

    def collect(self) -> Iterator[Metric]:
        sources = CounterMetricFamily(
            f"{PREFIX}_sources",
            "sources handled, per observatory and outcome",
            labels=["observatory", "outcome"],
        )
        for (observatory, outcome), n in sorted(self.sources.items()):
            sources.add_metric([observatory, outcome], n)
        yield sources
        passes = CounterMetricFamily(f"{PREFIX}_passes", "completed passes over the catalogs")
        passes.add_metric([], self.passes)
        yield passes
        catalogs = CounterMetricFamily(
            f"{PREFIX}_catalog_failures", "passes over a catalog that failed to load (see the log)"
        )
        catalogs.add_metric([], self.catalog_failures)
        yield catalogs
        if self.engine is not None:
            yield from self._lanes(self.engine)
            yield from self._writer(self.engine)

    def _lanes(self, engine: Engine) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "requests": CounterMetricFamily(
                f"{PREFIX}_requests", "HTTP requests sent", labels=["observatory"]
            ),
            "retries": CounterMetricFamily(f"{PREFIX}_retries", "requests retried", labels=["observatory"]),
            "throttled": CounterMetricFamily(
                f"{PREFIX}_http_429", "429 (Too Many Requests) answers", labels=["observatory"]
            ),
            "queued": GaugeMetricFamily(
                f"{PREFIX}_queue_depth", "sources decided and waiting for a fetcher", labels=["observatory"]
            ),
            "rate": GaugeMetricFamily(
                f"{PREFIX}_lane_rate", "requests per second since the last scrape", labels=["observatory"]
            ),
            "limit": GaugeMetricFamily(
                f"{PREFIX}_lane_rate_limit",
                "requests per second this process may send (its share among the workers)",
                labels=["observatory"],
            ),
        }
        now = time.monotonic()
        for name, state in engine.lane_states().items():
            families["requests"].add_metric([name], state.stats.requests)
            families["retries"].add_metric([name], state.stats.retries)
            families["throttled"].add_metric([name], state.stats.statuses.get(429, 0))
            families["queued"].add_metric([name], state.queued)
            families["limit"].add_metric([name], state.rate_per_s)
            then, before = self._last.get(name, (now, state.stats.requests))
            families["rate"].add_metric(
                [name], (state.stats.requests - before) / (now - then) if now > then else 0.0
            )
            self._last[name] = (now, state.stats.requests)
        yield from families.values()

    def _writer(self, engine: Engine) -> Iterator[Metric]:
        rows = engine.row_writer
        pending = GaugeMetricFamily(f"{PREFIX}_writer_pending", "row operations not yet committed")
        lag = GaugeMetricFamily(f"{PREFIX}_writer_lag_seconds", "age of the oldest uncommitted row operation")
        failed = CounterMetricFamily(f"{PREFIX}_writer_failed", "row operations refused after retries")
        pending.add_metric([], rows.pending if rows else 0)
        lag.add_metric([], rows.lag_s if rows else 0.0)
        failed.add_metric([], rows.failed_ops if rows else 0)
        yield from (pending, lag, failed)
