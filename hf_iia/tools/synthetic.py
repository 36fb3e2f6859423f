"""Deterministic synthetic images whose label depends on one object with a known mask.

Each image shows exactly one *class object* (one of :data:`CLASS_NAMES`) drawn in a flat
random light colour (every channel in [150, 255]) at a random position, scale and
rotation on a cluttered background:

* a smooth random dark colour field (bicubic up-sampling of a coarse random grid whose
  channels lie below 130), so the object always stands out; this holds for every class,
  so it tells where the object is but not which one it is,
* one to three faint long lines (low contrast with the background, width 1),
* three to eight *distractors* of any colour that are never class shapes: thin line
  segments, dots of radius at most ``0.035 * size`` (class objects have a radius of at
  least ``0.14 * size``), and filled ellipses with an aspect ratio of at least 3.5.
  Distractors never touch the object (its bounding box plus a 3 px margin) nor each
  other, so they can neither change the object's silhouette nor combine into a class
  shape,
* per-pixel sensor noise of at most +-6 grey levels over the whole image.

The label is ``index % 6`` and the object is the only thing in the image that depends
on it, so the object's mask is the ground-truth evidence for the label. With
``shortcut=True`` a small patch of a fixed per-class colour (:data:`SHORTCUT_COLORS`) is
pasted into the top-left corner; the object never overlaps that corner, and the
shortcut image differs from the plain one only inside the patch.

Every sample is a pure function of ``(seed, index)``: the object comes from
``np.random.default_rng([seed, index, 0])`` and the clutter from
``np.random.default_rng([seed, index, 1])``, so disjoint index ranges give disjoint,
reproducible splits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from hf_iia.errors import IIAError

if TYPE_CHECKING:
    import datasets

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")
"""The six object classes; a sample's label is its index into this tuple."""

NUM_CLASSES: int = len(CLASS_NAMES)

HELDOUT_START: int = 10_000_000
"""First sample index of the held-out split; training indices stay below it."""

SHORTCUT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
)
"""The colour of the shortcut patch for each class, in :data:`CLASS_NAMES` order."""

MIN_SIZE: int = 24
"""The smallest supported image side in pixels."""

_MIN_RADIUS = 0.14  # object circumradius, as a fraction of the image side
_MAX_RADIUS = 0.26
_MAX_ROTATION = math.pi  # object rotation is uniform in +-this many radians
_OBJECT_MARGIN = 3.0  # px kept free of distractors around the object's bounding box
_OBJECT_MIN = 150  # every channel of the object's colour is in [_OBJECT_MIN, 255]
_BG_MAX = 90  # every channel of the background's base colour is in [0, _BG_MAX)
_BG_AMPLITUDE = 40  # +- grey levels of the smooth background field
_LINE_AMPLITUDE = 50  # +- grey levels of the faint background lines
_NOISE_AMPLITUDE = 6  # +- grey levels of the per-pixel noise
_LINES = (1, 4)  # [low, high) number of faint background lines
_DISTRACTORS = (3, 9)  # [low, high) number of distractors tried
_MAX_DOT_RADIUS = 0.035  # fractions of the image side
_SEGMENT_LENGTH = (0.08, 0.25)
_ELLIPSE_SEMI_MAJOR = (0.06, 0.15)
_ELLIPSE_ASPECT = (3.5, 6.0)

Box = tuple[float, float, float, float]
"""An ``(x0, y0, x1, y1)`` box in pixels."""
Render = Callable[[int], tuple[np.ndarray, np.ndarray, int]]
"""A sample renderer: index -> ``(uint8 [S, S, 3] image, bool [S, S] mask, label)``."""


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic image with the ground-truth mask of its class object."""

    image: Image.Image
    """The RGB image, ``size x size``."""
    mask: np.ndarray
    """Boolean ``[size, size]`` array, True on the class object's pixels."""
    label: int
    """Index into :data:`CLASS_NAMES`."""
    label_name: str
    """``CLASS_NAMES[label]``."""


def shortcut_patch_size(size: int) -> int:
    """Side in pixels of the shortcut patch for images of side ``size`` (6 at 64 px)."""
    return max(2, round(6 * size / 64))


def add_shortcut_patch(images: np.ndarray, labels: np.ndarray | int) -> np.ndarray:
    """Return a copy of ``images`` with each image's class-coloured shortcut patch pasted in.

    Args:
        images: ``uint8`` array ``[H, W, 3]`` or ``[N, H, W, 3]`` (square images).
        labels: one label for a single image, or ``N`` labels for a batch. Passing labels
            other than the true ones plants a *conflicting* shortcut.

    Returns:
        A new array of the same shape and dtype.
    """
    out = np.array(images, dtype=np.uint8, copy=True)
    batch = out if out.ndim == 4 else out[None]
    label_array = np.broadcast_to(np.asarray(labels, dtype=np.int64), (batch.shape[0],))
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.shape[1] != batch.shape[2]:
        raise IIAError(f"images must be [H, W, 3] or [N, H, W, 3] with H == W, got {out.shape}")
    if label_array.min(initial=0) < 0 or label_array.max(initial=0) >= NUM_CLASSES:
        raise IIAError(f"labels must lie in [0, {NUM_CLASSES}), got {label_array}")
    patch = shortcut_patch_size(batch.shape[1])
    colors = np.asarray(SHORTCUT_COLORS, dtype=np.uint8)[label_array]
    batch[:, :patch, :patch, :] = colors[:, None, None, :]
    return out


def _rotated(points: np.ndarray, cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    """Rotate local ``[k, 2]`` points by ``angle`` and move them to ``(cx, cy)``."""
    cos, sin = math.cos(angle), math.sin(angle)
    xs = cx + points[:, 0] * cos - points[:, 1] * sin
    ys = cy + points[:, 0] * sin + points[:, 1] * cos
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _star_points(radius: float) -> np.ndarray:
    """Local vertices of a five-pointed star of circumradius ``radius``."""
    angles = np.arange(10) * (math.pi / 5) - math.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, radius, 0.42 * radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_points(radius: float) -> np.ndarray:
    """Local vertices of a plus sign with arms of length ``radius``."""
    r, w = radius, 0.32 * radius
    return np.array(
        [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
         (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
    )  # fmt: skip


def shape_mask(name: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """The boolean ``[size, size]`` mask of shape ``name`` (one of :data:`CLASS_NAMES`) centred at ``(cx, cy)``,
    rotated by ``angle`` radians; every shape fits in ``center +- radius``."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if name in ("circle", "ring"):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        if name == "ring":
            inner = 0.55 * radius
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif name == "square":
        half = radius / math.sqrt(2.0)
        corners = np.array([(-half, -half), (half, -half), (half, half), (-half, half)])
        draw.polygon(_rotated(corners, cx, cy, angle), fill=255)
    elif name == "triangle":
        angles = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) - math.pi / 2
        vertices = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        draw.polygon(_rotated(vertices, cx, cy, angle), fill=255)
    elif name == "cross":
        draw.polygon(_rotated(_cross_points(radius), cx, cy, angle), fill=255)
    else:
        draw.polygon(_rotated(_star_points(radius), cx, cy, angle), fill=255)
    return np.asarray(canvas) > 0


def boxes_overlap(a: Box, b: Box) -> bool:
    """Whether two ``(x0, y0, x1, y1)`` boxes intersect."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, taken: list[Box]) -> None:
    """Draw one non-class distractor away from every box in ``taken`` (then add its box).

    Tries a few random placements and draws nothing if all of them collide.
    """
    for _ in range(8):
        kind = int(rng.integers(3))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, size, 2)
        if kind == 0:  # thin line segment
            length = rng.uniform(*_SEGMENT_LENGTH) * size
            angle = rng.uniform(0, math.pi)
            x1, y1 = x + length * math.cos(angle), y + length * math.sin(angle)
            width = int(rng.integers(1, max(1, round(size / 32)) + 1))
            box = (min(x, x1) - width, min(y, y1) - width, max(x, x1) + width, max(y, y1) + width)
            if not any(boxes_overlap(box, other) for other in taken):
                draw.line((x, y, x1, y1), fill=color, width=width)
                taken.append(box)
                return
        elif kind == 1:  # small dot
            radius = rng.uniform(1.0, max(1.0, _MAX_DOT_RADIUS * size))
            box = (x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1)
            if not any(boxes_overlap(box, other) for other in taken):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
                taken.append(box)
                return
        else:  # elongated ellipse
            semi_major = rng.uniform(*_ELLIPSE_SEMI_MAJOR) * size
            semi_minor = max(0.75, semi_major / rng.uniform(*_ELLIPSE_ASPECT))
            angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
            local = np.stack([semi_major * np.cos(angles), semi_minor * np.sin(angles)], axis=1)
            points = _rotated(local, x, y, rng.uniform(0, math.pi))
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (min(xs) - 1, min(ys) - 1, max(xs) + 1, max(ys) + 1)
            if not any(boxes_overlap(box, other) for other in taken):
                draw.polygon(points, fill=color)
                taken.append(box)
                return


def _render(
    index: int, seed: int, size: int, shortcut: bool, background_seed: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Render sample ``index``: ``(uint8 [size, size, 3] image, bool mask, label)``."""
    if size < MIN_SIZE:
        raise IIAError(f"size must be at least {MIN_SIZE} px, got {size}")
    if index < 0 or seed < 0 or (background_seed is not None and background_seed < 0):
        raise IIAError(f"index, seed and background_seed must be >= 0, got {index}, {seed}, {background_seed}")

    # The object: label, colour, scale, rotation, position (kept off the shortcut corner).
    label = index % NUM_CLASSES
    obj_rng = np.random.default_rng([seed, index, 0])
    color = obj_rng.integers(_OBJECT_MIN, 256, 3)
    radius = obj_rng.uniform(_MIN_RADIUS, _MAX_RADIUS) * size
    angle = obj_rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    corner = shortcut_patch_size(size) + 2
    for _ in range(100):
        cx, cy = obj_rng.uniform(radius + 1, size - 2 - radius, 2)
        if cx - radius > corner or cy - radius > corner:
            break
    else:
        cx = cy = size / 2
    mask = shape_mask(CLASS_NAMES[label], cx, cy, radius, angle, size)

    # The clutter: a smooth background darker than the object, faint lines, distractors.
    clutter_seed = [seed, index, 1] if background_seed is None else [seed, index, 2, background_seed]
    rng = np.random.default_rng(clutter_seed)
    base = rng.integers(0, _BG_MAX, 3)
    cells = int(rng.integers(3, 7))
    coarse = np.clip(base + rng.integers(-_BG_AMPLITUDE, _BG_AMPLITUDE + 1, (cells, cells, 3)), 0, 255)
    canvas = Image.fromarray(coarse.astype(np.uint8), "RGB").resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(*_LINES))):
        ends = rng.uniform(0, size, 4)
        shade = np.clip(base + rng.integers(-_LINE_AMPLITUDE, _LINE_AMPLITUDE + 1, 3), 0, 255)
        draw.line(tuple(ends.tolist()), fill=tuple(int(c) for c in shade), width=1)
    taken: list[Box] = [
        (
            cx - radius - _OBJECT_MARGIN,
            cy - radius - _OBJECT_MARGIN,
            cx + radius + _OBJECT_MARGIN,
            cy + radius + _OBJECT_MARGIN,
        )
    ]
    for _ in range(int(rng.integers(*_DISTRACTORS))):
        _draw_distractor(draw, rng, size, taken)

    pixels = np.asarray(canvas).astype(np.int16)
    pixels[mask] = color
    pixels += rng.integers(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE + 1, (size, size, 3), dtype=np.int16)
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    if shortcut:
        image = add_shortcut_patch(image, label)
    return image, mask, label


def make_sample(
    index: int, *, seed: int = 0, size: int = 64, shortcut: bool = False, background_seed: int | None = None
) -> SyntheticSample:
    """Generate sample ``index`` of the benchmark; a pure function of its arguments.

    Args:
        index: sample index (>= 0); the label is ``index % 6``.
        seed: dataset seed (>= 0).
        size: image side in pixels (>= :data:`MIN_SIZE`).
        shortcut: paste the class-coloured patch into the top-left corner.
        background_seed: ``None`` for the sample's own clutter; any other value (>= 0)
            redraws only the background, lines, distractors and noise while the object
            (label, mask, colour) stays the same.
    """
    image, mask, label = _render(index, seed, size, shortcut, background_seed)
    return SyntheticSample(Image.fromarray(image, "RGB"), mask, label, CLASS_NAMES[label])


def make_arrays(
    n: int, *, seed: int = 0, size: int = 64, shortcut: bool = False, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples ``start .. start + n - 1`` as arrays, without PIL or ``datasets`` overhead.

    Returns:
        ``(images, masks, labels)``: ``uint8 [n, size, size, 3]``, ``bool [n, size, size]``
        and ``int64 [n]``, identical to what :func:`make_sample` gives for each index.
    """
    return render_arrays(lambda index: _render(index, seed, size, shortcut, None), n, size, start)


def render_arrays(render: Render, n: int, size: int, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``render(index)`` for ``index`` in ``start .. start + n - 1``, stacked into ``(images, masks, labels)``:
    ``uint8 [n, size, size, 3]``, ``bool [n, size, size]`` and ``int64 [n]`` (shared by the generated suites)."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    labels = np.empty((n,), dtype=np.int64)
    for offset in range(n):
        images[offset], masks[offset], labels[offset] = render(start + offset)
    return images, masks, labels


def make_dataset(n: int, *, seed: int = 0, size: int = 64, shortcut: bool = False, start: int = 0) -> datasets.Dataset:
    """Samples ``start .. start + n - 1`` as an in-memory :class:`datasets.Dataset`.

    Columns: ``image`` (``datasets.Image``, RGB), ``mask`` (``datasets.Array2D`` of
    ``uint8`` 0/1, shape ``[size, size]``; ``np.asarray(row["mask"], dtype=bool)`` gives
    the object mask) and ``label`` (``datasets.ClassLabel`` named by :data:`CLASS_NAMES`).
    """
    return arrays_to_dataset(make_arrays(n, seed=seed, size=size, shortcut=shortcut, start=start), CLASS_NAMES)


def arrays_to_dataset(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray], class_names: Sequence[str]
) -> datasets.Dataset:
    """``(images [n, S, S, 3], masks [n, S, S], labels [n])`` as a :class:`datasets.Dataset` with the columns of
    :func:`make_dataset`, the labels named by ``class_names``."""
    import datasets

    images, masks, labels = arrays
    size = images.shape[1]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Array2D(shape=(size, size), dtype="uint8"),
            "label": datasets.ClassLabel(names=list(class_names)),
        }
    )
    columns = {
        "image": [Image.fromarray(image, "RGB") for image in images],
        "mask": masks.astype(np.uint8),
        "label": labels.tolist(),
    }
    return datasets.Dataset.from_dict(columns, features=features)
