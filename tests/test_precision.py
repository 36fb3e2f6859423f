"""Maps do not depend on float32 rounding: the package's own arithmetic after the model (fusion, upsampling,
normalisation) must not amplify it, whatever the CPU, the torch build or the batch's shape.

An attention model's rollout is close to a constant (1 / tokens) plus a small contrast; in float32 the rounding of
that constant, which changes with the batch's shape and the BLAS kernel, was stretched by the min-max
normalisation to 2e-4..7e-4 on Intel CPUs. Here the integrals are perturbed by +-2e-7 relative (a few float32
units in the last place, what another CPU or batch size changes) and the map must move by far less than the
batch-invariance tolerance the README states (1e-5 of the map's [0, 1] contrast).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_iia import IIAExplainer
from hf_iia import testing as zoo
from hf_iia.explainer import normalise
from hf_iia.fusions import ROLLOUTS, min_max

# Patch-mean readouts (beit, ijepa, dinov2 with registers) have the flattest rollouts; vit/deit read CLS rows.
ATTENTION = ["beit", "ijepa", "dinov2_with_registers", "vit", "deit"]


def _integrals(explainer: IIAExplainer) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (45, 38 + 7 * i, 3), dtype=np.uint8)) for i in range(2)]
    pixel_values, _ = explainer.preprocess(images)
    result = explainer._integrate(
        explainer.adapter, pixel_values, explainer.resolve_targets(0, 2), explainer.spec, internal_batch_size=64
    )
    return result.integrals, pixel_values


@pytest.mark.parametrize("fusion", ["gae", "gradient_rollout"])
@pytest.mark.parametrize("model_type", ATTENTION)
def test_maps_equal_the_float64_rollout_of_the_same_integrals(model_type, fusion, tmp_path):
    """The map equals the rollout (the default's GAE rule, the published Gradient Rollout) of the same (float32)
    integrals computed here in float64, to 1e-6."""
    folder = zoo.save_tiny(model_type, tmp_path / model_type)
    explainer = IIAExplainer(folder, fusion=fusion, progress=False)
    integrals, pixel_values = _integrals(explainer)
    size = tuple(pixel_values.shape[2:])
    doubled = {tap: v.double() for tap, v in integrals.items()}
    rollout = explainer.adapter.rollout_map(doubled, size, ROLLOUTS[fusion])
    exact = F.interpolate(rollout.unsqueeze(1), size=size, mode=explainer.adapter.upsample_mode).squeeze(1)
    low, high = exact.amin(dim=(1, 2), keepdim=True), exact.amax(dim=(1, 2), keepdim=True)
    exact = (exact - low) / (high - low)
    assert (explainer.postprocess(integrals, pixel_values).double() - exact).abs().max() <= 1e-6, model_type


@pytest.mark.parametrize("model_type", [*ATTENTION, "resnet"])
def test_rounding_of_the_integrals_does_not_move_the_map(model_type, tmp_path):
    explainer = IIAExplainer(zoo.save_tiny(model_type, tmp_path / model_type), progress=False)
    integrals, pixel_values = _integrals(explainer)
    maps = explainer.postprocess(integrals, pixel_values)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        noisy = {
            tap: integral * (1 + 2e-7 * (2 * torch.rand(integral.shape, generator=generator) - 1))
            for tap, integral in integrals.items()
        }
        assert (explainer.postprocess(noisy, pixel_values) - maps).abs().max() <= 2e-6, model_type


def test_rounding_noise_of_a_constant_map_is_not_stretched_into_a_map():
    """A constant map plus float32 rounding noise is constant (zeros and a warning), not noise stretched to [0, 1]."""
    flat = torch.full((1, 8, 8), 0.0625, dtype=torch.float32)
    flat[0, 3, 4] = torch.nextafter(torch.tensor(0.0625), torch.tensor(1.0))  # one unit in the last place
    with pytest.warns(RuntimeWarning, match="constant"):
        assert torch.equal(normalise(flat), torch.zeros_like(flat))
    contrast = flat.clone()
    contrast[0, 3, 4] = 0.0626  # a real difference of 1e-4 is contrast
    assert normalise(contrast).max() == 1


def test_normalise_is_the_one_min_max_of_the_package():
    """Away from the rounding-noise rule, the explainer's normalise is fusions.min_max, to the bit; and min_max
    stretches any non-constant map to a maximum of 1, also one whose span is below the dtype's smallest normal."""
    maps = torch.rand(3, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.3
    assert torch.equal(normalise(maps), min_max(maps))
    tiny = torch.finfo(torch.float32).tiny
    subnormal = torch.tensor([[[0.0, tiny / 4], [tiny / 8, 0.0]]], dtype=torch.float32)
    assert min_max(subnormal).tolist() == [[[0.0, 1.0], [0.5, 0.0]]]
