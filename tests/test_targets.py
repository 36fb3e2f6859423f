"""Several targets in one call (``top_k=`` / ``target="top_k:k"``, ``threshold=``) and callable targets, on tiny Hub
folders loaded through the public API: each map equals explaining its class (or its scalar) alone, and the classes
share the forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import hf_iia
from hf_iia import IIAExplainer
from hf_iia.engine import integrate
from hf_iia.errors import TargetError
from hf_iia.labels import Selection, selection
from hf_iia.testing import TINY_KINDS, depth_width, pixels, save_tiny, save_zero_shot

# Maps are min-max normalised to [0, 1] (contrast 1): two computations of one map agree to float32 rounding.
MAP_TOLERANCE = 1e-5

METHODS = {
    "vit": ["iia", "ig", "gradient_rollout", "attnlrp"],
    "deit": ["iia"],
    "resnet": ["iia", "gradcam", "scorecam", "ig"],
    "convnext": ["iia", "layercam"],
    "timm": ["iia", "scorecam"],
}
CASES = [(kind, method) for kind, methods in METHODS.items() for method in methods]


def _explainer(zoo_explainer, kind: str, method: str, **options) -> IIAExplainer:
    if method not in ("iia", "ig"):
        options["steps"] = None  # the comparison methods take no steps
    return zoo_explainer(kind, method=method, **options)


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8))


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_top_k_maps_equal_each_class_explained_alone(zoo_explainer, kind, method):
    """A list of images -> a list of lists, best first (the classes ranked by score); every map, score and label
    equals explaining that class alone."""
    explainer = _explainer(zoo_explainer, kind, method)
    x = pixels(2, seed=1)
    explained = explainer(x, top_k=3)
    scores = explainer.class_scores(explainer.logits(x)).cpu()
    assert [len(items) for items in explained] == [3, 3]
    for b, items in enumerate(explained):
        assert [item.target for item in items] == scores[b].argsort(descending=True, stable=True)[:3].tolist()
        for item in items:
            alone = explainer(x, target=[item.target] * 2)[b]
            assert (item.label, item.score_function) == (alone.label, alone.score_function)
            assert item.score == pytest.approx(alone.score, abs=1e-6)
            np.testing.assert_allclose(item.heatmap, alone.heatmap, atol=MAP_TOLERANCE)


def test_top_k_forms_and_return_shapes(zoo_explainer):
    """``target="top_k:k"`` equals ``top_k=k``; one image -> a list; ``attribute`` -> ``[B, k, H, W]``; top_k above
    the number of classes gives every class (as the pipelines cap it)."""
    explainer = zoo_explainer("resnet")
    x = pixels(2, seed=2)
    by_keyword, by_string = explainer(x, top_k=2), explainer(x, target="top_k:2")
    for first, second in zip(by_keyword, by_string, strict=True):
        for a, b in zip(first, second, strict=True):
            assert a.target == b.target
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=MAP_TOLERANCE)
    single = explainer(x[0], top_k=2)
    assert isinstance(single, list) and [item.target for item in single] == [item.target for item in by_keyword[0]]
    maps = explainer.attribute(x, "top_k:2")
    assert maps.shape == (2, 2, *x.shape[2:])
    np.testing.assert_allclose(maps[1, 1].numpy(), by_keyword[1][1].heatmap, atol=MAP_TOLERANCE)
    assert explainer.attribute(x[0], "top_k:2").shape == (1, 2, *x.shape[2:])  # one [C, H, W] input
    everything = explainer(_image(0), top_k=50)
    assert sorted(item.target for item in everything) == sorted(explainer.id2label)
    assert explainer([], top_k=2) == []


def _count_rows(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """A forward hook on ``model`` counting the rows of its outputs (the images it runs), and its handle."""
    rows: list[int] = []

    def hook(module, args, output):
        logits = output.logits if hasattr(output, "logits") else output
        rows.append(int(logits.shape[0]))

    return rows, model.register_forward_hook(hook)


@pytest.mark.parametrize(("kind", "method"), [("vit", "iia"), ("resnet", "ig"), ("resnet", "scorecam")])
def test_top_k_shares_the_forward_passes(zoo_explainer, kind, method):
    """Explaining three classes runs the model on exactly as many rows as explaining one: the classes share every
    forward pass (one backward each), and no separate ranking pass runs."""
    explainer = _explainer(zoo_explainer, kind, method)
    x = pixels(2, seed=3)
    rows, handle = _count_rows(explainer.model)
    try:
        explainer(x)
        one = sum(rows)
        rows.clear()
        explainer(x, top_k=3)
        assert sum(rows) == one
    finally:
        handle.remove()


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_callable_target_equals_the_same_class_by_index(zoo_explainer, kind, method):
    """``target=lambda logits: logits[:, 3]`` gives the maps of ``target=3``; the explanation says what it explains:
    target -1, the callable's name, its value on the image as the score."""
    explainer = _explainer(zoo_explainer, kind, method)
    x = pixels(2, seed=4)
    by_function = explainer(x, target=lambda logits: logits[:, 3])
    by_index = explainer(x, target=3)
    logits = explainer.logits(x).cpu()
    for b, (function, index) in enumerate(zip(by_function, by_index, strict=True)):
        assert (function.target, function.label, function.score_function) == (-1, "<lambda>", "none")
        assert function.score == pytest.approx(float(logits[b, 3]), abs=1e-5)
        np.testing.assert_allclose(function.heatmap, index.heatmap, atol=MAP_TOLERANCE)


def test_callable_margin_is_explained_row_by_row(zoo_explainer):
    """A margin between two classes, named: the label is the function's name; the value is computed on each image's
    logits alone, so an image's map is the same in a batch and alone."""
    explainer = zoo_explainer("resnet")
    x = pixels(3, seed=5)

    def margin(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 1] - logits[:, 2]

    batch = explainer(x, target=margin)
    logits = explainer.logits(x).cpu()
    for b in range(3):
        alone = explainer(x[b], target=margin)
        assert batch[b].label == "margin"
        assert batch[b].score == pytest.approx(float(logits[b, 1] - logits[b, 2]), abs=1e-5)
        np.testing.assert_allclose(batch[b].heatmap, alone.heatmap, atol=MAP_TOLERANCE)
    # a different scalar gives a different map
    assert not np.allclose(batch[0].heatmap, explainer(x[0], target=lambda logits: logits[:, 1]).heatmap, atol=1e-3)


@pytest.fixture(scope="module")
def multi_label_folder(tmp_path_factory):
    """A tiny ResNet with a multi-label head (``problem_type="multi_label_classification"``: sigmoid scores)."""
    kind = TINY_KINDS["resnet"]
    return save_tiny(
        kind,
        tmp_path_factory.mktemp("multi_label"),
        problem_type="multi_label_classification",
        **depth_width(kind),
    )


def test_threshold_explains_every_label_above_it(multi_label_folder):
    """``threshold=t`` on a sigmoid head: per image, every label whose score is at least ``t``, best first (the
    counts differ between images, and may be zero); each map equals explaining that label alone."""
    explainer = IIAExplainer(str(multi_label_folder), device="cpu", progress=False, steps=2)
    assert explainer.score_function == "sigmoid"
    x = pixels(3, seed=6)
    scores = explainer.class_scores(explainer.logits(x)).cpu()
    threshold = float(scores[0].sort(descending=True).values[1])  # image 0 has exactly two labels at or above it
    counts = (scores >= threshold).sum(dim=1).tolist()
    explained = explainer(x, threshold=threshold)
    assert [len(items) for items in explained] == counts and counts[0] == 2
    for b, items in enumerate(explained):
        assert [item.target for item in items] == scores[b].argsort(descending=True, stable=True)[: counts[b]].tolist()
        for item in items:
            assert item.score >= threshold
            alone = explainer(x[b], target=item.target)
            np.testing.assert_allclose(item.heatmap, alone.heatmap, atol=MAP_TOLERANCE)
    assert explainer(x, target=f"threshold:{threshold}")[0][1].target == explained[0][1].target


def test_threshold_above_every_score_gives_empty_lists(multi_label_folder):
    explainer = IIAExplainer(str(multi_label_folder), device="cpu", progress=False, steps=2)
    x = pixels(2, seed=7)
    top = float(explainer.class_scores(explainer.logits(x)).max())
    assert explainer(x, threshold=min(1.0, top + 1e-3)) == [[], []]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "positive int"),
        ({"top_k": True}, "positive int"),
        ({"target": "top_k:0"}, "positive int"),
        ({"target": "top_k:two"}, "is not an int"),
        ({"target": "threshold:high"}, "is not a number"),
        ({"threshold": float("nan")}, "finite number"),
        ({"top_k": 2, "threshold": 0.5}, "not both"),
        ({"top_k": 2, "target": 1}, "leave target= out"),
        ({"target": "top_k:2", "top_k": 2}, "give one of them"),
        ({"threshold": 2.0}, "between 0 and 1"),
        ({"target": lambda logits: logits[:, :2]}, "one floating-point value per input"),
        ({"target": lambda logits: logits.argmax(dim=1).float()}, "differentiable"),
        ({"target": lambda logits: logits[:, 99]}, "failed on logits"),
    ],
)
def test_bad_target_specs_name_the_fix(zoo_explainer, kwargs, message):
    explainer = zoo_explainer("resnet")
    with pytest.raises(TargetError, match=message):
        explainer(pixels(1), **kwargs)


def test_attribute_refuses_a_threshold(zoo_explainer):
    with pytest.raises(TargetError, match="threshold="):
        zoo_explainer("resnet").attribute(pixels(1), "threshold:0.5")


def test_selection_parses_without_torch_state():
    assert selection(None) is None and selection(3) is None and selection("cat") is None
    assert selection("top_k:4") == Selection(top_k=4) and selection(None, threshold=0.25) == Selection(threshold=0.25)


def test_engine_takes_several_targets_and_ranks(zoo_explainer):
    """``integrate`` with ``[B, K]`` targets: ``[B, K, ...]`` integrals equal to one run per column; ``-r`` is the
    ``r``-th best class; a rank beyond the classes and an empty target list are refused."""
    explainer = zoo_explainer("vit")
    x = pixels(2, seed=8)
    ranked = integrate(explainer.adapter, x, torch.tensor([[-1, 2, -3]] * 2), explainer.spec, progress=False)
    order = ranked.logits.argsort(dim=1, descending=True, stable=True)
    assert ranked.targets.tolist() == [[int(order[b, 0]), 2, int(order[b, 2])] for b in range(2)]
    for column in range(3):
        alone = integrate(explainer.adapter, x, ranked.targets[:, column], explainer.spec, progress=False)
        for tap, integral in alone.integrals.items():
            scale = float(integral.abs().max())
            torch.testing.assert_close(ranked.integrals[tap][:, column], integral, atol=1e-6 * scale, rtol=0)
    with pytest.raises(TargetError, match="ranked 9"):
        integrate(explainer.adapter, x, torch.tensor([[-9]] * 2), explainer.spec, progress=False)
    with pytest.raises(TargetError, match="no targets"):
        integrate(explainer.adapter, x, torch.empty(2, 0, dtype=torch.int64), explainer.spec, progress=False)


ZERO_SHOT_LABELS = ["a cat", "a dog", "a red car"]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_zero_shot_top_k_and_threshold_use_the_candidate_labels(tmp_path, kind):
    """With candidate labels, top_k ranks them as the zero-shot pipeline does (same labels, same scores) and each
    map equals explaining that label alone; SigLIP's sigmoid scores take a threshold."""
    folder = save_zero_shot(kind, tmp_path / kind)
    explainer = IIAExplainer(str(folder), candidate_labels=ZERO_SHOT_LABELS, device="cpu", progress=False, steps=2)
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    image = _image(3)
    reference = pipe(image, candidate_labels=ZERO_SHOT_LABELS)
    explained = explainer(image, top_k=3)
    assert [item.label for item in explained] == [row["label"] for row in reference]
    assert [item.score for item in explained] == pytest.approx([row["score"] for row in reference], abs=1e-5)
    for item in explained:
        np.testing.assert_allclose(item.heatmap, explainer(image, target=item.label).heatmap, atol=MAP_TOLERANCE)
    other = explainer(image, top_k=1, candidate_labels=["a bird", "a blue car"])
    assert other[0].label in ("a bird", "a blue car")
    if kind == "siglip":
        threshold = reference[1]["score"]
        assert [item.label for item in explainer(image, threshold=threshold)] == [
            row["label"] for row in reference if row["score"] >= threshold
        ]


def test_pipeline_top_k_shares_the_forward_passes(zoo_folder):
    """The registered pipeline explains its top_k classes in one shared call: as many model rows as for one class,
    and the maps of explaining each class alone."""
    hf_iia.register_pipelines()
    pipe = transformers.pipeline("image-explanation", model=str(zoo_folder("resnet")), device="cpu")
    image = _image(4)
    pipe(image, top_k=1)  # builds the explainer
    rows, handle = _count_rows(pipe.model)
    try:
        pipe(image, top_k=1)
        one = sum(rows)
        rows.clear()
        explained = pipe(image, top_k=3)
        assert sum(rows) == one
    finally:
        handle.remove()
    explainer = pipe.explainer()
    for row in explained:
        np.testing.assert_allclose(row["heatmap"], explainer(image, target=row["label"]).heatmap, atol=MAP_TOLERANCE)


def test_naflex_top_k_keeps_each_image_grid(tmp_path):
    """SigLIP2 NaFlex images of two aspect ratios: every target's map is on its own image's grid and equals
    explaining that label alone."""
    folder = save_zero_shot("siglip2", tmp_path / "siglip2")
    explainer = IIAExplainer(str(folder), candidate_labels=ZERO_SHOT_LABELS, device="cpu", progress=False, steps=2)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in ((40, 64, 3), (64, 32, 3))]
    explained = explainer(images, top_k=2)
    for image, items in zip(images, explained, strict=True):
        for item in items:
            alone = explainer(image, target=item.label)
            assert item.heatmap.shape == alone.heatmap.shape
            np.testing.assert_allclose(item.heatmap, alone.heatmap, atol=MAP_TOLERANCE)
    assert explained[0][0].heatmap.shape != explained[1][0].heatmap.shape
