"""The training loop: sample an episode, forward, loss, step. Algorithm-agnostic.

Every `train.log_every` episodes the running loss/accuracy go to the tracker (the only host
syncs in the loop); every `train.val_every` episodes the model is evaluated on the same
validation episodes and the best one is checkpointed as `best.pt`; `last.pt` is written at the end.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.checkpoint import save_checkpoint
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.evaluate import evaluate
from fewshot_exp.tracking import Tracker


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def autocast(device: torch.device, enabled: bool) -> Any:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def checkpoint_state(algorithm: FewShotAlgorithm, optimizer: Any, scheduler: Any, episode: int, best_val: float,
                     cfg: Any) -> dict[str, Any]:
    return {
        "algorithm": algorithm.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "episode": episode,
        "best_val_acc": best_val,
        "config": OmegaConf.to_yaml(cfg),
    }


def train(algorithm: FewShotAlgorithm, samplers: dict[str, EpisodeSampler], cfg: Any, tracker: Tracker,
          run_dir: Path, device: torch.device) -> float:
    """Train for `cfg.train.episodes` episodes; returns the best validation accuracy."""
    tc = cfg.train
    optimizer = torch.optim.Adam(algorithm.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.lr_step, gamma=tc.lr_gamma)
    best_val = -math.inf
    running_loss = torch.zeros((), device=device)
    running_acc = torch.zeros((), device=device)
    since_log = 0
    algorithm.train()
    bar = tqdm(range(1, tc.episodes + 1), unit="ep", desc="train", dynamic_ncols=True)
    for step in bar:
        episode = samplers["train"].sample()
        update = algorithm.meta_update(episode, optimizer)  # an algorithm's own outer update (Reptile), or None
        if update is None:
            with autocast(device, tc.amp):
                logits = algorithm(episode)
                loss = algorithm.loss(logits, episode)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            loss, logits = update
        scheduler.step()
        running_loss += loss.detach().float()
        running_acc += (logits.detach().argmax(-1) == episode.query_y).float().mean()
        since_log += 1
        if step % tc.log_every == 0 or step == tc.episodes:
            metrics = {"train/loss": float(running_loss) / since_log, "train/acc": float(running_acc) / since_log,
                       "train/lr": scheduler.get_last_lr()[0]}
            if not math.isfinite(metrics["train/loss"]):
                raise DivergedError(f"training diverged: loss is {metrics['train/loss']} at episode {step}; "
                                    f"lower train.lr (now {tc.lr})")
            tracker.log(metrics, step)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", acc=f"{metrics['train/acc']:.3f}")
            running_loss.zero_()
            running_acc.zero_()
            since_log = 0
        if step % tc.val_every == 0 or step == tc.episodes:
            samplers["val"].generator.manual_seed(cfg.seed + 1)  # the same validation episodes every time
            val = evaluate(algorithm, samplers["val"], tc.val_episodes, cfg.eval.batch_images)
            tracker.log({"val/acc": val.mean, "val/acc_ci95": val.ci95, "val/loss": val.loss}, step)
            if val.mean > best_val:
                best_val = val.mean
                save_checkpoint(run_dir / "best.pt", checkpoint_state(algorithm, optimizer, scheduler, step, best_val, cfg))
    save_checkpoint(run_dir / "last.pt", checkpoint_state(algorithm, optimizer, scheduler, tc.episodes, best_val, cfg))
    return best_val
