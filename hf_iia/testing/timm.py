"""Tiny random-weight timm models in ``TimmWrapperForImageClassification``, the way timm checkpoints load from the Hub.

Each architecture of :data:`TIMM_MODELS` is built by ``timm.create_model(name, **TIMM_MODEL_ARGS[name])`` inside
``transformers``' ``TimmWrapperForImageClassification`` (``config.model_args`` carries the shrinking arguments), with
a ``TimmWrapperImageProcessor`` whose settings live in the config's ``pretrained_cfg``. :func:`save_tiny_timm` writes
a real checkpoint folder that loads back through the Auto classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, TimmWrapperImageProcessor

from .common import DEFAULT_IMAGE_SIZE, LABELS, label_kwargs, save_pair

TIMM_MODEL_ARGS: dict[str, dict[str, Any]] = {
    "test_vit": dict(img_size=32),  # timm builds it for 160 px; the zoo's processors make 32
    "test_resnet": {},
    "test_convnext": {},
    "test_efficientnet": {},
    "deit_tiny_distilled_patch16_224": {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2},
    "eva02_tiny_patch14_224": {"img_size": 28, "patch_size": 7, "embed_dim": 16, "depth": 2, "num_heads": 2},
    "swin_tiny_patch4_window7_224": {
        "img_size": 32,
        "patch_size": 4,
        "embed_dim": 8,
        "depths": (1, 1),
        "num_heads": (1, 2),
        "window_size": 4,
    },
    "levit_128s": {"img_size": 64, "embed_dim": (16, 32), "key_dim": 8, "num_heads": (1, 2), "depth": (1, 1)},
    "mobilevit_xxs": {},
    "efficientvit_b0": {
        "widths": (8, 8, 16, 16, 32),
        "depths": (1, 1, 1, 1, 1),
        "head_dim": 8,
        "head_widths": (64, 64),
    },
    "regnetx_002": {},  # smallest timm RegNet (2.3M parameters); its widths come from a fixed RegNetCfg
}
"""timm model name -> ``timm.create_model`` keyword arguments that shrink it (timm's ``test_*`` models need none)."""

FAN_IN_INIT: frozenset[str] = frozenset({"levit_128s"})
"""timm models re-initialised fan-in preserving (Kaiming) after construction: with timm's std-0.02 init LeViT's
activations shrink tenfold per stem layer, the subsampling attention (no residual) becomes uniform and every token
of the last stage is the same, so a random map would be constant."""

TIMM_MODELS: tuple[str, ...] = tuple(TIMM_MODEL_ARGS)
"""The timm architectures the zoo wraps in ``TimmWrapperForImageClassification``."""


def build_tiny_timm(name: str, labels: dict[int, str] = LABELS, seed: int = 0, **model_args: Any) -> tuple[Any, Any]:
    """timm's ``name`` shrunk by :data:`TIMM_MODEL_ARGS` and ``model_args``, in ``TimmWrapperForImageClassification``.

    Returns ``(model, TimmWrapperImageProcessor)``: the model maps ``pixel_values [N, 3, S, S]`` to logits
    ``[N, len(labels)]`` (``S``: ``img_size`` of the arguments, else 32); the processor settings live in the
    config's ``pretrained_cfg`` (input size, mean/std 0.5, no crop). A ``None`` in ``model_args`` drops that
    argument (timm's own default applies).
    """
    args = dict(TIMM_MODEL_ARGS.get(name, {}), **model_args)
    args = {k: v for k, v in args.items() if v is not None}
    size = int(args.get("img_size", DEFAULT_IMAGE_SIZE))
    pretrained_cfg = {
        "input_size": [3, size, size],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": len(labels),
    }
    config = TimmWrapperConfig(architecture=name, model_args=args or None, **label_kwargs(labels))
    # Not a declared field of TimmWrapperConfig: an extra attribute, saved to config.json as a Hub checkpoint has it.
    config.pretrained_cfg = pretrained_cfg
    torch.manual_seed(seed)
    model = TimmWrapperForImageClassification(config).eval()
    if name in FAN_IN_INIT:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight)
    processor = TimmWrapperImageProcessor(pretrained_cfg=pretrained_cfg, architecture=name)
    return model, processor


def save_tiny_timm(
    name: str, folder: str | Path, labels: dict[int, str] = LABELS, seed: int = 0, **model_args: Any
) -> Path:
    """``save_pretrained`` :func:`build_tiny_timm` ``(name, ...)``'s model and processor into ``folder``."""
    return save_pair(*build_tiny_timm(name, labels, seed, **model_args), folder)
