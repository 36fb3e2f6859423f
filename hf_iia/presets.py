"""IIA settings: the resolvers of the per-path options.

Each model family declares its own presets beside its adapter (``Family.presets`` in
:mod:`hf_iia.adapters`): ``default`` is the true nested integral (docs/ALGORITHM.md), with
settings chosen by the benchmark (docs/BENCHMARKS.md); ``reference`` is what the authors'
published code computes; ``iia3`` is the paper's best variant, the nested integral over the image
and the last two taps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .engine import RULES, Start
from .errors import IIAError, ImageInputError
from .family import Preset  # the record lives with the Family that holds it; imported from here too
from .imaging import gaussian_blur, process
from .integrands import INTEGRANDS

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # the blur of the deletion/insertion metrics (hf_iia.metrics.gaussian_blur)

STARTS = ("mean", "black", "blur")
"""The named starts of the image path (``start=``); ``"mean"`` is the constant 0 of ``baselines=``."""


def _per_path(option: str, value: Any, default: tuple, levels: int, cast: type, scalar: tuple[type, ...]) -> tuple:
    """``value`` of option ``option`` as one entry per path ``(image path, level 1, ..., level L)``.

    ``None`` gives ``default``; one value of a ``scalar`` type is used on every path; a sequence must
    have ``levels + 1`` entries, each converted with ``cast``.
    """
    if value is None:
        return default
    if isinstance(value, scalar):
        return (cast(value),) * (levels + 1)
    values = tuple(cast(v) for v in value)
    if len(values) != levels + 1:
        raise IIAError(f"{option}= needs {levels + 1} values (image path + {levels} level(s)), got {list(value)}")
    return values


def resolve_steps(steps: int | Sequence[int] | None, preset: Preset, levels: int) -> tuple[int, ...]:
    """Step counts ``(n0, n1, ..., nL)``: from ``steps`` (one int for every path, or one per path) or the preset.

    ``0`` is the single point ``a = 1`` (no integral on that path); a negative count is an :class:`IIAError`.
    """
    counts = _per_path("steps", steps, (preset.input_steps, *([preset.level_steps] * levels)), levels, int, (int,))
    if any(count < 0 for count in counts):
        raise IIAError(f"steps= must be non-negative (0 = the single point a = 1), got {list(counts)}")
    return counts


def resolve_baselines(baselines: float | Sequence[float] | None, levels: int) -> tuple[float, ...]:
    """Constant baselines ``(b0, b1, ..., bL)``: ``None`` = all zero (the reference code's), one float for every
    path, or one per path, image path first (``b0`` in normalised pixel space)."""
    return _per_path("baselines", baselines, (0.0,) * (levels + 1), levels, float, (int, float))


def resolve_start(name: str | None, processor: object | None) -> Start | None:
    """The image path's start called ``name`` (:data:`STARTS`) as a function of the images, ``None`` for ``"mean"``
    (or not given: the constant baseline of ``baselines=``).

    ``"black"`` is what the image processor makes of an all-black image of the model input's size (one call per
    input size, kept), so it follows the processor's own rescale, normalisation and channel order (EfficientNet's
    rescale offset, BGR); refused without a processor, and when the processor does not turn a black image of that
    size into one image of the input's shape. ``"blur"`` is each image blurred by a
    Gaussian of ``BLUR_KERNEL`` pixels and ``BLUR_SIGMA`` (in normalised space, which equals blurring the pixels:
    the kernel sums to 1 and the normalisation is affine per channel).
    """
    if name is None or name == "mean":
        return None
    if name == "black":
        return _black_start(processor)
    if name == "blur":
        return _blurred
    raise IIAError(f"unknown start {name!r}; choose one of {list(STARTS)}")


BLACK_CACHE_SIZES = 16  # model-input sizes whose processed black image a black start keeps


def _black_start(processor: object | None) -> Start:
    if processor is None:
        raise IIAError(
            "start='black' needs the image processor: the start is what it makes of a black image (its rescale, "
            "normalisation and channel order), and this explainer has none; pass processor=, or baselines= the "
            "normalised value of black"
        )
    processed: dict[tuple[int, ...], torch.Tensor] = {}  # (C, H, W) -> the processed black image [1, C, H, W]

    def start(pixel_values: torch.Tensor) -> torch.Tensor:
        shape = tuple(pixel_values.shape[1:])
        if shape not in processed:
            channels, height, width = shape
            black = process(processor, [Image.new("L" if channels == 1 else "RGB", (width, height))])
            if tuple(black.shape) != (1, *shape):
                raise ImageInputError(
                    f"start='black' is the processor's output for a black {width}x{height} image, but "
                    f"{type(processor).__name__} made {list(black.shape)} of it, not [1, {channels}, {height}, "
                    f"{width}] like pixel_values; pass baselines= the normalised value of black instead"
                )
            if len(processed) >= BLACK_CACHE_SIZES:
                processed.clear()
            processed[shape] = black
        return processed[shape].to(pixel_values.device, pixel_values.dtype).expand_as(pixel_values)

    return start


def _blurred(pixel_values: torch.Tensor) -> torch.Tensor:
    if min(pixel_values.shape[2:]) <= BLUR_KERNEL // 2:
        raise ImageInputError(
            f"start='blur' blurs with a {BLUR_KERNEL}-pixel Gaussian, which needs images larger than "
            f"{BLUR_KERNEL // 2}x{BLUR_KERNEL // 2}; got {pixel_values.shape[2]}x{pixel_values.shape[3]}"
        )
    return gaussian_blur(pixel_values, BLUR_KERNEL, BLUR_SIGMA)


def resolve_rule(name: str | None, preset: Preset) -> str:
    """The quadrature rule called ``name`` (``None`` = the preset's), one of :data:`hf_iia.engine.RULES`."""
    name = name or preset.rule
    if name not in RULES:
        raise IIAError(f"unknown rule {name!r}; choose one of {list(RULES)}")
    return name


def resolve_integrand(name: str | None, preset: Preset):
    """The integrand function called ``name`` (``None`` = the preset's)."""
    name = name or preset.integrand
    if name not in INTEGRANDS:
        raise IIAError(f"unknown integrand {name!r}; choose one of {sorted(INTEGRANDS)}")
    return INTEGRANDS[name]
