"""How much pairing the calls of a round changes a ratio: per block of rounds of one row of a benchmark JSON,
the ratio of the two contenders' medians against the median of their per-round ratios (benchmarks/timing.py).

    python -m benchmarks.pairing [benchmarks/results.json] [--row protonet-train-28px] [--block 20]
        [--of ours] [--to "encoder limit"]
    python -m benchmarks.pairing benchmarks/amp.json --row "ProtoNet training step 28 px" \
        --of float32 --to "bf16 autocast"

Reads the JSON of `benchmarks.run` (rows with contenders and their `times_ms`) and of `benchmarks.amp` and
`benchmarks.fusion` (rows of contender -> times in ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from tabulate import tabulate

from benchmarks.timing import format_ratio, paired_ratio

REPO = Path(__file__).resolve().parents[1]


def blocks(numerator: list[float], denominator: list[float], size: int) -> list[list[str]]:
    """Per block of `size` rounds (and all rounds): rounds, ratio of medians, paired ratio (95% interval)."""
    spans = [(start, min(start + size, len(numerator))) for start in range(0, len(numerator), size)]
    lines = []
    for start, end in [*spans, (0, len(numerator))]:
        a, b = numerator[start:end], denominator[start:end]
        of_medians = statistics.median(a) / statistics.median(b)
        lines.append([f"{start + 1}-{end}", f"{of_medians:.3f}", format_ratio(paired_ratio(a, b), 3)])
    return lines


def round_times(rows: list[dict[str, Any]] | dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    """row -> timed contender -> its times per round (ms), from either JSON layout (see the module docstring)."""
    if isinstance(rows, dict):  # benchmarks.amp / benchmarks.fusion
        return rows
    return {
        row["name"]: {label: c["times_ms"] for label, c in row["contenders"].items() if "times_ms" in c} for row in rows
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--row", default="protonet-train-28px")
    parser.add_argument("--block", type=int, default=20, help="rounds per block")
    parser.add_argument("--of", default="ours", help="the numerator contender")
    parser.add_argument("--to", default="encoder limit", help="the denominator contender")
    args = parser.parse_args(argv)
    rows = round_times(json.loads(args.results.read_text())["rows"])
    if args.row not in rows:
        parser.error(f"no row {args.row!r} in {args.results} (rows: {', '.join(rows)})")
    times = rows[args.row]
    for label in (args.of, args.to):
        if label not in times:
            parser.error(f"row {args.row!r} has no timed contender {label!r} (contenders: {', '.join(times)})")
    lines = blocks(times[args.of], times[args.to], args.block)
    print(f"{args.row}: {args.of} / {args.to}")
    print(tabulate(lines, headers=["rounds", "ratio of medians", "paired (95% interval)"], disable_numparse=True))


if __name__ == "__main__":
    main()
