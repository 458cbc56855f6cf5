"""What an unreachable W&B server costs a run: the seconds from creating a run's tracker to its first metric, online
with W&B's server (a) refusing connections, (b) not routable (packets dropped), (c) accepting connections but never
answering, and offline as the reference.

    python -m benchmarks.wandb_unreachable [--out benchmarks/wandb_unreachable.json]

Each case is a fresh process (the probe's verdict is kept per process: a sweep's later jobs pay nothing), so
the seconds include no interpreter start-up, only `Tracker(...)` and one `log`. W&B's own files go to a temporary
dir.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.provenance import hardware, record

REPO = Path(__file__).resolve().parents[1]
KEY = "k" * 40

CHILD = """
import sys, time, types
from pathlib import Path
from fewshot_exp.tracking import Tracker
logger = types.SimpleNamespace(name="wandb", project="bench", entity=None, mode=types.SimpleNamespace(value="auto"),
                               init_timeout=20.0)
began = time.perf_counter()
tracker = Tracker(Path(sys.argv[1]), logger, name="bench")
tracker.log({"x": 1.0}, 1)
print(time.perf_counter() - began, tracker.wandb_run is not None and tracker.wandb_run.offline)
tracker.finish()
"""


def measure(url: str | None, run_dir: Path) -> dict[str, float | bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"WANDB_SILENT": "true", "WANDB_API_KEY": KEY, "WANDB_MODE": "online" if url else "offline"}
    if url:
        env["WANDB_BASE_URL"] = url
    run_dir.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", CHILD, str(run_dir)], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=True)  # fmt: skip
    seconds, offline = done.stdout.split()
    return {"seconds": float(seconds), "offline": offline == "True"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "wandb_unreachable.json")
    args = parser.parse_args(argv)
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts connections; nobody answers
    cases = {
        "offline (reference)": None,
        "server refuses connections": "http://127.0.0.1:9",
        "server not routable": "http://10.255.255.1:443",
        "server accepts, never answers": f"http://127.0.0.1:{silent.getsockname()[1]}",
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (case, url) in enumerate(cases.items()):
            results[case] = measure(url, Path(tmp) / str(i))
            print(f"{case:32s} {results[case]['seconds']:6.1f} s  offline={results[case]['offline']}", flush=True)
    silent.close()
    report = {**record("benchmarks.wandb_unreachable", sys.argv[1:] if argv is None else argv, hardware()),
              "init_timeout_s": 20.0, "cases": results}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
