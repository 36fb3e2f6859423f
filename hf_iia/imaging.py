"""Images in: conversion of paths, PIL images and arrays to RGB, and the processor's geometry.

:func:`to_rgb` accepts a path, a PIL image (any mode) or a numpy array (``[H, W]``,
``[H, W, 1|3|4]``; uint8, uint16, bool or float in ``[0, 1]``) and returns an RGB PIL
image, or raises :class:`~hf_iia.errors.ImageInputError` saying what is wrong.

:func:`probe_geometry` finds how an image processor maps an image of a given size onto
its ``pixel_values`` (resize, crop, pad: any axis-aligned affine map) by feeding it
coordinate ramps, so maps can be drawn over the *original* image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageInputError

ImageLike = str | os.PathLike | Image.Image | np.ndarray

_CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def to_rgb(image: ImageLike) -> Image.Image:
    """Return ``image`` as an RGB PIL image (alpha dropped, 16-bit scaled to 8-bit)."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                opened.load()
                return to_rgb(opened)
        except FileNotFoundError:
            raise ImageInputError(f"image file not found: {os.fspath(image)!r}") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ImageInputError(f"cannot read {os.fspath(image)!r} as an image ({error})") from None
        except Image.DecompressionBombError as error:
            raise ImageInputError(f"{os.fspath(image)!r} is too large to decode safely ({error})") from None
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ImageInputError(f"image has size {image.size}; it needs at least one pixel")
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return to_rgb(np.asarray(image))
        if image.mode == "La":  # premultiplied alpha: PIL converts it to LA only
            image = image.convert("LA")
        try:
            return image.convert("RGB")
        except (ValueError, OSError) as error:  # an unconvertible mode, or a lazily opened file that is gone
            raise ImageInputError(f"cannot convert a PIL image of mode {image.mode!r} to RGB ({error})") from None
    if isinstance(image, np.ndarray):
        return Image.fromarray(
            _array_to_uint8(image), _CHANNEL_MODES[1 if image.ndim == 2 else image.shape[2]]
        ).convert("RGB")
    if isinstance(image, torch.Tensor):
        raise ImageInputError(
            "torch tensors are taken as preprocessed pixel_values, not images: pass the tensor [B, C, H, W] to "
            "explainer.attribute(), or a PIL image / numpy HWC array / path to explainer(...)"
        )
    raise ImageInputError(
        f"unsupported image type {type(image).__name__}; pass a file path, a PIL.Image, a numpy array "
        "[H, W] or [H, W, C] (C = 1, 3 or 4), or a list of them"
    )


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` array of any supported dtype -> uint8 of the same shape (C squeezed if 1)."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(
            f"image array has shape {array.shape}; expected [H, W] or [H, W, C] with C in (1, 3, 4) "
            "(channels last; transpose a [C, H, W] array with array.transpose(1, 2, 0))"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageInputError(f"image array has shape {array.shape}; it needs at least one pixel")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 65535:
            raise ImageInputError(f"integer image values must lie in [0, 65535], got [{array.min()}, {array.max()}]")
        scale = 257 if array.max() > 255 or array.dtype == np.uint16 else 1
        return (array.astype(np.float64) / scale).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageInputError("image array contains NaN or inf values; pass finite pixel values")
        if array.min() < 0 or array.max() > 1:
            raise ImageInputError(
                f"float image values must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]; "
                "pass uint8 values 0..255 or scale the array to [0, 1]"
            )
        return (array.astype(np.float64) * 255).round().astype(np.uint8)
    raise ImageInputError(f"unsupported image array dtype {array.dtype}; use uint8, uint16, bool or float in [0, 1]")


@dataclass(frozen=True)
class Geometry:
    """Affine map from model-input pixel centres ``(x, y)`` to original-image pixel centres.

    ``u = scale_x * x + shift_x``, ``v = scale_y * y + shift_y``; ``original_size`` is ``(W, H)``.
    """

    scale_x: float
    shift_x: float
    scale_y: float
    shift_y: float
    original_size: tuple[int, int]

    def to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """Resample ``heatmap`` ``[h, w]`` onto the original image ``[H, W]``; NaN where the input did not see the image."""
        width, height = self.original_size
        h, w = heatmap.shape
        u = np.arange(width, dtype=np.float64)
        v = np.arange(height, dtype=np.float64)
        x = (u - self.shift_x) / self.scale_x
        y = (v - self.shift_y) / self.scale_y
        grid = torch.empty(1, height, width, 2, dtype=torch.float32)
        grid[..., 0] = torch.from_numpy(2 * x / max(w - 1, 1) - 1).float().view(1, 1, width)
        grid[..., 1] = torch.from_numpy(2 * y / max(h - 1, 1) - 1).float().view(1, height, 1)
        source = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32)).view(1, 1, h, w)
        out = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
        out = out[0, 0].numpy()
        inside_x = (x >= -0.5) & (x <= w - 0.5)
        inside_y = (y >= -0.5) & (y <= h - 0.5)
        out[~(inside_y[:, None] & inside_x[None, :])] = np.nan
        return out


Preprocess = Callable[[list[Image.Image]], torch.Tensor]


PROBE_MAX_SIDE = 1024


def probe_geometry(preprocess: Preprocess, size: tuple[int, int]) -> Geometry | None:
    """Find the affine map ``preprocess`` applies to an RGB image of ``size = (W, H)``.

    Feeds three probes (black, white, and x/y coordinate ramps in the red/green
    channels) and fits ``source coordinate = scale * output coordinate + shift`` per axis.
    Returns ``None`` when the processor is not an axis-aligned affine map of the pixels.

    Images with a side over :data:`PROBE_MAX_SIDE` are probed at a proportionally reduced
    size and the fit is scaled back (the 8-bit ramps cannot resolve finer positions anyway),
    so an 8k x 8k photo costs no more to probe than a 1k one.
    """
    width, height = size
    factor = max(width, height) / PROBE_MAX_SIDE
    if factor > 1:
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        fit = _probe(preprocess, small)
        if fit is None:
            return None
        sx, sy = width / small[0], height / small[1]  # pixel centres: u = (u' + 0.5) * s - 0.5
        return Geometry(
            fit.scale_x * sx,
            (fit.shift_x + 0.5) * sx - 0.5,
            fit.scale_y * sy,
            (fit.shift_y + 0.5) * sy - 0.5,
            (width, height),
        )
    return _probe(preprocess, size)


def _probe(preprocess: Preprocess, size: tuple[int, int]) -> Geometry | None:
    width, height = size
    ramp = np.zeros((height, width, 3), dtype=np.uint8)
    ramp[..., 0] = np.round(np.linspace(0, 255, width))[None, :]
    ramp[..., 1] = np.round(np.linspace(0, 255, height))[:, None]
    probes = [np.zeros_like(ramp), np.full_like(ramp, 255), ramp]
    black, white, coords = preprocess([Image.fromarray(p) for p in probes]).double()
    span = white - black
    if (span[:2].abs() < 1e-6).any():
        return None
    levels = (coords[:2] - black[:2]) / span[:2] * 255  # [2, h, w] ramp values seen at each output pixel
    fits = []
    for axis, length in ((0, width), (1, height)):
        source = levels[axis] / 255 * max(length - 1, 1)
        profile = source.mean(dim=axis)  # x: average over rows -> [w]; y: average over columns -> [h]
        positions = torch.arange(profile.shape[0], dtype=torch.float64)
        inside = (profile > 0.5) & (profile < length - 1.5)  # ignore padding and clamped borders
        if inside.sum() < 2:
            return None
        slope, intercept = np.polyfit(positions[inside].numpy(), profile[inside].numpy(), 1)
        residual = np.abs(slope * positions[inside].numpy() + intercept - profile[inside].numpy()).max()
        if residual > max(2.0, 2 * abs(slope)) or slope <= 0:
            return None
        fits.append((float(slope), float(intercept)))
    (scale_x, shift_x), (scale_y, shift_y) = fits
    return Geometry(scale_x, shift_x, scale_y, shift_y, (width, height))
