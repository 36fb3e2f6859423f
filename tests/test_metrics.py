"""Tests of hf_iia.metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hf_iia.metrics import (
    MetricInputError,
    deletion_auc,
    deletion_curve,
    energy_pointing_game,
    gaussian_blur,
    insertion_auc,
    insertion_curve,
    mask_auroc,
    mask_average_precision,
    object_energy_share,
    perturbation_auc,
    perturbation_curve,
    pointing_game,
)

torch.set_num_threads(1)

DEL_INS_PATH = Path(__file__).resolve().parents[1] / "hf_iia" / "metrics" / "del_ins"


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


class RegionModel(torch.nn.Module):
    """Logits ``[scale * mean of the pixels (all channels) inside region, constant]``.

    The softmax probability of class 0 is therefore ``sigmoid(scale * region_mean - constant)``.
    """

    def __init__(self, region: torch.Tensor, scale: float, constant: float = 0.0) -> None:
        super().__init__()
        self.region = region
        self.scale = scale
        self.constant = constant

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        region_mean = pixel_values[:, :, self.region].mean(dim=(1, 2))
        return torch.stack([self.scale * region_mean, torch.full_like(region_mean, self.constant)], dim=1)


def top_left_region(size: int = 4) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    region[:2, :2] = True
    return region


def trapezoid(values: list[float], step: float) -> float:
    return step * (sum(values) - (values[0] + values[-1]) / 2)


# ----------------------------------------------------------------------------- deletion / insertion


def test_deletion_perfect_and_worst_map_by_hand() -> None:
    region = top_left_region()
    model = RegionModel(region, scale=4.0)
    images = torch.ones(2, 1, 4, 4)
    perfect = region.float()
    worst = 1.0 - region.float()
    curve = deletion_curve(model, images, torch.stack([perfect, worst]), torch.tensor([0, 0]), steps=4)
    p_full = sigmoid(4.0)
    expected_perfect = [p_full, 0.5, 0.5, 0.5, 0.5]  # the object (4 of 16 pixels) is gone after step 1
    expected_worst = [p_full, p_full, p_full, p_full, 0.5]  # the object is deleted last
    assert curve.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.scores[0].tolist() == pytest.approx(expected_perfect, abs=1e-6)
    assert curve.scores[1].tolist() == pytest.approx(expected_worst, abs=1e-6)
    assert curve.auc.tolist() == pytest.approx(
        [trapezoid(expected_perfect, 0.25), trapezoid(expected_worst, 0.25)], abs=1e-6
    )
    assert deletion_auc(model, images, torch.stack([perfect, worst]), [0, 0], steps=4).tolist() == pytest.approx(
        curve.auc.tolist(), abs=0
    )


def test_deletion_partial_ranking_and_baseline_by_hand() -> None:
    model = RegionModel(top_left_region(), scale=2.0)
    rank = torch.full((4, 4), 15.0)
    # Rank order: two object pixels, two background pixels, then the rest of the object.
    for position, (y, x) in enumerate([(0, 0), (0, 1), (3, 3), (3, 2), (1, 0), (1, 1)]):
        rank[y, x] = position
    heatmap = (16.0 - rank).unsqueeze(0)
    image = torch.ones(1, 1, 4, 4)
    scores = deletion_curve(model, image, heatmap, [0], steps=4, baseline=0.5).scores[0]
    # Region mean after step k: 1 -> (0.5 + 0.5 + 1 + 1) / 4 = 0.75 -> 0.5 for the rest.
    expected = [sigmoid(2.0), sigmoid(1.5), sigmoid(1.0), sigmoid(1.0), sigmoid(1.0)]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)


def test_deletion_tensor_baseline_per_channel() -> None:
    model = RegionModel(top_left_region(), scale=2.0)
    images = torch.ones(1, 2, 4, 4)
    heatmap = top_left_region().float().unsqueeze(0)
    scores = deletion_curve(model, images, heatmap, [0], steps=4, baseline=torch.tensor([0.0, 1.0]).view(2, 1, 1))
    # Deleted pixels hold 0 in channel 0 and 1 in channel 1: region mean 0.5.
    assert scores.scores[0].tolist() == pytest.approx([sigmoid(2.0)] + [sigmoid(1.0)] * 4, abs=1e-6)


def test_ties_are_broken_by_row_major_index() -> None:
    first_row = torch.zeros(4, 4, dtype=torch.bool)
    first_row[0] = True
    model = RegionModel(first_row, scale=4.0)
    constant_map = torch.zeros(1, 4, 4)
    scores = deletion_curve(model, torch.ones(1, 1, 4, 4), constant_map, [0], steps=4).scores[0]
    assert scores.tolist() == pytest.approx([sigmoid(4.0), 0.5, 0.5, 0.5, 0.5], abs=1e-6)
    # Least relevant first also takes tied pixels in row-major order.
    negative = perturbation_curve(
        model, torch.ones(1, 1, 4, 4), constant_map, [0], positive=False, fractions=(0.0, 0.25), score="probability"
    )
    assert negative.scores[0].tolist() == pytest.approx([sigmoid(4.0), 0.5], abs=1e-6)


def numpy_gaussian_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Independent reference: 2-D correlation with the outer product of the 1-D kernel, numpy reflect padding."""
    radius = kernel_size // 2
    offsets = np.arange(kernel_size) - radius
    kernel_1d = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d /= kernel_1d.sum()
    kernel = np.outer(kernel_1d, kernel_1d)
    padded = np.pad(image, radius, mode="reflect")
    height, width = image.shape
    out = np.empty_like(image)
    for y in range(height):
        for x in range(width):
            out[y, x] = (padded[y : y + kernel_size, x : x + kernel_size] * kernel).sum()
    return out


def test_gaussian_blur_matches_numpy_reference() -> None:
    images = torch.rand(2, 3, 16, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    blurred = gaussian_blur(images, kernel_size=11, sigma=5.0)
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(
                blurred[b, c].numpy(), numpy_gaussian_blur(images[b, c].numpy(), 11, 5.0), rtol=0, atol=1e-12
            )


def test_insertion_perfect_map_by_hand() -> None:
    region = top_left_region()
    model = RegionModel(region, scale=1.0)
    image = (2.0 * region.double()).view(1, 1, 4, 4)
    blurred_region_mean = numpy_gaussian_blur(image[0, 0].numpy(), 3, 1.0)[region.numpy()].mean()
    heatmap = region.double().unsqueeze(0)
    curve = insertion_curve(model, image, heatmap, [0], steps=4, blur_kernel_size=3, blur_sigma=1.0)
    # Step 0 is the blurred image; from step 1 on the whole object (4 pixels) is restored to 2.
    expected = [sigmoid(blurred_region_mean)] + [sigmoid(2.0)] * 4
    assert curve.scores[0].tolist() == pytest.approx(expected, abs=1e-9)
    auc = insertion_auc(model, image, heatmap, [0], steps=4, blur_kernel_size=3, blur_sigma=1.0)
    assert auc.tolist() == pytest.approx([trapezoid(expected, 0.25)], abs=1e-9)


def test_random_maps_score_worse_than_the_perfect_map() -> None:
    size = 8
    region = torch.zeros(size, size, dtype=torch.bool)
    region[2:5, 3:6] = True
    model = RegionModel(region, scale=3.0)
    generator = torch.Generator().manual_seed(0)
    num_random = 4
    maps = torch.cat([region.float().unsqueeze(0), torch.rand(num_random, size, size, generator=generator)])
    images = (2.0 * region.float()).expand(num_random + 1, 1, size, size)
    targets = torch.zeros(num_random + 1, dtype=torch.long)
    deletion = deletion_auc(model, images, maps, targets, steps=16, batch_size=7)
    insertion = insertion_auc(model, images, maps, targets, steps=16, blur_kernel_size=5, blur_sigma=2.0)
    assert (deletion[1:] > deletion[0]).all()
    assert (insertion[1:] < insertion[0]).all()


def test_deletion_insertion_deterministic_and_batch_size_invariant() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
    ).eval()
    images = torch.randn(3, 3, 12, 12)
    maps = np.random.default_rng(0).random((3, 12, 12))
    targets = np.array([0, 3, 4])
    first = insertion_curve(model, images, maps, targets, steps=6, blur_kernel_size=5, blur_sigma=2.0)
    second = insertion_curve(model, images, maps, targets, steps=6, blur_kernel_size=5, blur_sigma=2.0)
    assert torch.equal(first.scores, second.scores)
    one_by_one = insertion_curve(
        model, images, maps, targets, steps=6, blur_kernel_size=5, blur_sigma=2.0, batch_size=1
    )
    torch.testing.assert_close(first.scores, one_by_one.scores, rtol=0, atol=1e-6)
    repeated = [deletion_auc(model, images, maps, targets, steps=6) for _ in range(2)]
    assert torch.equal(repeated[0], repeated[1])


def test_forward_may_return_an_object_with_logits() -> None:
    model = RegionModel(top_left_region(), scale=4.0)
    wrapped = lambda pixel_values: SimpleNamespace(logits=model(pixel_values))  # noqa: E731
    images = torch.ones(1, 1, 4, 4)
    heatmap = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = deletion_auc(model, images, heatmap, [0], steps=4)
    assert torch.equal(deletion_auc(wrapped, images, heatmap, [0], steps=4), expected)


# ----------------------------------------------------------------------------- positive / negative perturbation


def test_positive_and_negative_perturbation_by_hand() -> None:
    first_row = torch.zeros(10, 10, dtype=torch.bool)
    first_row[0] = True
    model = RegionModel(first_row, scale=2.0, constant=1.0)  # class 0 wins while the row mean exceeds 0.5
    image = torch.ones(1, 1, 10, 10)
    heatmap = torch.arange(100, 0, -1, dtype=torch.float32).view(1, 10, 10)  # the first row is the most relevant
    positive = perturbation_curve(model, image, heatmap, [0], positive=True)
    negative = perturbation_curve(model, image, heatmap, [0], positive=False)
    # Positive: 10% removes the first row. Negative: 90% removes rows 9..1, the first row survives.
    assert positive.scores[0].tolist() == [1.0] + [0.0] * 9
    assert negative.scores[0].tolist() == [1.0] * 10
    assert positive.auc.tolist() == pytest.approx([0.05])
    assert negative.auc.tolist() == pytest.approx([0.9])
    probability = perturbation_auc(model, image, heatmap, [0], positive=True, score="probability")
    expected = [sigmoid(2.0 - 1.0)] + [sigmoid(-1.0)] * 9
    assert probability.tolist() == pytest.approx([trapezoid(expected, 0.1)], abs=1e-6)
    assert perturbation_auc(model, image, heatmap, [0], positive=False).tolist() == pytest.approx([0.9])


def test_fraction_rounding_on_small_images() -> None:
    # 3x3 image, fraction 0.5 -> floor(4.5 + 0.5) = 5 pixels removed.
    row_major = torch.arange(9, 0, -1, dtype=torch.float32).view(1, 3, 3)
    region = torch.zeros(3, 3, dtype=torch.bool)
    region.view(-1)[4] = True  # the 5th pixel in rank order
    model = RegionModel(region, scale=4.0)
    curve = perturbation_curve(
        model, torch.ones(1, 1, 3, 3), row_major, [0], fractions=(0.0, 0.4, 0.5), score="probability"
    )
    # 0.4 -> floor(3.6 + 0.5) = 4 pixels: the region pixel survives.
    assert curve.scores[0].tolist() == pytest.approx([sigmoid(4.0), sigmoid(4.0), 0.5], abs=1e-6)


# ----------------------------------------------------------------------------- input validation


def _valid_inputs() -> dict:
    return {
        "forward": RegionModel(top_left_region(), scale=1.0),
        "pixel_values": torch.ones(2, 1, 4, 4),
        "heatmaps": torch.rand(2, 4, 4),
        "targets": torch.tensor([0, 1]),
    }


@pytest.mark.parametrize(
    ("override", "options", "message"),
    [
        ({"heatmaps": torch.rand(2, 1, 4, 4)}, {}, "shape \\[B, H, W\\]"),
        ({"heatmaps": torch.rand(2, 4, 5)}, {}, "Resize the maps"),
        ({"heatmaps": torch.full((2, 4, 4), float("nan"))}, {}, "NaN"),
        ({"heatmaps": [[0.0]]}, {}, "torch.Tensor or numpy.ndarray"),
        ({"pixel_values": torch.ones(1, 4, 4)}, {}, "\\[B, C, H, W\\]"),
        ({"pixel_values": torch.ones(2, 1, 4, 4, dtype=torch.long)}, {}, "floating point"),
        ({"targets": torch.tensor([0])}, {}, "targets must have shape"),
        ({"targets": torch.tensor([0.0, 1.0])}, {}, "integer"),
        ({"targets": torch.tensor([0, 7])}, {}, "only has 2 classes"),
        ({"targets": torch.tensor([0, -1])}, {}, "non-negative"),
        ({"forward": lambda pixel_values: "not logits"}, {}, "logits"),
        ({"forward": lambda pixel_values: torch.zeros(len(pixel_values))}, {}, "expected \\["),
        ({}, {"steps": 0}, "steps"),
        ({}, {"batch_size": 0}, "batch_size"),
        ({}, {"baseline": torch.zeros(3, 1, 1)}, "broadcast"),
    ],
)
def test_deletion_input_errors(override: dict, options: dict, message: str) -> None:
    inputs = {**_valid_inputs(), **override}
    with pytest.raises(MetricInputError, match=message):
        deletion_auc(inputs["forward"], inputs["pixel_values"], inputs["heatmaps"], inputs["targets"], **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"blur_kernel_size": 11}, "too large"),
        ({"blur_kernel_size": 4}, "odd positive"),
        ({"blur_kernel_size": 3, "blur_sigma": 0.0}, "positive"),
    ],
)
def test_insertion_input_errors(options: dict, message: str) -> None:
    inputs = _valid_inputs()
    with pytest.raises(MetricInputError, match=message):
        insertion_auc(inputs["forward"], inputs["pixel_values"], inputs["heatmaps"], inputs["targets"], **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fractions": (0.0, 0.5, 0.5)}, "strictly increasing"),
        ({"fractions": (0.0, 1.5)}, "strictly increasing"),
        ({"fractions": (0.0,)}, "at least 2"),
        ({"score": "logit"}, "score"),
    ],
)
def test_perturbation_input_errors(options: dict, message: str) -> None:
    inputs = _valid_inputs()
    with pytest.raises(MetricInputError, match=message):
        perturbation_auc(inputs["forward"], inputs["pixel_values"], inputs["heatmaps"], inputs["targets"], **options)


def test_metric_input_error_is_a_value_error() -> None:
    assert issubclass(MetricInputError, ValueError)


# ----------------------------------------------------------------------------- localisation


def single_pixel_mask(y: int, x: int, size: int = 5) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, y, x] = True
    return mask


def peak_map(y: int, x: int, size: int = 5) -> torch.Tensor:
    heatmap = torch.zeros(1, size, size)
    heatmap[0, y, x] = 1.0
    return heatmap


@pytest.mark.parametrize(
    ("peak", "mask_pixel", "tolerance", "hit"),
    [
        ((1, 1), (1, 1), 0, True),
        ((1, 1), (1, 2), 0, False),
        ((1, 1), (1, 3), 1, False),
        ((1, 1), (1, 3), 2, True),
        ((1, 1), (3, 3), 2, False),  # distance sqrt(8) > 2: the disk is not a square
        ((1, 1), (3, 3), 3, True),
        ((0, 0), (4, 4), 1, False),  # near the border
        ((0, 0), (0, 1), 1, True),
    ],
)
def test_pointing_game(peak: tuple[int, int], mask_pixel: tuple[int, int], tolerance: int, hit: bool) -> None:
    result = pointing_game(peak_map(*peak), single_pixel_mask(*mask_pixel), tolerance=tolerance)
    assert result.dtype == torch.bool
    assert result.tolist() == [hit]


def test_pointing_game_takes_first_maximum_in_row_major_order() -> None:
    heatmap = torch.zeros(2, 5, 5)
    heatmap[:, 2, 0] = 1.0
    heatmap[:, 0, 4] = 1.0
    masks = torch.cat([single_pixel_mask(0, 4), single_pixel_mask(2, 0)])
    assert pointing_game(heatmap.numpy(), masks.numpy()).tolist() == [True, False]


def test_energy_pointing_game_by_hand() -> None:
    heatmaps = torch.tensor([[[3.0, 1.0], [-2.0, 0.0]], [[-1.0, 0.0], [0.0, -3.0]]])
    masks = torch.tensor([[[1, 0], [0, 0]], [[1, 0], [0, 0]]])
    # Image 0: positive mass 3 + 1 = 4, of which 3 on the mask. Image 1: no positive mass -> 0.
    assert energy_pointing_game(heatmaps, masks).tolist() == pytest.approx([0.75, 0.0])


def test_object_energy_share_by_hand() -> None:
    heatmaps = torch.tensor([[[3.0, 1.0], [-2.0, 1.0]], [[2.0, 1.5], [0.5, 7.0]], [[-1.0, 0.0], [0.0, 4.0]]])
    masks = torch.tensor([[[1, 0], [0, 0]]] * 3)
    other = torch.tensor([[[0, 1], [1, 0]]] * 3)
    # Image 0: 3 on the object, 1 (+ a negative value, clamped) on the other one; the 1 off both does not count.
    # Image 1: the same mass (2) on both: 0.5, whatever lies off both. Image 2: no positive mass on either object: undefined.
    share = object_energy_share(heatmaps, masks, other)
    assert share[:2].tolist() == pytest.approx([0.75, 0.5]) and share[2].isnan()
    with pytest.raises(MetricInputError, match="disjoint"):
        object_energy_share(heatmaps, masks, masks)


def test_average_precision_and_auroc_by_hand() -> None:
    masks = torch.tensor([[[True, False], [True, False]]] * 3)
    heatmaps = torch.tensor(
        [
            [[0.9, 0.1], [0.8, 0.2]],  # perfect ranking
            [[0.1, 0.9], [0.2, 0.8]],  # inverted ranking
            [[0.5, 0.5], [0.5, 0.5]],  # all tied
        ]
    )
    # Inverted: positives at ranks 3 and 4 -> AP = (1/3 + 2/4) / 2. All tied: AP = precision = 0.5.
    assert mask_average_precision(heatmaps, masks).tolist() == pytest.approx([1.0, (1 / 3 + 2 / 4) / 2, 0.5])
    assert mask_auroc(heatmaps, masks).tolist() == pytest.approx([1.0, 0.0, 0.5])


@pytest.mark.parametrize("with_ties", [False, True])
def test_average_precision_and_auroc_match_sklearn(with_ties: bool) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(int(with_ties))
    heatmaps = rng.integers(0, 5, size=(6, 9, 11)).astype(np.float32) if with_ties else rng.normal(size=(6, 9, 11))
    masks = rng.random((6, 9, 11)) < np.linspace(0.05, 0.7, 6)[:, None, None]
    ap = mask_average_precision(heatmaps, masks)
    auroc = mask_auroc(heatmaps, masks)
    for b in range(6):
        labels, scores = masks[b].ravel(), heatmaps[b].ravel()
        assert ap[b].item() == pytest.approx(sklearn_metrics.average_precision_score(labels, scores), abs=1e-12)
        assert auroc[b].item() == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize(
    ("function", "heatmaps", "masks", "message"),
    [
        (pointing_game, torch.rand(1, 4, 4), torch.ones(1, 4, 5, dtype=torch.bool), "shape of heatmaps"),
        (energy_pointing_game, torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), "no object pixel"),
        (mask_average_precision, torch.rand(1, 4, 4), torch.full((1, 4, 4), 2), "0 and 1"),
        (mask_auroc, torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), "background"),
        (mask_auroc, torch.rand(4, 4), torch.ones(4, 4, dtype=torch.bool), "\\[B, H, W\\]"),
    ],
)
def test_localization_input_errors(function, heatmaps, masks, message: str) -> None:
    with pytest.raises(MetricInputError, match=message):
        function(heatmaps, masks)


def test_pointing_game_rejects_negative_tolerance() -> None:
    with pytest.raises(MetricInputError, match="tolerance"):
        pointing_game(torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), tolerance=-1)


# ----------------------------------------------------------------------------- evaluate module


def test_evaluate_module_matches_direct_functions() -> None:
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(DEL_INS_PATH))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)
    ).eval()
    images = torch.randn(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8)
    targets = torch.tensor([0, 2, 4])
    options = {"steps": 8, "blur_kernel_size": 5, "blur_sigma": 2.0}
    result = metric.compute(heatmaps=maps, targets=targets, pixel_values=images, forward=model, **options)
    deletion = deletion_auc(model, images, maps, targets, steps=8)
    insertion = insertion_auc(model, images, maps, targets, **options)
    assert result["deletion_auc_per_image"] == pytest.approx(deletion.tolist(), abs=1e-12)
    assert result["insertion_auc_per_image"] == pytest.approx(insertion.tolist(), abs=1e-12)
    assert result["deletion_auc"] == pytest.approx(deletion.mean().item(), abs=1e-12)
    assert result["insertion_auc"] == pytest.approx(insertion.mean().item(), abs=1e-12)

    for batch in (slice(0, 2), slice(2, 3)):
        metric.add_batch(heatmaps=maps[batch], targets=targets[batch], pixel_values=images[batch])
    accumulated = metric.compute(forward=model, **options)
    assert accumulated["deletion_auc_per_image"] == pytest.approx(deletion.tolist(), abs=1e-12)
