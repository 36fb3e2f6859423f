"""LeGrad (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via Feature Formation
Sensitivity"): every block's sensitivity of its own prediction to its attention.

For every block ``l``, the intermediate prediction ``s_l`` is the model's head (final norm, token readout,
classifier) applied to block ``l``'s output, read as the head reads the last block's
(:meth:`~hf_iia.adapters.AttentionAdapter.block_predictions`). Its gradient with respect to block ``l``'s attention
probabilities ``A_l [B, heads, T, T]`` is rectified and averaged over heads and query rows, which leaves one value
per key token; the patch tokens' values, averaged over every block (the paper aggregates the signal over all
layers; the authors' OpenCLIP code starts at the second-to-last block by default) and reshaped to the patch grid,
form the map, min-max normalised by the explainer.

Cost: one forward and one backward pass per image. The gradient of ``sum_l s_l`` at ``A_l`` is not that of ``s_l``
alone (every later prediction depends on ``A_l`` too); :meth:`~hf_iia.adapters.AttentionAdapter.block_predictions`
cuts the gradient between blocks, so one backward pass gives each block's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..adapters import Adapter, AttentionAdapter
from ..engine import IntegralSpec, Start, make_spec
from ..errors import MethodError
from ..integrands import gradient
from .base import Method, MethodOptions, input_size, register_method


def legrad_fusion(blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int) -> torch.Tensor:
    """LeGrad's aggregation of the per-block gradients ``dS_l/dA_l`` ``[B, heads, T, T]`` into patch relevance
    ``[B, T - first_patch]``: ReLU, mean over heads and query rows, mean over blocks. ``readout`` (the rows the head
    reads) is not used: LeGrad averages every query row."""
    per_block = [block.clamp(min=0).mean(dim=(1, 2)) for block in blocks]  # each [B, T], one value per key token
    return torch.stack(per_block).mean(dim=0)[:, first_patch:]


@register_method("legrad")
class LeGrad(Method):
    """The gradient of every block's own prediction at its attention, rectified, averaged over heads, query rows and
    blocks, on the patch grid (see the module docstring)."""

    requires = AttentionAdapter

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        """The gradient at every block's attention, at ``a = 1`` only (under the block predictions of :meth:`run`).
        Only the blocks' attention is observed: a pooling head's attention (SigLIP's) reads every block's prediction
        stacked, and LeGrad reads the blocks alone."""
        assert isinstance(adapter, AttentionAdapter)  # prepare() admits only attention adapters
        if adapter.rows_from_input:
            raise MethodError(
                f"legrad reads every block's prediction by running the model's tail on the blocks' outputs stacked as "
                f"extra batch rows, but {type(adapter.model).__name__} reads per-image inputs after its blocks (NaFlex "
                "masks), which those rows lack; choose method='gradient_rollout', 'gae' or 'iia'"
            )
        return make_spec((), adapter.block_taps, (0,), gradient)

    def fuse(self, adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """:func:`legrad_fusion` on the adapter's token layout (patch tokens after its special tokens)."""
        assert isinstance(adapter, AttentionAdapter)  # prepare() admits only attention adapters
        return adapter.rollout_map(integrals, input_size(pixel_values), legrad_fusion)

    def installed(self, adapter: Adapter) -> contextlib.AbstractContextManager[object]:
        """The adapter's block predictions: the target's gradient at block ``l``'s attention becomes that of block
        ``l``'s own prediction."""
        assert isinstance(adapter, AttentionAdapter)  # prepare() admits only these adapters
        return adapter.block_predictions()
