"""ResNet-12 (with DropBlock), torchvision backbones by name, and the experiment presets. Comparisons with a hand
formula or torchvision's own model run in float64 and NCHW; channels_last is compared with NCHW in float64."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import REPO, random_imageset, run_cli
from hydra import compose, initialize_config_dir

from fewshot_exp import plugins
from fewshot_exp.algorithms.maml import ProtoMAML
from fewshot_exp.build import build_algorithm
from fewshot_exp.config import register_configs, validate
from fewshot_exp.data.episodes import Episode, EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.resnet12 import ResNet12, drop_block
from fewshot_exp.encoders.torchvision_backbone import TorchvisionBackbone
from fewshot_exp.errors import UserError

TINY_RESNET12 = ["encoder=resnet12", "encoder.channels=[4,4,8,8]"]
register_configs()
ALGORITHMS = plugins.options("algorithm")
EXPERIMENTS = sorted(p.stem for p in (REPO / "fewshot_exp" / "conf" / "experiment").glob("*.yaml"))


def compose_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "fewshot_exp" / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def episode(tasks=2, n=3, k=2, q=2, size=16) -> Episode:
    split = random_imageset(6, 6, size=size)
    return EpisodeSampler(split, n, k, q, tasks, torch.Generator().manual_seed(0)).sample()


# --- ResNet-12 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, size, maps", [(1, 28, 1), (3, 84, 5)])
def test_resnet12_shapes(channels, size, maps):
    net = ResNet12(channels).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        assert net(x).shape == (2, 640)
        assert net.features(x).shape == (2, 640, maps, maps)
        assert net.features(x, pooled_blocks=2).shape == (2, 640, size // 4, size // 4)  # Relation Network maps
    assert net.out_channels == 640
    assert sum(p.numel() for p in net.parameters()) > 12_000_000  # the standard 12.4M-parameter backbone


def test_resnet12_blocks_are_residual():
    net = ResNet12(1, [4, 4, 8, 8], channels_last=False).double().eval()
    block, x = net.blocks[0], torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        h = block.act(block.conv1(x))
        h = block.act(block.conv2(h))
        expected = F.max_pool2d(F.leaky_relu(block.conv3(h) + block.shortcut(x), 0.1), 2)
        torch.testing.assert_close(block(x), expected)


def test_drop_block_only_in_training_and_seeded():
    net = ResNet12(3, [4, 4, 8, 8], drop_block=True, drop_rate=0.2)
    x = torch.rand(4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        plain = ResNet12(3, [4, 4, 8, 8], drop_block=False)
        plain.load_state_dict(net.state_dict())
        torch.testing.assert_close(net(x), plain.eval()(x))  # eval: no dropping at all
        net.train(), plain.train()
        torch.manual_seed(5)
        a = net(x)
        torch.manual_seed(5)
        b = net(x)
        c = net(x)
    torch.testing.assert_close(a, b)  # same seed, same masks
    assert not torch.allclose(a, c)  # new draws, new masks
    assert not torch.allclose(a, plain(x))  # training mode drops


def test_drop_block_drops_squares_at_the_rate():
    torch.manual_seed(0)
    x = torch.ones(64, 16, 12, 12, dtype=torch.float64)
    y = drop_block(x, 0.1, 5)
    dropped = (y == 0).float()
    assert 0.08 < dropped.mean() < 0.12
    # the dropped set is a union of 5x5 squares: a morphological opening by a 5x5 square leaves it unchanged
    eroded = -F.max_pool2d(-F.pad(dropped, [2] * 4, value=1.0), 5, stride=1)
    opened = F.max_pool2d(F.pad(eroded, [2] * 4), 5, stride=1)
    torch.testing.assert_close(opened, dropped)
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, x.numel() / (y != 0).sum().item()))  # rescaled
    assert drop_block(torch.ones(2, 3, 3, 3), 0.1, 5).shape == (2, 3, 3, 3)  # block capped at a 3x3 map


@pytest.mark.parametrize("train", [False, True])
def test_resnet12_channels_last_is_the_same_function(train):
    torch.manual_seed(0)
    a = ResNet12(3, [8, 8, 16, 16], channels_last=True).double().train(train)
    b = ResNet12(3, [8, 8, 16, 16], channels_last=False).double().train(train)
    b.load_state_dict(a.state_dict())
    assert a.blocks[0].conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 3, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), atol=1e-12, rtol=1e-10)


def test_resnet12_bad_options():
    with pytest.raises(UserError, match=r"encoder.channels must be 4 positive widths, got \[64, 160\]"):
        ResNet12(3, [64, 160])
    with pytest.raises(UserError, match="encoder.drop_rate must be in"):
        ResNet12(3, drop_block=True, drop_rate=1.5)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_runs_on_resnet12(name):
    """Episode in, logits out, loss gradient into the encoder: DropBlock on, BN as each algorithm uses it."""
    cfg = compose_cfg(f"algorithm={name}", *TINY_RESNET12, "encoder.drop_block=true", "dataset.image_size=16")
    torch.manual_seed(0)
    algorithm = build_algorithm(cfg, in_channels=1, device=torch.device("cpu"))
    ep = episode()
    loss = algorithm.loss(algorithm(ep), ep)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in algorithm.encoder.parameters())
    algorithm.eval()
    with torch.no_grad():
        assert algorithm(ep).shape == (2, 6, 3)


@pytest.mark.parametrize("vectorize", [False, True])
def test_protomaml_meta_step_with_resnet12(vectorize):
    """One second-order meta-step: BN becomes per-task (TaskBatchNorm), DropBlock runs under vmap too."""
    torch.manual_seed(0)
    encoder = ResNet12(1, [4, 4, 8, 8], drop_block=True)
    model = ProtoMAML(encoder, Distance("l2", 1.0, False), inner_steps=2, vectorize=vectorize, image_size=16)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ep = episode()
    loss = model.loss(model(ep), ep)
    loss.backward()
    opt.step()
    after = model.encoder.state_dict()
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[k], after[k]) for k in before)  # every encoder weight got a meta-gradient


# --- torchvision backbones ----------------------------------------------------------------------------


def test_torchvision_in_channels_and_out_dim():
    net = TorchvisionBackbone("resnet18", in_channels=1, out_dim=32, image_size=28)
    assert net.model.conv1.in_channels == 1
    assert isinstance(net.model.fc, torch.nn.Identity)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 32) and net.out_dim == 32
    assert TorchvisionBackbone("resnet18", in_channels=3, image_size=28).out_dim == 512
    assert TorchvisionBackbone("densenet121", in_channels=3, image_size=84).out_dim == 1024


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_torchvision_weights_round_trip(resnet18_file):
    path, reference = resnet18_file
    net = TorchvisionBackbone(
        "resnet18", in_channels=3, weights=str(path), normalize=False, image_size=32, channels_last=False
    )
    for k, v in reference.state_dict().items():
        if not k.startswith("fc."):
            torch.testing.assert_close(net.model.state_dict()[k], v)
    net = net.double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    reference = copy.deepcopy(reference).double()
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x))
        # one channel: the first kernel summed over RGB, so a grey image gives the RGB model's features (the sum is
        # taken in float32 when the backbone is built: ~3e-8 off here)
        grey = TorchvisionBackbone(
            "resnet18", in_channels=1, weights=str(path), normalize=False, image_size=32, channels_last=False
        )
        grey_features = grey.double().eval()(x[:, :1])
        torch.testing.assert_close(grey_features, reference(x[:, :1].repeat(1, 3, 1, 1)), atol=1e-6, rtol=1e-6)
    assert TorchvisionBackbone("resnet18", weights=str(path), image_size=32).normalize  # ImageNet stats by default


def test_torchvision_loads_old_densenet_key_names(tmp_path):
    """torchvision's published DenseNet files name norm1 `norm.1` (and so on); they load all the same."""
    torch.manual_seed(0)
    state = torchvision.models.densenet121().state_dict()
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
    assert "features.denseblock2.denselayer3.conv.2.weight" in old
    torch.save(old, tmp_path / "densenet121.pth")
    net = TorchvisionBackbone("densenet121", weights=str(tmp_path / "densenet121.pth"), image_size=32)
    torch.testing.assert_close(
        net.model.features.denseblock2.denselayer3.conv2.weight, state["features.denseblock2.denselayer3.conv2.weight"]
    )


def test_torchvision_bad_weight_files(tmp_path, resnet18_file):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(resnet18_file[0].read_bytes()[:1000])
    foreign = tmp_path / "densenet.pth"
    torch.save(torchvision.models.densenet121().state_dict(), foreign)
    pickled = tmp_path / "object.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    cases = [
        (tmp_path / "missing.pth", "does not exist: give a state-dict file"),
        (tmp_path, "is a directory, not a state-dict file"),
        (corrupt, "is unreadable or not a safe tensor file"),
        (foreign, r"does not hold torchvision resnet18 weights: \d+ keys missing \(e.g. conv1.weight\)"),
        (pickled, "is unreadable or not a safe tensor file"),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=f"encoder.weights={path} {message}"):
            TorchvisionBackbone("resnet18", weights=str(path), image_size=32)


def test_torchvision_bad_names_and_sizes():
    with pytest.raises(UserError, match="encoder.name='resnet19' is not a torchvision classification model; did you"):
        TorchvisionBackbone("resnet19")
    with pytest.raises(UserError, match="encoder.name=vit_b_16 cannot embed 3-channel 84 px images"):
        TorchvisionBackbone("vit_b_16", image_size=84)
    with pytest.raises(UserError, match="squeezenet1_0: the model has no linear classifier"):
        TorchvisionBackbone("squeezenet1_0")


# --- through the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        # slow: a 12-million-parameter network on the CPU; torchvision's ResNet-18 is built and checked in-process above
        pytest.param(TINY_RESNET12, marks=pytest.mark.slow),
        pytest.param(["encoder=torchvision", "encoder.name=resnet18", "encoder.out_dim=16"], marks=pytest.mark.slow),
    ],
    ids=["resnet12", "torchvision"],
)
def test_new_encoders_train_through_the_cli(overrides, glyphs_root, tmp_path):
    proc = run_cli(
        *overrides,
        "logger=none",
        f"dataset.root={glyphs_root}",
        "train.episodes=2",
        "train.val_every=2",
        "train.val_episodes=2",
        "eval.episodes=4",
        "episode.n_query=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= results["test/acc"] <= 1 and results["test/episodes"] == 4


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name):
    """Each preset composes, validates and builds its model (no data needed: dataset.root is a dummy)."""
    cfg = compose_cfg(f"experiment={name}", "dataset.root=/dummy/data")
    validate(cfg)
    assert cfg.experiment_name == name
    channels = 3 if cfg.dataset.name == "miniimagenet" else 1
    algorithm = build_algorithm(cfg, in_channels=channels, device=torch.device("cpu"))
    assert sum(p.numel() for p in algorithm.parameters()) > 0
