"""hf_iia.data: dataset.map with explain_batch_fn, explain_dataset on Dataset / IterableDataset, clear errors."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_iia import IIAError, IIAExplainer
from hf_iia.data import DatasetColumnError, DatasetImageError, explain_batch_fn, explain_dataset

torch.set_num_threads(1)
datasets.disable_progress_bars()


def _images(n: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 4 * i, 3), dtype=np.uint8)) for i in range(n)]


def _dataset(n: int = 5) -> datasets.Dataset:
    """``n`` images of varying size with labels ``0 .. n - 1`` (the tiny models have 5 classes)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": _images(n), "label": list(range(n))}, features=features)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", params=["resnet", "vit"])
def explainer(request, tiny_folder) -> IIAExplainer:
    return IIAExplainer(tiny_folder(request.param), steps=2, device="cpu", progress=False)


@pytest.fixture(scope="module")
def cnn(tiny_folder) -> IIAExplainer:
    return IIAExplainer(tiny_folder("resnet"), steps=1, device="cpu", progress=False)


@pytest.mark.parametrize("target_column", [None, "label"])
def test_map_equals_per_image_calls(explainer, target_column):
    dataset = _dataset()
    mapped = dataset.map(
        explain_batch_fn(explainer, target_column=target_column, prefix="iia_"), batched=True, batch_size=2
    )
    for row, original in zip(mapped, dataset, strict=True):
        alone = explainer(original["image"], target=original["label"] if target_column else None)
        heatmap = np.asarray(row["iia_heatmap"], dtype=np.float32)
        assert heatmap.shape == alone.heatmap.shape == (32, 32)
        np.testing.assert_allclose(heatmap, alone.heatmap, atol=1e-3)  # float16 storage, batched vs single
        assert row["iia_target"] == alone.target
        assert row["iia_label"] == alone.label
        assert row["iia_score"] == pytest.approx(alone.score, abs=1e-5)
        assert row["label"] == original["label"]  # the dataset's own columns are kept


def test_explain_dataset_map_style_and_streaming_agree(explainer, tmp_path):
    dataset = _dataset()
    cache = tmp_path / "explained.arrow"
    eager = explain_dataset(
        explainer, dataset, target_column="label", batch_size=2, prefix="iia_", cache_file_name=cache
    )
    assert cache.exists() and isinstance(eager, datasets.Dataset)
    assert eager.features["iia_heatmap"] == datasets.Array2D(shape=(32, 32), dtype="float16")
    assert isinstance(eager.features["image"], datasets.Image) and eager.features["image"].decode
    lazy = explain_dataset(explainer, dataset.to_iterable_dataset(), target_column="label", batch_size=2, prefix="iia_")
    assert isinstance(lazy, datasets.IterableDataset)
    streamed = list(lazy)
    assert len(streamed) == len(eager) == 5
    for a, b in zip(eager, streamed, strict=True):
        assert isinstance(a["image"], Image.Image)
        np.testing.assert_array_equal(np.asarray(a["iia_heatmap"]), np.asarray(b["iia_heatmap"]))
        assert (a["iia_target"], a["iia_label"], a["iia_score"]) == (b["iia_target"], b["iia_label"], b["iia_score"])
        assert a["iia_target"] == a["label"]
    stack = np.asarray(eager.with_format("numpy")["iia_heatmap"])
    assert stack.shape == (5, 32, 32) and stack.min() >= 0 and stack.max() <= 1


def test_streaming_is_lazy(cnn):
    generated = []

    def rows():
        for index in range(10_000):
            generated.append(index)
            yield {"image": _images(1)[0]}

    stream = datasets.IterableDataset.from_generator(rows, features=datasets.Features({"image": datasets.Image()}))
    explained = explain_dataset(cnn, stream, batch_size=4)
    first = list(explained.take(3))
    assert [row["target"] for row in first] == [row["target"] for row in first[:1]] * 3  # same image, same class
    assert len(generated) <= 2 * 4 + 1  # the shape probe and one batch, not 10 000 rows


def test_missing_image_column_and_clashing_columns(cnn):
    dataset, explainer = _dataset(), cnn
    with pytest.raises(DatasetColumnError, match=r"no image column 'img'.*\['image', 'label'\]"):
        explain_dataset(explainer, dataset, image_column="img")
    with pytest.raises(DatasetColumnError, match="no target column 'class'"):
        explain_dataset(explainer, dataset, target_column="class")
    with pytest.raises(DatasetColumnError, match=r"already has column\(s\) \['label'\].*prefix="):
        explain_dataset(explainer, dataset)
    with pytest.raises(DatasetColumnError, match="no image column 'img'"):
        dataset.map(explain_batch_fn(explainer, image_column="img"), batched=True)


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, r"row 2: the image is missing"),
        ({"bytes": b"definitely not an image", "path": None}, r"row 2: the image cannot be decoded"),
        ({"bytes": None, "path": "/nonexistent/cat.png"}, r"row 2: image file not found: '/nonexistent/cat.png'"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_missing_or_undecodable_images(cnn, bad, message, streaming):
    cells = [{"bytes": _png(image), "path": None} for image in _images(4)]
    cells[2] = bad
    dataset = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image()}))
    source = dataset.to_iterable_dataset() if streaming else dataset
    with pytest.raises(DatasetImageError, match=message):
        list(explain_dataset(cnn, source, batch_size=2))


def test_empty_dataset_is_a_clear_error(cnn):
    empty = datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(IIAError, match="no rows"):
        explain_dataset(cnn, empty)
