"""Tests of the synthetic ground-truth benchmark data and of its training script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_iia.errors import IIAError
from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR
from hf_iia.tools.synthetic import (
    CLASS_NAMES,
    NUM_CLASSES,
    SHORTCUT_COLORS,
    add_shortcut_patch,
    make_arrays,
    make_dataset,
    make_sample,
    shortcut_patch_size,
)

NOISE = 6  # the generator's per-pixel noise amplitude


def _pixels(index: int, **kwargs: object) -> np.ndarray:
    return np.asarray(make_sample(index, **kwargs).image)


def test_same_seed_and_index_give_identical_samples() -> None:
    for index in (0, 7, 123_456):
        a, b = make_sample(index, seed=3), make_sample(index, seed=3)
        assert a.image.tobytes() == b.image.tobytes()
        assert np.array_equal(a.mask, b.mask)
        assert (a.label, a.label_name) == (b.label, b.label_name)
    assert make_sample(5, seed=3).image.tobytes() != make_sample(5, seed=4).image.tobytes()
    assert make_sample(5).image.tobytes() != make_sample(11).image.tobytes()


@pytest.mark.parametrize("size", [32, 64, 96])
def test_mask_is_a_non_empty_object_inside_the_image(size: int) -> None:
    for index in range(24):
        sample = make_sample(index, seed=1, size=size)
        assert sample.image.mode == "RGB" and sample.image.size == (size, size)
        assert sample.mask.dtype == bool and sample.mask.shape == (size, size)
        assert sample.mask.sum() >= 0.015 * size * size
        border = np.concatenate([sample.mask[0], sample.mask[-1], sample.mask[:, 0], sample.mask[:, -1]])
        assert not border.any()


def test_object_is_never_occluded() -> None:
    """Every object pixel shows the object's flat colour up to the per-pixel noise."""
    for index in range(30):
        sample = make_sample(index, seed=2)
        values = np.asarray(sample.image)[sample.mask].astype(int)
        assert (values.max(0) - values.min(0) <= 2 * NOISE).all()


def test_labels_cover_all_classes() -> None:
    samples = [make_sample(i) for i in range(60)]
    assert {s.label for s in samples} == set(range(NUM_CLASSES))
    assert all(s.label_name == CLASS_NAMES[s.label] for s in samples)
    assert len(CLASS_NAMES) == NUM_CLASSES == 6


def test_shortcut_patch_is_class_coloured_and_the_only_change() -> None:
    patch = shortcut_patch_size(64)
    assert patch == 6
    corners = {}
    for index in range(12):
        plain, marked = make_sample(index), make_sample(index, shortcut=True)
        image, reference = np.asarray(marked.image), np.asarray(plain.image)
        assert (image[:patch, :patch] == SHORTCUT_COLORS[marked.label]).all()
        outside = np.ones((64, 64), dtype=bool)
        outside[:patch, :patch] = False
        assert np.array_equal(image[outside], reference[outside])
        assert np.array_equal(marked.mask, plain.mask) and marked.label == plain.label
        assert not marked.mask[: patch + 2, : patch + 2].any()
        corners[marked.label] = image[0, 0].tobytes()
    assert len(set(corners.values())) == NUM_CLASSES


def test_clutter_never_changes_the_object_or_label() -> None:
    """Redrawing background, lines and distractors keeps the label, mask and object colour."""
    for index in range(18):
        reference = make_sample(index, seed=5)
        colour = np.asarray(reference.image)[reference.mask].astype(int).mean(0)
        for background_seed in range(3):
            other = make_sample(index, seed=5, background_seed=background_seed)
            assert other.label == reference.label
            assert np.array_equal(other.mask, reference.mask)
            values = np.asarray(other.image)[other.mask].astype(int)
            assert np.abs(values - colour).max() <= 2 * NOISE
            assert not np.array_equal(
                np.asarray(other.image)[~other.mask], np.asarray(reference.image)[~reference.mask]
            )


def test_make_arrays_matches_make_sample() -> None:
    images, masks, labels = make_arrays(8, seed=4, start=100, shortcut=True)
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (8, 64, 64) and masks.dtype == bool
    for offset in range(8):
        sample = make_sample(100 + offset, seed=4, shortcut=True)
        assert np.array_equal(images[offset], np.asarray(sample.image))
        assert np.array_equal(masks[offset], sample.mask)
        assert labels[offset] == sample.label


def test_add_shortcut_patch_checks_its_input() -> None:
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    marked = add_shortcut_patch(images, np.array([0, 5]))
    assert (marked[1, :6, :6] == SHORTCUT_COLORS[5]).all() and not images.any()
    with pytest.raises(IIAError):
        add_shortcut_patch(images, np.array([0, 6]))
    with pytest.raises(IIAError):
        add_shortcut_patch(np.zeros((64, 32, 3), dtype=np.uint8), 0)
    with pytest.raises(IIAError):
        make_sample(0, size=16)
    with pytest.raises(IIAError):
        make_sample(-1)


def test_make_dataset_columns_and_features() -> None:
    datasets = pytest.importorskip("datasets")
    ds = make_dataset(12, seed=1, size=48, start=30)
    assert ds.column_names == ["image", "mask", "label"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["mask"], datasets.Array2D)
    assert ds.features["label"].names == list(CLASS_NAMES)
    row = ds[3]
    sample = make_sample(33, seed=1, size=48)
    assert row["image"].mode == "RGB" and np.array_equal(np.asarray(row["image"]), np.asarray(sample.image))
    assert np.array_equal(np.asarray(row["mask"], dtype=bool), sample.mask)
    assert row["label"] == sample.label


def test_training_script_saves_loadable_models_of_every_architecture(tmp_path: Path) -> None:
    """``scripts/train_synthetic.py`` with its smallest settings, run as a user runs it (in a subprocess)."""
    pytest.importorskip("transformers")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_synthetic.py"
    argv = ["--arch", "all", "--shortcut", "--steps", "2", "--batch-size", "8", "--train-size", "16"]
    argv += ["--heldout-size", "8", "--workers", "1", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]
    finished = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr

    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    summary = json.loads((tmp_path / "summary.json").read_text())
    names = ("vit", "deit", "resnet", "convnext", "swin", "regnet", "resnet_shortcut")
    assert set(summary["models"]) == set(names)
    for name in names:
        folder = tmp_path / name
        assert (folder / "model.safetensors").is_file()
        log = json.loads((folder / "train_log.json").read_text())
        assert log["steps"] == 2 and 0.0 <= log["heldout_accuracy"] <= 1.0 and log["loss_curve"]
        assert log["reload_logit_max_abs_diff"] < 1e-4
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        assert model.config.id2label == dict(enumerate(CLASS_NAMES))
        assert model.config.label2id == {label: i for i, label in enumerate(CLASS_NAMES)}
        pixel_values = AutoImageProcessor.from_pretrained(folder)(make_sample(0).image, return_tensors="pt")[
            "pixel_values"
        ]
        assert tuple(pixel_values.shape) == (1, 3, 64, 64)
        with torch.no_grad():
            assert tuple(model(pixel_values=pixel_values).logits.shape) == (1, NUM_CLASSES)
    assert "conflicting_patch_followed" in json.loads((tmp_path / "resnet_shortcut" / "train_log.json").read_text())


COMMITTED = sorted(p.parent for p in DEFAULT_MODELS_DIR.glob("*/model.safetensors"))


def test_committed_checkpoints_fit_the_size_budget() -> None:
    assert {folder.name for folder in COMMITTED} >= {"vit", "deit", "resnet", "convnext", "swin", "regnet"}
    total = sum(f.stat().st_size for folder in COMMITTED for f in folder.iterdir() if f.suffix == ".safetensors")
    assert total <= 13_000_000


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda folder: folder.name)
def test_committed_checkpoint_is_accurate_on_unseen_heldout_images(folder: Path) -> None:
    """Each committed model, loaded with the Auto classes, is >= 90 % right on 120 held-out images.

    The images are generated here (the training run only saw indices below ``HELDOUT_START``),
    with the shortcut patch for a shortcut-trained model, as in its training log.
    """
    torch = pytest.importorskip("torch")
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    log = json.loads((folder / "train_log.json").read_text())
    start = log["heldout_indices"][0]
    images, _, labels = make_arrays(120, seed=log["data_seed"], size=log["size"], start=start, shortcut=log["shortcut"])
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**processor(images=list(images), return_tensors="pt")).logits
    accuracy = float((logits.argmax(-1).numpy() == labels).mean())
    assert accuracy >= 0.9, f"{folder.name}: {accuracy:.3f}"
    assert model.config.id2label == dict(enumerate(CLASS_NAMES))
