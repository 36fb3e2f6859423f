"""Zero-shot explanations: tiny random CLIP, MetaCLIP 2 and SigLIP Hub folders (model, image processor, tokenizer
built offline: hf_iia.testing.zero_shot), loaded through the public API and compared with transformers'
zero-shot pipeline on the same folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoModelForZeroShotImageClassification, CLIPProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES

from hf_iia import IIAExplainer
from hf_iia.errors import TargetError, UnsupportedModelError
from hf_iia.testing import ZERO_SHOT_KINDS, assert_unchanged, build_zero_shot, save_zero_shot, snapshot
from hf_iia.tools.cli import main
from hf_iia.zeroshot import REFUSED_ZERO_SHOT, ZERO_SHOT_TYPES, PipelineProcessor

LABELS = ["a cat", "a dog", "a red car"]


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def zero_shot_folder(tmp_path_factory):
    """``kind -> folder`` of a saved tiny zero-shot model (cached)."""
    cache = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = save_zero_shot(kind, tmp_path_factory.mktemp(f"zero_shot_{kind}"))
        return cache[kind]

    return get


def _explainer(folder, **kwargs) -> IIAExplainer:
    return IIAExplainer(str(folder), candidate_labels=LABELS, device="cpu", progress=False, **kwargs)


@pytest.mark.parametrize("kind", ZERO_SHOT_KINDS)
def test_score_and_label_are_the_pipelines(zero_shot_folder, kind):
    """For every candidate label, .score is the pipeline's score on the same folder and .label the label; the
    default target is the pipeline's top label."""
    folder = zero_shot_folder(kind)
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    explainer = _explainer(folder)
    image = _image(0)
    reference = {row["label"]: row["score"] for row in pipe(image, candidate_labels=LABELS)}
    assert explainer.score_function == ("sigmoid" if kind in ("siglip", "siglip2") else "softmax")
    # SigLIP2 (NaFlex) resizes each image to its own patch grid: the map is at that size
    size = (32, 32)
    if kind == "siglip2":
        size = tuple(int(side) * 8 for side in explainer.processor(images=[image])["spatial_shapes"][0])
    top = explainer(image)
    assert top.label == max(reference, key=reference.__getitem__)
    for index, label in enumerate(LABELS):
        for target in (index, label):
            explanation = explainer(image, target=target)
            assert explanation.target == index and explanation.label == label
            assert explanation.score == pytest.approx(reference[label], abs=1e-5)
            assert explanation.heatmap.shape == size and np.isfinite(explanation.heatmap).all()


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_call_time_labels_and_template(zero_shot_folder, kind):
    """Labels and a template given per call are scored as the pipeline scores them; the constructor's labels
    come back after the call."""
    folder = zero_shot_folder(kind)
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    explainer = _explainer(folder, hypothesis_template="a photo of {}")
    image = _image(1)
    other = ["a bird", "a blue car"]
    reference = {row["label"]: row["score"] for row in pipe(image, candidate_labels=other, hypothesis_template="{}")}
    with explainer.model.candidates(other, "{}"):
        explanation = explainer(image, target="a blue car")
    assert explanation.label == "a blue car" and explanation.score == pytest.approx(reference["a blue car"], abs=1e-5)
    template = {
        row["label"]: row["score"] for row in pipe(image, candidate_labels=other, hypothesis_template="a photo of {}")
    }
    explanation = explainer(image, target=0, candidate_labels=other)
    assert explanation.label == "a bird" and explanation.score == pytest.approx(template["a bird"], abs=1e-5)
    assert explainer.id2label == dict(enumerate(LABELS))


def test_map_depends_on_the_label(zero_shot_folder):
    """Two labels give two different maps (the text embedding reaches the map)."""
    explainer = _explainer(zero_shot_folder("clip"))
    image = _image(2)
    first, second = explainer(image, target=0).heatmap, explainer(image, target=1).heatmap
    assert np.abs(first - second).max() > 0.05  # maps are normalised to [0, 1]: 5% of their contrast


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_batch_equals_single(zero_shot_folder, kind):
    """A batch of two images gives each image's own map and score."""
    explainer = _explainer(zero_shot_folder(kind))
    images = [_image(3), _image(4)]
    batch = explainer(images, target=[0, 2])
    for image, target, together in zip(images, [0, 2], batch, strict=True):
        alone = explainer(image, target=target)
        assert together.score == pytest.approx(alone.score, abs=1e-6)
        np.testing.assert_allclose(together.heatmap, alone.heatmap, atol=1e-4)  # maps span [0, 1]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_model_left_as_found(kind):
    """Parameters, train/eval flags, requires_grad, attention implementation, hooks and config of the dual encoder
    are as they were after explaining with constructor and per-call labels (the model starts in train mode)."""
    model, image_processor, tokenizer = build_zero_shot(kind)
    model.train()
    model.text_model.requires_grad_(False)
    if kind == "clip":  # an AutoProcessor
        processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    else:
        processor = PipelineProcessor(image_processor, tokenizer)
    before = snapshot(model)
    explainer = IIAExplainer(model, processor, candidate_labels=LABELS, progress=False)
    explainer(_image(5))
    explainer([_image(5), _image(6)], candidate_labels=["a bird", "a car"])
    explainer.logits(explainer.preprocess(_image(5))[0])
    explainer.layers()
    assert_unchanged(before, snapshot(model))
    assert model.config._attn_implementation == model.config.vision_config._attn_implementation == before["attn"]


def test_text_encoded_once_per_label_set(zero_shot_folder):
    """The prompts are encoded once per label set and template: no text forward per map or per image."""
    explainer = _explainer(zero_shot_folder("clip"))
    calls = []
    handle = explainer.model.model.text_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        explainer([_image(7), _image(8)])
        explainer(_image(7), target=1)
        assert len(calls) == 1
        explainer(_image(7), candidate_labels=["a bird", "a car"])
        explainer(_image(8), candidate_labels=["a bird", "a car"])
        assert len(calls) == 2
        explainer(_image(8))  # the constructor's labels are still cached
        assert len(calls) == 2
    finally:
        handle.remove()


def test_every_zero_shot_type_is_explained_or_refused():
    """Each type AutoModelForZeroShotImageClassification maps is explained (with the tests above) or refused with
    its reason."""
    assert set(ZERO_SHOT_TYPES) == set(ZERO_SHOT_KINDS)
    assert set(MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES) == set(ZERO_SHOT_TYPES) | set(REFUSED_ZERO_SHOT)
    assert not set(ZERO_SHOT_TYPES) & set(REFUSED_ZERO_SHOT)


def test_zero_shot_model_without_labels_is_refused(zero_shot_folder):
    """A zero-shot folder or model without candidate_labels is refused with the fix, not loaded as a classifier."""
    with pytest.raises(UnsupportedModelError, match="candidate_labels"):
        IIAExplainer(str(zero_shot_folder("clip")), device="cpu")
    model, _, _ = build_zero_shot("siglip")
    with pytest.raises(UnsupportedModelError, match="candidate_labels"):
        IIAExplainer(model)


def test_labels_for_an_image_classifier_are_refused(zoo_folder):
    explainer = IIAExplainer(str(zoo_folder("vit")), device="cpu", progress=False)
    with pytest.raises(TargetError, match="zero-shot"):
        explainer(_image(0), candidate_labels=["a cat", "a dog"])
    with pytest.raises(UnsupportedModelError, match="zero-shot"):
        IIAExplainer(explainer.model, explainer.processor, candidate_labels=["a cat", "a dog"])


@pytest.mark.parametrize(
    ("labels", "template", "match"),
    [
        (["a cat", "a cat"], None, "more than once"),
        (["a cat", "a dog"], "a photo", "exactly one"),
        (["a cat"], None, "at least two"),
        ("a cat", None, "list"),
        (["a cat", ""], None, "non-empty"),
    ],
)
def test_bad_candidates_are_refused(zero_shot_folder, labels, template, match):
    with pytest.raises(TargetError, match=match):
        IIAExplainer(str(zero_shot_folder("clip")), candidate_labels=labels, hypothesis_template=template, device="cpu")


def test_model_without_tokenizer_is_refused(zero_shot_folder):
    model, image_processor, _ = build_zero_shot("clip")
    with pytest.raises(UnsupportedModelError, match="tokenizer"):
        IIAExplainer(model, image_processor, candidate_labels=LABELS)


def test_cli_explain_with_labels(zero_shot_folder, tmp_path, capsys):
    """hf-iia explain MODEL IMG --labels "a cat,a dog" explains the label the pipeline scores, and --target takes a
    candidate label (checked before the model loads)."""
    folder = zero_shot_folder("clip")
    image = tmp_path / "image.png"
    _image(9).save(image)
    argv = ["explain", str(folder), str(image), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*argv, "--labels", "a cat, a dog", "--target", "a dog"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    reference = {row["label"]: row["score"] for row in pipe(Image.open(image), candidate_labels=["a cat", "a dog"])}
    assert record["label"] == "a dog" and record["score"] == pytest.approx(reference["a dog"], abs=1e-5)
    assert np.load(record["map"]).shape == (32, 32)
    assert main([*argv, "--labels", "a cat,a dog", "--target", "a bird", "--overwrite"]) == 2
    assert "unknown label 'a bird'" in capsys.readouterr().err
    assert main([*argv, "--labels", "a cat,,a dog", "--overwrite"]) == 2
    assert main([*argv, "--overwrite"]) == 2
    assert "candidate_labels" in capsys.readouterr().err


def test_explained_in_half_precision_is_still_scored_in_float32(zero_shot_folder):
    """dtype= casts the tower and the cached prompts alike: the logits stay finite and scores close to float32's."""
    folder = zero_shot_folder("clip")
    image = _image(10)
    reference = _explainer(folder)(image, target=1).score
    half = _explainer(folder, dtype=torch.bfloat16)(image, target=1)
    assert half.score == pytest.approx(reference, abs=0.05)


def test_siglip_map_reads_the_pooling_heads_attention_row(zero_shot_folder):
    """SigLIP's image embedding is its attention-pooling head's: the rollout's rows are read with the head's own
    attention row. Attention Rollout written out from the model's attentions (eager) matches the explainer's map,
    and differs from reading every row uniformly."""
    from hf_iia.explainer import normalise, upsample
    from hf_iia.fusions import gradient_rollout

    folder = zero_shot_folder("siglip")
    explainer = _explainer(folder, method="attention_rollout")
    image = _image(11)
    pixel_values = explainer.preprocess(image)[0]
    model = AutoModelForZeroShotImageClassification.from_pretrained(folder).eval()
    model.set_attn_implementation("eager")
    rows = []
    handle = model.vision_model.head.attention.register_forward_hook(lambda module, args, out: rows.append(out[1]))
    with torch.no_grad():
        attentions = model.vision_model(pixel_values=pixel_values, output_attentions=True).attentions
    handle.remove()
    blocks = [attention.double() for attention in attentions]
    tokens = blocks[0].shape[-1]

    def drawn(readout: torch.Tensor) -> np.ndarray:
        raw = gradient_rollout(blocks, readout, 0).reshape(1, 4, 4)
        return normalise(upsample(raw, (32, 32), "bilinear")).float()[0].numpy()

    expected = drawn(rows[0][0, 0].double())
    np.testing.assert_allclose(explainer(image).heatmap, expected, atol=1e-4)  # maps span [0, 1]
    assert np.abs(drawn(torch.full((tokens,), 1.0 / tokens, dtype=torch.float64)) - expected).max() > 1e-3
