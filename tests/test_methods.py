"""Comparison methods behind ``IIAExplainer(model, method=...)``, against Captum, pytorch-grad-cam and naive loops.

Models are tiny random-weight checkpoints built from real configs, saved with
``save_pretrained`` and loaded through the public API (``conftest.tiny_folder``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from transformers import AutoModelForImageClassification

from hf_iia import IIAExplainer, MethodError, TargetError, UnsupportedModelError
from hf_iia.adapters import adapter_for
from hf_iia.adapters.lrp import identity_rule, layer_norm_rule, uniform_rule
from hf_iia.engine import INPUT_TAP, Path, integrate, make_spec
from hf_iia.explainer import normalise, upsample
from hf_iia.integrands import gradient
from hf_iia.methods import METHODS, methods_for
from hf_iia.testing import assert_unchanged, save_tiny, snapshot
from hf_iia.tools.cli import main

torch.set_num_threads(1)

CAMS = ["gradcam", "gradcam++", "layercam", "scorecam"]  # on attention models: the token grid
SUPPORTED = {
    "resnet": ["iia", "ig", *CAMS],
    "convnext": ["iia", "ig", *CAMS],
    "timm": ["iia", "ig", *CAMS],
    "vit": ["iia", "ig", *CAMS, "attention_rollout", "gradient_rollout", "gae", "attnlrp", "legrad"],
    "deit": ["iia", "ig", *CAMS, "attention_rollout", "gradient_rollout", "gae", "attnlrp", "legrad"],
}
FAST = {"iia": dict(steps=2), "ig": dict(steps=4)}  # keep the integrals small; other methods take no steps


class Logits(nn.Module):
    """Return ``.logits`` of a Hugging Face classifier (what Captum and pytorch-grad-cam expect)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


def _inputs(size: int = 32, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return (maps - low) / (high - low)


# --------------------------------------------------------------- one code path for every method
@pytest.mark.filterwarnings("ignore:.*map\\(s\\) are constant:RuntimeWarning")
@pytest.mark.parametrize("kind,method", [(kind, method) for kind, methods in SUPPORTED.items() for method in methods])
def test_every_method_gives_unit_maps_and_batch_equals_per_image(tiny_folder, kind, method):
    explainer = IIAExplainer(tiny_folder(kind), method=method, progress=False, **FAST.get(method, {}))
    size = 32 if kind in ("vit", "deit") else 64  # CNN feature maps of 32-pixel inputs are 1x1 or 2x2
    x = _inputs(size)
    maps = explainer.attribute(x, target=[1, 4])
    assert maps.shape == (2, size, size) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    peaks = maps.flatten(1).amax(1)  # 0: a constant raw map (tiny timm resnet: Grad-CAM's ReLU leaves nothing)
    assert ((peaks == 1) | (peaks == 0)).all()
    single = torch.cat([explainer.attribute(x[i : i + 1], target=t) for i, t in enumerate([1, 4])])
    torch.testing.assert_close(maps, single, rtol=1e-4, atol=1e-5)
    explanation = explainer(x[0], target="dog")  # the Explanation API works unchanged
    assert explanation.target == 1 and explanation.heatmap.shape == (size, size)


# ------------------------------------------------------------------ Integrated Gradients vs Captum
@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_ig_matches_captum_riemann_right(tiny_folder, kind):
    """Same points and weights as Captum's ``riemann_right``; compared on min-max normalised channel sums."""
    explainer = IIAExplainer(tiny_folder(kind), method="ig", steps=8, internal_batch_size=5, progress=False)
    x, targets = _inputs(seed=1), torch.tensor([2, 0])
    ours = explainer.attribute(x, target=targets)
    captum = IntegratedGradients(Logits(explainer.model.eval())).attribute(
        x, baselines=0.0, target=targets, n_steps=8, method="riemann_right"
    )
    assert (ours - _minmax(captum.sum(1))).abs().max() <= 1e-4


def test_ig_works_on_a_plain_module_and_is_complete():
    """IG needs no adapter taps: any module returning logits works, without layer=; the map sums to f(x) - f(0)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    x = _inputs(size=8, batch=1)
    explainer = IIAExplainer(model, method="ig", steps=200, progress=False)
    result = integrate(explainer.adapter, x, torch.tensor([2]), explainer.spec, progress=False)
    raw = METHODS["ig"].fuse(explainer.adapter, result.integrals, x)
    with torch.no_grad():
        difference = model(x)[0, 2] - model(torch.zeros_like(x))[0, 2]
    assert abs(float(raw.sum() - difference)) < 1e-2 * abs(float(difference)) + 1e-4


def test_quadrature_rules():
    """Points and weights of every rule; the trapezoid rule against Captum's ``riemann_trapezoid``."""
    assert Path(4, rule="riemann_right").alphas().tolist() == [1.0, 0.75, 0.5, 0.25]
    assert Path(4, rule="trapezoid").weights().tolist() == [0.5, 1.0, 1.0, 1.0, 0.5]
    assert Path(4).weights().tolist() == [1.0] * 5 and Path(0, rule="riemann_right").alphas().tolist() == [1.0]
    with pytest.raises(ValueError, match="quadrature rule"):
        Path(3, rule="simpson")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    x = _inputs(size=4, batch=1, seed=2)
    explainer = IIAExplainer(model, method="ig", progress=False)
    spec = make_spec((), (INPUT_TAP,), (4,), gradient, rules=("trapezoid",))
    mean_gradient = integrate(explainer.adapter, x, torch.tensor([1]), spec, progress=False).integrals[INPUT_TAP]
    captum = IntegratedGradients(model).attribute(x, target=1, n_steps=5, method="riemann_trapezoid")
    # Captum's trapezoid step sizes 1/n (ends halved) sum to (n - 1)/n, ours are normalised to 1
    torch.testing.assert_close(captum, x * mean_gradient * 4 / 5, rtol=1e-5, atol=1e-7)


# ------------------------------------------------- Grad-CAM(++), LayerCAM, Score-CAM vs pytorch-grad-cam
def _raw_and_reference(explainer: IIAExplainer, cam_class, x: torch.Tensor, targets: torch.Tensor):
    """Our raw map ``[B, h, w]`` (before upsampling) and pytorch-grad-cam's output ``[B, H, W]`` on the same layer."""
    method = METHODS[explainer.method]
    result = method.run(explainer.adapter, x, targets, explainer.spec, internal_batch_size=5, progress=False)
    raw = method.fuse(explainer.adapter, result.integrals, x)
    (tap,) = result.integrals
    with cam_class(Logits(explainer.model), [explainer.model.get_submodule(tap)]) as cam:
        reference = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    # the maps the explainer returns are these raw maps, upsampled with the adapter's mode and min-max normalised
    expected = normalise(upsample(raw, tuple(x.shape[2:]), explainer.adapter.upsample_mode))
    torch.testing.assert_close(explainer.attribute(x, target=targets), expected, rtol=0, atol=1e-6)
    return raw, reference


@pytest.mark.parametrize("kind,layer", [("resnet", None), ("resnet", "resnet.encoder.stages.1"), ("convnext", None)])
def test_gradcam_matches_pytorch_grad_cam(tiny_folder, kind, layer):
    """Raw maps (4x4 / 8x8, before our bicubic upsampling) through pytorch-grad-cam's own resize + normalisation."""
    explainer = IIAExplainer(tiny_folder(kind), method="gradcam", layer=layer, progress=False)
    x, targets = _inputs(size=64, seed=3), torch.tensor([1, 3])
    raw, reference = _raw_and_reference(explainer, GradCAM, x, targets)
    ours = scale_cam_image(scale_cam_image(raw.numpy(), (64, 64)))  # per layer: min-max + cv2 resize; then min-max
    assert np.abs(ours - reference).max() <= 1e-4


@pytest.mark.parametrize("kind,special", [("vit", 1), ("deit", 2)])
@pytest.mark.parametrize("layer", [None, 1])
def test_gradcam_on_the_token_grid_matches_pytorch_grad_cam_with_a_reshape(tiny_folder, kind, special, layer):
    """On an attention model a CAM reads the patch tokens entering the block ``layer=`` names (default the last) as
    a feature map: pytorch-grad-cam on the output of the block before it, with the ``reshape_transform`` its ViT
    tutorial uses (special tokens dropped, raster order), gives the same map."""
    explainer = IIAExplainer(tiny_folder(kind), method="gradcam", layer=layer, progress=False)
    x, targets = _inputs(size=32, seed=3), torch.tensor([1, 3])
    method = METHODS["gradcam"]
    result = method.run(explainer.adapter, x, targets, explainer.spec, internal_batch_size=5, progress=False)
    raw = method.fuse(explainer.adapter, result.integrals, x)
    attention = explainer.adapter.attention
    height, width = attention.patch_grid((32, 32))
    assert raw.shape == (2, height, width)
    previous = attention.blocks[attention.taps.index(explainer.adapter.levels[0]) - 1]

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, special:].reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)

    with GradCAM(Logits(explainer.model), [previous], reshape_transform=reshape) as cam:
        reference = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    ours = scale_cam_image(scale_cam_image(raw.numpy(), (32, 32)))
    assert np.abs(ours - reference).max() <= 1e-4
    expected = normalise(upsample(raw, (32, 32), "bilinear"))
    torch.testing.assert_close(explainer.attribute(x, target=targets), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method,cam_class", [("layercam", LayerCAM), ("scorecam", ScoreCAM)])
@pytest.mark.parametrize("kind,layer", [("resnet", None), ("resnet", "resnet.encoder.stages.1"), ("convnext", None)])
def test_layercam_and_scorecam_match_pytorch_grad_cam(tiny_folder, method, cam_class, kind, layer):
    """Same comparison as Grad-CAM's. Score-CAM's masked images run in chunks of 5 (not a divisor of the channel
    count, so chunks straddle images), pytorch-grad-cam's per image in chunks of 16: the batching must not matter."""
    explainer = IIAExplainer(tiny_folder(kind), method=method, layer=layer, progress=False)
    x, targets = _inputs(size=64, seed=3), torch.tensor([1, 3])
    raw, reference = _raw_and_reference(explainer, cam_class, x, targets)
    ours = scale_cam_image(scale_cam_image(raw.numpy(), (64, 64)))
    assert np.abs(ours - reference).max() <= 1e-4


def test_layercam_matches_pytorch_grad_cam_on_the_real_lite0(lite0_folder):
    """The real ImageNet EfficientNet-Lite0 (timm, through TimmWrapper): our tap is the input of the global pool,
    pytorch-grad-cam's the output of the module that produces it (``bn2``, BatchNorm + ReLU6)."""
    explainer = IIAExplainer(lite0_folder, method="layercam", progress=False)
    x, targets = _inputs(size=224, batch=1, seed=3), torch.tensor([281])
    result = integrate(explainer.adapter, x, targets, explainer.spec, progress=False)
    raw = METHODS["layercam"].fuse(explainer.adapter, result.integrals, x)
    with LayerCAM(Logits(explainer.model), [explainer.model.timm_model.bn2]) as cam:
        reference = cam(x, [ClassifierOutputTarget(281)])
    ours = scale_cam_image(scale_cam_image(raw.numpy(), (224, 224)))
    assert raw.shape == (1, 7, 7) and np.abs(ours - reference).max() <= 1e-4


def test_layercam_is_not_relu_of_gradient_times_activation(tiny_folder):
    """LayerCAM weighs each location by ``relu(dy/dA)``: where ``A < 0`` (ConvNeXt's stages end without a ReLU)
    and ``dy/dA > 0`` the location counts negatively, unlike ``relu(dy/dA * A)``."""
    explainer = IIAExplainer(tiny_folder("convnext"), method="layercam", progress=False)
    x, targets = _inputs(size=64, seed=3), torch.tensor([1, 3])
    result = integrate(explainer.adapter, x, targets, explainer.spec, progress=False)
    (integral,) = result.integrals.values()
    assert (integral < 0).any()


@pytest.mark.parametrize("layer", [None, "resnet.encoder.stages.1"])
def test_gradcam_plus_plus_matches_pytorch_grad_cam_where_its_epsilon_is_negligible(tiny_folder, layer):
    """pytorch-grad-cam adds 1e-6 to alpha's denominator ``2 g^2 + sum(A) g^3``; we follow the paper (no epsilon).

    With the classifier scaled by 1000 the gradients are large enough for that epsilon to vanish.
    """
    explainer = IIAExplainer(tiny_folder("resnet"), method="gradcam++", layer=layer, progress=False)
    with torch.no_grad():
        explainer.model.classifier[-1].weight.mul_(1000.0)
    x, targets = _inputs(size=64, seed=3), torch.tensor([1, 3])
    raw, reference = _raw_and_reference(explainer, GradCAMPlusPlus, x, targets)
    ours = scale_cam_image(scale_cam_image(raw.numpy(), (64, 64)))
    assert np.abs(ours - reference).max() <= 1e-4


def test_gradcam_on_a_plain_module_at_input_resolution_equals_pytorch_grad_cam():
    """With a feature map of the input's size neither side resizes: the public output equals pytorch-grad-cam's."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)
    )
    x, targets = _inputs(size=12, seed=4), torch.tensor([0, 2])
    ours = IIAExplainer(model, method="gradcam", layer="1", progress=False).attribute(x, target=targets)
    with GradCAM(model, [model[1]]) as cam:
        reference = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    assert np.abs(ours.numpy() - reference).max() <= 1e-4


# ------------------------------------------------------------- attention methods vs naive loops
def _naive_attention_map(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str, special: int, rows):
    """The method by its definition, from eager attention returned with ``output_attentions=True``."""
    output = model(x, output_attentions=True)
    attentions = output.attentions  # per block [B, heads, T, T], part of the autograd graph
    grads = torch.autograd.grad(output.logits.gather(1, targets[:, None]).sum(), attentions)
    tokens = attentions[0].shape[-1]
    eye = torch.eye(tokens, dtype=torch.float64).expand(x.shape[0], tokens, tokens)
    relevance = eye
    # In float64, as the package fuses: a rollout is nearly flat, and float32 rounding of it would be stretched by
    # the normalisation past the tolerance.
    for attention, grad in zip((a.double() for a in attentions), (g.double() for g in grads), strict=True):
        if method == "attention_rollout":  # Abnar & Zuidema: 0.5 A + 0.5 I, rows renormalised
            fused = 0.5 * attention.mean(1) + 0.5 * eye
            relevance = (fused / fused.sum(-1, keepdim=True)) @ relevance
        elif method == "gradient_rollout":
            fused = (grad * attention).clamp(min=0).mean(1) + eye
            relevance = (fused / fused.sum(-1, keepdim=True)) @ relevance
        else:  # gae, Chefer et al. 2021: R += mean_h[(grad * A)+] @ R
            relevance = relevance + (grad * attention).clamp(min=0).mean(1) @ relevance
    patches = relevance[:, rows, special:].mean(1)
    side = int(patches.shape[1] ** 0.5)
    return normalise(upsample(patches.reshape(-1, side, side).detach(), tuple(x.shape[2:]), "bilinear"))


@pytest.mark.parametrize("method", ["attention_rollout", "gradient_rollout", "gae"])
@pytest.mark.parametrize("kind,special,rows", [("vit", 1, [0]), ("deit", 2, [0, 1])])
def test_attention_methods_match_naive_loops(tiny_folder, method, kind, special, rows):
    folder = tiny_folder(kind)
    explainer = IIAExplainer(folder, method=method, progress=False)
    x, targets = _inputs(seed=5), torch.tensor([4, 2])
    naive_model = AutoModelForImageClassification.from_pretrained(folder, attn_implementation="eager").eval()
    expected = _naive_attention_map(naive_model, x, targets, method, special, rows)
    assert (explainer.attribute(x, target=targets) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_iia_at_one_point_with_a_rollout_fusion_is_that_rollout_method(tiny_folder, kind):
    """With no integral (``steps=0``: the single point a = 1 on every path) IIA's integrand is Gradient Rollout's
    term, so ``fusion="gae"`` gives ``method="gae"`` and the default fusion ``method="gradient_rollout"``."""
    folder = tiny_folder(kind)
    x, targets = _inputs(seed=6), torch.tensor([1, 3])
    for fusion, method in (("gae", "gae"), ("gradient_rollout", "gradient_rollout")):
        iia = IIAExplainer(folder, steps=0, fusion=fusion, progress=False).attribute(x, target=targets)
        expected = IIAExplainer(folder, method=method, progress=False).attribute(x, target=targets)
        assert (iia - expected).abs().max() <= 1e-5, fusion


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_the_attention_default_is_the_blurred_start_and_gaes_rule(tiny_folder, kind):
    """The ViT family's default preset is IIA from the blurred image fused by GAE's rule (the design search's
    choice): the same map as those options given by hand, filled in as ``start=`` (what the explainer reports and
    rebuilds from). ``baselines=`` given by the user replaces the preset's start; ``reference`` keeps the zero start
    and Gradient Rollout."""
    folder = tiny_folder(kind)
    x, targets = _inputs(seed=7), torch.tensor([0, 2])
    default = IIAExplainer(folder, progress=False)
    assert default._options.start == "blur"
    by_hand = IIAExplainer(folder, start="blur", fusion="gae", progress=False)
    assert torch.equal(default.attribute(x, target=targets), by_hand.attribute(x, target=targets))
    constant = IIAExplainer(folder, baselines=0.0, progress=False)
    assert constant._options.start is None
    from_zero = IIAExplainer(folder, start="mean", fusion="gae", progress=False).attribute(x, target=targets)
    assert torch.equal(constant.attribute(x, target=targets), from_zero)
    assert (from_zero - by_hand.attribute(x, target=targets)).abs().max() > 1e-3  # the start matters
    reference = IIAExplainer(folder, preset="reference", progress=False)
    assert reference._options.start is None and reference._options.fusion is None


def test_attention_models_chunk_eight_points_by_default(tiny_folder):
    """Attention models keep every block's activations for the backward, so they chunk 8 points by default (also
    for IG, whose input gradient runs through every block); other models 64, and 16 for IG (each of its points runs
    the whole network); a given value wins; the chunking never changes a map."""
    vit, resnet = tiny_folder("vit"), tiny_folder("resnet")
    for method in ("iia", "ig", "gae", "gradcam"):
        assert IIAExplainer(vit, method=method, progress=False).internal_batch_size == 8, method
    assert IIAExplainer(resnet, progress=False).internal_batch_size == 64
    assert IIAExplainer(resnet, method="ig", progress=False).internal_batch_size == 16  # every point runs it all
    assert IIAExplainer(vit, internal_batch_size=3, progress=False).internal_batch_size == 3
    x = _inputs(seed=8)
    chunked = IIAExplainer(vit, progress=False).attribute(x, target=1)
    whole = IIAExplainer(vit, internal_batch_size=64, progress=False).attribute(x, target=1)
    # chunks are batches of other sizes: float32 may differ in the last bits by CPU; maps lie in [0, 1]
    assert (chunked - whole).abs().max() <= 1e-5


def test_the_global_scale_keeps_the_blocks_relative_size_and_the_per_block_scale_does_not():
    """Two blocks whose terms differ only by a factor 4: one scale per block makes them weigh alike (the map equals
    that of the two blocks at the same size), one scale per image keeps the factor (the map equals the published
    rollout of the terms divided by their mean size), and every scale-invariant rollout ignores a common factor."""
    from hf_iia.fusions import ROLLOUTS

    generator = torch.Generator().manual_seed(0)
    term = torch.rand(2, 3, 5, 5, generator=generator, dtype=torch.float64)
    other = torch.rand(2, 3, 5, 5, generator=generator, dtype=torch.float64)
    readout = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    blocks = [term, 4 * other]
    per_block = ROLLOUTS["normalised_gradient_rollout"]
    per_image = ROLLOUTS["globally_normalised_gradient_rollout"]
    published = ROLLOUTS["gradient_rollout"]

    def size(block):
        return block.mean(dim=1).sum(dim=-1).mean(dim=-1).view(-1, 1, 1, 1)

    torch.testing.assert_close(per_block(blocks, readout, 1), per_block([term, other], readout, 1))
    mean_size = (size(term) + size(4 * other)) / 2
    torch.testing.assert_close(per_image(blocks, readout, 1), published([b / mean_size for b in blocks], readout, 1))
    assert (per_image(blocks, readout, 1) - per_block(blocks, readout, 1)).abs().max() > 1e-3
    for name in ("normalised_gradient_rollout", "globally_normalised_gradient_rollout", "globally_normalised_gae"):
        rollout = ROLLOUTS[name]
        torch.testing.assert_close(rollout([7 * b for b in blocks], readout, 1), rollout(blocks, readout, 1))


# ------------------------------------------------------------------------------------- AttnLRP vs lxt
def _lxt_efficient() -> types.ModuleType:
    """lxt 2.1's ``lxt.efficient`` package, entered without running its ``__init__``.

    ``import lxt.efficient`` fails on transformers 5: the ``__init__`` imports lxt's copies of modeling files
    (BERT first), which import the removed ``transformers.modeling_attn_mask_utils``. The rule modules
    (``lxt.efficient.rules``, ``lxt.efficient.patches``) import only torch, so they load under a bare package.
    """
    import lxt

    if "lxt.efficient" not in sys.modules:
        package = types.ModuleType("lxt.efficient")
        package.__path__ = [os.path.join(os.path.dirname(lxt.__file__), "efficient")]
        sys.modules["lxt.efficient"] = package
    return importlib.import_module("lxt.efficient.patches")


def _lxt_relevance(model: nn.Module, modeling: types.ModuleType, x: torch.Tensor, targets: torch.Tensor):
    """``(x * dy/dx).sum(channels)`` under lxt's AttnLRP patches of an eager HF ViT-family model.

    lxt supports HF BERT and torchvision's ViT, not HF ViT, so its rules are installed with a custom patch map
    the way its own ``monkey_patch`` does, and undone afterwards: its LayerNorm forward (std detached), its
    identity rule on the GELU module, its attention wrapper (query and key gradients / 4, value / 2) around the
    modeling file's eager attention. (lxt's ``patch_attention`` itself replaces ``ALL_ATTENTION_FUNCTIONS`` by a
    plain dict, which transformers 5 calls ``.get_interface`` on, so only the eager function is wrapped.)
    """
    from transformers.activations import GELUActivation

    patches = _lxt_efficient()
    saved = (nn.LayerNorm.forward, GELUActivation.forward, modeling.eager_attention_forward)
    try:
        patches.patch_method(patches.layer_norm_forward, nn.LayerNorm)
        patches.patch_method(patches.non_linear_forward, GELUActivation, keep_original=True)
        modeling.eager_attention_forward = patches.wrap_attention_forward(saved[2])
        x = x.clone().requires_grad_()
        model(x).logits.gather(1, targets[:, None]).sum().backward()
    finally:
        nn.LayerNorm.forward, GELUActivation.forward, modeling.eager_attention_forward = saved
        del GELUActivation.original_forward
    return (x * x.grad).sum(1).detach()


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_attnlrp_matches_lxt(tiny_folder, kind):
    """Raw relevance maps (signed, before normalisation) equal lxt's within 1e-5 of the map's largest magnitude;
    they differ from the plain gradient x input by far more (the rules change the gradient)."""
    folder = tiny_folder(kind)
    explainer = IIAExplainer(folder, method="attnlrp", progress=False)
    x, targets = _inputs(seed=5), torch.tensor([4, 2])
    method = METHODS["attnlrp"]
    result = method.run(explainer.adapter, x, targets, explainer.spec, internal_batch_size=64, progress=False)
    raw = method.fuse(explainer.adapter, result.integrals, x)
    model = AutoModelForImageClassification.from_pretrained(folder, attn_implementation="eager").eval()
    modeling = importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
    reference = _lxt_relevance(model, modeling, x, targets)
    scale = float(reference.abs().max())
    assert raw.shape == (2, 32, 32) and float((raw - reference).abs().max()) <= 1e-5 * scale
    plain = x.clone().requires_grad_()
    model(plain).logits.gather(1, targets[:, None]).sum().backward()
    assert float((raw - (plain * plain.grad).sum(1).detach()).abs().max()) > 0.05 * scale
    expected = normalise(raw)  # at the input's size already: no upsampling
    torch.testing.assert_close(explainer.attribute(x, target=targets), expected, rtol=0, atol=1e-6)


def test_lrp_rules_keep_the_value_and_change_the_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 8, requires_grad=True)
    norm = nn.LayerNorm(8)
    y = layer_norm_rule(norm, (x,), norm(x))
    assert torch.equal(y, norm(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    std = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt().detach()  # a constant under the rule
    expected = torch.autograd.grad(((x - x.mean(-1, keepdim=True)) / std * norm.weight + norm.bias).sum(), x)[0]
    torch.testing.assert_close(grad, expected)
    gelu = nn.GELU()
    y = identity_rule(gelu, (x,), gelu(x))
    assert torch.equal(y, gelu(x))
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], gelu(x).detach() / x.detach())
    y = uniform_rule(x, 4)
    assert torch.equal(y, x) and torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.full_like(x, 0.25))


def test_attnlrp_leaves_the_model_as_it_found_it_on_every_path(tiny_folder):
    """Hooks, attention implementation and registry restored after a run and after a failing one; a later
    method on the same model runs without AttnLRP's rules."""
    explainer = IIAExplainer(tiny_folder("vit"), method="attnlrp", progress=False)
    gae = IIAExplainer(explainer.model, method="gae", progress=False)
    x = _inputs(seed=6)
    before, maps = snapshot(explainer.model), gae.attribute(x, target=[1, 2])
    explainer.attribute(x, target=[1, 2])
    assert_unchanged(before, snapshot(explainer.model))
    with pytest.raises(TargetError):
        explainer.attribute(x, target=[1, 99])
    assert_unchanged(before, snapshot(explainer.model))
    torch.testing.assert_close(gae.attribute(x, target=[1, 2]), maps, rtol=0, atol=0)


def test_attnlrp_applies_to_the_types_its_rules_cover(tiny_folder, tmp_path):
    """Listed for ViT and DeiT; refused, with the methods that apply, for an attention model it does not cover
    (BEiT: its rules are not verified there)."""
    for kind in ("vit", "deit"):
        adapter = adapter_for(AutoModelForImageClassification.from_pretrained(tiny_folder(kind)))
        assert "attnlrp" in methods_for(adapter)
    with pytest.raises(MethodError, match="needs a model explained through a RelevanceAdapter.*gae"):
        IIAExplainer(save_tiny("beit", tmp_path), method="attnlrp", progress=False)


# ------------------------------------------------------------------------------- errors and CLI
@pytest.mark.parametrize(
    "kind,options,message",
    [
        ("vit", dict(method="gradcam", layer=[0, 1]), "pass a single layer="),
        ("deit", dict(method="scorecam", steps=2), "does not use steps="),
        ("resnet", dict(method="scorecam", steps=2), "does not use steps="),
        ("convnext", dict(method="layercam", preset="reference"), "does not use preset="),
        ("resnet", dict(method="scorecam", layer=[1, 2]), "pass a single layer="),
        ("resnet", dict(method="attnlrp"), "needs a model explained through a RelevanceAdapter"),
        ("vit", dict(method="attnlrp", layer=0), "does not use layer="),
        ("resnet", dict(method="attention_rollout"), "needs a model explained through an AttentionAdapter"),
        ("timm", dict(method="gae"), "needs a model explained through an AttentionAdapter"),
        ("resnet", dict(method="lime"), "unknown method"),
        ("resnet", dict(method="gradcam", steps=5), "does not use steps="),
        ("resnet", dict(method="ig", preset="reference"), "does not use preset="),
        ("resnet", dict(method="ig", layer="resnet.encoder.stages.1"), "does not use layer="),
        ("vit", dict(method="gae", integrand="grad_act"), "does not use integrand="),
        ("resnet", dict(method="gradcam", layer=[1, 2]), "pass a single layer="),
        ("resnet", dict(method="ig", steps=(4, 4)), "one path"),
        ("resnet", dict(method="gradcam", baselines=0.5), "does not use baselines="),
    ],
)
def test_unsupported_combinations_raise(tiny_folder, kind, options, message):
    with pytest.raises(MethodError, match=message):
        IIAExplainer(tiny_folder(kind), progress=False, **options)


def test_cnn_methods_on_a_plain_module_need_a_layer():
    with pytest.raises(UnsupportedModelError, match="layer="):
        IIAExplainer(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.LazyLinear(3)), method="gradcam")


def test_cli_method_option(tiny_folder, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    folder = str(tiny_folder("resnet"))
    for method in ["gradcam", "gradcam++"]:
        assert main(["explain", folder, str(image), "--out", str(tmp_path), "--method", method]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["method"] for record in records] == ["gradcam", "gradcam++"]
    assert np.load(tmp_path / "photo_gradcam.npy").shape == (32, 32) and (tmp_path / "photo_gradcampp.png").exists()
