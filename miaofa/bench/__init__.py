"""`miaofa bench`: benchmarks of the whole shop that print numbers, not timed tests.

One module per scenario (latency, burst, steady, flash_sale, lost_callbacks, durability_cost,
sync_commit, import_keys, up_time, risk_chain, sim_storage); the machinery split by concern:
`base` (BenchError, REPO, the consoles), `stack` (a stack of its own or the settings' one),
`machine` (where it ran), `stats`, `lean_http` (the load's HTTP client), `shop_client` (the shop
over HTTP and its timestamps in PostgreSQL), `runner` (a run, its table and its JSON); the Typer
commands in `cli`. Latencies under load come from the shop's own timestamps in PostgreSQL, read
after the run, so the measuring client does not load the API by polling.
"""
