"""The generated docs pages: docs/results.md from run dirs, docs/performance.md from the benchmarks' JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_comparisons import episode_accuracies, made_up_run, t_half_width

from benchmarks import channels_last, docs_page, omniglot, results_page

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "threads": 2, "torch": "2.14.1", "python": "3.11.7", "device": "cpu"}
PROVENANCE = {"commit": "abc1234", "uncommitted_changes": True, "started": "2030-01-01 10:00:00 +0000"}


def fake_run(out_dir: Path, name: str, overrides: list[str], **results: float) -> None:
    """A run dir as `python -m fewshot_exp` and `results_page --run` leave it."""
    run_dir = out_dir / name
    (run_dir / ".hydra").mkdir(parents=True)
    shape = {"test/n_way": 5, "test/k_shot": 5, "train/episodes": 2000, "train/n_way": 5, "train/k_shot": 5}
    (run_dir / "results.json").write_text(json.dumps({"test/episodes": 1000, **shape, **results}))
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*overrides, "logger=none"]))
    info = {**PROVENANCE, "command": "python -m benchmarks.results_page --run out", "machine": MACHINE}
    info |= {"finished": "2030-01-01 10:03:37 +0000", "wall_s": 217.2, "resumed": False, "returncode": 0}
    (run_dir / results_page.INFO).write_text(json.dumps(info))


def test_results_page_has_the_provenance_header_and_each_runs_numbers(tmp_path):
    fake_run(tmp_path, "default", [], **{"test/acc": 0.9721, "test/acc_ci95": 0.0034, "val/best_acc": 0.975})
    runs = [results_page.read_run(name, tmp_path) for name in results_page.EXPERIMENTS]
    text = results_page.page(runs, "python -m benchmarks.results_page --run out", tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("**commit**"))
    assert "`abc1234` + uncommitted changes" in header
    assert "2030-01-01 10:00:00 +0000 to 2030-01-01 10:03:37 +0000" in header
    assert "Test CPU 9000, 2 cores, 2 threads, torch 2.14.1, device cpu" in header
    assert "`python -m benchmarks.results_page --run out`" in header
    lines = [line for line in text.splitlines() if line.startswith("| ") and "fewshot_exp" in line]  # the table's
    rows = {line.split("|")[2].strip(): line for line in lines}  # by command
    default = rows["`python -m fewshot_exp`"]
    assert "97.21% ± 0.34% (1000 episodes)" in default and "97.50%" in default and "3 min 37 s" in default
    assert "not run" in rows["`python -m fewshot_exp algorithm=protomaml episode.k_shot=8`"]


def omniglot_run(
    out_dir: Path,
    name: str,
    seed: int,
    lake_error: float,
    extra: list[str],
    folder: str = "omniglot",
    config: str = "",
) -> None:
    """A run dir of benchmarks/omniglot.py's section as `results_page --run` leaves it."""
    overrides = [o.replace("{omniglot}", "/data/omniglot") for o in omniglot.PRESET] + extra + [f"seed={seed}"]
    per_run = {f"test/lake_error/run{i:02d}": lake_error + (1 if i <= 5 else -1) for i in range(1, 11)}
    fake_run(out_dir, f"{folder}/{name}/seed{seed}", overrides, **{"test/acc": 0.9, "test/acc_ci95": 0.01,
             "test/lake_error": lake_error, "test/episodes_fingerprint": "f", **per_run})  # fmt: skip
    hydra = out_dir / folder / name / f"seed{seed}" / ".hydra"
    (hydra / "config.yaml").write_text(f"seed: {seed}\nepisode: {{n_way: 20, k_shot: 1}}\n{config}")
    choices = "{dataset: omniglot, algorithm: protonet, distance: l2}"
    (hydra / "hydra.yaml").write_text(
        f"hydra:\n  runtime:\n    choices: {choices}\n  overrides:\n    task: {overrides}\n"
    )


def test_results_page_omniglot_section_beside_the_published_numbers_with_its_ablation(tmp_path):
    for seed, lake_error in enumerate([8.0, 10.0, 12.0]):
        omniglot_run(tmp_path, "preset", seed, lake_error, [])
    omniglot_run(tmp_path, "no_tta", 0, 15.5, ["eval_only=true", "eval.tta=0"])
    for seed, lake_error in enumerate([9.0, 12.0, 13.0]):
        omniglot_run(tmp_path, "one_model", seed, lake_error, ["algorithm.members=1"])
    runs = [results_page.read_run(name, tmp_path) for name in results_page.EXPERIMENTS]
    text = results_page.page(runs, "python -m benchmarks.results_page --run out", tmp_path)
    section = text.split('## Omniglot "minimal"')[1].split("## ProtoNet, MAML")[0]
    assert "| Deep convolutional network (Lake et al. 2015)" in section and "24.0%" in section
    ours = next(line for line in section.splitlines() if "experiment=omniglot_minimal` (this page)" in line)
    assert "10.00% ± 4.97 (3 seeds)" in ours and "not run" in ours  # small2 not run
    assert "**commit** `abc1234` + uncommitted changes" in section and "3 min 37 s per seed" in section
    variants = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")}
    assert "10.00% ± 4.97 (3 seeds)" in variants["`preset`"] and "| 11.0% " in variants["`preset`"]
    assert "15.50% (1 seed)" in variants["`no_tta`"] and "| 14.5% " in variants["`no_tta`"]
    # against the preset, seed by seed: differences 1, 2, 1 and their t-based interval, 4.303 * 0.577 / sqrt(3)
    cells = {name: [cell.strip() for cell in line.split("|")] for name, line in variants.items()}
    assert "+7.50 (seed 0)" in cells["`no_tta`"] and "+1.33 ± 1.43 (3 seeds)" in cells["`one_model`"]
    assert "–" in cells["`preset`"]
    assert "What was tried" not in section  # no tuning runs in this out dir
    # a tuning run is described by the settings of its saved config that differ from the preset's run's
    augment = "dataset: {root: /data/omniglot, augment: {enabled: true}}\ntrain: {episodes: 3000}\n"
    omniglot_run(tmp_path, "augment", 0, 15.0, [], folder="omniglot_tuning", config=augment)
    omniglot_run(tmp_path, "same", 0, 11.0, [], folder="omniglot_tuning")
    text = results_page.page(runs, "python -m benchmarks.results_page --run out", tmp_path)
    tried = text.split("### What was tried")[1].split("## ProtoNet, MAML")[0]
    line = next(line for line in tried.splitlines() if line.startswith("| `augment`"))
    assert "`dataset.augment.enabled=true` `train.episodes=3000` |" in line and "15.00% (1 seed)" in line
    assert "dataset.root" not in line
    assert "none: the preset's settings" in next(line for line in tried.splitlines() if line.startswith("| `same`"))
    assert "/data/omniglot" not in text


def test_omniglot_jobs_run_the_preset_first_and_reevaluate_its_own_models(tmp_path):
    jobs = dict(omniglot.jobs(tmp_path))
    names = list(jobs)
    assert names[: len(omniglot.SEEDS)] == [f"omniglot/preset/seed{s}" for s in omniglot.SEEDS]
    assert jobs["omniglot/preset/seed1"] == [*omniglot.PRESET, "seed=1"]
    again = jobs["omniglot/no_tta/seed1"]
    assert f"checkpoint={tmp_path.resolve()}/omniglot/preset/seed1" in again and "eval_only=true" in again
    assert not any(o.startswith("seed=") for o in again)  # an eval_only run takes its model's seed
    assert names.index("omniglot/no_tta/seed0") > names.index(f"omniglot/preset/seed{omniglot.SEEDS[-1]}")


def test_results_page_only_rewrites_the_sections_it_reruns(tmp_path):
    """`--only omniglot` writes the Omniglot section again from its runs and keeps the other sections as the page
    had them, though their run dirs are gone; a page without the section's markers is an error, not overwritten."""
    fake_run(tmp_path, "default", [], **{"test/acc": 0.9721, "test/acc_ci95": 0.0034, "val/best_acc": 0.975})
    out = tmp_path / "results.md"
    results_page.main(["--dir", str(tmp_path), "--out", str(out)])
    before = out.read_text()
    assert "97.21% ± 0.34%" in before and "Not run yet: `python -m benchmarks.results_page --run" in before
    (tmp_path / "default" / "results.json").unlink()
    for seed, lake_error in enumerate([8.0, 10.0, 12.0]):
        omniglot_run(tmp_path, "preset", seed, lake_error, [], config="algorithm: {members: 3}\n")
    results_page.main(["--dir", str(tmp_path), "--only", "omniglot", "--omniglot", "/data", "--out", str(out)])
    after = out.read_text()
    kept = before.split('## Omniglot "minimal"')[0]
    assert after.startswith(kept) and after.endswith(before.split("## ProtoNet, MAML")[1])
    ours = next(line for line in after.splitlines() if "experiment=omniglot_minimal` (this page)" in line)
    assert "3 ProtoNets (an ensemble)" in ours and "10.00% ± 4.97 (3 seeds)" in ours
    out.write_text(before.replace(results_page.MARK.format(name="omniglot"), ""))
    with pytest.raises(SystemExit, match="the page has no section omniglot"):
        results_page.main(["--dir", str(tmp_path), "--only", "omniglot", "--omniglot", "/data", "--out", str(out)])
    assert "97.21%" in out.read_text()


def test_results_page_without_runs_gives_the_command(tmp_path):
    runs = [results_page.read_run(name, tmp_path) for name in results_page.EXPERIMENTS]
    text = results_page.page(runs, "python -m benchmarks.results_page", tmp_path)
    assert "Not run yet: `python -m benchmarks.results_page --run outputs/results_page --only tutorial`" in text
    assert "No results have been generated yet" in text
    assert "python -m benchmarks.results_page --run outputs/results_page" in text
    assert "Not run yet: `python -m benchmarks.results_page --run outputs/results_page --only omniglot" in text


def test_results_page_run_skips_finished_runs_and_resumes_stopped_ones(tmp_path, monkeypatch):
    launched = []

    def launch(argv: list[str]) -> int:
        launched.append(argv)
        run_dir = Path(argv[-1].split("=", 1)[1])
        fake_run(run_dir.parent, run_dir.name, [], **{"test/acc": 0.5, "test/acc_ci95": 0.01, "val/best_acc": 0.5})
        return 0

    monkeypatch.setattr(results_page, "launch", launch)
    fake_run(tmp_path, "default", [], **{"test/acc": 0.9, "test/acc_ci95": 0.01, "val/best_acc": 0.9})
    (tmp_path / "protomaml_8shot").mkdir()
    (tmp_path / "protomaml_8shot" / "last.pt").write_bytes(b"")
    out = tmp_path / "results.md"
    results_page.main(["--run", str(tmp_path), "--only", "default,protomaml_8shot", "--out", str(out)])
    (argv,) = launched
    assert argv[:5] == ["-m", "fewshot_exp", "algorithm=protomaml", "episode.k_shot=8", "logger=none"]
    assert "resume=true" in argv
    info = json.loads((tmp_path / "protomaml_8shot" / results_page.INFO).read_text())
    assert info["resumed"] and info["returncode"] == 0 and info["wall_s"] >= 0
    assert "not recorded (resumed run)" in out.read_text()


def benchmark_reports() -> dict[str, dict]:
    """A benchmarks.run JSON with provenance, a benchmarks.fusion JSON without, no amp.json, an allocator JSON."""
    ours = {"role": "ours", "ms_per_episode": 80.0, "peak_mib": 94.0, "repeats": 9,
            "speed_vs_peer": [1.5, 1.4, 1.6], "time_vs_limit": [1.04, 1.01, 1.06]}  # fmt: skip
    limit = {"role": "limit", "ms_per_episode": 77.0, "peak_mib": 91.0, "repeats": 9}
    peer = {"role": "peer", "ms_per_episode": 120.0, "peak_mib": 95.0, "repeats": 9}
    shape = {"size": 28, "channels": 1, "way": 5, "shot": 5, "query": 15}
    row = {"name": "protonet-train-28px", "what": "ProtoNet training step", "shape": shape,
           "contenders": {"ours": ours, "encoder limit": limit, "easyfsl": peer}}  # fmt: skip
    run = {**PROVENANCE, "command": "python -m benchmarks.run --threads 2", "machine": MACHINE, "rows": [row]}
    fusion = {"started": "2030-01-02 08:00:00", "threads": 2, "rows": {"step": {"fused": [1.0, 2.0, 3.0],
              "unfused": [1.5, 2.2, 3.6]}}}  # fmt: skip
    seconds = {"ours-protonet-train": {"on": [0.4, 0.5, 0.4], "off": [0.8, 0.8, 0.6]},
               "easyfsl-train": {"on": [0.6, 0.6, 0.6], "off": [1.2, 1.0, 1.2]}}  # fmt: skip
    allocator_row = {"workload": "protonet-train", "what": "ProtoNet training step", "peer": "easyfsl-train"}
    allocator = {"size": 84, "channels": 3, "threads": None, "rows": [allocator_row], "seconds": seconds}
    return {"results.json": run, "fusion.json": fusion, "amp.json": None, "allocator.json": allocator}


def test_performance_page_heads_each_table_with_its_provenance():
    text = docs_page.page(benchmark_reports())
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    peers = sections["Against the peers"]
    assert "**commit** `abc1234` + uncommitted changes · **date** 2030-01-01 10:00:00 +0000" in peers
    assert "Test CPU 9000, 2 cores, 2 threads, torch 2.14.1, device cpu" in peers
    assert "**command** `python -m benchmarks.run --threads 2`" in peers
    line = next(line for line in peers.splitlines() if "`protonet-train-28px`" in line)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2:] == ["ours", "80.0", "77.0", "120.0 (easyfsl)", "1.50× (1.40–1.60)", "1.040 (1.010–1.060)",
                         "94 / 95", "9"]  # fmt: skip
    fusion = sections["Fusion on and off"]
    assert "**commit** not recorded · **date** 2030-01-02 08:00:00" in fusion and "**command** not recorded" in fusion
    # paired ratios unfused / fused per round: 1.5, 1.1, 1.2 -> median 1.2, range over 3 rounds
    assert "| step | fused | 2.0 | unfused | 2.2 | 1.20× (1.10–1.50) | 3 |" in " ".join(fusion.split())
    assert "Not measured yet: `python -m benchmarks.amp`" in sections["bf16 autocast on and off"]
    allocator = " ".join(sections["Huge pages on and off"].split())
    # ours off / on: 2.0, 1.6, 1.5; peer on / ours on: 1.5, 1.2, 1.5; peer off / ours on: 3.0, 2.0, 3.0
    assert "| 400.0 | 800.0 | 1.60× (1.50–2.00) | easyfsl-train | 600.0 | 1200.0 | 1.50× (1.20–1.50) |" in allocator
    assert "3.00× (2.00–3.00) | 3 |" in allocator and "torch's default threads" in allocator


def test_layout_table_is_the_reports_comparison_of_the_two_layouts_paired_over_seeds(tmp_path):
    """benchmarks.channels_last's row of a setting, from run dirs as its sweep leaves them, and its line on the
    performance page."""
    accs, speed = {}, {True: 12.0, False: 10.0}
    for seed in (0, 1, 2):
        for layout, skill in ((True, 0.01 * seed), (False, 0.0)):
            run_dir = tmp_path / "protonet" / f"{layout}{seed}"
            accs[layout, seed] = episode_accuracies(seed, skill)
            swept = (f"encoder.channels_last={layout}",)  # as a sweep over true,false records it
            made_up_run(run_dir, "protonet", seed, accs[layout, seed], overrides=swept)
            timing = {"train/wall_s": 30.0, "train/episodes_per_s": speed[layout] + seed}
            (run_dir / "timing.json").write_text(json.dumps(timing))
    row = channels_last.setting_row("protonet", tmp_path)
    on, off = (np.array([accs[layout, s].mean() for s in (0, 1, 2)]) for layout in (True, False))
    assert row["paired"] == "paired over 3 seeds" and math.isclose(row["diff"], (on - off).mean())
    assert math.isclose(row["p_value"], stats.ttest_rel(on, off).pvalue, rel_tol=1e-9)
    assert (row["on_episodes_per_s"], row["off_episodes_per_s"]) == (13.0, 11.0)
    text = docs_page.layout_table({"rows": {"protonet": row}, "common": ["train.episodes=300"]})
    line = next(line for line in text.splitlines() if line.startswith("| ProtoNet"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[1:3] == [f"{100 * off.mean():.2f} ± {100 * t_half_width(off):.2f}",
                         f"{100 * on.mean():.2f} ± {100 * t_half_width(on):.2f}"]  # fmt: skip
    assert cells[4:] == [f"{stats.ttest_rel(on, off).pvalue:.2g}", "3", "11.00", "13.00", "1.18×"]
    d = on - off
    assert cells[3] == f"{100 * d.mean():+.2f} ± {100 * t_half_width(d):.2f}"
    assert "`train.episodes=300`" in text and "over 60 test episodes" in text
