"""Running the async engine from synchronous code (scripts, notebooks)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running event loop."""

    async def main() -> T:
        return await make()

    def in_new_loop() -> T:
        coro: Coroutine[Any, Any, T] = main()
        return asyncio.run(coro)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return in_new_loop()
    # a notebook's loop is running in this thread: run ours beside it
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aretriever-project") as pool:
        return pool.submit(in_new_loop).result()
