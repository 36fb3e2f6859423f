"""The real-texture suite: its generator, its split discipline, its trained checkpoints and its bench run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_iia.errors import IIAError
from hf_iia.tools.bench.run import TEXTURES_MODELS_DIR, synthetic_heldout
from hf_iia.tools.cli import main
from hf_iia.tools.textures import (
    CLASS_NAMES,
    CLASS_SOURCES,
    HELDOUT_START,
    NUM_CLASSES,
    TRAIN_FRACTION,
    _halves,
    make_arrays,
    make_dataset,
    make_pair_arrays,
    make_sample,
)

NOISE = 4  # the generator's per-pixel noise amplitude
GREY_CLASSES = {"brick", "grass", "gravel", "text"}  # textures from grayscale photos: R = G = B before the noise
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_synthetic.py"
COMMITTED = sorted(p.parent for p in TEXTURES_MODELS_DIR.glob("*/model.safetensors"))


def test_same_seed_and_index_give_identical_samples() -> None:
    for index in (0, 7, HELDOUT_START + 3):
        a, b = make_sample(index, seed=3), make_sample(index, seed=3)
        assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.mask, b.mask)
        assert (a.label, a.label_name) == (b.label, b.label_name) == (index % 6, CLASS_NAMES[index % 6])
    assert make_sample(5, seed=3).image.tobytes() != make_sample(5, seed=4).image.tobytes()
    assert make_sample(5).image.tobytes() != make_sample(11).image.tobytes()


def test_classes_are_six_texture_photos() -> None:
    assert CLASS_NAMES == ("brick", "grass", "gravel", "stain", "galaxies", "text") and NUM_CLASSES == 6
    assert len({source for _, source in CLASS_SOURCES}) == NUM_CLASSES


@pytest.mark.parametrize("size", [32, 64])
def test_mask_is_a_non_empty_object_inside_the_image(size: int) -> None:
    for index in range(18):
        sample = make_sample(index, seed=1, size=size)
        assert sample.image.mode == "RGB" and sample.image.size == (size, size)
        assert sample.mask.dtype == bool and sample.mask.shape == (size, size)
        assert sample.mask.sum() >= 0.02 * size * size
        border = np.concatenate([sample.mask[0], sample.mask[-1], sample.mask[:, 0], sample.mask[:, -1]])
        assert not border.any()


def test_mask_matches_the_pasted_object() -> None:
    """Redrawing the background, distractors and clutter keeps the label, the mask and the object's pixels (up to the
    noise), and changes the rest: the masked pixels are the object, and only the object depends on the label."""
    for index in range(12):
        reference = make_sample(index, seed=5)
        pixels = np.asarray(reference.image).astype(int)
        for background_seed in range(2):
            other = make_sample(index, seed=5, background_seed=background_seed)
            other_pixels = np.asarray(other.image).astype(int)
            assert other.label == reference.label and np.array_equal(other.mask, reference.mask)
            assert np.abs(other_pixels - pixels)[reference.mask].max() <= 2 * NOISE
            changed = (np.abs(other_pixels - pixels) > 2 * NOISE).any(-1)
            assert changed[~reference.mask].mean() > 0.5
        if reference.label_name in GREY_CLASSES:  # the masked pixels come from the grey class texture
            values = pixels[reference.mask]
            assert (values.max(1) - values.min(1) <= 2 * NOISE).all()


def test_occluders_cover_part_of_the_object_and_the_mask_leaves_them_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same samples drawn without occlusion: where an occluder was drawn, the mask is the unoccluded mask minus
    the covered pixels (at most half of them), and the covered pixels show the occluder, not the texture."""
    from hf_iia.tools import textures

    images, masks, labels = make_arrays(40, seed=2)
    monkeypatch.setattr(textures, "OCCLUSION_PROBABILITY", 0.0)
    free_images, free_masks, _ = make_arrays(40, seed=2)
    occluded = [i for i in range(40) if not np.array_equal(masks[i], free_masks[i])]
    assert 5 <= len(occluded) <= 25  # OCCLUSION_PROBABILITY = 0.35 of 40
    for i in occluded:
        covered = free_masks[i] & ~masks[i]
        assert not (masks[i] & ~free_masks[i]).any() and covered.sum() <= 0.5 * free_masks[i].sum()
        changed = (np.abs(images[i].astype(int) - free_images[i].astype(int)) > 2 * NOISE).any(-1)
        assert changed[covered].mean() > 0.5
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [40 // 6 + (k < 40 % 6) for k in range(6)]


def test_make_arrays_matches_make_sample_and_dataset() -> None:
    images, masks, labels = make_arrays(4, seed=4, start=HELDOUT_START)
    for offset in range(4):
        sample = make_sample(HELDOUT_START + offset, seed=4)
        assert np.array_equal(images[offset], np.asarray(sample.image)) and np.array_equal(masks[offset], sample.mask)
        assert labels[offset] == sample.label
    ds = make_dataset(3, seed=4, start=HELDOUT_START, size=32)
    assert ds.column_names == ["image", "mask", "label"] and ds.features["label"].names == list(CLASS_NAMES)
    sample = make_sample(HELDOUT_START + 2, seed=4, size=32)
    assert np.array_equal(np.asarray(ds[2]["image"]), np.asarray(sample.image))
    assert np.array_equal(np.asarray(ds[2]["mask"], dtype=bool), sample.mask)


def test_pair_samples_hold_two_objects_of_different_classes() -> None:
    """Two disjoint, non-empty masks of two different classes; the grey textures' pixels under each mask; the same
    arrays for the same arguments; a size too small for two objects is refused, not drawn with fewer."""
    images, masks, labels = make_pair_arrays(36, seed=1, start=HELDOUT_START)
    assert images.shape == (36, 64, 64, 3) and masks.shape == (36, 2, 64, 64) and labels.shape == (36, 2)
    assert (labels[:, 0] == (HELDOUT_START + np.arange(36)) % NUM_CLASSES).all() and (
        labels[:, 0] != labels[:, 1]
    ).all()
    assert len(set(labels[:, 1].tolist())) == NUM_CLASSES
    assert not (masks[:, 0] & masks[:, 1]).any() and (masks.sum(axis=(2, 3)) >= 0.02 * 64 * 64).all()
    for i in range(36):
        for k in range(2):
            if CLASS_NAMES[labels[i, k]] in GREY_CLASSES:
                values = images[i][masks[i, k]].astype(int)
                assert (values.max(1) - values.min(1) <= 2 * NOISE).all()
    again = make_pair_arrays(3, seed=1, start=HELDOUT_START + 33)
    assert all(np.array_equal(a, b[33:]) for a, b in zip(again, (images, masks, labels), strict=True))
    with pytest.raises(IIAError, match="no room for two objects"):
        make_pair_arrays(40, size=32)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(IIAError, match="no shortcut variant"):
        make_arrays(2, shortcut=True)
    with pytest.raises(IIAError, match="at least"):
        make_sample(0, size=16)
    with pytest.raises(IIAError, match=">= 0"):
        make_sample(-1)


def test_training_and_heldout_crop_disjoint_parts_of_each_photo() -> None:
    """The two parts of a photo tile it along its longer side without overlap (training: the first 70 %)."""
    from PIL import Image

    for width, height in ((100, 60), (60, 100)):
        photo = Image.fromarray(
            np.arange(width * height * 3, dtype=np.uint32).reshape(height, width, 3).astype(np.uint8)
        )
        train, heldout = _halves(photo)
        longer = max(width, height)
        cut = round(TRAIN_FRACTION * longer)
        axis = 1 if width >= height else 0
        assert (train.size[1 - axis], heldout.size[1 - axis]) == (cut, longer - cut)
        pixels = np.asarray(photo)
        rejoined = np.concatenate([np.asarray(train), np.asarray(heldout)], axis=axis)
        assert np.array_equal(rejoined, pixels)


def test_training_script_trains_on_textures(tmp_path: Path) -> None:
    """``scripts/train_synthetic.py --suite textures`` with its smallest settings, as a user runs it."""
    argv = ["--suite", "textures", "--arch", "resnet", "--steps", "2", "--batch-size", "8", "--train-size", "16"]
    argv += ["--heldout-size", "8", "--workers", "1", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]
    finished = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    log = json.loads((tmp_path / "resnet" / "train_log.json").read_text())
    assert log["suite"] == "textures" and log["heldout_indices"] == [HELDOUT_START, HELDOUT_START + 8]
    assert log["heldout_check"]["n"] == 8 and len(log["heldout_check"]["predictions"]) == 8
    config = json.loads((tmp_path / "resnet" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(NUM_CLASSES)] == list(CLASS_NAMES)
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--suite", "textures", "--shortcut", "--out", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "--shortcut needs --suite synthetic" in refused.stderr


def test_committed_checkpoints_fit_the_size_budget() -> None:
    assert {folder.name for folder in COMMITTED} == {"vit", "deit", "resnet"}
    total = sum(f.stat().st_size for folder in COMMITTED for f in folder.iterdir() if f.suffix == ".safetensors")
    assert total <= 10_000_000
    for folder in COMMITTED:
        assert {"config.json", "preprocessor_config.json", "train_log.json"} <= {f.name for f in folder.iterdir()}


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda folder: folder.name)
def test_recorded_heldout_accuracy_is_what_a_reevaluation_gives(folder: Path) -> None:
    """Each committed model, loaded with the Auto classes and its saved processor, re-evaluated on its whole held-out
    split (regenerated here) gives the accuracy its train_log.json records, and the recorded predictions of the first
    images wherever the recorded top-2 margin is not a near-tie (float32 differs in the last bits between CPUs)."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    log = json.loads((folder / "train_log.json").read_text())
    assert log["suite"] == "textures" and log["heldout_indices"][0] >= log["train_indices"][1]
    start, stop = log["heldout_indices"]
    images, _, labels = make_arrays(stop - start, seed=log["data_seed"], size=log["size"], start=start)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = torch.cat(
            [model(**processor(images=list(chunk), return_tensors="pt")).logits for chunk in np.array_split(images, 4)]
        )
    predictions = logits.argmax(-1).numpy()
    check = log["heldout_check"]
    decided = np.asarray(check["top2_logit_margins"]) > 1e-3
    assert np.array_equal(predictions[: check["n"]][decided], np.asarray(check["predictions"])[decided])
    # At most the near-ties of the whole split may flip: two images of the held-out split.
    assert abs(float((predictions == labels).mean()) - log["heldout_accuracy"]) <= 2 / (stop - start) + 1e-4


@pytest.fixture(scope="module")
def texture_bench(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("textures_bench") / "run"
    argv = ["bench", "--suite", "textures", "--out", str(out), "--n", "2", "--archs", "vit", "resnet"]
    argv += ["--methods", "iia", "attention_rollout", "gradcam", "--perturbation-steps", "3", "--threads", "1"]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def test_bench_textures_suite_runs_on_the_committed_checkpoints(texture_bench: dict) -> None:
    assert texture_bench["suite"] == "textures"
    assert [model["name"] for model in texture_bench["models"]] == ["vit", "resnet"]
    methods = {"vit": {"iia", "attention_rollout", "gradcam"}, "resnet": {"iia", "gradcam"}}  # ViT: the token grid
    for model in texture_bench["models"]:
        assert [r["id"] for r in model["inputs"]] == [f"textures-{HELDOUT_START + i}" for i in range(2)]
        assert [r["label_name"] for r in model["inputs"]] == [CLASS_NAMES[(HELDOUT_START + i) % 6] for i in range(2)]
        assert set(model["methods"]) == methods[model["name"]]
        for method in model["methods"].values():
            assert {"mask_ap", "energy_pointing_game", "deletion_auc", "insertion_auc"} <= set(method["per_image"])


def test_a_checkpoint_of_another_suite_is_refused(tmp_path: Path) -> None:
    """The synthetic suite's checkpoints never saw texture images (their log has no suite: synthetic), and back."""
    (tmp_path / "train_log.json").write_text(json.dumps({"heldout_indices": [HELDOUT_START, HELDOUT_START + 10]}))
    with pytest.raises(IIAError, match="trained on the 'synthetic' suite"):
        synthetic_heldout(tmp_path, 5, 64, "textures")
    assert synthetic_heldout(tmp_path, 5, 64, "synthetic")["start"] == HELDOUT_START
    (tmp_path / "train_log.json").write_text(
        json.dumps({"suite": "textures", "heldout_indices": [HELDOUT_START, HELDOUT_START + 10]})
    )
    with pytest.raises(IIAError, match="trained on the 'textures' suite"):
        synthetic_heldout(tmp_path, 5, 64, "synthetic")
