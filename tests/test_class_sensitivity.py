"""Class sensitivity (issue 20, part 5): the metric on maps whose answer is known, and contrastive targets
(``contrast=``) through the engine for every method, checked against autograd on real tiny models."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
import torch
from torch import nn

from hf_iia import IIAExplainer
from hf_iia.engine import INPUT_TAP, integrate, make_spec, target_score
from hf_iia.errors import MetricInputError, TargetError
from hf_iia.fusions import min_max
from hf_iia.integrands import gradient
from hf_iia.methods import METHODS, methods_for
from hf_iia.metrics import MetricInputs, class_sensitivity, get_metric, map_correlation
from hf_iia.testing import TINY_KINDS, pixels, save_tiny
from hf_iia.tools.audit.measures import audit_metrics

SIZE = 32


@pytest.fixture(scope="module", params=["resnet", "vit", "timm"])
def folder(request, tmp_path_factory):
    """A tiny random checkpoint of each kind of family, saved with its processor (the public loading path)."""
    return save_tiny(TINY_KINDS[request.param], tmp_path_factory.mktemp(request.param))


def _hand_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Four pairs of 8 x 8 maps whose correlation is known: the same map rescaled and shifted (r = 1), the map
    reversed (r = -1), two patterns whose centred pixels are orthogonal (left/right halves vs top/bottom halves:
    r = 0), and a map against a constant (undefined)."""
    ramp = torch.arange(64, dtype=torch.float64).view(8, 8) / 63
    left = torch.zeros(8, 8, dtype=torch.float64)
    left[:, :4] = 1
    top = torch.zeros(8, 8, dtype=torch.float64)
    top[:4] = 1
    maps = torch.stack([ramp, ramp, left, ramp])
    others = torch.stack([0.5 * ramp + 0.2, 1 - ramp, top, torch.full((8, 8), 0.3, dtype=torch.float64)])
    return maps, others


def test_class_sensitivity_of_maps_with_a_known_answer():
    maps, others = _hand_maps()
    values = class_sensitivity(MetricInputs(maps, torch.zeros(4, dtype=torch.long), other_maps=others))
    assert values[:3].tolist() == pytest.approx([0.0, 2.0, 1.0], abs=1e-12)
    assert math.isnan(values[3])  # a constant map has no correlation: undefined, not 1
    metric = get_metric("class_sensitivity")
    assert metric.higher_is_better and metric.needs_other_maps
    assert metric.values(MetricInputs(maps, torch.zeros(4, dtype=torch.long), other_maps=others))[3] is None
    # Pearson's r ignores each map's offset and positive scale: min-max normalising changes nothing.
    assert map_correlation(min_max(maps[:3]), min_max(others[:3])).tolist() == pytest.approx([1, -1, 0], abs=1e-12)


def test_class_sensitivity_needs_second_maps_of_the_same_shape():
    maps, others = _hand_maps()
    inputs = MetricInputs(maps, torch.zeros(4, dtype=torch.long))
    assert not get_metric("class_sensitivity").applies_to(inputs)
    with pytest.raises(MetricInputError, match="other_maps="):
        class_sensitivity(inputs)
    with pytest.raises(MetricInputError, match="shape of maps"):
        map_correlation(maps, others[:, :4])
    # the audit leaves it out (a second map per row would double its cost); the bench reports it
    assert "class_sensitivity" not in [metric.key for metric in audit_metrics()]


def _by_hand(logits: torch.Tensor, targets: torch.Tensor, contrast: str) -> torch.Tensor:
    """The contrastive score written out per image: z_c minus the mean or the max of the other logits, or the log of
    the softmax probability."""
    rows = []
    for row, target in zip(logits, targets.tolist(), strict=True):
        others = torch.cat([row[:target], row[target + 1 :]])
        if contrast == "log_softmax":
            rows.append(torch.log(row.exp()[target] / row.exp().sum()))
        else:
            rows.append(row[target] - (others.mean() if contrast == "mean" else others.max()))
    return torch.stack(rows)


@pytest.mark.parametrize("contrast", ["mean", "max", "log_softmax"])
def test_the_engine_differentiates_the_contrastive_score_as_autograd_does(folder, contrast):
    """The gradient at the input of ``z_c - mean/max_{j != c} z_j`` that the engine integrates (one point a = 1,
    integrand = the gradient) equals autograd's of the expression written out, on every kind of family."""
    explainer = IIAExplainer(folder, progress=False)
    x = pixels(3, seed=1, size=SIZE)
    targets = torch.tensor([0, 2, 1])
    spec = replace(make_spec((), (INPUT_TAP,), (0,), gradient), contrast=contrast)
    (engine_gradient,) = integrate(explainer.adapter, x, targets, spec, progress=False).integrals.values()
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(_by_hand(explainer.adapter.logits(leaf), targets, contrast).sum(), leaf)
    scale = expected.abs().max()
    assert scale > 0
    torch.testing.assert_close(engine_gradient, expected, rtol=0, atol=1e-5 * float(scale))
    plain = integrate(explainer.adapter, x, targets, make_spec((), (INPUT_TAP,), (0,), gradient), progress=False)
    assert (plain.integrals[INPUT_TAP] - engine_gradient).abs().max() > 1e-3 * scale  # a different scalar


def test_contrast_applies_to_each_of_several_targets_and_not_to_a_target_function(folder):
    """``top_k`` under a contrast explains each class's contrastive score (each map equals that class explained
    alone with the contrast); a target function defines the whole scalar, so a contrast with one is refused."""
    explainer = IIAExplainer(folder, method="ig", steps=4, contrast="max", progress=False)
    x = pixels(1, seed=2, size=SIZE)
    several = explainer.attribute(x, "top_k:2")  # [1, 2, H, W]
    ranked = explainer.logits(x).argsort(dim=1, descending=True)[0, :2].tolist()
    for column, target in enumerate(ranked):
        torch.testing.assert_close(several[0, column], explainer.attribute(x, target)[0], rtol=0, atol=1e-5)
    with pytest.raises(TargetError, match="build the contrast into it"):
        explainer.attribute(x, lambda logits: logits[:, 0])


def test_target_score_matches_the_expression_and_refuses_what_has_no_meaning():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = torch.tensor([0, 4, 2, 2])
    for contrast in ("mean", "max", "log_softmax"):
        torch.testing.assert_close(target_score(logits, targets, contrast), _by_hand(logits, targets, contrast))
    assert torch.equal(target_score(logits, targets), logits[torch.arange(4), targets])
    with pytest.raises(TargetError, match="unknown contrast 'min'"):
        target_score(logits, targets, "min")  # type: ignore[arg-type]
    with pytest.raises(TargetError, match="at least two classes"):
        target_score(logits[:, :1], torch.zeros(4, dtype=torch.long), "mean")


def test_every_method_explains_the_contrastive_score(folder):
    """``IIAExplainer(contrast=)`` reaches the scalar of every method that applies to the family (a map differs
    from the logit's map for a linear-in-gradient method by exactly the contrast's combination of class maps), keeps
    it through pickling, and refuses an unknown contrast before any work."""
    base = IIAExplainer(folder, progress=False)
    x = pixels(2, seed=2, size=SIZE)
    for name in methods_for(base.adapter):
        explainer = IIAExplainer(base.model, base.processor, method=name, contrast="mean", progress=False)
        assert explainer.spec.contrast == "mean", name
        assert pickle.loads(pickle.dumps(explainer)).spec.contrast == "mean", name
        assert explainer.attribute(x, 1).shape == (2, SIZE, SIZE)
    with pytest.raises(TargetError, match="unknown contrast"):
        IIAExplainer(base.model, base.processor, contrast="median")  # type: ignore[arg-type]
    # IG is linear in the gradient: its integral of z_c - mean_j z_j is the same combination of its class integrals.
    ig = IIAExplainer(base.model, base.processor, method="ig", steps=4, progress=False)
    contrastive = IIAExplainer(base.model, base.processor, method="ig", steps=4, contrast="mean", progress=False)
    classes = base.model.config.num_labels
    per_class = [
        integrate(ig.adapter, x, torch.full((2,), c), ig.spec, progress=False).integrals[INPUT_TAP]
        for c in range(classes)
    ]
    (got,) = integrate(contrastive.adapter, x, torch.ones(2, dtype=torch.long), contrastive.spec).integrals.values()
    expected = per_class[1] - sum(per_class[c] for c in range(classes) if c != 1) / (classes - 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_score_cam_weighs_its_channels_by_the_contrastive_score(tmp_path):
    """Score-CAM scores its masked images itself: with ``contrast="max"`` each channel's weight is the softmax over
    channels of ``z_c - max_{j != c} z_j`` of the image masked by that channel."""
    explainer = IIAExplainer(save_tiny("resnet", tmp_path), method="scorecam", contrast="max", progress=False)
    x = pixels(1, seed=3, size=SIZE)
    targets = torch.tensor([2])
    method = METHODS["scorecam"]
    (activations,) = integrate(explainer.adapter, x, targets, explainer.spec, progress=False).integrals.values()
    (weighted,) = method.run(explainer.adapter, x, targets, explainer.spec, progress=False).integrals.values()
    masks = min_max(
        nn.functional.interpolate(activations[0][:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=True)
    )
    with torch.no_grad():
        scores = _by_hand(explainer.adapter.logits(x * masks), torch.full((masks.shape[0],), 2), "max")
    torch.testing.assert_close(
        weighted[0],
        scores.softmax(dim=0)[:, None, None] * activations[0],
        rtol=1e-4,
        atol=1e-6 * float(activations.abs().max()),
    )
