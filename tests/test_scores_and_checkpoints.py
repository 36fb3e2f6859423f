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

import json
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


# ------------------------------------------------------------------------------------- broken checkpoints
def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


SIX_LABELS = {str(i): f"class {i}" for i in range(6)}
BROKEN_CONFIGS = {
    # name: (model type, config.json changes, what the CheckpointError must name)
    "zero_patch_size": ("vit", {"patch_size": 0}, r"cannot be built \(ZeroDivisionError.*patch_size=0"),
    "heads_do_not_divide_width": ("vit", {"num_attention_heads": 3}, r"hidden_size=16 is not a multiple of num_att"),
    "negative_width": ("vit", {"hidden_size": -16}, r"cannot be built.*hidden_size=-16"),
    "zero_stage_width": ("resnet", {"hidden_sizes": [0, 16]}, r"weights \[2, 8, 1, 1\] vs config \[0, 8, 1, 1\]"),
    "more_labels_than_classifier_rows": (
        "vit",
        {"id2label": SIX_LABELS, "label2id": {v: int(k) for k, v in SIX_LABELS.items()}},
        r"classifier.weight: weights \[4, 16\] vs config \[6, 16\].*id2label has 6 labels",
    ),
    "fewer_labels_than_classifier_rows": (
        "resnet",
        {"id2label": {"0": "cat", "1": "dog"}, "label2id": {"cat": 0, "dog": 1}},
        r"classifier.1.weight: weights \[4, 16\] vs config \[2, 16\].*id2label has 2 labels",
    ),
    "channels_disagree_with_weights": ("vit", {"num_channels": 1}, r"projection.weight: weights \[16, 3, 8, 8\]"),
    "label_keys_not_indices": ("vit", {"id2label": {"a": "cat", "b": "dog"}}, r"id2label keys must be class indices"),
    "labels_not_a_mapping": ("resnet", {"id2label": ["cat", "dog"]}, r"id2label must map class indices"),
}


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_broken_config_is_a_checkpoint_error_naming_the_field(case, tmp_path):
    model_type, changes, names = BROKEN_CONFIGS[case]
    folder = _edit_config(save_tiny(model_type, tmp_path / case), **changes)
    with pytest.raises(CheckpointError, match=names) as caught:
        IIAExplainer(folder, device="cpu", progress=False)
    assert str(folder) in str(caught.value) and "fix" in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_config_that_is_not_a_json_object_is_named(text, tmp_path):
    folder = save_tiny("vit", tmp_path / "ckpt")
    (folder / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError, match=r"config\.json (is not valid JSON|holds a JSON list)"):
        IIAExplainer(folder, device="cpu", progress=False)


def test_weights_missing_a_parameter_are_refused_not_left_random(tmp_path):
    """A weights file without the classifier would load with a random head (transformers only logs it)."""
    from safetensors.torch import load_file, save_file

    folder = save_tiny("resnet", tmp_path / "headless")
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier")}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lack 2 parameter\(s\).*classifier.1.bias.*leave them random"):
        IIAExplainer(folder, device="cpu", progress=False)


def test_unreadable_processor_config_is_named_not_taken_for_a_missing_one(tmp_path):
    folder = save_tiny("vit", tmp_path / "ckpt")
    (folder / "preprocessor_config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json cannot be read.*processor="):
        IIAExplainer(folder, device="cpu", progress=False)


def test_missing_processor_config_loads_and_asks_for_a_processor_on_images(tmp_path):
    folder = save_tiny("vit", tmp_path / "ckpt")
    (folder / "preprocessor_config.json").unlink()
    explainer = IIAExplainer(folder, steps=2, device="cpu", progress=False)
    assert explainer.processor is None
    with pytest.raises(ImageInputError, match="processor="):
        explainer(_image())
    assert explainer.attribute(torch.zeros(1, 3, 32, 32) + 0.1).shape == (1, 32, 32)


@pytest.mark.parametrize(("kind", "model_channels", "mean"), [("vit", 3, [0.5] * 4), ("resnet", 1, [0.5] * 3)])
def test_processor_channels_that_disagree_with_the_model_are_named(kind, model_channels, mean, tmp_path):
    """A processor normalising another number of channels than config.num_channels: the error names both (on the
    first call for a ViT, in the constructor's probe for a CNN), not the processor's broadcasting error."""
    folder = save_tiny(kind, tmp_path / "ckpt", num_channels=model_channels)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    processor.update(image_mean=mean, image_std=mean)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    with pytest.raises(ImageInputError, match=rf"normalises {len(mean)} channels.*takes {model_channels}.*image_mean"):
        IIAExplainer(folder, steps=2, device="cpu", progress=False)(_image())
