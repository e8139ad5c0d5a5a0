"""`python -m device bench` / `bench-remote`: the on-device latency benchmark (see device/bench/cli.py)."""
