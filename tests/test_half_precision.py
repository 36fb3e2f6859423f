"""Half precision on CPU, and the vanishing points of the engine that make float16 work at the default preset.

At a level's ``a = 0`` with baseline 0 the interpolated representation is exactly zero, so an integrand that vanishes
there (``relu(g * 0) = 0``) contributes nothing whatever the gradient: the engine does not compute those points. In
float16 the gradient there can overflow (ConvNeXt's head LayerNorm at an all-zero feature map: its eps 1e-12 is 0 in
float16, so 1 / sqrt(0 + eps) is inf), which used to make the default preset refuse every float16 ConvNeXt.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_iia import IIAExplainer
from hf_iia.engine import INPUT_TAP, make_spec
from hf_iia.errors import NumericalError
from hf_iia.integrands import gradient, relu_grad_act
from hf_iia.testing import SmallCNN, build_tiny, pixels

HALF_KINDS = ("resnet", "convnext", "efficientnet", "vit", "deit", "swin", "timm_wrapper")
"""Model types (of :data:`hf_iia.testing.TINY_OVERRIDES`) whose float16 and bfloat16 maps are checked on CPU."""

HALF_TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 1e-1}
"""Largest ``|half map - float32 map|`` allowed (maps min-max normalised to [0, 1], so against a contrast of 1).
Measured worst cases over :data:`HALF_KINDS`, model and image seeds 0, 1, 2 (4 images each), CPU: float16 6.4e-3,
bfloat16 3.3e-2 (both timm's test_resnet; the other families: float16 <= 2.6e-3, bfloat16 <= 2.7e-2). The tolerances
leave a margin of 3x. bfloat16 keeps 8 bits of mantissa to float16's 11."""


def _trained_like(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw the weights as a trained network has them: variance-preserving convolutions and linears, nonzero
    biases, norm scales near 1.

    The zoo's initialisation (transformers' ``normal(0, 0.02)``, zero biases) is degenerate here: EfficientNet's
    signal shrinks to 1e-24 (below float16's range, so every half map is flat), and with zero biases the all-zero
    baseline image runs an all-zero network, whose LayerNorms overflow in float16 (see the module docstring).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) / module.weight[0].numel() ** 0.5
                )
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=generator))
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def _save_trained_like(kind: str, folder: Path, seed: int = 0) -> str:
    model, processor = build_tiny(kind, seed=seed)
    _trained_like(model, seed).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return str(folder)


def _full(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """:func:`~hf_iia.integrands.relu_grad_act` not declared vanishing: the engine computes every point of it."""
    return relu_grad_act(rep, grad)


# ---------------------------------------------------------------------------------------- which points vanish
@pytest.mark.parametrize(
    "levels, observe, steps, options, vanishing",
    [
        (["s"], ["s"], (5, 5), {}, 6),  # the CNN default: the level's a = 0 at each of the 6 image points
        (["s"], ["s"], (5, 5), {"baselines": (0.0, 0.5)}, 0),  # a level baseline of 0.5: the point is 0.5, not 0
        (["s"], ["s"], (5, 5), {"rules": ("riemann_right",) * 2}, 0),  # no a = 0 point at all
        (["s"], ["s"], (5, 5), {"rules": ("riemann_right", "endpoints")}, 5),  # a0 = 0 left out, a1 = 0 vanishes
        (["s"], ["s"], (5, 5), {"integrand": gradient}, 0),  # q(0, g) = g: not zero
        (["b2"], ["b0", "b1", "b2"], (5, 5), {}, 0),  # rollout: earlier blocks are not zero there
        (["s1", "s2"], ["s2"], (5, 5, 5), {}, 36),  # IIA3: the last level's a = 0, at every (a0, a1)
        (["s1", "s2"], ["s1", "s2"], (5, 5, 5), {}, 6),  # both observed: both levels at a = 0
        ([], [INPUT_TAP], (5,), {"integrand": relu_grad_act}, 1),  # the input from the constant 0 at a0 = 0
        ([], [INPUT_TAP], (5,), {"integrand": relu_grad_act, "start": torch.zeros_like}, 0),  # a start: not known 0
    ],
)
def test_vanishing_points_follow_from_the_spec(levels, observe, steps, options, vanishing):
    """The points left out are exactly those where every observed tap is a zero level (or a zero input)."""
    integrand = options.pop("integrand", relu_grad_act)
    spec = make_spec(levels, observe, steps, integrand, **options)
    assert int(spec.vanishing_points().sum()) == vanishing
    assert spec.evaluated_points_per_image == spec.points_per_image - vanishing
    assert not spec.vanishing_points()[0]  # the unmodified input (every a = 1) is always computed


def test_cnn_default_computes_five_sixths_of_the_points(tiny_folder):
    """5 steps per path, endpoints rule: 6 x 6 points per image, of which the 6 at the level's a = 0 are not run
    through the head (hooks count the rows): 30 per image, and still 6 image points through the stages."""
    explainer = IIAExplainer(str(tiny_folder("convnext")), progress=False)
    (level,) = (tap for tap, _ in explainer.spec.levels)
    rows = {"head": 0, "level": 0}

    def count(name: str):
        return lambda module, args: rows.__setitem__(name, rows[name] + args[0].shape[0])

    explainer.model.classifier.register_forward_pre_hook(count("head"))
    explainer.model.get_submodule(level).register_forward_pre_hook(count("level"))
    explainer.attribute(pixels(3, size=32))
    assert rows == {"head": 3 * 30, "level": 3 * 6}
    assert explainer.spec.points_per_image == 36 and explainer.spec.evaluated_points_per_image == 30


@pytest.mark.parametrize("kind, preset", [("resnet", "default"), ("convnext", "iia3"), ("timm", "default")])
def test_vanishing_points_leave_float32_maps_unchanged(tiny_folder, kind, preset):
    """The maps equal those of the full computation (every point, the same weights): only exact zeros are left out,
    so the sums differ by float reassociation at most (chunks hold other rows)."""
    explainer = IIAExplainer(str(tiny_folder(kind)), preset=preset, progress=False)
    full = IIAExplainer(str(tiny_folder(kind)), preset=preset, progress=False)
    full.spec = replace(full.spec, integrand=_full)
    assert (
        explainer.spec.evaluated_points_per_image < full.spec.evaluated_points_per_image == full.spec.points_per_image
    )
    x = pixels(3, size=32)
    torch.testing.assert_close(explainer.attribute(x), full.attribute(x), rtol=0, atol=1e-6)


class _Norm(SmallCNN):
    """``sqrt(f^2)`` of the features (``absolute=False``: d/df = f/|f|, 0/0 where f = 0) or ``|f|``
    (``absolute=True``: the same function, gradient sign(0) = 0 there)."""

    def __init__(self, absolute: bool) -> None:
        super().__init__()
        self.absolute = absolute

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.features(pixel_values)
        return self.classifier((features.abs() if self.absolute else (features * features).sqrt()).mean(dim=(2, 3)))


def test_an_undefined_gradient_at_a_vanishing_point_alone_is_not_computed():
    """The feature map is zero only at the level's a = 0 (the convolutions have biases), where sqrt's gradient is
    0/0: the point is not computed, and the map is that of ``|f|`` with every point computed, whose gradient is
    finite there (any finite gradient times the zero representation gives the same 0)."""
    x = pixels(2)
    sqrt = IIAExplainer(_Norm(absolute=False), layer="features", steps=3, progress=False)
    full = IIAExplainer(_Norm(absolute=True), layer="features", steps=3, progress=False)
    full.spec = replace(full.spec, integrand=_full)
    torch.testing.assert_close(sqrt.attribute(x), full.attribute(x), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", HALF_KINDS)
def test_half_precision_matches_float32(tmp_path, kind, dtype):
    """Every family of :data:`HALF_KINDS` runs its default preset in half precision on CPU and gives the float32 maps
    within :data:`HALF_TOLERANCE` (the same targets: a top-1 flip between dtypes would compare other classes)."""
    folder = _save_trained_like(kind, tmp_path / kind)
    reference = IIAExplainer(folder, progress=False)
    x = pixels(4, size=32)
    targets = reference.logits(x).argmax(dim=1).tolist()
    half = IIAExplainer(folder, dtype=dtype, progress=False)
    difference = (half.attribute(x, target=targets) - reference.attribute(x, target=targets)).abs().max()
    assert difference <= HALF_TOLERANCE[dtype]


def test_float16_refuses_an_all_zero_network(zoo_folder):
    """The zoo's ConvNeXt has zero biases: at the baseline image (a0 = 0, which is no level's zero) every layer is
    zero and the head's LayerNorm overflows in float16. The engine cannot know that without computing it, so it
    computes it and refuses, naming the way out."""
    explainer = IIAExplainer(str(zoo_folder("convnext")), dtype=torch.float16, progress=False)
    with pytest.raises(NumericalError, match="riemann_right"):
        explainer.attribute(pixels(1, size=32))
    explainer = IIAExplainer(str(zoo_folder("convnext")), dtype=torch.float16, rule="riemann_right", progress=False)
    assert torch.isfinite(explainer.attribute(pixels(1, size=32))).all()
