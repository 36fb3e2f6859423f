"""The score reported for a class: what transformers' image-classification pipeline reports for it.

``transformers.pipeline("image-classification")`` turns logits into scores by a rule read from the model config
(``ImageClassificationPipeline.postprocess``, whose branches :func:`score_function` takes in the same order):

1. ``problem_type == "regression"``: the raw logits (``"none"``);
2. ``problem_type == "multi_label_classification"`` or one logit (``num_labels == 1``): ``"sigmoid"``;
3. ``problem_type == "single_label_classification"`` or several logits: ``"softmax"``;
4. otherwise (no labels at all) ``config.function_to_apply`` when the config has one, else ``"none"``.

``config.function_to_apply`` is therefore only consulted in the last branch, exactly as in the pipeline. The
paper's metrics (deletion/insertion, SIC/AIC, Score-CAM's weights) are defined on softmax probabilities and do not
use this rule.
"""

from __future__ import annotations

import torch

from .errors import CheckpointError, IIAError

SCORE_FUNCTIONS: tuple[str, ...] = ("softmax", "sigmoid", "none")
"""The names :func:`score_function` returns (the pipeline's ``ClassificationFunction`` values)."""


def score_function(config: object | None, num_logits: int | None = None) -> str:
    """The pipeline's ``function_to_apply`` default for a model with ``config`` (one of :data:`SCORE_FUNCTIONS`).

    Args:
        config: the model's ``PretrainedConfig``, or ``None`` for a plain module.
        num_logits: the width of the model's logits, used when the config gives no ``num_labels`` (plain modules).

    Raises:
        CheckpointError: ``config.function_to_apply`` is used and is not one of :data:`SCORE_FUNCTIONS`.
    """
    problem_type = getattr(config, "problem_type", None)
    num_labels = getattr(config, "num_labels", None)
    if num_labels is None:
        num_labels = num_logits if num_logits is not None else 0
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    if problem_type == "single_label_classification" or num_labels > 1:
        return "softmax"
    name = getattr(config, "function_to_apply", None)
    if name is None:
        return "none"
    name = str(getattr(name, "value", name)).lower()  # a ClassificationFunction enum or its string
    if name not in SCORE_FUNCTIONS:
        raise CheckpointError(
            f"config.function_to_apply is {name!r}; transformers accepts {list(SCORE_FUNCTIONS)}. Fix config.json"
        )
    return name


def apply_score_function(logits: torch.Tensor, name: str) -> torch.Tensor:
    """``[B, K]`` float32 scores of every class from ``logits`` ``[B, K]`` under ``name`` (see :func:`score_function`),
    computed over each row in float32 as the pipeline does."""
    values = logits.float()
    if name == "softmax":
        return values.softmax(dim=1)
    if name == "sigmoid":
        return values.sigmoid()
    if name == "none":
        return values
    raise IIAError(f"unknown score function {name!r}; expected one of {SCORE_FUNCTIONS}")


def scores(logits: torch.Tensor, targets: torch.Tensor, name: str) -> torch.Tensor:
    """``[B]`` float32 score of class ``targets[b]`` (``[B]`` int) from ``logits`` ``[B, K]`` under ``name``."""
    values = apply_score_function(logits, name)
    return values.gather(1, targets.to(values.device).long().unsqueeze(1)).squeeze(1)
