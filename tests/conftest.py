"""Shared fixtures: tiny random-weight checkpoints saved with ``save_pretrained`` and the real Lite0 checkpoint.

Every model is built from a real ``transformers`` config, saved into a temporary folder
and loaded back through the public API (``IIAExplainer(folder)``), never mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    ResNetConfig,
    ResNetForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SIZE = 32
NUM_LABELS = 5
LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "tabby, tabby cat", 4: "fish"}


def _labels() -> dict:
    return dict(id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()})


def _vit_kwargs() -> dict:
    return dict(image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=64, **_labels())


TINY_MODELS = {
    "vit": lambda: ViTForImageClassification(ViTConfig(**_vit_kwargs())),
    "deit": lambda: DeiTForImageClassificationWithTeacher(DeiTConfig(**_vit_kwargs())),
    "resnet": lambda: ResNetForImageClassification(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 1, 1], **_labels())
    ),
    "convnext": lambda: ConvNextForImageClassification(
        ConvNextConfig(num_stages=3, hidden_sizes=[8, 16, 24], depths=[1, 1, 1], **_labels())
    ),
    "timm": lambda: TimmWrapperForImageClassification(
        TimmWrapperConfig(
            architecture="test_resnet",
            pretrained_cfg={"input_size": [3, SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3,
                            "interpolation": "bilinear", "crop_pct": 1.0, "num_classes": NUM_LABELS},
            **_labels(),
        )
    ),
}


def save_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """Build the tiny ``kind`` model, ``save_pretrained`` it (plus an image processor) into ``folder``."""
    torch.manual_seed(seed)
    TINY_MODELS[kind]().save_pretrained(folder)
    if kind != "timm":  # TimmWrapper keeps its processor settings in config.json
        ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=list(TINY_MODELS))
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
    from hf_iia.demo import build_lite0_checkpoint

    return build_lite0_checkpoint(tmp_path_factory.mktemp("lite0") / "efficientnet_lite0")


@pytest.fixture
def pixel_values() -> torch.Tensor:
    """``[2, 3, 32, 32]`` random normalised inputs (seeded)."""
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
