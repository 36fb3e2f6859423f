"""Images in: conversion of paths, PIL images and arrays to RGB, and the processor's geometry.

:func:`to_rgb` accepts a path, a PIL image (any mode) or a numpy array (``[H, W]``,
``[H, W, 1|3|4]``; uint8, uint16, bool or float in ``[0, 1]``) and returns an RGB PIL
image, or raises :class:`~hf_iia.errors.ImageInputError` saying what is wrong. Paths and PIL images are
decoded as image viewers show them: an EXIF ``Orientation`` tag (phone photos) is applied
(``PIL.ImageOps.exif_transpose``, as 🤗 ``datasets`` decodes images), so the model sees, and the overlay
is drawn on, the upright photo. A PIL image is turned whenever it still carries such a tag (PIL's own
``transpose`` keeps it): turn it with ``ImageOps.exif_transpose``, which removes the tag, or drop the tag.

:func:`probe_geometry` finds how an image processor maps an image of a given size onto
its ``pixel_values`` (resize, crop, pad: any axis-aligned affine map) by feeding it
coordinate ramps, so maps can be drawn over the *original* image.

:func:`gaussian_blur` blurs model inputs (the start of the insertion metric and of ``start="blur"``), and
:func:`as_pixel_values` checks that a tensor is a batch of model inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError, MetricInputError

ImageLike = str | os.PathLike | Image.Image | np.ndarray

_CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

ORIENTATION = 0x0112  # the EXIF Orientation tag: 1 = stored upright, 2-8 = mirrored and/or turned


def to_rgb(image: ImageLike) -> Image.Image:
    """Return ``image`` as an RGB PIL image: upright per its EXIF orientation, alpha dropped, 16-bit scaled to 8-bit."""
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
        if image.getexif().get(ORIENTATION, 1) != 1:  # stored sideways or mirrored: turn it as viewers do
            image = ImageOps.exif_transpose(image)
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


def process(processor: object, images: list[Image.Image]) -> torch.Tensor:
    """``processor``'s ``pixel_values`` ``[B, C, H, W]`` for ``images``: a transformers image processor (called with
    ``return_tensors="pt"``) or any callable ``images -> tensor | {"pixel_values": ...} | sequence of arrays``."""
    return process_inputs(processor, images, ())[0]


def process_inputs(
    processor: object, images: list[Image.Image], names: Sequence[str] | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`process`'s ``pixel_values`` and the processor's outputs ``names`` (tensors ``[B, ...]``, e.g. NaFlex's
    ``pixel_attention_mask`` and ``spatial_shapes``), refused with :class:`ImageInputError` when one is missing;
    ``names=None``: every other tensor the processor returns (what a pipeline hands the model)."""
    call: Callable[..., object] = processor  # type: ignore[assignment]
    out: Any = call(images=images, return_tensors="pt") if is_hf_processor(processor) else call(images)
    mapping = isinstance(out, dict) or hasattr(out, "keys")
    pixel_values = out["pixel_values"] if mapping else out
    if not isinstance(pixel_values, torch.Tensor):
        pixel_values = torch.as_tensor(np.stack(pixel_values))
    if names is None:
        names = [
            name for name in (out if mapping else ()) if name != "pixel_values" and isinstance(out[name], torch.Tensor)
        ]
    missing = [name for name in names if not mapping or not isinstance(out.get(name), torch.Tensor)]
    if missing:
        raise ImageInputError(
            f"the image processor returned no {missing}, which the model reads besides pixel_values; pass "
            "processor= the model's own image processor"
        )
    return pixel_values, {name: out[name] for name in names}


def is_hf_processor(processor: object) -> bool:
    """Whether ``processor`` is a transformers image processor (called ``processor(images=..., return_tensors=)``)."""
    return hasattr(processor, "preprocess") or type(processor).__module__.startswith("transformers")


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
        sampled = torch.nn.functional.grid_sample(
            source, grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        out = sampled[0, 0].numpy()
        # A pixel is seen when its area [u - 0.5, u + 0.5] overlaps the input's: a crop narrower than one original
        # pixel (a 4 x 1 photo under a shortest-edge crop) still sees the pixels it cuts through.
        inside_x = (x + 0.5 / self.scale_x > -0.5) & (x - 0.5 / self.scale_x < w - 0.5)
        inside_y = (y + 0.5 / self.scale_y > -0.5) & (y - 0.5 / self.scale_y < h - 0.5)
        out[~(inside_y[:, None] & inside_x[None, :])] = np.nan
        return out


Preprocess = Callable[[list[Image.Image]], torch.Tensor]


PROBE_MAX_SIDE = 1024


def probe_geometry(preprocess: Preprocess, size: tuple[int, int]) -> Geometry | None:
    """Find the affine map ``preprocess`` applies to an RGB image of ``size = (W, H)``.

    Feeds grey probes (black, white, and an x and a y coordinate ramp, each the same in R, G and B) and fits
    ``source coordinate = scale * output coordinate + shift`` per axis over the output pixels that depend on the
    image; a second pair of ramps spanning only the part of the image the output sees refines the fit. So it holds
    whatever the processor does to the channel order (RGB -> BGR) or their number, and whatever it pads (output
    pixels equal for the black and the white probe are padding, left out). Returns ``None`` unless the evidence
    shows an axis-aligned affine map of the pixels: the image-dependent pixels form a rectangle, every channel reads
    the same ramp position, each ramp varies along its own axis only, and the fit is linear. Then
    ``IIAExplainer`` draws overlays on the model input (``Explanation.overlay_note`` says why).

    Images of more than ``PROBE_MAX_SIDE ** 2`` pixels are probed at a proportionally reduced
    size of that area and the fit is scaled back (the 8-bit ramps cannot resolve finer positions anyway), then confirmed by a
    full-size x and y ramp (refused if the processor maps those otherwise), so an 8k x 8k photo costs two
    full-size processor calls to probe instead of six.
    """
    width, height = size
    factor = (width * height) ** 0.5 / PROBE_MAX_SIDE  # by area: a long thin image is cheap at full size
    if factor > 1:
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        probed = _probe(preprocess, small)
        if probed is None:
            return None
        fit, black, span, seen = probed
        sx, sy = width / small[0], height / small[1]  # pixel centres: u = (u' + 0.5) * s - 0.5
        geometry = Geometry(
            fit.scale_x * sx,
            (fit.shift_x + 0.5) * sx - 0.5,
            fit.scale_y * sy,
            (fit.shift_y + 0.5) * sy - 0.5,
            (width, height),
        )
        return geometry if _holds_at_full_size(preprocess, geometry, black, span, seen) else None
    probed = _probe(preprocess, size)
    return probed[0] if probed is not None else None


def _holds_at_full_size(
    preprocess: Preprocess, geometry: Geometry, black: torch.Tensor, span: torch.Tensor, seen: torch.Tensor
) -> bool:
    """Whether a full-size x ramp and y ramp come out as ``geometry`` (fitted at a reduced size) predicts on the
    ``seen`` ``[h, w]`` pixels, within the fit's own tolerance: a processor whose map depends on the size (a
    thumbnail that only shrinks, a crop of fixed pixels) fails this. ``black``, ``span`` ``[C, h, w]``: from the
    reduced probes (a processor's colour handling does not depend on the size)."""
    width, height = geometry.original_size
    h, w = seen.shape
    for length, scale, shift, along in (
        (width, geometry.scale_x, geometry.shift_x, 1),
        (height, geometry.scale_y, geometry.shift_y, 0),
    ):
        if length < 2:
            continue  # a side of one pixel carries no ramp
        ramp = np.round(np.linspace(0, 255, length)).astype(np.uint8)
        plane = np.broadcast_to(ramp[None, :] if along else ramp[:, None], (height, width))
        out = _run(preprocess, [plane])
        if out is None or out.shape[1:] != black.shape:
            return False
        source = ((out[0] - black) / torch.where(seen, span, 1.0)).mean(dim=0) * (length - 1)  # [h, w]
        predicted = (scale * torch.arange(w if along else h, dtype=torch.float64) + shift).clamp(0, length - 1)
        error = (source - (predicted[None, :] if along else predicted[:, None]))[seen].abs()
        if error.max() > max(2.0, 2 * scale, 1.5 * (length - 1) / 255):
            return False
    return True


Window = tuple[float, float]  # the original coordinates a probe ramp spans, from its 0 to its 255


def _probe(
    preprocess: Preprocess, size: tuple[int, int]
) -> tuple[Geometry, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The geometry at ``size``, with the black output and the white - black span ``[C, h, w]`` and the ``seen``
    mask ``[h, w]`` it was read with; ``None`` when the evidence does not establish one."""
    width, height = size
    whole = ((0.0, width - 1.0), (0.0, height - 1.0))
    planes = [np.zeros((height, width)), np.full((height, width), 255.0), *_ramps(size, whole)]
    out = _run(preprocess, planes)
    if out is None:
        return None
    black, white = out[0], out[1]  # each [C, h, w]
    span = white - black
    # Output pixels that depend on the image; padding (Donut) gives the same value for black and white.
    seen = (span.abs() > 1e-3 * float(span.abs().max())).all(dim=0)  # [h, w]
    if not seen.any() or not torch.equal(seen, seen.any(dim=1)[:, None] & seen.any(dim=0)[None, :]):
        return None  # nothing of the image, or not an axis-aligned rectangle of it
    coarse = _fit(out[2:], black, span, seen, whole)
    if coarse is None:
        return None
    # 8 bits over a whole side cannot place a crop of a long side to a pixel (300 px: 1.2 px a level); ramps over
    # just the part the output sees (plus a margin for the resampling kernel) can.
    windows = []
    for (slope, intercept), mask, length in zip(coarse, (seen.any(dim=0), seen.any(dim=1)), size, strict=True):
        positions = torch.nonzero(mask).squeeze(1)
        margin = 2 * slope + 2  # source pixels a downscaling kernel reaches beyond the outermost output centre
        low = max(0.0, slope * float(positions[0]) + intercept - margin)
        high = min(length - 1.0, slope * float(positions[-1]) + intercept + margin)
        windows.append((low, high) if high - low >= 1 else (0.0, length - 1.0))
    fine_out = _run(preprocess, _ramps(size, (windows[0], windows[1])))
    fine = _fit(fine_out, black, span, seen, (windows[0], windows[1])) if fine_out is not None else None
    if fine is None:
        return None
    (scale_x, shift_x), (scale_y, shift_y) = fine
    return Geometry(scale_x, shift_x, scale_y, shift_y, (width, height)), black, span, seen


def _ramps(size: tuple[int, int], windows: tuple[Window, Window]) -> list[np.ndarray]:
    """An x and a y ramp ``[H, W]``: 0 at ``window[0]`` of its axis, 255 at ``window[1]``, clamped outside."""
    width, height = size
    ramps = []
    for (low, high), length in zip(windows, size, strict=True):
        values = np.round(np.clip((np.arange(length) - low) / max(high - low, 1.0), 0, 1) * 255)
        ramps.append(values)
    return [np.broadcast_to(ramps[0][None, :], (height, width)), np.broadcast_to(ramps[1][:, None], (height, width))]


def _run(preprocess: Preprocess, planes: list[np.ndarray]) -> torch.Tensor | None:
    """``preprocess`` of grey images (each plane ``[H, W]`` in R, G and B) as float64 ``[N, C, h, w]``, or ``None``.

    Grey probes carry their ramp in every output channel whatever the processor does to the channel order
    (MobileViT's and PP-LCNet's RGB -> BGR) or their number (a grayscale model's luminance).
    """
    out = preprocess([Image.fromarray(np.repeat(p.astype(np.uint8)[..., None], 3, axis=2)) for p in planes])
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != len(planes):
        return None  # not one image-shaped tensor per image (e.g. patch sequences): no pixel grid to map
    return out.double()


def _fit(
    ramps: torch.Tensor, black: torch.Tensor, span: torch.Tensor, seen: torch.Tensor, windows: tuple[Window, Window]
) -> list[tuple[float, float]] | None:
    """``[(scale_x, shift_x), (scale_y, shift_y)]`` from the processed x and y ramps ``[2, C, h, w]``, or ``None``.

    ``black`` and ``span`` (white - black) ``[C, h, w]`` turn outputs back into ramp levels on the ``seen`` ``[h, w]``
    rectangle; ``windows`` are the ramps' spans in original coordinates.
    """
    rows, columns = seen.any(dim=1), seen.any(dim=0)
    fits = []
    for axis, (low, high) in enumerate(windows):
        positions = torch.nonzero(columns if axis == 0 else rows).squeeze(1).double()  # output pixel indices
        if high - low < 1:  # a side of one pixel: every output line that depends on the image shows it, spread evenly
            fits.append((1 / len(positions), (0.5 - float(positions[0])) / len(positions) - 0.5))
            continue
        level = ((ramps[axis] - black) / torch.where(seen, span, 1.0))[:, rows][:, :, columns]  # [C, h', w'] in [0, 1]
        if (level.amax(dim=0) - level.amin(dim=0)).max() > 0.02:
            return None  # the channels disagree: the processor mixes or transforms colours, not just positions
        source = low + level.mean(dim=0) * max(high - low, 1.0)  # the original coordinate seen at each output pixel
        profile = source.mean(dim=axis)  # x: average over rows -> [w']; y: average over columns -> [h']
        # Each ramp is constant along the other axis, and stays so through a resize or crop: not through a rotation.
        if (source - profile.unsqueeze(axis)).abs().max() > max(1.0, (high - low) / 255):
            return None
        level_width = (high - low) / 255
        inside = (profile > low + level_width / 2) & (profile < high - level_width / 2)  # not the clamped ends
        if inside.sum() < 2:
            return None
        slope, intercept = np.polyfit(positions[inside].numpy(), profile[inside].numpy(), 1)
        # An output pixel within its own footprint of an end reads a kernel cut off by the image border (or the
        # ramp's clamp): biased inwards. Refit without those when enough pixels remain.
        away = (profile > low + 0.5 + slope) & (profile < high - 0.5 - slope)
        if away.sum() >= 2:
            inside = away
            slope, intercept = np.polyfit(positions[inside].numpy(), profile[inside].numpy(), 1)
        residual = np.abs(slope * positions[inside].numpy() + intercept - profile[inside].numpy()).max()
        if residual > max(2.0, 2 * abs(slope), 1.5 * level_width) or slope <= 0:  # the coarse ramp's steps pass
            return None
        fits.append((float(slope), float(intercept)))
    return fits


def config_input_size(config: object | None) -> tuple[int, int] | None:
    """``(H, W)`` of the model input from ``config.image_size`` (an int or a pair; a composite model's
    ``vision_config``; a timm wrapper's ``pretrained_cfg["input_size"]``), or ``None`` when it gives none usable."""
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None)
    if size is None:
        pretrained = getattr(config, "pretrained_cfg", None)
        size = pretrained.get("input_size", [None])[1:] if isinstance(pretrained, dict) else None
    if isinstance(size, int):
        size = (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    return None


def check_pixel_values(pixel_values: object) -> torch.Tensor:
    """``pixel_values`` as ``[B, C, H, W]`` (a ``[C, H, W]`` one gets a batch axis), refused with
    :class:`ImageInputError` unless it is a finite floating-point tensor with 1, 3 or 4 channels (or empty)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ImageInputError(f"pixel_values must be a torch.Tensor [B, C, H, W], got {type(pixel_values).__name__}")
    if pixel_values.dim() == 3:
        pixel_values = pixel_values.unsqueeze(0)
    if pixel_values.dim() != 4 or (pixel_values.numel() and pixel_values.shape[1] not in (1, 3, 4)):
        raise ImageInputError(
            f"pixel_values has shape {list(pixel_values.shape)}; expected [B, C, H, W] (or [C, H, W]) with C = 1, 3 or 4"
        )
    if not pixel_values.is_floating_point():
        raise ImageInputError(f"pixel_values must be floating point (preprocessed), got {pixel_values.dtype}")
    if not torch.isfinite(pixel_values).all():
        raise ImageInputError("pixel_values contains NaN or inf; pass finite, preprocessed values")
    return pixel_values


def as_pixel_values(pixel_values: torch.Tensor) -> torch.Tensor:
    """Check that ``pixel_values`` is a non-empty floating ``[B, C, H, W]`` tensor and return it unchanged.

    Raises:
        MetricInputError: on another type, shape or dtype (the message says how to fix it).
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise MetricInputError(f"pixel_values must be a torch.Tensor [B, C, H, W]; got {type(pixel_values).__name__}.")
    if pixel_values.ndim != 4 or pixel_values.numel() == 0:
        raise MetricInputError(
            f"pixel_values must be a non-empty [B, C, H, W] tensor; got shape {list(pixel_values.shape)}. "
            "Add a batch dimension with pixel_values.unsqueeze(0) for a single image."
        )
    if not pixel_values.is_floating_point():
        raise MetricInputError(
            f"pixel_values must be floating point (normalised model inputs); got dtype {pixel_values.dtype}."
        )
    return pixel_values


def gaussian_blur(pixel_values: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Blur each channel with a normalised, separable Gaussian kernel and reflect padding.

    The 1-D kernel is ``g[i] = exp(-(i - kernel_size // 2)**2 / (2 * sigma**2)) / Z``
    for ``i = 0 .. kernel_size - 1`` (``Z`` makes it sum to 1), applied along the
    height and then the width. Borders use reflect padding (``torch.nn.functional.pad``
    mode ``"reflect"``: the edge pixel is not repeated).

    Args:
        pixel_values: ``[B, C, H, W]`` floating tensor.
        kernel_size: odd positive kernel width; ``kernel_size // 2`` must be smaller than ``H`` and ``W``.
        sigma: positive standard deviation of the Gaussian, in pixels.

    Returns:
        ``[B, C, H, W]`` blurred tensor with the dtype and device of ``pixel_values``.

    Raises:
        MetricInputError: on an invalid shape, kernel size or sigma.
    """
    pixel_values = as_pixel_values(pixel_values)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise MetricInputError(f"blur_kernel_size must be an odd positive integer; got {kernel_size!r}.")
    if not sigma > 0:
        raise MetricInputError(f"blur_sigma must be positive; got {sigma!r}.")
    batch, channels, height, width = pixel_values.shape
    radius = kernel_size // 2
    if radius >= min(height, width):
        raise MetricInputError(
            f"blur_kernel_size={kernel_size} is too large for {height}x{width} images: reflect padding needs "
            f"kernel_size // 2 < min(H, W). Pass blur_kernel_size <= {2 * min(height, width) - 1}."
        )
    offsets = torch.arange(kernel_size, dtype=torch.float64) - radius
    kernel = torch.exp(-(offsets**2) / (2.0 * float(sigma) ** 2))
    kernel = (kernel / kernel.sum()).to(dtype=pixel_values.dtype, device=pixel_values.device)
    planes = pixel_values.reshape(batch * channels, 1, height, width)
    padded = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, kernel_size, 1))
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, kernel_size))
    return blurred.reshape(batch, channels, height, width)
