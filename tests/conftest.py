"""Shared fixtures: tiny random-weight checkpoints saved with ``save_pretrained`` and the real Lite0 checkpoint.

Every model is built from a real ``transformers`` config, saved into a temporary folder
and loaded back through the public API (``IIAExplainer(folder)``), never mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hf_iia.tools.tiny import TINY_KINDS
from hf_iia.tools.tiny import save_tiny as _save_tiny

SIZE = 32
LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "tabby, tabby cat", 4: "fish"}
TINY = dict(labels=LABELS, depth=3, width=32)
"""The fixtures' tiny models: 3 blocks / stages, ViT width 32, the 5 labels of :data:`LABELS`."""


def save_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """Build the tiny ``kind`` model, ``save_pretrained`` it (plus an image processor) into ``folder``."""
    return _save_tiny(kind, folder, seed, **TINY)


@pytest.fixture(scope="session", params=list(TINY_KINDS))
def tiny_checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    """``(kind, folder)`` for every tiny architecture."""
    kind = request.param
    return kind, save_tiny(kind, tmp_path_factory.mktemp(f"tiny_{kind}"))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A function ``kind -> folder`` giving one saved tiny checkpoint per architecture (cached)."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = save_tiny(kind, tmp_path_factory.mktemp(f"tiny_{kind}"))
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def lite0_folder(tmp_path_factory) -> Path:
    """The real ImageNet EfficientNet-Lite0 as a TimmWrapper checkpoint folder."""
    from hf_iia.tools.demo import build_lite0_checkpoint

    return build_lite0_checkpoint(tmp_path_factory.mktemp("lite0") / "efficientnet_lite0")


@pytest.fixture
def pixel_values() -> torch.Tensor:
    """``[2, 3, 32, 32]`` random normalised inputs (seeded)."""
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
