"""The inputs of each suite: held-out generated images (synthetic shapes or real textures) with object masks, or crops
of the sample photos."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...errors import IIAError
from ...explainer import IIAExplainer
from ...fusions import min_max

CROPS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("full", (0.0, 0.0, 1.0, 1.0)),
    ("tl", (0.0, 0.0, 0.8, 0.8)),
    ("tr", (0.2, 0.0, 1.0, 0.8)),
    ("bl", (0.0, 0.2, 0.8, 1.0)),
    ("br", (0.2, 0.2, 1.0, 1.0)),
)
"""``(name, (left, top, right, bottom))`` crop boxes as fractions of the photo's width and height."""

GENERATED_SUITES: dict[str, str] = {"synthetic": "hf_iia.tools.synthetic", "textures": "hf_iia.tools.textures"}
"""The generated suites and their generator modules (each with ``CLASS_NAMES``, ``HELDOUT_START`` and
``make_arrays``, trained on by ``scripts/train_synthetic.py --suite``)."""


@dataclass
class BenchInputs:
    """The inputs of one model: ids, model inputs, targets and (synthetic) object masks.

    Attributes:
        ids: one name per input.
        pixel_values: ``[N, C, H, W]`` model inputs.
        targets: ``[N]`` int64 explained classes.
        masks: ``[N, H, W]`` bool object masks, or ``None``.
        records: per-input facts stored in results.json (label, prediction, ...).
        views: ``[N]`` RGB images at the model input resolution, for the figure.
        figure: indices of the inputs drawn in maps.png.
        heldout: ``{"start", "seed", "size"}`` of synthetic held-out images, else ``None``.
    """

    ids: list[str]
    pixel_values: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor | None
    records: list[dict[str, Any]]
    views: list[Image.Image]
    figure: list[int]
    heldout: dict[str, int] | None = None


def normalisation(processor: object) -> tuple[list[float], list[float]] | None:
    """``(image_mean, image_std)`` of a Hugging Face processor (or a timm ``data_config``), else ``None``."""
    config = getattr(processor, "data_config", None) or {}
    mean = getattr(processor, "image_mean", None) or config.get("mean")
    std = getattr(processor, "image_std", None) or config.get("std")
    if mean is None or std is None:
        return None
    return [float(v) for v in mean], [float(v) for v in std]


def _input_view(pixel_values: torch.Tensor, processor: object) -> Image.Image:
    """The model input ``[C, H, W]`` as an RGB image (normalisation undone when the processor tells it)."""
    values = pixel_values.detach().float().cpu()
    mean, std = normalisation(processor) or (None, None)
    if mean is not None and std is not None and len(mean) == values.shape[0]:
        values = values * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        # One range over all channels ([C * H, W] as one map): a range per channel would change the colours.
        values = min_max(values.flatten(0, 1)).view_as(values)
    array = (values.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., :3] if array.shape[-1] >= 3 else array[..., 0]).convert("RGB")


def _predict(explainer: IIAExplainer, pixel_values: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``[N, K]`` float32 class scores on CPU of ``pixel_values`` ``[N, C, H, W]`` (:meth:`IIAExplainer.class_scores`:
    softmax probabilities for the single-label models the benchmark runs), ``batch_size`` at a time."""
    return torch.cat(
        [explainer.class_scores(explainer.logits(chunk)).cpu() for chunk in pixel_values.split(batch_size)]
    )


def _generator(suite: str) -> Any:
    """The generator module of a generated suite (:data:`GENERATED_SUITES`)."""
    if suite not in GENERATED_SUITES:
        raise IIAError(f"unknown generated suite {suite!r}; choose one of {list(GENERATED_SUITES)}")
    return importlib.import_module(GENERATED_SUITES[suite])


def synthetic_heldout(folder: Path, n: int, input_size: int | None, suite: str = "synthetic") -> dict[str, int]:
    """``{"start", "seed", "size"}`` of the held-out images of ``suite`` for the checkpoint in ``folder``.

    From ``train_log.json`` (``heldout_indices``, ``data_seed``, ``size``) when present; else
    the convention of ``scripts/train_synthetic.py``: held-out indices start at the suite's
    ``HELDOUT_START``, data seed 0, image size = the model's input size. A log that names another
    suite (``"suite"``; logs without it are synthetic) is refused: its model never saw these images.
    """
    generator = _generator(suite)
    log_path = folder / "train_log.json"
    if log_path.exists():
        log = json.loads(log_path.read_text())
        trained_on = log.get("suite", "synthetic")
        if trained_on != suite:
            raise IIAError(
                f"{log_path}: this checkpoint was trained on the {trained_on!r} suite, not {suite!r}; run "
                f"`hf-iia bench --suite {trained_on}` on it, or pick the {suite} checkpoints"
            )
        start, stop = log["heldout_indices"]
        train_stop = log.get("train_indices", [0, 0])[1]
        if start < train_stop:
            raise IIAError(f"{log_path}: held-out indices {start}.. overlap the training indices [0, {train_stop})")
        if n > stop - start:
            raise IIAError(f"{log_path} holds out {stop - start} images, fewer than --n {n}")
        return {
            "start": int(start),
            "seed": int(log.get("data_seed", 0)),
            "size": int(log.get("size", input_size or 64)),
        }
    return {"start": int(generator.HELDOUT_START), "seed": 0, "size": int(input_size or 64)}


def synthetic_inputs(
    explainer: IIAExplainer, folder: Path, n: int, figure_images: int, batch_size: int, suite: str = "synthetic"
) -> BenchInputs:
    """``n`` held-out images of the generated ``suite`` for the checkpoint in ``folder``, preprocessed by its
    processor; ids ``f"{suite}-{index}"``."""
    generator = _generator(suite)
    config = getattr(explainer.model, "config", None)
    size = getattr(config, "image_size", None)
    heldout = synthetic_heldout(folder, n, size if isinstance(size, int) else None, suite)
    images, masks, labels = generator.make_arrays(n, seed=heldout["seed"], size=heldout["size"], start=heldout["start"])
    pixel_values, _ = explainer.preprocess([Image.fromarray(image, "RGB") for image in images])
    height, width = pixel_values.shape[2:]
    if masks.shape[1:] != (height, width):  # the processor resized: bring the masks along (nearest)
        masks = np.stack(
            [np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.NEAREST)) for m in masks]
        )
    probabilities = _predict(explainer, pixel_values, batch_size)
    predicted = probabilities.argmax(dim=1)
    indices = range(heldout["start"], heldout["start"] + n)
    records: list[dict[str, Any]] = [
        {
            "id": f"{suite}-{index}",
            "label": int(label),
            "label_name": generator.CLASS_NAMES[int(label)],
            "predicted": int(pred),
            "target": int(label),
            "target_probability": float(probabilities[i, int(label)]),
        }
        for i, (index, label, pred) in enumerate(zip(indices, labels, predicted, strict=True))
    ]
    figure = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(figure_images, n))})
    return BenchInputs(
        ids=[r["id"] for r in records],
        pixel_values=pixel_values,
        targets=torch.as_tensor(labels, dtype=torch.int64),
        masks=torch.as_tensor(masks, dtype=torch.bool),
        records=records,
        views=[_input_view(p, explainer.processor) for p in pixel_values],
        figure=figure,
        heldout=heldout,
    )


def crop_photos(photos: Sequence[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image]]:
    """Every photo in every :data:`CROPS` box, crop-major: ``[(f"{photo}-{crop}", image), ...]``."""
    crops = []
    for crop, (left, top, right, bottom) in CROPS:
        for name, photo in photos:
            width, height = photo.size
            box = (round(left * width), round(top * height), round(right * width), round(bottom * height))
            crops.append((f"{name}-{crop}", photo.crop(box)))
    return crops


def real_inputs(
    explainer: IIAExplainer,
    n: int | None,
    figure_images: int,
    batch_size: int,
    photos: Sequence[tuple[str, Image.Image]] | None = None,
) -> BenchInputs:
    """The cropped ``photos`` (default: the demo's sample photos; the first ``n`` crops), preprocessed; targets =
    the model's top-1 classes."""
    from ..demo import sample_images

    crops = crop_photos(sample_images() if photos is None else photos)
    if n is not None:
        if n > len(crops):
            raise IIAError(f"the real suite has {len(crops)} inputs ({len(CROPS)} crops of each photo); got --n {n}")
        crops = crops[:n]
    pixel_values, _ = explainer.preprocess([image for _, image in crops])
    probabilities = _predict(explainer, pixel_values, batch_size)
    top1 = probabilities.argmax(dim=1)
    labels = explainer.id2label
    records: list[dict[str, Any]] = [
        {
            "id": name,
            "size": list(image.size),
            "target": int(t),
            "target_name": labels.get(int(t)),
            "target_probability": float(probabilities[i, int(t)]),
        }
        for i, ((name, image), t) in enumerate(zip(crops, top1, strict=True))
    ]
    full = [i for i, (name, _) in enumerate(crops) if name.endswith("-full")]
    return BenchInputs(
        ids=[name for name, _ in crops],
        pixel_values=pixel_values,
        targets=top1,
        masks=None,
        records=records,
        views=[_input_view(p, explainer.processor) for p in pixel_values],
        figure=(full or list(range(len(crops))))[:figure_images],
    )


def device_of(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def subset(inputs: BenchInputs, indices: Sequence[int]) -> BenchInputs:
    """The inputs at ``indices`` (in that order), e.g. one split of a development / report division."""
    index = torch.as_tensor(list(indices), dtype=torch.int64)
    return BenchInputs(
        ids=[inputs.ids[i] for i in indices],
        pixel_values=inputs.pixel_values[index],
        targets=inputs.targets[index],
        masks=None if inputs.masks is None else inputs.masks[index],
        records=[inputs.records[i] for i in indices],
        views=[inputs.views[i] for i in indices],
        figure=[position for position, i in enumerate(indices) if i in set(inputs.figure)],
        heldout=inputs.heldout,
    )
