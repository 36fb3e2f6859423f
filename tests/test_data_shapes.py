"""explain_dataset with array image columns and with processors whose output size follows the image."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from hf_iia import IIAExplainer, explain_dataset
from hf_iia.testing import build_tiny


def _keep_aspect(images) -> torch.Tensor:
    """A processor whose output keeps each image's aspect ratio (short side 32), batching only equal shapes."""
    tensors = []
    for image in images:
        width, height = image.size
        scale = 32 / min(width, height)
        resized = image.convert("RGB").resize((round(width * scale / 8) * 8, round(height * scale / 8) * 8))
        tensors.append(torch.from_numpy(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1))
    if len({tensor.shape for tensor in tensors}) > 1:
        raise ValueError("images of different sizes cannot be batched")
    return torch.stack(tensors)


def test_maps_of_varying_shape_read_back():
    model, _ = build_tiny("resnet")
    explainer = IIAExplainer(model, _keep_aspect, steps=1, progress=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32 + 16 * i, 3), dtype=np.uint8) for i in range(3)]
    dataset = datasets.Dataset.from_dict(
        {"image": [datasets.Image().encode_example(a) for a in images]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    explained = explain_dataset(explainer, dataset, batch_size=1)
    shapes = [np.asarray(row["heatmap"]).shape for row in explained]
    assert shapes == [(32, 32), (32, 48), (32, 64)]


def test_an_array3d_image_column_is_accepted():
    model, processor = build_tiny("resnet")
    explainer = IIAExplainer(model, processor, steps=1, progress=False)
    arrays = np.random.default_rng(1).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    dataset = datasets.Dataset.from_dict(
        {"image": list(arrays)}, features=datasets.Features({"image": datasets.Array3D((32, 32, 3), "uint8")})
    )
    explained = explain_dataset(explainer, dataset, batch_size=2)
    direct = explainer.attribute(explainer.preprocess(list(arrays))[0])
    stored = torch.tensor(np.stack([np.asarray(row["heatmap"], dtype=np.float32) for row in explained]))
    assert (stored - direct).abs().max() < 1e-3  # float16 storage
