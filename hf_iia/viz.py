"""Overlays and grids: heatmaps drawn over images with matplotlib colormaps, returned as PIL images."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

SIGNED_COLORMAP = "RdBu_r"
"""A diverging colormap for signed maps: white at zero, red for the target, blue against it."""

UNSIGNED_LEGEND = "relevance (min-max normalised per image)"
SIGNED_PERCENTILE = 99.0
"""A signed map is drawn scaled by this percentile of its magnitudes and clipped: a pixel map such as IG's has a
few extreme pixels, and scaling by the largest would leave the rest invisible."""

SIGNED_LEGEND = "signed relevance (±1: 99th percentile of |relevance|)\nred: for the target, blue: against it"


def _blend(image: Image.Image, colours: np.ndarray, weight: np.ndarray) -> Image.Image:
    """``image`` blended with ``colours`` ``[H, W, 3]`` in [0, 1] by ``weight`` ``[H, W]`` (0: the image alone)."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    blended = (1 - weight[..., None]) * base + weight[..., None] * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def _check_size(image: Image.Image, heatmap: np.ndarray) -> None:
    if heatmap.shape != (image.height, image.width):
        raise ValueError(f"heatmap {heatmap.shape} does not match image {(image.height, image.width)}")


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """Blend ``heatmap`` ``[H, W]`` (values in [0, 1]; NaN = leave the pixel as is) over ``image`` of the same size."""
    _check_size(image, heatmap)
    colours = colormaps[colormap](np.nan_to_num(heatmap, nan=0.0))[..., :3].astype(np.float32)
    return _blend(image, colours, np.where(np.isfinite(heatmap), alpha, 0.0).astype(np.float32))


def signed_overlay(image: Image.Image, heatmap: np.ndarray, zero_level: float, *, alpha: float = 0.8) -> Image.Image:
    """Blend a signed map over ``image``: ``heatmap`` ``[H, W]`` min-max normalised (NaN = leave the pixel as is),
    whose raw zero lies at ``zero_level``, drawn with :data:`SIGNED_COLORMAP` centred on that zero and an opacity
    growing with ``|relevance|`` (see :func:`_signed_relevance`) up to ``alpha``, so pixels with no effect show the image itself (a min-max view of
    a signed map would put them at mid-scale and tint the whole image)."""
    _check_size(image, heatmap)
    relevance = _signed_relevance(heatmap, zero_level)
    colours = colormaps[SIGNED_COLORMAP]((np.nan_to_num(relevance, nan=0.0) + 1) / 2)[..., :3].astype(np.float32)
    return _blend(image, colours, (alpha * np.nan_to_num(np.abs(relevance), nan=0.0)).astype(np.float32))


def _signed_relevance(heatmap: np.ndarray, zero_level: float) -> np.ndarray:
    """``[H, W]`` in [-1, 1]: the raw map divided by the :data:`SIGNED_PERCENTILE` of its magnitudes (by the
    largest when that percentile is 0) and clipped; NaN kept; an all-zero map gives zeros."""
    relevance = heatmap.astype(np.float32) - np.float32(zero_level)
    magnitudes = np.abs(relevance[np.isfinite(relevance)])
    if not magnitudes.size or not magnitudes.max() > 0:
        return np.where(np.isfinite(relevance), 0.0, np.nan).astype(np.float32)
    scale = float(np.percentile(magnitudes, SIGNED_PERCENTILE)) or float(magnitudes.max())
    return np.clip(relevance / scale, -1, 1)


def annotated_overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    title: str,
    *,
    zero_level: float | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> Image.Image:
    """The overlay as a figure that says what it shows: ``title`` above it and a colour bar naming the scale.

    Args:
        image: the original image ``[H, W]``.
        heatmap: ``[H, W]`` in [0, 1] on ``image`` (NaN where the model did not see it).
        title: what the map explains (e.g. model, method, target and score); ``\n`` starts a line.
        zero_level: ``None``: an unsigned map, drawn as :func:`overlay` with the legend :data:`UNSIGNED_LEGEND`;
            a float: a signed map whose raw zero lies there, drawn as :func:`signed_overlay` with
            :data:`SIGNED_LEGEND`.
        alpha, colormap: :func:`overlay`'s, for an unsigned map.

    Returns:
        An RGB image somewhat larger than ``image`` (small images are enlarged so that the text stays readable).
    """
    # Imported here: matplotlib's figure modules build its font cache (in MPLCONFIGDIR) on import, which only
    # the annotated figure needs; plain overlays (the audit grid, Explanation.overlay) write nothing.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if zero_level is None:
        picture = overlay(image, heatmap, alpha=alpha, colormap=colormap)
        scale = ScalarMappable(Normalize(0, 1), colormaps[colormap])
        legend = UNSIGNED_LEGEND
    else:
        picture = signed_overlay(image, heatmap, zero_level)
        scale = ScalarMappable(Normalize(-1, 1), colormaps[SIGNED_COLORMAP])
        legend = SIGNED_LEGEND
    dpi = 100
    width = min(max(picture.width, 480), 1200) / dpi  # inches of the image itself: small images enlarged
    height = width * picture.height / picture.width
    lines = title.count("\n") + 1
    figure = Figure(figsize=(width + 1.4, height + 0.3 + 0.2 * lines), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # Nearest-neighbour enlarging keeps a small image's pixels (and the map's cells) visible as they are.
    axes.imshow(picture, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title, fontsize=10, loc="left")
    bar = figure.colorbar(scale, ax=axes, fraction=0.05, pad=0.02)
    bar.set_label(legend, fontsize=8)
    bar.ax.tick_params(labelsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return Image.open(buffer).convert("RGB")


def grid(tiles: Sequence[Image.Image], captions: Sequence[str], *, columns: int = 4, tile: int = 256) -> Image.Image:
    """Lay ``tiles`` out in a grid of ``tile``-pixel squares, each with its caption underneath."""
    rows = max(1, -(-len(tiles) // columns))
    caption_height = 18
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (picture, caption) in enumerate(zip(tiles, captions, strict=True)):
        picture = picture.copy()
        picture.thumbnail((tile, tile))
        x, y = (index % columns) * tile, (index // columns) * (tile + caption_height)
        sheet.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
        draw.text((x + 4, y + tile + 2), caption[: tile // 6], fill="black")
    return sheet
