"""The registered pipelines ("image-explanation", "zero-shot-image-explanation") and IIAExplainer(pipeline_object),
on tiny Hub folders loaded by transformers.pipeline itself, compared with transformers' own pipelines and with
IIAExplainer on the same folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import hf_iia
from hf_iia import IIAError, IIAExplainer
from hf_iia.testing import save_zero_shot, zoo

LABELS = ["a cat", "a dog", "a red car"]


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module", autouse=True)
def registered():
    hf_iia.register_pipelines()
    hf_iia.register_pipelines()  # idempotent


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    return save_zero_shot("siglip", tmp_path_factory.mktemp("siglip"))


@pytest.mark.parametrize("method", ["iia", "gradient_rollout"])
def test_image_explanation_matches_the_classifier_pipeline_and_the_explainer(zoo_folder, method):
    """Labels and scores are the image-classification pipeline's top_k; each map is IIAExplainer's for that class,
    also when the caller runs the pipeline under torch.no_grad() (the pipeline turns gradients on)."""
    folder = str(zoo_folder("vit"))
    pipe = transformers.pipeline("image-explanation", model=folder, device="cpu", method=method)
    image = _image(0)
    with torch.no_grad():
        rows = pipe(image, top_k=3)
    reference = transformers.pipeline("image-classification", model=folder, device="cpu")(image, top_k=3)
    assert [row["label"] for row in rows] == [row["label"] for row in reference]
    assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in reference], abs=1e-6)
    explainer = IIAExplainer(folder, method=method, device="cpu", progress=False)
    for row in rows:
        np.testing.assert_allclose(row["heatmap"], explainer(image, target=row["label"]).heatmap, atol=1e-5)
    assert len(pipe(image)) == 4  # top_k = min(5, classes), as the classifier pipeline


def test_pipelines_run_their_forward_with_gradients(zoo_folder, siglip_folder):
    """The base Pipeline's inference context is torch.no_grad; these pipelines' enables gradients."""
    for task, folder in (("image-explanation", zoo_folder("vit")), ("zero-shot-image-explanation", siglip_folder)):
        pipe = transformers.pipeline(task, model=str(folder), device="cpu")
        with torch.no_grad(), pipe.get_inference_context()():
            assert torch.is_grad_enabled()


def test_image_explanation_batches(zoo_folder):
    pipe = transformers.pipeline("image-explanation", model=str(zoo_folder("vit")), device="cpu")
    images = [_image(1), _image(2)]
    together = pipe(images, batch_size=2, top_k=2)
    for image, rows in zip(images, together, strict=True):
        for alone, batched in zip(pipe(image, top_k=2), rows, strict=True):
            assert alone["label"] == batched["label"] and alone["score"] == pytest.approx(batched["score"], abs=1e-6)
            np.testing.assert_allclose(alone["heatmap"], batched["heatmap"], atol=1e-4)  # maps span [0, 1]


def test_zero_shot_image_explanation_matches_the_zero_shot_pipeline(siglip_folder):
    pipe = transformers.pipeline("zero-shot-image-explanation", model=str(siglip_folder), device="cpu")
    reference = transformers.pipeline("zero-shot-image-classification", model=str(siglip_folder), device="cpu")
    image = _image(3)
    for labels in (LABELS, ["a bird", "a blue car"]):
        rows = pipe(image, candidate_labels=labels)
        expected = reference(image, candidate_labels=labels)
        assert [row["label"] for row in rows] == [row["label"] for row in expected]
        assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in expected], abs=1e-5)
    explainer = IIAExplainer(str(siglip_folder), candidate_labels=LABELS, device="cpu", progress=False)
    (row,) = pipe(image, candidate_labels=LABELS, top_k=1)
    np.testing.assert_allclose(row["heatmap"], explainer(image, target=row["label"]).heatmap, atol=1e-5)
    with pytest.raises(IIAError, match="candidate_labels"):
        pipe(image)


def test_explainer_of_a_pipeline_object(zoo_folder, siglip_folder):
    """IIAExplainer(pipe) takes the pipeline's model, image processor (and tokenizer) and device."""
    classifier = transformers.pipeline("image-classification", model=str(zoo_folder("vit")), device="cpu")
    explainer = IIAExplainer(classifier, progress=False)
    assert explainer.model is classifier.model and explainer.processor is classifier.image_processor
    image = _image(4)
    reference = IIAExplainer(str(zoo_folder("vit")), device="cpu", progress=False)(image)
    explanation = explainer(image)
    assert explanation.label == reference.label
    np.testing.assert_allclose(explanation.heatmap, reference.heatmap, atol=1e-5)
    zero_shot = transformers.pipeline("zero-shot-image-classification", model=str(siglip_folder), device="cpu")
    explainer = IIAExplainer(zero_shot, candidate_labels=LABELS, progress=False)
    assert explainer.model.model is zero_shot.model
    scores = {row["label"]: row["score"] for row in zero_shot(image, candidate_labels=LABELS)}
    assert explainer(image, target="a dog").score == pytest.approx(scores["a dog"], abs=1e-5)


@pytest.fixture(scope="module")
def siglip2_folder(tmp_path_factory):
    return save_zero_shot("siglip2", tmp_path_factory.mktemp("siglip2"))


def _naflex_images() -> list[Image.Image]:
    """Two images of different aspect ratios: NaFlex gives each its own patch grid and map size."""
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in ((40, 56, 3), (48, 24, 3))]


def test_naflex_pipelines_match_transformers_and_the_explainer(tmp_path, siglip2_folder):
    """SigLIP2 with NaFlex input through both pipelines: the processor's pixel_attention_mask and spatial_shapes
    travel with the patches; labels and scores are transformers' own pipelines'; each map is IIAExplainer's on the
    image, at that image's own processed size, also for a batch of two images of different sizes."""
    images = _naflex_images()
    zero_shot = transformers.pipeline("zero-shot-image-explanation", model=str(siglip2_folder), device="cpu")
    reference = transformers.pipeline("zero-shot-image-classification", model=str(siglip2_folder), device="cpu")
    explainer = IIAExplainer(str(siglip2_folder), candidate_labels=LABELS, device="cpu", progress=False)
    batched = zero_shot(images, candidate_labels=LABELS, batch_size=2)
    for image, rows in zip(images, batched, strict=True):
        expected = reference(image, candidate_labels=LABELS)
        assert [row["label"] for row in rows] == [row["label"] for row in expected]
        assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in expected], abs=1e-5)
        for row in rows:
            np.testing.assert_allclose(row["heatmap"], explainer(image, target=row["label"]).heatmap, atol=1e-4)
    assert batched[0][0]["heatmap"].shape != batched[1][0]["heatmap"].shape

    folder = str(zoo.save_tiny("siglip2", tmp_path / "classifier"))
    pipe = transformers.pipeline("image-explanation", model=folder, device="cpu")
    classifier = transformers.pipeline("image-classification", model=folder, device="cpu")
    explainer = IIAExplainer(folder, device="cpu", progress=False)
    for image in images:
        rows = pipe(image, top_k=2)
        expected = classifier(image, top_k=2)
        assert [row["label"] for row in rows] == [row["label"] for row in expected]
        assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in expected], abs=1e-5)
        for row in rows:
            np.testing.assert_allclose(row["heatmap"], explainer(image, target=row["label"]).heatmap, atol=1e-4)


def test_inputs_travel_only_with_a_tensor_and_only_those_the_model_reads(zoo_folder, siglip2_folder):
    """explainer(pixel_values, inputs=...) gives the maps of explainer(images); inputs the model does not read, a
    missing one, or inputs beside images are refused with the fix."""
    explainer = IIAExplainer(str(siglip2_folder), candidate_labels=LABELS, device="cpu", progress=False)
    images = _naflex_images()
    pixel_values, inputs, _ = explainer.model_inputs(images)
    from_tensor = explainer(pixel_values, target=1, inputs=inputs)
    for image, explanation in zip(images, from_tensor, strict=True):
        np.testing.assert_allclose(explanation.heatmap, explainer(image, target=1).heatmap, atol=1e-5)
    with pytest.raises(IIAError, match="spatial_shapes"):
        explainer(pixel_values, inputs={"pixel_attention_mask": inputs["pixel_attention_mask"]})
    with pytest.raises(IIAError, match="inputs= goes with a preprocessed pixel_values tensor"):
        explainer(images[0], inputs=inputs)
    vit = IIAExplainer(str(zoo_folder("vit")), device="cpu", progress=False)
    with pytest.raises(IIAError, match="reads nothing besides pixel_values"):
        vit(vit.preprocess(_image(0))[0], inputs={"pixel_mask": torch.ones(1, 4, 4)})
