"""The training loop: sample an episode, forward, loss, step. Algorithm-agnostic.

Every `train.log_every` episodes the running loss/accuracy go to the tracker (the only host
syncs in the loop); every `train.val_every` episodes the model is evaluated on the same
validation episodes and the best one is checkpointed as `best.pt`. Every
`train.checkpoint_every` episodes, at the end, and when the process gets SIGTERM, SIGINT or SIGUSR2,
`last.pt` holds everything needed to continue bit for bit: model, optimizer, LR schedule, the
episode counter, the running averages, the best validation score, the W&B run id, the scheduler's job id and every
random state (Python, torch CPU and CUDA, the training sampler's generator).
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.build import episode_seed
from fewshot_exp.checkpoint import save_checkpoint
from fewshot_exp.data.episodes import Episode, EpisodeSampler
from fewshot_exp.errors import UserError
from fewshot_exp.evaluate import evaluate
from fewshot_exp.progress import progress as progress_bar
from fewshot_exp.resume import rng_state, set_rng_state
from fewshot_exp.scheduler import REQUEUE_SIGNAL, hand_over, job_id
from fewshot_exp.tracking import Tracker


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Interrupted(RuntimeError):
    """SIGTERM or SIGINT arrived; `last.pt` was written first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class Progress:
    """Where the loop is; saved in every checkpoint."""

    episode: int = 0
    best_val: float = -math.inf
    since_log: int = 0
    running: torch.Tensor = field(default_factory=lambda: torch.zeros(2))  # summed [loss, accuracy] since the last log

    def add(self, loss: torch.Tensor, logits: torch.Tensor, episode: Episode) -> None:
        """Add one episode's loss and query accuracy to the running sums, on the device (no host sync)."""
        self.running += torch.stack(
            [loss.detach().float(), (logits.detach().argmax(-1) == episode.query_y).float().mean()]
        )
        self.since_log += 1


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast of the training forward (`train.amp`) on CUDA and on CPU; fp32 when off."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def derivatives_named() -> Iterator[None]:
    """PyTorch's "derivative for aten::X is not implemented" as a UserError that says what to do: second-order
    methods differentiate each op's backward, which some ops (e.g. hardsigmoid in torchvision's MobileNetV3) lack."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as e:
        missing = re.search(r"derivative for (\S+) is not implemented", str(e))
        if missing is None:
            raise
        raise UserError(
            f"autograd cannot differentiate {missing.group(1)}, which this encoder uses and second-order training "
            "needs; set algorithm.first_order=true or choose another encoder"
        ) from None


def training_step(
    algorithm: FewShotAlgorithm,
    episode: Episode,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool,
    lr_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update on one episode; returns (loss, query logits) without reading them on the host.

    The algorithm's own outer update (`meta_update`: Reptile, MAML's task-by-task backward) when it has one,
    else forward, loss, backward and an optimizer step. `lr_scale` is the learning-rate schedule's current
    factor (the learning rate over `train.lr`), for an outer update that is not the optimizer's (Reptile's).
    """
    with derivatives_named():
        return _training_step(algorithm, episode, optimizer, device, amp, lr_scale)


def _training_step(
    algorithm: FewShotAlgorithm,
    episode: Episode,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool,
    lr_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(device, amp):
        update = algorithm.meta_update(episode, optimizer, lr_scale)
    if update is not None:
        return update
    return algorithm.gradient_step(episode, optimizer, lambda: autocast(device, amp))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, REQUEUE_SIGNAL)


@contextmanager
def stop_requests() -> Iterator[tuple[list[int], dict[int, Any]]]:
    """Collect SIGTERM/SIGINT (and SIGUSR2, a scheduler's warning before a timeout or preemption) instead of
    dying at once, so the loop can checkpoint and stop cleanly; yields them and the handlers they replaced."""
    received: list[int] = []
    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        except ValueError:  # not the main thread (some launchers): keep the default behaviour
            pass
    try:
        yield received, previous
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def optimizer_and_schedule(
    algorithm: FewShotAlgorithm, cfg: Any
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The `optimizer` group's optimizer of the algorithm's parameters (at `train.lr`, `train.weight_decay`) and the
    `scheduler` group's schedule of it."""
    from hydra.utils import instantiate

    optimizer = instantiate(cfg.optimizer)(algorithm.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    return optimizer, instantiate(cfg.scheduler)(optimizer)


def train(
    algorithm: FewShotAlgorithm,
    samplers: dict[str, EpisodeSampler],
    cfg: Any,
    tracker: Tracker,
    run_dir: Path,
    device: torch.device,
    resume_from: dict[str, Any] | None = None,
) -> float:
    """Train up to `cfg.train.episodes` episodes (continuing `resume_from`, a last.pt state, if given);
    returns the best validation accuracy."""
    tc = cfg.train
    optimizer, scheduler = optimizer_and_schedule(algorithm, cfg)
    progress = Progress(running=torch.zeros(2, device=device))
    if resume_from is not None:
        optimizer.load_state_dict(resume_from["optimizer"])
        scheduler.load_state_dict(resume_from["scheduler"])
        progress = Progress(**{**resume_from["progress"], "running": resume_from["progress"]["running"].to(device)})
        set_rng_state(resume_from["rng"], samplers["train"])

    def checkpoint(name: str) -> None:
        save_checkpoint(
            run_dir / name,
            {
                "algorithm": algorithm.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "progress": vars(progress).copy(),
                "rng": rng_state(samplers["train"]),
                "wandb_run_id": tracker.run_id,
                "job_id": job_id(),  # a requeued job finds its own checkpoint by it
                "config": OmegaConf.to_yaml(cfg),
            },
        )

    algorithm.train()
    bar = progress_bar(
        range(progress.episode + 1, tc.episodes + 1),
        initial=progress.episode,
        total=tc.episodes,
        unit="ep",
        desc="train",
    )
    with stop_requests() as (stop, replaced):
        for step in bar:
            episode = samplers["train"].sample()
            lr_scale = scheduler.get_last_lr()[0] / tc.lr  # the schedule's factor, for an outer step of its own
            loss, logits = training_step(algorithm, episode, optimizer, device, tc.amp, lr_scale)
            scheduler.step()
            progress.episode = step
            progress.add(loss, logits, episode)
            if step % tc.log_every == 0 or step == tc.episodes:
                loss_avg, acc_avg = (progress.running / progress.since_log).tolist()
                check_finite(loss_avg, step, tc.lr)
                tracker.log(
                    {"train/loss": loss_avg, "train/acc": acc_avg, "train/lr": scheduler.get_last_lr()[0]}, step
                )
                bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc_avg:.3f}", refresh=False)  # shown at the next redraw
                progress.running.zero_()
                progress.since_log = 0
            if step % tc.val_every == 0 or step == tc.episodes:
                samplers["val"].generator.manual_seed(episode_seed(cfg, "val"))  # the same episodes every time
                val = evaluate(algorithm, samplers["val"], tc.val_episodes, cfg.eval.batch_images)
                tracker.log({"val/acc": val.mean, "val/acc_ci95": val.ci95, "val/loss": val.loss}, step)
                if val.mean > progress.best_val:
                    progress.best_val = val.mean
                    checkpoint("best.pt")
            if step % tc.checkpoint_every == 0 or step == tc.episodes or stop:
                check_finite(float(progress.running[0]) / max(progress.since_log, 1), step, tc.lr)
                checkpoint("last.pt")
            if stop:
                hand_over(stop[0], replaced.get(stop[0]))  # submitit requeues the job and exits
                raise Interrupted(
                    f"stopped by signal {signal.Signals(stop[0]).name} at episode {step} after writing "
                    f"{run_dir / 'last.pt'}; continue with resume={run_dir}",
                    stop[0],
                )
    return progress.best_val


def check_finite(loss: float, step: int, lr: float) -> None:
    """A NaN/inf loss stops the run before it can overwrite the last good checkpoint."""
    if not math.isfinite(loss):
        raise DivergedError(
            f"training diverged: loss is {loss} at episode {step}; lower train.lr (now {lr}); "
            "the last good checkpoint is kept"
        )
