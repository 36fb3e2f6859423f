"""Spurious-cue indicators: the share of a map's mass in the border band and the corner squares, and
object masks carried onto the model input."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ...data import DatasetColumnError
from ...errors import GeometryError
from ...imaging import Geometry
from .config import Thresholds

CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")


def region_masks(height: int, width: int, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """``(border [H, W] bool, corners [4, H, W] bool)`` in :data:`CORNERS` order."""

    def pixels(fraction: float, length: int) -> int:
        return max(1, round(fraction * length))

    band_y, band_x = pixels(thresholds.border_fraction, height), pixels(thresholds.border_fraction, width)
    border = np.ones((height, width), dtype=bool)
    border[band_y : height - band_y, band_x : width - band_x] = False
    side_y, side_x = pixels(thresholds.corner_fraction, height), pixels(thresholds.corner_fraction, width)
    corners = np.zeros((4, height, width), dtype=bool)
    corners[0, :side_y, :side_x] = corners[1, :side_y, -side_x:] = True
    corners[2, -side_y:, :side_x] = corners[3, -side_y:, -side_x:] = True
    return border, corners


def region_shares(maps: np.ndarray, thresholds: Thresholds) -> dict[str, np.ndarray]:
    """Share of each map's mass in the border band and in each corner square.

    Args:
        maps: ``[B, H, W]`` non-negative maps.

    Returns:
        ``{"border_mass": [B], "top_left_mass": [B], ...}`` (one entry per corner of
        :data:`CORNERS`); an all-zero map has shares 0.
    """
    _, height, width = maps.shape
    border, corners = region_masks(height, width, thresholds)
    maps = maps.astype(np.float64)
    total = maps.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    shares = {"border_mass": (maps * border).sum(axis=(1, 2)) / safe}
    per_corner = np.einsum("bhw,chw->cb", maps, corners.astype(np.float64)) / safe
    shares.update({corner_column(name): share for name, share in zip(CORNERS, per_corner, strict=True)})
    return shares


def corner_column(corner: str) -> str:
    return corner.replace("-", "_") + "_mass"


def mask_to_input(mask: np.ndarray, geometry: Geometry | None, size: tuple[int, int]) -> np.ndarray:
    """Carry an object mask ``[H0, W0]`` from the original image onto the model input ``size = (H, W)``.

    Each model-input pixel takes the mask value at its source position (nearest pixel);
    pixels that show no part of the image (padding) are off the object. Without a known
    geometry there is no evidence where the object lies on the input: :class:`GeometryError`.
    """
    height, width = size
    if geometry is None:
        raise GeometryError(
            "the image processor's resize / crop / pad could not be established for these images, so the object "
            "masks cannot be placed on the model input; audit without --masks (mask_column=None)"
        )
    u = np.rint(geometry.scale_x * np.arange(width) + geometry.shift_x).astype(np.int64)
    v = np.rint(geometry.scale_y * np.arange(height) + geometry.shift_y).astype(np.int64)
    inside = ((v >= 0) & (v < mask.shape[0]))[:, None] & ((u >= 0) & (u < mask.shape[1]))[None, :]
    return mask[v.clip(0, mask.shape[0] - 1)][:, u.clip(0, mask.shape[1] - 1)] & inside


def as_mask(cell: Any, image: Image.Image, row: int) -> np.ndarray:
    """A mask cell (array, nested list or PIL image; non-zero = object) -> ``[H0, W0]`` bool matching ``image``."""
    if cell is None:
        raise DatasetColumnError(f"row {row}: the mask is missing (None)")
    values = np.asarray(cell)
    mask = np.asarray(values.any(axis=-1) if values.ndim == 3 else values != 0, dtype=bool)
    if mask.shape != (image.height, image.width):
        raise DatasetColumnError(
            f"row {row}: the mask has shape {mask.shape} but the image is {(image.height, image.width)}; "
            "masks must be pixel-aligned with their images"
        )
    return mask
