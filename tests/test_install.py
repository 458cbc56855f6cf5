"""The package as a user installs it: a wheel that carries its configs and runs from any directory, the optional
plugins as extras, `--help`, and W&B's own login lookup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, call_cli, cli_env, run_cli

from fewshot_exp import plugins
from fewshot_exp.config import register_configs

TINY = ["train.episodes=4", "train.val_every=2", "train.val_episodes=2", "eval.episodes=4", "encoder.hidden=8",
        "encoder.out_channels=8"]  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)]
    proc = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("fewshot_exp-*.whl")
    return path


def test_the_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "fewshot_exp" / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names
    assert "fewshot_exp/data/splits/miniimagenet.json" in names


def test_the_installed_script_runs_from_an_empty_directory(wheel, glyphs_root, tmp_path):
    """A fresh virtual environment (seeing this one's packages, but not its editable fewshot_exp), the wheel
    installed without network, then the `fewshot-exp` script in an empty directory far from the repository."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "test-env.pth").write_text(sysconfig.get_path("purelib") + "\n")  # the test env's packages, last
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
               "--no-index", "--no-build-isolation", "--quiet", str(wheel)]  # fmt: skip
    proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "empty"
    work.mkdir()
    run = [str(venv / "bin" / "fewshot-exp"), *TINY, "logger=none", f"dataset.root={glyphs_root}"]
    proc = subprocess.run(run, cwd=work, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy:" in proc.stdout
    (results,) = work.glob("outputs/runs/*/*/results.json")
    origin = json.loads(results.read_text())["provenance"]
    assert str(site) in subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import fewshot_exp; print(fewshot_exp.__file__)"],
        capture_output=True, text=True, cwd=work, check=True,
    ).stdout  # fmt: skip
    assert origin["fewshot_exp"] == "0.1.0" and origin["git_commit"] is None  # an installed copy, not a checkout


@pytest.mark.parametrize(
    "override,extra",
    [("hydra/launcher=parallel", "parallel"), ("hydra/launcher=submitit_slurm", "slurm"),
     ("hparams_search=protonet_optuna", "optuna"), ("hydra/sweeper=optuna", "optuna")],
)  # fmt: skip
def test_a_plugin_that_is_not_installed_names_its_extra(override, extra, monkeypatch, capfd, tmp_path):
    import fewshot_exp.extras

    monkeypatch.setattr(fewshot_exp.extras, "installed", lambda name: False)
    code = call_cli(["-m", override, "logger=none", f"hydra.sweep.dir={tmp_path}"], monkeypatch)
    err = capfd.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert f'pip install "fewshot-exp[{extra}]"' in err and override in err
    assert not any(tmp_path.iterdir())


def test_help_lists_the_choices_of_each_group_and_no_schema():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout.split("== Config ==")[0]
    groups = dict(line.split(": ", 1) for line in listing.splitlines() if line.startswith(("algorithm:", "dataset:")))
    register_configs()
    options = set(plugins.options("algorithm"))
    assert set(groups["algorithm"].split(", ")) == options
    assert "glyphs" in groups["dataset"] and "base_" not in proc.stdout
    assert proc.stdout.startswith("fewshot-exp:")


NETRC_KEY = "k" * 40


@pytest.mark.parametrize(
    "env,netrc_host,online",
    [({}, None, False), ({"WANDB_API_KEY": NETRC_KEY}, None, True),
     ({"WANDB_BASE_URL": "https://wandb.example.org"}, "wandb.example.org", True),
     ({}, "wandb.example.org", False)],  # credentials for another host than the one runs go to
    ids=["none", "api-key", "self-hosted-netrc", "other-host"],
)  # fmt: skip
def test_auto_mode_uses_the_credentials_wandb_itself_finds(env, netrc_host, online, tmp_path):
    if netrc_host:
        (tmp_path / ".netrc").write_text(f"machine {netrc_host}\n  login user\n  password {NETRC_KEY}\n")
        (tmp_path / ".netrc").chmod(0o600)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    code = "from fewshot_exp.tracking import wandb_mode; print(wandb_mode('auto'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**clean, "HOME": str(tmp_path), "WANDB_SILENT": "true", **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ("online" if online else "offline")


def test_an_unreachable_wandb_server_is_found_once_per_sweep_and_the_runs_go_on_offline(glyphs_root, tmp_path):
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": NETRC_KEY}
    proc = run_cli("-m", "seed=0,1", *TINY, f"dataset.root={glyphs_root}", f"hydra.sweep.dir={tmp_path}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("W&B server unreachable (127.0.0.1:9: Connection refused)") == 1  # not once per job
    jobs = sorted(d for d in tmp_path.iterdir() if (d / "results.json").is_file())
    assert len(jobs) == 2 and all(list(d.glob("wandb/offline-run-*/run-*.wandb")) for d in jobs)


@pytest.mark.slow
def test_a_server_that_does_not_answer_costs_init_timeout_then_the_run_goes_on_offline(glyphs_root, tmp_path):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel does), never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {"WANDB_MODE": "online", "WANDB_BASE_URL": url, "WANDB_API_KEY": NETRC_KEY}
        proc = run_cli(
            *TINY, f"dataset.root={glyphs_root}", "logger.init_timeout=3", f"hydra.run.dir={tmp_path}", env=env
        )
    finally:
        silent.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B could not start an online run within logger.init_timeout=3 s" in proc.stderr
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert json.loads((tmp_path / "results.json").read_text())["test/episodes"] == 4


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_users_own_preset_outside_the_package(how, tmp_path):
    preset = tmp_path / "my_conf" / "experiment" / "mine.yaml"
    preset.parent.mkdir(parents=True)
    preset.write_text("# @package _global_\ndefaults:\n  - override /algorithm: matching\n\ntrain:\n  lr: 0.0123\n")
    where = ["--config-dir", str(tmp_path / "my_conf")] if how == "--config-dir" else [
        f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"
    ]  # fmt: skip
    proc = run_cli(*where, "experiment=mine", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lr: 0.0123" in proc.stdout and "fewshot_exp.algorithms.matching.MatchingNetwork" in proc.stdout
