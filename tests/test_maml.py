"""MAML, first-order MAML, ProtoMAML, Meta-SGD and Reptile against independent computations (float64; tiny NCHW
nets, and a channels_last Conv-4 where a test says so).

- the second-order meta-gradient equals central finite differences of the meta-objective, and the
  forward pass and its gradient equal a hand-written inner loop (torch.autograd.grad, create_graph=True);
- the first-order meta-gradient is the query-loss gradient at the adapted weights;
- ProtoMAML's head starts at W = 2c, b = -||c||^2, passes gradients to the encoder through that init,
  and with 0 steps predicts like ProtoNet (squared Euclidean);
- training uses `inner_steps`, evaluation `test_inner_steps`, also under torch.no_grad();
- adaptation changes no parameter or buffer, and a task's logits and gradients do not depend on the
  other tasks of its batch;
- the vmap and loop paths agree (logits and gradients);
- Reptile's update is theta + epsilon * (mean phi - theta) with phi from plain SGD by hand.
"""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fewshot_exp.algorithms.base import class_means
from fewshot_exp.algorithms.maml import MAML, ProtoMAML, TaskBatchNorm, channels_last_4d
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.algorithms.reptile import Reptile
from fewshot_exp.data.episodes import Episode
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.errors import UserError

N_WAY, K_SHOT, N_QUERY, SIZE = 3, 2, 2, 4


def tiny_encoder(batch_norm: bool = True) -> nn.Module:
    """Conv 3x3 (1 -> 3 channels) [-> BN] -> tanh on 4x4 images: 12-d embeddings, smooth everywhere."""
    layers = [nn.Conv2d(1, 3, 3)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(3))
    return nn.Sequential(*layers, nn.Tanh(), nn.Flatten())


def make(cls=MAML, batch_norm: bool = True, seed: int = 0, **kwargs) -> MAML:
    torch.manual_seed(seed)
    kwargs.setdefault("embedding_dim", 12)
    if cls is not ProtoMAML:
        kwargs.setdefault("n_way", N_WAY)
    algorithm = cls(tiny_encoder(batch_norm), Distance("l2"), **kwargs).double()
    with torch.no_grad():  # move away from the zero / unit inits so that no gradient vanishes by symmetry
        for name, p in algorithm.named_parameters():
            if not name.startswith("inner_lrs"):
                p.add_(0.3 * torch.randn_like(p))
    return algorithm


def episode(tasks: int = 2, seed: int = 0, n_way: int = N_WAY) -> Episode:
    g = torch.Generator().manual_seed(seed)
    s, q = n_way * K_SHOT, n_way * N_QUERY
    return Episode(
        support_x=torch.rand(tasks, s, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
        support_y=torch.arange(n_way).repeat_interleave(K_SHOT).expand(tasks, s).clone(),
        query_x=torch.rand(tasks, q, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
        query_y=torch.arange(n_way).repeat_interleave(N_QUERY).expand(tasks, q).clone(),
        n_way=n_way,
    )


def upsampled(ep: Episode, size: int = 16) -> Episode:
    """The same episode with images resized to `size` px (Conv-4 needs at least 16)."""

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.flatten(0, 1), size=size).unflatten(0, x.shape[:2])

    return Episode(up(ep.support_x), ep.support_y, up(ep.query_x), ep.query_y, ep.n_way)


def task(ep: Episode, t: int) -> Episode:
    return Episode(
        ep.support_x[t : t + 1], ep.support_y[t : t + 1], ep.query_x[t : t + 1], ep.query_y[t : t + 1], ep.n_way
    )


def meta_loss(algorithm: MAML, ep: Episode) -> torch.Tensor:
    return algorithm.loss(algorithm(ep), ep)


def meta_gradient(algorithm: MAML, ep: Episode) -> list[torch.Tensor]:
    algorithm.zero_grad()
    meta_loss(algorithm, ep).backward()
    return [p.grad.clone() for p in algorithm.parameters()]


def assert_matches_finite_differences(algorithm: MAML, ep: Episode, directions: int, rel: float) -> None:
    """The meta-gradient along random directions of the whole parameter vector equals central differences."""
    analytic = meta_gradient(algorithm, ep)
    params = list(algorithm.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(directions):
        v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        h = 1e-6
        with torch.no_grad():
            for p, vi in zip(params, v):
                p += h * vi
            plus = float(meta_loss(algorithm, ep))
            for p, vi in zip(params, v):
                p -= 2 * h * vi
            minus = float(meta_loss(algorithm, ep))
            for p, vi in zip(params, v):
                p += h * vi
        directional = float(sum((a * vi).sum() for a, vi in zip(analytic, v)))
        assert directional == pytest.approx((plus - minus) / (2 * h), rel=rel, abs=1e-8)


def hand_inner_loop(algorithm: MAML, ep: Episode, t: int, steps: int, first_order: bool = False):
    """The task's adapted weights and query loss, written out with torch.autograd.grad on explicit tensors."""
    enc = dict(algorithm.encoder.named_parameters())
    sx, sy, qx = ep.support_x[t], ep.support_y[t], ep.query_x[t]
    lr, head_lr = algorithm.inner_lr, algorithm.head_inner_lr
    if algorithm.prototype_head:
        c = class_means(algorithm.encoder(sx)[None], sy[None], ep.n_way)[0]  # a separate, un-adapted pass
        w, b = 2 * c, -(c * c).sum(1)
    else:
        w, b = algorithm.head.weight[: ep.n_way], algorithm.head.bias[: ep.n_way]
    fast = {k: v.clone() for k, v in enc.items()}  # distinct tensors: d/d(fast) sees no path through the init
    for _ in range(steps):
        loss = F.cross_entropy(F.linear(functional_call(algorithm.encoder, fast, (sx,)), w, b), sy)
        grads = torch.autograd.grad(loss, [*fast.values(), w, b], create_graph=not first_order)
        if first_order:
            grads = [g.detach() for g in grads]
        fast = {k: v - lr * g for (k, v), g in zip(fast.items(), grads)}
        w, b = w - head_lr * grads[-2], b - head_lr * grads[-1]
    logits = F.linear(functional_call(algorithm.encoder, fast, (qx,)), w, b)
    return fast, w, b, logits


# --- second order ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MAML, ProtoMAML])
@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("meta_sgd", [False, True])
def test_second_order_meta_gradient_equals_finite_differences(cls, vectorize, meta_sgd):
    algorithm = make(cls, inner_steps=2, inner_lr=0.3, head_inner_lr=0.5, meta_sgd=meta_sgd, vectorize=vectorize)
    ep = episode()
    algorithm.train()
    assert_matches_finite_differences(algorithm, ep, directions=4, rel=1e-6)


@pytest.mark.parametrize("cls", [MAML, ProtoMAML])
def test_forward_and_meta_gradient_equal_a_hand_written_inner_loop(cls):
    algorithm = make(cls, inner_steps=3, inner_lr=0.2, head_inner_lr=0.4)
    ep = episode()
    algorithm.train()
    logits = algorithm(ep)
    hand = torch.stack([hand_inner_loop(algorithm, ep, t, steps=3)[3] for t in range(ep.tasks)])
    torch.testing.assert_close(logits, hand)
    params = list(algorithm.parameters())
    ours = torch.autograd.grad(algorithm.loss(logits, ep), params)
    theirs = torch.autograd.grad(algorithm.loss(hand, ep), params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    # and the second-order terms matter here: the first-order gradient is a different vector
    fo = make(cls, inner_steps=3, inner_lr=0.2, head_inner_lr=0.4, first_order=True)
    first = torch.cat([g.flatten() for g in meta_gradient(fo, ep)])
    assert (first - torch.cat([g.flatten() for g in ours])).abs().max() > 1e-3


# --- first order -------------------------------------------------------------------------------


def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_weights():
    algorithm = make(MAML, inner_steps=2, inner_lr=0.3, first_order=True)
    ep = episode(tasks=2)
    algorithm.train()
    grads = dict(zip([n for n, _ in algorithm.named_parameters()], meta_gradient(algorithm, ep)))
    expected = {n: torch.zeros_like(g) for n, g in grads.items()}
    for t in range(ep.tasks):
        fast, w, b, _ = hand_inner_loop(algorithm, ep, t, steps=2, first_order=True)
        phi = {k: v.detach().requires_grad_() for k, v in fast.items()}
        w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
        logits = F.linear(functional_call(algorithm.encoder, phi, (ep.query_x[t],)), w, b)
        loss = F.cross_entropy(logits, ep.query_y[t]) / ep.tasks  # the meta-loss is the mean over tasks
        g = torch.autograd.grad(loss, [*phi.values(), w, b])
        for k, gk in zip(phi, g):
            expected[f"encoder.{k}"] += gk
        expected["head.weight"][: ep.n_way] += g[-2]
        expected["head.bias"][: ep.n_way] += g[-1]
    for n in grads:
        torch.testing.assert_close(grads[n], expected[n])


def test_first_order_protomaml_still_differentiates_the_prototype_init():
    algorithm = make(ProtoMAML, inner_steps=2, inner_lr=0.3, first_order=True)
    ep = episode(tasks=1)
    algorithm.train()
    ours = meta_gradient(algorithm, ep)
    fast, w, b, _ = hand_inner_loop(algorithm, ep, 0, steps=2, first_order=True)
    # fo-Proto-MAML: theta_k = theta + const and (W_k, b_k) = (W_0(theta), b_0(theta)) + const
    loss = F.cross_entropy(F.linear(functional_call(algorithm.encoder, fast, (ep.query_x[0],)), w, b), ep.query_y[0])
    theirs = torch.autograd.grad(loss, list(algorithm.parameters()))
    for a, b_ in zip(ours, theirs):
        torch.testing.assert_close(a, b_)
    # the prototype path contributes: without it the gradient differs
    w_const, b_const = w.detach(), b.detach()
    logits = F.linear(functional_call(algorithm.encoder, fast, (ep.query_x[0],)), w_const, b_const)
    no_proto = torch.autograd.grad(F.cross_entropy(logits, ep.query_y[0]), list(algorithm.parameters()))
    assert max(float((a - c).abs().max()) for a, c in zip(ours, no_proto)) > 1e-3


# --- ProtoMAML's head --------------------------------------------------------------------------


def test_protomaml_head_init_is_twice_the_prototypes_and_passes_gradients_to_the_encoder():
    algorithm = make(ProtoMAML)
    ep = episode(tasks=1)
    sx, sy = ep.support_x[0], ep.support_y[0]
    head = algorithm.init_head(dict(algorithm.encoder.named_parameters()), sx, sy, N_WAY)
    z = algorithm.encoder(sx)
    c = torch.stack([z[sy == n].mean(0) for n in range(N_WAY)])  # prototypes, one class at a time
    torch.testing.assert_close(head["weight"], 2 * c)
    torch.testing.assert_close(head["bias"], -(c**2).sum(1))
    r_w, r_b = torch.randn_like(c), torch.randn(N_WAY, dtype=torch.float64)
    params = list(algorithm.encoder.parameters())
    ours = torch.autograd.grad((head["weight"] * r_w).sum() + (head["bias"] * r_b).sum(), params)
    theirs = torch.autograd.grad((2 * c * r_w).sum() - ((c**2).sum(1) * r_b).sum(), params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


def test_protomaml_with_zero_steps_predicts_like_protonet():
    algorithm = make(ProtoMAML, batch_norm=False, test_inner_steps=0)
    protonet = ProtoNet(copy.deepcopy(algorithm.encoder), Distance("l2"))
    ep = episode(tasks=3)
    algorithm.eval()
    with torch.no_grad():
        ours, theirs = algorithm(ep), protonet(ep)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
    torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1))


# --- inner steps, train vs eval ----------------------------------------------------------------


@pytest.mark.parametrize("cls,passes_per_step,extra_passes", [(MAML, 1, 1), (ProtoMAML, 1, 2)])
def test_train_mode_uses_inner_steps_and_eval_mode_test_inner_steps(cls, passes_per_step, extra_passes):
    algorithm = make(cls, inner_steps=2, test_inner_steps=5)
    calls = []
    algorithm.encoder.register_forward_hook(lambda *_: calls.append(1))
    ep = episode(tasks=1)
    algorithm.train()
    algorithm(ep)
    assert len(calls) == 2 * passes_per_step + extra_passes  # steps + query pass (+ prototype pass)
    calls.clear()
    algorithm.eval()
    with torch.no_grad():  # as in evaluate(): the inner loop still gets its gradients
        adapted = algorithm(ep)
    assert len(calls) == 5 * passes_per_step + extra_passes
    algorithm.test_inner_steps = 0
    with torch.no_grad():
        unadapted = algorithm(ep)
    assert (adapted - unadapted).abs().max() > 1e-3
    algorithm.test_inner_steps = 5
    torch.testing.assert_close(algorithm(ep).detach(), adapted)  # same numbers with autograd recording


def test_batch_norm_uses_batch_statistics_in_train_and_eval_and_keeps_no_buffers():
    algorithm = make(MAML, inner_steps=3, test_inner_steps=3)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in algorithm.modules())
    assert any(isinstance(m, TaskBatchNorm) for m in algorithm.modules())
    assert list(algorithm.encoder.buffers()) == []
    ep = episode()
    algorithm.train()
    train_logits = algorithm(ep).detach()
    algorithm.eval()
    torch.testing.assert_close(algorithm(ep).detach(), train_logits)


# --- isolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MAML, ProtoMAML, Reptile])
def test_adaptation_changes_no_meta_parameter_or_buffer_and_tasks_are_independent(cls):
    """The default Conv-4 (channels_last, BN with running buffers) in float64: the path training takes."""
    torch.manual_seed(0)
    algorithm = cls(Conv4(hidden=4, out_channels=4), Distance("l2"), embedding_dim=4).double()
    ep = upsampled(episode(tasks=3))
    before = copy.deepcopy(algorithm.state_dict())
    algorithm.train()
    loss = meta_loss(algorithm, ep) * ep.tasks  # the sum of the tasks' losses
    batched = torch.autograd.grad(loss, list(algorithm.parameters()))
    for k, v in algorithm.state_dict().items():
        assert torch.equal(v, before[k]), k
    alone = [
        torch.autograd.grad(meta_loss(algorithm, task(ep, t)), list(algorithm.parameters())) for t in range(ep.tasks)
    ]
    for i, g in enumerate(batched):
        torch.testing.assert_close(g, sum(a[i] for a in alone))
    algorithm.eval()
    with torch.no_grad():
        logits = algorithm(ep)
        for t in range(ep.tasks):
            torch.testing.assert_close(algorithm(task(ep, t))[0], logits[t])
    for k, v in algorithm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_channels_last_batch_norm_by_rows_is_batch_norm_to_second_order():
    """TaskBatchNorm runs a channels_last map as batch norm of its [N*H*W, C] rows (the fast layout for its double
    backward): the same outputs, gradients and second derivatives as the 4-d call on the NCHW map."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    weight, bias = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        norm = TaskBatchNorm(nn.BatchNorm2d(4).double())
        with torch.no_grad():
            norm.weight.copy_(weight)
            norm.bias.copy_(bias)
        xi, wi = x.contiguous(memory_format=layout).requires_grad_(), norm.weight
        assert channels_last_4d(xi) == (layout == torch.channels_last)  # which path runs
        out = norm(xi)
        assert out.is_contiguous(memory_format=layout)
        gx, gw = torch.autograd.grad((out * torch.cos(out)).sum(), (xi, wi), create_graph=True)
        second = torch.autograd.grad((gx.pow(2).sum() + gw.pow(2).sum()), (xi, wi))
        results.append([out, gx, gw, *second])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_second_order_meta_gradient_of_a_channels_last_conv4_equals_finite_differences(downsample):
    """The CPU default in float64: a channels_last Conv-4, tasks looped, batch norm by rows through the double
    backward; also Finn et al.'s strided Omniglot variant."""
    torch.manual_seed(0)
    algorithm = MAML(
        Conv4(hidden=4, out_channels=4, downsample=downsample),
        Distance("l2"),
        inner_steps=2,
        inner_lr=0.3,
        n_way=N_WAY,
        embedding_dim=4,
        vectorize=False,
    ).double()
    with torch.no_grad():
        for p in algorithm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert algorithm.encoder.channels_last
    # Strided at 16 px, the last maps are 1x1 and one direction's +-1e-6 step crosses a ReLU kink (the
    # differences reach the analytic value at 1e-7); at 32 px (2x2 maps) all three agree at 1e-6.
    ep = upsampled(episode(), 32 if downsample == "stride" else 16)
    algorithm.train()
    assert_matches_finite_differences(algorithm, ep, directions=3, rel=1e-5)


# --- vmap --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,first_order,meta_sgd",
    [(MAML, False, False), (MAML, True, True), (ProtoMAML, False, True), (ProtoMAML, True, False)],
)
@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_vmap_and_loop_give_the_same_logits_and_gradients(cls, first_order, meta_sgd, downsample):
    """float64, a channels_last Conv-4 with BN: the path where vmap needs the composite batch norm."""
    torch.manual_seed(0)
    algorithm = cls(
        Conv4(hidden=4, out_channels=4, downsample=downsample),
        Distance("l2"),
        inner_steps=2,
        test_inner_steps=3,
        inner_lr=0.3,
        first_order=first_order,
        meta_sgd=meta_sgd,
        embedding_dim=4,
    ).double()
    ep = upsampled(episode(tasks=3))
    results = {}
    for vectorize in (False, True):
        algorithm.vectorize = vectorize
        algorithm.train()
        logits = algorithm(ep)
        grads = torch.autograd.grad(algorithm.loss(logits, ep), list(algorithm.parameters()))
        algorithm.eval()
        with torch.no_grad():
            results[vectorize] = (logits.detach(), grads, algorithm(ep))
    loop, vmapped = results[False], results[True]
    torch.testing.assert_close(vmapped[0], loop[0])
    torch.testing.assert_close(vmapped[2], loop[2])
    for a, b in zip(vmapped[1], loop[1]):
        torch.testing.assert_close(a, b)
    assert algorithm.encoder.channels_last  # restored after the vmapped call


# --- Reptile -----------------------------------------------------------------------------------


@pytest.mark.parametrize("vectorize", [False, True])
def test_reptile_update_is_theta_plus_epsilon_times_mean_phi_minus_theta(vectorize):
    algorithm = make(
        Reptile,
        inner_steps=3,
        inner_lr=0.2,
        head_inner_lr=0.3,
        outer_stepsize=0.8,
        n_way=N_WAY + 1,
        vectorize=vectorize,
    )
    ep = episode(tasks=2)
    theta = {n: p.detach().clone() for n, p in algorithm.named_parameters()}
    optimizer = torch.optim.Adam(algorithm.parameters(), lr=1e-3)  # not stepped: the update is Reptile's own
    phis = []
    for t in range(ep.tasks):  # plain SGD on a copy, on the support and query images of the task
        model = copy.deepcopy(algorithm)
        x = torch.cat([ep.support_x[t], ep.query_x[t]])
        y = torch.cat([ep.support_y[t], ep.query_y[t]])
        for _ in range(3):
            logits = F.linear(model.encoder(x), model.head.weight[:N_WAY], model.head.bias[:N_WAY])
            grads = torch.autograd.grad(F.cross_entropy(logits, y), list(model.parameters()), allow_unused=True)
            with torch.no_grad():
                for (n, p), g in zip(model.named_parameters(), grads):
                    if g is not None:
                        p -= (0.3 if n.startswith("head") else 0.2) * g
        phis.append({n: p.detach() for n, p in model.named_parameters()})
    loss, logits = algorithm.meta_update(ep, optimizer, lr_scale=0.5)  # as after one decay: epsilon = 0.8 * 0.5
    assert logits.shape == (2, N_WAY * N_QUERY, N_WAY) and loss.dim() == 0
    for n, p in algorithm.named_parameters():
        expected = theta[n] + 0.4 * ((phis[0][n] + phis[1][n]) / 2 - theta[n])
        torch.testing.assert_close(p.detach(), expected)
    assert torch.equal(algorithm.head.weight[N_WAY:], theta["head.weight"][N_WAY:])  # the unused row stays


def test_reptile_evaluates_by_fine_tuning_on_the_support_set():
    algorithm = make(Reptile, inner_steps=1, test_inner_steps=4, inner_lr=0.2)
    ep = episode(tasks=1)
    algorithm.eval()
    with torch.no_grad():
        logits = algorithm(ep)
    hand = hand_inner_loop(algorithm, ep, 0, steps=4, first_order=True)[3]
    torch.testing.assert_close(logits[0], hand.detach())


# --- the training step ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,first_order,meta_sgd", [(MAML, False, False), (MAML, True, True), (ProtoMAML, False, True)]
)
def test_task_by_task_meta_update_takes_the_single_backward_step(cls, first_order, meta_sgd):
    """MAML.meta_update (one backward per task, for memory) ends in the same parameters, loss and logits as the
    loop's forward - loss - backward - step on the whole meta-batch."""
    from fewshot_exp.train import training_step

    ep = episode(tasks=3)
    after = {}
    for per_task in (True, False):
        algorithm = make(cls, inner_steps=2, first_order=first_order, meta_sgd=meta_sgd, vectorize=False)
        if not per_task:
            algorithm.meta_update = lambda episode, optimizer, lr_scale: None  # the loop's own step
        optimizer = torch.optim.SGD(algorithm.parameters(), lr=0.1)  # the step is the gradient itself
        loss, logits = training_step(algorithm, ep, optimizer, torch.device("cpu"), amp=False)
        after[per_task] = (loss.detach(), logits.detach(), [p.detach().clone() for p in algorithm.parameters()])
    (loss_a, logits_a, params_a), (loss_b, logits_b, params_b) = after[True], after[False]
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(logits_a, logits_b)
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a, b)
    assert not torch.equal(params_a[0], make(cls).encoder[0].weight.detach())  # the step moved the encoder


# --- bad input ---------------------------------------------------------------------------------


def test_an_episode_wider_than_the_head_is_a_user_error():
    algorithm = make(MAML)
    with pytest.raises(UserError, match="set algorithm.n_way=4"):
        algorithm(episode(n_way=4))
    with pytest.raises(UserError, match="inner_steps must be >= 0"):
        make(MAML, inner_steps=-1)


def test_a_learned_head_too_small_for_the_lake_runs_fails_validation():
    from conftest import REPO
    from hydra import compose, initialize_config_dir

    from fewshot_exp.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "fewshot_exp" / "conf"), version_base="1.3"):
        ok = compose("config", overrides=["algorithm=maml", "episode.n_way=20"])
        small = compose("config", overrides=["algorithm=fomaml", "eval.lake_runs=/runs"])
        proto = compose("config", overrides=["algorithm=protomaml", "eval.lake_runs=/runs"])
    validate(ok)
    validate(proto)  # a prototype head has no size
    assert (ok.algorithm.n_way, ok.algorithm.train_n_way) == (20, None)
    with pytest.raises(UserError, match="set algorithm.n_way=20"):
        validate(small)


def test_an_op_without_a_second_derivative_is_a_user_error_naming_it():
    """torchvision's MobileNetV3 uses hardsigmoid, whose backward PyTorch cannot differentiate: second-order MAML
    says so in one line and what to do; first order trains."""
    from fewshot_exp.train import training_step

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Hardsigmoid(), nn.Flatten())
    for first_order in (False, True):
        algorithm = MAML(copy.deepcopy(encoder), Distance("l2"), n_way=N_WAY, embedding_dim=12, first_order=first_order)
        algorithm = algorithm.double()  # as episode()
        optimizer = torch.optim.SGD(algorithm.parameters(), lr=0.1)
        step = partial(training_step, algorithm, episode(), optimizer, torch.device("cpu"), False)
        if first_order:
            step()
            continue
        with pytest.raises(UserError, match=r"differentiate aten::hardsigmoid_backward, .*algorithm.first_order=true"):
            step()
