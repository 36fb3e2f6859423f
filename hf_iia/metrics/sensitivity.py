"""Class sensitivity: how much a map changes when the explained class does (issue 20, part 5).

A map that answers "where is the shuttle?" must differ from the map of "jersey" on the same image. With the
explained class's maps ``M_t`` and the maps of a second class ``M_o`` on the same images
(:attr:`~hf_iia.metrics.inputs.MetricInputs.other_maps`; the benchmark's second class is each image's
lowest-probability class), the class sensitivity of image ``b`` is

    ``1 - r(M_t[b], M_o[b])``,

with ``r`` the Pearson correlation over the pixels. It lies in ``[0, 2]``: 0 when the two maps are the same up to a
positive affine change (min-max normalisation cannot tell them apart: the class made no difference), 1 when they are
uncorrelated, 2 when one is the other reversed. Higher is better. It is undefined (NaN) where either map is constant
(no correlation exists). Pearson's ``r`` is invariant to each map's offset and positive scale, so the value does not
depend on how the maps were normalised.
"""

from __future__ import annotations

import torch

from ..errors import MetricInputError
from .inputs import MetricInputs, as_map_tensor
from .registry import Metric, register_metric


def map_correlation(maps: torch.Tensor, other_maps: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the pixels of each pair of maps.

    Args:
        maps: ``[B, H, W]`` finite maps.
        other_maps: ``[B, H, W]`` finite maps of the same images.

    Returns:
        ``[B]`` float64 correlations in ``[-1, 1]``; NaN where either map of the pair is constant.

    Raises:
        MetricInputError: if the shapes differ or a map is not finite.
    """
    first = as_map_tensor(maps, "maps").to(torch.float64)
    second = as_map_tensor(other_maps, "other_maps").to(device=first.device, dtype=torch.float64)
    if second.shape != first.shape:
        raise MetricInputError(
            f"other_maps must have the shape of maps {list(first.shape)} (the same images, a second class each); got "
            f"{list(second.shape)}."
        )
    first, second = first.flatten(1), second.flatten(1)
    # Decided on the maps themselves, not on their centred pixels (a constant's mean can round off its value).
    constant = (first.amax(dim=1) == first.amin(dim=1)) | (second.amax(dim=1) == second.amin(dim=1))
    x = first - first.mean(dim=1, keepdim=True)
    y = second - second.mean(dim=1, keepdim=True)
    correlation = (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1))
    return correlation.clamp(-1.0, 1.0).masked_fill(constant, float("nan"))


def class_sensitivity(inputs: MetricInputs) -> torch.Tensor:
    """``[B]`` ``1 - r(maps, other_maps)`` per image (see the module docstring); NaN where a map is constant."""
    return 1.0 - map_correlation(inputs.maps, inputs.need_other_maps())


register_metric(
    Metric(
        "class_sensitivity",
        "class sens.",
        True,
        class_sensitivity,
        name="class sensitivity (1 - correlation with a second class's map)",
        needs_other_maps=True,
    )
)
