"""Huge pages for PyTorch's large CPU tensors, set before torch is imported.

A tensor of 32 MB or more (an 84 px Conv-4 activation of one episode is ~135 MB) is mapped fresh from
the kernel on every allocation, and its first write faults in 4 KiB pages one by one, so an elementwise
op into a fresh large tensor costs several times as much as the same op into an existing one.
PyTorch's `THP_MEM_ALLOC_ENABLE=1` aligns such allocations to 2 MB and asks Linux for transparent
huge pages (`madvise`), which removes most of that cost; the numbers computed are the same (only where
memory comes from changes). PyTorch reads the variable once, at its first allocation, so importing the
`fewshot_exp` package (which `python -m fewshot_exp` does before anything imports torch) calls
`use_huge_pages()`; a value the user set is kept
(`THP_MEM_ALLOC_ENABLE=0 python -m fewshot_exp ...` turns it off). It has no effect off Linux and on
CUDA tensors. Measured on whole steps: `python -m benchmarks.allocator`.
"""

from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> None:
    """Ask PyTorch for huge pages unless the user decided (it acts on Linux only)."""
    os.environ.setdefault(VARIABLE, "1")
