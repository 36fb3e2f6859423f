"""hf_iia.data at the edges: an Image(mode=...) column, a ClassLabel ordered unlike the model, map without
batched=True, and map with num_proc (the explainer pickles, its lock is rebuilt)."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from datasets.fingerprint import Hasher
from PIL import Image

from hf_iia import DatasetLabelError, IIAExplainer
from hf_iia.data import explain_batch_fn, explain_dataset
from hf_iia.testing import assert_unchanged, hook_count, pixels, snapshot

torch.set_num_threads(1)
datasets.disable_progress_bars()

# The tiny models' classes (tests/conftest.py LABELS) in another order, one name only as an ImageNet synonym.
PERMUTED = ["fish", "bird", "Cat", "dog", "tabby"]
MODEL_INDEX = [4, 2, 0, 1, 3]  # PERMUTED[i] is the model's class MODEL_INDEX[i]


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (40, 36 + 4 * i, 3), dtype=np.uint8)) for i in range(n)]


def _heatmaps(dataset, column: str = "heatmap") -> np.ndarray:
    return np.stack([np.asarray(row[column], dtype=np.float32) for row in dataset])


@pytest.fixture(scope="module")
def cnn(tiny_folder) -> IIAExplainer:
    return IIAExplainer(tiny_folder("resnet"), steps=1, device="cpu", progress=False)


# ------------------------------------------------------------------ Image(mode=...)
@pytest.mark.parametrize("streaming", [False, True])
def test_an_l_mode_image_column_is_explained_in_grey(cnn, streaming):
    """The model sees the grey image the feature decodes (replicated to RGB), as a grey PIL image would give."""
    images = _images(3)
    dataset = datasets.Dataset.from_dict(
        {"image": images}, features=datasets.Features({"image": datasets.Image(mode="L")})
    )
    assert dataset[0]["image"].mode == "L"
    source = dataset.to_iterable_dataset() if streaming else dataset
    explained = _heatmaps(explain_dataset(cnn, source, batch_size=2))
    grey = np.stack([cnn(image.convert("L")).heatmap for image in images])
    colour = np.stack([cnn(image).heatmap for image in images])
    assert not np.allclose(grey, colour, atol=0.05)  # the check below tells grey from colour
    np.testing.assert_allclose(explained, grey, atol=1e-3)  # float16 storage of maps in [0, 1]


def test_undecoded_cells_follow_the_exif_orientation_the_dataset_shows(cnn):
    """A photo stored sideways with an EXIF orientation is explained upright, as ``dataset[i]["image"]`` is."""
    image = _images(1)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": buffer.getvalue(), "path": None}]}, features=datasets.Features({"image": datasets.Image()})
    )
    shown = dataset[0]["image"]
    assert shown.size == (image.height, image.width)
    explained = _heatmaps(explain_dataset(cnn, dataset))[0]
    np.testing.assert_allclose(explained, cnn(shown).heatmap, atol=1e-3)


# ------------------------------------------------------------------ ClassLabel targets
def _labelled(names: list[str], values: list[int]) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": _images(len(values)), "label": values}, features=features)


@pytest.mark.parametrize("how", ["explain_dataset", "streaming", "map"])
def test_a_class_label_ordered_unlike_the_model_is_read_by_name(cnn, how):
    dataset = _labelled(PERMUTED, [0, 1, 2, 3, 4])
    if how == "map":
        explained = dataset.map(explain_batch_fn(cnn, target_column="label", prefix="iia_"), batched=True, batch_size=2)
    else:
        source = dataset.to_iterable_dataset() if how == "streaming" else dataset
        explained = explain_dataset(cnn, source, target_column="label", batch_size=2, prefix="iia_")
    rows = list(explained)
    assert [row["iia_target"] for row in rows] == MODEL_INDEX
    assert [row["iia_label"] for row in rows] == [cnn.id2label[i] for i in MODEL_INDEX]
    expected = np.stack([cnn(row["image"], target=t).heatmap for row, t in zip(dataset, MODEL_INDEX, strict=True)])
    np.testing.assert_allclose(_heatmaps(rows, "iia_heatmap"), expected, atol=1e-3)


def test_a_class_label_in_the_model_order_is_taken_as_it_is(cnn):
    names = [cnn.id2label[i] for i in range(5)]
    explained = explain_dataset(cnn, _labelled(names, [3, 0, 4]), target_column="label", prefix="iia_")
    assert explained["iia_target"] == [3, 0, 4]


@pytest.mark.parametrize(
    "names, message",
    [
        (["cat", "dog", "horse"], r"'horse' \(unknown label 'horse'"),
        (["cat", "Cat", "dog"], r"several names match each of the model's classes \['cat'\]"),
    ],
)
def test_class_label_names_that_do_not_match_one_to_one_are_refused(cnn, names, message):
    dataset = _labelled(names, [0, 1])
    for call in (
        lambda: explain_dataset(cnn, dataset, target_column="label", prefix="iia_"),
        lambda: explain_batch_fn(cnn, target_column="label", features=dataset.features),
        lambda: dataset.map(explain_batch_fn(cnn, target_column="label", prefix="iia_"), batched=True),
    ):
        with pytest.raises(DatasetLabelError, match=message) as error:
            call()
        assert "align_labels_with_mapping(explainer.model.config.label2id, 'label')" in str(error.value)


def test_the_suggested_alignment_fixes_a_permuted_class_label(cnn):
    names = [cnn.id2label[i] for i in MODEL_INDEX]  # exact names, another order
    dataset = _labelled(names, [0, 1, 2, 3, 4]).align_labels_with_mapping(cnn.model.config.label2id, "label")
    assert dataset.features["label"].names == [cnn.id2label[i] for i in range(5)]
    explained = explain_dataset(cnn, dataset, target_column="label", prefix="iia_")
    assert explained["iia_target"] == MODEL_INDEX


def test_an_unlabelled_class_label_row_is_refused_by_row(cnn):
    dataset = _labelled(PERMUTED, [0, -1])
    with pytest.raises(DatasetLabelError, match=r"row 1: target column 'label' holds -1 \(-1 is datasets' 'no label'"):
        explain_dataset(cnn, dataset, target_column="label", prefix="iia_")


# ------------------------------------------------------------------ map without batched=True
@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("with_indices", [False, True])
def test_map_without_batched_explains_each_row(cnn, decode, with_indices):
    dataset = _labelled(PERMUTED, [0, 2, 4]).cast_column("image", datasets.Image(decode=decode))
    fn = explain_batch_fn(cnn, target_column="label", prefix="iia_")
    rows = dataset.map(fn, with_indices=with_indices)
    batched = dataset.map(fn, batched=True, batch_size=3)
    assert rows["iia_target"] == batched["iia_target"] == [MODEL_INDEX[0], MODEL_INDEX[2], MODEL_INDEX[4]]
    assert rows["iia_label"] == batched["iia_label"]
    np.testing.assert_allclose(_heatmaps(rows, "iia_heatmap"), _heatmaps(batched, "iia_heatmap"), atol=1e-3)


def test_streaming_map_without_batched_explains_each_row(cnn):
    dataset = datasets.Dataset.from_dict({"image": _images(2)}, features=datasets.Features({"image": datasets.Image()}))
    rows = list(dataset.to_iterable_dataset().map(explain_batch_fn(cnn)))
    alone = [cnn(image) for image in dataset["image"]]
    assert [row["target"] for row in rows] == [explanation.target for explanation in alone]
    np.testing.assert_allclose(_heatmaps(rows), np.stack([e.heatmap for e in alone]), atol=1e-3)


# ------------------------------------------------------------------ pickling and num_proc
@pytest.mark.parametrize(
    "kind, options",
    [
        ("resnet", {}),
        ("resnet", {"start": "black"}),
        ("resnet", {"method": "gradcam"}),
        ("vit", {}),
        ("vit", {"method": "gae"}),
    ],
)
def test_an_unpickled_explainer_gives_the_same_maps(tiny_folder, kind, options):
    explainer = IIAExplainer(tiny_folder(kind), device="cpu", progress=False, **options)
    copy = pickle.loads(pickle.dumps(explainer))
    assert copy.model is not explainer.model and copy.adapter.levels == explainer.adapter.levels
    x = pixels(2, size=32)
    torch.testing.assert_close(copy.attribute(x), explainer.attribute(x), atol=1e-5, rtol=0)  # maps span [0, 1]
    assert hook_count(copy.model) == 0


def test_datasets_fingerprints_an_explain_fn_by_its_model_and_settings(tiny_folder):
    first, second = (IIAExplainer(tiny_folder("resnet"), steps=1, device="cpu", progress=False) for _ in range(2))
    first.geometry((40, 40))  # a cache, not a setting
    assert Hasher.hash(explain_batch_fn(first)) == Hasher.hash(explain_batch_fn(second))
    other = IIAExplainer(tiny_folder("resnet"), steps=2, device="cpu", progress=False)
    assert Hasher.hash(explain_batch_fn(other)) != Hasher.hash(explain_batch_fn(first))


def test_map_with_num_proc_equals_one_process_and_leaves_the_model_as_found(cnn):
    dataset = _labelled(PERMUTED, [0, 1, 2, 3])
    before = snapshot(cnn.model)
    fn = explain_batch_fn(cnn, target_column="label", prefix="iia_")
    parallel = dataset.map(fn, batched=True, batch_size=2, num_proc=2)
    single = dataset.map(fn, batched=True, batch_size=2)
    assert parallel["iia_target"] == single["iia_target"] == MODEL_INDEX[:4]
    np.testing.assert_allclose(_heatmaps(parallel, "iia_heatmap"), _heatmaps(single, "iia_heatmap"), atol=1e-3)
    np.testing.assert_allclose(parallel["iia_score"], single["iia_score"], atol=1e-5)
    assert_unchanged(before, snapshot(cnn.model))
    assert hook_count(cnn.model) == 0


CHILD = """
import pickle, sys, threading
import torch
from hf_iia import TargetError
from hf_iia.testing import hook_count, pixels
torch.set_num_threads(1)
first, second = pickle.load(open(sys.argv[1], "rb"))
assert first.model is second.model
with first._lock:  # explainers unpickled over one model share its lock, as before pickling
    assert second._lock.locked()
assert not second._lock.locked()
inputs = [pixels(2, seed=seed, size=32) for seed in range(2)]
expected = [first.attribute(inputs[0]), second.attribute(inputs[1])]
results = [None, None]
barrier = threading.Barrier(2)
def run(i, explainer):
    barrier.wait()
    results[i] = [explainer.attribute(inputs[i]) for _ in range(2)]
threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate((first, second))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert all(torch.equal(m, e) for maps, e in zip(results, expected) for m in maps), "threads mixed their runs"
assert hook_count(first.model) == 0
try:
    first(pixels(1, size=32), target=99)
except TargetError as error:
    print("refused:", error)
"""


def test_a_pickled_explainer_pair_keeps_its_lock_and_checks_in_a_fresh_process(cnn, tmp_path):
    comparison = IIAExplainer(cnn.model, cnn.processor, method="gradcam", progress=False)
    path = tmp_path / "explainers.pkl"
    path.write_bytes(pickle.dumps((cnn, comparison)))
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "refused: target 99 is out of range" in child.stdout


def test_the_audit_decodes_an_l_mode_column_in_grey(tmp_path):
    """The audit explains an ``Image(mode="L")`` column in grey, as explain_dataset does (its maps equal the
    explainer's maps of the grey images; they differ from the colour images' maps)."""
    from hf_iia.tools.audit import AuditConfig, read_maps, run_audit
    from hf_iia.tools.bench.run import DEFAULT_MODELS_DIR
    from hf_iia.tools.synthetic import HELDOUT_START, make_dataset

    dataset = make_dataset(4, seed=0, size=64, shortcut=False, start=HELDOUT_START)
    colour = [dataset[i]["image"].convert("RGB") for i in range(4)]
    dataset.cast_column("image", datasets.Image(mode="L")).save_to_disk(tmp_path / "data")
    model = str(DEFAULT_MODELS_DIR / "resnet")
    config = AuditConfig(model=model, dataset=str(tmp_path / "data"), n=4, batch_size=4, steps=1, perturbation_steps=4)
    run_audit(config, tmp_path / "card", progress=False)
    maps = read_maps(tmp_path / "card", 4, [(i, "iia") for i in range(4)])
    explainer = IIAExplainer(model, steps=1, progress=False)
    labels = [dataset[i]["label"] for i in range(4)]
    grey = np.stack([e.heatmap for e in explainer([image.convert("L") for image in colour], target=labels)])
    in_colour = np.stack([e.heatmap for e in explainer(colour, target=labels)])
    audited = np.stack([np.asarray(maps[(i, "iia")], dtype=np.float32) for i in range(4)])
    assert not np.allclose(grey, in_colour, atol=0.05)
    np.testing.assert_allclose(audited, grey, atol=1e-3)  # float16 storage of maps in [0, 1]
