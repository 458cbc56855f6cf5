"""Start an algorithm's encoder from another run's trained encoder (`train.init_from`).

Triantafillou et al. (2020) initialise the embedding network of their meta-learners, Proto-MAML among
them, from a network pre-trained on the meta-training classes. Here the source is any fewshot-exp
checkpoint (a run dir's best.pt, or a .pt file) with the same encoder: every parameter and buffer of the
target's `encoder.` is copied from it; the rest of the target (a MAML head, a relation module, ...) keeps
its fresh initialisation, and extra entries of the source (BatchNorm running statistics that MAML's
per-task batch statistics do not use) are ignored. It only sets the starting point: a resumed run
starts from its own last.pt and does not read this checkpoint (which may be gone by then).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fewshot_exp.checkpoint import checkpoint_path, load_checkpoint
from fewshot_exp.errors import UserError

log = logging.getLogger(__name__)

PREFIX = "encoder."


def init_encoder(algorithm: torch.nn.Module, value: str, device: torch.device) -> Path:
    """Copy the encoder of checkpoint `value` into `algorithm`; returns the checkpoint file it read."""
    path = checkpoint_path(value, "train.init_from")
    source = load_checkpoint(path, map_location=device)["algorithm"]
    target = algorithm.state_dict()
    keys = [k for k in target if k.startswith(PREFIX)]
    missing = [k for k in keys if k not in source]
    if missing:
        raise UserError(f"train.init_from={value}: its model has no {missing[0]} (not the same encoder)")
    wrong = [k for k in keys if source[k].shape != target[k].shape]
    if wrong:
        k = wrong[0]
        raise UserError(
            f"train.init_from={value}: {k} has shape {tuple(source[k].shape)} there and {tuple(target[k].shape)} "
            "here (not the same encoder settings)"
        )
    algorithm.load_state_dict({k: source[k] for k in keys}, strict=False)
    log.info("encoder initialised from %s (%d tensors)", path, len(keys))
    return path
