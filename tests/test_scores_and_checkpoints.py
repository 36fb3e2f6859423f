"""Scores per head type and broken checkpoints (issue 17, "Trust at the edges").

* ``Explanation.score`` is what ``transformers.pipeline("image-classification")`` reports for the same label:
  softmax for single-label heads, sigmoid for multi-label and one-logit heads, the logit for regression.
* A broken checkpoint (a config that cannot build a model, weights that disagree with the config, a config that is
  not JSON, ...) is refused with a :class:`hf_iia.CheckpointError` naming the file or field and the fix, never a
  bare torch traceback; so is a model without processor whose input size cannot be told.

Every checkpoint is a real folder: a valid tiny model of :mod:`hf_iia.testing` saved with ``save_pretrained``, then
its ``config.json`` or weights edited, and loaded back through ``IIAExplainer(folder)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from hf_iia import CheckpointError, IIAError, IIAExplainer, ImageInputError
from hf_iia.scores import score_function, scores
from hf_iia.testing import build_tiny, save_tiny

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 36, 3), dtype=np.uint8))


def _pipeline_scores(folder: Path, image: Image.Image) -> dict[str, float]:
    classify = transformers.pipeline("image-classification", model=str(folder), top_k=None, device="cpu")
    return {row["label"]: row["score"] for row in classify(image)}


# ------------------------------------------------------------------------------------------------ scores
HEADS = {
    # name: (model type, labels, config overrides, the function the pipeline applies)
    "single_label": ("resnet", {0: "cat", 1: "dog", 2: "bird"}, {}, "softmax"),
    "multi_label": ("vit", {0: "cat", 1: "dog", 2: "bird"}, {"problem_type": "multi_label_classification"}, "sigmoid"),
    "one_logit": ("vit", {0: "positive"}, {}, "sigmoid"),
    "one_logit_convnext": ("convnext", {0: "positive"}, {}, "sigmoid"),
    "regression": ("resnet", {0: "value"}, {"problem_type": "regression"}, "none"),
}


@pytest.mark.parametrize("head", list(HEADS))
def test_score_is_what_the_pipeline_reports(head, tmp_path):
    model_type, labels, overrides, expected = HEADS[head]
    folder = save_tiny(model_type, tmp_path / head, labels, seed=3, **overrides)
    explainer = IIAExplainer(folder, steps=2, device="cpu", progress=False)
    assert explainer.score_function == expected
    image = _image()
    reported = _pipeline_scores(folder, image)
    top = explainer(image)
    assert top.score_function == expected
    # The default target is the top-1: the pipeline's first row (a one-logit model's only class, 0).
    assert top.label == max(reported, key=reported.get)
    assert top.score == pytest.approx(reported[top.label], abs=1e-5)
    every = explainer.class_scores(explainer.logits(explainer.preprocess(image)[0]))[0]
    for index, label in labels.items():
        assert explainer(image, target=index).score == pytest.approx(reported[label], abs=1e-5)
        assert float(every[index]) == pytest.approx(reported[label], abs=1e-5)


def test_one_logit_score_is_not_always_one(tmp_path):
    """A one-logit (binary) head's score is the sigmoid of its logit, which a softmax over one logit would pin to 1."""
    folder = save_tiny("resnet", tmp_path / "binary", {0: "positive"}, seed=1)
    explainer = IIAExplainer(folder, steps=2, device="cpu", progress=False)
    values = [explainer(_image(seed)).score for seed in range(3)]
    assert all(0.0 < value < 1.0 for value in values), values


def test_score_function_follows_the_pipeline_rule_order():
    config = transformers.ViTConfig(num_labels=3)
    assert score_function(config) == "softmax"
    config.problem_type = "multi_label_classification"
    assert score_function(config) == "sigmoid"
    assert score_function(transformers.ViTConfig(num_labels=1)) == "sigmoid"
    # function_to_apply is only read when nothing else decides: a config without labels.
    assert score_function(transformers.ViTConfig(num_labels=2, function_to_apply="sigmoid")) == "softmax"
    empty = transformers.ViTConfig(id2label={}, function_to_apply="SIGMOID")
    assert score_function(empty) == "sigmoid"
    empty.function_to_apply = "tanh"
    with pytest.raises(CheckpointError, match="function_to_apply"):
        score_function(empty)
    assert score_function(None, num_logits=1) == "sigmoid" and score_function(None, num_logits=5) == "softmax"


def test_scores_are_the_named_function_of_the_target_logit():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    targets = torch.tensor([2, 1])
    torch.testing.assert_close(scores(logits, targets, "softmax"), logits.softmax(1)[[0, 1], [2, 1]])
    torch.testing.assert_close(scores(logits, targets, "sigmoid"), torch.sigmoid(torch.tensor([0.5, 3.0])))
    torch.testing.assert_close(scores(logits, targets, "none"), torch.tensor([0.5, 3.0]))
    with pytest.raises(IIAError, match="unknown score function"):
        scores(logits, targets, "tanh")


# ------------------------------------------------------------------------------------- no processor
def test_no_processor_probes_at_the_configs_image_size_pair():
    """Hiera's config gives its 64 px input as a pair; a probe at 224 px fails in its position embeddings."""
    model, processor = build_tiny("hiera")
    assert list(model.config.image_size) == [64, 64]
    bare = IIAExplainer(model, steps=2, progress=False)
    assert bare.spec.levels == IIAExplainer(model, processor, steps=2, progress=False).spec.levels
    assert bare.layers()[-1][1][0] == 1
    pixel_values = processor(_image(), return_tensors="pt")["pixel_values"]
    assert bare.attribute(pixel_values).shape == (1, 64, 64)


def test_no_processor_and_no_image_size_skips_the_probe_with_a_warning():
    model, processor = build_tiny("resnet")
    assert getattr(model.config, "image_size", None) is None
    with pytest.warns(UserWarning, match="processor=.*layer="):
        bare = IIAExplainer(model, steps=2, progress=False)
    pixel_values = processor(_image(), return_tensors="pt")["pixel_values"]
    assert bare.attribute(pixel_values).shape == (1, *pixel_values.shape[2:])
    with pytest.raises(ImageInputError, match="processor="):
        bare.layers()


def test_a_probe_that_fails_names_processor_and_layer():
    """A config whose image_size the model cannot take (1 px under ConvNeXt's 4 x 4 stem) fails the constructor's
    probe with an ImageInputError naming the fixes, not a bare torch error; layer= needs no probe."""
    model, processor = build_tiny("convnext")
    model.config.image_size = 1
    with pytest.raises(ImageInputError, match="processor=.*layer="):
        IIAExplainer(model, steps=2, progress=False)
    assert IIAExplainer(model, processor, steps=2, progress=False).spec.levels
    assert IIAExplainer(model, layer=-1, steps=2, progress=False).spec.levels
