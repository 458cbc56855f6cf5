"""Benchmarks of the runner's hot paths against peers: `python -m benchmarks.run` (see benchmarks/run.py)."""

import fewshot_exp  # noqa: F401  # huge pages as the command line runs (fewshot_exp/allocator.py), before torch allocates
