"""Draw the `viz=true` plots (and the multiproto report) of a finished run, from its best checkpoint.

    python benchmarks/viz_run.py RUN_DIR [--out OUT_DIR] [--projection pca|tsne]

Rebuilds the run's data and model from the config stored in RUN_DIR/best.pt and calls the same
`fewshot_exp.viz.end_of_run` as a run with `viz=true` (same episode: test split, the viz generator of
`eval.seed`), writing embedding.png, gallery.png (and multiproto.json) to OUT_DIR (default RUN_DIR); nothing
goes to W&B.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omegaconf import OmegaConf

from fewshot_exp import plugins
from fewshot_exp.build import build_algorithm, load_splits, samplers, select_device
from fewshot_exp.checkpoint import load_checkpoint
from fewshot_exp.config import Config
from fewshot_exp.viz import end_of_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--projection", choices=["pca", "tsne"], default="pca")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = load_checkpoint(args.run_dir / "best.pt")
    saved = OmegaConf.create(checkpoint["config"])
    # on the current schemas, so that keys the saved config lacks get their defaults
    plugins.load()
    dataset = OmegaConf.structured(plugins.SCHEMAS["dataset"][saved.dataset.name])
    cfg = OmegaConf.merge(OmegaConf.structured(Config), {"dataset": dataset}, saved)
    cfg.viz, cfg.viz_projection = True, args.projection
    device = select_device(cfg.device.value)
    splits = load_splits(cfg, device)
    algorithm = build_algorithm(cfg, splits.train.images.shape[1], device)
    algorithm.load_state_dict(checkpoint["algorithm"])
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    end_of_run(algorithm, samplers(cfg, splits)["test"], cfg, out)


if __name__ == "__main__":
    main()
