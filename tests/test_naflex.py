"""SigLIP2 NaFlex (Siglip2ForImageClassification and the zero-shot Siglip2Model): pre-patchified inputs, each image
on its own patch grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from hf_iia import IIAExplainer
from hf_iia.adapters.naflex import patches_to_image
from hf_iia.errors import ImageInputError, MethodError
from hf_iia.testing import save_zero_shot, zoo

PATCH = 8  # the zoo's siglip2 processor: patch_size 8, max_num_patches 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return zoo.save_tiny("siglip2", tmp_path_factory.mktemp("siglip2"))


@pytest.fixture(scope="module")
def zero_shot_folder(tmp_path_factory):
    return save_zero_shot("siglip2", tmp_path_factory.mktemp("siglip2_zero_shot"))


LABELS = ["a cat", "a dog"]


def _images() -> list[Image.Image]:
    """A wide and a tall image: the processor gives them the grids (3, 5) and (5, 3) of the 16-patch budget."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for size in ((40, 80, 3), (64, 32, 3))]


def _explainer(folder, **options) -> IIAExplainer:
    return IIAExplainer(str(folder), device="cpu", progress=False, **options)


def test_two_aspect_ratios_in_one_batch_get_maps_on_their_own_grids(folder):
    explainer = _explainer(folder)
    images = _images()
    shapes = explainer.processor(images=images, return_tensors="pt")["spatial_shapes"].tolist()
    assert shapes == [[3, 5], [5, 3]]
    explanations = explainer(images)
    for explanation, (height, width) in zip(explanations, shapes, strict=True):
        assert explanation.heatmap.shape == (height * PATCH, width * PATCH)
        assert explanation.pixel_values.shape == (3, height * PATCH, width * PATCH)
        assert explanation.geometry is None and explanation.overlay_note is not None
        assert explanation.heatmap.min() == 0 and explanation.heatmap.max() == 1
        # bilinear upsampling of an h x w map: each patch's centre region varies, the map is not constant
        assert explanation.heatmap.std() > 1e-3


def test_batch_equals_single(folder):
    explainer = _explainer(folder)
    images = _images()
    batch = explainer(images)
    # 7-row chunks: rows of both images (and parts of one image's grid) share a forward pass
    chunked = _explainer(folder, internal_batch_size=7)(images)
    for one, other in zip(batch, chunked, strict=True):
        assert np.abs(one.heatmap - other.heatmap).max() <= 1e-5
    for image, together in zip(images, batch, strict=True):
        alone = explainer(image)
        # maps are min-max normalised to [0, 1] (contrast 1): float32 noise of the batch shape stays far below 1e-5
        assert np.abs(alone.heatmap - together.heatmap).max() <= 1e-5
        assert alone.target == together.target and alone.score == pytest.approx(together.score, abs=1e-6)


def test_score_and_label_equal_the_image_classification_pipeline(folder):
    """The engine runs the model under hf-iia's attention function: its masks must be eager's (additive), not the
    processor's 2-D mask passed through, or the real tokens attend to the padding and every score is off."""
    explainer = _explainer(folder)
    pipe = transformers.pipeline("image-classification", model=str(folder), device="cpu")
    for image, explanation in zip(_images(), explainer(_images()), strict=True):
        top = pipe(image, top_k=1)[0]
        assert explanation.label == top["label"]
        assert explanation.score == pytest.approx(top["score"], abs=1e-5)


def test_padding_rows_are_not_on_the_path(folder):
    """A nonzero baseline would move the zero padding rows along the path; they are reset, so the logits at every
    point equal the model's on the real patches (the map is that of the default baseline's shape of computation)."""
    explainer = _explainer(folder, baselines=0.5, steps=2)
    images = _images()
    for explanation in explainer(images):
        assert explanation.heatmap.std() > 1e-3
    inputs = explainer.processor(images=images, return_tensors="pt")
    with explainer.adapter.with_inputs(dict(inputs)):
        shifted = inputs["pixel_values"] + 0.5
        reset, _ = explainer.adapter.row_inputs(shifted)
    real = inputs["pixel_attention_mask"].bool()
    assert torch.equal(reset[~real], torch.zeros_like(reset[~real]))
    assert torch.equal(reset[real], shifted[real])


@pytest.mark.parametrize("method", ["gradient_rollout", "attention_rollout", "gae"])
def test_rollout_methods_use_each_images_grid(folder, method):
    explanations = _explainer(folder, method=method)(_images())
    assert [e.heatmap.shape for e in explanations] == [(24, 40), (40, 24)]


def test_pixel_values_alone_are_refused_with_the_fix(folder):
    explainer = _explainer(folder)
    pixel_values = explainer.processor(images=_images(), return_tensors="pt")["pixel_values"]
    with pytest.raises(ImageInputError, match="pass the images"):
        explainer.logits(pixel_values)
    with pytest.raises(ImageInputError, match="NaFlex"):
        explainer.attribute(pixel_values)


def test_ig_image_starts_and_token_grid_cams_are_refused(folder):
    """No one token grid holds a NaFlex batch (each image has its own, with padding rows), so the CAMs, which read
    the token grid on other attention models, are refused like ig and the image starts."""
    with pytest.raises(MethodError, match="NaFlex"):
        _explainer(folder, method="ig")
    for method in ("gradcam", "scorecam"):
        with pytest.raises(MethodError, match="needs a model explained through a FeatureMapAdapter"):
            _explainer(folder, method=method)
    with pytest.raises(MethodError, match="NaFlex"):
        _explainer(folder, start="blur")


def test_patches_to_image_inverts_the_processors_patching(folder):
    processor = _explainer(folder).processor
    image = _images()[0]
    inputs = processor(images=[image], return_tensors="pt")
    height, width = inputs["spatial_shapes"][0].tolist()
    resized = processor.resize(
        torch.as_tensor(np.asarray(image)).permute(2, 0, 1),
        transformers.image_utils.SizeDict(height=height * PATCH, width=width * PATCH),
        resample=processor.resample,
    )
    expected = processor.rescale_and_normalize(
        resized, True, processor.rescale_factor, True, processor.image_mean, processor.image_std
    )
    assert torch.allclose(patches_to_image(inputs["pixel_values"][0], (height, width), PATCH), expected, atol=1e-6)


def test_zero_shot_two_aspect_ratios_in_one_batch_score_as_the_pipeline_on_their_own_grids(zero_shot_folder):
    """Siglip2Model's image embedding is its attention-pooling head, called with the padding mask (an additive float
    attn_mask): the head's attention row is formed with that mask, so the scores are the zero-shot pipeline's."""
    explainer = IIAExplainer(str(zero_shot_folder), candidate_labels=LABELS, device="cpu", progress=False)
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(zero_shot_folder), device="cpu")
    images = _images()
    batch = explainer(images)
    assert [e.heatmap.shape for e in batch] == [(24, 40), (40, 24)]
    for image, together in zip(images, batch, strict=True):
        reference = {row["label"]: row["score"] for row in pipe(image, candidate_labels=LABELS)}
        assert together.label == max(reference, key=reference.__getitem__)
        assert together.score == pytest.approx(reference[together.label], abs=1e-5)
        alone = explainer(image)
        assert np.abs(alone.heatmap - together.heatmap).max() <= 1e-5  # maps in [0, 1]: contrast 1
        assert together.heatmap.std() > 1e-3


def test_zero_shot_map_reads_the_heads_row_over_the_real_tokens(zero_shot_folder):
    """The readout of each image's rollout is the head's integrated row on its real tokens, summing to 1 (the
    padding columns, masked out of the head, are not read)."""
    explainer = IIAExplainer(str(zero_shot_folder), candidate_labels=LABELS, device="cpu", progress=False)
    images = _images()
    inputs = dict(explainer.processor(images=images, return_tensors="pt"))
    pixel_values = inputs.pop("pixel_values")
    outputs = explainer._forward(pixel_values, None, inputs)
    head = outputs.result.integrals[explainer.adapter.PROBE_TAP]  # [B, heads, 1, P]
    for index, (height, width) in enumerate(inputs["spatial_shapes"].tolist()):
        one = {tap: value[index : index + 1].double() for tap, value in outputs.result.integrals.items()}
        weights = explainer.adapter.readout_weights(one, height * width)
        assert weights.shape == (height * width,) and float(weights.sum()) == pytest.approx(1.0)
        assert torch.count_nonzero(head[index, :, 0, height * width :]) == 0  # masked padding gets no attention
