"""`glyphs`: an Omniglot-like few-shot dataset rendered offline from the fonts bundled with matplotlib.

Inventory (fixed by the fonts, the Unicode tables and FORMAT_VERSION; independent of the settings):
  * Fonts: DejaVu Sans / Sans Mono / Serif and STIXGeneral in all their weights and slants (16 files),
    plus Computer Modern cmr10/cmb10/cmss10/cmtt10/cmti10/cmmi10 for ASCII letters and digits only
    (their other code points do not hold the glyphs their cmap claims). LastResort, the STIX size
    variants, STIXNonUni, cmsy10/cmex10 and the "Display" fonts are not used.
  * Characters: letters, numbers and symbols (Unicode categories L*, N*, S*) with no Unicode
    decomposition (so no precomposed accented letters, presentation forms, super/subscripts or
    ligatures) that at least two font files cover, so renderings differ in weight/slant/design and
    not only in jitter. Characters with almost no ink (< MIN_INK of the canonical image, or smaller
    than MIN_EXTENT of the em) are dropped, and so is any character whose canonical rendering (first
    covering font, no jitter, 32 px) is within DUPLICATE_DISTANCE of a kept character's in the same
    font (e.g. Cyrillic "А" duplicates Latin "A"; characters are taken most-covered first).
  * Alphabets: characters are grouped by Unicode script; script-less ("Common") characters by Unicode
    block (Arrows, Box Drawing, Mathematical Operators, ...). Groups in EXCLUDED_GROUPS (tiny marks,
    pictures too detailed for 28 px) and groups with fewer than MIN_PER_ALPHABET characters are
    dropped; larger ones keep the MAX_PER_ALPHABET characters covered by the most fonts (ties: lower
    code point first).

Images: each character gets `renderings` images; rendering i uses the covering fonts in a shuffled
cycle, a random stroke-thickness change (erosion or PIL stroke), and a random affine jitter (rotation,
scale, shear, translation), drawn at SUPERSAMPLE x `image_size` with the em box centred and averaged
down, so a glyph keeps its size and position relative to the em box ("o"/"O" and the
Braille cells stay distinct) and is shrunk only where it would not fit. Pixels are uint8, strokes ~255 on 0.

Determinism: a character's images depend only on (FORMAT_VERSION, image_size, renderings,
generator_seed, code point), through a numpy Generator seeded from them; no global RNG is used. Bit
identity holds for the same matplotlib fonts, Pillow/FreeType and Unicode tables (Python's
`unicodedata`, fontTools); the cache key covers the settings only.

Cache: `<root>/glyphs-<hash of the settings>.pt` (default root ~/.cache/fewshot_exp/glyphs), written
atomically; an unreadable or mismatching file is regenerated.

Split: scripts and symbol blocks are each ranked by name, and every EVALUATION_EVERY-th of each (the
3rd, 6th, ...) is an evaluation (test) alphabet; the others are background alphabets, of which
`background_splits` holds out the last `val_alphabets` (sorted by name) for validation. Classes of
different splits never share an alphabet.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from fontTools import unicodedata as ucd
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fewshot_exp.data import dataset
from fewshot_exp.data.alphabets import Alphabet, AlphabetDatasetConfig, background_splits, to_imageset
from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError
from fewshot_exp.files import atomic_writer, remove_partial_writes
from fewshot_exp.memory import check_images_fit
from fewshot_exp.progress import progress
from fewshot_exp.run_lock import held

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUPERSAMPLE = 4  # render at SUPERSAMPLE x image_size, then box-average down
EM_FRACTION = 0.75  # font size (em) as a fraction of the image side
MARGIN = 0.05  # ink is kept this fraction of the side away from the border
MAX_PER_ALPHABET = 55
MIN_PER_ALPHABET = 12
EVALUATION_EVERY = 3
CANONICAL_SIZE = 32  # resolution of the settings-independent inventory checks
MIN_INK = 0.01  # mean canonical pixel / 255
MIN_EXTENT = 0.2  # larger ink-box side / em
DUPLICATE_DISTANCE = 0.01  # sum |a - b| / (sum a + sum b) between canonical images

FONT_FILES = tuple(
    f"{family}{style}.ttf"
    for family, styles in [
        ("DejaVuSans", ("", "-Bold", "-Oblique", "-BoldOblique")),
        ("DejaVuSansMono", ("", "-Bold", "-Oblique", "-BoldOblique")),
        ("DejaVuSerif", ("", "-Bold", "-Italic", "-BoldItalic")),
        ("STIXGeneral", ("", "Bol", "Italic", "BolIta")),
    ]
    for style in styles
)
CM_FONT_FILES = ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf", "cmmi10.ttf")
CM_CHARACTERS = string.ascii_letters + string.digits
EXCLUDED_GROUPS = frozenset(
    {
        "Spacing_Modifier_Letters",  # accents and tone marks: little ink, near-duplicates
        "Modifier_Tone_Letters",
        "Playing_Cards",  # detailed pictures that blur into the same rectangle at 28 px
        "Emoticons",
        "Domino_Tiles",
        "Block_Elements",  # filled rectangles and shades
    }
)


def _font_path(name: str) -> str:
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_path(name), size, layout_engine=ImageFont.Layout.BASIC)


@functools.cache
def _coverage() -> dict[int, tuple[str, ...]]:
    """Code point -> the font files (in FONT_FILES order, then CM_FONT_FILES) that hold its glyph."""
    cover: dict[int, list[str]] = {}
    for name in FONT_FILES:
        for cp in TTFont(_font_path(name), lazy=True).getBestCmap():
            cover.setdefault(cp, []).append(name)
    for ch in CM_CHARACTERS:
        cover[ord(ch)].extend(CM_FONT_FILES)
    return {cp: tuple(fonts) for cp, fonts in cover.items()}


def _group(ch: str) -> str | None:
    """The alphabet of a character: its Unicode script, or its block for script-less characters."""
    if unicodedata.category(ch)[0] not in "LNS" or unicodedata.decomposition(ch):
        return None
    script = ucd.script(ch)
    name = ucd.block(ch) if script in ("Zyyy", "Zinh", "Zzzz") else ucd.script_name(script)
    return name.replace(" ", "_").replace("-", "_")


@functools.lru_cache(maxsize=64)  # a character's renderings come one after another: its fonts x thicknesses
def _drawn(ch: str, font: str, size: int, thickness: int) -> tuple[Image.Image, tuple[int, int, int, int]] | None:
    """`ch` drawn in `font` on a canvas of side 2 x size x SUPERSAMPLE, centred on its middle, cropped to its ink
    plus a blank pixel border, and thinned (thickness < 0) or bolded (> 0): (glyph image, its box on the canvas),
    or None for a blank glyph."""
    side = size * SUPERSAMPLE
    em = round(EM_FRACTION * side)
    canvas = Image.new("L", (2 * side, 2 * side))
    stroke = round(thickness * em / 80) if thickness > 0 else 0
    ImageDraw.Draw(canvas).text(
        (side, side), ch, font=_font(font, em), fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255
    )
    box = canvas.getbbox()
    if box is None:
        return None
    box = (box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1)  # keep a blank border for the filter below
    glyph = canvas.crop(box)
    if thickness < 0:  # thin the strokes, unless that would erase most of a hairline glyph
        thinned = glyph.filter(ImageFilter.MinFilter(3))
        glyph = thinned if np.asarray(thinned).sum() >= 0.5 * np.asarray(glyph).sum() else glyph
    return glyph, box


def render(ch: str, font: str, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One [size, size] uint8 rendering of `ch` in `font`; jittered (stroke and affine) when `rng` is given."""
    side = size * SUPERSAMPLE
    thickness = int(rng.integers(-1, 3)) if rng is not None else 0  # -1 thinner, 0 as designed, >0 bolder
    drawn = _drawn(ch, font, size, thickness)
    if drawn is None:
        return np.zeros((size, size), np.uint8)
    glyph, box = drawn
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], float).T - side
    if rng is None:
        matrix, shift = np.eye(2), np.zeros(2)
    else:
        angle, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(-0.2, 0.2)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) * rng.uniform(0.85, 1.1)
        shift = rng.uniform(-0.06, 0.06, 2) * side
    room = side * (0.5 - MARGIN)  # ink must stay within +-room of the centre
    extent = np.ptp(matrix @ corners, axis=1).max()
    matrix = matrix * min(1.0, 2 * room / extent)
    placed = matrix @ corners + shift[:, None]
    shift = shift - np.minimum(placed.min(1) + room, 0) - np.maximum(placed.max(1) - room, 0)
    inverse = np.linalg.inv(matrix)
    pivot = side - np.array(box[:2], float)  # the em-box centre in `glyph` coordinates
    offset = pivot - inverse @ (np.full(2, side / 2) + shift)  # glyph point = inverse @ output point + offset
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    image = glyph.transform((side, side), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)
    return np.asarray(image.reduce(SUPERSAMPLE))


def _is_duplicate(image: np.ndarray, ink: float, others: list[tuple[float, np.ndarray]]) -> bool:
    """Whether sum |image - other| / (sum image + sum other) < DUPLICATE_DISTANCE for one of `others`."""
    # that distance is at least |ink difference| / (ink sum), so only characters of similar ink need comparing
    limit = DUPLICATE_DISTANCE
    return any(abs(i - ink) < limit * (i + ink) and np.abs(x - image).sum() < limit * (i + ink) for i, x in others)


@functools.cache
def inventory() -> dict[str, tuple[tuple[int, tuple[str, ...]], ...]]:
    """Alphabet -> ((code point, covering fonts), ...) in code-point order; independent of the settings.

    Characters are considered most-covered first (ties: lower code point first), so a character
    dropped by an alphabet's MAX_PER_ALPHABET cap never makes another one a duplicate.
    """
    candidates = [
        (cp, fonts) for cp, fonts in _coverage().items() if len(fonts) >= 2 and _group(chr(cp)) not in EXCLUDED_GROUPS
    ]
    groups: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    kept: dict[str, list[tuple[float, np.ndarray]]] = {}  # canonical font -> (ink, image) of kept characters
    for cp, fonts in sorted(candidates, key=lambda c: (-len(c[1]), c[0])):
        ch, group = chr(cp), _group(chr(cp))
        if group is None or len(groups.get(group, ())) >= MAX_PER_ALPHABET:
            continue
        box = _font(fonts[0], 100).getbbox(ch, anchor="mm")
        image = render(ch, fonts[0], CANONICAL_SIZE).astype(np.float32) / 255
        ink = float(image.sum())
        if max(box[2] - box[0], box[3] - box[1]) < 100 * MIN_EXTENT or ink < MIN_INK * image.size:
            continue
        previous = kept.setdefault(fonts[0], [])
        if _is_duplicate(image, ink, previous):
            continue
        previous.append((ink, image))
        groups.setdefault(group, []).append((cp, fonts))
    return {g: tuple(sorted(chars)) for g, chars in sorted(groups.items()) if len(chars) >= MIN_PER_ALPHABET}


def evaluation_alphabets(alphabets: list[str]) -> set[str]:
    """The evaluation (test) alphabets: every EVALUATION_EVERY-th script and every EVALUATION_EVERY-th block.

    Scripts (Latin, Greek, ...) and symbol blocks (Arrows, Box_Drawing, ...) are ranked separately in
    sorted name order, so both kinds are represented in the background and the evaluation set.
    """
    scripts = sorted(a for a in alphabets if ucd.script_code(a.replace("_", " "), default=None) is not None)
    blocks = sorted(set(alphabets) - set(scripts))
    return set(scripts[EVALUATION_EVERY - 1 :: EVALUATION_EVERY] + blocks[EVALUATION_EVERY - 1 :: EVALUATION_EVERY])


def _settings(cfg: Any) -> dict[str, int]:
    """The settings the dataset is a function of, checked."""
    settings = {
        "format": FORMAT_VERSION,
        "image_size": int(cfg.image_size),
        "renderings": int(cfg.renderings),
        "generator_seed": int(cfg.generator_seed),
    }
    if settings["image_size"] < 8:
        raise UserError(f"dataset.image_size={settings['image_size']} is too small for glyphs; use at least 8")
    if settings["renderings"] < 2:
        raise UserError(f"dataset.renderings={settings['renderings']} must be at least 2 (support and query images)")
    return settings


def _digest(settings: dict[str, int]) -> bytes:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).digest()


def _renderings(job: tuple[int, int, tuple[str, ...], int, int]) -> np.ndarray:
    """The [count, size, size] renderings of one character: (dataset seed, code point, fonts, size, count)."""
    seed, cp, fonts, size, count = job
    rng = np.random.default_rng([seed, cp])
    order = rng.permutation(len(fonts))
    return np.stack([render(chr(cp), fonts[order[i % len(fonts)]], size, rng) for i in range(count)])


def _quiet_worker() -> None:
    """A rendering process leaves Ctrl-C and SIGTERM to its parent, which reports them and ends the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _workers() -> int:
    """Rendering processes: the cores this process may run on, where processes can be forked."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def generate(settings: dict[str, int]) -> dict[str, Any]:
    """Render the whole dataset: {"settings", "alphabets", "characters", "images" [n, renderings, 1, H, W]}.

    Characters are rendered in parallel by forked processes (one per core), each from its own seed, so the
    images do not depend on the number of processes."""
    seed = int.from_bytes(_digest(settings)[:8], "little")
    size, count = settings["image_size"], settings["renderings"]
    todo = [(alphabet, cp, fonts) for alphabet, chars in inventory().items() for cp, fonts in chars]
    check_images_fit(len(todo) * count, 1, size, f"dataset.image_size={size}")
    jobs = [(seed, cp, fonts, size, count) for _, cp, fonts in todo]
    bar = {"total": len(jobs), "unit": "char", "desc": f"rendering glyphs ({count} per character)"}
    workers = min(_workers(), len(jobs))
    with contextlib.ExitStack() as stack:
        if workers > 1:  # the children only render (PIL and numpy), so forking this process is safe
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers, _quiet_worker))
            rendered = pool.imap(_renderings, jobs, chunksize=8)
        else:
            rendered = map(_renderings, jobs)
        images = list(progress(rendered, **bar))
    return {
        "settings": settings,
        "alphabets": [alphabet for alphabet, _, _ in todo],
        "characters": [f"U+{cp:04X} {unicodedata.name(chr(cp), '')}".rstrip() for _, cp, _ in todo],
        "images": torch.from_numpy(np.stack(images)).unsqueeze(2),
    }


def cache_path(cfg: Any) -> Path:
    """Where the dataset for cfg's settings is cached: `<root>/glyphs-<hash of the settings>.pt`."""
    root = Path(cfg.root).expanduser() if cfg.root is not None else Path.home() / ".cache" / "fewshot_exp" / "glyphs"
    return root / f"glyphs-{_digest(_settings(cfg)).hex()[:16]}.pt"


def _load_cached(path: Path, settings: dict[str, int]) -> dict[str, Any] | None:
    """The cached dataset, or None when the file is missing, unreadable or for other settings."""
    if not path.exists():
        return None
    try:
        data = torch.load(path, weights_only=True)
    except Exception as e:  # truncated or corrupt
        log.warning("regenerating the unreadable glyphs cache %s (%s)", path, e)
        return None
    if not isinstance(data, dict) or data.get("settings") != settings:
        log.warning("regenerating the glyphs cache %s: it holds other settings", path)
        return None
    return data


def load_data(cfg: Any) -> dict[str, Any]:
    """The rendered dataset for cfg's settings, from the cache or generated (and cached) now."""
    settings, path = _settings(cfg), cache_path(cfg)
    data = _load_cached(path, settings)
    if data is not None:
        return data
    with contextlib.ExitStack() as stack:
        try:  # one process generates, the others wait for it and read its cache
            stack.enter_context(held(path.parent, "glyphs cache", wait=True))
        except OSError as e:  # before the work: the cache cannot be written
            raise UserError(f"cannot write the glyphs cache in {path.parent} ({e.strerror}); set dataset.root") from e
        remove_partial_writes(path.parent)  # of a generation that was killed
        data = _load_cached(path, settings)  # written by another process while this one waited
        if data is None:
            with atomic_writer(path) as f:
                log.info("generating the glyphs dataset into %s (once; under a minute)", path)
                data = generate(settings)
                torch.save(data, f)
    return data


@dataclass
class GlyphsConfig(AlphabetDatasetConfig):
    name: str = "glyphs"
    root: str | None = None  # cache dir; None = ~/.cache/fewshot_exp/glyphs
    renderings: int = 50  # images per character: k_shot + n_query up to 50 (35 shots with 15 queries)
    generator_seed: int = 0  # the dataset is a pure function of its settings


@dataset("glyphs", GlyphsConfig)
def load_glyphs(cfg: Any) -> Splits:
    """Splits of the glyphs dataset: train/val from background alphabets, test from evaluation alphabets."""
    data = load_data(cfg)
    evaluation_names = evaluation_alphabets(list(set(data["alphabets"])))
    background: dict[str, Alphabet] = {}
    evaluation: dict[str, Alphabet] = {}
    for alphabet, character, images in zip(data["alphabets"], data["characters"], data["images"]):
        target = evaluation if alphabet in evaluation_names else background
        target.setdefault(alphabet, []).append((character, images))
    train, val = background_splits(background, cfg.val_alphabets, cfg.rotation_classes)
    return Splits(train, val, to_imageset(evaluation))
