"""IIA3 (the image and the last two levels), the ``combine=`` level fusions and the named ``start=`` of the image path,
each against a naive loop written here: one forward and backward pass per grid point, hooks that replace the levels
by their interpolated values, the integrand applied by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_iia import IIAExplainer, MethodError
from hf_iia.errors import IIAError
from hf_iia.metrics import gaussian_blur
from hf_iia.testing import vit_logits_by_hand

STAGES = ["resnet.encoder.stages.1", "resnet.encoder.stages.2"]


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1)
    return (maps - low) / (flat.max(1).values.view(-1, 1, 1) - low)


def _resize(maps: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def naive_resnet_iia3(model, x: torch.Tensor, target: int, steps: int, baseline: torch.Tensor) -> list[torch.Tensor]:
    """The nested integral over x, stage 1 and stage 2 (end-point rule, zero level baselines), ``relu(g * A)`` read
    at both stages: ``[channel sum at stage 1, channel sum at stage 2]``, each ``[B, h_l, w_l]``."""
    stages = [model.resnet.encoder.stages[1], model.resnet.encoder.stages[2]]
    alphas = torch.linspace(0, 1, steps + 1)
    images: list[list[torch.Tensor]] = []
    for b in range(x.shape[0]):
        sums = [torch.zeros(()), torch.zeros(())]
        for a0, a1, a2 in torch.cartesian_prod(alphas, alphas, alphas):
            kept: dict[int, torch.Tensor] = {}

            def replace(level: int, scale: torch.Tensor, kept: dict[int, torch.Tensor] = kept):
                def hook(module, args, output):
                    kept[level] = scale * output
                    return kept[level]

                return hook

            handles = [
                stage.register_forward_hook(replace(i, a))
                for i, (stage, a) in enumerate(zip(stages, (a1, a2), strict=True))
            ]
            try:
                logits = model(baseline[b : b + 1] + a0 * (x[b : b + 1] - baseline[b : b + 1])).logits
            finally:
                for handle in handles:
                    handle.remove()
            grads = torch.autograd.grad(logits[0, target], [kept[0], kept[1]])
            sums = [
                total + (grad * kept[i]).clamp_min(0).sum(dim=1).detach()
                for i, (total, grad) in enumerate(zip(sums, grads, strict=True))
            ]
        images.append([total / len(alphas) ** 3 for total in sums])
    return [torch.cat([image[level] for image in images]) for level in range(2)]


@pytest.fixture(scope="module")
def resnet(tiny_folder):
    explainer = IIAExplainer(tiny_folder("resnet"), preset="iia3", progress=False)
    return explainer.model.eval(), tiny_folder("resnet"), explainer.processor


def _input(batch: int = 1, seed: int = 11) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def naive_at_mean(resnet):
    """The naive integrals of the iia3 preset (5 steps per path) from the mean-colour start, target 3."""
    model, _, _ = resnet
    x = _input()
    return x, naive_resnet_iia3(model, x, 3, 5, torch.zeros_like(x))


def test_iia3_preset_interpolates_the_last_two_stages(resnet):
    _, folder, _ = resnet
    explainer = IIAExplainer(folder, preset="iia3", progress=False)
    assert explainer.adapter.levels == tuple(STAGES)
    assert [tap for tap, _ in explainer.spec.levels] == STAGES
    assert explainer.spec.observe == (STAGES[1],)
    assert explainer.spec.points_per_image == 6 * 6 * 6
    single = IIAExplainer(folder, preset="iia3", layer=STAGES[1], progress=False)  # layer= given: it decides
    assert single.adapter.levels == (STAGES[1],) and single.spec.points_per_image == 36


def test_iia3_deepest_matches_naive_loop(resnet, naive_at_mean):
    _, folder, _ = resnet
    x, naive = naive_at_mean
    ours = IIAExplainer(folder, preset="iia3", progress=False).attribute(x, target=3)
    expected = _minmax(_resize(naive[1], (32, 32), "bicubic"))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("combine", ["earliest", "product", "sum"])
def test_iia3_combine_matches_naive_loop(resnet, naive_at_mean, combine):
    """earliest: stage 1's channel sum; product / sum: both on stage 1's (finer) grid, min-max normalised."""
    _, folder, _ = resnet
    x, (early, deep) = naive_at_mean
    assert early.shape[-1] > deep.shape[-1]  # the levels' grids differ, so the resizing is exercised
    if combine == "earliest":
        raw = early
    else:
        normalised = [_minmax(early), _minmax(_resize(deep, tuple(early.shape[1:]), "bicubic"))]
        raw = normalised[0] * normalised[1] if combine == "product" else (normalised[0] + normalised[1]) / 2
    ours = IIAExplainer(folder, preset="iia3", combine=combine, progress=False).attribute(x, target=3)
    torch.testing.assert_close(ours, _minmax(_resize(raw, (32, 32), "bicubic")), atol=1e-5, rtol=0)


@pytest.mark.parametrize("start", ["black", "blur"])
def test_named_starts_match_naive_loop(resnet, start):
    """Two images, so a per-image start (the blur of each image) is checked image by image."""
    model, folder, processor = resnet
    x = _input(batch=2, seed=12)
    if start == "black":
        mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
        baseline = ((0 - mean) / std).view(1, 3, 1, 1).expand_as(x)
        assert not torch.allclose(baseline, torch.zeros(()))  # black is not the mean colour for this processor
    else:
        baseline = gaussian_blur(x, 11, 5.0)
    naive = naive_resnet_iia3(model, x, 1, 2, baseline)
    ours = IIAExplainer(folder, preset="iia3", steps=2, start=start, progress=False).attribute(x, target=1)
    torch.testing.assert_close(ours, _minmax(_resize(naive[1], (32, 32), "bicubic")), atol=1e-5, rtol=0)


def test_ig_from_a_blurred_start_matches_naive_loop(resnet):
    """IG with x' = blur(x): (x - x') * mean over a = 1/4..1 of dy/dx at x' + a (x - x'), channel sum."""
    model, folder, _ = resnet
    x = _input(seed=13)
    blurred = gaussian_blur(x, 11, 5.0)
    total = torch.zeros_like(x)
    for a in torch.linspace(0.25, 1, 4):
        point = (blurred + a * (x - blurred)).requires_grad_()
        total += torch.autograd.grad(model(point).logits[0, 2], point)[0] / 4
    expected = _minmax(((x - blurred) * total).sum(dim=1))
    ours = IIAExplainer(folder, method="ig", steps=4, start="blur", progress=False).attribute(x, target=2)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_default_options_leave_the_integral_unchanged(resnet):
    _, folder, _ = resnet
    default = IIAExplainer(folder, progress=False).spec
    assert IIAExplainer(folder, start="mean", combine="deepest", progress=False).spec == default
    # the default preset's grid rule: stages.1 has twice the last stage's grid and lies in the network's second half
    assert default.start is None and default.observe == (STAGES[0],)


def test_option_misuse_is_refused(resnet, tiny_folder):
    model, folder, _ = resnet
    with pytest.raises(MethodError, match="combine='product' applies to feature-map models"):
        IIAExplainer(tiny_folder("vit"), combine="product", progress=False)
    with pytest.raises(MethodError, match="unknown combine 'max'"):
        IIAExplainer(folder, combine="max", progress=False)
    with pytest.raises(MethodError, match="give one of them"):
        IIAExplainer(folder, start="black", baselines=0.5, progress=False)
    with pytest.raises(IIAError, match="unknown start 'white'"):
        IIAExplainer(folder, start="white", progress=False)
    with pytest.raises(IIAError, match="start='black' needs the image processor"):
        IIAExplainer(model, layer=STAGES, start="black", progress=False)
    with pytest.raises(MethodError, match="does not use start="):
        IIAExplainer(folder, method="gradcam", start="blur", progress=False)


def test_vit_iia3_matches_naive_loop(tiny_folder):
    """5 x 5 x 5 right-Riemann points, the last two blocks' attention scaled; relu(g * A) at every block; rollout."""
    explainer = IIAExplainer(tiny_folder("vit"), preset="iia3", progress=False)
    assert explainer.adapter.levels == ("layers.1", "layers.2") and explainer.spec.points_per_image == 125
    model = explainer.model.eval()
    x = _input(seed=14)
    alphas = torch.linspace(0.2, 1, 5)
    per_block = None
    for a0 in alphas:
        for a1 in alphas:
            for a2 in alphas:
                kept: list[torch.Tensor] = []
                logits = vit_logits_by_hand(model, a0 * x, {1: a1, 2: a2}, kept)
                terms = [
                    (g * a).clamp_min(0).detach()
                    for g, a in zip(torch.autograd.grad(logits[0, 4], kept), kept, strict=True)
                ]
                per_block = terms if per_block is None else [p + t for p, t in zip(per_block, terms, strict=True)]
    tokens = per_block[0].shape[-1]
    rollout = torch.eye(tokens)
    for block in per_block:
        fused = block[0].mean(0) / 125 + torch.eye(tokens)
        rollout = (fused / fused.sum(-1, keepdim=True)) @ rollout
    grid = rollout[0, 1:].reshape(1, 4, 4)
    expected = _minmax(_resize(grid, (32, 32), "bilinear"))
    torch.testing.assert_close(explainer.attribute(x, target=4), expected, atol=1e-5, rtol=0)


def test_two_levels_are_never_one_tensor():
    """timm's ResNet hands its last stage's output straight to the head pool: one tensor, so one tap (the pool's
    input); iia3 then interpolates layer3 and that tensor, not the same tensor twice (a_1 * a_2 * A)."""
    from hf_iia.adapters.timm import _candidates, _establish_layouts
    from hf_iia.testing import build_tiny_timm

    model, processor = build_tiny_timm("test_resnet")
    stages, refused = _establish_layouts(model, _candidates(model))
    assert "timm_model.layer4" not in stages and "same tensor" in refused["timm_model.layer4"]
    explainer = IIAExplainer(model, processor, preset="iia3", progress=False)
    assert explainer.adapter.levels == ("timm_model.layer3", "timm_model.global_pool")


def test_the_default_level_is_the_finest_semantic_stage():
    """methods.iia.finest_default: the deepest tap of the network's second half with at least twice the default's grid."""
    from hf_iia.methods.iia import finest_default

    lite0 = [
        ("blocks.0", (1, 16, 112, 112)),
        ("blocks.1", (1, 24, 56, 56)),
        ("blocks.2", (1, 40, 28, 28)),
        ("blocks.4", (1, 112, 14, 14)),
        ("blocks.6", (1, 320, 7, 7)),
        ("global_pool", (1, 1280, 7, 7)),
    ]
    assert finest_default(lite0, "global_pool", 1.5) == "blocks.4"
    lite1 = [(name, (1, k, round(h * 240 / 224 + 0.49), round(h * 240 / 224 + 0.49))) for name, (_, k, h, _) in lite0]
    assert [shape[2] for _, shape in lite1] == [120, 60, 30, 15, 8, 8]
    assert finest_default(lite1, "global_pool", 1.5) == "blocks.4"  # 15 x 15 before 8 x 8
    assert finest_default(lite1, "global_pool", 2) == "global_pool"
    assert finest_default(lite0, "global_pool", 0) == "global_pool"
    assert finest_default(lite0, "global_pool", 8) == "global_pool"  # blocks.1 is fine enough but in the first half
    shallow = [("stages.0", (1, 8, 12, 12)), ("stages.1", (1, 16, 6, 6))]
    assert finest_default(shallow, "stages.1", 1.5) == "stages.1"  # a first stage sees edges, not objects
    tokens = [("layers.0", (1, 17, 32)), ("layers.1", (1, 17, 32))]
    assert finest_default(tokens, "layers.1", 1.5) == "layers.1"
