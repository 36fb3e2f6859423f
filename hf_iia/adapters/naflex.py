"""SigLIP2's NaFlex input: pre-patchified images, each on its own patch grid, explained with the ViT family.

Read from transformers' ``image_processing_siglip2.py`` and ``modeling_siglip2.py``. The processor resizes each image
(keeping its aspect ratio, bilinear) to ``(h * p, w * p)`` pixels with the most patches ``h * w <= max_num_patches``,
normalises it, and cuts it into ``p x p`` patches in row-major order (patch row, then column), each flattened as
``(p_row, p_column, channel)``; it pads the sequence with zero rows to ``max_num_patches`` and returns
``pixel_values [B, P, C * p * p]``, ``pixel_attention_mask [B, P]`` (1 on the ``h * w`` real patches, which come
first) and ``spatial_shapes [B, 2]`` (``(h, w)``). The model masks the padding as keys in every block's attention and
in its pooling (the classifier's masked mean, the zero-shot tower's attention-pooling head), so no padding token
reaches the output, and the real tokens' attention block ``[:h*w, :h*w]`` is closed: the rollout over it is exact.

The image path scales the patch rows (zero padding stays zero for the default zero baseline; every padding row is
reset to the processor's zero after the path, so a nonzero baseline never reaches it either, though the model would
ignore it). The pooling reads per-image masks after the blocks, whose rows the engine would otherwise repeat
mid-network, so every integration point runs the whole model from the input (:attr:`Adapter.rows_from_input`).
Each image's map is its rollout on its own ``h x w`` grid, upsampled to its own ``(h * p, w * p)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from ..errors import AttentionNotReachableError, ImageInputError
from ..fusions import Rollout, gradient_rollout
from .base import LayerSpec, TapRun, config_of, extract_logits
from .guard import Installation
from .registry import register_adapter
from .vit import ProbeViTAdapter, Readout, ViTAdapter, _vision_config

NAFLEX_INPUTS = ("pixel_attention_mask", "spatial_shapes")
"""The processor outputs a NaFlex model reads besides ``pixel_values``."""

# The bound batch's NaFlex inputs, and the image of each row of the current engine run (None: rows are the batch's).
_INPUTS: ContextVar[dict[str, torch.Tensor] | None] = ContextVar("hf_iia_naflex_inputs", default=None)
_ROWS: ContextVar[torch.Tensor | None] = ContextVar("hf_iia_naflex_rows", default=None)


def patches_to_image(patches: torch.Tensor, shape: Sequence[int], patch_size: int) -> torch.Tensor:
    """One image's model input as an image: ``patches`` ``[P, C * p * p]`` (its first ``h * w`` rows) ->
    ``[C, h * p, w * p]``, the inverse of the processor's ``convert_image_to_patches``."""
    height, width = int(shape[0]), int(shape[1])
    grid = patches[: height * width].reshape(height, width, patch_size, patch_size, -1)
    return grid.permute(4, 0, 2, 1, 3).reshape(-1, height * patch_size, width * patch_size)


class NaFlexViTAdapter(ViTAdapter):
    """SigLIP2 (``Siglip2ForImageClassification``): a :class:`ViTAdapter` over NaFlex inputs, whose head mean-pools
    each image's real tokens (``pixel_attention_mask``)."""

    rows_from_input = True
    input_names = NAFLEX_INPUTS

    def token_grid(self) -> None:
        """None: each image of a NaFlex batch has its own grid and padding rows, so a CAM's channel weights (means
        over one grid) are not established."""
        return None

    def with_inputs(self, inputs: Mapping[str, torch.Tensor]) -> contextlib.AbstractContextManager[object]:
        return _bound({name: inputs[name] for name in NAFLEX_INPUTS if name in inputs})

    def _inputs(self, batch: int | None) -> dict[str, torch.Tensor]:
        """The bound inputs of a batch of ``batch`` images (``None``: any), or :class:`ImageInputError` naming the
        fix."""
        inputs = _INPUTS.get()
        if inputs is None or set(inputs) != set(NAFLEX_INPUTS):
            raise ImageInputError(
                f"{type(self.model).__name__} takes NaFlex inputs: pixel_values [B, patches, C*p*p] with the "
                "processor's pixel_attention_mask and spatial_shapes, which a pixel_values tensor alone does not "
                "carry; pass the images (explainer(images)) so that the processor makes all three, or give the "
                "processor's masks and shapes with the tensor: explainer(pixel_values, inputs={...})"
            )
        shapes, mask = inputs["spatial_shapes"], inputs["pixel_attention_mask"]
        if batch is not None and (shapes.shape != (batch, 2) or mask.shape[0] != batch):
            raise ImageInputError(
                f"spatial_shapes {list(shapes.shape)} and pixel_attention_mask {list(mask.shape)} do not match "
                f"{batch} images; pass the processor's outputs for these images"
            )
        return inputs

    def check_input(self, pixel_values: torch.Tensor) -> None:
        """``[B, P, C * p * p]`` patches, with bound masks whose real patches form each image's ``h x w`` grid."""
        width = int(_vision_config(self.model).num_channels) * self.patch_size**2
        if pixel_values.dim() != 3 or pixel_values.shape[2] != width:
            raise ImageInputError(
                f"pixel_values has shape {list(pixel_values.shape)}; {type(self.model).__name__} takes NaFlex patches "
                f"[B, patches, {width}] (C * patch_size**2); preprocess images with the model's image processor"
            )
        inputs = self._inputs(pixel_values.shape[0])
        mask, shapes = inputs["pixel_attention_mask"], inputs["spatial_shapes"]
        first = torch.arange(mask.shape[1], device=mask.device) < shapes.prod(dim=1, keepdim=True).to(mask.device)
        if mask.shape[1] != pixel_values.shape[1] or not torch.equal(mask.bool(), first):
            raise ImageInputError(
                "pixel_attention_mask does not mark the first h*w patches of each image's spatial_shapes (h, w) as "
                "its real patches; pass the processor's outputs unchanged"
            )

    def installed(self, run: TapRun, active: Sequence[str]) -> Installation:
        def setup(installation: Installation) -> None:
            token = _ROWS.set(run.row_images())
            installation.undo(lambda: _ROWS.reset(token))
            self._install(installation, run, active)

        return Installation(setup)

    def row_inputs(self, points: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``points`` ``[N, P, D]`` with padding rows reset to zero, and each row's mask and spatial shape."""
        rows = _ROWS.get()
        inputs = self._inputs(points.shape[0] if rows is None else None)
        index = torch.arange(points.shape[0]) if rows is None else rows
        selected = {name: tensor[index.to(tensor.device)].to(points.device) for name, tensor in inputs.items()}
        mask = selected["pixel_attention_mask"]
        return points * mask.unsqueeze(-1).to(points.dtype), selected

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        points, inputs = self.row_inputs(pixel_values)
        return extract_logits(self.model(pixel_values=points, **inputs))

    def image_sizes(self) -> list[tuple[int, int]] | None:
        shapes = _INPUTS.get()
        if shapes is None:
            return None
        return [(int(h) * self.patch_size, int(w) * self.patch_size) for h, w in shapes["spatial_shapes"].tolist()]

    def rollout_map(
        self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int], rollout: Rollout
    ) -> torch.Tensor:
        """One image's integrals ``{tap: [1, heads, P, P]}`` -> its map ``[1, h, w]`` on its own grid: the rollout of
        the real tokens' block, read with :meth:`readout_weights`."""
        shapes = self._inputs(1)["spatial_shapes"]
        height, width = (int(v) for v in shapes[0].tolist())
        tokens = height * width
        real = {tap: integral[..., :tokens, :tokens] for tap, integral in integrals.items()}
        blocks = [real[tap] for tap in self._taps]
        weights = self.readout_weights(real, tokens).to(blocks[0].device, blocks[0].dtype)
        relevance = rollout(blocks, weights, 0)
        return relevance.reshape(1, height, width)

    def readout_weights(self, integrals: dict[str, torch.Tensor], tokens: int) -> torch.Tensor:
        """``[tokens]`` row weights: the head's masked mean over the real tokens."""
        return self.readout.weights(tokens)

    def model_input_image(self, pixel_values: torch.Tensor, index: int) -> torch.Tensor:
        shape = self._inputs(pixel_values.shape[0])["spatial_shapes"][index].tolist()
        return patches_to_image(pixel_values[index], shape, self.patch_size)

    def to_map(self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        return self.rollout_map(integrals, input_size, gradient_rollout)


class NaFlexProbeViTAdapter(NaFlexViTAdapter, ProbeViTAdapter):
    """SigLIP2's vision tower in a zero-shot ``Siglip2Model`` (:class:`hf_iia.zeroshot.ZeroShotClassifier`): NaFlex
    inputs read by the attention-pooling head, whose masked attention row (observed at ``PROBE_TAP``, as
    :class:`ProbeViTAdapter` observes SigLIP's) weighs each image's rollout rows over its real tokens."""

    def readout_weights(self, integrals: dict[str, torch.Tensor], tokens: int) -> torch.Tensor:
        """``[tokens]``: the head's integrated attention row over the real tokens (head mean, negative parts dropped,
        normalised to sum 1); the uniform mean where that row is all zero."""
        row = integrals[self.PROBE_TAP].mean(dim=1)[0, 0, :tokens].clamp_min(0)
        total = row.sum()
        return row / total if total > 0 else super().readout_weights(integrals, tokens).to(row.device, row.dtype)


@contextlib.contextmanager
def _bound(inputs: dict[str, torch.Tensor]) -> Iterator[None]:
    token = _INPUTS.set(inputs or None)
    try:
        yield
    finally:
        _INPUTS.reset(token)


def naflex_adapter(model: nn.Module, layer: LayerSpec) -> NaFlexViTAdapter:
    """The adapter of a ``Siglip2ForImageClassification`` (its tower ``vision_model``, read by the classifier's
    masked mean over every real token: no CLS) or of a zero-shot ``Siglip2Model``'s tower (``ZeroShotClassifier``'s
    ``tower``, read by its attention-pooling head): blocks at ``encoder.layers`` of the tower."""
    model_any: Any = model
    tower: Any = getattr(model_any, "tower", None) or getattr(model_any, "vision_model", None)
    blocks = getattr(getattr(tower, "encoder", None), "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise AttentionNotReachableError(
            f"cannot find the transformer blocks of {type(model).__name__} at vision_model.encoder.layers"
        )
    common: dict[str, Any] = dict(
        blocks=list(blocks),
        readout=Readout(prefix=0, rows=(), pooled="all"),
        patch_size=_vision_config(model).patch_size,
        image_size=int(config_of(tower).num_patches),
    )
    if config_of(model).model_type == "siglip2_vision_model":
        return NaFlexProbeViTAdapter(model, layer, probe=tower.head.attention, **common)
    return NaFlexViTAdapter(model, layer, **common)


register_adapter("siglip2", "siglip2_vision_model")(naflex_adapter)
