"""Float32 islands under bf16 autocast (`train.amp`).

Autocast runs matrix products in bf16 (8 bits of mantissa). That suits the encoder's convolutions, but not
the few small products after it whose terms nearly cancel: the squared distance ||q||^2 - 2 q.p + ||p||^2,
ProtoMAML's head logits 2 c.z - ||c||^2. There a relative error of 2^-9 in the large terms swamps the
difference (tests/test_algorithm_contract.py compares bf16 and float32 updates of every algorithm).
`float32` runs such a function with autocast off and its bf16/fp16 tensor arguments cast to float32; with
autocast off it calls the function unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Fn = TypeVar("Fn", bound=Callable[..., Any])
LOW_PRECISION = (torch.bfloat16, torch.float16)


def upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in LOW_PRECISION:
        return value.float()
    return value


def autocasting() -> bool:
    return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")


def float32(fn: Fn) -> Fn:
    """`fn` in float32 when called under autocast (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not autocasting():
            return fn(*args, **kwargs)
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*map(upcast, args), **{k: upcast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
