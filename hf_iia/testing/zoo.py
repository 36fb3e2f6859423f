"""The zoo: a tiny random-weight classifier for every ``transformers`` image-classification type, with its processor.

Every model is built from a real ``transformers`` config (``AutoConfig.for_model``) with a few
per-type overrides that shrink it (few layers, tiny widths, 32-64 px inputs), instantiated with
``AutoModelForImageClassification.from_config`` and paired with the image processor a
``transformers`` user would get for that type. Nothing is mocked: :func:`save_tiny` writes a real
checkpoint folder that loads back through ``AutoModelForImageClassification.from_pretrained`` and
``AutoImageProcessor.from_pretrained``. ``timm_wrapper`` is handed to :mod:`hf_iia.testing.timm`.

The hf-iia tests' five families go by short names (:data:`TINY_KINDS`: ``vit``, ``deit``, ``resnet``,
``convnext`` and ``timm``); :func:`depth_width` gives the overrides for more blocks or a wider ViT.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from .common import DEFAULT_IMAGE_SIZE, LABELS, label_kwargs, save_pair
from .timm import build_tiny_timm

IMAGE_CLASSIFICATION_TYPES: tuple[str, ...] = tuple(sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES))
"""Every ``model_type`` in ``transformers``' image-classification auto mapping, sorted."""

# Shared shapes ------------------------------------------------------------------------------------
_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}
"""A 2-block, width-16 ViT on 32 px (a 4x4 patch grid): the hf-iia tests' ``vit``/``deit`` shape."""
_VISION_TOWER = dict(_VIT)
_SMALL_TEXT = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
}
_STAGES_2 = {"hidden_sizes": [8, 16], "depths": [1, 1]}
"""Two one-block stages of width 8 and 16 (the tests' ``resnet``/``convnext`` shape)."""
_SWIN = {"image_size": 32, "patch_size": 4, "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}
"""8x8 patch grid, one merge to 4x4: window 4 divides both grids."""

TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "beit": dict(_VIT, out_indices=[1, 2]),
    "bit": {"embedding_size": 8, "hidden_sizes": [16, 32], "depths": [1, 1], "num_groups": 2, "out_indices": [2]},
    "clip": {"vision_config": _VISION_TOWER, "text_config": _SMALL_TEXT, "projection_dim": 16},
    "convnext": dict(_STAGES_2, image_size=32, num_stages=2, out_indices=[2]),
    "convnextv2": dict(_STAGES_2, image_size=32, num_stages=2, out_indices=[2]),
    # CvT indexes its per-block drop-path list with the stage index: stage i needs depth[i] > i.
    "cvt": {"embed_dim": [8, 16, 24], "num_heads": [1, 2, 3], "depth": [1, 2, 3]},
    "data2vec-vision": dict(_VIT, out_indices=[1, 2]),
    "deit": dict(_VIT),
    "dinat": {
        "patch_size": 4,
        "embed_dim": 8,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "kernel_size": 3,
        "dilations": [[1], [1]],
        "out_indices": [2],
    },
    "dinov2": dict(_VIT, mlp_ratio=2, out_indices=[2]),
    "dinov2_with_registers": dict(_VIT, mlp_ratio=2, num_register_tokens=2, out_indices=[2]),
    "donut-swin": dict(_SWIN),
    "efficientnet": {
        "image_size": 32,
        "width_coefficient": 0.25,
        "depth_coefficient": 0.1,
        "hidden_dim": 320,  # must equal round_filters(1280) = 320 at width 0.25
        "kernel_sizes": [3, 3],
        "in_channels": [32, 16],
        "out_channels": [16, 24],
        "strides": [1, 2],
        "num_block_repeats": [1, 1],
        "expand_ratios": [1, 2],
        "num_hidden_layers": 2,
    },
    "focalnet": {
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 8,
        "depths": [1, 1],
        "focal_levels": [2, 2],
        "focal_windows": [3, 3],
        "out_indices": [2],
    },
    "hgnet_v2": {
        "embedding_size": 8,
        "depths": [1, 1],
        "hidden_sizes": [16, 32],
        "stem_channels": [3, 8, 8],
        "stage_in_channels": [8, 16],
        "stage_mid_channels": [8, 8],
        "stage_out_channels": [16, 32],
        "stage_num_blocks": [1, 1],
        "stage_downsample": [False, True],
        "stage_downsample_strides": [2, 2],
        "stage_light_block": [False, True],
        "stage_kernel_size": [3, 3],
        "stage_numb_of_layers": [2, 2],
        "out_indices": [2],
    },
    "hiera": {
        "image_size": [64, 64],
        "embed_dim": 8,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "num_query_pool": 1,
        "masked_unit_attention": [True, False],
        "hidden_size": 16,
        "out_indices": [2],
    },
    "ijepa": dict(_VIT),
    "imagegpt": {"n_embd": 16, "n_layer": 2, "n_head": 2, "n_positions": 64, "vocab_size": 17, "image_size": 8},
    "levit": {
        "image_size": 64,
        "hidden_sizes": [16, 32],
        "num_attention_heads": [1, 2],
        "depths": [1, 1],
        "key_dim": [8, 8],
        "mlp_ratio": [2, 2],
        "attention_ratio": [2, 2],
        "down_ops": [["Subsample", 8, 1, 4, 2, 2]],
        # At the default 0.02 the random stages collapse (every token the same to 1e-8): a constant map.
        "initializer_range": 0.2,
    },
    "metaclip_2": {"vision_config": _VISION_TOWER, "text_config": _SMALL_TEXT, "projection_dim": 16},
    "mobilenet_v1": {"image_size": 32, "depth_multiplier": 0.25, "min_depth": 8},
    "mobilenet_v2": {"image_size": 32, "depth_multiplier": 0.25, "min_depth": 8},
    "mobilevit": {
        "image_size": 64,
        "hidden_sizes": [16, 24, 32],
        "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
        "num_attention_heads": 2,
        "initializer_range": 0.3,
    },
    "mobilevitv2": {"image_size": 64, "width_multiplier": 0.25, "n_attn_blocks": [1, 1, 1], "initializer_range": 0.3},
    "perceiver": {
        "image_size": 16,
        "num_latents": 8,
        "d_latents": 16,
        "num_blocks": 1,
        "num_self_attends_per_block": 1,
        "num_self_attention_heads": 2,
        "num_cross_attention_heads": 1,
    },
    "poolformer": {
        "image_size": 32,
        "hidden_sizes": [8, 16],
        "depths": [1, 1],
        "num_encoder_blocks": 2,
        "patch_sizes": [7, 3],
        "strides": [4, 2],
        "padding": [2, 1],
    },
    # 64 px (stored on the config, read by the zoo's processor): the last stage is 2 x 2, not 1 x 1.
    "pp_lcnet": {
        "image_size": 64,
        "scale": 0.25,
        "class_expand": 32,
        "depths": [1, 1, 1, 1, 1],
        "block_configs": [
            [[3, 16, 32, 1, False]],
            [[3, 32, 64, 2, False]],
            [[3, 64, 128, 2, False]],
            [[3, 128, 256, 2, False]],
            [[5, 256, 512, 2, True]],
        ],
    },
    "pvt": {
        "image_size": 32,
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sequence_reduction_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [4, 2],
        "strides": [4, 2],
        "num_attention_heads": [1, 2],
        "mlp_ratios": [2, 2],
    },
    "pvt_v2": {
        "image_size": 32,
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sr_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [7, 3],
        "strides": [4, 2],
        "num_attention_heads": [1, 2],
        "mlp_ratios": [2, 2],
        "out_indices": [1],
    },
    "regnet": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "groups_width": 8},
    "resnet": dict(embedding_size=8, **_STAGES_2, out_indices=[2]),
    "segformer": {
        "image_size": 32,
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sr_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [7, 3],
        "strides": [4, 2],
        "num_attention_heads": [1, 2],
        "mlp_ratios": [2, 2],
        "decoder_hidden_size": 16,
    },
    "siglip": {"vision_config": _VISION_TOWER, "text_config": _SMALL_TEXT},
    "siglip2": {"vision_config": dict(_VISION_TOWER, num_patches=16), "text_config": _SMALL_TEXT},
    "swiftformer": {"image_size": 32, "depths": [1, 1, 1, 1], "embed_dims": [8, 16, 24, 32]},
    "swin": dict(_SWIN, out_indices=[2]),
    "swinv2": dict(_SWIN, out_indices=[2]),
    "textnet": {
        "stem_out_channels": 8,
        "hidden_sizes": [8, 8, 16, 16, 32],
        "image_size": [32, 32],
        "out_indices": [4],
        "depths": [1, 1, 1, 1],
        "conv_layer_kernel_sizes": [[[3, 3]], [[3, 3]], [[3, 3]], [[3, 3]]],
        "conv_layer_strides": [[1], [2], [2], [2]],
    },
    "timm_wrapper": {
        "architecture": "test_resnet",
        "pretrained_cfg": {
            "input_size": [3, 32, 32],
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
    },
    "vit": dict(_VIT),
    "vit_msn": dict(_VIT),
}
"""Per-type keyword arguments for ``AutoConfig.for_model`` that make the model tiny (the only per-type table)."""

MODEL_CLASS: dict[str, str] = {"deit": "DeiTForImageClassificationWithTeacher"}
"""Types whose tiny model is not the first class of the auto mapping (DeiT: with the distillation token and
head, as the hf-iia tests use). ``config.architectures`` records it, so ``from_pretrained`` returns it too."""


def _model_class_name(model_type: str) -> str:
    if model_type in MODEL_CLASS:
        return MODEL_CLASS[model_type]
    names: str | Sequence[str] = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type]
    return names if isinstance(names, str) else names[0]


SKIP_REASONS: dict[str, str] = {
    "dinat": "needs the `natten` package's 2-D neighbourhood-attention kernels (`natten.functional.natten2dav`); "
    "`pip install natten` gives natten 0.21.7, which no longer has that API (transformers raises "
    "ImportError in DinatForImageClassification), and older natten releases have no wheel for this torch",
    "imagegpt": "classifies colour-cluster token ids (`input_ids` from ImageGPTImageProcessor's k-means "
    "quantisation), not `pixel_values`: the input is discrete, so there is no pixel gradient. "
    "build_tiny('imagegpt') works (16 clusters, 8x8 px) for completeness",
    "shieldgemma2": "a Gemma-3 vision-language policy classifier: forward needs `input_ids` (a text policy prompt "
    "with image tokens) besides `pixel_values` (ValueError 'You must specify exactly one of "
    "input_ids or inputs_embeds' from pixel_values alone), and its scores are Yes/No token "
    "probabilities of a language model, not an image-classification head with num_labels",
}
"""Types of :data:`IMAGE_CLASSIFICATION_TYPES` that the zoo's tests skip, and why: they cannot be built here or
cannot classify an image from ``pixel_values`` alone."""

LOGITS_FIELD: dict[str, str] = {"pp_lcnet": "last_hidden_state"}
"""Types whose classifier output carries the logits under another name (PPLCNetForImageClassification
returns ``BaseModelOutputWithNoAttention(last_hidden_state=logits)``, no ``.logits``)."""


def logits_of(model_type: str, output: Any) -> torch.Tensor:
    """The ``[batch, num_labels]`` logits of a ``model_type`` classifier's ``output``."""
    return getattr(output, LOGITS_FIELD.get(model_type, "logits"))


def _image_size(config: PretrainedConfig) -> int:
    vision = getattr(config, "vision_config", None) or config
    if getattr(config, "model_type", None) == "timm_wrapper":
        return int(config.pretrained_cfg["input_size"][-1])
    size = getattr(vision, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[-1]
    return int(size) if size else DEFAULT_IMAGE_SIZE


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key.endswith("_config"):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def tiny_config(model_type: str, labels: dict[int, str] = LABELS, **overrides: Any) -> tuple[PretrainedConfig, int]:
    """The smallest reasonable random-weight config of ``model_type`` and the input size it expects.

    ``AutoConfig.for_model(model_type, **TINY_OVERRIDES[model_type], **overrides)`` with
    ``id2label``/``label2id`` (and ``num_labels``) from ``labels``. Sub-config overrides
    (``vision_config={...}``) are merged into the table's, not replacing them.
    """
    if model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(
            f"{model_type!r} is not an image-classification model type; known: {', '.join(IMAGE_CLASSIFICATION_TYPES)}"
        )
    kwargs = _merge(TINY_OVERRIDES.get(model_type, {}), overrides)
    kwargs.update(label_kwargs(labels))
    config = AutoConfig.for_model(model_type, **kwargs)
    config.architectures = [_model_class_name(model_type)]
    return config, _image_size(config)


def _processor_class(model_type: str) -> type | None:
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if not names:
        return None
    # transformers 5 maps to {"torchvision": fast, "pil": slow}, transformers 4 to (slow, fast)
    ordered = [names.get("torchvision"), names.get("pil")] if isinstance(names, dict) else list(reversed(tuple(names)))
    for name in ordered:
        cls = getattr(transformers, name, None) if name else None
        if cls is not None:
            try:
                cls()  # needs its backend (torchvision) to be installed
            except ImportError:
                continue
            return cls
    return None


_PROCESSOR_KWARGS: dict[str, dict[str, Any]] = {
    "siglip2": {"patch_size": 8, "max_num_patches": 16},
    "textnet": {"do_center_crop": True},
    "imagegpt": {"clusters": [[(i * 0.37 + c * 0.61) % 2 - 1 for c in range(3)] for i in range(16)]},
}
"""Processor settings beyond ``size``/``crop_size``: Siglip2 cuts images into a patch budget, TextNet keeps
the aspect ratio unless it crops, ImageGPT quantises pixels to ``vocab_size - 1`` colour clusters."""


def _size_keys(size: Any) -> set[str]:
    if isinstance(size, dict):
        return {k for k, v in size.items() if v is not None}
    return {k for k in ("height", "width", "shortest_edge", "longest_edge") if getattr(size, k, None) is not None}


def tiny_processor(model_type: str, image_size: int) -> Any:
    """The image processor a ``transformers`` user would get for ``model_type``, resized to ``image_size``.

    The class ``AutoImageProcessor`` maps ``model_type`` to (the torchvision "fast" one when
    available), constructed directly with ``size``/``crop_size`` set to ``image_size`` in the key
    format its defaults use (``height``/``width`` or ``shortest_edge``); a ``ViTImageProcessor``
    of that size when the type has none. ``timm_wrapper`` takes its processor from the config: see
    :func:`build_tiny_timm`.
    """
    cls = _processor_class(model_type) or transformers.ViTImageProcessor
    default = cls()
    kwargs: dict[str, Any] = dict(_PROCESSOR_KWARGS.get(model_type, {}))
    for key in ("size", "crop_size"):
        current = getattr(default, key, None)
        if key in kwargs or current is None:
            continue
        keys = _size_keys(current)
        if "shortest_edge" in keys:
            kwargs[key] = {"shortest_edge": image_size}
        elif "height" in keys or "width" in keys:
            kwargs[key] = {"height": image_size, "width": image_size}
    if (kwargs.get("do_center_crop") or getattr(default, "do_center_crop", None)) and "crop_size" not in kwargs:
        kwargs["crop_size"] = {"height": image_size, "width": image_size}
    if hasattr(default, "crop_pct") and getattr(default, "crop_pct", None) is not None:
        kwargs["crop_pct"] = 1.0  # resize to exactly image_size, then the crop keeps it whole
    return cls(**kwargs)


def build_tiny(model_type: str, labels: dict[int, str] = LABELS, seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
    """A random-weight ``model_type`` classifier (eval mode, weights fixed by ``seed``) and its processor.

    The model comes from ``AutoModelForImageClassification.from_config(tiny_config(...))`` (or the
    class in :data:`MODEL_CLASS`); ``overrides`` go to :func:`tiny_config`. The processor makes
    ``pixel_values [N, 3, S, S]`` (``S``: the size :func:`tiny_config` gives) and the model maps them to logits
    ``[N, len(labels)]`` (see :func:`logits_of` for the field). ``timm_wrapper`` goes to :func:`build_tiny_timm`
    (``architecture=`` picks the timm model, default ``test_resnet``).
    """
    if model_type == "timm_wrapper":
        architecture = overrides.pop("architecture", TINY_OVERRIDES["timm_wrapper"]["architecture"])
        return build_tiny_timm(architecture, labels, seed, **overrides)
    config, image_size = tiny_config(model_type, labels, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForImageClassification.from_config(config)
    return model.eval(), tiny_processor(model_type, image_size)


def save_tiny(
    model_type: str, folder: str | Path, labels: dict[int, str] = LABELS, seed: int = 0, **overrides: Any
) -> Path:
    """``save_pretrained`` :func:`build_tiny` ``(model_type, ...)``'s model (safetensors) and processor."""
    return save_pair(*build_tiny(model_type, labels, seed, **overrides), folder)


TINY_KINDS: dict[str, str] = {
    "vit": "vit",
    "deit": "deit",
    "resnet": "resnet",
    "convnext": "convnext",
    "timm": "timm_wrapper",
}
"""The hf-iia tests' short names for their five families -> the zoo's model type (``timm``: timm's
``test_resnet`` in a ``TimmWrapperForImageClassification``). ``build_tiny(TINY_KINDS[kind], ...)``."""


def depth_width(model_type: str, depth: int = 2, width: int = 16) -> dict[str, Any]:
    """Config overrides for :func:`build_tiny` that set the depth (and ViT width) of a ``vit``, ``deit``,
    ``resnet`` or ``convnext`` model.

    ``depth``: the number of blocks (ViT, DeiT) or of one-block stages (ResNet, ConvNeXt: widths
    ``8, 16, 24``, so at most 3); ``width``: the ViT/DeiT hidden size (``width // 8`` heads, MLP
    ``2 * width``; CNNs ignore it). The defaults give :data:`TINY_OVERRIDES`' shapes. ``timm_wrapper``
    (timm's ``test_resnet``) has a fixed shape: ``{}``.

    >>> model, processor = build_tiny("vit", **depth_width("vit", depth=3, width=32))  # doctest: +SKIP
    """
    if model_type in ("vit", "deit"):
        return {
            "hidden_size": width,
            "num_hidden_layers": depth,
            "num_attention_heads": width // 8,
            "intermediate_size": 2 * width,
        }
    if model_type in ("resnet", "convnext"):
        if not 1 <= depth <= 3:
            raise ValueError(f"a tiny {model_type} has 1 to 3 stages, not {depth}")
        stages = {"hidden_sizes": [8, 16, 24][:depth], "depths": [1] * depth, "out_indices": [depth]}
        return dict(stages, num_stages=depth) if model_type == "convnext" else stages
    if model_type == "timm_wrapper":
        return {}
    raise ValueError(f"depth_width knows vit, deit, resnet, convnext and timm_wrapper, not {model_type!r}")
