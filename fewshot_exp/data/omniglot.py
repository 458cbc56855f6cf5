"""Omniglot (Lake et al. 2015): background and evaluation alphabets (the official one-shot runs: `lake_runs.py`).

`dataset.root` holds the official files, each as a zip or as the folder it unzips to (a zip wins
when both are there), either directly in root or in `root/omniglot-py/` where
`torchvision.datasets.Omniglot` puts its downloads:

- `images_background` (30 alphabets) or the "minimal" `images_background_small1` /
  `images_background_small2` (5 alphabets each), picked by `dataset.background`: training and
  validation alphabets (`background_splits`);
- `images_evaluation` (20 alphabets): the test alphabets.

Without `images_evaluation`, a small background set is tested on the *other* small set minus the
alphabets the two share (small1 and small2 both contain Greek and Latin, same drawings), so
small1 trains on Balinese/Early_Aramaic/Greek (+ Korean/Latin for validation) and tests on
Japanese_(katakana)/Sanskrit/Tagalog. That is a stand-in for machines without the full files;
numbers from it are not comparable to published Omniglot results.

Images are inverted (strokes 255 on 0, see `imageset`) and box-filtered from 105x105 to
`image_size`. Decoding the small PNGs takes seconds even for the full 32k images on one core, so nothing
is cached.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps

from fewshot_exp.data import dataset
from fewshot_exp.data.alphabets import Alphabet, AlphabetDatasetConfig, background_splits, to_imageset
from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError

log = logging.getLogger(__name__)


class Background(Enum):
    full = "full"
    small1 = "small1"
    small2 = "small2"


@dataclass
class OmniglotConfig(AlphabetDatasetConfig):
    name: str = "omniglot"
    root: str | None = None  # dir with images_background*.zip / images_evaluation.zip (or unzipped)
    background: Background = Background.full  # the training alphabets
    rotation_classes: bool = True  # 90/180/270-degree rotations as extra training classes (Snell et al. 2017)
    download: bool = False


BACKGROUND_FILES = {
    Background.full: "images_background",
    Background.small1: "images_background_small1",
    Background.small2: "images_background_small2",
}
EVALUATION_FILE = "images_evaluation"
TORCHVISION_FOLDER = "omniglot-py"  # where torchvision.datasets.Omniglot downloads to, inside root
DOWNLOAD_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"


@dataset("omniglot", OmniglotConfig)
def load_omniglot(cfg) -> Splits:
    """Train/val from the background alphabets (split by alphabet), test from the evaluation alphabets."""
    try:
        background = Background(cfg.background)
    except ValueError:
        choices = ", ".join(b.name for b in Background)
        raise UserError(f"dataset.background={cfg.background} is not one of {choices}") from None
    if cfg.image_size < 1:
        raise UserError(f"dataset.image_size must be positive, got {cfg.image_size}")
    root = _root(cfg.root, cfg.download)
    if cfg.download:
        _download(root, [BACKGROUND_FILES[background], EVALUATION_FILE])

    bg_file = BACKGROUND_FILES[background]
    bg_source = _find(root, bg_file)
    if bg_source is None:
        raise UserError(f"Omniglot file {bg_file}.zip not found in {root}: put it there or set dataset.download=true")
    alphabets = _read_alphabets(bg_source, cfg.image_size)

    eval_source = _find(root, EVALUATION_FILE)
    if eval_source is not None:
        test = _read_alphabets(eval_source, cfg.image_size)
    elif background is Background.full:
        raise UserError(
            f"Omniglot file {EVALUATION_FILE}.zip not found in {root}: put it there or set dataset.download=true"
        )
    else:
        other = BACKGROUND_FILES[Background.small2 if background is Background.small1 else Background.small1]
        other_source = _find(root, other)
        if other_source is None:
            raise UserError(
                f"Omniglot file {EVALUATION_FILE}.zip (or {other}.zip as a stand-in) not found in {root}: "
                "put it there or set dataset.download=true"
            )
        test = {a: chars for a, chars in _read_alphabets(other_source, cfg.image_size).items() if a not in alphabets}
        log.warning(
            "%s not found in %s: testing on the alphabets of %s that %s lacks (%s), not the official test set",
            EVALUATION_FILE,
            root,
            other,
            bg_file,
            ", ".join(sorted(test)),
        )

    train, val = background_splits(alphabets, cfg.val_alphabets, cfg.rotation_classes)
    return Splits(train, val, to_imageset(test))


def _root(root: str | None, download: bool) -> Path:
    if root is None:
        raise UserError("dataset.root is not set: set dataset.root=/path/to/omniglot (the folder holding the zips)")
    path = Path(root).expanduser()
    if download:
        return path  # created by the download
    if not path.exists():
        raise UserError(f"dataset.root={path} does not exist: fix the path or set dataset.download=true")
    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"dataset.root={path} is not a readable folder: point it at the folder holding the zips")
    return path


def _find(root: Path, name: str) -> Path | None:
    """`name.zip` or the folder `name`, in root or in torchvision's download folder."""
    for folder in (root, root / TORCHVISION_FOLDER):
        for candidate in (folder / f"{name}.zip", folder / name):
            if candidate.exists():
                return candidate
    return None


def _download(root: Path, names: list[str]) -> None:
    """Fetch the official files that are not already in root (the two full sets are checked by md5)."""
    from torchvision.datasets import Omniglot
    from torchvision.datasets.utils import download_and_extract_archive

    for name in names:
        if _find(root, name) is not None:
            continue
        try:
            if name in Omniglot.zips_md5:
                Omniglot(str(root), background=name == "images_background", download=True)
            else:
                download_and_extract_archive(f"{DOWNLOAD_URL}/{name}.zip", str(root / TORCHVISION_FOLDER))
        except Exception as e:  # URLError, OSError, RuntimeError (md5), ...: all mean "no file"
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"could not download Omniglot {name}.zip into {root} ({reason}): "
                f"check the connection or put the file there yourself (from {DOWNLOAD_URL})"
            ) from None


def _read_alphabets(source: Path, image_size: int) -> dict[str, Alphabet]:
    """{alphabet: [(character, [n, 1, S, S] uint8)]} from a zip or folder of Alphabet/character/*.png."""
    files: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    try:
        for member, read in _png_members(source):
            alphabet, character = PurePosixPath(member).parts[-3:-1]
            files.setdefault((alphabet, character), []).append((member, read()))
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise UserError(f"{source} is not a valid zip ({e}): delete it and download it again") from None
    except OSError as e:
        raise UserError(f"cannot read {source} ({e}): check the file and its permissions") from None
    if not files:
        raise UserError(f"no Omniglot images (Alphabet/character/*.png) in {source}: is it the right file?")
    alphabets: dict[str, Alphabet] = {}
    for (alphabet, character), blobs in sorted(files.items()):
        blobs.sort()
        alphabets.setdefault(alphabet, []).append((character, decode(blobs, image_size)))
    return alphabets


def _png_members(source: Path) -> Iterable[tuple[str, Callable[[], bytes]]]:
    """(path, read-bytes) of every Alphabet/character/*.png in a zip or folder, skipping hidden/macOS files."""

    def wanted(parts: tuple[str, ...]) -> bool:
        return (
            len(parts) >= 3 and parts[-1].endswith(".png") and not any(p.startswith((".", "__MACOSX")) for p in parts)
        )

    if source.is_dir():
        for f in source.glob("*/*/*.png"):
            parts = f.relative_to(source).parts
            if wanted(parts):
                yield "/".join(parts), f.read_bytes
        return
    with zipfile.ZipFile(source) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if not info.is_dir() and wanted(parts):
                yield info.filename, lambda info=info: zf.read(info)


def decode(blobs: Iterable[tuple[str, bytes]], image_size: int) -> torch.Tensor:
    """[n, 1, S, S] uint8 of PNGs (black strokes on white) inverted to bright strokes and box-filtered to S."""
    out = []
    for name, data in blobs:
        try:
            image = ImageOps.invert(Image.open(io.BytesIO(data)).convert("L"))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot decode Omniglot image {name} ({e}): the file is corrupt") from None
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BOX)
        out.append(np.asarray(image))
    return torch.from_numpy(np.stack(out)).unsqueeze(1)
