"""Metamorphic invariants: a map must not depend on what it must not depend on, for every family.

Each test states one invariant with its tolerance (maps are min-max normalised to [0, 1]); the README's
"Guarantees" lists them. The models are the zoo's tiny random-weight models (``hf_iia.testing``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hf_iia import IIAExplainer
from hf_iia import testing as zoo

# One model per representation: HF attention (CLS, CLS + distillation, registers + patch mean), token grid,
# NCHW stages (the CNN family and a probed backbone), and timm (attention, channels-last stages).
FAMILIES = {
    "vit": lambda: zoo.build_tiny("vit"),
    "deit": lambda: zoo.build_tiny("deit"),
    "dinov2_with_registers": lambda: zoo.build_tiny("dinov2_with_registers"),
    "swin": lambda: zoo.build_tiny("swin"),
    "resnet": lambda: zoo.build_tiny("resnet"),
    "efficientnet": lambda: zoo.build_tiny("efficientnet"),
    "timm-swin": lambda: zoo.build_tiny_timm("swin_tiny_patch4_window7_224"),
    "timm-deit": lambda: zoo.build_tiny_timm("deit_tiny_distilled_patch16_224"),
}
ATTENTION = {"vit", "deit", "dinov2_with_registers", "timm-deit"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    model, processor = FAMILIES[request.param]()
    return request.param, model, processor


def _explainer(model, processor, **options) -> IIAExplainer:
    return IIAExplainer(model, processor, steps=2, progress=False, **options)


def _images(count: int = 3) -> list[Image.Image]:
    rng = np.random.RandomState(1)
    return [Image.fromarray(rng.randint(0, 256, (36 + 4 * i, 40, 3), dtype=np.uint8)) for i in range(count)]


def _pixels(explainer: IIAExplainer, count: int = 3) -> torch.Tensor:
    return explainer.preprocess(_images(count))[0].float()


def _heads(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers that produce logits (DeiT's distilled models have two heads, averaged)."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.Linear) and module.out_features == model.config.num_labels
    ]


def test_batch_composition_does_not_change_a_map(family, worst_case):
    """An image's map is the same alone, at any position of a batch, with any internal_batch_size (<= 1e-5)."""
    name, model, processor = family
    explainer = _explainer(model, processor)
    pixels = _pixels(explainer)
    batch = explainer.attribute(pixels, target=0)
    reversed_batch = explainer.attribute(pixels.flip(0), target=0).flip(0)
    alone = torch.cat([explainer.attribute(pixels[i : i + 1], target=0) for i in range(3)])
    chunked = _explainer(model, processor, internal_batch_size=1).attribute(pixels, target=0)
    for other in (reversed_batch, alone, chunked):
        assert worst_case("batch composition", name, (batch - other).abs().max()) <= 1e-5, name


def test_target_by_index_equals_target_by_label(family, worst_case):
    """target=index and target=its id2label name give the identical map."""
    name, model, processor = family
    explainer = _explainer(model, processor)
    pixels = _pixels(explainer, 2)
    by_index, by_label = explainer.attribute(pixels, target=1), explainer.attribute(pixels, target=zoo.LABELS[1])
    worst_case("target by index vs label", name, (by_index - by_label).abs().max())
    assert torch.equal(by_index, by_label)


def test_pil_path_equals_pixel_values_path(family, worst_case):
    """Explaining PIL images equals explaining the pixel_values their processor makes (identical)."""
    name, model, processor = family
    explainer = _explainer(model, processor)
    images = _images(2)
    from_pil = np.stack([e.heatmap for e in explainer(images, target=0)])
    from_tensor = explainer.attribute(explainer.preprocess(images)[0], target=0).numpy()
    worst_case("PIL vs pixel_values", name, np.abs(from_pil - from_tensor).max())
    assert np.array_equal(from_pil, from_tensor), name


def test_repeated_calls_are_identical(family, worst_case):
    name, model, processor = family
    explainer = _explainer(model, processor)
    pixels = _pixels(explainer, 2)
    first, second = explainer.attribute(pixels, target=0), explainer.attribute(pixels, target=0)
    worst_case("repeated calls", name, (first - second).abs().max())
    assert torch.equal(first, second), name


def test_float64_matches_float32(family, worst_case):
    """The same model in float64 gives the float32 map within 1e-4."""
    name, model, processor = family
    pixels = _pixels(_explainer(model, processor), 2)
    single = _explainer(model, processor).attribute(pixels, target=0)
    double = _explainer(model, processor, dtype=torch.float64).attribute(pixels.double(), target=0)
    model.float()
    assert worst_case("float64 vs float32", name, (single - double).abs().max()) <= 1e-4, name


def test_train_mode_gives_the_eval_map_and_is_restored(family, worst_case):
    """A model left in train mode is explained in eval mode (same map) and handed back in train mode."""
    name, model, processor = family
    explainer = _explainer(model, processor)
    pixels = _pixels(explainer, 2)
    evaluated = explainer.attribute(pixels, target=0)
    model.train()
    try:
        trained = explainer.attribute(pixels, target=0)
        worst_case("train mode vs eval mode", name, (trained - evaluated).abs().max())
        assert torch.equal(trained, evaluated), name
        assert all(module.training for module in model.modules())
    finally:
        model.eval()


def test_a_user_hook_that_changes_nothing_changes_no_map(family, worst_case):
    name, model, processor = family
    explainer = _explainer(model, processor)
    pixels = _pixels(explainer, 2)
    plain = explainer.attribute(pixels, target=0)
    handles = [module.register_forward_hook(lambda _m, _a, output: output) for module in model.modules()]
    try:
        hooked = explainer.attribute(pixels, target=0)
        worst_case("a no-op user hook", name, (hooked - plain).abs().max())
        assert torch.equal(hooked, plain), name
    finally:
        for handle in handles:
            handle.remove()


INVARIANT_ROLLOUTS = ["normalised_gradient_rollout", "globally_normalised_gradient_rollout", "globally_normalised_gae"]


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e3, 1e6])
def test_logit_scale_does_not_change_the_map(family, scale, worst_case):
    """Logits c * y (the head's weight and bias scaled) give the same map within 1e-4: the feature-map families
    with their defaults, the attention families with each scale-invariant rollout of IIA. The published
    Gradient Rollout (their default) is not scale-invariant, as documented in the README."""
    name, model, processor = family
    choices = [{"fusion": rollout} for rollout in INVARIANT_ROLLOUTS] if name in ATTENTION else [{}]
    for options in choices:
        _check_logit_scale(name, model, processor, scale, worst_case, options)


def _check_logit_scale(name, model, processor, scale, worst_case, options) -> None:
    explainer = _explainer(model, processor, **options)
    pixels = _pixels(explainer, 2)
    plain = explainer.attribute(pixels, target=0)
    heads = _heads(model)
    saved = [
        (head.weight.detach().clone(), None if head.bias is None else head.bias.detach().clone()) for head in heads
    ]
    with torch.no_grad():
        for head in heads:
            head.weight.mul_(scale)
            if head.bias is not None:
                head.bias.mul_(scale)
    try:
        difference = (explainer.attribute(pixels, target=0) - plain).abs().max()
        assert worst_case("logit scale c = 1e-6 .. 1e6", name, difference) <= 1e-4, (name, options)
    finally:
        with torch.no_grad():
            for head, (weight, bias) in zip(heads, saved, strict=True):
                head.weight.copy_(weight)
                if bias is not None:
                    head.bias.copy_(bias)
