"""The benchmark runs end to end on tiny shapes (`--smoke`) and reports every row; no timing is asserted."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from benchmarks import amp, fusion, pairing, run
from benchmarks.timing import interleaved_times, paired_ratio

ROWS = {"protonet-train-16px", "protonet-eval-16px", "maml-1step-16px", "maml-5step-16px", "maml-3tasks-16px"}


def check_row(row: dict) -> None:
    roles = [c["role"] for c in row["contenders"].values()]
    assert roles.count("limit") == 1 and roles.count("peer") == 1 and "ours" in roles, row["name"]
    for label, c in row["contenders"].items():
        if "skipped" in c:
            assert c["role"] == "peer" and "pip install" in c["skipped"], (row["name"], label)
            continue
        assert c["repeats"] >= 1 and all(t > 0 for t in c["times_ms"]), (row["name"], label)
        assert c["ms_per_episode"] > 0 and c["episodes_per_s"] > 0, (row["name"], label)
    assert row["ratios"] and all(r > 0 for r in row["ratios"].values()), row["name"]
    for key, (low, high) in row["ratio_intervals_95"].items():
        assert low <= row["ratios"][key] <= high, (row["name"], key)


def test_the_paired_ratio_follows_the_drift_that_a_ratio_of_medians_mixes_up():
    # B takes 1.1x A's time in every round but the third, where only B's call is slowed down 3x; the machine
    # is 3x slower for both in the last two rounds.
    a = [1.0, 1.0, 1.0, 3.0, 3.0]
    b = [1.1, 1.1, 3.3, 3.3, 3.3]
    assert statistics.median(b) / statistics.median(a) == 3.3  # the slow rounds decide both medians
    mid, low, high = paired_ratio(b, a)
    assert (mid, low, high) == pytest.approx((1.1, 1.1, 3.3))  # 5 rounds: the interval is the range of the ratios


def test_the_paired_ratio_interval_holds_the_central_ranks_of_the_round_ratios():
    denominator = [1.0] * 100
    numerator = [1 + i / 100 for i in range(100)]  # ratios 1.00, 1.01, ..., 1.99 (shuffled order)
    numerator = numerator[::2] + numerator[1::2]
    mid, low, high = paired_ratio(numerator, denominator)
    # the median, and ranks 40 and 61 of 100 (n/2 -+ 1.96 sqrt(n)/2): ratios 1.39 and 1.60
    assert (mid, low, high) == pytest.approx((1.495, 1.39, 1.60))
    assert paired_ratio([2.0, 3.0], [1.0, 1.0]) == (2.5, 2.0, 3.0)  # few rounds: the range


def test_interleaved_rounds_alternate_forward_and_reverse_order():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved_times(steps, torch.device("cpu"), 0.0, 3, 3)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")  # warm-up, then the 3 rounds
    assert all(len(t) == 3 for t in times.values())


def test_smoke_run_reports_every_row_with_positive_numbers(tmp_path, capsys):
    out = tmp_path / "results.json"
    run.main(["--smoke", "--no-memory", "--out", str(out)])
    report = json.loads(out.read_text())
    assert {row["name"] for row in report["rows"]} == ROWS
    for row in report["rows"]:
        check_row(row)
    printed = capsys.readouterr().out
    assert all(name in printed for name in ROWS) and "speed vs peer" in printed


@pytest.mark.slow
def test_peak_memory_comes_from_a_fresh_process_per_row(tmp_path):
    out = tmp_path / "results.json"
    run.main(["--smoke", "--rows", "protonet-train", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    measured = [c["peak_mib"] for c in row["contenders"].values() if "skipped" not in c]
    assert measured and all(m is not None and m >= 0 for m in measured)


@pytest.mark.slow
def test_a_peer_that_does_not_import_is_reported_as_skipped(tmp_path):
    # Shadow both peers with packages that fail to import, as a missing install would.
    for name in ("easyfsl", "higher"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--no-memory", "--rows", "protonet-train", "maml-1step"]
        + ["--threads", "1", "--out", str(out)],
        cwd=REPO,
        env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    skipped = {(row["name"], label): c for row in report["rows"] for label, c in row["contenders"].items()}
    assert "no easyfsl here" in skipped["protonet-train-16px", "easyfsl"]["skipped"]
    assert "no higher here" in skipped["maml-1step-16px", "higher 2nd order"]["skipped"]
    for row in report["rows"]:
        check_row(row)
        assert not any(k.endswith("over peer") for k in row["ratios"])
    assert "skipped" in done.stdout


def test_fusion_benchmark_times_each_default_against_what_ran_before(tmp_path, capsys):
    out = tmp_path / "fusion.json"
    fusion.main(["--smoke", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    maml = [f"2nd-order MAML meta-step 16 px, {k} step(s)" for k in (1, 5)]
    assert set(rows) == {"Conv-4 training step 16 px", *maml}
    assert list(rows["Conv-4 training step 16 px"]) == ["fused", "unfused"]
    assert all(list(rows[m]) == ["channels_last, BN rows, short 2nd backward", "NCHW, F.batch_norm"] for m in maml)
    assert all(times and all(t > 0 for t in times) for row in rows.values() for times in row.values())
    assert "speed-up" in capsys.readouterr().out


def test_amp_benchmark_times_float32_against_bf16_autocast(tmp_path, capsys):
    out = tmp_path / "amp.json"
    amp.main(["--smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    rows = report["rows"]
    maml = [f"MAML {order}-order meta-step 16 px, 4 tasks" for order in ("2nd", "1st")]
    assert set(rows) == {"ProtoNet training step 16 px", *maml}
    assert all(list(row) == ["float32", "bf16 autocast"] for row in rows.values())
    assert all(times and all(t > 0 for t in times) for row in rows.values() for times in row.values())
    assert isinstance(report["cpu_bf16_flags"], list)
    assert "CPU bf16 flags" in capsys.readouterr().out


def test_pairing_compares_the_two_ratios_per_block_of_rounds(tmp_path, capsys):
    times = {"ours": [1.1, 1.1, 3.3, 3.3, 3.3, 2.2], "encoder limit": [1.0, 1.0, 1.0, 3.0, 3.0, 2.0]}
    row = {"name": "r", "contenders": {label: {"times_ms": t} for label, t in times.items()}}
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"rows": [row]}))
    pairing.main([str(out), "--row", "r", "--block", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "r: ours / encoder limit"
    blocks = [line.split() for line in lines[3:]]
    # rounds 1-3: medians 1.1 / 1.0; paired: ratios 1.1, 1.1, 3.3. Rounds 4-6: all 1.1. All: medians 2.75 / 1.5.
    assert [b[:3] for b in blocks] == [["1-3", "1.100", "1.100"], ["4-6", "1.100", "1.100"], ["1-6", "1.833", "1.100"]]
    assert blocks[0][3:] == ["(1.100-3.300)"]
    with pytest.raises(SystemExit):
        pairing.main([str(out), "--row", "r", "--to", "easyfsl"])
    assert "no timed contender 'easyfsl'" in capsys.readouterr().err


def test_pairing_reads_the_on_off_benchmarks_json(tmp_path, capsys):
    out = tmp_path / "amp.json"
    rows = {"step": {"float32": [2.0, 6.0, 2.0, 6.0], "bf16 autocast": [1.0, 6.0, 5.0, 4.0]}}
    out.write_text(json.dumps({"rows": rows}))
    pairing.main([str(out), "--row", "step", "--of", "float32", "--to", "bf16 autocast", "--block", "4"])
    lines = capsys.readouterr().out.splitlines()
    # medians 4.0 / 4.5; paired: ratios 2.0, 1.0, 0.4, 1.5 -> median 1.25
    assert lines[3].split()[:3] == ["1-4", "0.889", "1.250"]
