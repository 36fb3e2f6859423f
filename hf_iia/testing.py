"""A zoo of tiny random-weight image classifiers: every ``transformers`` image-classification type plus timm models.

Every model is built from a real ``transformers`` config (``AutoConfig.for_model``) with a few
per-type overrides that shrink it (few layers, tiny widths, 32-64 px inputs), instantiated with
``AutoModelForImageClassification.from_config`` and paired with the image processor a
``transformers`` user would get for that type. Nothing is mocked: :func:`save_tiny` writes a real
checkpoint folder that loads back through ``AutoModelForImageClassification.from_pretrained`` and
``AutoImageProcessor.from_pretrained``.

>>> from hf_iia.testing import build_tiny, save_tiny, IMAGE_CLASSIFICATION_TYPES, SKIP_REASONS
>>> model, processor = build_tiny("swin")                      # doctest: +SKIP
>>> folder = save_tiny("deit", "/tmp/tiny-deit")                # doctest: +SKIP

The hf-iia tests' five families go by short names (:data:`TINY_KINDS`: ``vit``, ``deit``, ``resnet``,
``convnext`` and ``timm``); :func:`depth_width` gives the overrides for more blocks or a wider ViT. The
module also has the tests' plain-PyTorch models (:class:`SmallCNN`, :class:`NaNLogits`,
:class:`ConstantLogits`), seeded inputs (:func:`pixels`) and the model-state checks of the "leave the
model as found" guarantees (:func:`snapshot`, :func:`assert_unchanged`, :func:`hook_count`).

This module is not imported by ``hf_iia`` itself (it is a testing helper), and it imports no test
framework.
"""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from torch.nn.modules import module as module_hooks
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "IMAGE_CLASSIFICATION_TYPES",
    "LABELS",
    "LOGITS_FIELD",
    "MODEL_CLASS",
    "SKIP_REASONS",
    "TIMM_MODELS",
    "TIMM_MODEL_ARGS",
    "TINY_KINDS",
    "TINY_OVERRIDES",
    "ConstantLogits",
    "NaNLogits",
    "SmallCNN",
    "assert_unchanged",
    "build_tiny",
    "build_tiny_timm",
    "depth_width",
    "hook_count",
    "logits_of",
    "pixels",
    "save_tiny",
    "save_tiny_timm",
    "snapshot",
    "tiny_config",
    "tiny_processor",
    "vit_logits_by_hand",
]

IMAGE_CLASSIFICATION_TYPES: tuple[str, ...] = tuple(sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES))
"""Every ``model_type`` in ``transformers``' image-classification auto mapping, sorted."""

LABELS: dict[int, str] = {0: "cat", 1: "Dog", 2: "bird", 3: "tabby, tabby cat"}
"""The default labels (the same four the hf-iia tests use)."""

DEFAULT_IMAGE_SIZE = 32
"""Input size for types whose override table entry does not say otherwise."""

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
    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type]
    return MODEL_CLASS.get(model_type, names[0] if isinstance(names, (tuple, list)) else names)


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


def _label_kwargs(labels: dict[int, str]) -> dict[str, Any]:
    return {
        "id2label": {int(k): v for k, v in labels.items()},
        "label2id": {v: int(k) for k, v in labels.items()},
        "num_labels": len(labels),
    }


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
    kwargs.update(_label_kwargs(labels))
    config = AutoConfig.for_model(model_type, **kwargs)
    config.architectures = [_model_class_name(model_type)]
    return config, _image_size(config)


def _processor_class(model_type: str) -> type | None:
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if not names:
        return None
    if isinstance(names, dict):  # transformers 5: {"torchvision": fast, "pil": slow}
        ordered = [names.get("torchvision"), names.get("pil")]
    else:  # transformers 4: (slow, fast)
        ordered = list(reversed(tuple(names)))
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
    class in :data:`MODEL_CLASS`); ``overrides`` go to :func:`tiny_config`.
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
    """``save_pretrained`` :func:`build_tiny` ``(model_type, ...)``'s model (safetensors) and processor into ``folder``."""
    folder = Path(folder)
    model, processor = build_tiny(model_type, labels, seed, **overrides)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


# timm ---------------------------------------------------------------------------------------------
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


def _timm_image_size(name: str, args: dict[str, Any]) -> int:
    return int(args.get("img_size", DEFAULT_IMAGE_SIZE))


def build_tiny_timm(name: str, labels: dict[int, str] = LABELS, seed: int = 0, **model_args: Any) -> tuple[Any, Any]:
    """timm's ``name`` (shrunk by :data:`TIMM_MODEL_ARGS` and ``model_args``) in a ``TimmWrapperForImageClassification``.

    Returns ``(model, TimmWrapperImageProcessor)``; the processor settings live in the config's
    ``pretrained_cfg`` (input size, mean/std 0.5, no crop).
    """
    from transformers import (
        TimmWrapperConfig,
        TimmWrapperForImageClassification,
        TimmWrapperImageProcessor,
    )

    args = dict(TIMM_MODEL_ARGS.get(name, {}), **model_args)
    args = {k: v for k, v in args.items() if v is not None}
    size = _timm_image_size(name, args)
    pretrained_cfg = {
        "input_size": [3, size, size],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": len(labels),
    }
    config = TimmWrapperConfig(
        architecture=name, pretrained_cfg=pretrained_cfg, model_args=args or None, **_label_kwargs(labels)
    )
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
    folder = Path(folder)
    model, processor = build_tiny_timm(name, labels, seed, **model_args)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


# The hf-iia tests' families ----------------------------------------------------------------------
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


def pixels(batch: int = 2, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """``[batch, 3, size, size]`` seeded standard-normal inputs (already normalised pixel values)."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# Plain-PyTorch models -----------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A real plain-PyTorch classifier (conv features -> ReLU -> pool -> linear), weights fixed by ``seed``."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(8, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.features(pixel_values).relu().mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


class NaNLogits(SmallCNN):
    """A real classifier whose logits are NaN (a broken checkpoint, e.g. overflowed weights)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values) * float("nan")


class ConstantLogits(SmallCNN):
    """A classifier whose logits do not depend on its features (zero head weights): every gradient is zero."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.classifier.weight.zero_()


# Reference computations -----------------------------------------------------------------------------
def vit_logits_by_hand(
    model: nn.Module,
    pixel_values: torch.Tensor,
    scales: dict[int, torch.Tensor | float],
    kept: list[torch.Tensor],
    detached: frozenset[int] = frozenset(),
) -> torch.Tensor:
    """A Hugging Face ViT / DeiT forward written out from its weights, for naive-loop tests of the engine.

    Block ``i``'s attention probabilities ``[N, heads, T, T]`` are multiplied by ``scales[i]`` (default 1) and
    appended to ``kept``; for ``i`` in ``detached`` they are built outside autograd first (a constant, as the
    authors' code does with the interpolated last block). Returns logits ``[N, num_labels]`` (DeiT with a teacher
    head: the mean of its two heads).
    """
    base = getattr(model, model.base_model_prefix)
    hidden = base.embeddings(pixel_values)
    batch, tokens, _ = hidden.shape
    for index, layer in enumerate(base.layers):
        attention = layer.attention
        normed = layer.layernorm_before(hidden)
        heads = attention.num_attention_heads

        def split(projection: nn.Module) -> torch.Tensor:
            return projection(normed).view(batch, tokens, heads, -1).transpose(1, 2)

        query, key, value = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)
        probs = torch.softmax(query @ key.transpose(2, 3) * attention.scaling, dim=-1)
        if index in detached:
            probs = (scales.get(index, 1.0) * probs.detach()).requires_grad_()
        else:
            probs = scales.get(index, 1.0) * probs
        kept.append(probs)
        context = (probs @ value).transpose(1, 2).reshape(batch, tokens, -1)
        hidden = hidden + attention.o_proj(context)
        hidden = hidden + layer.mlp(layer.layernorm_after(hidden))
    sequence = base.layernorm(hidden)
    if hasattr(model, "distillation_classifier"):
        return (model.cls_classifier(sequence[:, 0]) + model.distillation_classifier(sequence[:, 1])) / 2
    return model.classifier(sequence[:, 0])


# Model-state checks -------------------------------------------------------------------------------
def hook_count(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks registered on any submodule of ``model``."""
    return sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
        for module in model.modules()
    )


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything about ``model`` (and torch's global state) an explainer promises to leave as it found it."""
    config = getattr(model, "config", None)
    return {
        "hooks": {
            name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
            for name, m in model.named_modules()
        },
        "training": {name: m.training for name, m in model.named_modules()},
        "classes": {name: type(m) for name, m in model.named_modules()},
        "fused_attn": {name: m.fused_attn for name, m in model.named_modules() if hasattr(m, "fused_attn")},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: p.grad for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
        "attn": getattr(config, "_attn_implementation", None),
        "config": copy.deepcopy(vars(config)) if config is not None else None,  # private fields included
        "global_hooks": (
            tuple(module_hooks._global_forward_hooks),
            tuple(module_hooks._global_forward_pre_hooks),
            tuple(module_hooks._global_backward_hooks),
        ),
        "attention_registry": tuple(transformers.AttentionInterface._global_mapping),
        "grad_enabled": torch.is_grad_enabled(),
        "signal_handlers": {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)},
    }


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Compare two :func:`snapshot` results exactly (parameters and buffers with ``torch.equal``)."""
    for key in (
        "hooks",
        "global_hooks",
        "training",
        "classes",
        "fused_attn",
        "requires_grad",
        "attn",
        "config",
        "attention_registry",
        "grad_enabled",
        "signal_handlers",
    ):
        assert before[key] == after[key], f"{key} changed"
    assert all(grad is None for grad in after["grads"].values()), "parameter .grad was written"
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys()
        for name, value in before[key].items():
            assert torch.equal(value, after[key][name]), f"{key} {name} changed"
