"""The audit checks that the model's classes fit the dataset's labels before it issues a verdict."""

from __future__ import annotations

import datasets

from hf_iia.tools.audit import AuditConfig, run_audit
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR

N = 12


def test_a_model_whose_classes_do_not_fit_the_labels_gets_no_spurious_cue_verdict(lite0_folder, tmp_path):
    """The ImageNet Lite0 audited on the 6-class synthetic shapes: accuracy near chance, so no verdict."""
    config = AuditConfig(
        model=str(lite0_folder), dataset="synthetic", n=N, batch_size=6, steps=1, perturbation_steps=4, image_size=64
    )
    summary = run_audit(config, tmp_path / "card", progress=False)
    assert not summary["label_fit"]["fits"]
    for verdict in summary["verdict"].values():
        assert verdict["flagged"] == [] and verdict["text"].startswith("Not assessed")
    assert "Not assessed" in (tmp_path / "card" / "README.md").read_text()


def test_labels_given_as_class_names_are_read_through_id2label(tmp_path):
    """A dataset whose label column holds the model's class names (strings) audits like one with indices."""
    from hf_iia.tools.synthetic import CLASS_NAMES, HELDOUT_START, make_dataset

    dataset = make_dataset(N, seed=0, size=64, shortcut=False, start=HELDOUT_START)
    names = dataset.features["label"].names
    assert list(names) == list(CLASS_NAMES)
    named = dataset.cast_column("label", datasets.Value("int64")).map(
        lambda row: {"label": names[row["label"]]},
        features=datasets.Features(
            {**{k: v for k, v in dataset.features.items() if k != "label"}, "label": datasets.Value("string")}
        ),
    )
    summary = _audit_saved(named, tmp_path)
    assert summary["label_fit"]["fits"] and summary["overall"]["iia"]["accuracy"] >= 0.9


def test_the_audit_reads_a_permuted_class_label_by_name(tmp_path):
    """The audit maps a ClassLabel to the model's classes as explain_dataset does (the bench's tiny ResNet knows the
    synthetic shapes, so it fits labels given in any order)."""
    from hf_iia.tools.synthetic import CLASS_NAMES, HELDOUT_START, make_dataset

    dataset = make_dataset(N, seed=0, size=64, shortcut=False, start=HELDOUT_START)
    permuted = {name: index for index, name in enumerate(reversed(CLASS_NAMES))}
    dataset = dataset.align_labels_with_mapping(permuted, "label")  # same meaning, values in the reversed order
    assert dataset.features["label"].names == list(reversed(CLASS_NAMES))
    summary = _audit_saved(dataset, tmp_path)
    assert summary["label_fit"]["fits"] and summary["overall"]["iia"]["accuracy"] >= 0.9


def _audit_saved(dataset: datasets.Dataset, tmp_path) -> dict:
    """Audit the bench's tiny ResNet on ``dataset`` saved with ``save_to_disk`` (first N rows, masks, 1 step)."""
    dataset.save_to_disk(tmp_path / "data")
    config = AuditConfig(
        model=str(DEFAULT_MODELS_DIR / "resnet"),
        dataset=str(tmp_path / "data"),
        n=N,
        batch_size=6,
        steps=1,
        perturbation_steps=4,
        mask_column="mask",
    )
    return run_audit(config, tmp_path / "card", progress=False)


def test_resuming_after_the_checkpoint_changed_is_refused(tmp_path):
    """A rerun after the folder was re-saved with new weights must not finish the card from the old model."""
    import shutil

    import pytest
    from safetensors.torch import load_file, save_file

    from hf_iia import AuditError

    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODELS_DIR / "resnet", folder)
    config = AuditConfig(model=str(folder), dataset="synthetic", n=6, batch_size=6, steps=1, perturbation_steps=2)
    run_audit(config, tmp_path / "card", progress=False)
    weights = load_file(folder / "model.safetensors")
    save_file({name: tensor * 1.01 for name, tensor in weights.items()}, folder / "model.safetensors")
    with pytest.raises(AuditError, match="have changed"):
        run_audit(config, tmp_path / "card", progress=False)
