"""Tiny random-weight classifiers of every supported family, saved as real checkpoint folders.

Built from real ``transformers`` configs (nothing mocked) and saved with ``save_pretrained``
plus an image processor, so ``IIAExplainer(folder)`` loads them like any checkpoint. The
test suite's fixtures and ``scripts/gpu_check.py`` use them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
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

SIZE = 32
"""Input side of every tiny model (pixels)."""
LABELS = {0: "cat", 1: "Dog", 2: "bird", 3: "tabby, tabby cat"}
"""Default labels: a capitalised one and a comma-separated synonym list, to exercise label lookup."""
TINY_KINDS: tuple[str, ...] = ("vit", "deit", "resnet", "convnext", "timm")
"""Every ``kind`` :func:`build_tiny` builds."""


def build_tiny(kind: str, labels: dict[int, str] = LABELS, *, depth: int = 2, width: int = 16) -> nn.Module:
    """A random-weight ``kind`` classifier for ``SIZE x SIZE`` inputs from a real ``transformers`` config.

    ``kind``: ``vit``, ``deit`` (with teacher), ``resnet``, ``convnext`` or ``timm`` (timm's
    ``test_resnet`` in a ``TimmWrapper``). ``depth`` is the number of blocks (ViT) or stages
    (CNN, at most 3); ``width`` the ViT hidden size.
    """
    label_kwargs = dict(id2label=dict(labels), label2id={v: k for k, v in labels.items()})
    vit = dict(image_size=SIZE, patch_size=8, hidden_size=width, num_hidden_layers=depth,
               num_attention_heads=width // 8, intermediate_size=2 * width, **label_kwargs)
    stages = dict(hidden_sizes=[8, 16, 24][:depth], depths=[1] * depth, **label_kwargs)
    if kind == "vit":
        return ViTForImageClassification(ViTConfig(**vit))
    if kind == "deit":
        return DeiTForImageClassificationWithTeacher(DeiTConfig(**vit))
    if kind == "resnet":
        return ResNetForImageClassification(ResNetConfig(embedding_size=8, **stages))
    if kind == "convnext":
        return ConvNextForImageClassification(ConvNextConfig(num_stages=depth, **stages))
    if kind == "timm":
        pretrained_cfg = {"input_size": [3, SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3,
                          "interpolation": "bilinear", "crop_pct": 1.0, "num_classes": len(labels)}
        return TimmWrapperForImageClassification(
            TimmWrapperConfig(architecture="test_resnet", pretrained_cfg=pretrained_cfg, **label_kwargs)
        )
    raise ValueError(f"unknown tiny model kind {kind!r}")


def save_tiny(kind: str, folder: Path, seed: int = 0, **build: object) -> Path:
    """``save_pretrained`` :func:`build_tiny` ``(kind, **build)`` plus a 32x32 image processor into ``folder``."""
    torch.manual_seed(seed)
    build_tiny(kind, **build).save_pretrained(folder)
    if kind != "timm":  # TimmWrapper keeps its processor settings in config.json
        ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    return folder
