"""Train and test the headline experiments and write docs/results.md from their run dirs.

    python -m benchmarks.results_page --run OUT_DIR [--only NAME[,NAME]] [--omniglot DIR]   # run, then write
    python -m benchmarks.results_page [--dir OUT_DIR]                                       # write only

`--run` runs each experiment of `EXPERIMENTS` as `python -m fewshot_exp <overrides> logger=none
hydra.run.dir=OUT_DIR/<name>`, one after another, and records its wall time, commit, date and hardware in
OUT_DIR/<name>/results_page.json. An experiment whose run dir holds results.json is skipped, and one whose run
stopped part-way (last.pt, no results.json) is resumed, so an interrupted `--run` continues where it stopped.
Experiments that need the real Omniglot files run only with `--omniglot DIR`, and so does the Omniglot "minimal"
section (benchmarks/omniglot.py, `--only omniglot`). The page is then written from
every run dir with results.json: its results.json, .hydra/overrides.yaml and results_page.json. With `--only`,
only the sections it names are written again (the experiments' table for an experiment's name); the page's other
sections stay as they were, each under its own provenance header, so one section can be rerun without the others'
run dirs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from benchmarks import omniglot, tutorial
from benchmarks.provenance import NOT_RECORDED, commit_text, duration, hardware, hardware_text, now, record

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT = "{omniglot}"  # in an override: the --omniglot DIR

#: name -> (what it is, its overrides of `python -m fewshot_exp`); an override holding {omniglot} needs --omniglot
EXPERIMENTS: dict[str, tuple[str, list[str]]] = {
    "default": ("ProtoNet, Conv-4, glyphs (the defaults)", []),
    "protomaml_8shot": ("ProtoMAML, Conv-4, glyphs", ["algorithm=protomaml", "episode.k_shot=8"]),
    "maml_5shot": ("MAML (second order), Conv-4, glyphs", ["algorithm=maml"]),
}
#: what --run adds to every experiment; left out of the page's commands (no number depends on them)
RUNNER_OVERRIDES = ["logger=none"]
RESUME = "resume=true"
INFO = "results_page.json"
DEFAULT_DIR = REPO / "outputs" / "results_page"
TUTORIAL = "tutorial"  # --only tutorial: benchmarks/tutorial.py's comparison, into <dir>/tutorial
OMNIGLOT_SECTION = omniglot.FOLDER  # --only omniglot: benchmarks/omniglot.py's runs, into <dir>/omniglot
SECTIONS = (TUTORIAL, OMNIGLOT_SECTION)
EXPERIMENTS_SECTION = "experiments"  # the table of EXPERIMENTS
#: a section of the page sits between these: with --only, only the sections it reruns are written again
MARK, END_MARK = "<!-- results_page section: {name} -->", "<!-- end of results_page section: {name} -->"
IMG_DIR = REPO / "docs" / "img"


@dataclass
class Run:
    """One experiment of the page: the list's entry and, once run, what its run dir holds."""

    name: str
    what: str
    overrides: list[str]  # the list's, with {omniglot} as typed there or the run's
    results: dict[str, Any] | None = None
    ran_overrides: list[str] | None = None  # .hydra/overrides.yaml, less RUNNER_OVERRIDES and resume
    info: dict[str, Any] = field(default_factory=dict)  # results_page.json

    @property
    def needs_omniglot(self) -> bool:
        return needs_omniglot(self.overrides)


def needs_omniglot(overrides: list[str]) -> bool:
    return any(OMNIGLOT in o for o in overrides)


# ---- running


def resolved(overrides: list[str], omniglot: Path | None) -> list[str]:
    """`overrides` with {omniglot} replaced by the absolute path of `omniglot` (the runs start in the repository)."""
    return [o.replace(OMNIGLOT, str(omniglot.resolve())) for o in overrides] if omniglot else list(overrides)


def selected(only: list[str] | None, omniglot: Path | None) -> dict[str, list[str]]:
    """name -> overrides of the experiments to run: those of `only` (default all), those needing Omniglot only
    with `omniglot`."""
    names = list(EXPERIMENTS) if only is None else only
    overrides = {name: EXPERIMENTS[name][1] for name in names}
    return {name: resolved(o, omniglot) for name, o in overrides.items() if omniglot or not needs_omniglot(o)}


def device_of(overrides: list[str]) -> str:
    """The device a run of `overrides` uses: its device= override, else what device=auto picks."""
    import torch

    chosen = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("device=")), "auto")
    return ("cuda" if torch.cuda.is_available() else "cpu") if chosen == "auto" else chosen


def launch(argv: list[str]) -> int:
    """`python <argv>` in the repository, its output to ours; its exit status."""
    return subprocess.run([sys.executable, *argv], cwd=REPO, check=False).returncode


def run_experiment(name: str, overrides: list[str], out_dir: Path, page_argv: list[str]) -> int:
    """Run one experiment into out_dir/name (skipped if it has results.json, resumed if it stopped part-way), timing
    its wall clock; returns its exit status."""
    run_dir = (out_dir / name).resolve()
    if (run_dir / "results.json").is_file():
        print(f"{name}: {run_dir} has results.json, skipped", flush=True)
        return 0
    resume = [RESUME] if (run_dir / "last.pt").is_file() else []
    argv = ["-m", "fewshot_exp", *overrides, *RUNNER_OVERRIDES, *resume, f"hydra.run.dir={run_dir}"]
    info = record("benchmarks.results_page", page_argv, hardware(device_of(overrides)))
    info["run_command"] = shlex.join(["python", *argv])
    print(f"{name}: {info['run_command']}", flush=True)
    began = time.perf_counter()
    status = launch(argv)
    info |= {"finished": now(), "wall_s": time.perf_counter() - began, "resumed": bool(resume), "returncode": status}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return status


# ---- reading


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_run(name: str, out_dir: Path, entry: tuple[str, list[str]] | None = None) -> Run:
    """The list's entry `name` (or `entry`: what it is, its overrides) with what out_dir/name holds (nothing
    where it has no results.json)."""
    what, overrides = entry or EXPERIMENTS[name]
    run_dir = out_dir / name
    run = Run(name, what, overrides, info=read_json(run_dir / INFO) or {})
    run.results = read_json(run_dir / "results.json")
    saved = run_dir / ".hydra" / "overrides.yaml"
    if run.results is not None and saved.is_file():
        added = {*RUNNER_OVERRIDES, RESUME}
        run.ran_overrides = [o for o in yaml.safe_load(saved.read_text()) or [] if o not in added]
    return run


# ---- the page


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def accuracy(results: dict[str, Any]) -> str:
    """ "97.21% ± 0.34% (1000 episodes)": test accuracy and its 95% CI over the test episodes."""
    acc, ci, episodes = results["test/acc"], results["test/acc_ci95"], results["test/episodes"]
    return f"{percent(acc)} ± {percent(ci)} ({episodes} episodes)"


def command(overrides: list[str]) -> str:
    return "`" + shlex.join(["python", "-m", "fewshot_exp", *overrides]) + "`"


def setting(results: dict[str, Any]) -> str:
    """ "2000 training episodes of 5-way 5-shot, tested 5-way 5-shot", from results.json."""
    trained = f"{results['train/episodes']} training episodes of {results['train/n_way']}-way {results['train/k_shot']}"
    return f"{trained}-shot, tested {results['test/n_way']}-way {results['test/k_shot']}-shot"


def wall_time(run: Run) -> str:
    if run.info.get("resumed"):
        return "not recorded (resumed run)"
    return duration(run.info.get("wall_s"))


def shown_overrides(run: Run) -> list[str]:
    """The overrides the run ran with; the Omniglot directory, a path of this machine, as DIR."""
    if run.needs_omniglot or run.ran_overrides is None:
        return [o.replace(OMNIGLOT, "DIR") for o in run.overrides]
    return run.ran_overrides


def without_paths(text: str) -> str:
    """A command line with the value of --omniglot, a path of this machine, as DIR."""
    return re.sub(r"--omniglot(=|\s+)\S+", r"--omniglot\1DIR", text)


def table_line(run: Run) -> list[str]:
    """what, command, test accuracy, best validation accuracy, Omniglot runs error, wall time."""
    if run.results is None:
        overrides = [o.replace(OMNIGLOT, "DIR") for o in run.overrides]
        status = run.info.get("returncode")
        return [run.what, command(overrides), f"failed (exit status {status})" if status else "not run", "", "", ""]
    results = run.results
    lake = results.get("test/lake_error")
    return [
        f"{run.what}: {setting(results)}",
        command(shown_overrides(run)),
        accuracy(results),
        percent(results["val/best_acc"]) if results.get("val/best_acc") is not None else "",
        "–" if lake is None else f"{lake:.2f}%",
        wall_time(run),
    ]


def table(runs: list[Run]) -> str:
    headers = ["what", "command", "test accuracy (95% CI)", "best validation accuracy", "Omniglot one-shot runs error",
               "wall time"]  # fmt: skip
    lines = [[cell.replace("|", "\\|") for cell in table_line(run)] for run in runs]
    colalign = ["left", "left", "right", "right", "right", "right"]
    return tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=colalign)


def distinct(values: dict[str, str]) -> str:
    """One value where every run has the same, else each value with the runs that have it."""
    by_value: dict[str, list[str]] = {}
    for name, value in values.items():
        by_value.setdefault(value, []).append(name)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())


def header(runs: list[Run]) -> str:
    """Commit, dates, hardware and command of the runs with results: one value each where they share it."""
    done = {run.name: run.info for run in runs if run.results is not None}
    starts = sorted(i["started"] for i in done.values() if i.get("started"))
    ends = sorted(i["finished"] for i in done.values() if i.get("finished"))
    dates = f"{starts[0]} to {ends[-1]}" if starts and ends else NOT_RECORDED
    fields = [
        ("commit", distinct({n: commit_text(i) for n, i in done.items()})),
        ("date", dates),
        ("hardware", distinct({n: hardware_text(i.get("machine") or {}) for n, i in done.items()})),
        (
            "command",
            distinct(
                {n: f"`{without_paths(i['command'])}`" if i.get("command") else NOT_RECORDED for n, i in done.items()}
            ),
        ),  # fmt: skip
    ]
    return " · ".join(f"**{name}** {value}" for name, value in fields)


def notes(runs: list[Run]) -> list[str]:
    """The table's notes: what the columns are, and each experiment that has no results, with why."""
    out = [
        f"Each experiment runs as `python -m fewshot_exp <overrides> {' '.join(RUNNER_OVERRIDES)} "
        "hydra.run.dir=<dir>/<name>`; the command column leaves out the logger and the run dir, which change no "
        "number.",
        "Test accuracy: the mean over test episodes (classes never trained on) with its 95% confidence interval; "
        "best validation accuracy: that of the checkpoint tested, chosen on validation classes. Omniglot one-shot "
        "runs error: the mean percent error over the official 20-way one-shot runs. Wall time: the whole command.",
    ]
    for run in runs:
        if run.results is not None:
            if run.ran_overrides is not None and not run.needs_omniglot and run.ran_overrides != run.overrides:
                out.append(f"`{run.name}` ran with other overrides than the list now holds.")
        elif run.info.get("returncode"):
            out.append(f"`{run.name}` failed (exit status {run.info['returncode']}).")
        elif run.needs_omniglot:
            out.append(f"`{run.name}` was not run: it needs the Omniglot files (`--omniglot DIR`).")
    return out


def shown_step(argv: list[str], out: Path) -> str:
    """A tutorial step's command as the docs show it, the output dir as `outputs/tutorial`."""
    return shlex.join(["python", *argv]).replace(str(out.resolve()), "outputs/tutorial")


def step_wall(entry: dict[str, Any]) -> str:
    return "not recorded (resumed)" if entry.get("resumed") else duration(entry.get("wall_s"))


def tutorial_section(out: Path) -> list[str]:
    """The tutorial comparison's section: its commands, what each took, the report's table and its plot (copied
    into docs/img)."""
    shots = ", ".join(map(str, tutorial.SHOTS))
    lines = [
        "## ProtoNet, MAML and ProtoMAML against the number of shots",
        "",
        f"The reference tutorial's comparison on the default data: each algorithm trained at 5-way "
        f"{tutorial.TRAIN_SHOT}-shot (Conv-4, 2000 episodes), its best checkpoint then tested at {shots} shots on "
        f"the same {tutorial.EVAL_EPISODES} test episodes at each shot, and compared with ProtoNet at each shot, "
        "paired episode by episode. "
        "Each algorithm is one training seed, so every interval is over test episodes, not over trainings.",
        "",
    ]
    report = out / "report" / "report.md"
    if not report.is_file():
        command = f"python -m benchmarks.results_page --run {DEFAULT_DIR.relative_to(REPO)} --only {TUTORIAL}"
        return [*lines, f"Not run yet: `{command}` runs it and writes this section.", ""]
    entries = json.loads((out / tutorial.INFO).read_text())["steps"] if (out / tutorial.INFO).is_file() else {}
    first = next(iter(entries.values()), {})
    starts = sorted(e["started"] for e in entries.values() if e.get("started"))
    lines += [
        f"**commit** {distinct({n: commit_text(e) for n, e in entries.items()}) if entries else NOT_RECORDED} · "
        f"**date** {starts[0] if starts else NOT_RECORDED} · **hardware** {hardware_text(first.get('machine') or {})}",
        "",
        "| step | command | wall time |",
        "|---|---|---:|",
        *(f"| {name} | `{shown_step(argv, out)}` | {step_wall(entries.get(name, {}))} |"
          for name, argv in tutorial.steps(out, [])),
        "",
        f"The page's runs add `{' '.join(RUNNER_OVERRIDES)}` to each `fewshot_exp` command; no number depends on it.",
        "",
    ]  # fmt: skip
    table = report.read_text().split("\n\n![")[0].strip()
    figure = out / "report" / "acc_vs_shots.png"
    if figure.is_file():
        IMG_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, IMG_DIR / tutorial.FIGURE)
    return [*lines, table, "", f"![test accuracy against shots](img/{tutorial.FIGURE})", ""]


def page(runs: list[Run], page_command: str, out_dir: Path) -> str:
    """docs/results.md: the provenance header, the table and its notes (with no results yet, the command to run),
    and the tutorial comparison's section (from out_dir/tutorial)."""
    lines = [
        "# Results",
        "",
        '!!! note "Generated page"',
        "    `python -m benchmarks.results_page --run <dir>` trains and tests each experiment below and writes this",
        "    page from their run dirs. Edit the list of experiments in `benchmarks/results_page.py`, not this page.",
        "",
    ]
    if any(run.results is not None for run in runs):
        lines += [header(runs), ""]
        commands = {run.info.get("command") for run in runs if run.results is not None}
        if page_command not in commands:
            lines += [f"Page written by `{without_paths(page_command)}`.", ""]
    else:
        lines += [
            "No results have been generated yet. To train and test every experiment below and write this page:",
            "",
            "```bash",
            f"python -m benchmarks.results_page --run {DEFAULT_DIR.relative_to(REPO)}",
            f"python -m benchmarks.results_page --run {DEFAULT_DIR.relative_to(REPO)} --omniglot DIR"
            "   # with the experiments that need the Omniglot files",
            "```",
            "",
        ]
    lines += [table(runs), "", *(f"- {note}" for note in notes(runs)), ""]
    return "\n".join([
        *marked(EXPERIMENTS_SECTION, lines),
        *marked(OMNIGLOT_SECTION, omniglot_section(out_dir)),
        *marked(TUTORIAL, tutorial_section(out_dir / TUTORIAL)),
    ])  # fmt: skip


def marked(name: str, lines: list[str]) -> list[str]:
    """A section's lines between the markers (HTML comments, which the site does not show) that `merged` finds."""
    return [MARK.format(name=name), *lines, END_MARK.format(name=name), ""]


def section_text(page_text: str, name: str) -> re.Match[str] | None:
    """Where section `name`, its markers included, is in `page_text`."""
    pattern = re.escape(MARK.format(name=name)) + r".*?" + re.escape(END_MARK.format(name=name))
    return re.search(pattern, page_text, flags=re.S)


def merged(old_page: str, new_page: str, names: list[str]) -> str:
    """`old_page` with its sections `names` replaced by those of `new_page`; the others stay as they were written,
    each under its own provenance header. Fails if the old page lacks one of them."""
    for name in names:
        old, new = section_text(old_page, name), section_text(new_page, name)
        if old is None:
            sys.exit(f"error: the page has no section {name} (markers {MARK.format(name=name)}) to replace")
        old_page = old_page[: old.start()] + new.group(0) + old_page[old.end() :]
    return old_page


def sections_of(only: list[str]) -> list[str]:
    """The page sections that `--only` reruns: the experiments' table for any experiment, and the named sections."""
    experiments = [EXPERIMENTS_SECTION] if any(n in EXPERIMENTS for n in only) else []
    return [*experiments, *(n for n in SECTIONS if n in only)]


def omniglot_section(out_dir: Path) -> list[str]:
    """benchmarks/omniglot.py's section, with the provenance header of its runs."""
    runs = [read_run(name, out_dir, ("", overrides)) for name, overrides in omniglot.jobs(out_dir)]
    infos = {run.name: run.info for run in runs if run.results is not None}
    return omniglot.section(out_dir, infos, header(runs) if infos else "")


# ---- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run", type=Path, metavar="OUT_DIR", help="run the experiments into OUT_DIR, then write")
    where.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="write the page from the run dirs in DIR")
    parser.add_argument("--only", type=lambda s: s.split(","), help="NAME[,NAME]: run only these experiments")
    parser.add_argument("--omniglot", type=Path, metavar="DIR", help="the Omniglot files: also run what needs them")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in EXPERIMENTS and n not in SECTIONS]
    if unknown:
        names = ", ".join([*EXPERIMENTS, *SECTIONS])
        parser.error(f"--only: no experiment {', '.join(unknown)} (experiments: {names})")
    experiments = [n for n in args.only or [] if n in EXPERIMENTS]
    lacking = [n for n in experiments if not args.omniglot and needs_omniglot(EXPERIMENTS[n][1])]
    lacking += [OMNIGLOT_SECTION] if OMNIGLOT_SECTION in (args.only or []) and not args.omniglot else []
    if lacking:
        parser.error(f"--only {', '.join(lacking)}: needs the Omniglot files (--omniglot DIR)")
    return args


def main(argv: list[str] | None = None) -> None:
    page_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out_dir, failed = args.run or args.dir, []
    if args.run:
        only = None if args.only is None else [n for n in args.only if n in EXPERIMENTS]
        for name, overrides in selected(only, args.omniglot).items():
            if run_experiment(name, overrides, out_dir, page_argv) != 0:
                failed.append(name)
        if args.omniglot and OMNIGLOT_SECTION in (args.only or [OMNIGLOT_SECTION]):
            for name, overrides in omniglot.jobs(out_dir):
                if run_experiment(name, resolved(overrides, args.omniglot), out_dir, page_argv) != 0:
                    failed.append(name)
        if TUTORIAL in (args.only or [TUTORIAL]):
            if tutorial.run(out_dir / TUTORIAL, RUNNER_OVERRIDES, page_argv) != 0:
                failed.append(TUTORIAL)
    runs = [read_run(name, out_dir) for name in EXPERIMENTS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = page(runs, shlex.join(["python", "-m", "benchmarks.results_page", *page_argv]), out_dir)
    if args.only and args.out.is_file():
        text = merged(args.out.read_text(), text, sections_of(args.only))
    args.out.write_text(text)
    print(f"wrote {args.out}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
