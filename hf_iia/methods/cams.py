"""The CAM methods on feature maps, each at ``a = 1`` of the explained layer (``layer=``): Grad-CAM (Selvaraju et
al. 2017), Grad-CAM++ (Chattopadhay et al. 2018), LayerCAM (Jiang et al. 2021) and Score-CAM (Wang et al. 2020).
On attention models they read the patch tokens entering a block as a feature map (the token grid)."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapters import Adapter, AttentionAdapter, FeatureMapAdapter
from ..engine import EngineTargets, IntegralSpec, IntegrationResult, Start, target_scalars
from ..fusions import min_max
from ..integrands import Integrand, attention, gradcam, gradcam_plus_plus, layercam
from .base import Method, MethodOptions, at_input, input_size, register_method


class CAM(Method):
    """A CAM: :attr:`integrand` at ``a = 1`` of one feature-map layer; channel sum, ReLU (positive evidence). On an
    attention model the feature map is the token grid entering the block ``layer=`` names (default the last):
    :meth:`~hf_iia.adapters.AttentionAdapter.token_grid`."""

    requires = FeatureMapAdapter
    options = frozenset({"layer"})
    integrand: ClassVar[Integrand]

    def applies_to(self, adapter: Adapter) -> bool:
        return super().applies_to(adapter) or (
            isinstance(adapter, AttentionAdapter) and adapter.token_grid() is not None
        )

    def adapter(self, model: nn.Module, options: MethodOptions) -> Adapter:
        adapter = super().adapter(model, options)
        grid = adapter.token_grid() if isinstance(adapter, AttentionAdapter) else None
        return adapter if grid is None else grid

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        return at_input(adapter, type(self).integrand)

    def fuse(self, adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        return super().fuse(adapter, integrals, pixel_values).clamp_min(0)


@register_method("gradcam")
class GradCAM(CAM):
    """:func:`~hf_iia.integrands.gradcam`: the feature map weighed by its spatially averaged gradient."""

    integrand = gradcam


@register_method("gradcam++")
class GradCAMPlusPlus(CAM):
    """:func:`~hf_iia.integrands.gradcam_plus_plus`: Grad-CAM++'s weights."""

    integrand = gradcam_plus_plus


@register_method("layercam")
class LayerCAM(CAM):
    """:func:`~hf_iia.integrands.layercam`: the feature map weighed by its positive gradient, element-wise."""

    integrand = layercam


@register_method("scorecam")
class ScoreCAM(CAM):
    """The feature map at ``a = 1``, each channel weighed by the target logit of the input masked by it (softmax
    over channels)."""

    integrand = attention

    @torch.no_grad()
    def run(
        self,
        adapter: Adapter,
        pixel_values: torch.Tensor,
        targets: EngineTargets,
        spec: IntegralSpec,
        *,
        internal_batch_size: int = 64,
        progress: bool = True,
    ) -> IntegrationResult:
        """Score-CAM (Wang et al. 2020, Algorithm 1): the feature map ``A`` ``[B, K, h, w]`` (the engine's integral
        of :func:`~hf_iia.integrands.attention` at ``a = 1``, which also resolves the targets) becomes ``w_k * A_k``.

        Each channel ``A_k``, upsampled to the input (bilinear, corners aligned, as pytorch-grad-cam) and min-max
        normalised to ``[0, 1]`` (a constant channel: all zero), masks the image; the target logits of the ``K``
        masked images, softmaxed over the channels, are the weights ``w_k``. The ``B * K`` masked images run
        through ``adapter.logits`` in chunks of ``internal_batch_size``; with several targets per image (``targets``
        ``[B, T]``) the same masked forward passes give every target's weights. (The authors' released code instead
        weighs by each masked image's softmax probability of the target, with no softmax over channels; Algorithm 1
        of the paper and pytorch-grad-cam, followed here, take logits. The baseline score ``f(x_b)`` of the paper's
        definition cancels in the softmax over channels.)
        """
        result = super().run(
            adapter, pixel_values, targets, spec, internal_batch_size=internal_batch_size, progress=progress
        )
        (tap,) = result.integrals
        several = result.targets.dim() == 2
        # [B, K, h, w] float32: the feature map, the same for every target (the integrand reads no gradient)
        activations = result.integrals[tap][:, 0] if several else result.integrals[tap]
        batch, channels = activations.shape[:2]
        rows = activations.flatten(0, 1).unsqueeze(1)  # [B * K, 1, h, w]: one mask per (image, channel)
        explained = result.targets.view(batch, -1).to(pixel_values.device).repeat_interleave(channels, dim=0)
        scores = torch.empty(batch * channels, explained.shape[1], device=activations.device)
        starts = range(0, batch * channels, max(1, internal_batch_size))
        for start in tqdm(starts, desc="Score-CAM", unit="chunk", delay=1.0, disable=not progress or len(starts) < 2):
            chunk = slice(start, start + max(1, internal_batch_size))
            masks = nn.functional.interpolate(
                rows[chunk], size=input_size(pixel_values), mode="bilinear", align_corners=True
            )
            masks = min_max(masks)
            index = torch.arange(start, start + masks.shape[0]) // channels
            images = pixel_values[index] * masks.to(pixel_values.dtype)
            logits = adapter.logits(images).float()
            scores[chunk] = target_scalars(
                logits, explained[chunk] if isinstance(targets, torch.Tensor) else targets, spec.contrast
            )
        weights = scores.view(batch, channels, -1).softmax(dim=1).permute(0, 2, 1)  # [B, T, K]
        weighted = weights[:, :, :, None, None] * activations.unsqueeze(1)  # [B, T, K, h, w]
        return replace(result, integrals={tap: weighted if several else weighted[:, 0]})
