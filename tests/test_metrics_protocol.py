"""The authors' evaluation protocol (hf_iia.metrics.protocol / information / segmentation): hand-computed tiny
cases, batching invariance, bad inputs, and cross-checks against the PAIR ``saliency`` package and ``quantus``."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from hf_iia.metrics import (
    MetricInputError,
    black_fill,
    confidence_change,
    energy_pointing_game,
    gaussian_bokeh,
    information_curve,
    min_max_normalise,
    paper_perturbation_auc,
    random_pixel_masks,
    segmentation_scores,
)

torch.set_num_threads(1)

HALF = dict(image_mean=[0.5], image_std=[0.5])  # one channel; black is (0 - 0.5) / 0.5 = -1 in normalised space


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def sum_forward(images: torch.Tensor) -> torch.Tensor:
    """Logits ``[sum of all pixel values, 0.5]``: class 0 wins iff the sum exceeds 0.5; p(0) = sigmoid(sum - 0.5)."""
    total = images.to(torch.float64).flatten(1).sum(dim=1)
    return torch.stack([total, torch.full_like(total, 0.5)], dim=1)


# Pixels (normalised) 3, 1, 0, -1 ranked by the map 4 > 3 > 2 > 1. Ten fractions 0.0 .. 0.9 of 4 pixels remove
# floor(4 f + 0.5) = 0, 0, 1, 1, 2, 2, 2, 3, 3, 4 pixels.
IMAGE = torch.tensor([[[[3.0, 1.0], [0.0, -1.0]]]], dtype=torch.float64)
MAP = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
REMOVED = [0, 0, 1, 1, 2, 2, 2, 3, 3, 4]
# Sum of the pixels after k removals (black = -1): most relevant first 3, -1, -3, -4, -4; least first 3, 3, 2, 0, -4.
POS_SUMS = [3.0, -1.0, -3.0, -4.0, -4.0]
NEG_SUMS = [3.0, 3.0, 2.0, 0.0, -4.0]


def _trapezoid_x100(values: list[float]) -> float:
    return 100 * sum(0.1 * (a + b) / 2 for a, b in pairwise(values))


def test_black_fill_is_zero_unnormalised():
    fill = black_fill([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert fill.shape == (1, 3, 1, 1)
    assert torch.allclose(fill.flatten(), torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]).double())
    assert black_fill(**{"image_mean": [0.5], "image_std": [0.5]}).item() == -1.0


def test_pos_neg_accuracy_auc_by_hand():
    # Accuracy: class 0 iff sum > 0.5. POS: 1 at k = 0 only -> curve 1, 1, 0, ..., 0 -> 0.1 + 0.05 = 0.15 -> 15.
    pos = paper_perturbation_auc(sum_forward, IMAGE, MAP, [0], positive=True, **HALF)
    assert pos.tolist() == pytest.approx([15.0])
    # NEG: 1 while k <= 2 -> seven ones then zeros -> 0.6 + 0.05 = 0.65 -> 65.
    neg = paper_perturbation_auc(sum_forward, IMAGE, MAP, [0], positive=False, **HALF)
    assert neg.tolist() == pytest.approx([65.0])


def test_del_ins_probability_auc_by_hand():
    for positive, sums in ((True, POS_SUMS), (False, NEG_SUMS)):
        curve = [sigmoid(sums[k] - 0.5) for k in REMOVED]
        value = paper_perturbation_auc(sum_forward, IMAGE, MAP, [0], positive=positive, score="probability", **HALF)
        assert value.item() == pytest.approx(_trapezoid_x100(curve), abs=1e-12)


def test_adp_pic_by_hand():
    # White image (unnormalised 1, normalised 1); map 0, 1, 2, 4 -> min-max weights 0, 0.25, 0.5, 1 -> masked
    # unnormalised 0, 0.25, 0.5, 1 -> normalised -1, -0.5, 0, 1: the sum drops from 4 to -0.5.
    image = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    heatmap = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).expand(2, 2, 2)
    change = confidence_change(sum_forward, image, heatmap, [0, 1], **HALF)
    p0, p0_masked = sigmoid(3.5), sigmoid(-1.0)  # class 0: sigmoid(sum - 0.5)
    p1, p1_masked = 1 - p0, 1 - p0_masked  # class 1 gains confidence
    assert change.original.tolist() == pytest.approx([p0, p1], abs=1e-12)
    assert change.masked.tolist() == pytest.approx([p0_masked, p1_masked], abs=1e-12)
    assert change.drop.tolist() == pytest.approx([100 * (p0 - p0_masked) / p0, 0.0], abs=1e-10)
    assert change.increase.tolist() == [0.0, 100.0]
    assert change.average_drop == pytest.approx(50 * (p0 - p0_masked) / p0) and change.increase_in_confidence == 50.0


def test_segmentation_scores_by_hand():
    # Map 0, 1, 3, 4 -> r = 0, 0.25, 0.75, 1, mean 0.5 -> predicted object at the last two pixels; mask 0, 1, 1, 1.
    heatmap = torch.tensor([[[0.0, 1.0], [3.0, 4.0]]])
    mask = torch.tensor([[[False, True], [True, True]]])
    scores = segmentation_scores(heatmap, mask)
    assert scores.pixel_accuracy.tolist() == [0.75]
    assert scores.miou.tolist() == pytest.approx([(1 / 2 + 2 / 3) / 2])  # background 1/2, object 2/3
    assert scores.mf1.tolist() == pytest.approx([0.8])  # 2 * 2 / (2 + 3)
    # Scores (1 - r | r) = 1, .75, .25, 0 | 0, .25, .75, 1 vs labels 1, 0, 0, 0 | 0, 1, 1, 1: thresholds 1, .75, .25
    # give (recall, precision) (1/2, 1), (3/4, 3/4), (1, 4/6).
    assert scores.map.tolist() == pytest.approx([0.5 * 1 + 0.25 * 0.75 + 0.25 * 4 / 6])
    assert scores.intersection.tolist() == [[1, 2]] and scores.union.tolist() == [[2, 3]]


def test_segmentation_map_matches_sklearn_two_class_ap():
    metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(3)
    heatmaps = torch.rand(4, 6, 7, generator=generator, dtype=torch.float64).round(decimals=1)  # ties included
    masks = torch.rand(4, 6, 7, generator=generator) > 0.6
    scores = segmentation_scores(heatmaps, masks)
    for index in range(4):
        relevance = min_max_normalise(heatmaps[index : index + 1])[0].numpy().ravel()
        labels = masks[index].numpy().ravel()
        expected_ap = metrics.average_precision_score(
            np.concatenate([~labels, labels]), np.concatenate([1 - relevance, relevance])
        )
        predicted = relevance > relevance.mean()
        assert scores.map[index].item() == pytest.approx(expected_ap, abs=1e-12)
        assert scores.mf1[index].item() == pytest.approx(metrics.f1_score(labels, predicted), abs=1e-12)
        expected_iou = metrics.jaccard_score(labels, predicted, average="macro")
        assert scores.miou[index].item() == pytest.approx(expected_iou, abs=1e-12)


def test_min_max_normalise_of_a_constant_map_is_zero():
    maps = torch.stack([torch.full((2, 2), 3.0), torch.tensor([[1.0, 2.0], [3.0, 5.0]])])
    assert min_max_normalise(maps).tolist() == [[[0, 0], [0, 0]], [[0, 0.25], [0.5, 1]]]


def test_gaussian_bokeh_by_hand():
    # 3x3 image, only the corners kept (always); with a huge sigma every other pixel is the plain mean of the
    # four corners (the weights become equal): (10 + 20 + 30 + 41) / 4 = 25.25 -> 25.
    image = torch.tensor([[[[10, 99, 20], [99, 99, 99], [30, 99, 41]]]], dtype=torch.uint8)
    filled = gaussian_bokeh(image, torch.zeros(1, 3, 3, dtype=torch.bool), sigma=1e4)
    assert filled.tolist() == [[[[10, 25, 20], [25, 25, 25], [30, 25, 41]]]]
    # Kept pixels keep their value; with sigma 0.5 (radius 2) the centre is within reach of every kept pixel.
    keep = torch.zeros(1, 3, 3, dtype=torch.bool)
    keep[0, 1, 1] = True
    filled = gaussian_bokeh(image, keep, sigma=0.5)
    assert filled[0, 0, 1, 1] == 99 and filled[0, 0, 0, 0] == 10


def test_random_pixel_masks_are_seeded_and_sized():
    masks = random_pixel_masks(3, 10, 20, fraction=0.05, seed=1)
    assert masks.shape == (3, 10, 20) and masks.flatten(1).sum(dim=1).tolist() == [10, 10, 10]
    assert torch.equal(masks, random_pixel_masks(3, 10, 20, fraction=0.05, seed=1))
    assert not torch.equal(masks[0], masks[1])


def _smooth_images(count: int, size: int, seed: int) -> torch.Tensor:
    """``[count, 3, size, size]`` normalised (mean 0.5, std 0.25) images in [0, 1] with structure and some texture."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator, dtype=torch.float64)
    base = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    noise = 0.15 * torch.rand(count, 3, size, size, generator=generator, dtype=torch.float64)
    return ((base * 0.85 + noise).clamp(0, 1) - 0.5) / 0.25


class LinearModel(torch.nn.Module):
    def __init__(self, size: int, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(3 * size * size, classes, generator=generator, dtype=torch.float64) / size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(torch.float64).flatten(1) @ self.weight


NORM = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])


def test_batching_invariance_of_every_protocol_metric():
    size = 12
    model = LinearModel(size)
    images = _smooth_images(3, size, seed=1)
    maps = torch.rand(3, size, size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    targets = model(images).argmax(dim=1)
    masks = random_pixel_masks(3, size, size, fraction=0.05)
    options = dict(random_masks=masks, **NORM)
    together = (
        paper_perturbation_auc(model, images, maps, targets, positive=True, score="probability", **NORM),
        confidence_change(model, images, maps, targets, **NORM).drop,
        information_curve(model, images, maps, targets, batch_size=5, **options).curve_y,
    )
    for index in range(3):
        one = slice(index, index + 1)
        alone = (
            paper_perturbation_auc(
                model, images[one], maps[one], targets[one], positive=True, score="probability", **NORM
            ),
            confidence_change(model, images[one], maps[one], targets[one], batch_size=1, **NORM).drop,
            information_curve(
                model, images[one], maps[one], targets[one], batch_size=2, random_masks=masks[one], **NORM
            ).curve_y,
        )
        for batched, single in zip(together, alone, strict=True):
            torch.testing.assert_close(batched[one], single, equal_nan=True, rtol=0, atol=1e-12)
    segmentation = segmentation_scores(maps, masks)
    assert segmentation_scores(maps[1:2], masks[1:2]).map.item() == segmentation.map[1].item()


def test_information_curve_matches_the_saliency_package(monkeypatch):
    pic = pytest.importorskip("saliency.metrics.pic")
    # saliency 0.2.1 calls np.trapz, which NumPy 2 removed; np.trapezoid is the same function renamed.
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    size, count = 16, 4
    model = LinearModel(size, seed=4)
    images = _smooth_images(count, size, seed=5)
    targets = model(images).argmax(dim=1)
    maps = torch.rand(count, size, size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    maps[:, 4:12, 4:12] += 1.0  # a salient centre, so the curve has structure
    random_masks = random_pixel_masks(count, size, size, seed=7)

    def griddata_bokeh(batch: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        blurred = [
            pic.create_blurred_image(image.permute(1, 2, 0).numpy(), mask.numpy())
            for image, mask in zip(batch, keep, strict=True)
        ]
        return torch.from_numpy(np.stack(blurred)).permute(0, 3, 1, 2)

    compared = 0
    for score in ("probability", "accuracy"):
        ours = information_curve(
            model, images, maps, targets, score=score, random_masks=random_masks, reconstruct=griddata_bokeh, **NORM
        )
        for index in range(count):
            target = int(targets[index])

            def predict(batch: np.ndarray, target: int = target, score: str = score) -> list[float]:
                pixels = (torch.from_numpy(batch).permute(0, 3, 1, 2).double() / 255 - 0.5) / 0.25
                logits = model(pixels)
                if score == "accuracy":
                    return (logits.argmax(dim=1) == target).double().tolist()
                return logits.softmax(dim=1)[:, target].tolist()

            uint8 = ((images[index] * 0.25 + 0.5) * 255).clamp(0, 255).round().to(torch.uint8)
            try:
                theirs = pic.compute_pic_metric(
                    uint8.permute(1, 2, 0).numpy(),
                    maps[index].numpy(),
                    random_masks[index].numpy(),
                    predict,
                    saliency_thresholds=[0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75],
                    min_pred_value=0.0,
                )
            except pic.ComputePicMetricError:
                assert not ours.valid[index]
                continue
            assert ours.valid[index]
            np.testing.assert_allclose(ours.curve_x.numpy(), theirs.curve_x, rtol=0, atol=1e-12)
            np.testing.assert_allclose(ours.curve_y[index].numpy(), theirs.curve_y, rtol=0, atol=1e-4)
            assert ours.auc[index].item() == pytest.approx(theirs.auc, abs=1e-4)
            compared += 1
    assert compared >= 4  # enough images pass saliency's filters for the comparison to mean something


def test_energy_pointing_game_matches_quantus_relevance_mass_accuracy():
    quantus = pytest.importorskip("quantus")
    generator = torch.Generator().manual_seed(8)
    maps = torch.rand(5, 8, 8, generator=generator, dtype=torch.float64)  # non-negative: quantus sums raw values
    masks = torch.rand(5, 8, 8, generator=generator) > 0.5
    masks[:, 0, 0] = True
    metric = quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False)
    theirs = metric(
        model=None,
        x_batch=np.zeros((5, 1, 8, 8), dtype=np.float32),
        y_batch=np.zeros(5, dtype=np.int64),
        a_batch=maps.numpy()[:, None],
        s_batch=masks.numpy()[:, None].astype(np.float64),
        channel_first=True,
    )
    np.testing.assert_allclose(energy_pointing_game(maps, masks).numpy(), theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: black_fill([0.5, 0.5], [0.5]), "one value per channel"),
        (lambda: black_fill([0.5], [0.0]), "non-zero"),
        (lambda: paper_perturbation_auc(sum_forward, IMAGE, MAP, [0], positive=True, **NORM), "channels"),
        (lambda: paper_perturbation_auc(sum_forward, IMAGE, MAP[..., :1], [0], positive=True, **HALF), "heatmaps"),
        (lambda: confidence_change(sum_forward, IMAGE, MAP, [0, 1], **HALF), "targets"),
        (lambda: confidence_change(sum_forward, IMAGE, MAP[0], [0], **HALF), r"\[B, H, W\]"),
        (lambda: confidence_change(sum_forward, IMAGE, MAP, [0], batch_size=0, **HALF), "batch_size"),
        (lambda: information_curve(sum_forward, IMAGE, MAP, [0], score="logit", **HALF), "score"),
        (lambda: information_curve(sum_forward, IMAGE, MAP, [0], thresholds=[0.5, 0.1], **HALF), "increasing"),
        (
            lambda: information_curve(sum_forward, IMAGE, MAP, [0], random_masks=torch.ones(1, 3, 3), **HALF),
            "random_masks",
        ),
        (lambda: segmentation_scores(MAP, torch.zeros(1, 2, 2, dtype=torch.bool)), "no object"),
        (lambda: segmentation_scores(MAP, torch.full((1, 2, 2), 2)), "0 and 1"),
        (lambda: gaussian_bokeh(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.ones(1, 2, 2).bool(), 0), "sigma"),
    ],
)
def test_bad_inputs_raise_metric_input_error(call, match):
    with pytest.raises(MetricInputError, match=match):
        call()
