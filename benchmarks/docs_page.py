"""Write docs/performance.md from the JSON files that `make bench` writes: one table per benchmark, each headed
by the commit, date, hardware and command that produced it (benchmarks/provenance.py).

    python -m benchmarks.docs_page [--bench-dir benchmarks] [--out docs/performance.md]

Every number on the page comes from a JSON file: the benchmarks' own ratios where the JSON holds them
(`benchmarks.run`), else the same paired ratios computed here from the per-round times it holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from benchmarks.allocator import WORKLOADS
from benchmarks.provenance import NOT_RECORDED, commit_text, hardware_text
from benchmarks.timing import paired_ratio

REPO = Path(__file__).resolve().parents[1]

INTRO = """\
# Performance

!!! note "Generated page"
    `python -m benchmarks.docs_page` writes this page from the JSON files of `make bench`
    (`benchmarks/*.json`). Edit the generator or re-run the benchmarks, not this page. Each table is headed by the
    commit, date, hardware and command recorded in its JSON; a field the JSON lacks reads "not recorded".

## What is compared

- **Against the peers** (`benchmarks.run`). Each row is one workload: a ProtoNet training step, a ProtoNet
  evaluation, a MAML meta-step. Its contenders read the same uint8 images and differ only in their code:
    - **ours**: the runner's own code as it runs: `EpisodeSampler.sample()` on the images held as a tensor, then
      `fewshot_exp.train.training_step` (the function `train()` calls each episode), the LR scheduler step and the
      on-device running sums; evaluation is `fewshot_exp.evaluate.evaluate`;
    - **encoder limit**: the same Conv-4 (same memory format) on one pre-built float batch of the same images:
      forward, backward and Adam step (training), no-grad forwards in `evaluate`'s chunks (evaluation). Our
      time over the limit's is what the sampler, the algorithm and the loop add to the encoder;
    - **peer**: easyfsl's `PrototypicalNetworks` with its `TaskSampler`, a `DataLoader` and the loop of its training
      notebook (evaluation: `easyfsl.utils.evaluate`), or `higher.innerloop_ctx` per task (second-order MAML), on the
      textbook NCHW Conv-4. A peer that does not import is listed as skipped, with the reason.
- **Fusion on/off** (`benchmarks.fusion`): the Conv-4 training step with batch norm, max-pool and ReLU as one
  function (`encoder.fuse_norm_pool`, `fewshot_exp/encoders/norm_pool.py`) against the modules' own kernels;
  second-order MAML with the channels_last encoder, batch norm by `[N·H·W, C]` rows and the written-out double
  backward (`fewshot_exp/encoders/task_batch_norm.py`) against an NCHW encoder with plain `F.batch_norm`. On rows,
  the batch statistics and the backward's sums are cascade sums, as precise in float32 as the NCHW kernels
  (PyTorch's row kernels sum each channel in sequence, and put 5-step MAML's float32 meta-gradient about ten times
  further from float64 than NCHW does); `tests/test_layout_precision.py` checks it.
- **bf16 autocast on/off** (`benchmarks.amp`): `train.amp=true` (the training forward under
  `torch.autocast(<device>, torch.bfloat16)`) against float32. It is fast only on hardware with bf16 arithmetic
  (CUDA GPUs from Ampere on, x86 CPUs with AVX512-BF16 or AMX): the table's header gives the CPU's bf16 flags.
- **Huge pages on/off** (`benchmarks.allocator`): PyTorch's `THP_MEM_ALLOC_ENABLE=1`, which importing
  `fewshot_exp` sets unless the user did (`fewshot_exp/allocator.py`), against PyTorch's default allocator, for
  our steps and the peers' same steps.
- **An unreachable W&B server** (`benchmarks.wandb_unreachable`): the seconds from creating an online run's
  tracker to its first metric when the server refuses connections, is not routable, or accepts connections and
  never answers, each in a fresh process, beside an offline run.
- **What the layout does to what is learned** (`benchmarks.channels_last`, `make bench-layout`): ProtoNet, MAML
  with 1 and 5 inner steps, ProtoMAML and Reptile, each trained and tested on the default data with
  `encoder.channels_last=true` (the default) and `false` on the same seeds. Both layouts of a seed start from the
  same weights and draw the same episodes, so the only difference is float32 rounding; the report compares them
  paired over seeds, and beside each pair is its training speed (validation included) as the runs measured it.

`make bench` also runs `benchmarks/maml_vmap.py` (MAML's per-task loop against `torch.func.vmap`), which prints
its table and writes no JSON, so it has no table here.

## How the numbers are computed

- **Time.** Every contender of a row runs once untimed (warm-up), then the contenders run in rounds, in forward
  and reverse order by turns (A B C, C B A, ...), so that load from other processes drifts over all of them alike.
  A contender's time is the median of its rounds. On CUDA the device is synchronised around each call.
- **Ratios** ("speed vs peer", "time / limit", "speed-up") are paired: the median over rounds of the ratio of the
  two contenders' times *in the same round* (`benchmarks/timing.py`, `paired_ratio`). Pairing cancels the drift
  that the two calls of a round share, which a ratio of two medians keeps (`python -m benchmarks.pairing` shows
  both per block of rounds). In brackets: a distribution-free 95% confidence interval for that median, the
  per-round ratios of ranks ⌊n/2 − 0.98·√n⌋ and ⌈1 + n/2 + 0.98·√n⌉ of n rounds (the normal approximation to
  Binomial(n, 1/2)); for 10 rounds or fewer that is the range of the ratios.
- **Peak memory** (`benchmarks.run`): what one call adds at its peak, each contender in a fresh process of its own.
  On CPU: the peak resident set size after the call (Linux's VmHWM, reset by writing "5" to
  `/proc/self/clear_refs`) minus the RSS before it, with `MALLOC_MMAP_THRESHOLD_=65536` so that freed tensors go
  back to the OS; on CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the call.
- **Huge pages** (`benchmarks.allocator`): PyTorch reads `THP_MEM_ALLOC_ENABLE` once per process, so every
  measurement is a fresh process that builds one step, runs it once untimed and reports the fastest of a few calls;
  per round every contender runs once with huge pages and once without. "Same setting" is the peer with huge pages
  too (the code-only comparison); "as shipped" is the peer with PyTorch's default allocator against ours with huge
  pages, i.e. a peer's script run as is against `python -m fewshot_exp`.
"""


@dataclass(frozen=True)
class Section:
    title: str
    json_name: str  # under the bench dir
    program: str  # what writes the JSON
    device: str | None  # the device of a benchmark that has one only (None: the JSON says)
    table: Callable[[dict[str, Any]], str]  # the report -> its markdown table and notes
    make_target: str = "make bench"  # what runs the program


# ---- cells


def escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(lines: list[list[str]], headers: list[str], align: list[str]) -> str:
    """A pipe table; `align` is "l" or "r" per column."""
    colalign = ["right" if a == "r" else "left" for a in align]
    cells = [[escape(c) for c in line] for line in lines]
    return tabulate(cells, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=colalign)


def ratio_cell(ratio: list[float] | tuple[float, ...] | None, digits: int, unit: str = "") -> str:
    """ "1.68× (1.63–1.72)": a paired ratio (median, low, high) and its 95% interval; "" for None."""
    if ratio is None:
        return ""
    mid, low, high = ratio
    return f"{mid:.{digits}f}{unit} ({low:.{digits}f}–{high:.{digits}f})"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


# ---- the provenance line


def load_text(report: dict[str, Any]) -> str | None:
    before = report.get("load_average_before", report.get("load_before"))
    after = report.get("load_average_after", report.get("load_after"))
    if not before or not after:
        return None
    return f"{before[0]:.2f} → {after[0]:.2f}"


def provenance_line(report: dict[str, Any], section: Section, path: str) -> str:
    """Commit, date, hardware, command, load average and data file, as one line above a table."""
    command = f"`{report['command']}`" if report.get("command") else NOT_RECORDED
    machine, device = report.get("machine") or {}, report.get("device") or section.device
    fields = [
        ("commit", commit_text(report)),
        ("date", report.get("started") or NOT_RECORDED),
        ("hardware", hardware_text(machine, report.get("threads", NOT_RECORDED), device)),
        ("command", command),
        ("load average", load_text(report)),
        ("data", f"`{path}`"),
    ]
    return " · ".join(f"**{name}** {value}" for name, value in fields if value is not None)


# ---- benchmarks.run


def shape_text(shape: dict[str, Any]) -> str:
    return (
        f"{shape['size']} px, {shape['channels']} channel(s), {shape['way']}-way {shape['shot']}-shot "
        f"{shape['query']}-query"
    )


def role(row: dict[str, Any], name: str) -> tuple[str, dict[str, Any]] | tuple[None, None]:
    """The row's first contender of role `name` (label, fields), or (None, None)."""
    return next(((k, v) for k, v in row["contenders"].items() if v["role"] == name), (None, None))


def peer_cells(row: dict[str, Any]) -> tuple[str, float | None]:
    """(the peer's ms/episode cell, its peak MiB)."""
    label, peer = role(row, "peer")
    if peer is None:
        return "", None
    if "skipped" in peer:
        return f"{label}: skipped ({peer['skipped']})", None
    return f"{ms(peer['ms_per_episode'])} ({label})", peer["peak_mib"]


def run_lines(row: dict[str, Any]) -> list[list[str]]:
    """One line per contender of ours: its time, the limit's and the peer's, the paired ratios, peak memory."""
    _, limit = role(row, "limit")
    peer_ms, peer_mib = peer_cells(row)
    lines = []
    for label, v in row["contenders"].items():
        if v["role"] != "ours" or "skipped" in v:
            continue
        first = not lines
        lines.append(
            [
                f"`{row['name']}`" if first else "",
                f"{row['what']} ({shape_text(row['shape'])})" if first else "",
                label,
                ms(v["ms_per_episode"]),
                ms(limit["ms_per_episode"]) if first and limit and "skipped" not in limit else "",
                peer_ms if first else "",
                ratio_cell(v.get("speed_vs_peer"), 2, "×"),
                ratio_cell(v.get("time_vs_limit"), 3),
                f"{mib(v['peak_mib'])} / {mib(peer_mib)}" if peer_ms else mib(v["peak_mib"]),
                str(v["repeats"]),
            ]
        )
    return lines


def run_table(report: dict[str, Any]) -> str:
    lines = [line for row in report["rows"] for line in run_lines(row)]
    headers = ["row", "what", "ours", "ms/episode", "encoder limit ms/episode", "peer ms/episode",
               "speed vs peer (95% interval)", "time / encoder limit (95% interval)", "peak MiB ours / peer",
               "rounds"]  # fmt: skip
    table = markdown(lines, headers, ["l", "l", "l", "r", "r", "r", "r", "r", "r", "r"])
    notes = [
        "ms/episode: the median over rounds, per episode (per task for the MAML meta-steps).",
        "Speed vs peer: the peer's time over ours; time / encoder limit: ours over the limit's.",
    ]
    if report.get("mode") and report["mode"] != "full":
        notes.append(f"Mode `{report['mode']}` (shorter budgets or tiny shapes than the full benchmark).")
    versions = (report.get("machine") or {}).get("peer_versions") or {}
    if any(versions.values()):
        notes.append("Peers: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".")
    return table + "\n\n" + " ".join(notes)


# ---- benchmarks.fusion and benchmarks.amp: rows of contender -> per-round times (ms)


def on_off_cells(times: dict[str, list[float]]) -> tuple[str, list[float], str, list[float]]:
    """(first label, its times, second label, its times) of a row of an on/off benchmark."""
    (first, first_t), (second, second_t) = times.items()
    return first, first_t, second, second_t


def fusion_table(report: dict[str, Any]) -> str:
    lines = []
    for name, times in report["rows"].items():  # each: the default, then the reference it is timed against
        new, new_t, old, old_t = on_off_cells(times)
        speed_up = ratio_cell(paired_ratio(old_t, new_t), 2, "×")
        lines.append([name, new, ms(statistics.median(new_t)), old, ms(statistics.median(old_t)), speed_up,
                      str(len(new_t))])  # fmt: skip
    headers = ["workload", "default", "ms", "timed against", "ms", "speed-up of the default (95% interval)", "rounds"]
    return markdown(lines, headers, ["l", "l", "r", "l", "r", "r", "r"]) + "\n\nms: the median over rounds."


def amp_table(report: dict[str, Any]) -> str:
    lines, labels = [], ("float32", "bf16 autocast")
    for name, times in report["rows"].items():  # float32, then bf16 autocast
        off, off_t, on, on_t = on_off_cells(times)
        speed_up = ratio_cell(paired_ratio(off_t, on_t), 2, "×")
        lines.append([name, ms(statistics.median(off_t)), ms(statistics.median(on_t)), speed_up, str(len(off_t))])
        labels = off, on
    headers = ["workload (5-way 5-shot 15-query)", f"{labels[0]} ms", f"{labels[1]} ms",
               f"speed-up of {labels[1]} (95% interval)", "rounds"]  # fmt: skip
    flags = report.get("cpu_bf16_flags")
    flags_text = NOT_RECORDED if flags is None else ", ".join(f"`{f}`" for f in flags) or "none"
    table = markdown(lines, headers, ["l", "r", "r", "r", "r"])
    return table + f"\n\nms: the median over rounds. CPU bf16 flags: {flags_text}."


# ---- benchmarks.allocator: per contender, per setting ("on": huge pages), one time per round (s)


def allocator_lines(row: dict[str, Any], seconds: dict[str, dict[str, list[float]]]) -> list[str]:
    """Medians and paired ratios of one workload: ours with and without huge pages, and against the peer."""
    ours = seconds[WORKLOADS[row["workload"]][1]]
    cells = [row["what"], ms(1e3 * statistics.median(ours["on"])), ms(1e3 * statistics.median(ours["off"])),
             ratio_cell(paired_ratio(ours["off"], ours["on"]), 2, "×")]  # fmt: skip
    if row["peer"].startswith("skipped") or row["peer"] not in seconds:
        return [*cells, row["peer"], "", "", "", "", str(len(ours["on"]))]
    peer = seconds[row["peer"]]
    return [
        *cells,
        row["peer"],
        ms(1e3 * statistics.median(peer["on"])),
        ms(1e3 * statistics.median(peer["off"])),
        ratio_cell(paired_ratio(peer["on"], ours["on"]), 2, "×"),
        ratio_cell(paired_ratio(peer["off"], ours["on"]), 2, "×"),
        str(len(ours["on"])),
    ]


def allocator_table(report: dict[str, Any]) -> str:
    lines = [allocator_lines(row, report["seconds"]) for row in report["rows"]]
    shape = f"{report['size']} px, {report['channels']} channel(s), 5-way 5-shot 15-query"
    headers = [f"workload ({shape})", "ours, huge pages ms", "ours, default ms", "huge-pages speed-up (95% interval)",
               "peer", "peer, huge pages ms", "peer, default ms", "over peer, same setting", "over peer, as shipped",
               "rounds"]  # fmt: skip
    table = markdown(lines, headers, ["l", "r", "r", "r", "l", "r", "r", "r", "r", "r"])
    return table + "\n\nms: the median over rounds of each process's fastest call; ratios paired by round."


def wandb_table(report: dict[str, Any]) -> str:
    cases = report["cases"].items()
    lines = [[case, f"{c['seconds']:.1f}", "offline" if c["offline"] else "online"] for case, c in cases]
    return markdown(lines, ["W&B server", "seconds to the first metric", "the run"], ["left", "right", "left"])


# ---- benchmarks.channels_last: per setting, both layouts' accuracy over seeds and their paired difference


def accuracy_cell(acc: float, ci95: float | None) -> str:
    return f"{100 * acc:.2f} ± {100 * ci95:.2f}" if ci95 is not None else f"{100 * acc:.2f}"


def layout_table(report: dict[str, Any]) -> str:
    lines = []
    for row in report["rows"].values():
        diff = "" if row["diff"] is None else f"{100 * row['diff']:+.2f} ± {100 * (row['diff_ci95'] or 0):.2f}"
        p_value = "" if row["p_value"] is None else f"{row['p_value']:.2g}"
        speed_up = row["on_episodes_per_s"] / row["off_episodes_per_s"]
        speeds = [f"{row['off_episodes_per_s']:.2f}", f"{row['on_episodes_per_s']:.2f}", f"{speed_up:.2f}×"]
        accuracies = [accuracy_cell(row["off_acc"], row["off_ci95"]), accuracy_cell(row["on_acc"], row["on_ci95"])]
        lines.append([row["what"], *accuracies, diff, p_value, str(row["seeds"]), *speeds])
    headers = ["algorithm", "NCHW test acc (%)", "channels_last test acc (%)", "channels_last − NCHW (%)", "p",
               "seeds", "NCHW train ep/s", "channels_last train ep/s", "speed-up"]  # fmt: skip
    table = markdown(lines, headers, ["l", "r", "r", "r", "r", "r", "r", "r", "r"])
    first = next(iter(report["rows"].values()))
    settings = " ".join(f"`{o}`" for o in report.get("common", []))
    return table + (
        f"\n\nEach run: {settings}, the default data, Conv-4; test accuracy over {first['episodes']} test episodes, "
        "the same episodes for every run. Test acc: the mean over seeds with its t-based 95% interval; the "
        "difference is paired seed by seed (t interval and paired t-test over the seeds). Train ep/s: training "
        "episodes per second, validation included, the mean over seeds (timing.json); the speed-up is their ratio. "
        "The fusion table above times the training step alone."
    )


SECTIONS = [
    Section("Against the peers", "results.json", "benchmarks.run", None, run_table),
    Section("Fusion on and off", "fusion.json", "benchmarks.fusion", "cpu", fusion_table),
    Section("bf16 autocast on and off", "amp.json", "benchmarks.amp", None, amp_table),
    Section("Huge pages on and off", "allocator.json", "benchmarks.allocator", "cpu", allocator_table),
    Section("An unreachable W&B server", "wandb_unreachable.json", "benchmarks.wandb_unreachable", None, wandb_table),
    Section(
        "channels_last on and off: what is learned",
        "channels_last.json",
        "benchmarks.channels_last",
        "cpu",
        layout_table,
        "make bench-layout",
    ),  # fmt: skip
]


def section_text(section: Section, report: dict[str, Any] | None, path: str) -> str:
    """A section of the page: its title, the provenance line and the table, or where its JSON would come from."""
    head = f"## {section.title}\n\n"
    if report is None:
        runner = f"`python -m {section.program}` (run by `{section.make_target}`)"
        return head + f"Not measured yet: {runner} writes `{path}`.\n"
    return head + provenance_line(report, section, path) + "\n\n" + section.table(report) + "\n"


def page(reports: dict[str, dict[str, Any] | None], bench_dir: str = "benchmarks") -> str:
    """The whole page from the JSON reports by file name (None: that file is missing)."""
    parts = [INTRO]
    for section in SECTIONS:
        parts.append(section_text(section, reports.get(section.json_name), f"{bench_dir}/{section.json_name}"))
    return "\n".join(parts)


def read_reports(bench_dir: Path) -> dict[str, dict[str, Any] | None]:
    out = {}
    for section in SECTIONS:
        path = bench_dir / section.json_name
        out[section.json_name] = json.loads(path.read_text()) if path.is_file() else None
    return out


def display_path(path: Path) -> str:
    """`path` relative to the repository where it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-dir", type=Path, default=REPO / "benchmarks", help="where the JSON files are")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args(argv)
    text = page(read_reports(args.bench_dir), display_path(args.bench_dir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
