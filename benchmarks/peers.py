"""The peers: easyfsl for ProtoNet, `higher` for MAML, each used as its documentation shows.

Both are optional (`pip install -e '.[bench]'`); a row lists a peer that does not import as skipped,
with the reason. The peers' encoder is the textbook Conv-4 a user builds: `nn.Sequential` of
conv3x3 - BN - ReLU - maxpool blocks in the default NCHW memory format, then a flatten.

- easyfsl (1.5.0): its `TaskSampler` over a `FewShotDataset` of the same images (converted to float once,
  the most favourable in-memory dataset), a torch `DataLoader` with the sampler's
  `episodic_collate_fn`, `PrototypicalNetworks(backbone)`; training is the loop of easyfsl's episodic
  training notebook (`process_support_set`, forward on the queries, cross-entropy, Adam step,
  `loss.item()`), evaluation is `easyfsl.utils.evaluate` (one episode per forward).
- higher (0.2.1): MAML second order, `higher.innerloop_ctx(model, SGD(lr=inner_lr))` per task with
  `diffopt.step(support loss)` for each inner step and `(query loss / T).backward()`, then the outer
  Adam step; the model is the Conv-4 and a linear head. Its episodes come from our sampler (higher has none).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.cases import Shape, synthetic_images
from benchmarks.ours import sampler
from fewshot_exp.encoders.conv4 import conv_block

INSTALL_HINT = "pip install -e '.[bench]'"


def missing(module: str) -> str | None:
    """Why `module` cannot be used here, or None when it imports."""
    try:
        importlib.import_module(module)
    except Exception as e:  # an old package can fail on import with more than ImportError
        return f"{module} is not installed or fails to import ({type(e).__name__}: {e}); {INSTALL_HINT}"
    return None


def textbook_conv4(shape: Shape) -> nn.Sequential:
    """Conv-4 as a user writes it: four conv3x3 - BN - ReLU - maxpool blocks, NCHW, then flatten."""
    blocks = [conv_block(shape.channels if i == 0 else shape.hidden, shape.hidden) for i in range(4)]
    return nn.Sequential(*blocks, nn.Flatten())


# --- easyfsl ---------------------------------------------------------------------------------------


def task_loader(shape: Shape, tasks: int) -> torch.utils.data.DataLoader:
    """easyfsl's episodic DataLoader over the benchmark's images: FewShotDataset + TaskSampler + its collate_fn."""
    from easyfsl.datasets import FewShotDataset
    from easyfsl.samplers import TaskSampler

    class TensorFewShotDataset(FewShotDataset):
        def __init__(self) -> None:
            split = synthetic_images(shape)
            self.images = split.images.float().div_(255.0)
            self.labels = split.labels.tolist()

        def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
            return self.images[item], self.labels[item]

        def __len__(self) -> int:
            return len(self.labels)

        def get_labels(self) -> list[int]:
            return self.labels

    class AcceptsDataSource(torch.utils.data.Sampler):
        """easyfsl 1.5.0's TaskSampler calls Sampler.__init__(data_source=None), which torch >= 2.2 no longer
        takes; this base (after TaskSampler in the MRO) accepts and drops it. Nothing else changes."""

        def __init__(self, data_source: Any = None) -> None:
            pass

    class CompatTaskSampler(TaskSampler, AcceptsDataSource):
        pass

    dataset = TensorFewShotDataset()
    task_sampler = CompatTaskSampler(dataset, shape.way, shape.shot, shape.query, tasks)
    return torch.utils.data.DataLoader(dataset, batch_sampler=task_sampler, collate_fn=task_sampler.episodic_collate_fn)


def forever(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def easyfsl_train(shape: Shape, device: torch.device) -> Callable[[], Any]:
    from easyfsl.methods import PrototypicalNetworks

    model = PrototypicalNetworks(textbook_conv4(shape)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = forever(task_loader(shape, tasks=10_000))

    def step() -> float:
        support_images, support_labels, query_images, query_labels, _ = next(batches)
        optimizer.zero_grad()
        model.process_support_set(support_images.to(device), support_labels.to(device))
        loss = F.cross_entropy(model(query_images.to(device)), query_labels.to(device))
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def easyfsl_eval(shape: Shape, device: torch.device) -> Callable[[], Any]:
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.utils import evaluate

    model = PrototypicalNetworks(textbook_conv4(shape)).to(device)
    loader = task_loader(shape, tasks=shape.episodes)
    return lambda: evaluate(model, loader, device=str(device), use_tqdm=False)


# --- higher ----------------------------------------------------------------------------------------


def higher_maml_train(shape: Shape, device: torch.device, inner_lr: float = 0.4) -> Callable[[], Any]:
    import higher

    body = textbook_conv4(shape)
    with torch.no_grad():
        dim = body(torch.zeros(2, shape.channels, shape.size, shape.size)).shape[1]
    model = nn.Sequential(body, nn.Linear(dim, shape.way)).to(device).train()
    meta_optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner_optimizer = torch.optim.SGD(model.parameters(), lr=inner_lr)
    episodes = sampler(shape, device)

    def step() -> None:
        episode = episodes.sample()
        meta_optimizer.zero_grad()
        for t in range(episode.tasks):
            with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(shape.inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(episode.support_x[t]), episode.support_y[t]))
                query_loss = F.cross_entropy(fmodel(episode.query_x[t]), episode.query_y[t])
                (query_loss / episode.tasks).backward()
        meta_optimizer.step()

    return step
