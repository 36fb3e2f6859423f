"""Tiny random-weight models and model-state checks for hf-iia's tests and scripts.

Every test and script builds its tiny models here, by what they are:

- :mod:`hf_iia.testing.zoo`: a tiny classifier for every ``transformers`` image-classification type
  (:func:`build_tiny`, :func:`save_tiny`, :func:`tiny_config`, :func:`tiny_processor`), the tests' five
  families (:data:`TINY_KINDS`, :func:`depth_width`) and the types skipped with their reasons.
- :mod:`hf_iia.testing.timm`: timm models in ``TimmWrapperForImageClassification`` (:func:`build_tiny_timm`,
  :func:`save_tiny_timm`).
- :mod:`hf_iia.testing.plain`: plain-PyTorch classifiers (:class:`SmallCNN`, :class:`NaNLogits`,
  :class:`ConstantLogits`) and a hand-written ViT / DeiT forward (:func:`vit_logits_by_hand`).
- :mod:`hf_iia.testing.zero_shot`: tiny zero-shot dual encoders (CLIP, MetaCLIP 2, AltCLIP, Chinese-CLIP, CLIPSeg,
  SigLIP) with tokenizers built offline, saved as Hub folders (:func:`build_zero_shot`, :func:`save_zero_shot`).
- :mod:`hf_iia.testing.state`: the "leave the model as found" checks (:func:`snapshot`,
  :func:`assert_unchanged`, :func:`hook_count`).
- :mod:`hf_iia.testing.common`: the default labels and input size, a config's label fields (:func:`label_kwargs`),
  saving a model with its processor (:func:`save_pair`) and seeded inputs (:func:`pixels`).

>>> from hf_iia.testing import build_tiny, save_tiny, IMAGE_CLASSIFICATION_TYPES, SKIP_REASONS
>>> model, processor = build_tiny("swin")                      # doctest: +SKIP
>>> folder = save_tiny("deit", "/tmp/tiny-deit")                # doctest: +SKIP

Nothing is mocked: the models are real ``transformers`` / timm / ``nn.Module`` classifiers, and saved folders load
back through the Auto classes. This package is not imported by ``hf_iia`` itself (it is a testing helper), and it
imports no test framework.
"""

from .common import DEFAULT_IMAGE_SIZE, LABELS, label_kwargs, pixels, save_pair
from .plain import ConstantLogits, NaNLogits, SmallCNN, vit_logits_by_hand
from .state import assert_unchanged, hook_count, snapshot
from .timm import FAN_IN_INIT, TIMM_MODEL_ARGS, TIMM_MODELS, build_tiny_timm, save_tiny_timm
from .zero_shot import ZERO_SHOT_KINDS, build_zero_shot, save_zero_shot
from .zoo import (
    IMAGE_CLASSIFICATION_TYPES,
    LOGITS_FIELD,
    MODEL_CLASS,
    SKIP_REASONS,
    TINY_KINDS,
    TINY_OVERRIDES,
    build_tiny,
    depth_width,
    logits_of,
    save_tiny,
    tiny_config,
    tiny_processor,
)

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "FAN_IN_INIT",
    "IMAGE_CLASSIFICATION_TYPES",
    "LABELS",
    "LOGITS_FIELD",
    "MODEL_CLASS",
    "SKIP_REASONS",
    "TIMM_MODELS",
    "TIMM_MODEL_ARGS",
    "TINY_KINDS",
    "TINY_OVERRIDES",
    "ZERO_SHOT_KINDS",
    "ConstantLogits",
    "NaNLogits",
    "SmallCNN",
    "assert_unchanged",
    "build_zero_shot",
    "build_tiny",
    "build_tiny_timm",
    "depth_width",
    "hook_count",
    "label_kwargs",
    "logits_of",
    "pixels",
    "save_pair",
    "save_tiny",
    "save_tiny_timm",
    "save_zero_shot",
    "snapshot",
    "tiny_config",
    "tiny_processor",
    "vit_logits_by_hand",
]
