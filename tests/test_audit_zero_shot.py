"""The audit of a zero-shot model (a tiny CLIP Hub folder, tokenizer built offline) over a dataset's ClassLabel names
(``labels_from_dataset`` / ``hf-iia audit --labels-from-dataset``), and the card's Hub eval results read back with
``huggingface_hub.ModelCard``."""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from PIL import Image

from hf_iia.testing import save_zero_shot
from hf_iia.tools.audit import AuditConfig, AuditError, run_audit
from hf_iia.tools.audit.cards import _card_data
from hf_iia.tools.audit.measures import audit_metrics, column_name
from hf_iia.tools.cli import main

NAMES = ["cat", "dog", "red car"]
TEMPLATE = "a photo of a {}"

torch.set_num_threads(1)
datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return save_zero_shot("clip", tmp_path_factory.mktemp("clip"))


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def class_label_dataset(tmp_path_factory):
    """Six images with a ClassLabel column of three names, saved with save_to_disk."""
    folder = tmp_path_factory.mktemp("zero_shot_data") / "data"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    datasets.Dataset.from_dict({"image": _images(6), "label": [0, 1, 2, 0, 1, 2]}, features=features).save_to_disk(
        str(folder)
    )
    return folder


def _config(clip_folder, data, **settings) -> AuditConfig:
    settings = {"n": 6, "batch_size": 3, "steps": 2, "perturbation_steps": 4, "device": "cpu", **settings}
    return AuditConfig(model=str(clip_folder), dataset=str(data), **settings)


def test_zero_shot_audit_scores_the_dataset_names_as_the_pipeline(clip_folder, class_label_dataset, tmp_path):
    """The model is scored over the ClassLabel names through the template, as the zero-shot pipeline scores them;
    the card says so, is tagged zero-shot, and its eval results parse back with the summary's values."""
    out = tmp_path / "card"
    summary = run_audit(
        _config(clip_folder, class_label_dataset, labels_from_dataset=True, hypothesis_template=TEMPLATE),
        out,
        progress=False,
    )
    assert summary is not None and summary["settings"]["labels_from_dataset"] is True
    results = pd.read_parquet(out / "results.parquet")
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(clip_folder), device="cpu")
    for index, image in enumerate(_images(6)):
        best = pipe(image, candidate_labels=NAMES, hypothesis_template=TEMPLATE)[0]
        row = results[(results["index"] == index) & (results["method"] == "iia")].iloc[0]
        assert NAMES[int(row["prediction"])] == best["label"]
        assert float(row["prediction_score"]) == pytest.approx(best["score"], abs=1e-5)
        assert int(row["target"]) == [0, 1, 2, 0, 1, 2][index]  # the dataset's label, explained by name
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert TEMPLATE in card.text and "zero-shot classifier" in card.text
    expected = {
        (column_name(metric), method): round(summary["overall"][method][column_name(metric)], 4)
        for metric in audit_metrics()
        if metric.model_card
        for method in summary["methods"]
        if summary["overall"][method].get(column_name(metric)) is not None
    }
    assert expected  # deletion and insertion AUC at least
    found = {}
    for result in card.data.eval_results:
        assert result.task_type == "zero-shot-image-classification"
        assert (result.dataset_name, result.dataset_split) == (str(class_label_dataset), summary["split"])
        method = result.metric_name.rsplit("(", 1)[1].rstrip(")")
        found[(result.metric_type, method)] = result.metric_value
    assert found == expected


def test_classifier_card_eval_results_parse_back(tmp_path):
    """An image classifier's card: eval results tagged image-classification, values those of the summary."""
    summary = {
        "model": "some/model",
        "dataset": "synthetic",
        "split": None,
        "rows": 2,
        "methods": ["iia", "gradcam"],
        "overall": {"iia": {"deletion_auc": 0.123456, "insertion_auc": 0.5}, "gradcam": {"deletion_auc": 0.25}},
        "settings": {"n": 2, "thresholds": {"corner_lift": 3, "border_lift": 1.6, "object_lift": 1}},
    }
    data = _card_data(summary)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\ntext\n")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.pipeline_tag == "image-classification"
    values = {(r.metric_type, r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert values[("deletion_auc", "Deletion AUC (iia)")] == 0.1235
    assert values[("deletion_auc", "Deletion AUC (gradcam)")] == 0.25
    assert all(r.task_type == "image-classification" for r in loaded.data.eval_results)


def test_a_zero_shot_model_without_dataset_labels_names_the_flag(clip_folder, class_label_dataset, tmp_path):
    with pytest.raises(AuditError, match="--labels-from-dataset"):
        run_audit(_config(clip_folder, class_label_dataset), tmp_path / "a", progress=False)


def test_labels_from_dataset_needs_a_class_label_column(clip_folder, tmp_path):
    data = tmp_path / "plain"
    datasets.Dataset.from_dict({"image": _images(2), "label": ["cat", "dog"]}).save_to_disk(str(data))
    with pytest.raises(AuditError, match="ClassLabel"):
        run_audit(_config(clip_folder, data, n=2, labels_from_dataset=True), tmp_path / "b", progress=False)


def test_a_template_without_labels_from_dataset_is_refused(clip_folder, class_label_dataset, tmp_path):
    with pytest.raises(AuditError, match="--labels-from-dataset"):
        run_audit(_config(clip_folder, class_label_dataset, hypothesis_template=TEMPLATE), tmp_path / "c")


def test_cli_audit_labels_from_dataset(clip_folder, class_label_dataset, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "audit",
            str(clip_folder),
            "--dataset",
            str(class_label_dataset),
            "--labels-from-dataset",
            "--hypothesis-template",
            TEMPLATE,
            "--n",
            "3",
            "--batch-size",
            "3",
            "--steps",
            "2",
            "--perturbation-steps",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "wrote" in capsys.readouterr().out
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification" and card.data.eval_results
