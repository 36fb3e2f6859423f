"""Plain-PyTorch test models and a hand-written Hugging Face ViT forward.

:class:`SmallCNN` is a real ``nn.Module`` classifier outside ``transformers`` (``pixel_values [N, 3, H, W]`` ->
logits ``[N, classes]``); :class:`NaNLogits` and :class:`ConstantLogits` are its broken variants for the refusal
tests. :func:`vit_logits_by_hand` writes a ``transformers`` ViT / DeiT forward out from its weights, the reference
for naive-loop tests of the engine.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DeiTForImageClassification, DeiTForImageClassificationWithTeacher, ViTForImageClassification
from transformers.models.deit.modeling_deit import DeiTLayer
from transformers.models.vit.modeling_vit import ViTLayer


class SmallCNN(nn.Module):
    """A real plain-PyTorch classifier (conv features -> ReLU -> pool -> linear), weights fixed by ``seed``."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(8, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.features(pixel_values).relu().mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


class NaNLogits(SmallCNN):
    """A real classifier whose logits are NaN (a broken checkpoint, e.g. overflowed weights)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values) * float("nan")


class ConstantLogits(SmallCNN):
    """A classifier whose logits do not depend on its features (zero head weights): every gradient is zero."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.classifier.weight.zero_()


# Reference computations -----------------------------------------------------------------------------
def vit_logits_by_hand(
    model: ViTForImageClassification | DeiTForImageClassification | DeiTForImageClassificationWithTeacher,
    pixel_values: torch.Tensor,
    scales: dict[int, torch.Tensor | float],
    kept: list[torch.Tensor],
    detached: frozenset[int] = frozenset(),
) -> torch.Tensor:
    """A Hugging Face ViT / DeiT forward written out from its weights, for naive-loop tests of the engine.

    ``pixel_values [N, 3, H, W]``. Block ``i``'s attention probabilities ``[N, heads, T, T]`` are multiplied by
    ``scales[i]`` (default 1) and appended to ``kept``; for ``i`` in ``detached`` they are built outside autograd
    first (a constant, as the authors' code does with the interpolated last block). Returns logits
    ``[N, num_labels]`` (DeiT with a teacher head: the mean of its two heads).
    """
    base = model.vit if isinstance(model, ViTForImageClassification) else model.deit
    hidden = base.embeddings(pixel_values)
    batch, tokens, _ = hidden.shape
    for index, layer in enumerate(base.layers):
        if not isinstance(layer, (ViTLayer, DeiTLayer)):
            raise TypeError(f"block {index} is a {type(layer).__name__}, not a ViT or DeiT layer")
        attention = layer.attention
        normed = layer.layernorm_before(hidden)
        query, key, value = [
            projection(normed).view(batch, tokens, attention.num_attention_heads, -1).transpose(1, 2)
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
        ]
        probs = torch.softmax(query @ key.transpose(2, 3) * attention.scaling, dim=-1)
        if index in detached:
            probs = (scales.get(index, 1.0) * probs.detach()).requires_grad_()
        else:
            probs = scales.get(index, 1.0) * probs
        kept.append(probs)
        context = (probs @ value).transpose(1, 2).reshape(batch, tokens, -1)
        hidden = hidden + attention.o_proj(context)
        hidden = hidden + layer.mlp(layer.layernorm_after(hidden))
    sequence = base.layernorm(hidden)
    if isinstance(model, DeiTForImageClassificationWithTeacher):
        return (model.cls_classifier(sequence[:, 0]) + model.distillation_classifier(sequence[:, 1])) / 2
    return model.classifier(sequence[:, 0])
