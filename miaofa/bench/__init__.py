"""`miaofa bench`: benchmarks of the whole shop that print numbers, not timed tests.

One module per scenario (latency, burst, steady, flash_sale, lost_callbacks, durability_cost), the
shared machinery in `common` (stack startup, HTTP client, database timestamps, stats, output), the
Typer commands in `cli`. Latencies under load come from the shop's own timestamps in PostgreSQL,
read after the run, so the measuring client does not load the API by polling.
"""
