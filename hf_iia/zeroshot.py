"""Zero-shot image classifiers (CLIP, MetaCLIP 2, AltCLIP, Chinese-CLIP, CLIPSeg, SigLIP, SigLIP2) explained as image
classifiers over candidate labels.

transformers' ``ZeroShotImageClassificationPipeline`` ranks ``candidate_labels`` by ``logits_per_image`` of the
dual encoder on the image and the prompts ``hypothesis_template.format(label)``, and reports their softmax
(CLIP-like) or sigmoid (SigLIP-like). :class:`ZeroShotClassifier` turns such a model into what every other part of
hf-iia explains: a module ``pixel_values [B, C, H, W] -> logits [B, L]`` (``logits_per_image``, computed as the
model computes it) whose ``config`` carries ``id2label`` of the candidate labels and the pipeline's score function.
The prompts are encoded once per label set and template (cached); each image forward runs only the vision tower.

The vision tower is explained by the adapter its own ``config.model_type`` registers (``clip_vision_model``, ...,
in :data:`hf_iia.adapters.vit.READOUTS`): the wrapper exposes the tower as its base model and forwards the
attention-implementation switch to it. CLIP-like towers are read at the CLS token (their pooled output); SigLIP's
at its attention-pooling head's own attention row (:class:`hf_iia.adapters.vit.ProbeViTAdapter`); SigLIP2's the same
over NaFlex input, whose masks and patch grids the forward takes with the patches
(:class:`hf_iia.adapters.naflex.NaFlexProbeViTAdapter`). Nothing of the
model is changed: the wrapper only holds it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import TargetError, UnsupportedModelError

DEFAULT_TEMPLATE = "This is a photo of {}."
"""The pipeline's default ``hypothesis_template``."""


@dataclass(frozen=True)
class ZeroShotType:
    """How one zero-shot model type scores images against prompts (read from its modeling file and the pipeline).

    Attributes:
        score_function: the pipeline's ``postprocess``: ``"sigmoid"`` when ``"siglip"`` is in the model type,
            else ``"softmax"`` over the candidate labels.
        tokenizer_kwargs: the pipeline's tokenizer defaults for the type (SigLIP's text model reads the last
            position, so the prompts are padded to 64 tokens exactly as the pipeline pads them).
        bias: whether ``logits_per_image`` adds the model's ``logit_bias`` (SigLIP) after ``logit_scale.exp()``.
        projection: the attribute projecting the tower's pooled output to the joint space (``None``: the pooled
            output is the image embedding, as SigLIP's attention-pooling head).
    """

    score_function: str
    tokenizer_kwargs: tuple[tuple[str, Any], ...]
    bias: bool
    projection: str | None


_CLIP_LIKE = ZeroShotType("softmax", (("padding", True),), bias=False, projection="visual_projection")
_SIGLIP = ZeroShotType(
    "sigmoid", (("padding", "max_length"), ("max_length", 64), ("truncation", True)), bias=True, projection=None
)

ZERO_SHOT_TYPES: dict[str, ZeroShotType] = {
    "clip": _CLIP_LIKE,
    "metaclip_2": _CLIP_LIKE,
    # CLIP's vision tower (CLS token through post_layernorm, then visual_projection) beside another text encoder
    "altclip": _CLIP_LIKE,
    "chinese_clip": _CLIP_LIKE,
    "clipseg": _CLIP_LIKE,
    "siglip": _SIGLIP,
    # SigLIP's scoring over NaFlex input (patches with pixel_attention_mask and spatial_shapes, hf_iia.adapters.naflex)
    "siglip2": _SIGLIP,
}
"""``config.model_type`` -> how its ``AutoModelForZeroShotImageClassification`` class scores (the explained types)."""

REFUSED_ZERO_SHOT: dict[str, str] = {
    "align": "its vision tower is an EfficientNet (AlignVisionModel) whose pooled embedding no hf-iia feature-map "
    "adapter reads yet",
    "blip": "BlipModel's image embedding and text pairing (a separate text encoder with cross-attention for "
    "retrieval) have not been established here",
    "blip-2": "Blip2ForImageTextRetrieval scores images through a Q-Former's learned queries, not a vision tower's "
    "readout of its patch tokens",
    "tipsv2": "its vision tower's readout has not been established here",
    "videoprism": "it classifies videos (frames x patches), not images",
}
"""Types ``AutoModelForZeroShotImageClassification`` maps that are refused, and why."""

# The candidate labels of the current call, per classifier (by id): set by ``ZeroShotClassifier.candidates``, read by
# its forward and its config, so that two threads explaining with different labels never mix.
_CALL_LABELS: ContextVar[dict[int, tuple[tuple[str, ...], str]] | None] = ContextVar(
    "hf_iia_zero_shot_labels", default=None
)


def zero_shot_type(model: nn.Module) -> str | None:
    """``config.model_type`` when ``model`` is the ``AutoModelForZeroShotImageClassification`` class of its type
    (``CLIPModel``, ``SiglipModel``, ...), else ``None``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    names = MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(str(model_type))
    classes = (names,) if isinstance(names, str) else tuple(names or ())
    return str(model_type) if type(model).__name__ in classes else None


def check_candidates(labels: object, template: object, score_function: str) -> tuple[tuple[str, ...], str]:
    """``(labels, template)`` validated: distinct non-empty strings, a template with one ``{}``.

    Raises:
        TargetError: no labels, a label that is not a string, duplicates (a label name would not name one class),
            a template the prompts would not differ by, or one label for a softmax model (its score is always 1).
    """
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
        raise TargetError(
            f"candidate_labels must be a non-empty list of label strings, got {labels!r}; e.g. ['a cat', 'a dog']"
        )
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise TargetError(f"every candidate label must be a non-empty string, got {list(labels)!r}")
    if len(set(labels)) != len(labels):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        raise TargetError(f"candidate labels {repeated} appear more than once; give each label once")
    if not isinstance(template, str) or template.count("{}") != 1:
        raise TargetError(
            f"hypothesis_template must be a string with exactly one '{{}}' where the label goes, got {template!r} "
            f"(the pipeline's default is {DEFAULT_TEMPLATE!r}; pass '{{}}' if the labels are whole prompts)"
        )
    if score_function == "softmax" and len(labels) == 1:
        raise TargetError(
            "one candidate label: this model's pipeline score is a softmax over the labels, which is 1 for a single "
            "label; give at least two candidate labels"
        )
    return tuple(labels), template


class ZeroShotConfig:
    """The config of a :class:`ZeroShotClassifier`: the vision tower's geometry and the current candidate labels.

    ``id2label``, ``label2id`` and ``num_labels`` follow the labels of the current call
    (:meth:`ZeroShotClassifier.candidates`); ``problem_type`` gives :func:`hf_iia.scores.score_function` the
    pipeline's score function; ``_attn_implementation`` is the vision tower's.
    """

    def __init__(self, classifier: ZeroShotClassifier, dual_type: str, kind: ZeroShotType) -> None:
        vision = classifier.tower.config
        self._classifier = classifier
        self.model_type = str(vision.model_type)  # the tower's: its adapter and readout
        self.zero_shot_model_type = dual_type
        self.problem_type = (
            "multi_label_classification" if kind.score_function == "sigmoid" else ("single_label_classification")
        )
        self.patch_size = vision.patch_size
        self.image_size = getattr(vision, "image_size", None)  # None: NaFlex (SigLIP2), each image its own size
        self.num_channels = vision.num_channels

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self._classifier.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self._classifier.labels)}

    @property
    def num_labels(self) -> int:
        return len(self._classifier.labels)

    @property
    def _attn_implementation(self) -> str:
        return str(self._classifier.tower.config._attn_implementation)


class ZeroShotClassifier(nn.Module):
    """A zero-shot dual encoder as an image classifier over candidate labels: ``pixel_values -> logits_per_image``.

    Args:
        model: an ``AutoModelForZeroShotImageClassification`` model of a type in :data:`ZERO_SHOT_TYPES`.
        tokenizer: its tokenizer (what the pipeline loads with ``AutoTokenizer``).
        candidate_labels: the labels (classes of the logits, in order).
        hypothesis_template: the prompt of each label (``None``: the pipeline's :data:`DEFAULT_TEMPLATE`).

    Raises:
        UnsupportedModelError: a refused type (:data:`REFUSED_ZERO_SHOT`), or a SigLIP without its pooling head.
        TargetError: invalid candidate labels or template (:func:`check_candidates`).
    """

    base_model_prefix = "tower"  # the adapters find the transformer blocks under it
    model: Any  # the dual encoder, a transformers PreTrainedModel (read duck-typed, as the adapters read models)

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        candidate_labels: Sequence[str],
        hypothesis_template: str | None = None,
    ) -> None:
        super().__init__()
        dual_type = zero_shot_type(model)
        if dual_type in REFUSED_ZERO_SHOT:
            raise UnsupportedModelError(
                f"{type(model).__name__} ({dual_type!r}) is not explained as a zero-shot classifier: "
                f"{REFUSED_ZERO_SHOT[dual_type]}"
            )
        if dual_type not in ZERO_SHOT_TYPES:
            raise UnsupportedModelError(
                f"candidate_labels= needs a zero-shot image classifier (AutoModelForZeroShotImageClassification) of "
                f"type {sorted(ZERO_SHOT_TYPES)}, got {type(model).__name__}; leave candidate_labels unset for an "
                "image-classification model"
            )
        if tokenizer is None or not callable(tokenizer):
            raise UnsupportedModelError(
                f"{type(model).__name__} needs its tokenizer to encode the candidate labels; pass processor= the "
                "model's AutoProcessor (image processor and tokenizer), or load the model from its folder or Hub id"
            )
        self.kind = ZERO_SHOT_TYPES[dual_type]
        if getattr(model.vision_model, "head", True) is None or getattr(model.vision_model, "use_head", True) is False:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no vision pooling head (vision_use_head=False), so it has no image "
                "embedding to score (its forward fails too)"
            )
        self.model = model  # a child: moved, locked and put in eval mode with the wrapper; never changed by it
        self.tokenizer = tokenizer
        self._default = check_candidates(
            candidate_labels, hypothesis_template or DEFAULT_TEMPLATE, self.kind.score_function
        )
        self._text_cache: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}
        self._text_lock = threading.Lock()
        self.config = ZeroShotConfig(self, dual_type, self.kind)

    @property
    def tower(self) -> Any:
        """The vision tower (a ``PreTrainedModel``: ``CLIPVisionModel``, ``SiglipVisionModel``, ...)."""
        return self.model.vision_model

    @property
    def labels(self) -> tuple[str, ...]:
        """The candidate labels of the current call (the constructor's outside :meth:`candidates`)."""
        return self._current()[0]

    @property
    def template(self) -> str:
        """The hypothesis template of the current call."""
        return self._current()[1]

    def _current(self) -> tuple[tuple[str, ...], str]:
        return (_CALL_LABELS.get() or {}).get(id(self), self._default)

    @contextlib.contextmanager
    def candidates(self, labels: Sequence[str] | None, template: str | None = None) -> Iterator[None]:
        """Use ``labels`` (and ``template``; ``None``: the constructor's) in this thread or context until exit."""
        if labels is None and template is None:
            yield
            return
        chosen = check_candidates(
            labels if labels is not None else self._default[0],
            template or self._default[1],
            self.kind.score_function,
        )
        token = _CALL_LABELS.set({**(_CALL_LABELS.get() or {}), id(self): chosen})
        try:
            yield
        finally:
            _CALL_LABELS.reset(token)

    def set_attn_implementation(self, implementation: str | dict[str, str]) -> None:
        """Switch the vision tower's attention implementation (the only one the adapters switch)."""
        self.tower.set_attn_implementation(implementation)

    @torch.no_grad()
    def text_embeddings(self) -> torch.Tensor:
        """``[L, D]`` L2-normalised embeddings of the current prompts, computed once per label set and template.

        The prompts are tokenized as the pipeline tokenizes them (:attr:`ZeroShotType.tokenizer_kwargs`) and encoded
        with the model's ``get_text_features``.
        """
        key = (self.labels, self.template)
        with self._text_lock:
            if key not in self._text_cache:
                prompts = [key[1].format(label) for label in key[0]]
                inputs = self.tokenizer(prompts, return_tensors="pt", **dict(self.kind.tokenizer_kwargs))
                device = next(self.model.text_model.parameters()).device
                inputs = {name: value.to(device) for name, value in inputs.items()}
                embeds = self.model.get_text_features(**inputs).pooler_output
                self._text_cache[key] = embeds / embeds.norm(p=2, dim=-1, keepdim=True)
            return self._text_cache[key]

    def forward(self, pixel_values: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` ``[B, C, H, W]`` -> ``logits_per_image`` ``[B, L]`` for the current candidate labels
        (``inputs``: the NaFlex tower's ``pixel_attention_mask`` and ``spatial_shapes``, ``[B, ...]``).

        As the model's forward computes them: the tower's pooled output (projected for CLIP-like models),
        L2-normalised, times the normalised text embeddings, times ``logit_scale.exp()`` (plus ``logit_bias``
        for SigLIP).
        """
        pooled = self.tower(pixel_values=pixel_values, **inputs).pooler_output
        image = pooled if self.kind.projection is None else getattr(self.model, self.kind.projection)(pooled)
        image = image / image.norm(p=2, dim=-1, keepdim=True)
        text = self.text_embeddings().to(image.device, image.dtype)
        logits = image @ text.t() * self.model.logit_scale.exp().to(image.device)
        if self.kind.bias:
            logits = logits + self.model.logit_bias.to(image.device)
        return logits

    def __getstate__(self) -> dict[str, Any]:
        """Picklable state: the text cache's lock is rebuilt."""
        state = self.__dict__.copy()
        state.pop("_text_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._text_lock = threading.Lock()


@dataclass(frozen=True)
class PipelineProcessor:
    """The image processor and tokenizer of a zero-shot pipeline, read as an ``AutoProcessor``
    (:func:`split_processor`)."""

    image_processor: Any
    tokenizer: Any


def from_pipeline(model: Any, processor: Any, device: Any) -> tuple[Any, Any, Any]:
    """``(model, processor, device)`` of a transformers image-classification or zero-shot ``Pipeline`` object, for
    ``IIAExplainer(pipe)``: its model, image processor (and tokenizer) and device, unless the caller gave them;
    anything else unchanged."""
    from transformers import Pipeline

    if not isinstance(model, Pipeline):
        return model, processor, device
    if processor is None:
        tokenizer = getattr(model, "tokenizer", None)
        processor = model.image_processor if tokenizer is None else PipelineProcessor(model.image_processor, tokenizer)
    return model.model, processor, device if device is not None else model.device


def split_processor(processor: Any) -> tuple[Any, Any]:
    """``(image processor, tokenizer)`` of an ``AutoProcessor`` (``processor.image_processor`` and ``.tokenizer``);
    any other processor is the image processor, with no tokenizer."""
    image_processor = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if image_processor is not None and tokenizer is not None:
        return image_processor, tokenizer
    return processor, None


def zero_shot_classifier(
    model: nn.Module,
    processor: Any,
    candidate_labels: Sequence[str] | None,
    hypothesis_template: str | None,
    source: Any = None,
    trust_remote_code: bool = False,
) -> tuple[ZeroShotClassifier, Any]:
    """``(classifier, image processor)`` for ``IIAExplainer(model, candidate_labels=...)``.

    The tokenizer is ``processor.tokenizer`` when ``processor`` is an ``AutoProcessor``, else the checkpoint's
    (``source``: the folder or Hub id the model was loaded from).

    Raises:
        UnsupportedModelError: a zero-shot model without ``candidate_labels``, or labels for another model.
    """
    if candidate_labels is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is a zero-shot image classifier: it scores candidate labels, it has no classes "
            "of its own. Pass candidate_labels=['a cat', 'a dog', ...] (and optionally hypothesis_template=)"
        )
    image_processor, tokenizer = split_processor(processor)
    if tokenizer is None and source is not None and zero_shot_type(model) in ZERO_SHOT_TYPES:
        from .loading import load_tokenizer

        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    return ZeroShotClassifier(model, tokenizer, candidate_labels, hypothesis_template), image_processor


def candidates(model: nn.Module, labels: Sequence[str]) -> contextlib.AbstractContextManager[None]:
    """Context manager: explain with ``labels`` as the candidate labels of zero-shot ``model`` (a
    :class:`ZeroShotClassifier`) in this thread until exit.

    Raises:
        TargetError: ``model`` is not a zero-shot classifier, or the labels are invalid (:func:`check_candidates`).
    """
    if not isinstance(model, ZeroShotClassifier):
        raise TargetError(
            f"candidate_labels= is for zero-shot models (CLIP, SigLIP, ...); {type(model).__name__} has its own "
            "classes: leave it out and pass target= a class index or label name"
        )
    return model.candidates(labels)
