"""The lane's rate limiter, under looptime's fake clock: no real sleeps."""

from __future__ import annotations

import asyncio

import pytest

from aretriever.http import make_limiter


# Rates are powers of two: aiolimiter's float level arithmetic is then exact, which looptime's
# rounded clock needs (with 1/20 s it can wake a hair early forever, at one frozen instant).
@pytest.mark.looptime
@pytest.mark.parametrize(("rate", "n"), [(16.0, 160), (2.0, 20), (0.5, 4)])
async def test_limiter_holds_the_rate(rate: float, n: int) -> None:
    loop = asyncio.get_running_loop()
    limiter = make_limiter(rate)
    times: list[float] = []

    async def one() -> None:
        async with limiter:
            times.append(loop.time())

    t0 = loop.time()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = max(times) - t0
    burst = max(1.0, rate)
    # n requests with a bucket of one second's worth: (n - burst) / rate seconds, never faster.
    assert elapsed == pytest.approx((n - burst) / rate, rel=0.05, abs=0.05)
    for i in range(len(times)):  # never more than burst + rate*window in any window
        window = [t for t in times if times[i] <= t < times[i] + 1.0]
        assert len(window) <= burst + rate + 1


# Rates are powers of two: aiolimiter's float level arithmetic is then exact, which looptime's
# rounded clock needs (with 1/20 s it can wake a hair early forever, at one frozen instant).
@pytest.mark.looptime
async def test_limiter_is_per_lane() -> None:
    loop = asyncio.get_running_loop()
    slow, fast = make_limiter(1.0), make_limiter(128.0)
    t0 = loop.time()
    for _ in range(100):
        async with fast:
            pass
    assert loop.time() - t0 < 1.1  # the slow lane's limiter never held the fast one up
    for _ in range(3):
        async with slow:
            pass
    assert loop.time() - t0 >= 2.0
