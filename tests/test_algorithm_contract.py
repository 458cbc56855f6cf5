"""The contract every algorithm option (`fewshot_exp.plugins.options`) must keep, checked on each one automatically.

- composes from its YAML and builds through Hydra;
- episode in, logits [T, N*Q, N] out, finite;
- the loss is a finite scalar whose gradient reaches the encoder;
- in eval mode, the logits of a task do not depend on the other tasks of its batch;
- relabelling the classes of an episode permutes the logit columns the same way;
- a few optimizer steps on one episode lower its loss (it can learn).
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import REPO, random_imageset
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from fewshot_exp import plugins
from fewshot_exp.build import build_algorithm
from fewshot_exp.config import register_configs
from fewshot_exp.data.episodes import Episode, EpisodeSampler
from fewshot_exp.train import training_step

register_configs()
ALGORITHMS = plugins.options("algorithm")


@functools.cache
def composed(name: str, *overrides: str) -> DictConfig:
    """The config of `algorithm=<name>` with a small encoder, composed once per test process (read-only)."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "fewshot_exp" / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"algorithm={name}", "encoder.hidden=16", "encoder.out_channels=16", *overrides]
        )
    OmegaConf.set_readonly(cfg, True)
    return cfg


def make(name: str, *overrides: str):
    torch.manual_seed(0)
    return build_algorithm(composed(name, *overrides), in_channels=1, device=torch.device("cpu")).double()


def episode(tasks=3, n=4, k=2, q=3, seed=0) -> Episode:
    split = random_imageset(10, 8, size=16)
    ep = EpisodeSampler(split, n, k, q, tasks, torch.Generator().manual_seed(seed)).sample()
    return Episode(ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y, ep.n_way)


def task(ep: Episode, t: int) -> Episode:
    return Episode(
        ep.support_x[t : t + 1], ep.support_y[t : t + 1], ep.query_x[t : t + 1], ep.query_y[t : t + 1], ep.n_way
    )


#: the contract holds for an ensemble of them too (`algorithm.members`): one trained by the loop's gradient step,
#: one by its members' own outer updates
CASES = [*ALGORITHMS, "protonet algorithm.members=2", "reptile algorithm.members=2"]


@pytest.fixture(params=CASES)
def algorithm(request):
    return make(*request.param.split())


def test_logits_shape_and_finite(algorithm):
    ep = episode()
    algorithm.eval()
    with torch.no_grad():
        logits = algorithm(ep)
    assert logits.shape == (3, 12, 4)
    assert torch.isfinite(logits).all()


def test_loss_reaches_encoder(algorithm):
    ep = episode()
    algorithm.train()
    loss = algorithm.loss(algorithm(ep), ep)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in algorithm.encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])
def test_tasks_are_independent(algorithm, training):
    """A meta-batch of T tasks gives each task the logits it gets alone, in evaluation and in training (batch-norm
    statistics per task)."""
    ep = episode()
    algorithm.train(training)
    with torch.no_grad():
        torch.manual_seed(1)
        batched = algorithm(ep)
        # a stochastic algorithm draws for the whole batch at once, so only task 0 sees the same draws alone
        for t in range(1 if algorithm.stochastic else 3):
            torch.manual_seed(1)
            torch.testing.assert_close(algorithm(task(ep, t))[0], batched[t])


def test_relabelling_permutes_logits(algorithm):
    if not algorithm.label_equivariant:
        pytest.skip(f"{type(algorithm).__name__} learns a per-label initialisation, so labels are not interchangeable")
    ep = episode(tasks=1)
    perm = torch.tensor([2, 0, 3, 1])  # class c becomes perm[c]
    relabelled = Episode(ep.support_x, perm[ep.support_y], ep.query_x, perm[ep.query_y], ep.n_way)
    algorithm.eval()
    with torch.no_grad():
        torch.manual_seed(2)
        a = algorithm(ep)
        torch.manual_seed(2)
        b = algorithm(relabelled)
    torch.testing.assert_close(b[..., perm], a, atol=1e-6, rtol=1e-5)


def test_a_few_steps_lower_the_loss(algorithm):
    """Through the training loop's own step: the algorithm's outer update where it has one (Reptile's, MAML's
    task-by-task backward), else backward and the optimizer's step."""
    ep = episode(tasks=2)
    opt = torch.optim.Adam(algorithm.parameters(), lr=1e-3)
    algorithm.train()
    losses = []
    for _ in range(15):
        torch.manual_seed(3)
        loss, _ = training_step(algorithm, ep, opt, torch.device("cpu"), amp=False)
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_each_episode_s_evaluation_loss_is_the_algorithm_s_own_loss(algorithm):
    """`episode_losses` (evaluation's val/loss and test/loss, per episode) is `loss` of each task alone, and their
    mean is `loss` of the whole episode: the same quantity as train/loss (MSE for Relation, pair losses for
    Siamese, cross-entropy for the others)."""
    ep = episode(tasks=2)
    algorithm.eval()
    torch.manual_seed(3)
    logits = algorithm(ep)
    per_episode = algorithm.episode_losses(logits, ep)
    assert per_episode.shape == (2,)
    for t in range(2):
        torch.testing.assert_close(per_episode[t], algorithm.loss(logits[t : t + 1], task(ep, t)))
    torch.testing.assert_close(per_episode.mean(), algorithm.loss(logits, ep))


def amp_update(name: str, amp: bool) -> tuple[float, torch.Tensor, set[torch.dtype]]:
    """(loss, parameter change, dtypes of the encoder's conv outputs) of one `training_step` with plain SGD: float32
    Conv-4 at its real width (64) on 28 px images, with or without bf16 autocast (`train.amp`)."""
    algorithm = make(name, "encoder.hidden=64", "encoder.out_channels=64").float().eval()
    ep = EpisodeSampler(random_imageset(10, 8, size=28), 4, 2, 3, 2, torch.Generator().manual_seed(0)).sample()
    with torch.no_grad():
        algorithm(ep)  # initialise lazy parameters (hallucination's generator)
    algorithm.train()
    conv_dtypes: set[torch.dtype] = set()
    for module in algorithm.encoder.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: conv_dtypes.add(out.dtype))
    before = torch.cat([p.detach().flatten().clone() for p in algorithm.parameters()])
    torch.manual_seed(4)
    loss, _ = training_step(algorithm, ep, torch.optim.SGD(algorithm.parameters(), lr=0.1), torch.device("cpu"), amp)
    after = torch.cat([p.detach().flatten() for p in algorithm.parameters()])
    return float(loss.detach()), after - before, conv_dtypes


# ProtoMAML and Reptile take MAML's and FOMAML's inner loop with more steps: make test-full runs them
AMP_CASES = [pytest.param(a, marks=[pytest.mark.slow] if a in ("protomaml", "reptile") else []) for a in ALGORITHMS]


@pytest.mark.parametrize("name", AMP_CASES)
def test_bf16_autocast_runs_the_convs_in_bf16_and_keeps_the_update(name):
    """`train.amp=true` on CPU: the encoder's convolutions run in bf16, the parameters stay float32 and the step
    moves them in nearly the same direction as the float32 step (cosine > 0.94), by about as much (norm ratio within
    10%). The products after the encoder whose terms nearly cancel run in float32 (fewshot_exp/precision.py):
    in bf16, multiproto's fitting and logits would miss the cosine bound."""
    loss32, delta32, dtypes32 = amp_update(name, amp=False)
    loss16, delta16, dtypes16 = amp_update(name, amp=True)
    assert dtypes32 == {torch.float32} and dtypes16 == {torch.bfloat16}
    assert delta16.dtype == torch.float32 and torch.isfinite(delta16).all()
    assert abs(loss16 - loss32) <= 0.05 * abs(loss32)
    cosine = float(torch.nn.functional.cosine_similarity(delta16, delta32, dim=0))
    assert cosine > 0.94, f"bf16 update at cosine {cosine:.4f} to the float32 one"
    assert 0.9 < float(delta16.norm() / delta32.norm()) < 1.1
