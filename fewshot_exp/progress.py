"""Progress bars (tqdm) with one behaviour everywhere: redrawn live on a terminal; in a log file (SLURM, nohup),
where every redraw would be a new line, refreshed at most once a minute. `TQDM_DISABLE=1` turns them off."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 60.0  # seconds between updates when stderr is not a terminal


def progress(iterable: Iterable | None = None, show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (`show=False`: a silent one). TQDM_DISABLE still applies; the refresh intervals are this
    module's."""
    if not show:
        kwargs["disable"] = True
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", max(10.0, kwargs["mininterval"]))
    return tqdm(iterable, dynamic_ncols=True, **kwargs)
