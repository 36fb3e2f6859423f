"""Faithfulness and localisation metrics for saliency maps.

Independent of the explainers: only ``torch`` and ``numpy`` are used. See
:mod:`hf_iia.metrics.perturbation` (deletion / insertion, positive / negative
perturbation) and :mod:`hf_iia.metrics.localization` (pointing game, energy
pointing game, mask AP / ROC AUC). The directory ``hf_iia/metrics/del_ins`` is a
Hugging Face ``evaluate`` module: ``evaluate.load("<path>/hf_iia/metrics/del_ins")``.
"""

from .localization import energy_pointing_game, mask_auroc, mask_average_precision, pointing_game
from .perturbation import (
    DEFAULT_PERTURBATION_FRACTIONS,
    Forward,
    MetricInputError,
    PerturbationCurve,
    deletion_auc,
    deletion_curve,
    gaussian_blur,
    insertion_auc,
    insertion_curve,
    perturbation_auc,
    perturbation_curve,
)

__all__ = [
    "DEFAULT_PERTURBATION_FRACTIONS",
    "Forward",
    "MetricInputError",
    "PerturbationCurve",
    "deletion_auc",
    "deletion_curve",
    "energy_pointing_game",
    "gaussian_blur",
    "insertion_auc",
    "insertion_curve",
    "mask_auroc",
    "mask_average_precision",
    "perturbation_auc",
    "perturbation_curve",
    "pointing_game",
]
