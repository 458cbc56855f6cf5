"""Seeing inside a trained model: what `viz=true` draws at the end of a run, and the multi-prototype report.

- `embedding.png`: a 2-D projection (PCA, or t-SNE with `viz_projection=tsne`) of one test episode's support and
  query embeddings, coloured by true class, with the prototypes as black-edged diamonds annotated with their class,
  misclassified queries as large crosses, and, for `hallucination`, the generated support points as hollow
  triangles. What is drawn comes from `algorithm.explain(episode)` (task 0).
- `gallery.png`: the same episode's images, one row per class: the support images, then the query images with
  their predicted class; a wrong prediction is framed in red.

Both go to the run dir and to W&B (`viz/embedding`, `viz/gallery`). The episode is drawn from the test split with
its own generator (`eval.seed` + SEED_OFFSETS["viz"], fewshot_exp/build.py), so it is the same for every run on the
same data and shape, and does not change any reported number.
An algorithm with a `mapping_report` (multiproto) also gets `<algorithm>.json` and a log line at every run end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from fewshot_exp.algorithms.base import FewShotAlgorithm  # noqa: E402
from fewshot_exp.build import episode_seed  # noqa: E402
from fewshot_exp.data.episodes import Episode, EpisodeSampler  # noqa: E402
from fewshot_exp.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

REPORT_EPISODES = 100  # test episodes summarised by the prototype-to-class report
GALLERY_MAX_CLASSES = 10
GALLERY_MAX_QUERIES = 10


def class_colors(n: int) -> np.ndarray:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "hsv")
    return cmap(np.arange(n) % cmap.N if n <= 20 else np.linspace(0, 1, n, endpoint=False))


def project(points: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Points [M, D] -> [M, 2] by exact PCA (torch) or t-SNE (scikit-learn)."""
    x = points.detach().double().cpu()
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise UserError("viz_projection=tsne needs scikit-learn: pip install scikit-learn") from None
        perplexity = min(30.0, (x.shape[0] - 1) / 3)
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x.numpy())
    x = x - x.mean(0)
    # exact PCA: the top right singular vectors (pca_lowrank is randomised, so neither exact nor repeatable); the
    # sign of each is fixed by its largest entry, so the same embeddings give the same picture
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh[: min(2, *x.shape)].T
    v = v * torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
    out = (x @ v).numpy()
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def task0(explained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v[0].detach().float().cpu() for k, v in explained.items()}


def plot_embedding(
    explained: dict[str, torch.Tensor], episode: Episode, path: Path, method: str = "pca", title: str = ""
) -> Path:
    """Support, query, prototype (and hallucinated) embeddings of task 0, projected to 2-D together."""
    e = task0(explained)
    support_y, query_y = episode.support_y[0].cpu().numpy(), episode.query_y[0].cpu().numpy()
    pred = e["logits"].argmax(-1).numpy()
    groups = ["support", "query", "prototypes"] + (["hallucinated"] if "hallucinated" in e else [])
    sizes = [e[g].shape[0] for g in groups]
    xy = np.split(project(torch.cat([e[g] for g in groups]), method), np.cumsum(sizes)[:-1])
    xy = dict(zip(groups, xy))
    colors = class_colors(episode.n_way)

    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    if "hallucinated" in xy:
        h_y = e["hallucinated_labels"].long().numpy()
        ax.scatter(*xy["hallucinated"].T, s=30, marker="^", facecolors="none", edgecolors=colors[h_y], linewidths=0.8,
                   label="hallucinated support")  # fmt: skip
    ax.scatter(*xy["support"].T, s=45, c=colors[support_y], edgecolors="k", linewidths=0.5, label="support")
    right = pred == query_y
    ax.scatter(*xy["query"][right].T, s=14, c=colors[query_y[right]], alpha=0.8, label="query (correct)")
    ax.scatter(*xy["query"][~right].T, s=70, marker="X", c=colors[query_y[~right]], edgecolors="red", linewidths=1.2,
               label=f"query misclassified ({int((~right).sum())})")  # fmt: skip
    p_y = e["prototype_labels"].long().numpy()
    ambiguous = e["prototype_ambiguous"].bool().numpy() if "prototype_ambiguous" in e else np.zeros(len(p_y), bool)
    what = "prototype (class id; ? = ambiguous)" if "prototype_ambiguous" in e else "prototype (class id)"
    ax.scatter(*xy["prototypes"].T, s=110, marker="D", c=colors[p_y], edgecolors="k", linewidths=1.5, label=what)
    for (px, py), label, amb in zip(xy["prototypes"], p_y, ambiguous):
        ax.annotate(f"{label}{'?' if amb else ''}", (px, py), xytext=(5, 5), textcoords="offset points",
                    fontsize=9, fontweight="bold")  # fmt: skip
    acc = right.mean() if len(right) else float("nan")
    name = {"pca": "PCA", "tsne": "t-SNE"}[method]
    ax.set_title(f"{title}{name} of one test episode; query accuracy {acc:.0%}", fontsize=10)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> [H, W, 3]."""
    x = image.detach().float().cpu().clamp(0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    return x.permute(1, 2, 0).numpy()


def plot_gallery(episode: Episode, logits: torch.Tensor, path: Path, title: str = "") -> Path:
    """Task 0's images, a row per class (at most 10): K support images | Q query images (at most 10) with their
    predicted class, wrong predictions framed in red."""
    n = min(episode.n_way, GALLERY_MAX_CLASSES)
    support_y, query_y = episode.support_y[0].cpu(), episode.query_y[0].cpu()
    pred = logits[0].argmax(-1).cpu()
    rows = []
    for c in range(n):
        s_idx = (support_y == c).nonzero().flatten().tolist()
        q_idx = (query_y == c).nonzero().flatten().tolist()[:GALLERY_MAX_QUERIES]
        rows.append((s_idx, q_idx))
    k, q = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    h, w = episode.support_x.shape[-2:]
    pad, gap = 2, 6  # pixels around each image; extra gap between support and query columns
    cell_w, cell_h = w + 2 * pad, h + 2 * pad
    canvas = np.ones((n * cell_h, (k + q) * cell_w + gap, 3))
    frames = []
    for r, (s_idx, q_idx) in enumerate(rows):
        for j, i in enumerate(s_idx):
            y0, x0 = r * cell_h + pad, j * cell_w + pad
            canvas[y0 : y0 + h, x0 : x0 + w] = to_hwc(episode.support_x[0, i])
        for j, i in enumerate(q_idx):
            y0, x0 = r * cell_h + pad, (k + j) * cell_w + gap + pad
            canvas[y0 : y0 + h, x0 : x0 + w] = to_hwc(episode.query_x[0, i])
            frames.append((x0, y0, int(pred[i]), int(pred[i]) == r))
    scale = 0.03
    fig, ax = plt.subplots(figsize=(max(4, canvas.shape[1] * scale), max(2.5, canvas.shape[0] * scale + 0.6)), dpi=100)
    ax.imshow(canvas, interpolation="nearest")
    for x0, y0, p, ok in frames:
        if not ok:
            ax.add_patch(Rectangle((x0 - 1.5, y0 - 1.5), w + 2, h + 2, fill=False, edgecolor="red", linewidth=1.5))
        ax.text(x0 + w - 1, y0 + h - 1, str(p), color="lime" if ok else "red", fontsize=6, ha="right", va="bottom")
    ax.set_yticks([r * cell_h + cell_h / 2 for r in range(n)], [f"class {c}" for c in range(n)], fontsize=7)
    ax.set_xticks([k * cell_w / 2, k * cell_w + gap + q * cell_w / 2], [f"support ({k})", "query: predicted class"],
                  fontsize=8)  # fmt: skip
    ax.tick_params(length=0)
    wrong = sum(not f[3] for f in frames)
    ax.set_title(f"{title}one test episode: {wrong} of {len(frames)} shown queries misclassified", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def viz_sampler(test: EpisodeSampler, seed: int) -> EpisodeSampler:
    """A one-task sampler over the test split with its own CPU generator seeded `seed`, of raw images in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return EpisodeSampler(test.split, test.n_way, test.k_shot, test.n_query, 1, generator, "test")


def normalized(episode: Episode, normalize: Callable[[torch.Tensor], torch.Tensor] | None) -> Episode:
    """The episode as the model sees it: images normalised like the test sampler's (if it normalises)."""
    if normalize is None:
        return episode

    def f(x: torch.Tensor) -> torch.Tensor:
        return normalize(x.flatten(0, 1)).view(x.shape)

    return Episode(f(episode.support_x), episode.support_y, f(episode.query_x), episode.query_y, episode.n_way)


def render(
    algorithm: FewShotAlgorithm,
    episode: Episode,
    run_dir: Path,
    method: str,
    title: str,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Path]:
    """Both plots of one episode (raw images in [0, 1]; `normalize` turns them into the model's input)."""
    was_training = algorithm.training
    algorithm.eval()
    with torch.no_grad():
        explained = algorithm.explain(normalized(episode, normalize))
    algorithm.train(was_training)
    return {
        "viz/embedding": plot_embedding(explained, episode, Path(run_dir) / "embedding.png", method, title),
        "viz/gallery": plot_gallery(episode, explained["logits"], Path(run_dir) / "gallery.png", title),
    }


def prototype_report(
    algorithm: Any, episodes: list[Episode], run_dir: Path, name: str, tracker: Any | None = None
) -> dict:
    """The prototype-to-class mapping over some test episodes -> <name>.json, a log line, W&B summary."""
    report = algorithm.mapping_report(episodes)
    (Path(run_dir) / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "prototype->class mapping over %d test episodes: %d prototypes, %d ambiguous (%.1f%%), %d changed class, "
        "%d of %d classes without a prototype, %.1f%% of W exactly 0 (written to %s.json)",
        report["episodes"], report["prototypes"], report["ambiguous"], 100 * report["ambiguous_fraction"],
        report["switched"], report["classes_without_prototype"], report["classes"],
        100 * report["zero_weight_fraction"], name,
    )  # fmt: skip
    if tracker is not None:
        tracker.summary({f"{name}/{k}": v for k, v in report.items() if isinstance(v, (int, float))})
    return report


def end_of_run(
    algorithm: FewShotAlgorithm, test: EpisodeSampler, cfg: Any, run_dir: Path, tracker: Any | None = None
) -> None:
    """What run.py calls after the test: the multi-prototype report (when the algorithm has one) and, with
    `viz=true`, the plots (PNG in the run dir, images in W&B through the tracker, if any).
    benchmarks/viz_run.py calls it on a finished run."""
    sampler = viz_sampler(test, episode_seed(cfg, "viz"))
    normalize = getattr(test, "normalize", None)
    episode = sampler.sample()  # the plotted episode: the same for every run on the same data and shape
    name = str(cfg.algorithm._target_).rsplit(".", 2)[-2]  # the module: multiproto, protonet, ...
    if hasattr(algorithm, "mapping_report"):
        episodes = [normalized(sampler.sample(), normalize) for _ in range(REPORT_EPISODES)]
        prototype_report(algorithm, episodes, run_dir, name, tracker)
    if cfg.viz:
        method = getattr(cfg.viz_projection, "value", cfg.viz_projection)
        images = render(algorithm, episode, run_dir, method, f"{name}: ", normalize)
        if tracker is not None:
            tracker.log_images(images, cfg.train.episodes)
        log.info("plots: %s", ", ".join(str(p) for p in images.values()))
