"""What every metric takes, and the checks of it: the one module the metric modules share.

* ``forward`` (:data:`Forward`): any callable mapping pixel values ``[N, C, H, W]`` to logits
  ``[N, num_classes]``, or to an object with a ``.logits`` attribute holding them (e.g. a Hugging Face
  ``...ForImageClassification`` model); it receives tensors on the device and with the dtype of
  ``pixel_values``. It should be deterministic (model in ``eval()`` mode).
* ``pixel_values``: ``[B, C, H, W]`` floating model inputs, already normalised (:func:`as_pixel_values`).
* ``heatmaps`` / maps: ``[B, H, W]`` finite saliency maps at the input resolution, torch or numpy
  (:func:`as_map_tensor`, :func:`maps_for`).
* ``targets``: ``[B]`` non-negative integer classes (:func:`as_targets`).
* ``masks``: ``[B, H, W]`` bool or 0/1 object masks, each with an object pixel (:func:`maps_and_masks`).
* scores: the target's softmax probability or 0/1 top-1 correctness of a forward output (:data:`Score`,
  :func:`target_scores`, :func:`batched_scores`).
* normalisation: the processor's per-channel ``image_mean`` / ``image_std`` (``x_norm = (x - mean) / std``
  with ``x`` in ``[0, 1]``), needed by metrics that act on the unnormalised image (:func:`normalisation`).

:class:`MetricInputs` bundles them for the registered metrics (:mod:`hf_iia.metrics.registry`). Every
check raises :class:`~hf_iia.errors.MetricInputError` with a message that says how to fix the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from ..errors import MetricInputError
from ..imaging import as_pixel_values

Forward = Callable[[torch.Tensor], Any]
"""Maps pixel values ``[N, C, H, W]`` to logits ``[N, num_classes]`` (or an object with ``.logits``)."""

Score = Literal["probability", "accuracy"]
"""How a forward output scores its target: softmax probability, or 1.0 / 0.0 for a correct / wrong arg-max."""

_Shared = TypeVar("_Shared")  # what a shared computation returns

__all__ = [
    "Forward",
    "MetricInputs",
    "Score",
    "as_fractions",
    "as_map_tensor",
    "as_pixel_values",
    "as_targets",
    "batched_scores",
    "maps_and_masks",
    "maps_for",
    "normalisation",
    "target_scores",
]


def as_map_tensor(maps: torch.Tensor | np.ndarray, name: str = "heatmaps") -> torch.Tensor:
    """Validate a batch of 2-D maps and return it as a floating-point tensor.

    Args:
        maps: ``[B, H, W]`` torch tensor or numpy array of finite real values.
        name: argument name used in error messages.

    Returns:
        ``[B, H, W]`` tensor; floating inputs keep their dtype, other dtypes become float64.

    Raises:
        MetricInputError: if ``maps`` is not ``[B, H, W]``, is empty or holds NaN/inf values.
    """
    if not isinstance(maps, (torch.Tensor, np.ndarray)):
        raise MetricInputError(
            f"{name} must be a torch.Tensor or numpy.ndarray of shape [B, H, W]; got {type(maps).__name__}."
        )
    tensor = torch.as_tensor(maps)
    if tensor.ndim != 3:
        raise MetricInputError(
            f"{name} must have shape [B, H, W]; got shape {tuple(tensor.shape)}. "
            "Squeeze channel dimensions or add a batch dimension first."
        )
    if tensor.numel() == 0:
        raise MetricInputError(f"{name} is empty (shape {tuple(tensor.shape)}); pass at least one non-empty map.")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise MetricInputError(f"{name} contains NaN or infinite values; replace them (e.g. torch.nan_to_num) first.")
    return tensor


def maps_for(heatmaps: torch.Tensor | np.ndarray, pixel_values: torch.Tensor) -> torch.Tensor:
    """Validate ``heatmaps`` ``[B, H, W]`` against ``pixel_values`` ``[B, C, H, W]``; float64 on their device."""
    maps = as_map_tensor(heatmaps).to(device=pixel_values.device, dtype=torch.float64)
    expected = (pixel_values.shape[0], *pixel_values.shape[2:])
    if maps.shape != expected:
        raise MetricInputError(
            f"heatmaps must have shape [B, H, W] = {list(expected)} to match pixel_values "
            f"{list(pixel_values.shape)}; got {list(maps.shape)}. Resize the maps to the input resolution first."
        )
    return maps


def maps_and_masks(
    heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate inputs; return maps ``[B, H, W]`` float64 and masks ``[B, H, W]`` bool on the maps' device.

    Raises:
        MetricInputError: on mismatched shapes, non-binary masks or a mask without an object pixel.
    """
    maps = as_map_tensor(heatmaps).to(torch.float64)
    if not isinstance(masks, (torch.Tensor, np.ndarray)):
        raise MetricInputError(f"masks must be a torch.Tensor or numpy.ndarray [B, H, W]; got {type(masks).__name__}.")
    labels = torch.as_tensor(masks, device=maps.device)
    if labels.shape != maps.shape:
        raise MetricInputError(
            f"masks must have the shape of heatmaps {list(maps.shape)}; got {list(labels.shape)}. "
            "Resize the masks (nearest neighbour) or the maps to a common resolution first."
        )
    if labels.dtype != torch.bool:
        if ((labels != 0) & (labels != 1)).any():
            raise MetricInputError("masks must be boolean or contain only the values 0 and 1.")
        labels = labels != 0
    empty = ~labels.flatten(1).any(dim=1)
    if empty.any():
        raise MetricInputError(
            f"masks {empty.nonzero().flatten().tolist()} contain no object pixel; the metric is undefined "
            "for empty masks, drop those images."
        )
    return maps, labels


def as_targets(targets: torch.Tensor | np.ndarray | Sequence[int], num_images: int) -> torch.Tensor:
    """Return ``targets`` as an int64 ``[num_images]`` tensor of non-negative class indices."""
    tensor = torch.as_tensor(targets)
    if tensor.shape != (num_images,):
        raise MetricInputError(
            f"targets must have shape [B] = [{num_images}] (one class index per image); got {list(tensor.shape)}."
        )
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise MetricInputError(f"targets must be integer class indices; got dtype {tensor.dtype}.")
    if (tensor < 0).any():
        raise MetricInputError(f"targets must be non-negative class indices; got {tensor.tolist()}.")
    return tensor.to(torch.long)


def as_fractions(fractions: Sequence[float]) -> torch.Tensor:
    """Validate fractions of pixels (strictly increasing, in ``[0, 1]``, at least 2); a float64 ``[F]`` tensor."""
    tensor = torch.as_tensor(fractions, dtype=torch.float64)
    if tensor.ndim != 1 or tensor.numel() < 2:
        raise MetricInputError(f"fractions must be a 1-D sequence of at least 2 values; got {fractions!r}.")
    if (tensor < 0).any() or (tensor > 1).any() or (tensor.diff() <= 0).any():
        raise MetricInputError(f"fractions must be strictly increasing values in [0, 1]; got {tensor.tolist()}.")
    return tensor


def normalisation(image_mean: Sequence[float], image_std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``image_mean`` and ``image_std`` as float64 ``[C]`` tensors, validated (finite, std non-zero)."""
    mean = torch.as_tensor(image_mean, dtype=torch.float64)
    std = torch.as_tensor(image_std, dtype=torch.float64)
    if mean.ndim != 1 or mean.shape != std.shape or mean.numel() == 0:
        raise MetricInputError(
            f"image_mean and image_std must be 1-D sequences of one value per channel; got {list(mean.shape)} and "
            f"{list(std.shape)}."
        )
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std == 0).any():
        raise MetricInputError(f"image_std must be finite and non-zero (and image_mean finite); got {std.tolist()}.")
    return mean, std


def target_scores(output: Any, targets: torch.Tensor, score: Score) -> torch.Tensor:
    """Score ``[N]`` float64 of ``targets`` ``[N]`` given a forward output holding logits ``[N, K]``."""
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise MetricInputError(
            "forward must return a logits tensor [N, num_classes] or an object with a .logits tensor; "
            f"got {type(output).__name__}."
        )
    if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise MetricInputError(
            f"forward returned logits of shape {list(logits.shape)} for {targets.shape[0]} images; "
            f"expected [{targets.shape[0]}, num_classes]."
        )
    if int(targets.max()) >= logits.shape[1]:
        raise MetricInputError(
            f"targets contain class {int(targets.max())} but the model only has {logits.shape[1]} classes."
        )
    if score == "accuracy":
        return (logits.argmax(dim=1) == targets).to(torch.float64)
    probabilities = logits.to(torch.float64).softmax(dim=1)
    return probabilities.gather(1, targets.unsqueeze(1)).squeeze(1)


def batched_scores(
    forward: Forward, pixel_values: torch.Tensor, targets: torch.Tensor, batch_size: int, score: Score = "probability"
) -> torch.Tensor:
    """``[N]`` float64 score (softmax probability or 0/1 accuracy) of ``targets`` ``[N]`` on ``pixel_values``
    ``[N, C, H, W]``, ``batch_size`` images per gradient-free forward pass."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MetricInputError(f"batch_size must be a positive integer; got {batch_size!r}.")
    with torch.no_grad():
        return torch.cat(
            [
                target_scores(forward(images), labels, score)
                for images, labels in zip(pixel_values.split(batch_size), targets.split(batch_size), strict=True)
            ]
        )


@dataclass
class MetricInputs:
    """One batch of ``B`` maps and what they explain: the argument of every registered metric.

    The optional fields are what some metrics need (:class:`~hf_iia.metrics.registry.Metric` says which);
    a metric whose needs are missing is not computed (:meth:`~hf_iia.metrics.registry.Metric.applies_to`).

    Attributes:
        maps: ``[B, H, W]`` saliency maps at the input resolution.
        targets: ``[B]`` int64 explained classes.
        pixel_values: ``[B, C, H, W]`` normalised model inputs, or ``None``.
        forward: the model (:data:`Forward`), or ``None``.
        masks: ``[B, H, W]`` bool object masks, or ``None``.
        image_mean: ``[C]`` the processor's normalisation mean, or ``None``.
        image_std: ``[C]`` the processor's normalisation std, or ``None``.
        perturbation_steps: steps of the deletion / insertion curves.
        batch_size: images per forward pass.
        pointing_tolerance: the pointing game's hit radius in pixels.
        other_maps: ``[B, H, W]`` maps of the same images for a second class each (class sensitivity,
            :mod:`~hf_iia.metrics.sensitivity`), or ``None``.
    """

    maps: torch.Tensor
    targets: torch.Tensor
    pixel_values: torch.Tensor | None = None
    forward: Forward | None = None
    masks: torch.Tensor | None = None
    image_mean: Sequence[float] | None = None
    image_std: Sequence[float] | None = None
    perturbation_steps: int = 100
    batch_size: int = 64
    pointing_tolerance: int = 0
    other_maps: torch.Tensor | None = None
    _shared: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def shared(self, name: str, compute: Callable[[], _Shared]) -> _Shared:
        """``compute()``, run once per inputs and ``name``: metrics read from one result (ADP and PIC from one
        confidence change, the four segmentation scores from one binarisation) share it."""
        if name not in self._shared:
            self._shared[name] = compute()
        return self._shared[name]

    def rows(self, keep: torch.Tensor) -> MetricInputs:
        """The inputs of the images where ``keep`` ``[B]`` (bool) is true, settings unchanged, nothing shared."""

        def pick(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[keep.to(value.device)]

        return replace(
            self,
            maps=self.maps[keep.to(self.maps.device)],
            targets=self.targets[keep.to(self.targets.device)],
            pixel_values=pick(self.pixel_values),
            masks=pick(self.masks),
            other_maps=pick(self.other_maps),
            _shared={},
        )

    def need_forward(self) -> tuple[Forward, torch.Tensor]:
        """``(forward, pixel_values)``; a :class:`MetricInputError` when either is missing."""
        if self.forward is None or self.pixel_values is None:
            raise MetricInputError("this metric runs the model: pass forward= and pixel_values= in MetricInputs.")
        return self.forward, self.pixel_values

    def need_masks(self) -> torch.Tensor:
        """``masks`` ``[B, H, W]``; a :class:`MetricInputError` when missing."""
        if self.masks is None:
            raise MetricInputError("this metric compares the maps with object masks: pass masks= in MetricInputs.")
        return self.masks

    def call_with_normalisation(self, function: Callable[..., _Shared], **options: Any) -> _Shared:
        """``function(forward, pixel_values, maps, targets, image_mean=, image_std=, batch_size=, **options)``: the
        call shared by the metrics that act on the unnormalised image (:mod:`~hf_iia.metrics.protocol`,
        :mod:`~hf_iia.metrics.information`)."""
        forward, pixel_values = self.need_forward()
        mean, std = self.need_normalisation()
        return function(
            forward,
            pixel_values,
            self.maps,
            self.targets,
            image_mean=mean,
            image_std=std,
            batch_size=self.batch_size,
            **options,
        )

    def need_other_maps(self) -> torch.Tensor:
        """``other_maps`` ``[B, H, W]``; a :class:`MetricInputError` when missing."""
        if self.other_maps is None:
            raise MetricInputError(
                "this metric compares each map with the map of a second class of the same image: pass other_maps= "
                "in MetricInputs (e.g. the explainer's maps for target= the lowest-probability class)."
            )
        return self.other_maps

    def need_normalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        """``(image_mean, image_std)``, each ``[C]``; a :class:`MetricInputError` when missing."""
        if self.image_mean is None or self.image_std is None:
            raise MetricInputError(
                "this metric acts on the unnormalised image: pass the processor's image_mean= and image_std= in "
                "MetricInputs."
            )
        return self.image_mean, self.image_std
