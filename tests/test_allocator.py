"""Huge pages for large CPU tensors: on by default for the command line, a user's choice kept, measured on/off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from benchmarks import allocator
from benchmarks.peers import missing

PROBE = "import os, fewshot_exp, torch; print(os.environ['THP_MEM_ALLOC_ENABLE'])"


def setting_seen(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = value
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_importing_the_package_turns_huge_pages_on_unless_the_user_chose():
    assert setting_seen(None) == "1"
    assert setting_seen("0") == "0"


@pytest.mark.slow
def test_the_on_off_benchmark_times_both_settings_in_fresh_processes(tmp_path, capsys):
    out = tmp_path / "allocator.json"
    args = "--size 16 --channels 1 --rounds 1 --calls 1 --threads 1 --workloads maml-2nd-order"
    allocator.main([*args.split(), "--out", str(out)])
    report = json.loads(out.read_text())
    assert [r["workload"] for r in report["rows"]] == ["maml-2nd-order"]  # only the workload asked for
    seconds = report["seconds"]
    peers = {"higher-maml-2nd": missing("higher") is None}
    assert set(seconds) == {"ours-maml-2nd", *(p for p, installed in peers.items() if installed)}
    assert all(len(s["on"]) == len(s["off"]) == 1 and min(s["on"] + s["off"]) > 0 for s in seconds.values())
    maml, mine = report["rows"][0], seconds["ours-maml-2nd"]
    assert maml["ours: huge pages speed-up"] == pytest.approx(mine["off"][0] / mine["on"][0])
    if not peers["higher-maml-2nd"]:  # CI installs no bench extra: the peer's columns say why they are empty
        assert maml["peer"].startswith("skipped: higher is not installed")
        return
    theirs = seconds["higher-maml-2nd"]
    assert maml["speed-up over peer, same setting"] == pytest.approx(theirs["on"][0] / mine["on"][0])
    assert maml["speed-up over peer, as shipped"] == pytest.approx(theirs["off"][0] / mine["on"][0])
    assert "as shipped" in capsys.readouterr().out
