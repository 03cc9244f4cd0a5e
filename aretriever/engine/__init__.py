"""The engine: skip check, lanes (rate limits, retries), the CPU pool, writers' hand-off."""
