"""`viz=true`: the embedding plot and the episode gallery, in the run dir and in W&B (fewshot_exp/viz.py), and the
multi-prototype report at the end of a run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_imageset, run_cli
from omegaconf import OmegaConf
from PIL import Image
from test_algorithm_contract import ALGORITHMS, make
from test_algorithm_contract import episode as contract_episode
from wandb_records import logged_run

from fewshot_exp.algorithms.hallucination import Hallucination
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.errors import UserError
from fewshot_exp.viz import end_of_run, normalized, project, render

TINY = ["train.episodes=6", "train.val_every=3", "train.log_every=3", "train.val_episodes=5", "eval.episodes=10"]


@pytest.fixture(scope="module")
def viz_run(glyphs_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("viz") / "run"
    proc = run_cli(*TINY, "algorithm=multiproto", "viz=true", f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def assert_png(path: Path, min_width: int, min_height: int) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width and image.height >= min_height
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn


@pytest.mark.slow
def test_viz_writes_the_plots_and_logs_them_to_wandb(viz_run):
    assert_png(viz_run / "embedding.png", 500, 400)
    assert_png(viz_run / "gallery.png", 400, 150)
    logged = {k: v for row in logged_run(viz_run)["history"] for k, v in row.items() if k.startswith("viz/")}
    for name in ("viz/embedding", "viz/gallery"):  # an image's fields are logged as nested keys
        assert logged[f"{name}/_type"] == "image-file" and logged[f"{name}/format"] == "png"
        assert logged[f"{name}/width"] >= 400
    media = list((viz_run / "wandb").glob("*run-*/files/media/images/viz/*.png"))
    assert len(media) == 2


@pytest.mark.slow
def test_multiproto_run_writes_its_prototype_report(viz_run):
    report = json.loads((viz_run / "multiproto.json").read_text())
    assert report["episodes"] == 100 and report["prototypes"] == 100 * 5 * 2  # 5-way, 2 k-means centres a class
    assert len(report["first_episode"]) == 10 and 0 <= report["ambiguous_fraction"] <= 1
    assert "prototype->class mapping over 100 test episodes" in (viz_run / "__main__.log").read_text()


def hallucination_episode(tmp_path: Path):
    torch.manual_seed(0)
    algorithm = Hallucination(Conv4(1, hidden=8, out_channels=8), Distance("l2"), n_hallucinated=3)
    sampler = EpisodeSampler(random_imageset(6, 6, size=16), 3, 2, 2, 1, torch.Generator().manual_seed(0))
    return algorithm, sampler


def test_hallucination_explains_its_generated_points_and_renders(tmp_path):
    algorithm, sampler = hallucination_episode(tmp_path)
    episode = sampler.sample()
    e = algorithm.explain(episode)
    assert e["hallucinated"].shape == (1, 9, 8) and e["hallucinated_labels"].tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2]]
    # the prototypes are the means over real and generated points
    real_and_fake = torch.cat([e["support"], e["hallucinated"]], 1)
    labels = torch.cat([episode.support_y, e["hallucinated_labels"]], 1)
    torch.testing.assert_close(e["prototypes"][0, 1], real_and_fake[0, labels[0] == 1].mean(0))
    paths = render(algorithm, episode, tmp_path, "pca", "")
    assert_png(paths["viz/embedding"], 500, 400)


def test_viz_off_draws_nothing(tmp_path):
    algorithm, sampler = hallucination_episode(tmp_path)
    cfg = OmegaConf.create(
        {"viz": False, "viz_projection": "pca", "seed": 0, "eval": {"seed": 0}, "algorithm": {"_target_": "a.b.c"}}
    )
    end_of_run(algorithm, sampler, cfg, tmp_path, tracker=None)
    assert list(tmp_path.iterdir()) == []


def test_pca_projection_keeps_the_main_direction():
    points = torch.zeros(6, 5, dtype=torch.float64)
    points[:, 3] = torch.arange(6.0)  # all variance along one axis
    xy = project(points)
    assert xy.shape == (6, 2)
    assert abs(abs(torch.corrcoef(torch.stack([torch.tensor(xy[:, 0]), points[:, 3]]))[0, 1]) - 1) < 1e-9


def test_pca_projection_is_the_exact_top_two_and_repeatable():
    """The plane of the two largest singular values (what numpy's SVD gives), whatever the global RNG's state."""
    points = torch.randn(40, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.linspace(
        0.1, 3, 64, dtype=torch.float64
    )
    torch.manual_seed(1)
    first = project(points)
    torch.manual_seed(2)
    assert np.array_equal(first, project(points))
    centred = (points - points.mean(0)).numpy()
    top2 = np.linalg.svd(centred, compute_uv=False)[:2]
    assert np.allclose(np.linalg.norm(first, axis=0), top2, rtol=1e-10)


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is not None, reason="scikit-learn is installed")
def test_tsne_without_scikit_learn_is_a_clear_error():
    with pytest.raises(UserError, match="viz_projection=tsne needs scikit-learn"):
        project(torch.randn(10, 4), "tsne")


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_explains_and_renders(name, tmp_path):
    algorithm = make(name)
    ep = contract_episode(tasks=1)
    e = algorithm.eval().explain(ep)
    assert e["support"].shape[:2] == (1, 8) and e["query"].shape[:2] == (1, 12) and e["logits"].shape == (1, 12, 4)
    assert e["prototypes"].shape[:2] == e["prototype_labels"].shape
    assert e["prototypes"].shape[-1] == e["support"].shape[-1]
    paths = render(algorithm, ep, tmp_path, "pca", f"{name}: ")
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in paths.values())


def test_normalised_datasets_feed_the_model_normalised_images(tmp_path):
    algorithm, sampler = hallucination_episode(tmp_path)
    raw = sampler.sample()
    ep = normalized(raw, lambda x: (x - 0.5) / 0.25)
    torch.testing.assert_close(ep.query_x, (raw.query_x - 0.5) / 0.25)
    assert normalized(raw, None) is raw
    seen = []
    algorithm.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    render(algorithm, raw, tmp_path, "pca", "", lambda x: (x - 0.5) / 0.25)
    n_support = ep.support_x.shape[1]
    assert seen and torch.equal(seen[0][:n_support], ep.support_x[0])  # the encoder got normalised images
