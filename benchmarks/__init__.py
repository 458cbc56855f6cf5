"""Benchmarks of the runner's hot paths against peers: `python -m benchmarks.run` (see benchmarks/run.py)."""
