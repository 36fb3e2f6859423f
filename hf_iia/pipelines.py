"""transformers pipelines for explanations: ``"image-explanation"`` and ``"zero-shot-image-explanation"``.

After :func:`register_pipelines`, ``transformers.pipeline("image-explanation", model=folder_or_id, method="iia")``
returns, for each image, the ``top_k`` predictions of transformers' image-classification pipeline (``label``,
``score``), each with its ``heatmap`` ``[H, W]`` at the model input's resolution (what
:class:`~hf_iia.explainer.IIAExplainer` gives for that class). ``"zero-shot-image-explanation"`` takes
``candidate_labels`` (and ``hypothesis_template``) as the zero-shot pipeline does. The maps come from an
:class:`IIAExplainer` over the pipeline's model and image processor: the same maps.

An ordinary pipeline runs its forward under ``torch.no_grad()`` (``Pipeline.get_inference_context``); these enable
gradients there, which every method but Attention Rollout needs.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForImageClassification, AutoModelForZeroShotImageClassification, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import IIAError
from .explainer import IIAExplainer
from .imaging import process_inputs
from .zeroshot import PipelineProcessor

TASKS = ("image-explanation", "zero-shot-image-explanation")
"""The tasks :func:`register_pipelines` registers."""

DEFAULT_TOP_K = 5  # the image-classification pipeline's


class ImageExplanationPipeline(Pipeline):
    """Image -> ``[{"label", "score", "heatmap"}, ...]``: the ``top_k`` classes (default 5) with their maps.

    Args (besides the pipeline's): ``method`` (``"iia"`` by default) and ``explainer_kwargs`` (any other
    :class:`IIAExplainer` option, e.g. ``{"steps": 4}``). Per call: ``top_k``, ``timeout``.
    """

    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = True  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_tokenizer = False  # type: ignore[assignment]

    def __init__(self, *args: Any, method: str = "iia", explainer_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.method = method
        self.explainer_kwargs = dict(explainer_kwargs or {})
        self._explainer: IIAExplainer | None = None

    def get_inference_context(self) -> Any:
        """Gradients on in the forward (the base class turns them off)."""
        return torch.enable_grad

    def _sanitize_parameters(self, top_k: int | None = None, timeout: float | None = None, **kwargs: Any):
        preprocess = {"timeout": timeout} if timeout is not None else {}
        forward = {"top_k": top_k} if top_k is not None else {}
        return preprocess, forward, {}

    def preprocess(self, image: Any, timeout: float | None = None) -> Any:  # type: ignore[override]
        image = load_image(image, timeout=timeout)
        pixel_values, inputs, _ = self.explainer().model_inputs(image)
        return {"pixel_values": pixel_values.to(self.dtype), **inputs}

    def explainer(self, candidate_labels: list[str] | None = None) -> IIAExplainer:
        """The explainer over this pipeline's model and image processor (built on first use)."""
        if self._explainer is None:
            options = {"progress": False, **self.explainer_kwargs}
            self._explainer = IIAExplainer(self.model, self._processor(), method=self.method, **options)
        return self._explainer

    def _processor(self) -> Any:
        return self.image_processor

    def _forward(self, model_inputs: Any, top_k: int = DEFAULT_TOP_K) -> Any:  # type: ignore[override]
        """``pixel_values`` ``[B, C, H, W]`` (and the processor's other outputs) -> ``{"targets", "scores": [B, k],
        "heatmaps": B tensors [k, H, W]}``."""
        return self._explain(self.explainer(), model_inputs, top_k)

    def _explain(self, explainer: IIAExplainer, model_inputs: dict[str, torch.Tensor], top_k: int) -> dict[str, Any]:
        """The ``top_k`` classes of each image, best first, explained in one call that shares every forward pass
        (``explainer(..., top_k=)``: the same maps as explaining each class alone). Of the processor's outputs
        besides ``pixel_values``, those the model reads go with it (NaFlex's masks and shapes). The heatmaps are a
        list, one ``[k, H_i, W_i]`` per image: NaFlex images of one batch have their own sizes."""
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise IIAError(f"top_k must be a positive int, got {top_k!r}")
        inputs = {name: model_inputs[name] for name in explainer.adapter.input_names if name in model_inputs}
        # [B] lists of min(top_k, classes) explanations
        explained = explainer(model_inputs["pixel_values"], top_k=top_k, inputs=inputs or None)
        return {
            "targets": torch.tensor([[item.target for item in items] for items in explained]),
            "scores": torch.tensor([[item.score for item in items] for items in explained]),
            "heatmaps": [torch.stack([torch.from_numpy(item.heatmap) for item in items]) for items in explained],
        }

    def postprocess(self, model_outputs: Any, **parameters: Any) -> Any:
        labels = self.explainer().id2label
        return [
            {"label": labels.get(int(target), str(int(target))), "score": float(score), "heatmap": heatmap.numpy()}
            for target, score, heatmap in zip(
                model_outputs["targets"][0], model_outputs["scores"][0], model_outputs["heatmaps"][0], strict=True
            )
        ]


class ZeroShotImageExplanationPipeline(ImageExplanationPipeline):
    """Image and ``candidate_labels`` -> ``[{"label", "score", "heatmap"}, ...]`` over every label (or ``top_k``),
    scored as transformers' zero-shot image-classification pipeline scores them."""

    _load_tokenizer = True

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        timeout: float | None = None,
        candidate_labels: list[str] | None = None,
        hypothesis_template: str | None = None,
        **kwargs: Any,
    ):
        preprocess, forward, post = super()._sanitize_parameters(top_k=top_k, timeout=timeout)
        if candidate_labels is not None:
            forward["candidate_labels"] = list(candidate_labels)
            post["candidate_labels"] = list(candidate_labels)
        if hypothesis_template is not None:
            forward["hypothesis_template"] = hypothesis_template
        return preprocess, forward, post

    def preprocess(self, image: Any, timeout: float | None = None) -> Any:  # type: ignore[override]
        image = load_image(image, timeout=timeout)
        # The image processor alone, every tensor it returns (as transformers' pipelines hand them to the model): the
        # explainer, which knows what the model reads, may not exist before the first call (it needs the labels).
        pixel_values, inputs = process_inputs(self.image_processor, [image], None)
        return {"pixel_values": pixel_values.to(self.dtype), **inputs}

    def _processor(self) -> Any:
        return PipelineProcessor(self.image_processor, self.tokenizer)

    def _forward(  # type: ignore[override]
        self,
        model_inputs: Any,
        top_k: int | None = None,
        candidate_labels: list[str] | None = None,
        hypothesis_template: str | None = None,
    ) -> Any:
        if candidate_labels is None:
            raise IIAError(
                "the zero-shot-image-explanation pipeline needs candidate_labels=[...], as the zero-shot one"
            )
        if self._explainer is None:
            self.explainer_kwargs.update(candidate_labels=candidate_labels, hypothesis_template=hypothesis_template)
        explainer = self.explainer()
        with explainer.model.candidates(candidate_labels, hypothesis_template):  # type: ignore[operator]
            return self._explain(explainer, model_inputs, top_k or len(candidate_labels))

    def postprocess(self, model_outputs: Any, **parameters: Any) -> Any:
        candidate_labels = parameters["candidate_labels"]  # _forward refused a call without them
        return [
            {"label": candidate_labels[int(target)], "score": float(score), "heatmap": heatmap.numpy()}
            for target, score, heatmap in zip(
                model_outputs["targets"][0], model_outputs["scores"][0], model_outputs["heatmaps"][0], strict=True
            )
        ]


def register_pipelines() -> None:
    """Register :data:`TASKS` with ``transformers.pipelines.PIPELINE_REGISTRY`` (idempotent)."""
    PIPELINE_REGISTRY.register_pipeline(
        "image-explanation",
        pipeline_class=ImageExplanationPipeline,
        pt_model=AutoModelForImageClassification,
        type="image",
    )
    PIPELINE_REGISTRY.register_pipeline(
        "zero-shot-image-explanation",
        pipeline_class=ZeroShotImageExplanationPipeline,
        pt_model=AutoModelForZeroShotImageClassification,
        type="multimodal",
    )
