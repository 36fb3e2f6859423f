"""The ``reference`` preset against naive loops that restate the authors' code (ALGORITHM.md) step by step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_iia import IIAExplainer
from hf_iia.testing import vit_logits_by_hand


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1)
    return (maps - low) / (flat.max(1).values.view(-1, 1, 1) - low)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def naive_reference_cnn(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """ALGORITHM.md's reference CNN: sum_i sum_k dy/dA_i * relu(A_i) over x_i = (i/10) x, bicubic, min-max."""
    total = 0
    for i in range(11):
        kept = {}
        handle = layer.register_forward_hook(lambda module, args, output, kept=kept: kept.setdefault("A", output))
        try:
            logits = model((i / 10) * x)
        finally:
            handle.remove()
        grad = torch.autograd.grad(logits[0, target], kept["A"])[0]
        total = total + (grad * kept["A"].clamp_min(0)).sum(dim=1)
    upsampled = F.interpolate(total.detach().unsqueeze(1), size=x.shape[2:], mode="bicubic", align_corners=False)
    return _minmax(upsampled.squeeze(1))


def test_reference_resnet50_matches_the_authors_computation():
    """torchvision-style ResNet-50, layer='layer4', same pixel_values: Pearson >= 0.999 with the reference map."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    target = 7
    ours = IIAExplainer(model, layer="layer4", preset="reference", progress=False).attribute(x, target=target)
    expected = naive_reference_cnn(model, model.layer4, x, target)
    assert _pearson(ours, expected) >= 0.999
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def naive_reference_vit(model, x: torch.Tensor, target: int, rows: list[int], first_patch: int, patch: int):
    """6 image points x 6 points a1 * A_last; relu(dy/dA_b * A_b) averaged; head mean; rollout; rows; bilinear."""
    per_block = None
    for a0 in torch.linspace(0, 1, 6):
        for a1 in torch.linspace(0, 1, 6):
            kept: list[torch.Tensor] = []
            last = len(getattr(model, model.base_model_prefix).layers) - 1
            # the authors build a1 * A_last outside autograd (through numpy)
            logits = vit_logits_by_hand(model, a0 * x, {last: a1}, kept, detached=frozenset({last}))
            grads = torch.autograd.grad(logits[0, target], kept)
            terms = [(g * a).clamp_min(0).detach() for g, a in zip(grads, kept, strict=True)]
            per_block = terms if per_block is None else [p + t for p, t in zip(per_block, terms, strict=True)]
    tokens = per_block[0].shape[-1]
    rollout = torch.eye(tokens)
    for block in per_block:
        fused = block[0].mean(0) / 36 + torch.eye(tokens)
        fused = fused / fused.sum(-1, keepdim=True)
        rollout = fused @ rollout
    relevance = rollout[rows, first_patch:].mean(0)
    side = x.shape[-1] // patch
    grid = relevance.reshape(1, 1, side, side)
    return _minmax(F.interpolate(grid, size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1))


@pytest.mark.parametrize("kind, rows, first_patch", [("vit", [0], 1), ("deit", [0, 1], 2)])
def test_reference_vit_matches_naive_gradient_rollout(tiny_folder, kind, rows, first_patch):
    explainer = IIAExplainer(tiny_folder(kind), preset="reference", progress=False)
    with torch.no_grad():  # sharpen the random attention so detached and live last-block attention differ
        for layer in getattr(explainer.model, explainer.model.base_model_prefix).layers:
            layer.attention.q_proj.weight.mul_(6)
            layer.attention.k_proj.weight.mul_(6)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = explainer.attribute(x, target=2)
    expected = naive_reference_vit(explainer.model.eval(), x, 2, rows, first_patch, patch=8)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
