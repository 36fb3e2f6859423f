"""``Explanation``: one image's map with the class it explains, its score, and how to draw it on the image."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .errors import GeometryError
from .fusions import min_max
from .imaging import Geometry
from .viz import overlay as draw_overlay


@dataclass
class Explanation:
    """One image's explanation.

    Attributes:
        heatmap: ``[H, W]`` float32 in ``[0, 1]`` at the model's input resolution.
        target: the explained class index (the top-1 by default: the largest logit; a one-logit model's only
            class, 0); ``-1`` for a callable target (a custom scalar of the logits).
        label: its ``id2label`` name (``None`` if the model has no labels); for a callable target, the callable's
            ``__name__`` (``"<lambda>"`` for a lambda).
        score: the model's score of ``target`` on the image, as transformers' image-classification pipeline
            reports it: ``score_function`` applied to the logits; for a callable target, its value on the image's
            logits (``score_function`` ``"none"``).
        image: the original RGB image (``None`` when the input was a pixel_values tensor).
        geometry: how the processor mapped ``image`` onto the model input (``None`` if it could not be established:
            then :meth:`overlay` draws on the model input and says why in :attr:`overlay_note`).
        pixel_values: ``[C, H, W]`` the model input that was explained.
        score_function: how ``score`` came from the logits (:func:`hf_iia.scores.score_function`): ``"softmax"``
            (single-label heads), ``"sigmoid"`` (multi-label and one-logit heads) or ``"none"`` (regression: the
            logit).
        zero_level: for a signed method (IG, AttnLRP: :attr:`hf_iia.methods.Method.signed`), the value in
            ``heatmap`` where the raw map is 0 (outside ``[0, 1]`` when the raw map has one sign); ``None`` for the
            unsigned methods, whose maps are read min-max normalised.
    """

    heatmap: np.ndarray
    target: int
    label: str | None
    score: float
    image: Image.Image | None = None
    geometry: Geometry | None = None
    pixel_values: torch.Tensor | None = None
    score_function: str = "softmax"
    zero_level: float | None = None

    @property
    def overlay_note(self) -> str | None:
        """Why :meth:`overlay` draws on the model input instead of the original image; ``None`` when it does not."""
        if self.image is None or self.geometry is not None:
            return None
        return (
            f"the image processor's resize/crop/pad of this {self.image.width}x{self.image.height} image could not be "
            "established from its outputs (hf_iia.imaging.probe_geometry), so the map is drawn on the model input "
            "(the processed image) rather than stretched over the photo"
        )

    def heatmap_on_image(self) -> np.ndarray:
        """The map resampled onto the original image, ``[H0, W0]``; NaN where the model input did not see it.

        Without an image (a ``pixel_values`` input) this is :attr:`heatmap`. Raises :class:`GeometryError` when the
        processor's geometry is unknown (see :attr:`overlay_note`): a stretched map would point at the wrong pixels.
        """
        if self.image is None:
            return self.heatmap
        if self.geometry is None:
            raise GeometryError(
                f"{self.overlay_note}; use explanation.heatmap with explanation.pixel_values (both at the model "
                "input's resolution), or explanation.overlay(), which draws on the model input"
            )
        return self.geometry.to_original(self.heatmap)

    def canvas(self) -> tuple[Image.Image, np.ndarray]:
        """What the map is drawn on: ``(image, map on it [H, W])``. The original image with
        :meth:`heatmap_on_image` when the processor's geometry is known; else the model input (min-max scaled
        ``pixel_values``, its first three channels in the processor's order) with :attr:`heatmap` as it is, and
        :attr:`overlay_note` says why."""
        if self.image is not None and self.geometry is not None:
            return self.image, self.heatmap_on_image()
        assert self.pixel_values is not None
        pixel_values = self.pixel_values.float()
        view = min_max(pixel_values.reshape(1, -1)).reshape(pixel_values.shape)  # one range over every channel
        base = Image.fromarray((view.permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., :3].squeeze())
        return base.convert("RGB"), self.heatmap

    def overlay(self, *, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
        """The map over the original image (resize/crop undone), as a PIL image.

        Over the model input instead (see :meth:`canvas`) when there is no original image, or when the
        processor's geometry is unknown: then with a ``UserWarning`` giving :attr:`overlay_note`.
        """
        if self.overlay_note is not None:
            warnings.warn(self.overlay_note, UserWarning, stacklevel=2)
        image, heatmap = self.canvas()
        return draw_overlay(image, heatmap, alpha=alpha, colormap=colormap)
