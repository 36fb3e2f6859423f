"""Overlays and grids: heatmaps drawn over images with matplotlib colormaps, returned as PIL images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """Blend ``heatmap`` ``[H, W]`` (values in [0, 1]; NaN = leave the pixel as is) over ``image`` of the same size."""
    if heatmap.shape != (image.height, image.width):
        raise ValueError(f"heatmap {heatmap.shape} does not match image {(image.height, image.width)}")
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    valid = np.isfinite(heatmap)
    colours = colormaps[colormap](np.nan_to_num(heatmap, nan=0.0))[..., :3].astype(np.float32)
    weight = np.where(valid, alpha, 0.0)[..., None]
    blended = (1 - weight) * base + weight * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def grid(tiles: Sequence[Image.Image], captions: Sequence[str], *, columns: int = 4, tile: int = 256) -> Image.Image:
    """Lay ``tiles`` out in a grid of ``tile``-pixel squares, each with its caption underneath."""
    rows = max(1, -(-len(tiles) // columns))
    caption_height = 18
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (picture, caption) in enumerate(zip(tiles, captions)):
        picture = picture.copy()
        picture.thumbnail((tile, tile))
        x, y = (index % columns) * tile, (index // columns) * (tile + caption_height)
        sheet.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
        draw.text((x + 4, y + tile + 2), caption[: tile // 6], fill="black")
    return sheet
