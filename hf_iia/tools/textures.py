"""Deterministic images of real textures whose label depends on one textured object with a known mask.

The second generated suite, beside :mod:`hf_iia.tools.synthetic` (flat shapes on dark clutter, where the
object is the brightest thing and attention alone finds it). Here every pixel is real photo content from the
offline images that scikit-image, matplotlib and scikit-learn ship:

* the *class object*: a shape of :data:`hf_iia.tools.synthetic.CLASS_NAMES` (drawn at random, so the shape says
  nothing about the class) filled with a crop of the class's texture photo (:data:`CLASS_SOURCES`: brick, grass,
  gravel, stained tissue, the Hubble deep field, printed text), at a random zoom, quarter turn and flip;
* the background: a crop of one of the 13 benchmark photos (:func:`hf_iia.tools.demo.sample_images` and
  :func:`hf_iia.tools.demo.extra_images`: cat, coffee, astronaut, rocket, ...), never a class texture;
* two or three *distractors*: shapes of the same family and size filled with crops of those photos, so an object
  that stands out is not yet the evidence: only the texture tells the class. They never touch the object (its
  bounding box plus a 3 px margin) nor each other;
* one to three *clutter* patches (small photo rectangles) away from the object and the distractors;
* *occlusion*: with probability :data:`OCCLUSION_PROBABILITY` a photo rectangle covers part of the object's edge
  (at most half of the object); the mask holds only the object's visible pixels;
* per-pixel sensor noise of at most +-4 grey levels.

The label is ``index % 6`` and the visible class texture is the only thing in the image that depends on it, so
the mask is the ground-truth evidence for the label.

*Pair samples* (:func:`make_pair_arrays`) hold two class objects of different classes, each with its mask: the
test of whether a map follows the class it explains (the pointing game of the second class).

Split discipline: every sample is a pure function of ``(seed, index)`` (the object and its occluder from
``np.random.default_rng([seed, index, 0])``, the background and clutter from ``[seed, index, 1]``), so disjoint
index ranges give disjoint, reproducible splits, as in the synthetic suite: training uses indices below
:data:`HELDOUT_START`, the bench and the design search the held-out indices from there (development first, the
report split after it). Beyond that, each source photo is cut in two along its longer side: training samples
crop from the first :data:`TRAIN_FRACTION` of it, held-out samples from the rest, so held-out images show
texture and background regions that no training image showed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from hf_iia.errors import IIAError

from .synthetic import CLASS_NAMES as SHAPES
from .synthetic import MIN_SIZE, Box, SyntheticSample, arrays_to_dataset, boxes_overlap, render_arrays, shape_mask

if TYPE_CHECKING:
    import datasets

CLASS_SOURCES: tuple[tuple[str, str], ...] = (
    ("brick", "brick"),
    ("grass", "grass"),
    ("gravel", "gravel"),
    ("stain", "immunohistochemistry"),
    ("galaxies", "hubble_deep_field"),
    ("text", "page"),
)
"""``(class name, scikit-image ``skimage.data`` function)`` of each class texture, in label order."""

CLASS_NAMES: tuple[str, ...] = tuple(name for name, _ in CLASS_SOURCES)
"""The six texture classes; a sample's label is its index into this tuple."""

NUM_CLASSES: int = len(CLASS_NAMES)

HELDOUT_START: int = 10_000_000
"""First sample index of the held-out split (and of the held-out part of every photo); training indices stay
below it."""

TRAIN_FRACTION: float = 0.7
"""Share of each source photo's longer side that training samples crop from; held-out samples crop from the rest."""

OCCLUSION_PROBABILITY: float = 0.35
"""Chance that a photo rectangle covers part of the class object."""

_TEXTURE_SIDE = 160  # px of a class texture photo's shorter side after scaling: a few bricks per object
_PHOTO_SIDE = 256  # px of a background photo's shorter side after scaling
_TEXTURE_ZOOM = (0.6, 0.75)  # source px per image px of a texture crop
_MIN_RADIUS = 0.17  # object circumradius, as a fraction of the image side
_MAX_RADIUS = 0.28
_OBJECT_MARGIN = 3.0  # px kept free of distractors and clutter around the object's bounding box
_DISTRACTORS = (2, 4)  # [low, high) number of distractor shapes tried
_CLUTTER = (1, 4)  # [low, high) number of clutter patches tried
_CLUTTER_SIDE = (0.08, 0.2)  # fractions of the image side
_OCCLUDER_SIDE = (0.5, 0.9)  # fractions of the object's radius
_MAX_OCCLUDED = 0.5  # at most this share of the object's pixels is covered
_NOISE_AMPLITUDE = 4  # +- grey levels of the per-pixel noise
_PAIR_RADIUS = (0.13, 0.19)  # object circumradius range of pair samples: two objects and clutter fit at 64 px
_PAIR_ATTEMPTS = 16  # fresh draws of a pair's two objects before the size is refused


def _scaled(image: Image.Image, shorter_side: int) -> Image.Image:
    """``image`` as RGB, resized so that its shorter side is ``shorter_side`` px."""
    scale = shorter_side / min(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """``(training part, held-out part)`` of ``image``, cut at :data:`TRAIN_FRACTION` of its longer side."""
    width, height = image.size
    if width >= height:
        cut = round(TRAIN_FRACTION * width)
        return image.crop((0, 0, cut, height)), image.crop((cut, 0, width, height))
    cut = round(TRAIN_FRACTION * height)
    return image.crop((0, 0, width, cut)), image.crop((0, cut, width, height))


@functools.cache
def _sources() -> tuple[list[tuple[Image.Image, Image.Image]], list[tuple[Image.Image, Image.Image]]]:
    """``(class textures, background photos)``, each a list of ``(training part, held-out part)`` (loaded once)."""
    from skimage import data

    from .demo import extra_images, sample_images

    textures = [
        _halves(_scaled(Image.fromarray(getattr(data, source)()), _TEXTURE_SIDE)) for _, source in CLASS_SOURCES
    ]
    photos = [_halves(_scaled(photo, _PHOTO_SIDE)) for _, photo in sample_images() + extra_images()]
    return textures, photos


def _crop(source: Image.Image, rng: np.random.Generator, side: float, width: int, height: int) -> np.ndarray:
    """A random ``side x side`` crop of ``source`` (at most its shorter side), turned by a random quarter turn,
    maybe mirrored and resized to ``uint8 [height, width, 3]``."""
    side = min(side, *source.size)
    x0 = rng.uniform(0, source.width - side)
    y0 = rng.uniform(0, source.height - side)
    turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
    patch = source.resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    pixels = np.rot90(np.asarray(patch), turns) if width == height else np.asarray(patch)
    return np.ascontiguousarray(pixels[:, ::-1] if mirror else pixels)


def _photo_crop(
    photos: list[Image.Image], rng: np.random.Generator, width: int, height: int, fraction: tuple[float, float]
) -> np.ndarray:
    """A crop of a random photo whose side is ``fraction`` (uniform in the range) of the photo's shorter side."""
    photo = photos[int(rng.integers(len(photos)))]
    return _crop(photo, rng, rng.uniform(*fraction) * min(photo.size), width, height)


def _free_box(
    rng: np.random.Generator, size: int, half: float, taken: list[Box], margin: float = 1.0
) -> tuple[float, float] | None:
    """A random centre whose ``+-(half + margin)`` box lies inside the image's ``+-(half + 1)`` border and touches
    no box in ``taken`` (8 tries); the box is added to ``taken``."""
    for _ in range(8):
        cx, cy = rng.uniform(half + 1, size - 2 - half, 2)
        box = (cx - half - margin, cy - half - margin, cx + half + margin, cy + half + margin)
        if not any(boxes_overlap(box, other) for other in taken):
            taken.append(box)
            return float(cx), float(cy)
    return None


@dataclass
class _ClassObject:
    """A class object placed in the image: its shape's pixels, the texture under them and its occluder."""

    label: int
    shape_pixels: np.ndarray  # bool [size, size]
    fill: np.ndarray  # uint8 [size, size, 3]; only the shape's pixels are used
    mask: np.ndarray  # bool [size, size]: the shape's visible pixels
    occluder: tuple[int, int, int, int] | None  # (x0, y0, width, height)
    occluder_pixels: np.ndarray  # uint8 [height, width, 3]


def _class_object(
    rng: np.random.Generator,
    label: int,
    part: int,
    size: int,
    radius_range: tuple[float, float],
    photos: list[Image.Image],
    taken: list[Box],
) -> _ClassObject | None:
    """Draw a class object of ``label`` from ``rng`` away from the boxes in ``taken`` (its box and its occluder's,
    with the object margin, are added to ``taken``); ``None`` when no free place was found.

    For the first object of an image (``taken`` empty) the draws are those of the suite's single-object samples."""
    textures, _ = _sources()
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    radius = rng.uniform(*radius_range) * size
    angle = rng.uniform(-math.pi, math.pi)
    centre = _free_box(rng, size, radius, taken, _OBJECT_MARGIN)
    if centre is None:
        return None
    cx, cy = centre
    shape_pixels = shape_mask(shape, cx, cy, radius, angle, size)
    fill = _crop(textures[label][part], rng, rng.uniform(*_TEXTURE_ZOOM) * size, size, size)
    placed = _ClassObject(label, shape_pixels, fill, shape_pixels, None, np.zeros((0, 0, 3), dtype=np.uint8))
    if rng.uniform() < OCCLUSION_PROBABILITY:
        width, height = (np.round(rng.uniform(*_OCCLUDER_SIDE, 2) * radius)).astype(int)
        theta = rng.uniform(0, 2 * math.pi)  # the occluder's centre sits on the object's circumcircle
        x0 = int(np.clip(round(cx + radius * math.cos(theta) - width / 2), 0, size - width))
        y0 = int(np.clip(round(cy + radius * math.sin(theta) - height / 2), 0, size - height))
        box = (x0 - _OBJECT_MARGIN, y0 - _OBJECT_MARGIN, x0 + width + _OBJECT_MARGIN, y0 + height + _OBJECT_MARGIN)
        covered = np.zeros_like(shape_pixels)
        covered[y0 : y0 + height, x0 : x0 + width] = True
        visible = shape_pixels & ~covered
        # taken[-1] is this object's own box; the occluder may cover no other object.
        if visible.sum() >= (1 - _MAX_OCCLUDED) * shape_pixels.sum() and not any(
            boxes_overlap(box, other) for other in taken[:-1]
        ):
            placed.occluder, placed.mask = (x0, y0, width, height), visible
            placed.occluder_pixels = _photo_crop(photos, rng, width, height, (0.1, 0.3))
            taken.append(box)
    return placed


def _render(
    index: int, seed: int, size: int, background_seed: int | None, pair: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render sample ``index``: ``(uint8 [size, size, 3] image, bool [K, size, size] visible-object masks, int64 [K]
    labels)`` with ``K = 1``, or ``K = 2`` class objects of different classes when ``pair``."""
    if size < MIN_SIZE:
        raise IIAError(f"size must be at least {MIN_SIZE} px, got {size}")
    if index < 0 or seed < 0 or (background_seed is not None and background_seed < 0):
        raise IIAError(f"index, seed and background_seed must be >= 0, got {index}, {seed}, {background_seed}")
    part = int(index >= HELDOUT_START)
    photos = [pair_[part] for pair_ in _sources()[1]]

    # The objects and their occluders: they stay when only the clutter is redrawn.
    radius_range = _PAIR_RADIUS if pair else (_MIN_RADIUS, _MAX_RADIUS)
    label = index % NUM_CLASSES
    taken: list[Box] = []
    if not pair:
        single = _class_object(np.random.default_rng([seed, index, 0]), label, part, size, radius_range, photos, taken)
        assert single is not None  # an empty image always has room for one object
        objects = [single]
    else:
        pair_labels = (
            label,
            (label + 1 + int(np.random.default_rng([seed, index, 3]).integers(NUM_CLASSES - 1))) % NUM_CLASSES,
        )
        for attempt in range(_PAIR_ATTEMPTS):  # both objects drawn afresh until the second fits beside the first
            taken = []
            drawn = [
                _class_object(
                    np.random.default_rng([seed, index, 4, attempt, k]), c, part, size, radius_range, photos, taken
                )
                for k, c in enumerate(pair_labels)
            ]
            objects = [placed for placed in drawn if placed is not None]
            if len(objects) == 2:
                break
        else:
            raise IIAError(f"no room for two objects at {size} px (sample {index}); use a larger size")

    # The clutter: a photo background, distractor shapes and clutter patches away from the objects.
    clutter_seed = [seed, index, 1] if background_seed is None else [seed, index, 2, background_seed]
    rng = np.random.default_rng(clutter_seed)
    pixels = _photo_crop(photos, rng, size, size, (0.5, 1.0)).astype(np.int16)
    for _ in range(int(rng.integers(*_DISTRACTORS))):
        distractor_radius = rng.uniform(*radius_range) * size
        centre = _free_box(rng, size, distractor_radius, taken)
        if centre is not None:
            name = SHAPES[int(rng.integers(len(SHAPES)))]
            where = shape_mask(name, *centre, distractor_radius, rng.uniform(-math.pi, math.pi), size)
            pixels[where] = _photo_crop(photos, rng, size, size, (0.1, 0.3))[where]
    for _ in range(int(rng.integers(*_CLUTTER))):
        side = max(2, round(rng.uniform(*_CLUTTER_SIDE) * size))
        centre = _free_box(rng, size, side / 2, taken)
        if centre is not None:
            x0, y0 = round(centre[0] - side / 2), round(centre[1] - side / 2)
            pixels[y0 : y0 + side, x0 : x0 + side] = _photo_crop(photos, rng, side, side, (0.05, 0.2))

    for placed in objects:
        pixels[placed.shape_pixels] = placed.fill[placed.shape_pixels]
    for placed in objects:
        if placed.occluder is not None:
            x0, y0, width, height = placed.occluder
            pixels[y0 : y0 + height, x0 : x0 + width] = placed.occluder_pixels
    pixels += rng.integers(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE + 1, (size, size, 3), dtype=np.int16)
    masks = np.stack([placed.mask for placed in objects])
    labels = np.array([placed.label for placed in objects], dtype=np.int64)
    return np.clip(pixels, 0, 255).astype(np.uint8), masks, labels


def _render_one(index: int, seed: int, size: int, background_seed: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Single-object sample ``index``: ``(image, bool [size, size] mask, label)``."""
    image, masks, labels = _render(index, seed, size, background_seed)
    return image, masks[0], int(labels[0])


def make_sample(index: int, *, seed: int = 0, size: int = 64, background_seed: int | None = None) -> SyntheticSample:
    """Generate sample ``index`` of the texture suite; a pure function of its arguments.

    Args:
        index: sample index (>= 0); the label is ``index % 6``. Indices from :data:`HELDOUT_START` crop the
            held-out parts of the photos.
        seed: dataset seed (>= 0).
        size: image side in pixels (>= :data:`hf_iia.tools.synthetic.MIN_SIZE`).
        background_seed: ``None`` for the sample's own clutter; any other value (>= 0) redraws only the
            background, distractors, clutter and noise while the object, its occluder and the mask stay.
    """
    image, mask, label = _render_one(index, seed, size, background_seed)
    return SyntheticSample(Image.fromarray(image, "RGB"), mask, label, CLASS_NAMES[label])


def make_arrays(
    n: int, *, seed: int = 0, size: int = 64, shortcut: bool = False, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples ``start .. start + n - 1`` as ``(images uint8 [n, size, size, 3], masks bool [n, size, size],
    labels int64 [n])``, identical to :func:`make_sample` for each index.

    ``shortcut`` exists for the signature the training script and the bench share with
    :func:`hf_iia.tools.synthetic.make_arrays`; this suite has no shortcut variant, so it must be False.
    """
    if shortcut:
        raise IIAError("the texture suite has no shortcut variant; use hf_iia.tools.synthetic for shortcut data")
    return render_arrays(lambda index: _render_one(index, seed, size, None), n, size, start)


def make_pair_arrays(
    n: int, *, seed: int = 0, size: int = 64, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair samples ``start .. start + n - 1``: two class objects of different classes in one image.

    The first object's label is ``index % 6``, the second's another class drawn at random; both are drawn as the
    class object of a single sample (shape, texture, occluder), smaller (circumradius ``0.13``-``0.19`` of the side)
    so that both fit, and never touch each other, the distractors or the clutter. For the class sensitivity of maps
    (:mod:`hf_iia.metrics.sensitivity`): the map of either class should lie on that class's object, not the other.

    Returns:
        ``(images uint8 [n, size, size, 3], masks bool [n, 2, size, size], labels int64 [n, 2])``; ``masks[i, k]``
        holds the visible pixels of the object of class ``labels[i, k]``.
    """
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, 2, size, size), dtype=bool)
    labels = np.empty((n, 2), dtype=np.int64)
    for offset in range(n):
        images[offset], masks[offset], labels[offset] = _render(start + offset, seed, size, None, pair=True)
    return images, masks, labels


def make_dataset(n: int, *, seed: int = 0, size: int = 64, start: int = 0) -> datasets.Dataset:
    """Samples ``start .. start + n - 1`` as an in-memory :class:`datasets.Dataset` with the columns of
    :func:`hf_iia.tools.synthetic.make_dataset` (``image``, ``mask``, ``label`` named by :data:`CLASS_NAMES`)."""
    return arrays_to_dataset(make_arrays(n, seed=seed, size=size, start=start), CLASS_NAMES)
