"""retry_transient: reads and claims survive a database that is briefly away."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aretriever.store.transient import retry_transient


def _lost() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


async def test_transient_errors_are_retried_until_the_call_succeeds() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _lost()
        return "answer"

    assert await retry_transient(flaky, what="test", base_s=0.001) == "answer"
    assert len(calls) == 3


async def test_errors_of_the_data_are_not_retried() -> None:
    calls = []

    async def refused() -> None:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))

    with pytest.raises(sa.exc.IntegrityError):
        await retry_transient(refused, what="test", base_s=0.001)
    assert len(calls) == 1


async def test_retries_stop_after_the_time_allowed() -> None:
    calls = []

    async def down() -> None:
        calls.append(1)
        raise _lost()

    with pytest.raises(sa.exc.OperationalError):
        await retry_transient(down, what="test", for_s=0.05, base_s=0.01)
    assert 2 <= len(calls) < 20
