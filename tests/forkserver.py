"""A fork server for the command-line tests: one process imports what `python -m fewshot_exp` imports (torch
and torch._dynamo alone take seconds to import), and every CLI run the tests ask for is a fork of
it. Each run is still its own process, as a user's is: its own argv, environment, working directory, exit code,
signals (a SIGKILL kills only it), stdout and stderr, and the normal interpreter exit (non-daemon threads
joined, atexit handlers run). The server does no tensor work itself, so no OpenMP thread pool is copied
into a child, and each child starts torch's thread pools from scratch with the default thread count.

Protocol (one JSON object per line): the client writes {"args", "env", "cwd", "stdout", "stderr", "code",
"timeout"} (`args`: the command-line arguments; `code`: Python source to run as `__main__` instead of
`-m fewshot_exp`); the server answers
{"returncode", "timed_out"} when the child has ended (negative: killed by that signal, as in `subprocess`;
a child still running after `timeout` seconds is killed). `Client` below is the tests' end of it.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def preload() -> None:
    """What a CLI run imports before it does any work (and what the optimizer's first step imports), and what it
    imports on the way: pandas (the per-episode table) and pyplot (the plots). Not W&B: a run forked from a
    process that imported wandb loses its summary and part of its history."""
    import hydra  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported by torch.optim's first step)
    import torchvision  # noqa: F401
    from hydra.core.global_hydra import GlobalHydra

    import fewshot_exp.run  # noqa: F401
    import fewshot_exp.sweep  # noqa: F401  (not fewshot_exp.__main__ itself: each child runs it as __main__)

    assert not GlobalHydra.instance().is_initialized()
    warm_up_hydra()


def warm_up_hydra() -> None:
    """Compose the default config once, as every run does first, and forget it: what stays are the caches a first
    composition fills (the override and interpolation parsers', copy's, Hydra's list of its plugins), which
    take a new interpreter's first run about 0.6 s longer than its second. The children inherit them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fewshot_exp.config import register_configs
    from fewshot_exp.plugins import CONF_DIR

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        compose("config", return_hydra_config=True)
    assert not GlobalHydra.instance().is_initialized()


def child(request: dict, channels: tuple) -> BaseException | None:
    """Become the run the request describes; returns what ends it (None: it returned normally)."""
    for channel in channels:  # the server's pipe ends
        channel.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new interpreter has them
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"]), (0, os.devnull)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC if fd else os.O_RDONLY, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["-c" if request["code"] is not None else "fewshot_exp", *request["args"]]  # runpy sets argv[0]
    sys.path[0] = request["cwd"]  # as `python -m` and `python -c` have it (the server's is tests/)
    sys.path[1:1] = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]  # as startup puts it
    try:
        if request["code"] is not None:
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            runpy.run_module("fewshot_exp", run_name="__main__", alter_sys=True)
    except BaseException as e:  # noqa: BLE001  (re-raised at the top level, where the interpreter handles it)
        return e
    return None


def serve() -> BaseException | None:
    """Fork one child per request until the client closes the pipe; returns only in a child."""
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # nothing the server or a child prints can reach the reply pipe
    preload()
    gc.freeze()  # the preloaded objects are never collected: the garbage collector (and exit) skip them
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return child(request, (requests, replies))
        returncode, timed_out = wait(pid, request["timeout"])
        replies.write(json.dumps({"returncode": returncode, "timed_out": timed_out}) + "\n")
        replies.flush()
    return None


def wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The child's exit code (as `subprocess` reports it) and whether it had to be killed after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.01)


def command(args: list[str], code: str | None = None) -> list[str]:
    """The new interpreter's command line that a forked run stands for: `python -m fewshot_exp` or `python -c`."""
    return [sys.executable, *(["-c", code] if code is not None else ["-m", "fewshot_exp"]), *args]


class Client:
    """Starts the server (with the environment its imports see) and runs commands in forks of it."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.server = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=cwd, text=True
        )
        atexit.register(self.close)

    def run(
        self, args: list[str], env: dict[str, str], cwd: Path, timeout: float, code: str | None = None
    ) -> subprocess.CompletedProcess:
        """What `subprocess.run([python, "-m", "fewshot_exp", *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout)` gives; with `code`, `[python, "-c", code, *args]`."""
        argv = command(args, code)
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
            self.server.stdin.write(json.dumps({**request, "code": code, "timeout": timeout}) + "\n")
            self.server.stdin.flush()
            line = self.server.stdout.readline()
            if not line:
                raise RuntimeError(f"the fork server exited with code {self.server.wait()}")
            reply = json.loads(line)
            stdout, stderr = (p.read_text(errors="replace") if p.exists() else "" for p in (out, err))
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(argv, reply["returncode"], stdout, stderr)

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.stdin.close()
            self.server.wait(timeout=30)


if __name__ == "__main__":
    ended = serve()
    if ended is not None:
        raise ended
