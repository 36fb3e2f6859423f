"""What the zoo's ``transformers`` and timm builders share: default labels and input size, label fields, saving.

Both :mod:`hf_iia.testing.zoo` and :mod:`hf_iia.testing.timm` build from these, so neither imports the other's
internals (the zoo dispatches ``timm_wrapper`` to the timm builder; the timm builder needs nothing from the zoo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LABELS: dict[int, str] = {0: "cat", 1: "Dog", 2: "bird", 3: "tabby, tabby cat"}
"""The default labels (the same four the hf-iia tests use)."""

DEFAULT_IMAGE_SIZE = 32
"""Input size for types whose override table entry does not say otherwise."""


def label_kwargs(labels: dict[int, str]) -> dict[str, Any]:
    """The config fields (``id2label``, ``label2id``, ``num_labels``) of a classifier with ``labels``."""
    return {
        "id2label": {int(k): v for k, v in labels.items()},
        "label2id": {v: int(k) for k, v in labels.items()},
        "num_labels": len(labels),
    }


def save_pair(model: Any, processor: Any, folder: str | Path) -> Path:
    """``save_pretrained`` a model (safetensors) and its image processor into ``folder``, as a Hub checkpoint."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def pixels(batch: int = 2, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """``[batch, 3, size, size]`` seeded standard-normal inputs (already normalised pixel values)."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
