"""The iterated integral against hand-computed answers and naive loops written here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_iia import IIAExplainer
from hf_iia.engine import INPUT_TAP, Path, integrate, make_spec
from hf_iia.errors import IIAError
from hf_iia.integrands import grad_relu_act


def _mean_power(steps: int, power: int) -> float:
    """Mean of ``a ** power`` over the evenly spaced points ``a = 0, 1/n, ..., 1``."""
    return float((torch.linspace(0, 1, steps + 1, dtype=torch.float64) ** power).mean())


class PooledHead(nn.Module):
    """A real classifier: 1x1 conv features -> global average pool -> ``head(pooled)``."""

    def __init__(self, head: str = "linear") -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Conv2d(3, 4, kernel_size=1, bias=False)
        self.classifier = nn.Linear(4, 3, bias=False)
        self.head = head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.features(pixel_values).mean(dim=(2, 3))
        return self.classifier(pooled if self.head == "linear" else pooled**2)


@pytest.mark.parametrize(
    "options, scale",
    [
        ({"preset": "reference"}, _mean_power(10, 1)),  # image path only, last stage observed
        (
            {"steps": (4, 3), "integrand": "grad_relu_act"},
            _mean_power(4, 1) * _mean_power(3, 1),
        ),  # nested: a1 * A(a0 x)
        # right Riemann sums leave a = 0 out: mean of 1/4..1 times mean of 1/3..1
        ({"steps": (4, 3), "integrand": "grad_relu_act", "rule": "riemann_right"}, (5 / 8) * (2 / 3)),
    ],
)
def test_linear_head_matches_hand_computation(options, scale):
    """Linear features + linear head: dy/dA is the constant W_c / hw, so the integral is E[a] W_c relu(A) / hw."""
    model = PooledHead("linear")
    explainer = IIAExplainer(model, layer="features", progress=False, **options)
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([2, 0])
    result = integrate(explainer.adapter, x, target, explainer.spec, progress=False)
    (integral,) = result.integrals.values()
    activation = model.features(x).detach()
    weight = model.classifier.weight[target].detach() / (5 * 6)  # [B, K]
    expected = scale * weight[:, :, None, None] * activation.clamp_min(0)
    torch.testing.assert_close(integral, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result.logits, model(x).detach())


def test_constant_baselines_start_each_path_there():
    """Linear features, linear head, baselines (b0, b1): the point is b1 + a1 (F(b0 + a0 (x - b0)) - b1)."""
    model = PooledHead("linear")
    b0, b1, steps = 0.7, -0.2, (3, 4)
    explainer = IIAExplainer(
        model, layer="features", steps=steps, baselines=(b0, b1), integrand="grad_relu_act", progress=False
    )
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    result = integrate(explainer.adapter, x, torch.tensor([2]), explainer.spec, progress=False)
    weight = model.classifier.weight[2].detach()[None, :, None, None] / 16  # dy/dA, the same at every point
    points = [
        b1 + a1 * (model.features(b0 + a0 * (x - b0)).detach() - b1)
        for a0 in torch.linspace(0, 1, steps[0] + 1)
        for a1 in torch.linspace(0, 1, steps[1] + 1)
    ]
    expected = weight * torch.stack(points).clamp_min(0).mean(0)
    torch.testing.assert_close(result.integrals["features"], expected, rtol=1e-5, atol=1e-7)
    default = IIAExplainer(model, layer="features", steps=steps, integrand="grad_relu_act", progress=False)
    assert (
        IIAExplainer(
            model, layer="features", steps=steps, baselines=0.0, integrand="grad_relu_act", progress=False
        ).spec
        == default.spec
    )


def test_rule_option_and_family_defaults(tiny_folder):
    """ViTs default to right Riemann sums (5 x 5 -> 25 points), CNNs to the reference's end points (11 x 11)."""
    assert IIAExplainer(tiny_folder("vit"), progress=False).spec.points_per_image == 25
    assert IIAExplainer(tiny_folder("vit"), rule="endpoints", progress=False).spec.points_per_image == 36
    assert IIAExplainer(tiny_folder("vit"), preset="reference", progress=False).spec.points_per_image == 36
    assert IIAExplainer(tiny_folder("resnet"), progress=False).spec.points_per_image == 36
    with pytest.raises(IIAError, match="unknown rule 'simpson'; choose one of"):
        IIAExplainer(tiny_folder("resnet"), rule="simpson", progress=False)


@pytest.mark.parametrize("option", ["steps", "baselines"])
def test_one_value_per_path_is_checked(option):
    """Two paths (image + one layer): three per-path values are refused, naming the count needed."""
    with pytest.raises(IIAError, match=rf"{option}= needs 2 values \(image path \+ 1 level"):
        IIAExplainer(PooledHead("linear"), layer="features", progress=False, **{option: (1, 1, 1)})


def test_gradient_is_taken_at_the_interpolated_point():
    """Squared pooled head: dy/dA_k = 2 w_k mean(r_k) / hw at r = a0 a1 A, so the integral scales with E[a^2]^2."""
    model = PooledHead("square")
    explainer = IIAExplainer(model, layer="features", steps=(3, 5), integrand="grad_relu_act", progress=False)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    result = integrate(explainer.adapter, x, torch.tensor([1]), explainer.spec, progress=False)
    activation = model.features(x).detach()
    pooled = activation.mean(dim=(2, 3))
    grad = 2 * model.classifier.weight[1].detach() * pooled / 16  # [1, K] at a = 1
    scale = _mean_power(3, 2) * _mean_power(5, 2)
    expected = scale * grad[:, :, None, None] * activation.clamp_min(0)
    torch.testing.assert_close(result.integrals["features"], expected, rtol=1e-5, atol=1e-7)


def test_input_observation_is_integrated_gradients():
    """Observing the input with the gradient integrand gives the mean gradient along the image path."""
    model = PooledHead("square")
    explainer = IIAExplainer(model, layer="features", progress=False)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    spec = make_spec((), (INPUT_TAP,), (4,), lambda rep, grad: grad)
    result = integrate(explainer.adapter, x, torch.tensor([0]), spec, progress=False)
    expected = torch.zeros_like(x)
    for a in torch.linspace(0, 1, 5):
        point = (a * x).requires_grad_()
        expected += torch.autograd.grad(model(point)[0, 0], point)[0] / 5
    torch.testing.assert_close(result.integrals[INPUT_TAP], expected)


def _naive_nested(model: nn.Module, layers: list[nn.Module], x: torch.Tensor, target: int, steps: list[int]):
    """The nested integral by definition: one forward/backward per grid point, hooks interpolating each level."""
    grids = [torch.linspace(0, 1, n + 1) for n in steps]
    total = 0
    for point in torch.cartesian_prod(*grids).reshape(-1, len(steps)):
        kept = {}

        def interpolate(level, point=point, kept=kept):
            def hook(module, args, output):
                output = point[level + 1] * output
                kept["rep"] = output
                return output

            return hook

        handles = [layer.register_forward_hook(interpolate(i)) for i, layer in enumerate(layers)]
        try:
            logits = model(point[0] * x).logits
        finally:
            for handle in handles:
                handle.remove()
        grad = torch.autograd.grad(logits[0, target], kept["rep"])[0]
        total = total + grad * kept["rep"].clamp_min(0)
    return (total / grids[0].numel() / torch.tensor([g.numel() for g in grids[1:]]).prod()).detach()


def test_two_level_iia_matches_naive_nested_loop(tiny_folder):
    """Multi-layer IIA (L = 2) on a real ResNet equals the definition computed point by point."""
    explainer = IIAExplainer(
        tiny_folder("resnet"),
        layer=["resnet.encoder.stages.1", "resnet.encoder.stages.2"],
        steps=(2, 3, 2),
        integrand="grad_relu_act",
        progress=False,
    )
    model = explainer.model.eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    result = integrate(explainer.adapter, x, torch.tensor([3]), explainer.spec, progress=False)
    stages = model.resnet.encoder.stages
    expected = _naive_nested(model, [stages[1], stages[2]], x, 3, [2, 3, 2])
    torch.testing.assert_close(result.integrals["resnet.encoder.stages.2"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
@pytest.mark.parametrize("internal_batch_size", [1, 5, 12, 1000])
def test_chunking_does_not_change_the_integral(tiny_folder, internal_batch_size, kind):
    """Chunks that split image points, whole image points, or everything at once give the same integral (for the
    ViT also where a chunk holds an image point's rows only in part: the prefix's batched backward pads them)."""
    folder = tiny_folder(kind)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    reference = IIAExplainer(folder, steps=(3, 3), internal_batch_size=16, progress=False).attribute(x)
    chunked = IIAExplainer(folder, steps=(3, 3), internal_batch_size=internal_batch_size, progress=False).attribute(x)
    torch.testing.assert_close(chunked, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "internal_batch_size, passes",
    [
        (64, [50, 50]),  # 2 images x 50 steps: two even passes, not 64 + 36
        (30, [25, 25, 25, 25]),  # 4 passes either way, each of 25 rows rather than 30 + 30 + 30 + 10
        (7, [7] * 14 + [2]),  # 15 passes of at most ceil(100 / 15) = 7 rows
    ],
)
def test_ig_chunks_are_as_even_as_the_bound_allows(tiny_folder, internal_batch_size, passes):
    """The rows that reach the classifier, pass by pass: as few passes as ``internal_batch_size`` allows, each no
    larger than its share (the peak memory is that of the largest pass)."""
    explainer = IIAExplainer(
        tiny_folder("resnet"), method="ig", internal_batch_size=internal_batch_size, progress=False
    )
    rows: list[int] = []
    explainer.model.classifier.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    explainer.attribute(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)), target=0)
    assert rows == passes


def test_path_points_are_descending_and_inclusive():
    assert Path(4).alphas().tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert Path(0).alphas().tolist() == [1.0]
    with pytest.raises(ValueError):
        Path(-1)


def test_reference_integrand_is_the_documented_one():
    rep = torch.tensor([-1.0, 2.0])
    grad = torch.tensor([3.0, -4.0])
    assert grad_relu_act(rep, grad).tolist() == [0.0, -8.0]
